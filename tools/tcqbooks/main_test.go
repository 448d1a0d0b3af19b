package main

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/quant"
)

func TestSymmetrize(t *testing.T) {
	for _, c := range []struct{ in, want []float64 }{
		{[]float64{-3, -1, 2, 4}, []float64{-3.5, -1.5, 1.5, 3.5}},
		{[]float64{-1, 1}, []float64{-1, 1}},
		{[]float64{-2, 0, 0, 1}, []float64{-1.5, 0, 0, 1.5}},
	} {
		got := slices.Clone(c.in)
		symmetrize(got)
		if !slices.Equal(got, c.want) {
			t.Errorf("symmetrize(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestWrap(t *testing.T) {
	lines := wrap("aa bb cc dd ee", 5)
	if want := []string{"aa bb", "cc dd", "ee"}; !slices.Equal(lines, want) {
		t.Errorf("wrap = %q, want %q", lines, want)
	}
	for _, l := range wrap(strings.Repeat("word ", 40), 72) {
		if len(l) > 72 {
			t.Errorf("line of %d bytes", len(l))
		}
	}
}

// TestTrainLowersError: the Lloyd iteration from a book spread too wide
// (GaussianTCQBook at 2 bits times 1.5) lowers the error on its training
// sequences at every iteration it keeps, ends near GaussianTCQBook's
// error (within 1%: both are near the optimum on 32768 values), keeps
// the book ascending and symmetric, and gives the same book when run
// again (the parts' sums are added in part order, not as goroutines end).
func TestTrainLowersError(t *testing.T) {
	tr, _ := quant.NewTrellis(8)
	const b = 2
	g, err := quant.GaussianTCQBook(tr, b)
	if err != nil {
		t.Fatal(err)
	}
	var start books
	for _, v := range g {
		start[b] = append(start[b], 1.5*v)
	}
	seqs := gaussianSequences(64, 32768, 0, 9)
	_, e0 := encodeAll(tr, start, seqs, b)
	cfg := trainConfig{maxIters: 30, tol: 1e-6, symmetric: true}
	got, e, it := train(tr, start, seqs, b, cfg)
	var ref books
	ref[b] = g
	_, eg := encodeAll(tr, ref, seqs, b)
	t.Logf("MSE %.5f from %.5f in %d iterations; GaussianTCQBook %.5f", e, e0, it, eg)
	if !(e < e0) || e > 1.01*eg {
		t.Errorf("trained MSE %.5f: want below the start's %.5f and within 1%% of %.5f", e, e0, eg)
	}
	if !slices.IsSorted(got[b]) || math.Abs(got[b][0]+got[b][len(got[b])-1]) > 0 {
		t.Errorf("trained book %v: not ascending and symmetric", got[b])
	}
	again, _, _ := train(tr, start, seqs, b, cfg)
	if !slices.Equal(again[b], got[b]) {
		t.Errorf("a second training gave %v, first %v", again[b], got[b])
	}
}
