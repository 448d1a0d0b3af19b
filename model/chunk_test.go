package model_test

import (
	"math"
	"testing"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// TestCompressedPromptChunks: a prompt fed in chunks to a compressed
// cache (kvcache.ChunkAttender: the chunk's leaving tokens encoded
// together, its queries attended together) gives the logits of the same
// chunks appended and attended token by token (the cache behind a
// wrapper that hides AppendAttend), within rounding, on the embedded
// model (non-uniform attention) and over the 256-token chunk's edge; and
// the sessions go on from equal caches.
func TestCompressedPromptChunks(t *testing.T) {
	m, err := defaultmodel.Load(model.Options{Threads: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ids := make([]int32, model.MaxBatch+44)
	for i := range ids {
		ids[i] = int32(11 + 37*i%1000)
	}
	for _, kv := range []struct {
		name   string
		window int
	}{{"turbo3.5", 64}, {"q4_0", 64}, {"turbo2.5", -1}} {
		cfg, err := kvcache.Parse(kv.name)
		if err != nil {
			t.Fatal(err)
		}
		if cfg, err = cfg.WithWindow(kv.window); err != nil {
			t.Fatal(err)
		}
		chunked, err := m.NewSession(cfg, len(ids)+1)
		if err != nil {
			t.Fatal(err)
		}
		tokens, err := m.NewSession(kvcache.NewCacheFunc(func(layer int, sh kvcache.Shape) (kvcache.Cache, error) {
			c, err := cfg.NewCache(layer, sh)
			return tokenByToken{c}, err
		}), len(ids)+1)
		if err != nil {
			t.Fatal(err)
		}
		got, err := chunked.Forward(ids, true)
		if err != nil {
			t.Fatal(err)
		}
		want, err := tokens.Forward(ids, true)
		if err != nil {
			t.Fatal(err)
		}
		worst := 0.0
		for j, x := range want {
			worst = max(worst, math.Abs(float64(got[j]-x)))
		}
		if worst > 2e-3 {
			t.Errorf("%s: logits of the chunked prompt differ from token by token's by up to %g", kv.name, worst)
		}
		a, err := chunked.Forward([]int32{5}, true)
		if err != nil {
			t.Fatal(err)
		}
		b, err := tokens.Forward([]int32{5}, true)
		if err != nil {
			t.Fatal(err)
		}
		next := 0.0
		for j := range a {
			next = max(next, math.Abs(float64(a[j]-b[j])))
		}
		if next > 2e-3 || chunked.CacheBytes() != tokens.CacheBytes() {
			t.Errorf("%s: the next token's logits differ by %g; cache bytes %d and %d", kv.name, next, chunked.CacheBytes(), tokens.CacheBytes())
		}
		t.Logf("%s window %d: prompt logits within %.2g, next token's within %.2g", kv.name, kv.window, worst, next)
	}
}

// tokenByToken hides a cache's kvcache.ChunkAttender: the model appends
// and attends its chunks token by token.
type tokenByToken struct{ kvcache.Cache }
