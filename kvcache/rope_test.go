package kvcache

import (
	"math"
	"math/rand/v2"
	"testing"
)

// ropeCases are the layouts Rope serves: adjacent pairs (llama GGUF),
// halves (Qwen2), and a partial rotation that leaves coordinates alone.
var ropeCases = []struct {
	name   string
	d, dim int // head dimension, rotated coordinates
	halves bool
}{
	{"adjacent", 64, 64, false},
	{"halves", 64, 64, true},
	{"partial-adjacent", 64, 32, false},
	{"partial-halves", 64, 48, true},
}

func testRope(t testing.TB, d, dim int, halves bool) *Rope {
	t.Helper()
	freqs := make([]float64, dim/2)
	for i := range freqs {
		freqs[i] = math.Pow(10000, -2*float64(i)/float64(dim))
	}
	r, err := NewRope(d, freqs, halves)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRopeRotate checks Rotate against each pair's 2×2 rotation matrix
// [cos −sin; sin cos] at angle t·ω_i, written out per layout, and that
// turning back by −t undoes it.
func TestRopeRotate(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, c := range ropeCases {
		t.Run(c.name, func(t *testing.T) {
			rope := testRope(t, c.d, c.dim, c.halves)
			x := make([]float64, c.d)
			for i := range x {
				x[i] = r.NormFloat64()
			}
			for _, pos := range []int{0, 1, 7, 1000, 123457} {
				want := append([]float64(nil), x...)
				for i := range c.dim / 2 {
					a, b := 2*i, 2*i+1
					if c.halves {
						a, b = i, i+c.dim/2
					}
					th := float64(pos) * math.Pow(10000, -2*float64(i)/float64(c.dim))
					want[a] = math.Cos(th)*x[a] - math.Sin(th)*x[b]
					want[b] = math.Sin(th)*x[a] + math.Cos(th)*x[b]
				}
				got := make([]float64, c.d)
				rope.Rotate(got, x, pos)
				for i := range got {
					if math.Abs(got[i]-want[i]) > 1e-12 {
						t.Fatalf("t=%d: coordinate %d = %g, want %g", pos, i, got[i], want[i])
					}
				}
				rope.Rotate(got, got, -pos)
				for i := range got {
					if math.Abs(got[i]-x[i]) > 1e-12 {
						t.Fatalf("t=%d: turning back gives %g at %d, want %g", pos, got[i], i, x[i])
					}
				}
			}
		})
	}
}

func TestNewRopeErrors(t *testing.T) {
	for _, c := range []struct {
		d     int
		freqs []float64
	}{
		{64, nil},
		{4, []float64{1, 1, 1}},
		{64, []float64{math.NaN()}},
		{64, []float64{math.Inf(1)}},
	} {
		if _, err := NewRope(c.d, c.freqs, false); err == nil {
			t.Errorf("NewRope(%d, %v) gives no error", c.d, c.freqs)
		}
	}
}

// TestMeanScores checks the chunked, tabulated ⟨q, R_t·μ⟩ against the
// float64 product with Rotate's vector at every position, across chunk
// boundaries and far positions. Tolerance 2e-5·‖q‖‖μ‖: float32 turn
// table and products over d = 64 terms (each within 2^-24 relative, sums
// of |terms| ≤ ‖q‖‖μ‖).
func TestMeanScores(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, c := range append(ropeCases, struct {
		name   string
		d, dim int
		halves bool
	}{"none", 64, 0, false}) {
		t.Run(c.name, func(t *testing.T) {
			var rope *Rope
			if c.dim > 0 {
				rope = testRope(t, c.d, c.dim, c.halves)
			}
			mu := make([]float32, c.d)
			mu64 := make([]float64, c.d)
			for i := range mu {
				mu[i] = float32(r.NormFloat64() * 3)
				mu64[i] = float64(mu[i])
			}
			qs := make([][]float32, 3)
			var qn float64
			for j := range qs {
				qs[j] = make([]float32, c.d)
				for i := range qs[j] {
					qs[j][i] = float32(r.NormFloat64())
					qn = math.Max(qn, math.Abs(float64(qs[j][i])))
				}
			}
			tol := 2e-5 * qn * math.Sqrt(float64(c.d)) * float64(norm64(mu))
			m := make([]float64, c.d)
			for _, t0 := range []int{0, 64, 70, 99991} {
				n := 150
				dst := make([][]float32, len(qs))
				for j := range dst {
					dst[j] = make([]float32, n)
					for i := range dst[j] {
						dst[j][i] = float32(i) // added to, not overwritten
					}
				}
				rope.meanScores(dst, qs, mu, t0)
				for i := range n {
					rope.Rotate(m, mu64, t0+i)
					for j, q := range qs {
						var want float64
						for k, v := range m {
							want += float64(q[k]) * v
						}
						if got := float64(dst[j][i]) - float64(i); math.Abs(got-want) > tol {
							t.Fatalf("t=%d query %d: %g, want %g", t0+i, j, got, want)
						}
					}
				}
			}
		})
	}
}

// TestTurnSums4 compares the kernel in use with its pure-Go twin on
// random weights over 1, 7 and 128 rows. Tolerance 1e-5 of the sum of
// |terms|: fused multiply-adds round once per term, the twin twice.
func TestTurnSums4(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	for _, rows := range []int{1, 7, 128} {
		w := make([]float32, 4*rows)
		table := make([]float32, rows*ropeChunk)
		for i := range w {
			w[i] = float32(r.NormFloat64())
		}
		for i := range table {
			table[i] = float32(r.NormFloat64())
		}
		got := make([]float32, 4*ropeChunk)
		want := make([]float32, 4*ropeChunk)
		for i := range got {
			got[i] = 99 // overwritten, not added to
		}
		turnSums4(got, w, rows, table)
		turnSums4Go(want, w, rows, table)
		for q := range 4 {
			for j := range ropeChunk {
				var abs float64
				for k := range rows {
					abs += math.Abs(float64(w[q*rows+k]) * float64(table[k*ropeChunk+j]))
				}
				if i := q*ropeChunk + j; math.Abs(float64(got[i]-want[i])) > 1e-5*abs {
					t.Fatalf("rows %d, query %d, position %d: %g, twin %g", rows, q, j, got[i], want[i])
				}
			}
		}
	}
}
