package tensor

import (
	"math"
	"math/rand/v2"
	"testing"
)

func randFloats[T float32 | float64](r *rand.Rand, n int) []T {
	x := make([]T, n)
	for i := range x {
		x[i] = T(r.NormFloat64())
	}
	return x
}

// TestPanelsMul: C = A·B from panels packed from B and from Bᵀ equals the
// float64 product within the type's rounding (relative to Σ|a||b|), for
// shapes with whole and partial tiles and panels, strided rows, and the
// empty product, in float32 and float64; each tile kernel agrees with its
// Go twin.
func TestPanelsMul(t *testing.T) {
	t.Run("float32", func(t *testing.T) { testPanelsMul[float32](t, 1e-6) })
	t.Run("float64", func(t *testing.T) { testPanelsMul[float64](t, 1e-14) })
}

func testPanelsMul[T float32 | float64](t *testing.T, eps float64) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct{ m, k, n int }{
		{12, 128, 32}, {24, 128, 64}, {1, 7, 1}, {13, 5, 33}, {37, 130, 95}, {12, 1, 16}, {5, 0, 3}, {50, 300, 40},
	} {
		lda, ldb, ldc := c.k+3, c.n+1, c.n+5
		a := randFloats[T](r, max(c.m*lda, 1))
		b := randFloats[T](r, max(c.k*ldb, 1))
		bt := make([]T, c.n*c.k) // Bᵀ, rows of k
		for i := range c.k {
			for j := range c.n {
				bt[j*c.k+i] = b[i*ldb+j]
			}
		}
		var p, pt Panels[T]
		p.Pack(b, c.k, c.n, ldb)
		pt.PackT(bt, c.n, c.k, c.k)
		got, gotT := make([]T, c.m*ldc), make([]T, c.m*ldc)
		p.Mul(got, ldc, a, c.m, lda)
		pt.Mul(gotT, ldc, a, c.m, lda)
		for i := range c.m {
			for j := range c.n {
				var want, mag float64
				for q := range c.k {
					x := float64(a[i*lda+q]) * float64(b[q*ldb+j])
					want += x
					mag += math.Abs(x)
				}
				tol := eps * (mag + 1) * math.Sqrt(float64(c.k)+1)
				if g := float64(got[i*ldc+j]); !(math.Abs(g-want) <= tol) {
					t.Fatalf("%+v: C[%d][%d] = %g, want %g", c, i, j, g, want)
				}
				if got[i*ldc+j] != gotT[i*ldc+j] {
					t.Fatalf("%+v: C[%d][%d] %g from B, %g from Bᵀ", c, i, j, got[i*ldc+j], gotT[i*ldc+j])
				}
			}
		}
	}
	// the kernel against its twin, on one whole tile
	const k = 77
	cols := panelCols[T]()
	a, b := randFloats[T](r, panelTileRows*k), randFloats[T](r, k*cols)
	got, want := make([]T, panelTileRows*cols), make([]T, panelTileRows*cols)
	panelTile(a, k, b, k, got, cols)
	panelTileGo(a, k, b, k, want, cols)
	for i := range got {
		if math.Abs(float64(got[i]-want[i])) > 10*eps*(1+math.Abs(float64(want[i]))) {
			t.Fatalf("tile element %d: kernel %g, twin %g", i, got[i], want[i])
		}
	}
}

// BenchmarkPanelsMul times the products of compaction: a block of 48
// reference queries of dimension 128 over 4000 keys, scores (48×128 by
// 128×4000) and outputs (48×4000 by 4000×128) in float32, and the Gram
// matrix of a value fit (200×4096 by 4096×200) in float64.
func BenchmarkPanelsMul(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	const m, d, n = 48, 128, 4000
	q, keys := randFloats[float32](r, m*d), randFloats[float32](r, n*d)
	var kt, v Panels[float32]
	kt.PackT(keys, n, d, d)
	v.Pack(keys, n, d, d)
	s, y := make([]float32, m*n), make([]float32, m*d)
	const t, rows = 200, 4096
	xt := randFloats[float64](r, t*rows)
	var x Panels[float64]
	x.PackT(xt, t, rows, rows)
	g := make([]float64, t*t)
	for _, c := range []struct {
		name  string
		flops float64
		f     func()
	}{
		{"scores", 2 * m * n * d, func() { kt.Mul(s, n, q, m, d) }},
		{"outputs", 2 * m * n * d, func() { v.Mul(y, d, s, m, n) }},
		{"gram64", 2 * t * t * rows, func() { x.Mul(g, t, xt, t, rows) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				c.f()
			}
			b.ReportMetric(c.flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
