package model

import (
	"math"
	"testing"
)

func TestSamplerGreedyAndPenalty(t *testing.T) {
	s, err := NewSampler(SamplerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Sample([]float32{0.1, 3, 2.9}); got != 1 {
		t.Errorf("greedy = %d, want 1", got)
	}
	// Penalty 2 on token 1 (seen): 3 → 1.5 < 2.9.
	p, _ := NewSampler(SamplerConfig{RepeatPenalty: 2})
	p.Accept(1)
	if got := p.Sample([]float32{0.1, 3, 2.9}); got != 2 {
		t.Errorf("with penalty = %d, want 2", got)
	}
}

// TestSamplerDistribution draws many samples and compares frequencies with
// the probabilities the filters should leave, computed here by hand.
func TestSamplerDistribution(t *testing.T) {
	logits := []float32{float32(math.Log(0.5)), float32(math.Log(0.3)), float32(math.Log(0.15)), float32(math.Log(0.05))}
	tests := []struct {
		name string
		c    SamplerConfig
		want []float64
	}{
		{"temp1", SamplerConfig{Temperature: 1}, []float64{0.5, 0.3, 0.15, 0.05}},
		{"topk2", SamplerConfig{Temperature: 1, TopK: 2}, []float64{0.625, 0.375, 0, 0}},
		// Smallest prefix reaching 0.9: 0.5+0.3+0.15.
		{"topp0.9", SamplerConfig{Temperature: 1, TopP: 0.9}, []float64{0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0}},
		// min-p 0.25: keep p ≥ 0.125.
		{"minp", SamplerConfig{Temperature: 1, MinP: 0.25}, []float64{0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0}},
		// T = 0.5 squares the probabilities before normalising.
		{"temp0.5", SamplerConfig{Temperature: 0.5}, []float64{0.25 / 0.365, 0.09 / 0.365, 0.0225 / 0.365, 0.0025 / 0.365}},
	}
	const n = 40000
	for _, tt := range tests {
		tt.c.Seed = 7
		s, err := NewSampler(tt.c)
		if err != nil {
			t.Fatal(err)
		}
		counts := make([]float64, len(logits))
		for range n {
			l := append([]float32(nil), logits...)
			counts[s.Sample(l)]++
		}
		for i, w := range tt.want {
			// 5 standard errors of a binomial proportion at n = 40000.
			tol := 5 * math.Sqrt(w*(1-w)/n)
			if math.Abs(counts[i]/n-w) > tol+1e-9 {
				t.Errorf("%s: token %d frequency %.4f, want %.4f", tt.name, i, counts[i]/n, w)
			}
		}
	}
}

func TestSamplerDeterministic(t *testing.T) {
	a, _ := NewSampler(SamplerConfig{Temperature: 1, Seed: 3})
	b, _ := NewSampler(SamplerConfig{Temperature: 1, Seed: 3})
	for range 100 {
		l := []float32{1, 2, 3, 4, 5}
		if a.Sample(append([]float32(nil), l...)) != b.Sample(l) {
			t.Fatal("same seed, different tokens")
		}
	}
}

func TestSamplerConfigErrors(t *testing.T) {
	for _, c := range []SamplerConfig{{Temperature: -1}, {TopK: -1}, {TopP: 1.5}, {MinP: -0.1}, {RepeatPenalty: math.NaN()}, {Temperature: math.Inf(1)}} {
		if _, err := NewSampler(c); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}
