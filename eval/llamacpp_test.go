package eval

import (
	"context"
	"math"
	"os"
	"testing"

	"github.com/turbomem/turbomem/model"
)

// TestPerplexityMatchesLlamaCpp compares with llama.cpp's llama-perplexity
// on the same file and text (testdata/ppl_words.txt, random sentences of
// common words):
//
//	llama-perplexity -m testdata/llama-2-tiny-random.gguf -f eval/testdata/ppl_words.txt -c 128 -t 2
//	→ 33 chunks, Final estimate: PPL = 32373.5783 +/- 44.35265
//
// (llama.cpp de3ff81, CPU, f16 KV cache). Same tokenization, windows and
// scored positions give the same perplexity up to float rounding (1e-5).
func TestPerplexityMatchesLlamaCpp(t *testing.T) {
	m := openTiny(t)
	tok, err := model.LoadTokenizer(m.File())
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile("testdata/ppl_words.txt")
	if err != nil {
		t.Fatal(err)
	}
	res, err := Perplexity(context.Background(), m, tok.Encode(string(text), true), tok.BOS(), PPLOptions{Ctx: 128})
	if err != nil {
		t.Fatal(err)
	}
	const want = 32373.5783
	if res.Chunks != 33 || math.Abs(res.PPL-want)/want > 1e-5 {
		t.Errorf("%d chunks, PPL %.4f; llama.cpp: 33 chunks, %.4f", res.Chunks, res.PPL, want)
	}
}
