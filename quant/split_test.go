package quant

import (
	"math"
	"testing"
)

func firstChannels(k int) []int {
	c := make([]int, k)
	for i := range c {
		c[i] = i
	}
	return c
}

// TestTurboSplitRates: the fractional rates of docs/ALGORITHMS.md §6 with both
// fp16 norms counted come out exact at d = 128.
func TestTurboSplitRates(t *testing.T) {
	tests := []struct {
		hi, lo int
		prod   bool
		bits   float64
		name   string
	}{
		{3, 2, false, 2.5, "turbo/2.5"},
		{4, 3, false, 3.5, "turbo/3.5"},
		// Prod parts add a γ norm each: (32·4 + 96·3 + 4·16)/128.
		{4, 3, true, 3.75, "turbo-prod/3.75"},
	}
	for _, tt := range tests {
		s, err := NewTurboSplit(128, firstChannels(32), tt.hi, tt.lo, tt.prod, Options{Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		if got := BitsPerCoord(s); got != tt.bits || s.Name() != tt.name {
			t.Errorf("%d/%d: %s %g bits, want %s %g", tt.hi, tt.lo, s.Name(), got, tt.name, tt.bits)
		}
		checkScorer(t, s, 40, 3)
	}
}

// TestTurboSplitDistortion: for isotropic vectors the split's MSE is the
// energy-weighted mix of its parts: with k of d channels at hi bits,
// E‖e‖² ≈ (k/d)·D(hi) + ((d−k)/d)·D(lo), D from the §3 references (the
// parts' dimensions 32 and 96 are not tabulated; d = 64/128 values bound
// them within ~1%). Energy per part fluctuates, so allow 3%.
func TestTurboSplitDistortion(t *testing.T) {
	s, err := NewTurboSplit(128, firstChannels(32), 4, 3, false, Options{Seed: 4})
	if err != nil {
		t.Fatal(err)
	}
	got, err := Measure(s, 10000, 8)
	if err != nil {
		t.Fatal(err)
	}
	want := 0.25*0.00913 + 0.75*0.03395
	if rel := math.Abs(got.MSE-want) / want; rel > 0.03 {
		t.Errorf("turbo/3.5 MSE = %.5f, want ≈ %.5f", got.MSE, want)
	}
}

func TestTurboSplitErrors(t *testing.T) {
	for _, ch := range [][]int{nil, {0, 0}, {-1}, {128}, firstChannels(128)} {
		if _, err := NewTurboSplit(128, ch, 3, 2, false, Options{}); err == nil {
			t.Errorf("outliers %v: no error", ch)
		}
	}
}
