package eval

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

const tinyFixture = "../testdata/llama-2-tiny-random.gguf"

func openTiny(t *testing.T) *model.Model {
	t.Helper()
	m, err := model.Open(tinyFixture, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestBuildHaystack(t *testing.T) {
	m := openTiny(t)
	tok, err := model.LoadTokenizer(m.File())
	if err != nil {
		t.Fatal(err)
	}
	hay := tok.Encode(strings.Repeat("The quick brown fox jumps over the lazy dog. It rains.\n", 200), false)
	needle := tok.Encode(" The pass key is 12345. ", false)
	question := tok.Encode("\nWhat is the pass key?", false)
	r := rand.New(rand.NewPCG(1, 1))
	for _, depth := range []float64{0, 0.25, 0.5, 1} {
		p, err := buildHaystack(tok, hay, needle, question, 400, depth, r)
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != 400 || p[0] != tok.BOS() || !slices.Equal(p[len(p)-len(question):], question) {
			t.Fatalf("depth %g: %d tokens, BOS %v", depth, len(p), p[0] == tok.BOS())
		}
		at := -1
		for i := range p {
			if slices.Equal(p[i:min(len(p), i+len(needle))], needle) {
				at = i
				break
			}
		}
		fill := 400 - 1 - len(needle) - len(question)
		// The needle moves back at most 32 tokens to a sentence end.
		want := 1 + int(depth*float64(fill))
		if at < 0 || at > want || at < want-32 {
			t.Errorf("depth %g: needle at %d, want within 32 tokens before %d", depth, at, want)
		}
	}
	if _, err := buildHaystack(tok, hay[:10], needle, question, 400, 0.5, r); err == nil {
		t.Error("short haystack: no error")
	}
	if _, err := buildHaystack(tok, hay, needle, question, 5, 0.5, r); err == nil {
		t.Error("length below needle + question: no error")
	}
}

// TestNeedleRuns checks the mechanics on the random tiny model (which
// cannot retrieve): the grid has the requested shape and scores are
// fractions.
func TestNeedleRuns(t *testing.T) {
	m := openTiny(t)
	tok, _ := model.LoadTokenizer(m.File())
	hay := tok.Encode(strings.Repeat("Some filler text that goes on. ", 100), false)
	res, err := Needle(context.Background(), m, tok, hay, NeedleOptions{Lengths: []int{64, 128}, Depths: 3, Trials: 2, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Score) != 2 || len(res.Score[0]) != 3 || len(res.Depths) != 3 || res.Depths[2] != 1 {
		t.Fatalf("grid %+v", res)
	}
	if res.Overall < 0 || res.Overall > 1 {
		t.Errorf("overall %g", res.Overall)
	}
	if _, err := Needle(context.Background(), m, tok, hay, NeedleOptions{Lengths: []int{1 << 20}, Depths: 1, Trials: 1}); err == nil {
		t.Error("length beyond the context: no error")
	}
}

func TestLeadingDigits(t *testing.T) {
	for in, want := range map[string]string{" 12345.": "12345", "123": "123", " x1": "", "": "", "  007 is": "007"} {
		if got := leadingDigits(in); got != want {
			t.Errorf("leadingDigits(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPerplexityWindows checks the llama-perplexity windowing on the tiny
// model: with a window of 2N tokens, the logits at positions N … 2N−2 are
// scored (N−1 per window, llama-perplexity's n_ctx − 1 − n_ctx/2), and
// the mean NLL equals the NLL computed here from full-sequence logits of
// each window with BOS first.
func TestPerplexityWindows(t *testing.T) {
	m := openTiny(t)
	tok, _ := model.LoadTokenizer(m.File())
	ids := tok.Encode(strings.Repeat("Once upon a time there was a tiny model. ", 20), true)
	res, err := Perplexity(context.Background(), m, ids, tok.BOS(), PPLOptions{Ctx: 32, MaxChunks: 3})
	if err != nil {
		t.Fatal(err)
	}
	if res.Chunks != 3 || res.Tokens != 3*15 {
		t.Fatalf("chunks %d tokens %d, want 3 and 45", res.Chunks, res.Tokens)
	}
	var sum float64
	for c := range 3 {
		w := append([]int32(nil), ids[c*32:(c+1)*32]...)
		w[0] = tok.BOS()
		s, _ := m.NewSession(kvcache.F32(), 32)
		logits, err := s.Forward(w[:31], true)
		if err != nil {
			t.Fatal(err)
		}
		v := m.Config.Vocab
		for pos := 16; pos < 31; pos++ {
			sum -= LogSoftmax(logits[pos*v : (pos+1)*v])[w[pos+1]]
		}
	}
	// F16 cache (default) against F32 here: small differences.
	if want := sum / 45; abs(res.NLL-want) > 1e-3*want {
		t.Errorf("NLL %g, want %g", res.NLL, want)
	}
	// A run compared with itself agrees exactly.
	self, err := Perplexity(context.Background(), m, ids, tok.BOS(), PPLOptions{Ctx: 32, MaxChunks: 3, Ref: res.Dists})
	if err != nil || self.Agreement.Top1 != 1 || self.Agreement.KLMean > 1e-9 {
		t.Errorf("self agreement %+v, %v", self.Agreement, err)
	}
	if _, err := Perplexity(context.Background(), m, ids[:10], tok.BOS(), PPLOptions{Ctx: 32}); err == nil {
		t.Error("too few tokens: no error")
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
