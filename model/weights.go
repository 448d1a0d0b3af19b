package model

import (
	"fmt"
	"sync"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/tensor"
)

// matrix is a weight matrix of rows × cols elements in its file type,
// viewed without copying (the bytes alias the GGUF file's mapping).
type matrix struct {
	name       string
	typ        tensor.DType
	rows, cols int
	data       []byte
	// first, if set, checks the data once before their first use
	// (Options.FirstUse).
	first *firstUse
}

// firstUse runs a check of one tensor's data once and keeps its result.
type firstUse struct {
	once sync.Once
	err  error
	t    gguf.TensorInfo
	fn   func(t gguf.TensorInfo, data []byte) error
}

// use runs m's first-use check, once; every later call returns its result.
func (m *matrix) use() error {
	if m.first == nil {
		return nil
	}
	m.first.once.Do(func() { m.first.err = m.first.fn(m.first.t, m.data) })
	return m.first.err
}

// Bytes returns the size of the matrix's data.
func (m *matrix) Bytes() int { return len(m.data) }

// row returns the bytes of row r.
func (m *matrix) row(r int) []byte {
	n := len(m.data) / m.rows
	return m.data[r*n : (r+1)*n]
}

// layer holds one transformer block's weights.
type layer struct {
	attnNorm, ffnNorm   []float32
	q, k, v, o          *matrix
	qBias, kBias, vBias []float32 // nil where absent (llama)
	gate, up, down      *matrix
}

// weights holds all of a model's tensors.
type weights struct {
	embed      *matrix // rows: tokens, cols: hidden
	outputNorm []float32
	output     *matrix // rows: vocab; token_embd when tied
	layers     []layer
	ropeFreqs  []float32 // per rotated pair, divides the frequency; nil if absent
	bytes      int64     // total bytes of weight data
}

// loader reads tensors from a file, checking shapes and types.
type loader struct {
	f        *gguf.File
	bytes    int64
	firstUse func(t gguf.TensorInfo, data []byte) error
}

// matrix returns the tensor name as a rows × cols matrix (GGML shape
// [cols, rows]) of a type the kernels support.
func (l *loader) matrix(name string, rows, cols int) (*matrix, error) {
	t, ok := l.f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("model: tensor %q missing", name)
	}
	if len(t.Shape) != 2 || t.Shape[0] != int64(cols) || t.Shape[1] != int64(rows) {
		return nil, fmt.Errorf("model: tensor %q has shape %v, want [%d %d]", name, t.Shape, cols, rows)
	}
	if !tensor.CanMatVec(t.Type) || !tensor.CanDequantize(t.Type) {
		return nil, fmt.Errorf("%w tensor type %s (tensor %q)", ErrUnsupported, t.Type, name)
	}
	data, err := l.f.ReadTensor(t)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	rb, err := t.Type.RowBytes(int64(cols))
	if err != nil || int64(len(data)) != rb*int64(rows) {
		return nil, fmt.Errorf("model: tensor %q: %d bytes, want %d rows of %d", name, len(data), rows, rb)
	}
	l.bytes += int64(len(data))
	mx := &matrix{name: name, typ: t.Type, rows: rows, cols: cols, data: data}
	if l.firstUse != nil {
		mx.first = &firstUse{t: t, fn: l.firstUse}
	}
	return mx, nil
}

// vector returns the tensor name, of n elements, as float32.
func (l *loader) vector(name string, n int) ([]float32, error) {
	t, ok := l.f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("model: tensor %q missing", name)
	}
	if t.Elements() != int64(n) || len(t.Shape) != 1 {
		return nil, fmt.Errorf("model: tensor %q has shape %v, want [%d]", name, t.Shape, n)
	}
	data, err := l.f.ReadTensor(t)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	if l.firstUse != nil {
		// A vector is used as it is loaded.
		if err := l.firstUse(t, data); err != nil {
			return nil, err
		}
	}
	out := make([]float32, n)
	if err := tensor.Dequantize(t.Type, out, data); err != nil {
		return nil, fmt.Errorf("model: tensor %q: %w", name, err)
	}
	l.bytes += int64(len(data))
	return out, nil
}

// optionalVector is vector for a tensor that may be absent (nil, nil).
func (l *loader) optionalVector(name string, n int) ([]float32, error) {
	if _, ok := l.f.Tensor(name); !ok {
		return nil, nil
	}
	return l.vector(name, n)
}

func loadWeights(f *gguf.File, c *Config, firstUse func(gguf.TensorInfo, []byte) error) (*weights, error) {
	l := &loader{f: f, firstUse: firstUse}
	w := &weights{}
	embed, ok := f.Tensor("token_embd.weight")
	if !ok || len(embed.Shape) != 2 {
		return nil, fmt.Errorf("model: tensor \"token_embd.weight\" missing or not 2-D")
	}
	if embed.Shape[1] < 1 || embed.Shape[1] > 1<<22 {
		return nil, fmt.Errorf("model: vocabulary of %d tokens out of range", embed.Shape[1])
	}
	c.Vocab = int(embed.Shape[1])
	var err error
	if w.embed, err = l.matrix("token_embd.weight", c.Vocab, c.Hidden); err != nil {
		return nil, err
	}
	if w.outputNorm, err = l.vector("output_norm.weight", c.Hidden); err != nil {
		return nil, err
	}
	if _, ok := f.Tensor("output.weight"); ok {
		if w.output, err = l.matrix("output.weight", c.Vocab, c.Hidden); err != nil {
			return nil, err
		}
	} else {
		w.output = w.embed // tied embeddings
	}
	if w.ropeFreqs, err = l.optionalVector("rope_freqs.weight", c.RopeDim/2); err != nil {
		return nil, err
	}
	for _, v := range w.ropeFreqs {
		if !(v > 0) {
			return nil, fmt.Errorf("model: rope_freqs.weight holds %g; factors must be positive", v)
		}
	}
	qd, kd := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	for i := range c.Layers {
		p := fmt.Sprintf("blk.%d.", i)
		var ly layer
		for _, m := range []struct {
			dst        **matrix
			name       string
			rows, cols int
		}{
			{&ly.q, "attn_q.weight", qd, c.Hidden},
			{&ly.k, "attn_k.weight", kd, c.Hidden},
			{&ly.v, "attn_v.weight", kd, c.Hidden},
			{&ly.o, "attn_output.weight", c.Hidden, qd},
			{&ly.gate, "ffn_gate.weight", c.FFN, c.Hidden},
			{&ly.up, "ffn_up.weight", c.FFN, c.Hidden},
			{&ly.down, "ffn_down.weight", c.Hidden, c.FFN},
		} {
			if *m.dst, err = l.matrix(p+m.name, m.rows, m.cols); err != nil {
				return nil, err
			}
		}
		for _, v := range []struct {
			dst      *[]float32
			name     string
			n        int
			optional bool
		}{
			{&ly.attnNorm, "attn_norm.weight", c.Hidden, false},
			{&ly.ffnNorm, "ffn_norm.weight", c.Hidden, false},
			{&ly.qBias, "attn_q.bias", qd, true},
			{&ly.kBias, "attn_k.bias", kd, true},
			{&ly.vBias, "attn_v.bias", kd, true},
		} {
			if v.optional {
				*v.dst, err = l.optionalVector(p+v.name, v.n)
			} else {
				*v.dst, err = l.vector(p+v.name, v.n)
			}
			if err != nil {
				return nil, err
			}
		}
		w.layers = append(w.layers, ly)
	}
	w.bytes = l.bytes
	return w, nil
}

// PermuteRoPERows converts the rows of a Q or K projection (rows × cols,
// heads heads) from Hugging Face's rotate-half RoPE layout to the adjacent
// pairs that GGUF llama files and this package use (docs/ALGORITHMS.md §11):
// view the rows as [heads, 2, headDim/2] and swap the middle axes.
func PermuteRoPERows(w []float32, heads, rows, cols int) []float32 {
	hd := rows / heads
	out := make([]float32, len(w))
	for h := range heads {
		for two := range 2 {
			for j := range hd / 2 {
				src := h*hd + two*(hd/2) + j
				dst := h*hd + j*2 + two
				copy(out[dst*cols:(dst+1)*cols], w[src*cols:(src+1)*cols])
			}
		}
	}
	return out
}

// WithTensor returns a model that shares everything with m except the
// weight matrix called name, whose data become data in type typ (same
// shape): what quantizing that one tensor costs can then be measured
// without writing a file. Tied embeddings change in both of their uses.
// data must not change while the returned model is in use; closing it
// does nothing.
func (m *Model) WithTensor(name string, typ tensor.DType, data []byte) (*Model, error) {
	var old *matrix
	m.eachMatrix(func(x *matrix) {
		if x.name == name {
			old = x
		}
	})
	if old == nil {
		return nil, fmt.Errorf("model: no weight matrix %q", name)
	}
	if !tensor.CanMatVec(typ) || !tensor.CanDequantize(typ) {
		return nil, fmt.Errorf("%w tensor type %s (tensor %q)", ErrUnsupported, typ, name)
	}
	rb, err := typ.RowBytes(int64(old.cols))
	if err != nil || int64(len(data)) != rb*int64(old.rows) {
		return nil, fmt.Errorf("model: tensor %q in %s: %d bytes, want %d rows of %d", name, typ, len(data), old.rows, rb)
	}
	return m.withMatrices(map[*matrix]*matrix{old: {name: name, typ: typ, rows: old.rows, cols: old.cols, data: data}}), nil
}

// WithFloatWeights returns a model that shares everything with m except
// that every weight matrix whose products quantize their input to 8 bits
// (tensor.QuantizesActivations: the quantized types) is dequantized and
// held as F16, whose products take the input as it is. It computes what
// m computes within the f16 rounding of the weights and the 8-bit
// rounding of m's activations, but smoothly: where any change to m's
// input, however small, rounds some activations the other way (a change
// of the next-token distributions that does not shrink with the change),
// the returned model's output changes in proportion. It holds 2 bytes
// per element of each converted matrix, and products with them are
// slower; closing it does nothing. The first-use checks of m's matrices
// (Options.FirstUse) run before their data are read.
func (m *Model) WithFloatWeights() (*Model, error) {
	repl := map[*matrix]*matrix{}
	var err error
	m.eachMatrix(func(x *matrix) {
		if err != nil || !tensor.QuantizesActivations(x.typ) {
			return
		}
		if err = x.use(); err != nil {
			return
		}
		v := make([]float32, x.rows*x.cols)
		if err = tensor.Dequantize(x.typ, v, x.data); err != nil {
			err = fmt.Errorf("model: tensor %q: %w", x.name, err)
			return
		}
		var data []byte
		if data, err = tensor.Encode(tensor.F16, v); err != nil {
			err = fmt.Errorf("model: tensor %q: %w", x.name, err)
			return
		}
		repl[x] = &matrix{name: x.name, typ: tensor.F16, rows: x.rows, cols: x.cols, data: data}
	})
	if err != nil {
		return nil, err
	}
	return m.withMatrices(repl), nil
}

// withMatrices returns a model that shares everything with m except the
// weight matrices that are keys of repl, each replaced by its value.
func (m *Model) withMatrices(repl map[*matrix]*matrix) *Model {
	w := *m.w
	w.layers = append([]layer(nil), m.w.layers...)
	swap := func(x **matrix) {
		if r, ok := repl[*x]; ok {
			*x = r
		}
	}
	for old, r := range repl {
		w.bytes += int64(len(r.data)) - int64(len(old.data))
	}
	swap(&w.embed)
	swap(&w.output)
	for i := range w.layers {
		ly := &w.layers[i]
		for _, x := range []**matrix{&ly.q, &ly.k, &ly.v, &ly.o, &ly.gate, &ly.up, &ly.down} {
			swap(x)
		}
	}
	c := *m
	c.w, c.owned, c.onClose = &w, false, nil
	return &c
}

// eachMatrix calls f for every weight matrix once (tied embeddings once).
func (m *Model) eachMatrix(f func(*matrix)) {
	f(m.w.embed)
	if m.w.output != m.w.embed {
		f(m.w.output)
	}
	for i := range m.w.layers {
		ly := &m.w.layers[i]
		for _, x := range []*matrix{ly.q, ly.k, ly.v, ly.o, ly.gate, ly.up, ly.down} {
			f(x)
		}
	}
}
