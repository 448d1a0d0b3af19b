// Package tinymodel writes small llama GGUF files with random F32
// weights, for tests that need a whole model file but not a trained one:
// 2 layers, hidden 256, 2 query heads and 1 KV head of 128 (or another
// head dimension, Options.HeadDim), SwiGLU 512,
// vocabulary 512 (or a tokenizer's), context 256. The weights are
// Gaussian (scale 1/√fan-in, embeddings 1), the norms 1 ± 0.1, from a
// fixed seed.
package tinymodel

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/tensor"
)

// Shape of the model.
const (
	Layers  = 2
	Hidden  = 256
	Heads   = 2
	KVHeads = 1
	HeadDim = 128
	FFN     = 512
	Vocab   = 512
)

// Options configures Write.
type Options struct {
	// Untied adds an output.weight (else the embeddings are tied).
	Untied bool
	// VocabFrom, if set, gives the tokenizer metadata (tokenizer.*) to
	// copy, and the vocabulary size.
	VocabFrom *gguf.File
	// HeadDim, if set, replaces the head dimension: a divisor of Hidden
	// below it, with Hidden/HeadDim query heads and half as many KV heads.
	HeadDim int
}

// Write writes the model to path.
func Write(path string, o Options) error {
	b := gguf.NewBuilder()
	vocab := Vocab
	heads, kvHeads, headDim := Heads, KVHeads, HeadDim
	if o.HeadDim != 0 {
		if o.HeadDim < 1 || o.HeadDim >= Hidden || Hidden%(2*o.HeadDim) != 0 {
			return fmt.Errorf("tinymodel: head dimension %d: want a divisor of %d, at most half of it", o.HeadDim, Hidden)
		}
		headDim = o.HeadDim
		heads, kvHeads = Hidden/headDim, Hidden/headDim/2
	}
	if o.VocabFrom != nil {
		for _, kv := range o.VocabFrom.KV {
			if strings.HasPrefix(kv.Key, "tokenizer.") {
				if err := b.Set(kv.Key, kv.Value); err != nil {
					return err
				}
				if kv.Key == "tokenizer.ggml.tokens" {
					vocab = kv.Value.Len()
				}
			}
		}
	}
	for _, kv := range []struct {
		k string
		v any
	}{
		{"general.architecture", "llama"},
		{"general.name", "tiny random"},
		{"llama.block_count", uint32(Layers)},
		{"llama.embedding_length", uint32(Hidden)},
		{"llama.feed_forward_length", uint32(FFN)},
		{"llama.attention.head_count", uint32(heads)},
		{"llama.attention.head_count_kv", uint32(kvHeads)},
		{"llama.context_length", uint32(256)},
		{"llama.rope.freq_base", float32(10000)},
		{"llama.attention.layer_norm_rms_epsilon", float32(1e-5)},
		{"general.file_type", uint32(0)},
	} {
		if err := b.Set(kv.k, kv.v); err != nil {
			return err
		}
	}
	r := rand.New(rand.NewPCG(11, 12))
	var err error
	add := func(name string, shape []int64, scale float64) {
		if err != nil {
			return
		}
		n := int64(1)
		for _, d := range shape {
			n *= d
		}
		v := make([]float32, n)
		for i := range v {
			if len(shape) == 1 {
				v[i] = float32(1 + 0.1*r.NormFloat64())
			} else {
				v[i] = float32(scale * r.NormFloat64())
			}
		}
		var data []byte
		if data, err = tensor.Encode(tensor.F32, v); err == nil {
			err = b.AddTensor(name, tensor.F32, shape, data)
		}
	}
	s := 1 / math.Sqrt(Hidden)
	add("token_embd.weight", []int64{Hidden, int64(vocab)}, 1)
	add("output_norm.weight", []int64{Hidden}, 0)
	if o.Untied {
		add("output.weight", []int64{Hidden, int64(vocab)}, s)
	}
	for l := range Layers {
		p := fmt.Sprintf("blk.%d.", l)
		add(p+"attn_norm.weight", []int64{Hidden}, 0)
		add(p+"attn_q.weight", []int64{Hidden, int64(heads * headDim)}, s)
		add(p+"attn_k.weight", []int64{Hidden, int64(kvHeads * headDim)}, s)
		add(p+"attn_v.weight", []int64{Hidden, int64(kvHeads * headDim)}, s)
		add(p+"attn_output.weight", []int64{int64(heads * headDim), Hidden}, s)
		add(p+"ffn_norm.weight", []int64{Hidden}, 0)
		add(p+"ffn_gate.weight", []int64{Hidden, FFN}, s)
		add(p+"ffn_up.weight", []int64{Hidden, FFN}, s)
		add(p+"ffn_down.weight", []int64{FFN, Hidden}, 1/math.Sqrt(FFN))
	}
	if err != nil {
		return err
	}
	return b.WriteFile(path)
}
