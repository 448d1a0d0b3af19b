package gguf

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"slices"
	"strings"

	"github.com/turbomem/turbomem/tensor"
)

const (
	// Magic is the four bytes every GGUF file starts with.
	Magic = "GGUF"
	// Version is the format version this package writes.
	Version = 3
)

// Limits the reader enforces (and the writer, so that whatever it writes
// can be read back).
const (
	// DefaultAlignment is the data alignment of a file without
	// general.alignment.
	DefaultAlignment = 32
	// MaxAlignment bounds general.alignment, which must also be a power
	// of two.
	MaxAlignment = 1 << 20
	// MaxDims is the most dimensions a tensor may have (GGML_MAX_DIMS).
	MaxDims = 4
	// MaxTensorNameLen is the longest tensor name, in bytes, that the
	// specification allows.
	MaxTensorNameLen = 64
	// MaxKeyLen is the longest metadata key, in bytes.
	MaxKeyLen = 1<<16 - 1
	// MaxStringLen bounds a metadata string value, in bytes.
	MaxStringLen = 1 << 30
	// MaxArrayDepth bounds the nesting of arrays of arrays; a plain array
	// has depth 1.
	MaxArrayDepth = 8
)

// Smallest encodings, used to reject counts the file cannot hold before
// anything is allocated for them.
const (
	minKVSize         = 8 + 1 + 4 + 1 // key length, 1-byte key, type, 1-byte value
	minTensorInfoSize = 8 + 1 + 4 + 4 + 8
	// prealloc caps the capacity reserved from a count read from the file;
	// beyond it slices grow as elements are actually read, so memory stays
	// proportional to the bytes parsed, not to a claimed count.
	prealloc = 1 << 12
	// windowSize is the read-ahead of a decoder that reads through
	// io.ReaderAt.
	windowSize = 64 << 10
)

// Decode reads a GGUF file of size bytes from r. Tensor data is not read:
// File.TensorData reads it from r on demand, so r must stay usable as long
// as the File is.
func Decode(r io.ReaderAt, size int64) (*File, error) {
	if size < 0 {
		return nil, fmt.Errorf("gguf: negative file size %d", size)
	}
	d := &decoder{src: r, size: size}
	f, err := d.decode()
	if err != nil {
		return nil, err
	}
	f.src = r
	return f, nil
}

// DecodeBytes decodes a GGUF file held in memory (such as an embedded
// model). TensorData returns slices of b, which must not be modified while
// the File is in use.
func DecodeBytes(b []byte) (*File, error) {
	d := &decoder{buf: b, size: int64(len(b))}
	f, err := d.decode()
	if err != nil {
		return nil, err
	}
	f.data = b
	return f, nil
}

// decoder reads the fields of a file in order. It reads either from buf,
// which holds the whole file when src is nil, or through src, keeping in
// buf a window of the file that starts at base.
type decoder struct {
	src  io.ReaderAt
	size int64
	buf  []byte
	base int64
	off  int64 // offset of the next field
}

// errAt returns a FormatError for field at offset off.
func errAt(off int64, field string, err error) *FormatError {
	return &FormatError{Offset: off, Field: field, Err: err}
}

// within prefixes the field of a FormatError with context, such as the key
// whose value was being read.
func within(err error, format string, args ...any) error {
	var fe *FormatError
	if errors.As(err, &fe) {
		fe.Field = fmt.Sprintf(format, args...) + ": " + fe.Field
	}
	return err
}

// take returns the next n bytes of the file and advances past them. The
// slice is valid until the next call.
func (d *decoder) take(n int64, field string) ([]byte, error) {
	if left := d.size - d.off; n > left {
		return nil, errAt(d.off, field, fmt.Errorf("need %d bytes, %d left: %w", n, left, ErrTruncated))
	}
	if d.src == nil {
		b := d.buf[d.off : d.off+n : d.off+n]
		d.off += n
		return b, nil
	}
	if d.off < d.base || d.off+n > d.base+int64(len(d.buf)) {
		if err := d.fill(n); err != nil {
			return nil, errAt(d.off, field, err)
		}
	}
	i := d.off - d.base
	d.off += n
	return d.buf[i : i+n : i+n], nil
}

// fill reads a window of at least n bytes starting at d.off; n has been
// checked against the size of the file.
func (d *decoder) fill(n int64) error {
	want := min(max(n, windowSize), d.size-d.off)
	if int64(cap(d.buf)) < want {
		d.buf = make([]byte, want)
	}
	d.buf = d.buf[:want]
	got, err := d.src.ReadAt(d.buf, d.off)
	// A short read-ahead is fine (the reader may hold less than the size
	// claimed); only the n bytes needed now must be there.
	d.buf, d.base = d.buf[:got], d.off
	if int64(got) < n {
		if err == nil || err == io.EOF {
			err = ErrTruncated
		}
		return fmt.Errorf("reading %d bytes: %w", n, err)
	}
	return nil
}

func (d *decoder) u32(field string) (uint32, error) {
	b, err := d.take(4, field)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (d *decoder) u64(field string) (uint64, error) {
	b, err := d.take(8, field)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// count reads a uint64 count of items of at least minSize bytes each and
// checks that the rest of the file can hold them.
func (d *decoder) count(field string, minSize int64) (int64, error) {
	at := d.off
	n, err := d.u64(field)
	if err != nil {
		return 0, err
	}
	if left := d.size - d.off; n > uint64(left/minSize) {
		return 0, errAt(at, field, fmt.Errorf("%d items of at least %d bytes each do not fit in the %d bytes left: %w", n, minSize, left, ErrTruncated))
	}
	return int64(n), nil
}

// str reads a string of at most maxLen bytes.
func (d *decoder) str(field string, maxLen int64) (string, error) {
	at := d.off
	n, err := d.u64(field + " length")
	if err != nil {
		return "", err
	}
	if n > uint64(maxLen) {
		return "", errAt(at, field+" length", fmt.Errorf("%d exceeds the limit of %d bytes", n, maxLen))
	}
	b, err := d.take(int64(n), field)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func (d *decoder) decode() (*File, error) {
	f := &File{Size: d.size, Alignment: DefaultAlignment}

	if d.size < int64(len(Magic)) {
		// Too short for the magic: say whether it could be a cut GGUF file.
		b, err := d.take(d.size, "magic")
		if err == nil && !strings.HasPrefix(Magic, string(b)) {
			return nil, errAt(0, "magic", fmt.Errorf("%q: %w", b, ErrNotGGUF))
		}
		d.off = 0
	}
	magic, err := d.take(4, "magic")
	if err != nil {
		return nil, err
	}
	if string(magic) != Magic {
		return nil, errAt(0, "magic", fmt.Errorf("%q: %w", magic, ErrNotGGUF))
	}
	if f.Version, err = d.u32("version"); err != nil {
		return nil, err
	}
	switch v := f.Version; {
	case v == 2 || v == 3:
	case v == 1:
		return nil, errAt(4, "version", fmt.Errorf("version 1 (32-bit counts) is obsolete: %w", ErrUnsupportedVersion))
	case v&0xffff == 0 && bits.ReverseBytes32(v) <= 3:
		return nil, errAt(4, "version", fmt.Errorf("big-endian file (version %d): %w", bits.ReverseBytes32(v), ErrUnsupportedVersion))
	default:
		return nil, errAt(4, "version", fmt.Errorf("version %d: %w", v, ErrUnsupportedVersion))
	}
	nTensors, err := d.count("tensor count", minTensorInfoSize)
	if err != nil {
		return nil, err
	}
	nKV, err := d.count("metadata count", minKVSize)
	if err != nil {
		return nil, err
	}
	if left := d.size - d.off; nTensors*minTensorInfoSize+nKV*minKVSize > left {
		return nil, errAt(8, "tensor and metadata counts", fmt.Errorf("%d tensors and %d keys do not fit in the %d bytes left: %w", nTensors, nKV, left, ErrTruncated))
	}

	if err := d.readKVs(f, nKV); err != nil {
		return nil, err
	}
	fieldOffsets, err := d.readTensorInfos(f, nTensors)
	if err != nil {
		return nil, err
	}
	if err := f.placeTensors(d.off, fieldOffsets); err != nil {
		return nil, err
	}
	return f, nil
}

func (d *decoder) readKVs(f *File, n int64) error {
	f.KV = make([]KV, 0, min(n, prealloc))
	f.keys = make(map[string]int, min(n, prealloc))
	for i := range n {
		at := d.off
		key, err := d.str("key", MaxKeyLen)
		if err != nil {
			return within(err, "metadata %d", i)
		}
		if key == "" {
			return errAt(at, fmt.Sprintf("metadata %d key", i), errors.New("empty key"))
		}
		if j, dup := f.keys[key]; dup {
			return errAt(at, fmt.Sprintf("metadata %d key %q", i, key), fmt.Errorf("duplicate of metadata %d", j))
		}
		valueAt := d.off
		v, err := d.value(0)
		if err != nil {
			return within(err, "metadata %d %q", i, key)
		}
		if key == "general.alignment" {
			a, err := checkAlignment(v)
			if err != nil {
				return errAt(valueAt, fmt.Sprintf("metadata %d %q", i, key), err)
			}
			f.Alignment = a
		}
		f.keys[key] = len(f.KV)
		f.KV = append(f.KV, KV{Key: key, Value: v})
	}
	return nil
}

// checkAlignment returns the alignment that a general.alignment value sets.
func checkAlignment(v Value) (int64, error) {
	a, ok := v.x.(uint32)
	if !ok {
		return 0, fmt.Errorf("alignment is %s, want uint32", v.typ)
	}
	if a == 0 || a&(a-1) != 0 || a > MaxAlignment {
		return 0, fmt.Errorf("alignment %d is not a power of two in [1, %d]", a, MaxAlignment)
	}
	return int64(a), nil
}

// value reads a type id and a value of that type; depth is the number of
// arrays it is nested in.
func (d *decoder) value(depth int) (Value, error) {
	at := d.off
	t, err := d.u32("value type")
	if err != nil {
		return Value{}, err
	}
	switch t := ValueType(t); {
	case !t.Valid():
		return Value{}, errAt(at, "value type", fmt.Errorf("undefined type id %d", uint32(t)))
	case t == TypeArray:
		return d.array(depth + 1)
	case t == TypeString:
		s, err := d.str("string", MaxStringLen)
		return Value{typ: TypeString, x: s}, err
	default:
		b, err := d.take(int64(t.fixedSize()), t.String())
		if err != nil {
			return Value{}, err
		}
		v, err := decodeFixed(t, b, 1)
		if err != nil {
			return Value{}, errAt(at+4, t.String(), err)
		}
		return scalarOf(v), nil
	}
}

// array reads an array's element type, length and elements; depth counts
// this array.
func (d *decoder) array(depth int) (Value, error) {
	if depth > MaxArrayDepth {
		return Value{}, errAt(d.off, "array", fmt.Errorf("arrays nested deeper than %d", MaxArrayDepth))
	}
	at := d.off
	t32, err := d.u32("array element type")
	if err != nil {
		return Value{}, err
	}
	t := ValueType(t32)
	if !t.Valid() {
		return Value{}, errAt(at, "array element type", fmt.Errorf("undefined type id %d", t32))
	}
	n, err := d.count("array length", t.minSize())
	if err != nil {
		return Value{}, err
	}
	v := Value{typ: TypeArray, elem: t}
	switch t {
	case TypeString:
		v.x, err = d.stringArray(n)
	case TypeArray:
		vals := make([]Value, 0, min(n, prealloc))
		for i := range n {
			e, err := d.array(depth + 1)
			if err != nil {
				return Value{}, within(err, "element %d", i)
			}
			vals = append(vals, e)
		}
		v.x = vals
	default:
		// count has checked that n*fixedSize bytes remain, so this neither
		// overflows nor allocates beyond the file.
		dataAt := d.off
		var b []byte
		if b, err = d.take(n*int64(t.fixedSize()), "array of "+t.String()); err != nil {
			return Value{}, err
		}
		if v.x, err = decodeFixed(t, b, int(n)); err != nil {
			return Value{}, errAt(dataAt, "array of "+t.String(), err)
		}
	}
	if err != nil {
		return Value{}, err
	}
	return v, nil
}

// stringArray reads n strings into one backing string, so that a
// vocabulary of 150k tokens costs a few allocations rather than 150k.
func (d *decoder) stringArray(n int64) ([]string, error) {
	ends := make([]int, 0, min(n, prealloc))
	var arena []byte
	for i := range n {
		at := d.off
		l, err := d.u64("string length")
		if err != nil {
			return nil, within(err, "element %d", i)
		}
		if l > MaxStringLen {
			return nil, errAt(at, fmt.Sprintf("element %d string length", i), fmt.Errorf("%d exceeds the limit of %d bytes", l, MaxStringLen))
		}
		b, err := d.take(int64(l), "string")
		if err != nil {
			return nil, within(err, "element %d", i)
		}
		arena = append(arena, b...)
		ends = append(ends, len(arena))
	}
	all := string(arena)
	out := make([]string, len(ends))
	start := 0
	for i, end := range ends {
		out[i] = all[start:end]
		start = end
	}
	return out, nil
}

// decodeFixed decodes n little-endian values of fixed-size type t from b
// into a slice of the matching Go type.
func decodeFixed(t ValueType, b []byte, n int) (any, error) {
	le := binary.LittleEndian
	switch t {
	case TypeUint8:
		return slices.Clone(b[:n]), nil
	case TypeInt8:
		s := make([]int8, n)
		for i := range s {
			s[i] = int8(b[i])
		}
		return s, nil
	case TypeBool:
		s := make([]bool, n)
		for i := range s {
			if b[i] > 1 {
				return nil, fmt.Errorf("element %d: bool byte %d is neither 0 nor 1", i, b[i])
			}
			s[i] = b[i] == 1
		}
		return s, nil
	case TypeUint16:
		s := make([]uint16, n)
		for i := range s {
			s[i] = le.Uint16(b[2*i:])
		}
		return s, nil
	case TypeInt16:
		s := make([]int16, n)
		for i := range s {
			s[i] = int16(le.Uint16(b[2*i:]))
		}
		return s, nil
	case TypeUint32:
		s := make([]uint32, n)
		for i := range s {
			s[i] = le.Uint32(b[4*i:])
		}
		return s, nil
	case TypeInt32:
		s := make([]int32, n)
		for i := range s {
			s[i] = int32(le.Uint32(b[4*i:]))
		}
		return s, nil
	case TypeFloat32:
		s := make([]float32, n)
		for i := range s {
			s[i] = math.Float32frombits(le.Uint32(b[4*i:]))
		}
		return s, nil
	case TypeUint64:
		s := make([]uint64, n)
		for i := range s {
			s[i] = le.Uint64(b[8*i:])
		}
		return s, nil
	case TypeInt64:
		s := make([]int64, n)
		for i := range s {
			s[i] = int64(le.Uint64(b[8*i:]))
		}
		return s, nil
	case TypeFloat64:
		s := make([]float64, n)
		for i := range s {
			s[i] = math.Float64frombits(le.Uint64(b[8*i:]))
		}
		return s, nil
	}
	return nil, fmt.Errorf("type %s has no fixed size", t)
}

// scalarOf turns a one-element slice from decodeFixed into a scalar Value.
func scalarOf(s any) Value {
	v, _ := ValueOf(indexAny(s, 0))
	return v
}

// readTensorInfos reads the tensor directory. It returns, for each tensor,
// the file offset of its stored data offset, for error messages.
func (d *decoder) readTensorInfos(f *File, n int64) ([]int64, error) {
	f.Tensors = make([]TensorInfo, 0, min(n, prealloc))
	f.tensors = make(map[string]int, min(n, prealloc))
	offsetAt := make([]int64, 0, min(n, prealloc))
	for i := range n {
		at := d.off
		name, err := d.str("name", MaxTensorNameLen)
		if err != nil {
			return nil, within(err, "tensor %d", i)
		}
		ctx := func() string { return fmt.Sprintf("tensor %d %q", i, name) }
		if name == "" {
			return nil, errAt(at, ctx()+" name", errors.New("empty name"))
		}
		if j, dup := f.tensors[name]; dup {
			return nil, errAt(at, ctx()+" name", fmt.Errorf("duplicate of tensor %d", j))
		}
		dimsAt := d.off
		nDims, err := d.u32("dimension count")
		if err != nil {
			return nil, within(err, "%s", ctx())
		}
		if nDims > MaxDims {
			return nil, errAt(dimsAt, ctx()+" dimension count", fmt.Errorf("%d dimensions, at most %d allowed", nDims, MaxDims))
		}
		shape := make([]int64, nDims)
		for j := range shape {
			dimAt := d.off
			dim, err := d.u64("dimension")
			if err != nil {
				return nil, within(err, "%s", ctx())
			}
			if dim > math.MaxInt64 {
				return nil, errAt(dimAt, fmt.Sprintf("%s dimension %d", ctx(), j), fmt.Errorf("%d overflows int64", dim))
			}
			shape[j] = int64(dim)
		}
		typeAt := d.off
		t32, err := d.u32("type")
		if err != nil {
			return nil, within(err, "%s", ctx())
		}
		typ := tensor.DType(t32)
		if !typ.Known() {
			return nil, errAt(typeAt, ctx()+" type", fmt.Errorf("unknown tensor type id %d", t32))
		}
		size, err := tensorSize(shape, typ)
		if err != nil {
			return nil, errAt(dimsAt, ctx()+" shape", err)
		}
		offAt := d.off
		off, err := d.u64("offset")
		if err != nil {
			return nil, within(err, "%s", ctx())
		}
		if off > math.MaxInt64 {
			return nil, errAt(offAt, ctx()+" offset", fmt.Errorf("%d overflows int64", off))
		}
		f.tensors[name] = len(f.Tensors)
		// Offset is relative to the data section until placeTensors.
		f.Tensors = append(f.Tensors, TensorInfo{Name: name, Shape: shape, Type: typ, Offset: int64(off), Size: size})
		offsetAt = append(offsetAt, offAt)
	}
	return offsetAt, nil
}

// tensorSize returns the bytes that a tensor of the given shape and type
// occupies, checking that rows are whole blocks and that nothing overflows.
func tensorSize(shape []int64, typ tensor.DType) (int64, error) {
	rowLen, rows := int64(1), int64(1)
	for j, dim := range shape {
		if j == 0 {
			rowLen = dim
			continue
		}
		if dim != 0 && rows > math.MaxInt64/dim {
			return 0, fmt.Errorf("%v: element count overflows int64", shape)
		}
		rows *= dim
	}
	if rowLen != 0 && rows > math.MaxInt64/rowLen {
		return 0, fmt.Errorf("%v: element count overflows int64", shape)
	}
	if bs := int64(typ.BlockSize()); rowLen%bs != 0 {
		return 0, fmt.Errorf("%v: row of %d elements is not a whole number of %s blocks of %d", shape, rowLen, typ, bs)
	}
	rowBytes, err := typ.RowBytes(rowLen)
	if err != nil {
		return 0, fmt.Errorf("%v: %w", shape, err)
	}
	hi, lo := bits.Mul64(uint64(rowBytes), uint64(rows))
	if hi != 0 || lo > math.MaxInt64 {
		return 0, fmt.Errorf("%v: %s size overflows", shape, typ)
	}
	return int64(lo), nil
}

// placeTensors sets the data section, which starts at the first aligned
// offset at or after end (the end of the tensor directory), and checks that
// every tensor is aligned, lies inside the file, and overlaps no other.
func (f *File) placeTensors(end int64, offsetAt []int64) error {
	if end > math.MaxInt64-f.Alignment {
		return errAt(end, "data section", errors.New("offset overflows"))
	}
	f.DataOffset = alignUp(end, f.Alignment)
	if len(f.Tensors) == 0 {
		return nil
	}
	if f.DataOffset > f.Size {
		return errAt(end, "data section", fmt.Errorf("starts at %d, beyond file size %d: %w", f.DataOffset, f.Size, ErrTruncated))
	}
	room := f.Size - f.DataOffset
	for i := range f.Tensors {
		t := &f.Tensors[i]
		ctx := func() string { return fmt.Sprintf("tensor %d %q offset", i, t.Name) }
		if t.Offset%f.Alignment != 0 {
			return errAt(offsetAt[i], ctx(), fmt.Errorf("%d is not a multiple of the alignment %d", t.Offset, f.Alignment))
		}
		if t.Offset > room || t.Size > room-t.Offset {
			return errAt(offsetAt[i], ctx(), fmt.Errorf("%d bytes at data offset %d end at byte %d, beyond file size %d: %w",
				t.Size, t.Offset, uint64(f.DataOffset)+uint64(t.Offset)+uint64(t.Size), f.Size, ErrTruncated))
		}
		t.Offset += f.DataOffset
	}
	order := make([]int, len(f.Tensors))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		ta, tb := &f.Tensors[a], &f.Tensors[b]
		return cmp.Or(cmp.Compare(ta.Offset, tb.Offset), cmp.Compare(a, b))
	})
	// In offset order, a tensor that overlaps any earlier one overlaps the
	// one just before it, which ends last because none overlap so far.
	prev := -1
	for _, i := range order {
		t := &f.Tensors[i]
		if t.Size == 0 {
			continue
		}
		if prev >= 0 {
			p := &f.Tensors[prev]
			if t.Offset < p.Offset+p.Size {
				return errAt(offsetAt[i], fmt.Sprintf("tensor %d %q offset", i, t.Name),
					fmt.Errorf("data [%d, %d) overlaps tensor %d %q [%d, %d)", t.Offset, t.Offset+t.Size, prev, p.Name, p.Offset, p.Offset+p.Size))
			}
		}
		prev = i
	}
	return nil
}

// alignUp rounds off up to a multiple of align, a power of two.
func alignUp(off, align int64) int64 {
	return (off + align - 1) &^ (align - 1)
}
