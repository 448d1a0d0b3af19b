package model_test

import (
	"math"
	"slices"
	"testing"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/model"
)

// TestForwardFrom: running the layers from L on the hidden states a
// capture recorded gives the logits of the whole forward pass (of its
// last 87 tokens, which span both chunks), bit for bit, for every L, and
// for the last tokens alone (ForwardTail's tails); bad arguments are
// refused.
func TestForwardFrom(t *testing.T) {
	m, err := defaultmodel.Load(model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ids := make([]int32, model.MaxBatch+37)
	for i := range ids {
		ids[i] = int32(7 + 31*i%1000)
	}
	ref, err := m.NewSession(nil, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	hidden := make([][]float32, m.Config.Layers)
	ref.SetCapture(func(l int, x []float32) { hidden[l] = append(hidden[l], x...) })
	const refTail = 87 // starts in the first chunk
	want, err := ref.ForwardTail(ids, refTail)
	if err != nil {
		t.Fatal(err)
	}
	for l := range m.Config.Layers {
		if len(hidden[l]) != len(ids)*m.Config.Hidden {
			t.Fatalf("layer %d: captured %d values", l, len(hidden[l]))
		}
		if testing.Short() && l%2 == 1 {
			continue // half the layers are enough to catch a wrong start
		}
		s, err := m.NewSession(nil, len(ids))
		if err != nil {
			t.Fatal(err)
		}
		// The logits of the last tail tokens only: all of them, those
		// of a tail that starts in the first chunk, of the last chunk
		// alone, the last token's. Products of 16 vectors or more go
		// through the tiled kernel as the whole pass did, bit for bit;
		// fewer through the row kernel, the same up to rounding.
		tail := []int{refTail, 87, 37, 1, 16, 2}[l%6]
		got, err := s.ForwardFrom(l, hidden[l], tail)
		if err != nil {
			t.Fatal(err)
		}
		w := want[(refTail-tail)*m.Config.Vocab:]
		if tail >= 16 && !slices.Equal(got, w) || tail < 16 && maxRelDiff(got, w) > 1e-4 {
			t.Errorf("from layer %d: logits of the last %d tokens differ (max %g of the largest)", l, tail, maxRelDiff(got, w))
		}
		if s.Len() != len(ids) {
			t.Errorf("from layer %d: Len %d", l, s.Len())
		}
	}
	s, _ := m.NewSession(nil, 8)
	for _, tt := range []struct {
		layer int
		x     []float32
	}{{-1, hidden[0][:m.Config.Hidden]}, {m.Config.Layers, hidden[0][:m.Config.Hidden]}, {0, hidden[0][:3]}, {0, nil}, {0, hidden[0][:9*m.Config.Hidden]}} {
		if _, err := s.ForwardFrom(tt.layer, tt.x, 1); err == nil {
			t.Errorf("ForwardFrom(%d, %d values): no error", tt.layer, len(tt.x))
		}
	}
	for _, tail := range []int{0, 3} {
		if _, err := s.ForwardTail([]int32{1, 2}, tail); err == nil {
			t.Errorf("ForwardTail of 2 tokens, tail %d: no error", tail)
		}
	}
}

// maxRelDiff returns max |a−b| / max |b| (1 for lengths that differ).
func maxRelDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return 1
	}
	var d, m float64
	for i := range a {
		d = max(d, math.Abs(float64(a[i]-b[i])))
		m = max(m, math.Abs(float64(b[i])))
	}
	return d / m
}
