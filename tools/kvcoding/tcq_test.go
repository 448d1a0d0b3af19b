package main

import (
	"math"
	"testing"
)

// The TCQ itself (trellises, Viterbi, codebooks) is quant's and tested
// there (quant/tcq_test.go).

func TestEqualRate(t *testing.T) {
	errs := []float64{8, 4, 2, 1}
	for _, tt := range []struct{ target, want float64 }{
		{8, 0}, {9, 0}, {4, 1}, {2 * math.Sqrt2, 1.5}, {1, 3}, {0.5, 4},
	} {
		if got := equalRate(errs, tt.target); math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("equalRate(%g) = %g, want %g", tt.target, got, tt.want)
		}
	}
}
