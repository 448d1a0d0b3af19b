package quant

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestAccumulatorMatchesDecode: for every kind of quantizer, the weighted
// sum from codes equals Σ wᵢ·Decode(codeᵢ), for several heads at once.
func TestAccumulatorMatchesDecode(t *testing.T) {
	const d, n = 128, 40
	split, err := NewTurboSplit(d, firstChannels(32), 4, 3, false, Options{Seed: 2, Correction: CorrectNorm})
	if err != nil {
		t.Fatal(err)
	}
	turbo, _ := NewTurboMSE(d, 3, Options{Seed: 3, Correction: CorrectNorm})
	haar, _ := NewTurboMSE(d, 2, Options{Seed: 4, Rotation: RotateHaar})
	q8, _ := NewQ8_0(d)
	polar, _ := NewPolar(d, nil, Options{Seed: 5})
	r := rand.New(rand.NewPCG(1, 2))
	for _, q := range []Quantizer{split, turbo, haar, q8, polar} {
		xs := randomVectors(r, n, d, 0.3)
		codes := make([]byte, n*q.Bytes())
		if err := q.EncodeBatch(codes, xs); err != nil {
			t.Fatal(err)
		}
		ws := [][]float32{make([]float32, n), make([]float32, n)}
		for h := range ws {
			for i := range ws[h] {
				ws[h][i] = float32(r.Float64())
			}
		}
		acc := NewAccumulator(q)
		accs := [][]float32{make([]float32, acc.AccLen()), make([]float32, acc.AccLen())}
		acc.Accumulate(accs, ws, codes)
		dec := make([]float32, d)
		for h := range ws {
			want := make([]float64, d)
			for i := range n {
				if err := q.Decode(dec, codes[i*q.Bytes():(i+1)*q.Bytes()]); err != nil {
					t.Fatal(err)
				}
				for j := range d {
					want[j] += float64(ws[h][i]) * float64(dec[j])
				}
			}
			got := make([]float32, d)
			acc.Finish(got, accs[h])
			for j := range d {
				// float32 sums of n terms and a rotation: 1e-4 relative to
				// the sum of magnitudes.
				if math.Abs(float64(got[j])-want[j]) > 1e-4*(1+math.Abs(want[j]))*float64(n)/10 {
					t.Fatalf("%s head %d coord %d: %g, want %g", q.Name(), h, j, got[j], want[j])
				}
			}
		}
	}
}
