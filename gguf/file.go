package gguf

import (
	"fmt"
	"io"
	"io/fs"
	"math"
	"slices"

	"github.com/turbomem/turbomem/tensor"
)

// KV is one metadata key and its value.
type KV struct {
	Key   string
	Value Value
}

// TensorInfo describes one tensor of a file.
type TensorInfo struct {
	Name string
	// Shape lists the dimensions in GGML order: Shape[0] is the innermost,
	// contiguous dimension (the length of a row), as ne[0] in GGML. A
	// tensor with no dimensions is a scalar.
	Shape []int64
	Type  tensor.DType
	// Offset is the position of the tensor's first byte in the file (not,
	// as stored, relative to the data section).
	Offset int64
	// Size is the number of bytes the tensor occupies.
	Size int64
}

// Elements returns the number of elements of t: the product of its shape.
// The reader has checked that it does not overflow.
func (t TensorInfo) Elements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// File is a decoded GGUF file: its metadata, its tensor directory, and
// access to the tensor data. A File from Open must be closed; the slices
// that TensorData returns are valid until then. All methods except Close
// are safe for concurrent use. The exported fields describe the file and are
// indexed by the lookup methods: treat them as read-only.
type File struct {
	Version   uint32       // format version: 2 or 3
	KV        []KV         // metadata in file order
	Tensors   []TensorInfo // tensors in file order
	Alignment int64        // alignment of the data section and of every tensor
	// DataOffset is the file offset of the data section, to which the
	// stored tensor offsets are relative.
	DataOffset int64
	Size       int64 // file size in bytes

	keys    map[string]int // Key -> index in KV
	tensors map[string]int // Name -> index in Tensors

	data  []byte      // the whole file when it is in memory (mapped or given)
	src   io.ReaderAt // otherwise the source of tensor data
	close func() error
	info  fs.FileInfo // the opened file's description (Open), else nil
}

// Close releases the file's mapping and descriptor, if any. Slices returned
// by TensorData must not be used afterwards.
func (f *File) Close() error {
	if f.close == nil {
		return nil
	}
	c := f.close
	f.close, f.data, f.src = nil, nil, nil
	return c()
}

// Info returns the description of the file that Open opened (as the
// descriptor it mapped or reads saw it, at the open), or nil for a File
// from Decode or DecodeBytes. A caller that opens the file again by its
// path can tell whether it got the same file with os.SameFile. It stays
// valid after Close.
func (f *File) Info() fs.FileInfo { return f.info }

// Mapped reports whether tensor data is served from memory (a memory map or
// the byte slice given to DecodeBytes) without copying.
func (f *File) Mapped() bool { return f.data != nil }

// Lookup returns the value of key.
func (f *File) Lookup(key string) (Value, bool) {
	i, ok := f.keys[key]
	if !ok {
		return Value{}, false
	}
	return f.KV[i].Value, true
}

// Tensor returns the description of the tensor called name.
func (f *File) Tensor(name string) (TensorInfo, bool) {
	i, ok := f.tensors[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.Tensors[i], true
}

// TensorData returns the bytes of the tensor called name. When the file is
// memory-mapped (see Mapped) the slice aliases the mapping: it costs no copy,
// must not be modified, and is valid until Close. Otherwise it is a fresh
// buffer read from the file.
func (f *File) TensorData(name string) ([]byte, error) {
	t, ok := f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("gguf: tensor %q: %w", name, ErrNotFound)
	}
	return f.ReadTensor(t)
}

// ReadTensor is TensorData for a TensorInfo already looked up; t must come
// from f.Tensors.
func (f *File) ReadTensor(t TensorInfo) ([]byte, error) {
	if t.Offset < 0 || t.Size < 0 || t.Offset > f.Size || t.Size > f.Size-t.Offset {
		return nil, fmt.Errorf("gguf: tensor %q: range [%d, +%d) outside the file (%d bytes)", t.Name, t.Offset, t.Size, f.Size)
	}
	if f.data != nil {
		end := t.Offset + t.Size
		return f.data[t.Offset:end:end], nil
	}
	if f.src == nil {
		return nil, fmt.Errorf("gguf: tensor %q: file is closed", t.Name)
	}
	buf := make([]byte, t.Size)
	// ReadAt may return io.EOF with a complete read at the end of the file.
	if n, err := f.src.ReadAt(buf, t.Offset); n < len(buf) {
		if err == nil || err == io.EOF {
			err = ErrTruncated
		}
		return nil, fmt.Errorf("gguf: tensor %q: reading %d bytes at %d: %w", t.Name, t.Size, t.Offset, err)
	}
	return buf, nil
}

// value returns the value of key or an error wrapping ErrNotFound.
func (f *File) value(key string) (Value, error) {
	v, ok := f.Lookup(key)
	if !ok {
		return Value{}, fmt.Errorf("gguf: key %q: %w", key, ErrNotFound)
	}
	return v, nil
}

func wrongType(key string, v Value, want string) error {
	got := v.typ.String()
	if v.typ == TypeArray {
		got = "array of " + v.elem.String()
	}
	return fmt.Errorf("gguf: key %q: value is %s, want %s: %w", key, got, want, ErrWrongType)
}

// Architecture returns general.architecture, the model architecture
// ("llama", "qwen2", ...).
func (f *File) Architecture() (string, error) { return f.String("general.architecture") }

// String returns the string value of key. It fails, wrapping ErrNotFound or
// ErrWrongType, if the key is absent or not a string; so do the other
// getters.
func (f *File) String(key string) (string, error) {
	v, err := f.value(key)
	if err != nil {
		return "", err
	}
	s, ok := v.x.(string)
	if !ok {
		return "", wrongType(key, v, "string")
	}
	return s, nil
}

// Bool returns the boolean value of key.
func (f *File) Bool(key string) (bool, error) {
	v, err := f.value(key)
	if err != nil {
		return false, err
	}
	b, ok := v.x.(bool)
	if !ok {
		return false, wrongType(key, v, "bool")
	}
	return b, nil
}

// asInt returns a scalar integer value widened to a sign and a magnitude:
// the value is -mag when neg, else mag.
func asInt(x any) (mag uint64, neg, ok bool) {
	signed := func(i int64) (uint64, bool, bool) {
		if i < 0 {
			return uint64(-(i + 1)) + 1, true, true
		}
		return uint64(i), false, true
	}
	switch x := x.(type) {
	case uint8:
		return uint64(x), false, true
	case uint16:
		return uint64(x), false, true
	case uint32:
		return uint64(x), false, true
	case uint64:
		return x, false, true
	case int8:
		return signed(int64(x))
	case int16:
		return signed(int64(x))
	case int32:
		return signed(int64(x))
	case int64:
		return signed(x)
	}
	return 0, false, false
}

// Uint returns the value of key, which may be stored as any integer type
// (converters differ: the same hyperparameter appears as uint32, int32 or
// uint64), as a uint64. A negative value is an error.
func (f *File) Uint(key string) (uint64, error) {
	v, err := f.value(key)
	if err != nil {
		return 0, err
	}
	mag, neg, ok := asInt(v.x)
	if !ok {
		return 0, wrongType(key, v, "an integer")
	}
	if neg {
		return 0, fmt.Errorf("gguf: key %q: negative value -%d, want unsigned: %w", key, mag, ErrWrongType)
	}
	return mag, nil
}

// Int returns the value of key, which may be stored as any integer type, as
// an int64. A uint64 value above math.MaxInt64 is an error.
func (f *File) Int(key string) (int64, error) {
	v, err := f.value(key)
	if err != nil {
		return 0, err
	}
	mag, neg, ok := asInt(v.x)
	if !ok {
		return 0, wrongType(key, v, "an integer")
	}
	if neg {
		return -int64(mag-1) - 1, nil
	}
	if mag > math.MaxInt64 {
		return 0, fmt.Errorf("gguf: key %q: value %d overflows int64: %w", key, mag, ErrWrongType)
	}
	return int64(mag), nil
}

// Float returns the value of key, stored as float32 or float64, as a
// float64.
func (f *File) Float(key string) (float64, error) {
	v, err := f.value(key)
	if err != nil {
		return 0, err
	}
	switch x := v.x.(type) {
	case float32:
		return float64(x), nil
	case float64:
		return x, nil
	}
	return 0, wrongType(key, v, "a float")
}

// Strings returns a copy of the array of strings stored at key (such as
// tokenizer.ggml.tokens).
func (f *File) Strings(key string) ([]string, error) {
	v, err := f.value(key)
	if err != nil {
		return nil, err
	}
	s, ok := v.x.([]string)
	if !ok {
		return nil, wrongType(key, v, "array of string")
	}
	return slices.Clone(s), nil
}

// Float32s returns the array of floats stored at key (such as
// tokenizer.ggml.scores); a float64 array is rounded to float32.
func (f *File) Float32s(key string) ([]float32, error) {
	v, err := f.value(key)
	if err != nil {
		return nil, err
	}
	switch x := v.x.(type) {
	case []float32:
		return slices.Clone(x), nil
	case []float64:
		out := make([]float32, len(x))
		for i, e := range x {
			out[i] = float32(e)
		}
		return out, nil
	}
	return nil, wrongType(key, v, "array of float32")
}

// Ints returns the array of integers of any integer type stored at key as
// int64s. A uint64 element above math.MaxInt64 is an error.
func (f *File) Ints(key string) ([]int64, error) {
	return intArray[int64](f, key, math.MinInt64, math.MaxInt64)
}

// Int32s returns the array of integers of any integer type stored at key
// (such as tokenizer.ggml.token_type) as int32s. An element outside the
// int32 range is an error.
func (f *File) Int32s(key string) ([]int32, error) {
	return intArray[int32](f, key, math.MinInt32, math.MaxInt32)
}

// intArray converts an integer array of any element type to []T, checking
// that every element lies in [lo, hi].
func intArray[T int32 | int64](f *File, key string, lo, hi int64) ([]T, error) {
	v, err := f.value(key)
	if err != nil {
		return nil, err
	}
	switch x := v.x.(type) {
	case []uint8:
		return convertInts[T](key, x, lo, hi)
	case []int8:
		return convertInts[T](key, x, lo, hi)
	case []uint16:
		return convertInts[T](key, x, lo, hi)
	case []int16:
		return convertInts[T](key, x, lo, hi)
	case []uint32:
		return convertInts[T](key, x, lo, hi)
	case []int32:
		return convertInts[T](key, x, lo, hi)
	case []uint64:
		return convertInts[T](key, x, lo, hi)
	case []int64:
		return convertInts[T](key, x, lo, hi)
	}
	return nil, wrongType(key, v, "array of integers")
}

type integer interface {
	~uint8 | ~int8 | ~uint16 | ~int16 | ~uint32 | ~int32 | ~uint64 | ~int64
}

func convertInts[T int32 | int64, E integer](key string, s []E, lo, hi int64) ([]T, error) {
	out := make([]T, len(s))
	for i, e := range s {
		if (e < 0 && int64(e) < lo) || (e >= 0 && uint64(e) > uint64(hi)) {
			return nil, fmt.Errorf("gguf: key %q: element %d (%d) outside [%d, %d]: %w", key, i, e, lo, hi, ErrWrongType)
		}
		out[i] = T(e)
	}
	return out, nil
}
