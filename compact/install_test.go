package compact

import (
	"context"
	"math"
	"testing"

	"github.com/turbomem/turbomem/kvcache"
)

// TestResumeKeepAll: compacting a context while keeping every token
// (ratio 1) gives caches on which the model continues as on the original
// ones, for attention matching (β = 0 and the original values are the
// exact fit) and eviction alike, with a window: next-token distributions
// within KL 3e-3 of the uncompacted session's. (Not bit for bit: the
// model's products quantize their inputs to 8 bits, so differences of
// float32 rounding in attention can flip a rounding step and move a logit
// by 0.1; which steps flip depends on the kernels' order of float
// operations: up to 9.5e-4 with the four-vector row kernels, 1.8e-3 at
// one token with the multi-row kernel of four vectors.)
func TestResumeKeepAll(t *testing.T) {
	m := loadDefault(t)
	ids := testIDs(100, 3)
	next := []int32{40, 41, 42, 43}
	ref, err := m.NewSession(kvcache.F32(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ref.Forward(ids, false); err != nil {
		t.Fatal(err)
	}
	want, err := ref.Forward(next, true)
	if err != nil {
		t.Fatal(err)
	}
	_, c, _, err := Prefill(m, kvcache.F32(), ids, 0)
	if err != nil {
		t.Fatal(err)
	}
	vocab := m.Config.Vocab
	for _, meth := range []Method{AMHighest, AMOMPMethod, Truncate} {
		comp, err := Compact(context.Background(), c, Options{Method: meth, Ratio: 1, Window: 10})
		if err != nil {
			t.Fatal(err)
		}
		s, err := Resume(m, comp, kvcache.F32(), 0)
		if err != nil {
			t.Fatal(err)
		}
		if s.Len() != len(ids) {
			t.Fatalf("%s: resumed at %d, want %d", meth, s.Len(), len(ids))
		}
		got, err := s.Forward(next, true)
		if err != nil {
			t.Fatal(err)
		}
		for p := range next {
			w, g := want[p*vocab:(p+1)*vocab], got[p*vocab:(p+1)*vocab]
			if kl := klLogits(w, g); kl > 3e-3 {
				t.Errorf("%s, token %d: KL %g from the uncompacted session", meth, p, kl)
			}
		}
	}
}

// klLogits returns KL(softmax(p) ‖ softmax(q)) in nats.
func klLogits(p, q []float32) float64 {
	lp, lq := logSoftmax64(p), logSoftmax64(q)
	var kl float64
	for i := range lp {
		kl += math.Exp(lp[i]) * (lp[i] - lq[i])
	}
	return kl
}

func logSoftmax64(x []float32) []float64 {
	m := math.Inf(-1)
	for _, v := range x {
		m = max(m, float64(v))
	}
	var sum float64
	for _, v := range x {
		sum += math.Exp(float64(v) - m)
	}
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v) - m - math.Log(sum)
	}
	return out
}
