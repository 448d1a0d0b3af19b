package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/tensor"
)

// raw assembles a GGUF file field by field, valid or not.
type raw struct{ b []byte }

func (r *raw) u8(x uint8) *raw   { r.b = append(r.b, x); return r }
func (r *raw) u32(x uint32) *raw { r.b = binary.LittleEndian.AppendUint32(r.b, x); return r }
func (r *raw) u64(x uint64) *raw { r.b = binary.LittleEndian.AppendUint64(r.b, x); return r }
func (r *raw) str(s string) *raw { r.u64(uint64(len(s))); r.b = append(r.b, s...); return r }

// kv appends a key and a value type id; the caller appends the value.
func (r *raw) kv(key string, t ValueType) *raw { return r.str(key).u32(uint32(t)) }

// tensor appends a tensor description.
func (r *raw) tensor(name string, typ tensor.DType, off uint64, shape ...uint64) *raw {
	r.str(name).u32(uint32(len(shape)))
	for _, d := range shape {
		r.u64(d)
	}
	return r.u32(uint32(typ)).u64(off)
}

// pad appends zeros up to a multiple of align.
func (r *raw) pad(align int) *raw {
	for len(r.b)%align != 0 {
		r.b = append(r.b, 0)
	}
	return r
}

// zeros appends n zero bytes.
func (r *raw) zeros(n int) *raw { r.b = append(r.b, make([]byte, n)...); return r }

// header starts a version 3 file with the given counts.
func header(nTensors, nKV uint64) *raw {
	r := &raw{b: []byte("GGUF")}
	return r.u32(3).u64(nTensors).u64(nKV)
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name string
		file []byte
		is   error  // a sentinel the error must match, if not nil
		msg  string // a substring of the error
		at   int64  // the FormatError offset, if not -1
	}{
		{"empty", nil, ErrTruncated, "magic at byte 0", 0},
		{"short magic", []byte("GGU"), ErrTruncated, "magic", 0},
		{"short non-GGUF", []byte("PK"), ErrNotGGUF, `"PK"`, 0},
		{"bad magic", append([]byte("GGML"), make([]byte, 20)...), ErrNotGGUF, `"GGML"`, 0},
		{"version 1", (&raw{b: []byte("GGUF")}).u32(1).u32(0).u32(0).b, ErrUnsupportedVersion, "version 1", 4},
		{"version 4", (&raw{b: []byte("GGUF")}).u32(4).u64(0).u64(0).b, ErrUnsupportedVersion, "version 4", 4},
		{"big-endian", (&raw{b: []byte("GGUF")}).u32(3 << 24).u64(0).u64(0).b, ErrUnsupportedVersion, "big-endian", 4},
		{"no counts", (&raw{b: []byte("GGUF")}).u32(3).u32(0).b, ErrTruncated, "tensor count", 8},
		{"huge tensor count", header(1<<62, 0).b, ErrTruncated, "do not fit", 8},
		{"huge key count", header(0, math.MaxUint64).b, ErrTruncated, "do not fit", 16},
		{"counts together too many", header(1, 1).zeros(30).b, ErrTruncated, "1 tensors and 1 keys", 8},
		{"huge key length", header(0, 1).u64(1 << 63).zeros(20).b, nil, "exceeds the limit of 65535", 24},
		{"empty key", header(0, 1).str("").u32(uint32(TypeUint8)).u8(1).zeros(8).b, nil, "empty key", 24},
		{"duplicate key", header(0, 2).kv("a", TypeUint8).u8(1).kv("a", TypeUint8).u8(2).b, nil, "duplicate of metadata 0", 38},
		{"undefined value type", header(0, 1).kv("a", 13).u8(0).b, nil, "undefined type id 13", 33},
		{"bool 2", header(0, 1).kv("a", TypeBool).u8(2).b, nil, "neither 0 nor 1", 37},
		{"bool array 2", header(0, 1).kv("a", TypeArray).u32(uint32(TypeBool)).u64(2).u8(1).u8(7).b, nil, "element 1: bool byte 7", 49},
		{"huge string", header(0, 1).kv("a", TypeString).u64(math.MaxUint64).b, nil, "exceeds the limit", 37},
		{"string past end", header(0, 1).kv("a", TypeString).u64(100).zeros(10).b, ErrTruncated, "need 100 bytes, 10 left", 45},
		{"2^40 strings", header(0, 1).kv("a", TypeArray).u32(uint32(TypeString)).u64(1 << 40).zeros(64).b, ErrTruncated, "1099511627776 items", 41},
		{"2^61 uint64s", header(0, 1).kv("a", TypeArray).u32(uint32(TypeUint64)).u64(1 << 61).zeros(64).b, ErrTruncated, "items of at least 8 bytes", 41},
		{"2^63 bytes", header(0, 1).kv("a", TypeArray).u32(uint32(TypeUint8)).u64(1 << 63).zeros(64).b, ErrTruncated, "do not fit", 41},
		{"2^40 arrays", header(0, 1).kv("a", TypeArray).u32(uint32(TypeArray)).u64(1 << 40).zeros(64).b, ErrTruncated, "items of at least 12 bytes", 41},
		{"array element type", header(0, 1).kv("a", TypeArray).u32(77).u64(0).b, nil, "undefined type id 77", 37},
		{"deep arrays", func() []byte {
			r := header(0, 1).kv("a", TypeArray)
			for range MaxArrayDepth {
				r.u32(uint32(TypeArray)).u64(1)
			}
			return r.u32(uint32(TypeUint8)).u64(0).b
		}(), nil, "nested deeper than 8", -1},
		{"string element past end", header(0, 1).kv("a", TypeArray).u32(uint32(TypeString)).u64(2).str("ok").u64(50).u8('x').zeros(8).b, ErrTruncated, "element 1: string at byte 67: need 50 bytes, 9 left", 67},
		{"alignment type", header(0, 1).kv("general.alignment", TypeUint64).u64(32).b, nil, "alignment is uint64, want uint32", 49},
		{"alignment 0", header(0, 1).kv("general.alignment", TypeUint32).u32(0).b, nil, "alignment 0 is not a power of two", 49},
		{"alignment 48", header(0, 1).kv("general.alignment", TypeUint32).u32(48).b, nil, "alignment 48", 49},
		{"alignment 2^21", header(0, 1).kv("general.alignment", TypeUint32).u32(1 << 21).b, nil, "alignment 2097152", 49},
		{"empty tensor name", header(1, 0).tensor("", tensor.F32, 0, 1).pad(32).zeros(4).b, nil, "empty name", 24},
		{"long tensor name", header(1, 0).tensor(strings.Repeat("n", 65), tensor.F32, 0, 1).pad(32).zeros(4).b, nil, "65 exceeds the limit of 64", 24},
		{"duplicate tensor", header(2, 0).tensor("t", tensor.F32, 0, 1).tensor("t", tensor.F32, 32, 1).pad(32).zeros(36).b, nil, "duplicate of tensor 0", 57},
		{"five dims", header(1, 0).tensor("t", tensor.F32, 0, 1, 1, 1, 1, 1).pad(32).zeros(4).b, nil, "5 dimensions", 33},
		{"dim overflows int64", header(1, 0).tensor("t", tensor.F32, 0, 1<<63).pad(32).zeros(4).b, nil, "overflows int64", 37},
		{"element count overflows", header(1, 0).tensor("t", tensor.F32, 0, 1<<32, 1<<32).pad(32).zeros(4).b, nil, "element count overflows", 33},
		{"element count overflows in rows", header(1, 0).tensor("t", tensor.F32, 0, 1, 1<<32, 1<<32).pad(32).zeros(4).b, nil, "element count overflows", 33},
		{"byte size overflows", header(1, 0).tensor("t", tensor.F64, 0, 1<<31, 1<<31).pad(32).zeros(4).b, nil, "overflows", 33},
		{"unknown type", header(1, 0).tensor("blk.0.attn_q.weight", tensor.DType(4), 0, 32).pad(32).zeros(32).b, nil, `tensor 0 "blk.0.attn_q.weight" type at byte 63: unknown tensor type id 4`, 63},
		{"huge type id", header(1, 0).tensor("t", tensor.DType(math.MaxUint32), 0, 32).pad(32).zeros(32).b, nil, "unknown tensor type id 4294967295", 45},
		{"partial block", header(1, 0).tensor("t", tensor.Q4_0, 0, 16, 2).pad(32).zeros(64).b, nil, "not a whole number of Q4_0 blocks of 32", 33},
		{"offset overflows int64", header(1, 0).tensor("t", tensor.F32, 1<<63, 1).pad(32).zeros(4).b, nil, "overflows int64", 49},
		{"misaligned", header(1, 0).tensor("t", tensor.F32, 4, 1).pad(32).zeros(40).b, nil, "4 is not a multiple of the alignment 32", 49},
		{"beyond file", header(2, 0).tensor("a", tensor.F32, 0, 1).tensor("blk.0.attn_q.weight", tensor.F32, 32, 8).pad(32).zeros(40).b, ErrTruncated,
			`tensor 1 "blk.0.attn_q.weight" offset at byte 100: 32 bytes at data offset 32 end at byte 192, beyond file size 168`, 100},
		{"far beyond file", header(1, 0).tensor("t", tensor.F32, math.MaxInt64-31, 8).pad(32).zeros(40).b, ErrTruncated, "beyond file size", 49},
		{"no data section", header(1, 0).tensor("t", tensor.F32, 0, 1).b, ErrTruncated, "data section at byte 57: starts at 64", 57},
		{"overlap", header(2, 0).tensor("a", tensor.F32, 0, 16).tensor("b", tensor.F32, 32, 16).pad(32).zeros(96).b, nil,
			`tensor 1 "b" offset at byte 82: data [128, 192) overlaps tensor 0 "a" [96, 160)`, 82},
		{"overlap out of order", header(3, 0).tensor("a", tensor.F32, 64, 8).tensor("b", tensor.F32, 0, 32).tensor("c", tensor.F32, 160, 8).pad(32).zeros(192).b, nil,
			`tensor 0 "a" offset at byte 49: data [192, 224) overlaps tensor 1 "b" [128, 256)`, 49},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, dec := range decoders {
				f, err := dec.decode(tc.file)
				if err == nil {
					t.Fatalf("%s succeeded: %+v", dec.name, f)
				}
				if tc.is != nil && !errors.Is(err, tc.is) {
					t.Errorf("%s: %v, want %v", dec.name, err, tc.is)
				}
				if !errors.Is(err, ErrMalformed) {
					t.Errorf("%s: %v is not ErrMalformed", dec.name, err)
				}
				if !strings.Contains(err.Error(), tc.msg) {
					t.Errorf("%s: %v\nwant it to contain %q", dec.name, err, tc.msg)
				}
				var fe *FormatError
				if errors.As(err, &fe) && tc.at >= 0 && fe.Offset != tc.at {
					t.Errorf("%s: error at byte %d, want %d: %v", dec.name, fe.Offset, tc.at, err)
				}
			}
		})
	}
}

// TestDecodeAccepts covers valid files that writers seldom produce.
func TestDecodeAccepts(t *testing.T) {
	tests := []struct {
		name  string
		file  []byte
		check func(t *testing.T, f *File)
	}{
		{"version 2", (&raw{b: []byte("GGUF")}).u32(2).u64(0).u64(1).kv("a", TypeUint8).u8(7).b, func(t *testing.T, f *File) {
			if f.Version != 2 {
				t.Errorf("version %d", f.Version)
			}
		}},
		{"no tensors, no padding", header(0, 0).b, func(t *testing.T, f *File) {
			if f.DataOffset != 32 || f.Size != 24 {
				t.Errorf("data offset %d, size %d", f.DataOffset, f.Size)
			}
		}},
		{"alignment 1", header(1, 1).kv("general.alignment", TypeUint32).u32(1).tensor("t", tensor.I8, 0, 3).zeros(3).b, func(t *testing.T, f *File) {
			if f.Alignment != 1 || f.Tensors[0].Offset != f.DataOffset || f.DataOffset != int64(f.Size-3) {
				t.Errorf("alignment %d, data offset %d, tensor at %d", f.Alignment, f.DataOffset, f.Tensors[0].Offset)
			}
		}},
		{"scalar and empty tensors", header(3, 0).tensor("s", tensor.F32, 0).tensor("e", tensor.Q4_K, 0, 0, 7).tensor("e2", tensor.F16, 32, 4, 0).pad(32).zeros(32).b, func(t *testing.T, f *File) {
			want := []int64{4, 0, 0}
			for i, ti := range f.Tensors {
				if ti.Size != want[i] {
					t.Errorf("tensor %q: size %d, want %d", ti.Name, ti.Size, want[i])
				}
			}
			if n := f.Tensors[0].Elements(); n != 1 {
				t.Errorf("scalar has %d elements", n)
			}
			if d, err := f.TensorData("e2"); err != nil || len(d) != 0 {
				t.Errorf("empty tensor at the end of the file: %v, %v", d, err)
			}
		}},
		{"tensors out of order with gaps", header(2, 0).tensor("late", tensor.F32, 64, 1).tensor("early", tensor.F32, 0, 1).pad(32).zeros(68).b, func(t *testing.T, f *File) {
			if f.Tensors[0].Offset != f.DataOffset+64 || f.Tensors[1].Offset != f.DataOffset {
				t.Errorf("offsets %d, %d", f.Tensors[0].Offset, f.Tensors[1].Offset)
			}
		}},
		{"non-UTF-8 strings", header(0, 1).kv("a", TypeString).str("\xff\xfe").b, func(t *testing.T, f *File) {
			if s, err := f.String("a"); s != "\xff\xfe" || err != nil {
				t.Errorf("%q, %v", s, err)
			}
		}},
		{"max nesting", func() []byte {
			r := header(0, 1).kv("a", TypeArray)
			for range MaxArrayDepth - 1 {
				r.u32(uint32(TypeArray)).u64(1)
			}
			return r.u32(uint32(TypeUint8)).u64(1).u8(5).b
		}(), func(t *testing.T, f *File) {
			v, _ := f.Lookup("a")
			for range MaxArrayDepth - 1 {
				v = v.Interface().([]Value)[0]
			}
			if got := v.Interface().([]uint8); len(got) != 1 || got[0] != 5 {
				t.Errorf("innermost %v", got)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, dec := range decoders {
				f, err := dec.decode(tc.file)
				if err != nil {
					t.Fatalf("%s: %v", dec.name, err)
				}
				tc.check(t, f)
			}
		})
	}
}

// TestHugeCountsDoNotAllocate checks that counts claiming more than the file
// holds fail before anything in proportion to them is allocated.
func TestHugeCountsDoNotAllocate(t *testing.T) {
	files := [][]byte{
		header(0, 1).kv("a", TypeArray).u32(uint32(TypeString)).u64(1 << 40).zeros(1024).b,
		header(1<<40, 1<<40).zeros(1024).b,
		header(0, 1).kv("a", TypeString).u64(1 << 40).zeros(1024).b,
		// Claims fitting a 64 KiB file: memory may grow with the bytes
		// actually read, not with the claim.
		header(0, 2).kv("a", TypeArray).u32(uint32(TypeString)).u64(8000).zeros(64 << 10).b,
		header(0, 2).kv("a", TypeArray).u32(uint32(TypeArray)).u64(5000).zeros(64 << 10).b,
	}
	for i, b := range files {
		for _, dec := range decoders {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := dec.decode(b)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatalf("file %d: %s succeeded", i, dec.name)
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
				t.Errorf("file %d: %s allocated %d bytes: %v", i, dec.name, n, err)
			}
		}
	}
}

// TestDecodeShortReaderAt gives Decode a reader that holds fewer bytes than
// the size claimed.
func TestDecodeShortReaderAt(t *testing.T) {
	b := sampleFile(t)
	_, err := Decode(bytes.NewReader(b[:100]), int64(len(b)))
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("%v, want ErrTruncated", err)
	}
	if _, err := Decode(bytes.NewReader(b), -1); err == nil {
		t.Fatal("negative size accepted")
	}
	// Tensor data past the end of the reader (the file ends with the
	// last tensor's padding: cut into the tensor itself).
	full, err := DecodeBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	last := full.Tensors[len(full.Tensors)-1]
	f, err := Decode(bytes.NewReader(b[:last.Offset+last.Size-1]), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadTensor(last); err == nil {
		t.Fatal("reading past the end of the reader succeeded")
	}
}

func TestClose(t *testing.T) {
	b := sampleFile(t)
	f, err := Decode(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.TensorData(sampleTensors[0].name); err != nil {
		t.Fatalf("Decode's File has nothing to close, so data stays readable: %v", err)
	}
}

// TestInfo: a File from Open, mapped or read through its descriptor,
// describes the file at the path (os.SameFile, its size) even after
// Close; one from Decode or DecodeBytes describes none.
func TestInfo(t *testing.T) {
	b := sampleFile(t)
	path := filepath.Join(t.TempDir(), "s.gguf")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "copy.gguf")
	if err := os.WriteFile(other, b, 0o644); err != nil {
		t.Fatal(err)
	}
	ost, err := os.Stat(other)
	if err != nil {
		t.Fatal(err)
	}
	for _, tryMap := range []bool{true, false} {
		f, err := open(path, tryMap)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		info := f.Info()
		if info == nil || !os.SameFile(info, st) || info.Size() != int64(len(b)) || os.SameFile(info, ost) {
			t.Errorf("open(map %v): Info() = %v, want the file at the path (%d bytes), not its copy", tryMap, info, len(b))
		}
	}
	f, err := DecodeBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	if f.Info() != nil {
		t.Errorf("DecodeBytes: Info() = %v, want nil", f.Info())
	}
	if f, err = Decode(bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
	if f.Info() != nil {
		t.Errorf("Decode: Info() = %v, want nil", f.Info())
	}
}
