package wquant

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tensor"
)

// IMatrix is an importance matrix: for each weight matrix, by tensor
// name, the sum over calibration tokens of the square of each column of
// its input, and the number of tokens summed. Importance gives their
// ratio, E[xⱼ²], as llama.cpp's imatrix defines it.
type IMatrix struct {
	Entries map[string]*IEntry
	// Datasets names the calibration texts.
	Datasets []string
	// Chunks and ChunkSize are the windows evaluated and their length in
	// tokens.
	Chunks, ChunkSize int
	// Checked reports that the file read carried a manifest and matched
	// it; imatrix files from llama.cpp carry none.
	Checked bool
}

// IEntry is one matrix's accumulated input statistics.
type IEntry struct {
	Sums  []float64 // Σ x² per column
	Count float64   // tokens summed
}

// Importance returns the mean of x² of each column of the input of the
// matrix called name, or nil if the matrix has no entry (or no tokens).
func (im *IMatrix) Importance(name string) []float32 {
	e, ok := im.Entries[name]
	if !ok || !(e.Count > 0) {
		return nil
	}
	out := make([]float32, len(e.Sums))
	for i, s := range e.Sums {
		out[i] = float32(s / e.Count)
	}
	return out
}

// Names returns the entries' tensor names, sorted.
func (im *IMatrix) Names() []string {
	names := make([]string, 0, len(im.Entries))
	for n := range im.Entries {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// CollectOptions configures CollectIMatrix.
type CollectOptions struct {
	// Ctx is the window length in tokens; MaxChunks limits the windows
	// (0: all).
	Ctx, MaxChunks int
	// Dataset names the calibration text in the result.
	Dataset string
	// Progress, if set, is called after each window.
	Progress func(done, total int)
}

// CollectIMatrix runs m over ids in consecutive windows of o.Ctx tokens,
// each starting with bos (when ≥ 0) as llama-imatrix does, and sums the
// square of every column of every weight matrix's input over every
// token. Tied embeddings get the statistics of their use as the output
// projection.
func CollectIMatrix(ctx context.Context, m *model.Model, ids []int32, bos int32, o CollectOptions) (*IMatrix, error) {
	if o.Ctx < 2 || o.Ctx > m.Config.Context {
		return nil, fmt.Errorf("wquant: imatrix window of %d tokens: want 2 to the model's context %d", o.Ctx, m.Config.Context)
	}
	chunks := len(ids) / o.Ctx
	if o.MaxChunks > 0 {
		chunks = min(chunks, o.MaxChunks)
	}
	if chunks == 0 {
		return nil, fmt.Errorf("wquant: %d tokens make no imatrix window of %d", len(ids), o.Ctx)
	}
	im := &IMatrix{Entries: map[string]*IEntry{}, Chunks: chunks, ChunkSize: o.Ctx}
	if o.Dataset != "" {
		im.Datasets = []string{o.Dataset}
	}
	observe := func(name string, x []float32, cols int) {
		e := im.Entries[name]
		if e == nil {
			e = &IEntry{Sums: make([]float64, cols)}
			im.Entries[name] = e
		}
		for r := 0; r+cols <= len(x); r += cols {
			for j, v := range x[r : r+cols] {
				e.Sums[j] += float64(v) * float64(v)
			}
		}
		e.Count += float64(len(x) / cols)
	}
	window := make([]int32, o.Ctx)
	for c := range chunks {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		copy(window, ids[c*o.Ctx:(c+1)*o.Ctx])
		if bos >= 0 {
			window[0] = bos
		}
		s, err := m.NewSession(nil, o.Ctx)
		if err != nil {
			return nil, err
		}
		s.SetObserver(observe)
		// All logits: the output projection's input is every token's.
		if _, err := s.Forward(window, true); err != nil {
			return nil, fmt.Errorf("wquant: imatrix window %d: %w", c, err)
		}
		if o.Progress != nil {
			o.Progress(c+1, chunks)
		}
	}
	return im, nil
}

// The imatrix file is a GGUF file in llama.cpp's imatrix layout, so
// llama-quantize reads it too, plus a manifest (see the package
// documentation): general.type "imatrix", imatrix.datasets,
// imatrix.chunk_count, imatrix.chunk_size, and per matrix NAME the F32
// tensors NAME.in_sum2 (Σ x² per column, shape [columns]) and NAME.counts
// (tokens summed, shape [1]), as llama-imatrix writes them for a dense
// model.
const (
	sumSuffix   = ".in_sum2"
	countSuffix = ".counts"
)

// WriteFile writes im to path (through a temporary file) with a manifest
// naming tool and the hex SHA-256 of the model it was collected on.
func (im *IMatrix) WriteFile(path, tool, modelSHA256 string) error {
	var kvs []gguf.KV
	add := func(k string, v any) {
		val, err := gguf.ValueOf(v)
		if err != nil {
			panic(err) // strings, a string array and uint32s
		}
		kvs = append(kvs, gguf.KV{Key: k, Value: val})
	}
	add("general.type", "imatrix")
	add("imatrix.datasets", append([]string{}, im.Datasets...))
	add("imatrix.chunk_count", uint32(im.Chunks))
	add("imatrix.chunk_size", uint32(im.ChunkSize))
	var tensors []Tensor
	for _, name := range im.Names() {
		e := im.Entries[name]
		sums := make([]float32, len(e.Sums))
		for i, s := range e.Sums {
			sums[i] = float32(s)
		}
		sb, _ := tensor.Encode(tensor.F32, sums)
		cb, _ := tensor.Encode(tensor.F32, []float32{float32(e.Count)})
		tensors = append(tensors,
			Tensor{Name: name + sumSuffix, Type: tensor.F32, Shape: []int64{int64(len(sums))}, Data: sb},
			Tensor{Name: name + countSuffix, Type: tensor.F32, Shape: []int64{1}, Data: cb})
	}
	return writeGGUF(path, kvs, tensors, tool, modelSHA256, "")
}

// writeGGUF writes a GGUF file of kvs and tensors, sealed with a
// manifest, to path through a temporary file.
func writeGGUF(path string, kvs []gguf.KV, tensors []Tensor, tool, source, plan string) error {
	m, err := NewManifest(kvs, tensors, tool, source, plan)
	if err != nil {
		return err
	}
	b := gguf.NewBuilder()
	for _, kv := range append(slices.Clip(kvs), m.KVs()...) {
		if err := b.Set(kv.Key, kv.Value); err != nil {
			return err
		}
	}
	for _, t := range tensors {
		if err := b.AddTensor(t.Name, t.Type, t.Shape, t.Data); err != nil {
			return err
		}
	}
	return b.WriteFile(path)
}

// Limits on what an imatrix file may hold, checked before allocating.
const (
	maxIMatrixBytes   = 1 << 30
	maxIMatrixEntries = 1 << 16
	maxIMatrixColumns = 1 << 22
	maxNameLen        = 1 << 10
)

// ReadIMatrixFile reads an importance matrix from path: our file, whose
// manifest must match (an altered file is refused, naming what
// differs), or llama.cpp's imatrix, GGUF or legacy imatrix.dat (which
// carry no checksum: Checked is false).
func ReadIMatrixFile(path string) (*IMatrix, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("wquant: %w", err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxIMatrixBytes+1))
	if err != nil {
		return nil, fmt.Errorf("wquant: %s: %w", path, err)
	}
	im, err := ParseIMatrix(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return im, nil
}

// ParseIMatrix decodes an importance matrix file held in memory (see
// ReadIMatrixFile).
func ParseIMatrix(b []byte) (*IMatrix, error) {
	if len(b) > maxIMatrixBytes {
		return nil, fmt.Errorf("wquant: imatrix file larger than %d bytes", maxIMatrixBytes)
	}
	if bytes.HasPrefix(b, []byte(gguf.Magic)) {
		return parseIMatrixGGUF(b)
	}
	return parseIMatrixLegacy(b)
}

func parseIMatrixGGUF(b []byte) (*IMatrix, error) {
	f, err := gguf.DecodeBytes(b)
	if err != nil {
		return nil, fmt.Errorf("wquant: imatrix: %w", err)
	}
	im := &IMatrix{Entries: map[string]*IEntry{}}
	switch _, err := Verify(context.Background(), f, VerifyOptions{Workers: 1}); {
	case err == nil:
		im.Checked = true
	case errors.Is(err, ErrNoManifest):
	default:
		return nil, fmt.Errorf("wquant: imatrix: %w", err)
	}
	if t, err := f.String("general.type"); err == nil && t != "imatrix" {
		return nil, fmt.Errorf("wquant: imatrix: general.type is %q, not an imatrix", t)
	}
	if ds, err := f.Strings("imatrix.datasets"); err == nil {
		im.Datasets = ds
	}
	if n, err := f.Uint("imatrix.chunk_count"); err == nil && n <= math.MaxInt32 {
		im.Chunks = int(n)
	}
	if n, err := f.Uint("imatrix.chunk_size"); err == nil && n <= math.MaxInt32 {
		im.ChunkSize = int(n)
	}
	floats := func(t gguf.TensorInfo) ([]float32, error) {
		if t.Type != tensor.F32 {
			return nil, fmt.Errorf("wquant: imatrix: tensor %s is %s, want F32", t.Name, t.Type)
		}
		data, err := f.ReadTensor(t)
		if err != nil {
			return nil, err
		}
		out := make([]float32, t.Elements())
		return out, tensor.Dequantize(tensor.F32, out, data)
	}
	for _, t := range f.Tensors {
		name, ok := strings.CutSuffix(t.Name, sumSuffix)
		if !ok {
			if _, isCount := strings.CutSuffix(t.Name, countSuffix); !isCount {
				return nil, fmt.Errorf("wquant: imatrix: tensor %s is neither NAME%s nor NAME%s", t.Name, sumSuffix, countSuffix)
			}
			continue
		}
		ct, ok := f.Tensor(name + countSuffix)
		if !ok {
			return nil, fmt.Errorf("wquant: imatrix: %s has sums but no %s", name, countSuffix)
		}
		if len(t.Shape) == 0 || t.Elements() != t.Shape[0] || ct.Elements() != 1 {
			return nil, fmt.Errorf("wquant: imatrix: %s: shape %v with %d counts: only one matrix per tensor (no experts) is supported", name, t.Shape, ct.Elements())
		}
		sums, err := floats(t)
		if err != nil {
			return nil, err
		}
		count, err := floats(ct)
		if err != nil {
			return nil, err
		}
		if err := im.add(name, sums, float64(count[0])); err != nil {
			return nil, err
		}
	}
	if len(im.Entries) == 0 {
		return nil, fmt.Errorf("wquant: imatrix: no entries")
	}
	return im, nil
}

// add checks and stores one entry.
func (im *IMatrix) add(name string, sums []float32, count float64) error {
	if _, dup := im.Entries[name]; dup {
		return fmt.Errorf("wquant: imatrix: %s appears twice", name)
	}
	if len(im.Entries) >= maxIMatrixEntries {
		return fmt.Errorf("wquant: imatrix: more than %d entries", maxIMatrixEntries)
	}
	if !(count >= 0) || math.IsInf(count, 0) {
		return fmt.Errorf("wquant: imatrix: %s: count %g", name, count)
	}
	e := &IEntry{Sums: make([]float64, len(sums)), Count: count}
	for j, v := range sums {
		if !(v >= 0) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("wquant: imatrix: %s: column %d holds %g; sums of squares are finite and ≥ 0", name, j, v)
		}
		e.Sums[j] = float64(v)
	}
	im.Entries[name] = e
	return nil
}

// parseIMatrixLegacy reads llama.cpp's legacy imatrix.dat: int32 entry
// count; per entry int32 name length, the name, int32 ncall, int32 nval
// and nval float32 values, each the mean of x² times ncall; then
// optionally int32 chunk count, int32 length and the dataset's name.
func parseIMatrixLegacy(b []byte) (*IMatrix, error) {
	r := bytes.NewReader(b)
	i32 := func(what string) (int32, error) {
		var v int32
		if err := binary.Read(r, binary.LittleEndian, &v); err != nil {
			return 0, fmt.Errorf("wquant: imatrix.dat: %s: %w", what, io.ErrUnexpectedEOF)
		}
		return v, nil
	}
	n, err := i32("entry count")
	if err != nil {
		return nil, fmt.Errorf("wquant: neither a GGUF nor a legacy imatrix file: %w", err)
	}
	if n < 1 || n > maxIMatrixEntries {
		return nil, fmt.Errorf("wquant: neither a GGUF nor a legacy imatrix file: %d entries", n)
	}
	im := &IMatrix{Entries: map[string]*IEntry{}}
	for i := range int(n) {
		l, err := i32(fmt.Sprintf("entry %d name length", i))
		if err != nil {
			return nil, err
		}
		if l < 1 || l > maxNameLen || int(l) > r.Len() {
			return nil, fmt.Errorf("wquant: imatrix.dat: entry %d: name of %d bytes", i, l)
		}
		name := make([]byte, l)
		io.ReadFull(r, name)
		ncall, err := i32(fmt.Sprintf("entry %s ncall", name))
		if err != nil {
			return nil, err
		}
		nval, err := i32(fmt.Sprintf("entry %s value count", name))
		if err != nil {
			return nil, err
		}
		if nval < 1 || nval > maxIMatrixColumns || int64(nval)*4 > int64(r.Len()) {
			return nil, fmt.Errorf("wquant: imatrix.dat: entry %s: %d values", name, nval)
		}
		vals := make([]float32, nval)
		binary.Read(r, binary.LittleEndian, vals)
		// sums/count is the mean: values/ncall, or the values themselves
		// when ncall is not positive (as llama-quantize reads them).
		count := float64(max(ncall, 1))
		if err := im.add(string(name), vals, count); err != nil {
			return nil, err
		}
	}
	if r.Len() >= 4 {
		c, _ := i32("chunk count")
		im.Chunks = int(max(c, 0))
		if l, err := i32("dataset length"); err == nil && l > 0 && l <= maxNameLen && int(l) <= r.Len() {
			ds := make([]byte, l)
			io.ReadFull(r, ds)
			im.Datasets = []string{string(ds)}
		}
	}
	return im, nil
}
