package kvcache_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/kvcache"
)

// TestTierScreen scores codes re-made at lower rates as tokens age
// (kvcache.TierMaker) on eval kv's first 2 windows of 1024 tokens
// (TURBOMEM_TIER_CTX: another length), the calibration on the text's
// last 2 (BENCHMARKS.md, "Codes re-made at lower rates as tokens age").
// TURBOMEM_TIER names the model; TURBOMEM_TIER_VARIANTS is
// semicolon-separated rate0,rate1,…@band1,…: a token leaving the fp16
// window is coded at rate0, and re-coded at rate i+1 at age band i;
// TURBOMEM_TIER_KEYS=R codes the keys once at rate R, the values alone
// tiered (TURBOMEM_TIER_VALUES=R the other way round).
func TestTierScreen(t *testing.T) {
	name := os.Getenv("TURBOMEM_TIER")
	if name == "" {
		t.Skip("TURBOMEM_TIER not set")
	}
	m, tok, ok := screenModel(t, name, 1)
	if !ok {
		t.Skip("model absent")
	}
	defer m.Close()
	ctxLen := 1024
	if v, err := strconv.Atoi(os.Getenv("TURBOMEM_TIER_CTX")); err == nil {
		ctxLen = v
	}
	sr := newScreenRun(t, m, tok, ctxLen, 2)
	for _, v := range strings.Split(os.Getenv("TURBOMEM_TIER_VARIANTS"), ";") {
		rs, bs, _ := strings.Cut(v, "@")
		var rates []float64
		var bands []int
		for _, f := range strings.Split(rs, ",") {
			r, err := strconv.ParseFloat(f, 64)
			if err != nil {
				t.Fatal(err)
			}
			rates = append(rates, r)
		}
		if bs != "" {
			for _, f := range strings.Split(bs, ",") {
				b, err := strconv.Atoi(f)
				if err != nil {
					t.Fatal(err)
				}
				bands = append(bands, b)
			}
		}
		once, onceKeys := 0.0, true
		if r, err := strconv.ParseFloat(os.Getenv("TURBOMEM_TIER_KEYS"), 64); err == nil {
			once = r
		} else if r, err := strconv.ParseFloat(os.Getenv("TURBOMEM_TIER_VALUES"), 64); err == nil {
			once, onceKeys = r, false
		}
		a := sr.run(kvcache.TierMaker(sr.cov, kvcache.DefaultWindow, rates, bands, once, onceKeys))
		t.Logf("%s %s: KL %.6f top1 %.4f", name, v, a.KLMean, a.Top1)
	}
}

// TestTierAges measures where the attention beyond the fp16 window goes
// by the token's age (BENCHMARKS.md, "Codes re-made at lower rates as
// tokens age"): for the queries at positions 512–1023 of the held-out
// text's first 1024 tokens, every layer and query head, exact attention
// over the recorded keys, the share of the mass beyond the window and of
// its squares in each age band. TURBOMEM_TIER_AGES names the models
// (comma-separated; suite.Resolve).
func TestTierAges(t *testing.T) {
	names := os.Getenv("TURBOMEM_TIER_AGES")
	if names == "" {
		t.Skip("TURBOMEM_TIER_AGES not set")
	}
	bands := []int{kvcache.DefaultWindow, 128, 256, 384, 1024}
	for _, name := range strings.Split(names, ",") {
		m, tok, ok := screenModel(t, name, 1)
		if !ok {
			continue
		}
		trs, err := eval.RecordKV(m, tok.Encode(defaultmodel.HeldOut(), true)[:1024], -1)
		m.Close()
		if err != nil {
			t.Fatal(err)
		}
		mass, sq := make([]float64, len(bands)), make([]float64, len(bands))
		var window float64
		for _, tr := range trs {
			sh := tr.Shape
			d, g := sh.HeadDim, sh.Group()
			s, ks := make([]float64, tr.Len()), make([][]float32, tr.Len())
			for u := range ks {
				ks[u] = tr.K[u*sh.KVHeads*d:][:sh.KVHeads*d]
			}
			for p := 512; p < tr.Len(); p++ {
				for j := range sh.QHeads {
					kvcache.AttentionWeights(s[:p+1], tr.Q[(p*sh.QHeads+j)*d:][:d], ks[:p+1], j/g, float64(tr.Scale))
					for u, w := range s[:p+1] {
						age := p - u
						if age < bands[0] {
							window += w
							continue
						}
						b := 1
						for age >= bands[b] {
							b++
						}
						mass[b] += w
						sq[b] += w * w
					}
				}
			}
		}
		var beyond, beyondSq float64
		for b := range mass {
			beyond += mass[b]
			beyondSq += sq[b]
		}
		line := fmt.Sprintf("%s: in the window %.3f of the mass; beyond it by age:", name, window/(window+beyond))
		for b := 1; b < len(bands); b++ {
			line += fmt.Sprintf(" [%d, %d) mass %.3f, squares %.3f;", bands[b-1], bands[b], mass[b]/beyond, sq[b]/beyondSq)
		}
		t.Log(line)
	}
}
