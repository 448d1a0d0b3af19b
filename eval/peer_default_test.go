package eval

import (
	"context"
	"math"
	"os"
	"testing"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/model"
)

// TestPerplexityMatchesLlamaCppDefaultModel: the same comparison as
// TestPerplexityMatchesLlamaCpp, on a model whose attention is far from
// uniform (the embedded model: perplexity 7, against 32373 for the random
// fixture), so that errors in attention (RoPE, the attention scale) or in
// which positions are scored show. llama.cpp's running estimates after 1,
// 2 and 8 windows of 512 tokens of the embedded held-out text:
//
//	llama-perplexity -m defaultmodel/turbomem-default.gguf -f defaultmodel/heldout.txt -c 512 --chunks 8 -t 2
//	→ [1]15.0972,[2]10.3995,[3]7.8116,[4]8.4895,[5]8.8062,[6]7.3324,[7]7.1299,[8]7.2731
//	same with -fa off → [1]15.1494,[2]10.4148
//
// (llama.cpp 0.5.0-dev built from source for this CPU, f16 KV cache).
// Tolerance 1%: llama.cpp's own two attention paths differ by 0.35% on
// the first window (it also multiplies Q8_0 weights by activations rounded
// to Q8_0, we by float activations); a window scored one position off,
// RoPE turned the other way or an attention scale of 0 move these
// perplexities by far more (see the list of planted bugs in BENCHMARKS.md).
func TestPerplexityMatchesLlamaCppDefaultModel(t *testing.T) {
	if testing.Short() {
		t.Skip("8 windows of 512 tokens of the embedded model")
	}
	m, err := defaultmodel.Load(model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tok, err := model.LoadTokenizer(m.File())
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile("../defaultmodel/heldout.txt")
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode(string(text), true)
	for _, c := range []struct {
		chunks int
		want   float64
	}{{1, 15.0972}, {2, 10.3995}, {8, 7.2731}} {
		res, err := Perplexity(context.Background(), m, ids, tok.BOS(), PPLOptions{Ctx: 512, MaxChunks: c.chunks})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%d windows: PPL %.4f, llama.cpp %.4f", c.chunks, res.PPL, c.want)
		if res.Chunks != c.chunks || math.Abs(res.PPL-c.want)/c.want > 0.01 {
			t.Errorf("%d windows: %d scored, PPL %.4f; llama.cpp %.4f", c.chunks, res.Chunks, res.PPL, c.want)
		}
	}
}
