package wquant

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/tensor"
)

// tinyModel writes a llama GGUF file with random F32 weights (2 layers,
// hidden 256, 2 query heads and 1 KV head of 128, SwiGLU 512, vocabulary
// 512; tied embeddings unless untied) and returns its path.
func tinyModel(t testing.TB, untied bool) string {
	t.Helper()
	const layers, hidden, heads, kvHeads, ffn, vocab = 2, 256, 2, 1, 512, 512
	b := gguf.NewBuilder()
	for _, kv := range []struct {
		k string
		v any
	}{
		{"general.architecture", "llama"},
		{"general.name", "tiny random"},
		{"llama.block_count", uint32(layers)},
		{"llama.embedding_length", uint32(hidden)},
		{"llama.feed_forward_length", uint32(ffn)},
		{"llama.attention.head_count", uint32(heads)},
		{"llama.attention.head_count_kv", uint32(kvHeads)},
		{"llama.context_length", uint32(256)},
		{"llama.rope.freq_base", float32(10000)},
		{"llama.attention.layer_norm_rms_epsilon", float32(1e-5)},
		{"general.file_type", uint32(0)},
	} {
		if err := b.Set(kv.k, kv.v); err != nil {
			t.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(11, 12))
	add := func(name string, shape []int64, scale float64) {
		n := int64(1)
		for _, d := range shape {
			n *= d
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(scale * r.NormFloat64())
			if len(shape) == 1 {
				v[i] = float32(1 + 0.1*r.NormFloat64())
			}
		}
		data, err := tensor.Encode(tensor.F32, v)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.AddTensor(name, tensor.F32, shape, data); err != nil {
			t.Fatal(err)
		}
	}
	s := 1 / math.Sqrt(hidden)
	add("token_embd.weight", []int64{hidden, vocab}, 1)
	add("output_norm.weight", []int64{hidden}, 0)
	if untied {
		add("output.weight", []int64{hidden, vocab}, s)
	}
	for l := range layers {
		p := fmt.Sprintf("blk.%d.", l)
		add(p+"attn_norm.weight", []int64{hidden}, 0)
		add(p+"attn_q.weight", []int64{hidden, heads * 128}, s)
		add(p+"attn_k.weight", []int64{hidden, kvHeads * 128}, s)
		add(p+"attn_v.weight", []int64{hidden, kvHeads * 128}, s)
		add(p+"attn_output.weight", []int64{heads * 128, hidden}, s)
		add(p+"ffn_norm.weight", []int64{hidden}, 0)
		add(p+"ffn_gate.weight", []int64{hidden, ffn}, s)
		add(p+"ffn_up.weight", []int64{hidden, ffn}, s)
		add(p+"ffn_down.weight", []int64{ffn, hidden}, 1/math.Sqrt(ffn))
	}
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := b.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// openGGUF opens path and closes it when the test ends.
func openGGUF(t testing.TB, path string) *gguf.File {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// rewrite writes a copy of the GGUF file at path with edit applied to its
// metadata (a nil result drops the key) and returns the copy's path.
func rewrite(t testing.TB, path string, edit func(kv gguf.KV) *gguf.KV) string {
	t.Helper()
	f := openGGUF(t, path)
	b := gguf.NewBuilder()
	for _, kv := range f.KV {
		if e := edit(kv); e != nil {
			if err := b.Set(e.Key, e.Value); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, ti := range f.Tensors {
		d, err := f.ReadTensor(ti)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.AddTensor(ti.Name, ti.Type, ti.Shape, d); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "rewritten.gguf")
	if err := b.WriteFile(out); err != nil {
		t.Fatal(err)
	}
	return out
}

// readBytes returns the bytes of path.
func readBytes(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeBytes writes b to a new file and returns its path.
func writeBytes(t testing.TB, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f.gguf")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
