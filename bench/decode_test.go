package bench

import (
	"testing"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// TestDecodeSpeedRounds: one row per (context, format, decode thread
// count), the prefill rate only on the rows at the prefill's thread
// count, the decode rate the median of the rounds within their range, and
// the first round's greedy tokens.
func TestDecodeSpeedRounds(t *testing.T) {
	m, err := defaultmodel.Load(model.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	turbo, err := kvcache.Parse("turbo3.5")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := DecodeSpeed(m, DecodeOptions{Contexts: []int{20, 40}, N: 4, Threads: 2, DecodeThreads: []int{1, 2},
		Configs: []kvcache.Config{kvcache.F16(), turbo}, Repeat: 3, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2*2*2 {
		t.Fatalf("%d rows, want 8", len(rows))
	}
	for i, r := range rows {
		wantCtx, wantFormat, wantThreads := []int{20, 40}[i/4], []string{"f16", "turbo3.5"}[i/2%2], 1+i%2
		if r.Context != wantCtx || r.Format != wantFormat || r.Threads != wantThreads || r.Rounds != 3 || len(r.Tokens) != 4 {
			t.Errorf("row %d: %+v, want context %d, %s, %d threads, 3 rounds, 4 tokens", i, r, wantCtx, wantFormat, wantThreads)
		}
		if (r.PromptTPS > 0) != (r.Threads == 2) {
			t.Errorf("row %d: prompt rate %g at %d threads (prefill on 2)", i, r.PromptTPS, r.Threads)
		}
		if !(r.DecodeMin <= r.DecodeTPS && r.DecodeTPS <= r.DecodeMax && r.DecodeMin > 0) {
			t.Errorf("row %d: decode %g outside [%g, %g]", i, r.DecodeTPS, r.DecodeMin, r.DecodeMax)
		}
	}
}
