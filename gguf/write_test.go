package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/internal/puregopass"
	"github.com/turbomem/turbomem/tensor"
)

// sampleKVs holds one key of every value type, arrays of every element type
// (empty ones too), nested arrays, and awkward strings.
func sampleKVs() []KV {
	inner1 := mustValue([]string{"a", "bc"})
	inner2 := mustValue([]uint32{1, 2, 3})
	innerEmpty := mustValue([]float64{})
	nested := mustValue([]Value{inner1, inner2, innerEmpty})
	deep := mustValue([]Value{nested, mustValue([]Value{})})
	return []KV{
		{"general.architecture", mustValue("llama")},
		{"general.alignment", mustValue(uint32(64))},
		{"test.uint8", mustValue(uint8(200))},
		{"test.int8", mustValue(int8(-100))},
		{"test.uint16", mustValue(uint16(60000))},
		{"test.int16", mustValue(int16(-30000))},
		{"test.uint32", mustValue(uint32(4000000000))},
		{"test.int32", mustValue(int32(-2000000000))},
		{"test.float32", mustValue(float32(-1.5e-5))},
		{"test.bool_true", mustValue(true)},
		{"test.bool_false", mustValue(false)},
		{"test.string", mustValue("héllo, \x00 wörld")},
		{"test.empty_string", mustValue("")},
		{"test.uint64", mustValue(uint64(math.MaxUint64))},
		{"test.int64", mustValue(int64(math.MinInt64))},
		{"test.float64", mustValue(math.Inf(-1))},
		{"test.nan", mustValue(float32(math.NaN()))},
		{"test.uint8s", mustValue([]uint8{0, 1, 255})},
		{"test.int8s", mustValue([]int8{-128, 0, 127})},
		{"test.uint16s", mustValue([]uint16{0, 65535})},
		{"test.int16s", mustValue([]int16{-32768, 32767})},
		{"test.uint32s", mustValue([]uint32{0, math.MaxUint32})},
		{"test.int32s", mustValue([]int32{math.MinInt32, -1, 0, math.MaxInt32})},
		{"test.float32s", mustValue([]float32{0, -0.5, float32(math.Inf(1))})},
		{"test.bools", mustValue([]bool{true, false, true})},
		{"test.strings", mustValue([]string{"", "x", "日本語", strings.Repeat("z", 300)})},
		{"test.uint64s", mustValue([]uint64{math.MaxUint64})},
		{"test.int64s", mustValue([]int64{math.MinInt64, math.MaxInt64})},
		{"test.float64s", mustValue([]float64{math.Pi, -0.0})},
		{"test.empty_strings", mustValue([]string{})},
		{"test.empty_uint8s", mustValue([]uint8{})},
		{"test.nested", nested},
		{"test.deep", deep},
	}
}

func mustValue(x any) Value {
	v, err := ValueOf(x)
	if err != nil {
		panic(err)
	}
	return v
}

// sampleTensor is a tensor of the sample file, with deterministic bytes.
type sampleTensor struct {
	name  string
	typ   tensor.DType
	shape []int64
}

var sampleTensors = []sampleTensor{
	{"token_embd.weight", tensor.F16, []int64{8, 10}},
	{"blk.0.attn_q.weight", tensor.Q4_0, []int64{64, 3}},
	{"blk.0.attn_k.weight", tensor.Q8_0, []int64{32, 2, 1}},
	{"blk.0.ffn_down.weight", tensor.Q4_K, []int64{256, 2}},
	{"blk.0.attn_norm.weight", tensor.F32, []int64{5}},
	{"scalar", tensor.F64, nil},
	{"empty", tensor.F32, []int64{0, 4}},
	{"blk.0.wide.weight", tensor.BF16, []int64{3, 1, 2, 2}},
	{strings.Repeat("n", MaxTensorNameLen), tensor.I8, []int64{1}},
}

// tensorBytes returns size deterministic bytes that differ between tensors.
func tensorBytes(seed int, size int64) []byte {
	b := make([]byte, size)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// sampleBuilder returns a Builder holding sampleKVs and sampleTensors.
func sampleBuilder(tb testing.TB) *Builder {
	tb.Helper()
	b := NewBuilder()
	for _, kv := range sampleKVs() {
		if err := b.Set(kv.Key, kv.Value); err != nil {
			tb.Fatal(err)
		}
	}
	for i, st := range sampleTensors {
		size, err := tensorSize(st.shape, st.typ)
		if err != nil {
			tb.Fatal(err)
		}
		if err := b.AddTensor(st.name, st.typ, st.shape, tensorBytes(i, size)); err != nil {
			tb.Fatal(err)
		}
	}
	return b
}

// sampleFile returns the encoding of sampleBuilder.
func sampleFile(tb testing.TB) []byte {
	var buf bytes.Buffer
	if _, err := sampleBuilder(tb).WriteTo(&buf); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	bld := sampleBuilder(t)
	layout, total, err := bld.Layout()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sample.gguf")
	if err := bld.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(raw)) != total {
		t.Fatalf("file is %d bytes, Layout said %d", len(raw), total)
	}
	// ggml's reader, loading tensor data into memory, reads the last
	// tensor's padding too.
	if total%64 != 0 {
		t.Errorf("file of %d bytes does not end on the alignment of 64", total)
	}
	for _, o := range openers {
		t.Run(o.name, func(t *testing.T) {
			f := o.open(t, path, raw)
			defer f.Close()
			if f.Version != 3 || f.Alignment != 64 || f.DataOffset%64 != 0 {
				t.Errorf("version %d alignment %d data offset %d", f.Version, f.Alignment, f.DataOffset)
			}
			if want := sampleKVs(); !sameKVs(f.KV, want) {
				t.Errorf("metadata:\n got %v\nwant %v", f.KV, want)
			}
			if len(f.Tensors) != len(sampleTensors) {
				t.Fatalf("%d tensors, want %d", len(f.Tensors), len(sampleTensors))
			}
			for i, st := range sampleTensors {
				got := f.Tensors[i]
				size, _ := tensorSize(st.shape, st.typ)
				shape := st.shape
				if shape == nil {
					shape = []int64{}
				}
				if got.Name != st.name || got.Type != st.typ || !reflect.DeepEqual(got.Shape, shape) || got.Size != size {
					t.Errorf("tensor %d: %+v, want %+v", i, got, st)
				}
				if got.Offset != layout[i].Offset || got.Offset%64 != 0 {
					t.Errorf("tensor %d at %d, Layout said %d", i, got.Offset, layout[i].Offset)
				}
				data, err := f.TensorData(st.name)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(data, tensorBytes(i, size)) {
					t.Errorf("tensor %q: data differs", st.name)
				}
			}
		})
	}
}

// TestTruncatedEverywhere cuts a file at every length short of its end: each
// must fail with ErrTruncated, by both decoding paths.
func TestTruncatedEverywhere(t *testing.T) {
	puregopass.Skip(t)
	files := map[string][]byte{"sample": sampleFile(t)}
	if _, err := os.Stat(fixturePath); err == nil {
		// Every length through the header and a little data, then a stride.
		files["mini fixture"] = miniFixture(t)
	}
	for name, b := range files {
		f, err := DecodeBytes(b)
		if err != nil {
			t.Fatal(err)
		}
		for n := 0; n < len(b); n++ {
			if int64(n) > f.DataOffset+256 && n%997 != 0 {
				continue
			}
			for _, dec := range decoders {
				if _, err := dec.decode(b[:n]); !errors.Is(err, ErrTruncated) {
					t.Fatalf("%s: %s of the first %d of %d bytes: %v, want ErrTruncated", name, dec.name, n, len(b), err)
				}
			}
		}
	}
}

func TestAddTensorFunc(t *testing.T) {
	data := tensorBytes(7, 4*6)
	tests := []struct {
		name  string
		write func(io.Writer) error
		err   string
	}{
		{"exact", func(w io.Writer) error { _, err := w.Write(data); return err }, ""},
		{"in pieces", func(w io.Writer) error {
			for i := range data {
				if _, err := w.Write(data[i : i+1]); err != nil {
					return err
				}
			}
			return nil
		}, ""},
		{"short", func(w io.Writer) error { _, err := w.Write(data[:5]); return err }, "wrote 5 bytes, want 24"},
		{"long", func(w io.Writer) error { _, err := w.Write(append(data, 0)); return err }, "more bytes than"},
		{"failing", func(io.Writer) error { return errors.New("quantizer broke") }, "quantizer broke"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBuilder()
			if err := b.AddTensorFunc("t", tensor.F32, []int64{6}, tc.write); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			_, err := b.WriteTo(&buf)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("WriteTo: %v, want an error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			f, err := DecodeBytes(buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := f.TensorData("t"); !bytes.Equal(got, data) {
				t.Errorf("data %x, want %x", got, data)
			}
		})
	}
}

func TestBuilderRejects(t *testing.T) {
	tests := []struct {
		name string
		do   func(b *Builder) error
		err  string
	}{
		{"empty key", func(b *Builder) error { return b.Set("", uint32(1)) }, "key of 0 bytes"},
		{"long key", func(b *Builder) error { return b.Set(strings.Repeat("k", MaxKeyLen+1), uint32(1)) }, "key of 65536 bytes"},
		{"int", func(b *Builder) error { return b.Set("k", 1) }, "no fixed width"},
		{"unsupported type", func(b *Builder) error { return b.Set("k", []int{1}) }, "no GGUF value type"},
		{"zero Value", func(b *Builder) error { return b.Set("k", Value{}) }, "invalid zero Value"},
		{"array of scalars as []Value", func(b *Builder) error { return b.Set("k", []Value{mustValue(uint8(1))}) }, "not an array"},
		{"alignment type", func(b *Builder) error { return b.Set("general.alignment", uint64(32)) }, "want uint32"},
		{"alignment not power of two", func(b *Builder) error { return b.Set("general.alignment", uint32(48)) }, "not a power of two"},
		{"alignment too large", func(b *Builder) error { return b.Set("general.alignment", uint32(MaxAlignment*2)) }, "not a power of two"},
		{"too deep", func(b *Builder) error {
			v := mustValue([]uint8{1})
			for range MaxArrayDepth {
				v = mustValue([]Value{v})
			}
			return b.Set("k", v)
		}, "nested deeper"},
		{"empty tensor name", func(b *Builder) error { return b.AddTensor("", tensor.F32, []int64{1}, make([]byte, 4)) }, "want 1 to 64 bytes"},
		{"long tensor name", func(b *Builder) error {
			return b.AddTensor(strings.Repeat("n", MaxTensorNameLen+1), tensor.F32, []int64{1}, make([]byte, 4))
		}, "want 1 to 64 bytes"},
		{"duplicate tensor", func(b *Builder) error {
			b.AddTensor("t", tensor.F32, []int64{1}, make([]byte, 4))
			return b.AddTensor("t", tensor.F32, []int64{1}, make([]byte, 4))
		}, "added twice"},
		{"five dims", func(b *Builder) error { return b.AddTensor("t", tensor.F32, []int64{1, 1, 1, 1, 1}, make([]byte, 4)) }, "5 dimensions"},
		{"negative dim", func(b *Builder) error { return b.AddTensor("t", tensor.F32, []int64{-1}, nil) }, "negative"},
		{"unknown type", func(b *Builder) error { return b.AddTensor("t", tensor.DType(33), []int64{1}, nil) }, "unknown tensor type id 33"},
		{"partial block", func(b *Builder) error { return b.AddTensor("t", tensor.Q4_0, []int64{16}, make([]byte, 9)) }, "not a whole number"},
		{"wrong size", func(b *Builder) error { return b.AddTensor("t", tensor.Q8_0, []int64{32, 2}, make([]byte, 34)) }, "34 bytes of data, want 68"},
		{"overflow", func(b *Builder) error {
			return b.AddTensor("t", tensor.F32, []int64{1 << 40, 1 << 40}, nil)
		}, "overflows"},
		{"nil func", func(b *Builder) error { return b.AddTensorFunc("t", tensor.F32, []int64{1}, nil) }, "nil write function"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do(NewBuilder())
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("got %v, want an error containing %q", err, tc.err)
			}
		})
	}
}

func TestBuilderSetDelete(t *testing.T) {
	b := NewBuilder()
	for _, k := range []string{"a", "b", "c"} {
		if err := b.Set(k, k); err != nil {
			t.Fatal(err)
		}
	}
	b.Set("b", uint32(2)) // keeps its place
	b.Delete("a")
	b.Delete("missing")
	var buf bytes.Buffer
	if _, err := b.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	f, err := DecodeBytes(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	want := []KV{{"b", mustValue(uint32(2))}, {"c", mustValue("c")}}
	if !sameKVs(f.KV, want) {
		t.Fatalf("metadata %v, want %v", f.KV, want)
	}
	// An empty file: no metadata, no tensors, just the header padded to
	// the alignment.
	buf.Reset()
	if _, err := NewBuilder().WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 32 {
		t.Fatalf("empty file is %d bytes, want 32", buf.Len())
	}
	if _, err := DecodeBytes(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
}

// errWriter fails after n bytes.
type errWriter struct{ n int }

func (w *errWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		k := w.n
		w.n = 0
		return k, errors.New("disk full")
	}
	w.n -= len(p)
	return len(p), nil
}

func TestWriteToError(t *testing.T) {
	b := sampleBuilder(t)
	size := len(sampleFile(t))
	for _, n := range []int{0, 10, size / 2, size - 1} {
		if _, err := b.WriteTo(&errWriter{n: n}); err == nil || !strings.Contains(err.Error(), "disk full") {
			t.Errorf("writer failing after %d bytes: %v", n, err)
		}
	}
	dir := t.TempDir()
	if err := b.WriteFile(filepath.Join(dir, "no", "such", "dir.gguf")); err == nil {
		t.Error("WriteFile into a missing directory succeeded")
	}
}

// TestConcurrentReads reads every tensor from several goroutines at once,
// by both Open paths (run with -race).
func TestConcurrentReads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sample.gguf")
	if err := sampleBuilder(t).WriteFile(path); err != nil {
		t.Fatal(err)
	}
	for _, mapped := range []bool{true, false} {
		f, err := open(path, mapped)
		if err != nil {
			t.Fatal(err)
		}
		errs := make(chan error, 4)
		for range 4 {
			go func() {
				for i, st := range sampleTensors {
					data, err := f.TensorData(st.name)
					if err == nil && !bytes.Equal(data, tensorBytes(i, f.Tensors[i].Size)) {
						err = errors.New(st.name + ": data differs")
					}
					if err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		for range 4 {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := f.TensorData(sampleTensors[0].name); err == nil {
			t.Error("TensorData after Close succeeded")
		}
	}
}

// TestAppendBinary: every value's AppendBinary (WriteBinary's bytes) is
// exactly the bytes that follow its key in a written file, and decodes
// back to the value.
func TestAppendBinary(t *testing.T) {
	b := NewBuilder()
	for _, kv := range sampleKVs() {
		if err := b.Set(kv.Key, kv.Value); err != nil {
			t.Fatal(err)
		}
	}
	var file bytes.Buffer
	if _, err := b.WriteTo(&file); err != nil {
		t.Fatal(err)
	}
	for _, kv := range sampleKVs() {
		enc, err := kv.Value.AppendBinary([]byte("prefix"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(enc, []byte("prefix")) {
			t.Fatalf("%s: prefix lost", kv.Key)
		}
		enc = enc[len("prefix"):]
		key := binary.LittleEndian.AppendUint64(nil, uint64(len(kv.Key)))
		key = append(key, kv.Key...)
		if !bytes.Contains(file.Bytes(), append(key, enc...)) {
			t.Errorf("%s: encoding not found after its key in the file", kv.Key)
		}
	}
}
