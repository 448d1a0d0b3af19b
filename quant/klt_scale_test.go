package quant

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func sq(x float64) float64 { return x * x }

// TestKLTScaleFit: the scale byte the encoder stores is, for the indices
// it stores, the one of least error among all 255 (brute force through
// Decode: each byte decoded, its error measured in the transformed basis
// with the coder's weights, as fitScale's sums do not), and the code is
// never worse than the code at the RMS byte where the search starts. The
// vectors: correlated Gaussian ones, some with one component 6σ out (the
// vectors a wider codebook serves), norms from e⁻⁴ to e⁴ times the
// calibration's, and one at the offset (the all-zero code); scalar and
// trellis codes, with and without weights, at 2.5 and 3.5 bits.
func TestKLTScaleFit(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	const d = 64
	cov, mean := correlated(r, d, -3, 1)
	wcov, _ := correlated(r, d, -2, 2)
	for _, c := range []struct {
		bpc     float64
		trellis int
		weight  []float64
	}{{2.5, 0, nil}, {3.5, 0, nil}, {2.5, 8, nil}, {3.5, 8, nil}, {3.5, 0, wcov}, {2.5, 8, wcov}} {
		name := fmt.Sprintf("%g bits/trellis %d/weighted %v", c.bpc, c.trellis, c.weight != nil)
		p, err := DesignWeightedKLT(cov, c.weight, mean, d, 8*(KLTBytes(d, c.bpc)-1), 3)
		if err != nil {
			t.Fatal(err)
		}
		p.Trellis = c.trellis
		k, err := NewKLT(p)
		if err != nil {
			t.Fatal(err)
		}
		xs := drawGaussian(r, cov, mean, 300)
		for v := range 300 {
			x := xs[v*d : (v+1)*d]
			for i := range x {
				x[i] = float32(mean[i]) + (x[i]-float32(mean[i]))*float32(math.Exp(8*(float64(v)/299-0.5)))
			}
			if v%3 == 0 {
				i := r.IntN(d)
				x[i] += float32(6 * math.Sqrt(cov[i*d+i]) * math.Exp(8*(float64(v)/299-0.5)))
			}
		}
		copy(xs[:d], f32s(mean)) // at the offset: ρ = 0 up to rounding
		code, old := make([]byte, k.Bytes()), make([]byte, k.Bytes())
		dec, y := make([]float32, d), make([]float32, d)
		// weighted error in the transformed basis, from the decoded vector
		errOf := func(x []float32, code []byte) float64 {
			if err := k.Decode(dec, code); err != nil {
				t.Fatal(err)
			}
			var s float64
			for i := range d {
				var dy float64
				for j := range d {
					dy += float64(p.Transform[i*d+j]) * (float64(x[j]) - float64(dec[j]))
				}
				w := 1.0
				if p.Weight != nil {
					w = float64(p.Weight[i])
				}
				s += w * dy * dy
			}
			return s
		}
		var sumNew, sumOld float64
		for v := range 300 {
			x := xs[v*d : (v+1)*d]
			if err := k.Encode(code, x); err != nil {
				t.Fatal(err)
			}
			got := errOf(x, code)
			// Decoding rounds to float32 (relative 6e-8 a coordinate):
			// 1e-5 of the vector's weighted energy covers its sums.
			var energy float64
			k.apply(y, x)
			for i := range d {
				w := 1.0
				if p.Weight != nil {
					w = float64(p.Weight[i])
				}
				energy += w * sq(float64(y[i]))
			}
			tol := 1e-5*energy + 1e-12
			if code[0] == 0 {
				if v != 0 {
					t.Fatalf("%s vector %d: scale byte 0", name, v)
				}
				continue
			}
			e0 := code[0]
			bestE, best := byte(0), math.Inf(1)
			for e := 1; e <= 255; e++ {
				code[0] = byte(e)
				if er := errOf(x, code); er < best {
					bestE, best = byte(e), er
				}
			}
			if got > best+tol {
				t.Fatalf("%s vector %d: scale byte %d, error %g; byte %d has %g", name, v, e0, got, bestE, best)
			}
			k.apply(y, x)
			for i := range y {
				y[i] -= k.off[i]
			}
			e, _ := k.rmsByte(y)
			k.encodeAt(old, y, e)
			ref := errOf(x, old)
			if got > ref+tol {
				t.Fatalf("%s vector %d: error %g, the code at the RMS byte %d has %g", name, v, got, e, ref)
			}
			sumNew += got / energy
			sumOld += ref / energy
		}
		t.Logf("%s: relative error %.4f, at the RMS byte %.4f (%.3fx)", name, sumNew/299, sumOld/299, sumNew/sumOld)
	}
}
