package model_test

import (
	"slices"
	"testing"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// TestResume: a session resumed at position a from caches refilled with
// the keys and values a first session recorded for the first a tokens
// gives, for the tokens after them, the logits of one session over all
// tokens, bit for bit; bad arguments are refused.
func TestResume(t *testing.T) {
	m, err := defaultmodel.Load(model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ids := make([]int32, model.MaxBatch+26)
	for i := range ids {
		ids[i] = int32(11 + 37*i%1000)
	}
	const a = model.MaxBatch // the same chunks as the whole session's: bit for bit
	whole, err := m.NewSession(kvcache.F32(), len(ids))
	if err != nil {
		t.Fatal(err)
	}
	want, err := whole.ForwardTail(ids, len(ids)-a) // the logits the resumed session is compared with
	if err != nil {
		t.Fatal(err)
	}
	traces := make([]*kvcache.Trace, m.Config.Layers)
	first, err := m.NewSession(kvcache.NewCacheFunc(func(layer int, sh kvcache.Shape) (kvcache.Cache, error) {
		c, err := kvcache.NewF32(sh)
		r := kvcache.NewRecorder(c, sh)
		traces[layer] = r.Trace
		// attending the chunk at once, as the whole session's cache does:
		// token by token, attention over 256 positions or more is split
		// over the pool's threads and rounds differently
		return r.Recording(), err
	}), len(ids))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Forward(ids[:a], false); err != nil {
		t.Fatal(err)
	}
	caches := make([]kvcache.Cache, m.Config.Layers)
	kd := m.Config.KVHeads * m.Config.HeadDim
	for l, tr := range traces {
		c, err := kvcache.NewF32(m.CacheShape())
		if err != nil {
			t.Fatal(err)
		}
		for p := range a {
			if err := c.Append(tr.K[p*kd:(p+1)*kd], tr.V[p*kd:(p+1)*kd]); err != nil {
				t.Fatal(err)
			}
		}
		caches[l] = c
	}
	s, err := m.Resume(caches, a, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Forward(ids[a:], true)
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != len(ids) || !slices.Equal(got, want) {
		t.Fatalf("resumed session: length %d, logits differ from one session's", s.Len())
	}
	for _, bad := range []struct {
		caches   []kvcache.Cache
		pos, max int
	}{
		{caches[:2], a, 0},
		{caches, -1, 0},
		{caches, 100, 90},
		{append(caches[:len(caches)-1:len(caches)-1], nil), a, 0},
	} {
		if _, err := m.Resume(bad.caches, bad.pos, bad.max); err == nil {
			t.Errorf("Resume(%d caches, %d, %d) accepted", len(bad.caches), bad.pos, bad.max)
		}
	}
}
