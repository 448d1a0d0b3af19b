package kvcache_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/suite"
)

// TestTierScreen scores codes re-made at lower rates as tokens age
// (kvcache.TierMaker) on eval kv's first 2 windows of 1024 tokens
// (TURBOMEM_TIER_CTX: another length), the calibration on the text's
// last 2 (BENCHMARKS.md, "Codes re-made at lower rates as tokens age").
// TURBOMEM_TIER names the model; TURBOMEM_TIER_VARIANTS is
// semicolon-separated rate0,rate1,…@band1,…: a token leaving the fp16
// window is coded at rate0, and re-coded at rate i+1 at age band i.
func TestTierScreen(t *testing.T) {
	name := os.Getenv("TURBOMEM_TIER")
	if name == "" {
		t.Skip("TURBOMEM_TIER not set")
	}
	path, ok := suite.Resolve(name)
	if !ok {
		t.Skip(suite.Absent(path))
	}
	var m *model.Model
	var err error
	if path == "" {
		m, err = defaultmodel.Load(model.Options{Threads: 1})
	} else {
		m, err = model.Open(path, model.Options{Threads: 1})
	}
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tok, err := model.LoadTokenizer(m.File())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ctxLen, chunks := 1024, 2
	if v, err := strconv.Atoi(os.Getenv("TURBOMEM_TIER_CTX")); err == nil {
		ctxLen = v
	}
	ids := tok.Encode(defaultmodel.HeldOut(), true)
	ref, err := eval.Perplexity(ctx, m, ids, tok.BOS(), eval.PPLOptions{Ctx: ctxLen, MaxChunks: chunks})
	if err != nil {
		t.Fatal(err)
	}
	cov, err := eval.MeasureCovariances(ctx, m, ids[len(ids)-chunks*ctxLen:], tok.BOS(), ctxLen, chunks)
	if err != nil {
		t.Fatal(err)
	}
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
		r, err := eval.Perplexity(ctx, m, ids, tok.BOS(), eval.PPLOptions{Ctx: ctxLen, MaxChunks: chunks, KV: kvcache.TierMaker(cov, kvcache.DefaultWindow, rates, bands), Ref: ref.Dists})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s %s: KL %.6f top1 %.4f", name, v, r.Agreement.KLMean, r.Agreement.Top1)
	}
}
