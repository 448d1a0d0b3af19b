package model_test

import (
	"slices"
	"testing"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/model"
)

// TestForwardFrom: running the layers from L on the hidden states a
// capture recorded gives the logits of the whole forward pass, bit for
// bit, over several chunks, for every L; bad arguments are refused.
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
	want, err := ref.Forward(ids, true)
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
		got, err := s.ForwardFrom(l, hidden[l], true)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("from layer %d: logits differ", l)
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
		if _, err := s.ForwardFrom(tt.layer, tt.x, false); err == nil {
			t.Errorf("ForwardFrom(%d, %d values): no error", tt.layer, len(tt.x))
		}
	}
}
