package kvcache_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/kvcache"
)

// TestSalientScreen measures token-level mixed precision chosen by the
// attention seen in the fp16 window (kvcache's salient screening cache)
// on eval kv's windows: the mean KL against the f16 cache of the first 2
// windows of 1024 tokens of the embedded held-out text, the klt
// calibration on its last 2, beside q4_0 and tcq2.5 (BENCHMARKS.md,
// "Token-level mixed precision by attention in the window").
// TURBOMEM_SALIENT names the model (suite.Resolve: default, large,
// mha64, qwen2 or a path); TURBOMEM_SALIENT_VARIANTS the variants,
// comma-separated select/hi/rate/mindist[/seed]: of every 16 tokens
// leaving the window, hi chosen by select (mass, least, random) at rate
// half-bits per coordinate, the others at tcq2.5's bytes of 16 tokens
// less theirs and a byte for the routes, spread evenly; the mass counted
// from queries at distance mindist or more. TURBOMEM_SALIENT_CAPTURE
// set instead measures how much of the attention beyond the window the
// tokens with the most mass in it receive (SalientCapture).
func TestSalientScreen(t *testing.T) {
	name := os.Getenv("TURBOMEM_SALIENT")
	if name == "" {
		t.Skip("TURBOMEM_SALIENT not set")
	}
	m, tok, ok := screenModel(t, name, 2)
	if !ok {
		t.Skip("model absent")
	}
	defer m.Close()
	sr := newScreenRun(t, m, tok, 1024, 2)
	cov, run, d := sr.cov, sr.run, m.Config.HeadDim
	if os.Getenv("TURBOMEM_SALIENT_CAPTURE") != "" {
		for _, hi := range []int{2, 4, 8} {
			o := kvcache.SalientOptions{Window: 1 << 30, Block: 16, Hi: hi, HiBytes: d / 8, LoBytes: d / 8, Select: "mass", MinDist: 24}
			var caches []kvcache.Cache
			mk := kvcache.SalientMaker(cov, o)
			run(kvcache.NewCacheFunc(func(layer int, sh kvcache.Shape) (kvcache.Cache, error) {
				c, err := mk(layer, sh)
				caches = append(caches, c)
				return c, err
			}))
			chosen, oracle := kvcache.SalientCapture(caches)
			t.Logf("top %d of 16 by mass at distance 24–48: %.3f of the attention at distance ≥ 64 (chance %.3f, the best %d %.3f)", hi, chosen, float64(hi)/16, hi, oracle)
		}
		return
	}
	for _, f := range []string{"q4_0", "tcq2.5"} {
		s, err := kvcache.ParseSpec(f, "")
		if err != nil {
			t.Fatal(err)
		}
		s.Cov = cov
		a := run(s)
		t.Logf("%-24s KL %.5f  top-1 %.4f", f, a.KLMean, a.Top1)
	}
	for _, v := range strings.Split(os.Getenv("TURBOMEM_SALIENT_VARIANTS"), ",") {
		if v == "" {
			continue
		}
		o, err := salientVariant(v, d)
		if err != nil {
			t.Fatal(err)
		}
		a := run(kvcache.SalientMaker(cov, o))
		t.Logf("%-24s KL %.5f  top-1 %.4f  bits %.4f (%d×%d + %d×%d + %d bytes)", v, a.KLMean, a.Top1, o.Bits(d), o.Hi, o.HiBytes, 16-o.Hi, o.LoBytes, o.LoExtra)
	}
}

// salientVariant parses select/hi/rate/mindist[/seed] (TestSalientScreen)
// for head dimension d.
func salientVariant(v string, d int) (kvcache.SalientOptions, error) {
	p := strings.Split(v, "/")
	if len(p) < 4 || len(p) > 5 {
		return kvcache.SalientOptions{}, fmt.Errorf("variant %q: want select/hi/rate/mindist[/seed]", v)
	}
	var n [4]int
	for i, s := range p[1:] {
		x, err := strconv.Atoi(s)
		if err != nil {
			return kvcache.SalientOptions{}, fmt.Errorf("variant %q: %w", v, err)
		}
		n[i] = x
	}
	const block = 16
	o := kvcache.SalientOptions{Window: kvcache.DefaultWindow, Block: block, Select: p[0], Hi: n[0], HiBytes: n[1] * d / 16, MinDist: n[2], Seed: uint64(n[3])}
	rest := block*5*d/16 - 1 - o.Hi*o.HiBytes // tcq2.5's bytes, less the routes' byte
	o.LoBytes, o.LoExtra = rest/(block-o.Hi), rest%(block-o.Hi)
	return o, nil
}
