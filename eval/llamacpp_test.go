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
// scored positions give the same perplexity up to float rounding: 63
// positions scored per window (the logits at 64 … 126, n_ctx − 1 −
// n_ctx/2), 2079 in all, and a perplexity within 1e-6 (measured: 2e-7).
// Scoring one more position per window (from 63, as this package did
// until 2026-12-02) moves it by 4e-6 on this near-uniform model.
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
	t.Logf("PPL %.6f, %d tokens scored", res.PPL, res.Tokens)
	const want = 32373.5783
	if res.Chunks != 33 || res.Tokens != 33*63 || math.Abs(res.PPL-want)/want > 1e-6 {
		t.Errorf("%d chunks, %d tokens scored, PPL %.4f; llama.cpp: 33 chunks, 2079 tokens, %.4f", res.Chunks, res.Tokens, res.PPL, want)
	}
}
