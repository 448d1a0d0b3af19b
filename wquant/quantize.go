package wquant

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/tensor"
)

// Quantizable reports whether tensor t of a model file is a weight matrix
// that gets a quantized type, as llama-quantize decides it: two or more
// dimensions, a name ending in "weight", and not a norm.
func Quantizable(t gguf.TensorInfo) bool {
	return len(t.Shape) >= 2 && strings.HasSuffix(t.Name, "weight") && !strings.Contains(t.Name, "_norm.weight")
}

// Fits reports whether a tensor of shape (GGML order) can be stored in
// type typ: its rows must hold whole blocks.
func Fits(shape []int64, typ tensor.DType) bool {
	return len(shape) > 0 && typ.Known() && typ.BlockSize() > 0 && shape[0]%int64(typ.BlockSize()) == 0
}

// Quantizer encodes the tensors of a source GGUF file in other types,
// weighting the error by an importance matrix where it has the tensor.
// It is safe for concurrent use.
type Quantizer struct {
	src     *gguf.File
	imatrix *IMatrix // nil: every column weighs 1
	threads int

	mu   sync.Mutex
	last string    // the tensor whose values are cached
	vals []float32 // its values as float32
}

// NewQuantizer returns a Quantizer of the tensors of src, with importance
// from im (nil for none), using up to threads goroutines per tensor (0:
// all CPUs).
func NewQuantizer(src *gguf.File, im *IMatrix, threads int) *Quantizer {
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	return &Quantizer{src: src, imatrix: im, threads: threads}
}

// values returns the tensor's values as float32, keeping the last
// tensor's (the callers go tensor after tensor, type after type).
func (q *Quantizer) values(t gguf.TensorInfo) ([]float32, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.last == t.Name {
		return q.vals, nil
	}
	if !tensor.CanDequantize(t.Type) {
		return nil, fmt.Errorf("wquant: tensor %s: cannot read type %s", t.Name, t.Type)
	}
	raw, err := q.src.ReadTensor(t)
	if err != nil {
		return nil, err
	}
	v := make([]float32, t.Elements())
	if err := tensor.Dequantize(t.Type, v, raw); err != nil {
		return nil, fmt.Errorf("wquant: tensor %s: %w", t.Name, err)
	}
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil, fmt.Errorf("wquant: tensor %s: element %d is %g", t.Name, i, x)
		}
	}
	q.last, q.vals = t.Name, v
	return v, nil
}

// Importance returns the importance the quantizer uses for the tensor
// called name with rows of cols elements, or nil when the imatrix has no
// entry of that width.
func (q *Quantizer) Importance(name string, cols int64) []float32 {
	if q.imatrix == nil {
		return nil
	}
	imp := q.imatrix.Importance(name)
	if int64(len(imp)) != cols {
		return nil
	}
	return imp
}

// Encode returns the tensor called name in type typ: quantized with
// importance-weighted scale fits (tensor.QuantizeWeighted) where the type
// has them, with the reference quantizer otherwise, or converted (F32,
// F16, BF16). The source's own type is returned as it is.
func (q *Quantizer) Encode(name string, typ tensor.DType) ([]byte, error) {
	t, ok := q.src.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("wquant: no tensor %q", name)
	}
	if typ == t.Type {
		return q.src.ReadTensor(t)
	}
	if !Fits(t.Shape, typ) {
		return nil, fmt.Errorf("wquant: tensor %s: rows of %d elements cannot be stored in %s (blocks of %d)", name, t.Shape[0], typ, typ.BlockSize())
	}
	v, err := q.values(t)
	if err != nil {
		return nil, err
	}
	cols := t.Shape[0]
	rows := int(t.Elements() / cols)
	rowBytes, err := typ.RowBytes(cols)
	if err != nil {
		return nil, err
	}
	out := make([]byte, int64(rows)*rowBytes)
	imp := q.Importance(name, cols)
	encode := func(dst []byte, src []float32) error {
		switch {
		case tensor.CanQuantizeWeighted(typ):
			return tensor.QuantizeWeighted(typ, dst, src, imp)
		case tensor.CanQuantize(typ):
			return tensor.Quantize(typ, dst, src)
		default:
			b, err := tensor.Encode(typ, src)
			copy(dst, b)
			return err
		}
	}
	// Rows in as many slices as threads.
	per := (rows + q.threads - 1) / q.threads
	var wg sync.WaitGroup
	errs := make([]error, q.threads)
	for w := range q.threads {
		lo, hi := w*per, min(rows, (w+1)*per)
		if lo >= hi {
			break
		}
		wg.Go(func() {
			errs[w] = encode(out[int64(lo)*rowBytes:int64(hi)*rowBytes], v[int64(lo)*cols:int64(hi)*cols])
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("wquant: tensor %s in %s: %w", name, typ, err)
		}
	}
	return out, nil
}

// WriteOptions configures Write.
type WriteOptions struct {
	// Tool names the program in the manifest; SourceSHA256 is the hex
	// SHA-256 of the source file ("" if unknown).
	Tool, SourceSHA256 string
	// FileType is the llama.cpp file type (general.file_type) to record;
	// 0 keeps the source's value.
	FileType uint32
	// Progress, if set, is called after each tensor with the source
	// bytes done and in all.
	Progress func(name string, done, total int64)
}

// Write writes the tensors of the source file in the types plan gives
// them (the others as they are), with the source's metadata, to path,
// sealed with a manifest that records the plan. The quantized tensors are
// held in memory until the file is written.
func (q *Quantizer) Write(ctx context.Context, path string, plan *Plan, o WriteOptions) error {
	types := plan.Types()
	var total, done int64
	for _, t := range q.src.Tensors {
		total += t.Size
	}
	var tensors []Tensor
	for _, t := range q.src.Tensors {
		if err := ctx.Err(); err != nil {
			return err
		}
		typ, ok := types[t.Name]
		if !ok {
			typ = t.Type
		}
		data, err := q.Encode(t.Name, typ)
		if err != nil {
			return err
		}
		tensors = append(tensors, Tensor{Name: t.Name, Type: typ, Shape: t.Shape, Data: data})
		done += t.Size
		if o.Progress != nil {
			o.Progress(t.Name, done, total)
		}
	}
	var kvs []gguf.KV
	for _, kv := range q.src.KV {
		if strings.HasPrefix(kv.Key, ManifestPrefix) {
			continue
		}
		kvs = append(kvs, kv)
	}
	set := func(key string, v uint32) {
		val, _ := gguf.ValueOf(v)
		for i := range kvs {
			if kvs[i].Key == key {
				kvs[i].Value = val
				return
			}
		}
		kvs = append(kvs, gguf.KV{Key: key, Value: val})
	}
	set("general.quantization_version", 2)
	if o.FileType != 0 {
		set("general.file_type", o.FileType)
	}
	pj, err := plan.JSON()
	if err != nil {
		return err
	}
	return writeGGUF(path, kvs, tensors, o.Tool, o.SourceSHA256, string(pj))
}
