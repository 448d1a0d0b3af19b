package gguf

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math"
	"os"
	"reflect"
	"testing"

	"github.com/turbomem/turbomem/internal/puregopass"
	"github.com/turbomem/turbomem/tensor"
)

// fixturePath is llama-2-tiny-random.gguf, a file written by llama.cpp's
// converter (see ../testdata/README.md), relative to this package's
// directory.
const fixturePath = "../testdata/llama-2-tiny-random.gguf"

// readFixture returns the fixture's bytes.
func readFixture(tb testing.TB) []byte {
	tb.Helper()
	b, err := os.ReadFile(fixturePath)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// The facts below were read from the fixture with an independent reader, a
// Python struct-based dump written for the purpose (not this package).
var fixtureTensors = []struct {
	name   string
	shape  []int64
	typ    tensor.DType
	offset int64 // relative to the data section, as stored
}{
	{"token_embd.weight", []int64{8, 32000}, tensor.F16, 0},
	{"blk.0.attn_q.weight", []int64{8, 8}, tensor.F16, 512000},
	{"blk.0.attn_k.weight", []int64{8, 8}, tensor.F16, 512128},
	{"blk.0.attn_v.weight", []int64{8, 8}, tensor.F16, 512256},
	{"blk.0.attn_output.weight", []int64{8, 8}, tensor.F16, 512384},
	{"blk.0.ffn_gate.weight", []int64{8, 32}, tensor.F16, 512512},
	{"blk.0.ffn_up.weight", []int64{8, 32}, tensor.F16, 513024},
	{"blk.0.ffn_down.weight", []int64{32, 8}, tensor.F16, 513536},
	{"blk.0.attn_norm.weight", []int64{8}, tensor.F32, 514048},
	{"blk.0.ffn_norm.weight", []int64{8}, tensor.F32, 514080},
	{"output_norm.weight", []int64{8}, tensor.F32, 514112},
	{"output.weight", []int64{8, 32000}, tensor.F16, 514144},
}

const (
	fixtureSize       = 1750560
	fixtureDataOffset = 724416
)

// openers are the ways to get a File; each test runs over all of them.
var openers = []struct {
	name string
	open func(tb testing.TB, path string, b []byte) *File
}{
	{"Open/mmap", func(tb testing.TB, path string, _ []byte) *File {
		f, err := Open(path)
		if err != nil {
			tb.Fatal(err)
		}
		if !f.Mapped() {
			tb.Log("Open did not map the file on this platform")
		}
		return f
	}},
	{"Open/read", func(tb testing.TB, path string, _ []byte) *File {
		f, err := open(path, false)
		if err != nil {
			tb.Fatal(err)
		}
		if f.Mapped() {
			tb.Fatal("open(path, false) mapped the file")
		}
		return f
	}},
	{"Decode", func(tb testing.TB, _ string, b []byte) *File {
		f, err := Decode(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			tb.Fatal(err)
		}
		return f
	}},
	{"DecodeBytes", func(tb testing.TB, _ string, b []byte) *File {
		f, err := DecodeBytes(b)
		if err != nil {
			tb.Fatal(err)
		}
		return f
	}},
}

func TestFixture(t *testing.T) {
	b := readFixture(t)
	for _, o := range openers {
		t.Run(o.name, func(t *testing.T) {
			f := o.open(t, fixturePath, b)
			defer func() {
				if err := f.Close(); err != nil {
					t.Error(err)
				}
			}()
			checkFixture(t, f)
		})
	}
}

func checkFixture(t *testing.T, f *File) {
	if f.Version != 3 || f.Size != fixtureSize || f.Alignment != 32 || f.DataOffset != fixtureDataOffset {
		t.Errorf("version %d size %d alignment %d data offset %d, want 3 %d 32 %d",
			f.Version, f.Size, f.Alignment, f.DataOffset, fixtureSize, fixtureDataOffset)
	}
	if len(f.KV) != 18 {
		t.Errorf("%d keys, want 18", len(f.KV))
	}
	strs := map[string]string{
		"general.architecture": "llama",
		"general.name":         "LLaMA v2",
		"tokenizer.ggml.model": "llama",
	}
	for k, want := range strs {
		if got, err := f.String(k); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", k, got, err, want)
		}
	}
	if arch, err := f.Architecture(); arch != "llama" || err != nil {
		t.Errorf("Architecture() = %q, %v", arch, err)
	}
	uints := map[string]uint64{
		"llama.context_length":            4096,
		"llama.embedding_length":          8,
		"llama.block_count":               1,
		"llama.feed_forward_length":       32,
		"llama.rope.dimension_count":      4,
		"llama.attention.head_count":      2,
		"llama.attention.head_count_kv":   2,
		"general.file_type":               1,
		"tokenizer.ggml.bos_token_id":     1,
		"tokenizer.ggml.eos_token_id":     2,
		"tokenizer.ggml.unknown_token_id": 0,
	}
	for k, want := range uints {
		if got, err := f.Uint(k); err != nil || got != want {
			t.Errorf("%s = %d, %v; want %d", k, got, err, want)
		}
	}
	// Stored as float32 1e-5, so the float64 is the float32 nearest 1e-5.
	if eps, err := f.Float("llama.attention.layer_norm_rms_epsilon"); err != nil || eps != float64(float32(1e-5)) {
		t.Errorf("rms epsilon = %v, %v", eps, err)
	}
	tokens, err := f.Strings("tokenizer.ggml.tokens")
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens) != 32000 || tokens[0] != "<unk>" || tokens[1] != "<s>" || tokens[2] != "</s>" ||
		tokens[3] != "<0x00>" || tokens[31998] != "弘" || tokens[31999] != "给" {
		t.Errorf("tokens: %d, first %q, last %q", len(tokens), tokens[:4], tokens[len(tokens)-2:])
	}
	scores, err := f.Float32s("tokenizer.ggml.scores")
	if err != nil {
		t.Fatal(err)
	}
	if len(scores) != 32000 || scores[0] != 0 || scores[31998] != -31739 || scores[31999] != -31740 {
		t.Errorf("scores: %d, last %v", len(scores), scores[len(scores)-2:])
	}
	types, err := f.Int32s("tokenizer.ggml.token_type")
	if err != nil {
		t.Fatal(err)
	}
	if len(types) != 32000 || !reflect.DeepEqual(types[:5], []int32{2, 3, 3, 6, 6}) || types[31999] != 1 {
		t.Errorf("token types: %d, first %v", len(types), types[:5])
	}
	if v, _ := f.Lookup("tokenizer.ggml.token_type"); v.Type() != TypeArray || v.ElemType() != TypeInt32 || v.Len() != 32000 {
		t.Errorf("token_type value: %s of %s, %d elements", v.Type(), v.ElemType(), v.Len())
	}

	if len(f.Tensors) != len(fixtureTensors) {
		t.Fatalf("%d tensors, want %d", len(f.Tensors), len(fixtureTensors))
	}
	for i, want := range fixtureTensors {
		got := f.Tensors[i]
		size, _ := want.typ.RowBytes(got.Elements())
		if got.Name != want.name || !reflect.DeepEqual(got.Shape, want.shape) || got.Type != want.typ ||
			got.Offset != fixtureDataOffset+want.offset || got.Size != size {
			t.Errorf("tensor %d: %+v, want %+v (size %d)", i, got, want, size)
		}
		if ti, ok := f.Tensor(want.name); !ok || ti.Offset != got.Offset {
			t.Errorf("Tensor(%q) = %+v, %v", want.name, ti, ok)
		}
	}
	// SHA-256 of tensor bytes, from the independent Python reader.
	sums := map[string]string{
		"token_embd.weight":      "20d11b1af9867eb745affaf279a1f2371687215d93e8eca28f8ec2ff09186774",
		"blk.0.attn_norm.weight": "4f05df05f8da9356bd66425351f166a5f7305b7c805e6900d9ec0f50790c9886",
		"blk.0.ffn_down.weight":  "5ba1da4604ec383507ef895be7126e905dba896d7e5935294051facee66d9568",
		"output.weight":          "421ac68eb49e570b85712dfef4e09b87ef5ce64da5c49865e2f00532188aef9f",
	}
	for name, want := range sums {
		data, err := f.TensorData(name)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != want {
			t.Errorf("sha256(%s) = %s, want %s", name, got, want)
		}
	}
	norm, err := f.TensorData("output_norm.weight")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(norm); i += 4 {
		if x := math.Float32frombits(uint32(norm[i]) | uint32(norm[i+1])<<8 | uint32(norm[i+2])<<16 | uint32(norm[i+3])<<24); x != 1 {
			t.Errorf("output_norm.weight[%d] = %v, want 1", i/4, x)
		}
	}
	if _, err := f.TensorData("no.such.tensor"); !errors.Is(err, ErrNotFound) {
		t.Errorf("TensorData of a missing tensor: %v, want ErrNotFound", err)
	}
}

// TestFixtureTruncated cuts the fixture short. Every cut before the end of
// its last tensor must fail with ErrTruncated. Decoding costs time in
// proportion to the length (the vocabulary takes most of it), so the cuts
// are every length over the header and first keys and around the tensor
// directory, and a stride through the vocabulary and the data;
// TestTruncatedEverywhere covers every length of smaller files with the same
// kinds of fields.
func TestFixtureTruncated(t *testing.T) {
	puregopass.Skip(t)
	b := readFixture(t)
	var cuts []int
	for n := range 512 {
		cuts = append(cuts, n)
	}
	for n := 512; n < fixtureDataOffset-600; n += 8191 {
		cuts = append(cuts, n)
	}
	for n := fixtureDataOffset - 600; n < fixtureDataOffset+40; n++ {
		cuts = append(cuts, n)
	}
	for n := fixtureDataOffset + 40; n < fixtureSize; n += 4099 {
		cuts = append(cuts, n)
	}
	cuts = append(cuts, fixtureSize-1)
	for i, n := range cuts {
		for j, dec := range decoders {
			if j > 0 && i%8 != 0 {
				continue // the ReaderAt path on a sample of the cuts
			}
			_, err := dec.decode(b[:n])
			if !errors.Is(err, ErrTruncated) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s of the first %d bytes: %v, want ErrTruncated", dec.name, n, err)
			}
		}
	}
}

// decoders decode a byte slice by both paths of the reader.
var decoders = []struct {
	name   string
	decode func([]byte) (*File, error)
}{
	{"DecodeBytes", DecodeBytes},
	{"Decode", func(b []byte) (*File, error) { return Decode(bytes.NewReader(b), int64(len(b))) }},
}

// miniFixture is the fixture with its vocabulary (the metadata arrays and
// the embedding and output matrices) cut to the first 100 tokens, rewritten
// by Builder: a file of the same shape that decodes hundreds of times
// faster.
func miniFixture(tb testing.TB) []byte {
	const vocab = 100
	f, err := DecodeBytes(readFixture(tb))
	if err != nil {
		tb.Fatal(err)
	}
	bld := NewBuilder()
	for _, kv := range f.KV {
		v := kv.Value
		switch x := v.x.(type) {
		case []string:
			v.x = x[:vocab]
		case []float32:
			v.x = x[:vocab]
		case []int32:
			v.x = x[:vocab]
		}
		if err := bld.Set(kv.Key, v); err != nil {
			tb.Fatal(err)
		}
	}
	for _, ti := range f.Tensors {
		data, err := f.ReadTensor(ti)
		if err != nil {
			tb.Fatal(err)
		}
		if len(ti.Shape) == 2 && ti.Shape[1] == 32000 {
			ti.Shape = []int64{ti.Shape[0], vocab}
			data = data[:ti.Shape[0]*vocab*2]
		}
		if err := bld.AddTensor(ti.Name, ti.Type, ti.Shape, data); err != nil {
			tb.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := bld.WriteTo(&buf); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// TestCorrupted overwrites each byte before the data section of the
// (mini) fixture and of a file using every value type with values that break
// fields (zero, all ones, a flipped bit) and checks that decoding returns —
// with an error or a valid File — rather than panicking, and that both
// decoding paths agree.
func TestCorrupted(t *testing.T) {
	puregopass.Skip(t)
	files := map[string][]byte{"sample": sampleFile(t)}
	if _, err := os.Stat(fixturePath); err == nil {
		files["mini fixture"] = miniFixture(t)
	}
	for name, b := range files {
		f, err := DecodeBytes(b)
		if err != nil {
			t.Fatal(err)
		}
		c := bytes.Clone(b)
		for i := range f.DataOffset {
			for _, x := range []byte{0, 0xff, b[i] ^ 0x80, b[i] ^ 1} {
				c[i] = x
				f1, err1 := DecodeBytes(c)
				f2, err2 := Decode(bytes.NewReader(c), int64(len(c)))
				if (err1 == nil) != (err2 == nil) || (err1 != nil && err1.Error() != err2.Error()) {
					t.Fatalf("%s: byte %d = %#x: DecodeBytes: %v; Decode: %v", name, i, x, err1, err2)
				}
				if err1 == nil {
					checkSame(t, f1, f2)
				} else if !errors.Is(err1, ErrMalformed) {
					t.Fatalf("%s: byte %d = %#x: %v is not ErrMalformed", name, i, x, err1)
				}
			}
			c[i] = b[i]
		}
	}
}

// checkSame fails unless two Files hold the same metadata, tensors and data.
func checkSame(tb testing.TB, a, b *File) {
	tb.Helper()
	if a.Version != b.Version || a.Alignment != b.Alignment || a.DataOffset != b.DataOffset || a.Size != b.Size {
		tb.Fatalf("headers differ: %d/%d/%d/%d vs %d/%d/%d/%d", a.Version, a.Alignment, a.DataOffset, a.Size, b.Version, b.Alignment, b.DataOffset, b.Size)
	}
	checkSameContent(tb, a, b)
}

// checkSameContent compares metadata, tensor descriptions (not offsets) and
// tensor bytes.
func checkSameContent(tb testing.TB, a, b *File) {
	tb.Helper()
	if !sameKVs(a.KV, b.KV) {
		tb.Fatalf("metadata differs:\n%v\n%v", a.KV, b.KV)
	}
	if len(a.Tensors) != len(b.Tensors) {
		tb.Fatalf("%d tensors vs %d", len(a.Tensors), len(b.Tensors))
	}
	for i, ta := range a.Tensors {
		tb2 := b.Tensors[i]
		if ta.Name != tb2.Name || !reflect.DeepEqual(ta.Shape, tb2.Shape) || ta.Type != tb2.Type || ta.Size != tb2.Size {
			tb.Fatalf("tensor %d: %+v vs %+v", i, ta, tb2)
		}
		da, err := a.ReadTensor(ta)
		if err != nil {
			tb.Fatal(err)
		}
		db, err := b.ReadTensor(tb2)
		if err != nil {
			tb.Fatal(err)
		}
		if !bytes.Equal(da, db) {
			tb.Fatalf("tensor %d %q: data differs", i, ta.Name)
		}
	}
}

// sameKVs compares metadata, floats by their bits so that NaNs compare
// equal to themselves.
func sameKVs(a, b []KV) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || !sameValue(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

func sameValue(a, b Value) bool {
	if a.typ != b.typ || a.elem != b.elem {
		return false
	}
	switch x := a.x.(type) {
	case float32:
		y, ok := b.x.(float32)
		return ok && math.Float32bits(x) == math.Float32bits(y)
	case float64:
		y, ok := b.x.(float64)
		return ok && math.Float64bits(x) == math.Float64bits(y)
	case []float32:
		y, ok := b.x.([]float32)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if math.Float32bits(x[i]) != math.Float32bits(y[i]) {
				return false
			}
		}
		return true
	case []float64:
		y, ok := b.x.([]float64)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if math.Float64bits(x[i]) != math.Float64bits(y[i]) {
				return false
			}
		}
		return true
	case []Value:
		y, ok := b.x.([]Value)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !sameValue(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a.x, b.x)
}

// TestFixtureRewrite copies the fixture through Builder and checks that the
// copy is byte-for-byte the original: llama.cpp's writer and ours lay out a
// file the same way.
func TestFixtureRewrite(t *testing.T) {
	b := readFixture(t)
	f, err := DecodeBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	out := rewrite(t, f)
	if !bytes.Equal(out, b) {
		n := 0
		for n < min(len(out), len(b)) && out[n] == b[n] {
			n++
		}
		t.Fatalf("rewritten fixture differs from the original at byte %d (lengths %d, %d)", n, len(out), len(b))
	}
}

// rewrite copies f through a Builder.
func rewrite(tb testing.TB, f *File) []byte {
	tb.Helper()
	bld := NewBuilder()
	for _, kv := range f.KV {
		if err := bld.Set(kv.Key, kv.Value); err != nil {
			tb.Fatal(err)
		}
	}
	for _, ti := range f.Tensors {
		data, err := f.ReadTensor(ti)
		if err != nil {
			tb.Fatal(err)
		}
		if err := bld.AddTensor(ti.Name, ti.Type, ti.Shape, data); err != nil {
			tb.Fatal(err)
		}
	}
	var buf bytes.Buffer
	n, err := bld.WriteTo(&buf)
	if err != nil {
		tb.Fatal(err)
	}
	if n != int64(buf.Len()) {
		tb.Fatalf("WriteTo returned %d, wrote %d", n, buf.Len())
	}
	return buf.Bytes()
}

// TestFixtureVersion2 relabels the fixture as version 2, whose layout is the
// same, and as versions this package must refuse.
func TestFixtureVersion2(t *testing.T) {
	b := bytes.Clone(readFixture(t))
	want, err := DecodeBytes(readFixture(t))
	if err != nil {
		t.Fatal(err)
	}
	b[4] = 2
	got, err := DecodeBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 2 {
		t.Errorf("version %d", got.Version)
	}
	checkSameContent(t, got, want)
	for _, v := range []byte{1, 4} {
		b[4] = v
		if _, err := DecodeBytes(b); !errors.Is(err, ErrUnsupportedVersion) {
			t.Errorf("version %d: %v", v, err)
		}
	}
}
