package wquant

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tensor"
)

func tinyIDs(n int) []int32 {
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(3 + 17*i%500)
	}
	return ids
}

// TestCollectIMatrix: every weight matrix used in a product (the layers'
// and the output projection, not the untied embedding table) gets an
// entry with one count per token; matrices that share an input share
// statistics; the statistics add up over windows. (That the observed
// inputs are the products' inputs is model's TestObserver.)
func TestCollectIMatrix(t *testing.T) {
	path := tinyModel(t, true)
	m, err := model.Open(path, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ids := tinyIDs(200)
	im, err := CollectIMatrix(context.Background(), m, ids, 0, CollectOptions{Ctx: 64, Dataset: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := im.Entries["output.weight"]; len(im.Entries) != 7*m.Config.Layers+1 || !ok || im.Chunks != 3 || im.ChunkSize != 64 {
		t.Fatalf("%d entries, %d chunks of %d", len(im.Entries), im.Chunks, im.ChunkSize)
	}
	for name, e := range im.Entries {
		if e.Count != 3*64 {
			t.Errorf("%s: count %g, want 192", name, e.Count)
		}
		for j, s := range e.Sums {
			if !(s > 0) {
				t.Errorf("%s: column %d sum %g", name, j, s)
				break
			}
		}
	}
	q, k := im.Importance("blk.1.attn_q.weight"), im.Importance("blk.1.attn_k.weight")
	if !slices.Equal(q, k) || len(q) != m.Config.Hidden {
		t.Error("attn_q and attn_k see different inputs")
	}
	// Additivity: the sum of the windows collected one by one.
	var sums []float64
	for c := range 3 {
		one, err := CollectIMatrix(context.Background(), m, ids[c*64:(c+1)*64], 0, CollectOptions{Ctx: 64})
		if err != nil {
			t.Fatal(err)
		}
		e := one.Entries["blk.0.ffn_down.weight"]
		if sums == nil {
			sums = make([]float64, len(e.Sums))
		}
		for j, v := range e.Sums {
			sums[j] += v
		}
	}
	for j, v := range im.Entries["blk.0.ffn_down.weight"].Sums {
		// Same terms, summed in another grouping: float64 rounding only.
		if math.Abs(v-sums[j]) > 1e-9*math.Abs(v) {
			t.Fatalf("ffn_down column %d: %g in one run, %g over single windows", j, v, sums[j])
		}
	}
	if _, err := CollectIMatrix(context.Background(), m, ids[:10], 0, CollectOptions{Ctx: 64}); err == nil {
		t.Error("too few tokens: no error")
	}
	if _, err := CollectIMatrix(context.Background(), m, ids, 0, CollectOptions{Ctx: 1 << 20}); err == nil {
		t.Error("window beyond the context: no error")
	}
}

// testIMatrix returns a small importance matrix.
func testIMatrix() *IMatrix {
	return &IMatrix{Datasets: []string{"calib.txt"}, Chunks: 4, ChunkSize: 128, Entries: map[string]*IEntry{
		"blk.0.attn_q.weight":   {Sums: []float64{1, 2, 3, 4.5}, Count: 512},
		"blk.0.ffn_down.weight": {Sums: []float64{0, 0.25}, Count: 512},
	}}
}

// TestIMatrixFile: our file reads back (sums as float32) and is Checked;
// llama-quantize's loader would read it (layout checked here); a flipped
// byte is refused naming the tensor; llama.cpp's GGUF (no manifest) and
// legacy formats read with Checked false.
func TestIMatrixFile(t *testing.T) {
	im := testIMatrix()
	path := filepath.Join(t.TempDir(), "imatrix.dat")
	if err := im.WriteFile(path, "turbomem test", testSource); err != nil {
		t.Fatal(err)
	}
	got, err := ReadIMatrixFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Checked || got.Chunks != 4 || got.ChunkSize != 128 || !slices.Equal(got.Datasets, im.Datasets) {
		t.Errorf("read back: checked %v, %d chunks of %d, datasets %v", got.Checked, got.Chunks, got.ChunkSize, got.Datasets)
	}
	for _, name := range im.Names() {
		if !slices.Equal(got.Importance(name), im.Importance(name)) {
			t.Errorf("%s: importance %v, want %v", name, got.Importance(name), im.Importance(name))
		}
	}
	f := openGGUF(t, path)
	if typ, _ := f.String("general.type"); typ != "imatrix" {
		t.Errorf("general.type %q", typ)
	}
	if ti, ok := f.Tensor("blk.0.attn_q.weight.in_sum2"); !ok || ti.Type != tensor.F32 || !slices.Equal(ti.Shape, []int64{4}) {
		t.Errorf("in_sum2 tensor %+v", ti)
	}
	b := readBytes(t, path)
	ti, _ := f.Tensor("blk.0.ffn_down.weight.in_sum2")
	b[ti.Offset+1] ^= 1
	if _, err := ParseIMatrix(b); !errors.Is(err, ErrAltered) || !strings.Contains(err.Error(), "blk.0.ffn_down.weight.in_sum2") {
		t.Errorf("altered imatrix: %v", err)
	}
	// llama.cpp's GGUF imatrix: our layout without the manifest.
	plain := rewrite(t, path, func(kv gguf.KV) *gguf.KV {
		if strings.HasPrefix(kv.Key, ManifestPrefix) {
			return nil
		}
		return &kv
	})
	got, err = ReadIMatrixFile(plain)
	if err != nil || got.Checked || !slices.Equal(got.Importance("blk.0.attn_q.weight"), im.Importance("blk.0.attn_q.weight")) {
		t.Errorf("llama.cpp GGUF imatrix: %v, checked %v", err, got != nil && got.Checked)
	}
	// Legacy imatrix.dat: each value is mean × ncall.
	var dat bytes.Buffer
	put := func(v any) { binary.Write(&dat, binary.LittleEndian, v) }
	put(int32(1))
	put(int32(len("blk.0.attn_q.weight")))
	dat.WriteString("blk.0.attn_q.weight")
	put(int32(8)) // ncall
	put(int32(3))
	put([]float32{8, 16, 4})
	put(int32(8))
	put(int32(len("wiki.txt")))
	dat.WriteString("wiki.txt")
	got, err = ParseIMatrix(dat.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if imp := got.Importance("blk.0.attn_q.weight"); !slices.Equal(imp, []float32{1, 2, 0.5}) || got.Checked || got.Chunks != 8 || !slices.Equal(got.Datasets, []string{"wiki.txt"}) {
		t.Errorf("legacy: importance %v, chunks %d, datasets %v", imp, got.Chunks, got.Datasets)
	}
	for _, bad := range [][]byte{nil, {1, 0, 0, 0}, {0, 0, 0, 0}, {0xff, 0xff, 0xff, 0x7f}, dat.Bytes()[:30], []byte("GGUF\x03\x00\x00\x00")} {
		if _, err := ParseIMatrix(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// FuzzParseIMatrix: any bytes give an importance matrix or an error,
// never a panic, and what parses has finite non-negative importance.
func FuzzParseIMatrix(f *testing.F) {
	path := filepath.Join(f.TempDir(), "imatrix.dat")
	if err := testIMatrix().WriteFile(path, "t", testSource); err != nil {
		f.Fatal(err)
	}
	f.Add(readBytes(f, path))
	var dat bytes.Buffer
	binary.Write(&dat, binary.LittleEndian, []int32{1, 3})
	dat.WriteString("abc")
	binary.Write(&dat, binary.LittleEndian, []int32{2, 2})
	binary.Write(&dat, binary.LittleEndian, []float32{1, 2})
	f.Add(dat.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		im, err := ParseIMatrix(b)
		if err != nil {
			return
		}
		for _, name := range im.Names() {
			for _, v := range im.Importance(name) {
				if !(v >= 0) || math.IsInf(float64(v), 0) {
					t.Fatalf("%s: importance %g", name, v)
				}
			}
		}
	})
}
