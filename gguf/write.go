package gguf

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"

	"github.com/turbomem/turbomem/tensor"
)

// Builder assembles a GGUF v3 file: metadata, in the order first set, and
// tensors, in the order added. It keeps references to tensor data rather
// than copies, and WriteTo streams the file out, so a model is never held
// twice in memory. The data alignment is general.alignment if set,
// otherwise DefaultAlignment.
//
// Builder checks everything that the reader checks, so whatever it writes
// decodes.
type Builder struct {
	kv      []KV
	keys    map[string]int
	tensors []pendingTensor
	names   map[string]int
}

// pendingTensor is a tensor to write: its description (Offset unset) and
// either its bytes or a function that writes them.
type pendingTensor struct {
	info  TensorInfo
	data  []byte
	write func(io.Writer) error
}

// NewBuilder returns an empty Builder.
func NewBuilder() *Builder {
	return &Builder{keys: map[string]int{}, names: map[string]int{}}
}

// Set sets the metadata key to v, which is a Value or any Go value that
// ValueOf accepts. A key set again keeps its first position.
func (b *Builder) Set(key string, v any) error {
	if key == "" || len(key) > MaxKeyLen {
		return fmt.Errorf("gguf: key of %d bytes: want 1 to %d", len(key), MaxKeyLen)
	}
	val, err := ValueOf(v)
	if err != nil {
		return fmt.Errorf("gguf: key %q: %w", key, err)
	}
	if err := checkValue(val, 0); err != nil {
		return fmt.Errorf("gguf: key %q: %w", key, err)
	}
	if key == "general.alignment" {
		if _, err := checkAlignment(val); err != nil {
			return fmt.Errorf("gguf: key %q: %w", key, err)
		}
	}
	if i, ok := b.keys[key]; ok {
		b.kv[i].Value = val
		return nil
	}
	b.keys[key] = len(b.kv)
	b.kv = append(b.kv, KV{Key: key, Value: val})
	return nil
}

// Delete removes key, if set.
func (b *Builder) Delete(key string) {
	i, ok := b.keys[key]
	if !ok {
		return
	}
	b.kv = slices.Delete(b.kv, i, i+1)
	delete(b.keys, key)
	for j := i; j < len(b.kv); j++ {
		b.keys[b.kv[j].Key] = j
	}
}

// checkValue checks the limits the reader enforces on strings and on the
// nesting of arrays; depth is the number of arrays v is inside.
func checkValue(v Value, depth int) error {
	switch x := v.x.(type) {
	case string:
		if len(x) > MaxStringLen {
			return fmt.Errorf("string of %d bytes exceeds the limit of %d", len(x), MaxStringLen)
		}
	case []string:
		for i, s := range x {
			if len(s) > MaxStringLen {
				return fmt.Errorf("element %d: string of %d bytes exceeds the limit of %d", i, len(s), MaxStringLen)
			}
		}
	case []Value:
		if depth+1 >= MaxArrayDepth {
			return fmt.Errorf("arrays nested deeper than %d", MaxArrayDepth)
		}
		for i, e := range x {
			if e.typ != TypeArray || e.x == nil {
				return fmt.Errorf("element %d: %s in an array of arrays", i, e.typ)
			}
			if err := checkValue(e, depth+1); err != nil {
				return fmt.Errorf("element %d: %w", i, err)
			}
		}
	}
	return nil
}

// AddTensor adds a tensor whose bytes are data, which must be exactly the
// size the shape and type call for. Builder keeps data, not a copy: it must
// not change until WriteTo returns. Shape is in GGML order (Shape[0] is the
// row length).
func (b *Builder) AddTensor(name string, typ tensor.DType, shape []int64, data []byte) error {
	info, err := b.checkTensor(name, typ, shape)
	if err != nil {
		return err
	}
	if int64(len(data)) != info.Size {
		return fmt.Errorf("gguf: tensor %q: %d bytes of data, want %d for %s %v", name, len(data), info.Size, typ, shape)
	}
	b.addTensor(pendingTensor{info: info, data: data})
	return nil
}

// AddTensorFunc adds a tensor whose bytes WriteTo obtains by calling write,
// which must write exactly the size the shape and type call for. It lets a
// converter produce each tensor (quantize it, say) only as it is written.
func (b *Builder) AddTensorFunc(name string, typ tensor.DType, shape []int64, write func(w io.Writer) error) error {
	info, err := b.checkTensor(name, typ, shape)
	if err != nil {
		return err
	}
	if write == nil {
		return fmt.Errorf("gguf: tensor %q: nil write function", name)
	}
	b.addTensor(pendingTensor{info: info, write: write})
	return nil
}

func (b *Builder) addTensor(t pendingTensor) {
	b.names[t.info.Name] = len(b.tensors)
	b.tensors = append(b.tensors, t)
}

func (b *Builder) checkTensor(name string, typ tensor.DType, shape []int64) (TensorInfo, error) {
	if name == "" || len(name) > MaxTensorNameLen {
		return TensorInfo{}, fmt.Errorf("gguf: tensor name %q: want 1 to %d bytes", name, MaxTensorNameLen)
	}
	if _, dup := b.names[name]; dup {
		return TensorInfo{}, fmt.Errorf("gguf: tensor %q added twice", name)
	}
	if len(shape) > MaxDims {
		return TensorInfo{}, fmt.Errorf("gguf: tensor %q: %d dimensions, at most %d allowed", name, len(shape), MaxDims)
	}
	for j, d := range shape {
		if d < 0 {
			return TensorInfo{}, fmt.Errorf("gguf: tensor %q: dimension %d is negative (%d)", name, j, d)
		}
	}
	if !typ.Known() {
		return TensorInfo{}, fmt.Errorf("gguf: tensor %q: unknown tensor type id %d", name, uint32(typ))
	}
	size, err := tensorSize(shape, typ)
	if err != nil {
		return TensorInfo{}, fmt.Errorf("gguf: tensor %q: %w", name, err)
	}
	return TensorInfo{Name: name, Shape: slices.Clone(shape), Type: typ, Size: size}, nil
}

// alignment returns the data alignment that general.alignment sets.
func (b *Builder) alignment() int64 {
	if i, ok := b.keys["general.alignment"]; ok {
		if a, err := checkAlignment(b.kv[i].Value); err == nil {
			return a
		}
	}
	return DefaultAlignment
}

// Layout returns the tensors as WriteTo will place them, with Offset the
// position of each in the file, and the size of the whole file.
func (b *Builder) Layout() ([]TensorInfo, int64, error) {
	align := b.alignment()
	n := int64(4 + 4 + 8 + 8)
	for _, kv := range b.kv {
		n += 8 + int64(len(kv.Key)) + valueSize(kv.Value)
	}
	for _, t := range b.tensors {
		n += 8 + int64(len(t.info.Name)) + 4 + 8*int64(len(t.info.Shape)) + 4 + 8
	}
	infos := make([]TensorInfo, len(b.tensors))
	dataStart := alignUp(n, align)
	off := int64(0) // relative to the data section
	for i, t := range b.tensors {
		infos[i] = t.info
		infos[i].Shape = slices.Clone(t.info.Shape)
		infos[i].Offset = dataStart + off
		if t.info.Size > math.MaxInt64-align-dataStart-off {
			return nil, 0, fmt.Errorf("gguf: tensor %q: file size overflows", t.info.Name)
		}
		off = alignUp(off+t.info.Size, align)
	}
	end := dataStart
	if len(infos) > 0 {
		// The data section ends padded to the alignment, as ggml writes
		// it: ggml's reader, when it loads tensor data into memory, reads
		// every tensor's padded size.
		last := infos[len(infos)-1]
		end = alignUp(last.Offset+last.Size, align)
	}
	return infos, end, nil
}

// valueSize returns the encoded size of v's type id and payload.
func valueSize(v Value) int64 {
	n := int64(4)
	switch x := v.x.(type) {
	case string:
		return n + 8 + int64(len(x))
	case []string:
		n += 4 + 8
		for _, s := range x {
			n += 8 + int64(len(s))
		}
		return n
	case []Value:
		n += 4 + 8
		for _, e := range x {
			n += valueSize(e) - 4 // elements carry no type id of their own
		}
		return n
	}
	if v.typ == TypeArray {
		return n + 4 + 8 + int64(v.Len())*int64(v.elem.fixedSize())
	}
	return n + int64(v.typ.fixedSize())
}

// WriteTo writes the file to w and returns the number of bytes written.
func (b *Builder) WriteTo(w io.Writer) (int64, error) {
	infos, total, err := b.Layout()
	if err != nil {
		return 0, err
	}
	align := b.alignment()
	e := &encoder{w: bufio.NewWriterSize(w, 256<<10)}
	e.bytes([]byte(Magic))
	e.u32(Version)
	e.u64(uint64(len(b.tensors)))
	e.u64(uint64(len(b.kv)))
	for _, kv := range b.kv {
		e.str(kv.Key)
		e.u32(uint32(kv.Value.typ))
		e.value(kv.Value)
	}
	dataStart := total
	if len(infos) > 0 {
		dataStart = infos[0].Offset
	}
	for _, t := range infos {
		e.str(t.Name)
		e.u32(uint32(len(t.Shape)))
		for _, d := range t.Shape {
			e.u64(uint64(d))
		}
		e.u32(uint32(t.Type))
		e.u64(uint64(t.Offset - dataStart))
	}
	e.pad(alignUp(e.n, align))
	for i, t := range infos {
		if e.err != nil {
			break
		}
		e.pad(t.Offset)
		p := b.tensors[i]
		if p.write == nil {
			e.bytes(p.data)
			continue
		}
		lw := &limitWriter{e: e, left: t.Size}
		if err := p.write(lw); err != nil {
			return e.n, fmt.Errorf("gguf: tensor %q: %w", t.Name, err)
		}
		if lw.over || lw.left != 0 {
			return e.n, fmt.Errorf("gguf: tensor %q: write function wrote %d bytes, want %d", t.Name, t.Size-lw.left, t.Size)
		}
	}
	e.pad(total)
	if e.err == nil {
		e.err = e.w.Flush()
	}
	if e.err != nil {
		return e.n, fmt.Errorf("gguf: writing: %w", e.err)
	}
	if e.n != total {
		return e.n, fmt.Errorf("gguf: wrote %d bytes, layout says %d", e.n, total)
	}
	return e.n, nil
}

// WriteFile writes the file to path, through a temporary file in the same
// directory that replaces path only once complete.
func (b *Builder) WriteFile(path string) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := b.WriteTo(tmp); err != nil {
		return err
	}
	// CreateTemp makes the file private; a model file is for reading.
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	return nil
}

// encoder writes little-endian fields, counting bytes and keeping the first
// error.
type encoder struct {
	w       *bufio.Writer
	n       int64
	err     error
	scratch [8]byte
}

func (e *encoder) bytes(p []byte) {
	if e.err != nil {
		return
	}
	k, err := e.w.Write(p)
	e.n += int64(k)
	e.err = err
}

func (e *encoder) u8(x uint8) {
	if e.err != nil {
		return
	}
	e.err = e.w.WriteByte(x)
	e.n++
}

func (e *encoder) u16(x uint16) {
	binary.LittleEndian.PutUint16(e.scratch[:], x)
	e.bytes(e.scratch[:2])
}

func (e *encoder) u32(x uint32) {
	binary.LittleEndian.PutUint32(e.scratch[:], x)
	e.bytes(e.scratch[:4])
}

func (e *encoder) u64(x uint64) {
	binary.LittleEndian.PutUint64(e.scratch[:], x)
	e.bytes(e.scratch[:8])
}

func (e *encoder) str(s string) {
	e.u64(uint64(len(s)))
	if e.err != nil {
		return
	}
	k, err := e.w.WriteString(s)
	e.n += int64(k)
	e.err = err
}

// pad writes zeros up to file offset to.
func (e *encoder) pad(to int64) {
	var zeros [512]byte
	for e.err == nil && e.n < to {
		e.bytes(zeros[:min(to-e.n, int64(len(zeros)))])
	}
}

// value writes the payload of v (its type id is written by the caller, as
// array elements have none).
func (e *encoder) value(v Value) {
	if v.typ == TypeArray {
		e.u32(uint32(v.elem))
		e.u64(uint64(v.Len()))
	}
	switch x := v.x.(type) {
	case uint8:
		e.u8(x)
	case int8:
		e.u8(uint8(x))
	case bool:
		if x {
			e.u8(1)
		} else {
			e.u8(0)
		}
	case uint16:
		e.u16(x)
	case int16:
		e.u16(uint16(x))
	case uint32:
		e.u32(x)
	case int32:
		e.u32(uint32(x))
	case float32:
		e.u32(math.Float32bits(x))
	case uint64:
		e.u64(x)
	case int64:
		e.u64(uint64(x))
	case float64:
		e.u64(math.Float64bits(x))
	case string:
		e.str(x)
	case []uint8:
		e.bytes(x)
	case []int8:
		for _, y := range x {
			e.u8(uint8(y))
		}
	case []bool:
		for _, y := range x {
			if y {
				e.u8(1)
			} else {
				e.u8(0)
			}
		}
	case []uint16:
		for _, y := range x {
			e.u16(y)
		}
	case []int16:
		for _, y := range x {
			e.u16(uint16(y))
		}
	case []uint32:
		for _, y := range x {
			e.u32(y)
		}
	case []int32:
		for _, y := range x {
			e.u32(uint32(y))
		}
	case []float32:
		for _, y := range x {
			e.u32(math.Float32bits(y))
		}
	case []uint64:
		for _, y := range x {
			e.u64(y)
		}
	case []int64:
		for _, y := range x {
			e.u64(uint64(y))
		}
	case []float64:
		for _, y := range x {
			e.u64(math.Float64bits(y))
		}
	case []string:
		for _, y := range x {
			e.str(y)
		}
	case []Value:
		for _, y := range x {
			e.value(y)
		}
	default:
		if e.err == nil {
			e.err = fmt.Errorf("value of Go type %T", x)
		}
	}
}

// AppendBinary appends v's encoding in a GGUF file, its type id and then
// its payload, to b: what a checksum of metadata covers.
func (v Value) AppendBinary(b []byte) ([]byte, error) {
	buf := bytes.NewBuffer(b)
	if err := v.WriteBinary(buf); err != nil {
		return b, err
	}
	return buf.Bytes(), nil
}

// WriteBinary writes v's encoding in a GGUF file (AppendBinary's bytes)
// to w, through a buffer of its own: a checksum of a large value (a
// vocabulary) streams it instead of holding its encoding.
func (v Value) WriteBinary(w io.Writer) error {
	e := &encoder{w: bufio.NewWriter(w)}
	e.u32(uint32(v.typ))
	e.value(v)
	if e.err == nil {
		e.err = e.w.Flush()
	}
	if e.err != nil {
		return fmt.Errorf("gguf: encoding a %s value: %w", v.typ, e.err)
	}
	return nil
}

// limitWriter passes at most left bytes to the encoder and notes any
// excess.
type limitWriter struct {
	e    *encoder
	left int64
	over bool
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.left {
		l.over = true
		return 0, errors.New("more bytes than the tensor's size")
	}
	l.e.bytes(p)
	l.left -= int64(len(p))
	if l.e.err != nil {
		return len(p), l.e.err
	}
	return len(p), nil
}
