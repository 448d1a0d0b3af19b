package tensor

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestExp: Exp against math.Exp over [−87.3, 88.3] within 4 float32 ulps
// (4.8e-7 relative; Cephes quotes 2), and clamped outside; SwiGLU against
// z·σ(z)·u in float64 within the same relative bound plus the rounding
// of its three float32 operations.
func TestExp(t *testing.T) {
	for i := range 400001 {
		x := float32(-87.3 + (88.3+87.3)*float64(i)/400000)
		got, want := float64(Exp(x)), math.Exp(float64(x))
		if math.Abs(got-want) > 4.8e-7*want {
			t.Fatalf("Exp(%g) = %g, want %g", x, got, want)
		}
	}
	if Exp(-1000) > 1.3e-38 || Exp(1000) != Exp(88.3) || math.IsInf(float64(Exp(1000)), 1) {
		t.Errorf("clamps: Exp(-1000) = %g, Exp(1000) = %g", Exp(-1000), Exp(1000))
	}
	zs := []float32{-200, -30, -3, -0.5, 0, 1e-3, 0.7, 5, 40, 300}
	g := append([]float32(nil), zs...)
	u := make([]float32, len(zs))
	for i := range u {
		u[i] = float32(i) - 3.5
	}
	SwiGLU(g, u)
	for i, z := range zs {
		want := float64(z) / (1 + math.Exp(-float64(z))) * float64(u[i])
		if math.Abs(float64(g[i])-want) > 1e-6*math.Abs(want)+1e-30 {
			t.Errorf("SwiGLU(%g, %g) = %g, want %g", z, u[i], g[i], want)
		}
	}
}

// TestSwiGLUTwin: SwiGLU (assembly where the CPU has AVX-512) gives the
// bits of its Go twin, on lengths with and without a tail and on values
// past both clamps of Exp.
func TestSwiGLUTwin(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{1, 15, 16, 33, 1280, 1283} {
		g := make([]float32, n)
		u := make([]float32, n)
		for i := range g {
			g[i] = float32(r.NormFloat64() * 4)
			u[i] = float32(r.NormFloat64())
			if i%97 == 5 {
				g[i] *= 40 // beyond ±87.3 now and then
			}
		}
		g[0] = 0
		want := append([]float32(nil), g...)
		swiGLUGo(want, u)
		SwiGLU(g, u)
		for i := range g {
			if math.Float32bits(g[i]) != math.Float32bits(want[i]) {
				t.Fatalf("n=%d: element %d: %g, twin %g", n, i, g[i], want[i])
			}
		}
	}
}
