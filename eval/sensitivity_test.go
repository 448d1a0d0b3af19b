package eval

import (
	"context"
	"testing"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// TestKVSensitivity measures the embedded model's parts on a short text:
// f16 costs nothing, qjl cannot hold values, every compressed part costs
// something, and each loss is what a Perplexity run with only that part
// compressed gives.
func TestKVSensitivity(t *testing.T) {
	m := loadDefault(t)
	tok, err := model.LoadTokenizer(m.File())
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode(defaultmodel.HeldOut()[:4000], true)
	var fs []kvcache.Format
	for _, n := range []string{"f16", "turbo2.5", "qjl"} {
		f, err := kvcache.ParseFormat(n)
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	// -short (the pure-Go CI pass, where the model is slow): shorter
	// windows, still with most scored tokens outside the fp16 window.
	ctxLen := 96
	if testing.Short() {
		ctxLen = 48
	}
	o := SensitivityOptions{Ctx: ctxLen, MaxChunks: 1, Window: 4}
	s, err := KVSensitivity(context.Background(), m, ids, tok.BOS(), fs, o)
	if err != nil {
		t.Fatal(err)
	}
	if s.Layers() != m.Config.Layers {
		t.Fatalf("%d layers measured, model has %d", s.Layers(), m.Config.Layers)
	}
	for p, row := range s.Loss {
		if row[0] != 0 {
			t.Errorf("part %d: f16 loss %g", p, row[0])
		}
		if row[1] <= 0 || row[1] > 1 {
			t.Errorf("part %d: turbo2.5 loss %g, want in (0, 1]", p, row[1])
		}
		if key := p%2 == 0; key && row[2] <= 0 || !key && row[2] != -1 {
			t.Errorf("part %d: qjl loss %g", p, row[2])
		}
	}
	// Layer 2's values at turbo2.5, measured on their own.
	ref, err := Perplexity(context.Background(), m, ids, tok.BOS(), PPLOptions{Ctx: ctxLen, MaxChunks: 1})
	if err != nil {
		t.Fatal(err)
	}
	one := kvcache.Spec{K: fs[0], V: fs[1], Window: 4}
	res, err := Perplexity(context.Background(), m, ids, tok.BOS(), PPLOptions{Ctx: ctxLen, MaxChunks: 1, Ref: ref.Dists,
		KV: kvcache.NewCacheFunc(func(l int, sh kvcache.Shape) (kvcache.Cache, error) {
			if l == 2 {
				return one.NewCache(l, sh)
			}
			return kvcache.NewF16(sh)
		})})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Loss[5][1]; got != res.Agreement.KLMean {
		t.Errorf("layer 2 values at turbo2.5: %g, alone %g", got, res.Agreement.KLMean)
	}
	p, err := kvcache.Allocate(s, 3, m.Config.HeadDim)
	if err != nil {
		t.Fatal(err)
	}
	if p.Bits() > 3 || p.Predicted <= 0 {
		t.Errorf("plan %s", p.Describe())
	}
}
