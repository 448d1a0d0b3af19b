package quant

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// maxTable holds the Gaussian Lloyd–Max quantizers for unit variance
// (Max 1960; docs/ALGORITHMS.md §2): positive centroids and the
// MSE per coordinate.
var maxTable = []struct {
	bits      int
	centroids []float64
	mse       float64
}{
	{1, []float64{0.7979}, 0.3634},
	{2, []float64{0.4528, 1.5104}, 0.1175},
	{3, []float64{0.2451, 0.7560, 1.3440, 2.1520}, 0.03454},
	{4, []float64{0.1284, 0.3881, 0.6568, 0.9424, 1.2562, 1.6181, 2.0690, 2.7326}, 0.009497},
}

func TestLloydMaxGaussianMatchesMax(t *testing.T) {
	for _, d := range []int{1, 64, 128} {
		sigma := 1 / math.Sqrt(float64(d))
		for _, tt := range maxTable {
			cb, err := LloydMaxGaussian(tt.bits, sigma)
			if err != nil {
				t.Fatal(err)
			}
			half := len(cb.Centroids) / 2
			for i, want := range tt.centroids {
				// The table has 4 decimals: 1e-3 after ×√d is well above
				// rounding and far below the gap between levels.
				got := float64(cb.Centroids[half+i]) / sigma
				neg := float64(cb.Centroids[half-1-i]) / sigma
				if math.Abs(got-want) > 1e-3 || math.Abs(neg+want) > 1e-3 {
					t.Errorf("d=%d b=%d centroid %d = %.5f/%.5f, want ±%.4f", d, tt.bits, i, got, neg, want)
				}
			}
			if mse := cb.MSE / (sigma * sigma); math.Abs(mse-tt.mse)/tt.mse > 2e-3 {
				t.Errorf("d=%d b=%d MSE×d = %.6f, want %.6f", d, tt.bits, mse, tt.mse)
			}
		}
	}
}

// TestLloydMaxSphereOneBit checks the exact-density solver against the
// closed form for b = 1: the optimal centroid is E[|t|] for the sphere
// coordinate, Γ(d/2) / (√π·Γ((d+1)/2)), and the MSE is 1/d − E[|t|]².
func TestLloydMaxSphereOneBit(t *testing.T) {
	for _, d := range []int{3, 8, 64, 128, 256} {
		cb, err := LloydMax(1, d)
		if err != nil {
			t.Fatal(err)
		}
		lg1, _ := math.Lgamma(float64(d) / 2)
		lg2, _ := math.Lgamma(float64(d+1) / 2)
		want := math.Exp(lg1-lg2) / math.Sqrt(math.Pi)
		if got := float64(cb.Centroids[1]); math.Abs(got-want) > 1e-6 {
			t.Errorf("d=%d centroid = %.8f, want %.8f", d, got, want)
		}
		wantMSE := 1/float64(d) - want*want
		if math.Abs(cb.MSE-wantMSE) > 1e-6*wantMSE*float64(d) {
			t.Errorf("d=%d MSE = %.8g, want %.8g", d, cb.MSE, wantMSE)
		}
	}
}

// TestLloydMaxSphereTendsToGaussian: at large d the sphere coordinate is
// N(0, 1/d) to O(1/d), so the codebooks agree with Max's table.
func TestLloydMaxSphereTendsToGaussian(t *testing.T) {
	const d = 16384
	for _, tt := range maxTable {
		cb, err := LloydMax(tt.bits, d)
		if err != nil {
			t.Fatal(err)
		}
		half := len(cb.Centroids) / 2
		for i, want := range tt.centroids {
			if got := float64(cb.Centroids[half+i]) * math.Sqrt(d); math.Abs(got-want) > 1e-3 {
				t.Errorf("b=%d centroid %d ×√d = %.5f, want %.4f", tt.bits, i, got, want)
			}
		}
	}
}

// TestLloydMaxSphereLighterTails: docs/ALGORITHMS.md §3 — at finite d the MSE
// is 1–2% below the Gaussian limit; its table gives d·MSE per vector for
// uniform unit vectors, which the codebook's design MSE predicts.
func TestLloydMaxSphereDesignMSE(t *testing.T) {
	ref := map[int][]float64{
		64:  {0.3586, 0.1145, 0.03337, 0.00913},
		128: {0.3607, 0.1160, 0.03395, 0.00931},
		256: {0.3620, 0.1168, 0.03427, 0.00942},
	}
	for d, want := range ref {
		for b := 1; b <= 4; b++ {
			cb, err := LloydMax(b, d)
			if err != nil {
				t.Fatal(err)
			}
			// The reference is a Monte Carlo mean with ≤0.1% standard
			// error and 4 significant digits: 0.5% covers both.
			if got := cb.MSE * float64(d); math.Abs(got-want[b-1])/want[b-1] > 5e-3 {
				t.Errorf("d=%d b=%d d·MSE = %.5f, want %.5f", d, b, got, want[b-1])
			}
		}
	}
}

func TestLloydMaxHighBits(t *testing.T) {
	// Panter–Dite: at high rate the MSE of the optimal quantizer of
	// N(0,1) approaches (√3·π/2)·4^(−b) (docs/ALGORITHMS.md §3's bound);
	// at b = 8 the ratio is within 1%.
	cb, err := LloydMaxGaussian(8, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := math.Sqrt(3) * math.Pi / 2 * math.Pow(4, -8)
	if r := cb.MSE / want; r < 0.97 || r > 1.01 {
		t.Errorf("b=8 MSE = %.4g, Panter–Dite %.4g, ratio %.4f", cb.MSE, want, r)
	}
	for i := 1; i < len(cb.Centroids); i++ {
		if !(cb.Centroids[i] > cb.Centroids[i-1]) {
			t.Fatalf("centroids not increasing at %d", i)
		}
	}
}

// TestLloydMaxGaussianFixedPoint: every centroid is the mean of N(0, σ²)
// over its cell, from the closed form σ·(φ(a/σ) − φ(b/σ))/(Φ(b/σ) −
// Φ(a/σ)) computed here, to within float32 rounding, and every bound is
// its neighbours' midpoint: the Lloyd–Max conditions, met exactly (the
// solver's Newton steps reach them for 256 levels in milliseconds, where
// Lloyd's iteration alone stopped about a float32 step short).
func TestLloydMaxGaussianFixedPoint(t *testing.T) {
	for _, sigma := range []float64{1, 0.088} {
		for b := 1; b <= 8; b++ {
			cb, err := LloydMaxGaussian(b, sigma)
			if err != nil {
				t.Fatal(err)
			}
			phi := func(z float64) float64 { return math.Exp(-z*z/2) / math.Sqrt(2*math.Pi) }
			cdf := func(z float64) float64 { return 0.5 * math.Erfc(-z/math.Sqrt2) }
			n := len(cb.Centroids)
			worst := 0.0
			for i, c := range cb.Centroids {
				lo, hi := math.Inf(-1), math.Inf(1)
				if i > 0 {
					lo = (float64(cb.Centroids[i-1]) + float64(c)) / 2
				}
				if i < n-1 {
					hi = (float64(c) + float64(cb.Centroids[i+1])) / 2
				}
				mean := sigma * (phi(lo/sigma) - phi(hi/sigma)) / (cdf(hi/sigma) - cdf(lo/sigma))
				worst = math.Max(worst, math.Abs(float64(c)-mean)/sigma)
				if i > 0 && math.Abs(float64(cb.Bounds[i-1])-lo) > 4e-7*sigma {
					t.Errorf("σ=%g b=%d: bound %d = %g, midpoint %g", sigma, b, i-1, cb.Bounds[i-1], lo)
				}
			}
			// float32 centroids move the midpoints by up to an ulp, and
			// the mean with them: 4e-7 of σ is a few ulps at |c| ≤ 4σ.
			if worst > 4e-7 {
				t.Errorf("σ=%g b=%d: a centroid is %.3g σ from its cell's mean", sigma, b, worst)
			}
		}
	}
}

// TestCodebookIndex compares Index (grid lookup, or binary search for
// large codebooks) with a brute-force nearest-centroid search, on random
// values, the boundaries themselves and their float32 neighbours.
func TestCodebookIndex(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 9))
	for b := 1; b <= 8; b++ {
		cb, err := LloydMax(b, 128)
		if err != nil {
			t.Fatal(err)
		}
		vals := []float32{-10, -1, 0, 1, 10}
		for _, bd := range cb.Bounds {
			vals = append(vals, bd, math.Nextafter32(bd, -1), math.Nextafter32(bd, 1))
		}
		for range 5000 {
			vals = append(vals, float32(r.NormFloat64()*0.1))
		}
		for _, v := range vals {
			got := cb.Index(v)
			best, bestD := 0, math.Inf(1)
			for i, c := range cb.Centroids {
				if dd := math.Abs(float64(v - c)); dd < bestD {
					best, bestD = i, dd
				}
			}
			// Values on a boundary are ties up to float32 rounding.
			if math.Abs(float64(v-cb.Centroids[got])) > bestD+1e-7 {
				t.Fatalf("b=%d: Index(%g) = %d, want %d", b, v, got, best)
			}
		}
		// scaleIndex: Index of each value times inv, and the scaled
		// values, the same bits as the loop it replaces; and the same
		// indices from the codebook without its grid (the binary search),
		// which both fall back to.
		search := *cb
		search.grid = nil
		for _, inv := range []float32{1, 0.37, 3} {
			y, idx := slices.Clone(vals), make([]uint8, len(vals))
			cb.scaleIndex(idx, y, inv)
			ys, idxs := slices.Clone(vals), make([]uint8, len(vals))
			search.scaleIndex(idxs, ys, inv)
			for i, v := range vals {
				w := v * inv
				if math.Float32bits(y[i]) != math.Float32bits(w) || int(idx[i]) != cb.Index(w) {
					t.Fatalf("b=%d inv %g: scaleIndex of %g gives %g and %d, want %g and %d", b, inv, v, y[i], idx[i], w, cb.Index(w))
				}
				if math.Float32bits(ys[i]) != math.Float32bits(w) || idxs[i] != idx[i] || search.Index(w) != cb.Index(w) {
					t.Fatalf("b=%d inv %g: %g: the search gives %g and %d (Index %d), the grid %d (Index %d)", b, inv, v, ys[i], idxs[i], search.Index(w), idx[i], cb.Index(w))
				}
			}
		}
	}
}

// TestCodebookIndexGrid: Index by the grid gives the search's index (the
// codebook without its grid) for each boundary and each grid cell's
// start and their float32 neighbours, where the lookup's rounding can
// put a value a cell early or late, and for values far beyond the outer
// boundaries, where the grid's cell number would overflow an int.
func TestCodebookIndexGrid(t *testing.T) {
	for _, tt := range []struct{ bits, d int }{
		{6, 256}, // its middle boundary lies just below a cell's start
		{4, 128},
		{8, 128},
	} {
		cb, err := LloydMax(tt.bits, tt.d)
		if err != nil {
			t.Fatal(err)
		}
		if cb.grid == nil {
			t.Fatalf("b=%d d=%d: no grid", tt.bits, tt.d)
		}
		search := *cb
		search.grid = nil
		inf := float32(math.Inf(1))
		vals := []float32{inf, -inf, math.MaxFloat32, -math.MaxFloat32, 1e30, -1e30, 1e15}
		near := func(x float32) {
			lo, hi := x, x
			for range 8 {
				vals = append(vals, lo, hi)
				lo, hi = math.Nextafter32(lo, -inf), math.Nextafter32(hi, inf)
			}
		}
		for _, bd := range cb.Bounds {
			near(bd)
		}
		for i := range cb.grid {
			near(float32(float64(cb.gridLo) + float64(i)/float64(cb.gridInv)))
		}
		for _, v := range vals {
			if got, want := cb.Index(v), search.Index(v); got != want {
				t.Fatalf("b=%d d=%d: Index(%g) = %d by the grid, %d by the search", tt.bits, tt.d, v, got, want)
			}
		}
	}
}

func TestCodebookErrors(t *testing.T) {
	for _, b := range []int{0, 9} {
		if _, err := LloydMax(b, 128); err == nil {
			t.Errorf("LloydMax(%d, 128): no error", b)
		}
		if _, err := LloydMaxGaussian(b, 1); err == nil {
			t.Errorf("LloydMaxGaussian(%d): no error", b)
		}
	}
	if _, err := LloydMax(2, 2); err == nil {
		t.Error("LloydMax(2, 2): no error")
	}
	if _, err := LloydMaxGaussian(2, math.NaN()); err == nil {
		t.Error("LloydMaxGaussian(NaN sigma): no error")
	}
}
