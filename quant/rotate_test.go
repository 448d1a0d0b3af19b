package quant

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestHadamardMatchesSylvester checks the fast transform against the
// Hadamard matrix built by Sylvester's recursion H_2n = [[H, H], [H, −H]]
// and the stored sign diagonal: Π = (1/√d)·H·D.
func TestHadamardMatchesSylvester(t *testing.T) {
	for _, d := range []int{1, 2, 4, 8, 16, 128} {
		h, err := NewHadamard(d, 42)
		if err != nil {
			t.Fatal(err)
		}
		hm := [][]float64{{1}}
		for len(hm) < d {
			n := len(hm)
			next := make([][]float64, 2*n)
			for i := range next {
				next[i] = make([]float64, 2*n)
				for j := range next[i] {
					v := hm[i%n][j%n]
					if i >= n && j >= n {
						v = -v
					}
					next[i][j] = v
				}
			}
			hm = next
		}
		r := rand.New(rand.NewPCG(1, uint64(d)))
		x := randomVectors(r, 1, d, 1)
		got := make([]float32, d)
		h.Apply(got, x)
		for i := range d {
			var want float64
			for j := range d {
				want += hm[i][j] * float64(h.signs[0][j]) * float64(x[j])
			}
			want /= math.Sqrt(float64(d))
			if math.Abs(float64(got[i])-want) > 1e-5 {
				t.Fatalf("d=%d: (Πx)[%d] = %g, want %g", d, i, got[i], want)
			}
		}
	}
}

// TestRotationsOrthogonal: Π preserves norms and inner products, Invert
// undoes Apply, and the same seed gives the same rotation.
func TestRotationsOrthogonal(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 3))
	for _, d := range []int{3, 32, 96, 100, 128, 200} {
		for _, kind := range []RotationKind{RotateHadamard, RotateHaar} {
			rot, err := newRotation(d, Options{Seed: 9, Rotation: kind}, 1)
			if err != nil {
				t.Fatal(err)
			}
			again, _ := newRotation(d, Options{Seed: 9, Rotation: kind}, 1)
			x := randomVectors(r, 1, d, 1)
			y := randomVectors(r, 1, d, 1)
			px, py, back, px2 := make([]float32, d), make([]float32, d), make([]float32, d), make([]float32, d)
			rot.Apply(px, x)
			rot.Apply(py, y)
			again.Apply(px2, x)
			rot.Invert(back, px)
			// float32 rounding through O(log d) or O(d) operations.
			tol := 1e-4 * float64(d)
			if math.Abs(float64(dot(px, py)-dot(x, y))) > tol {
				t.Errorf("d=%d kind=%d: <Πx,Πy> = %g, <x,y> = %g", d, kind, dot(px, py), dot(x, y))
			}
			for i := range x {
				if math.Abs(float64(back[i]-x[i])) > 1e-4 {
					t.Fatalf("d=%d kind=%d: Invert(Apply(x))[%d] = %g, want %g", d, kind, i, back[i], x[i])
				}
				if px[i] != px2[i] {
					t.Fatalf("d=%d kind=%d: same seed, different rotation", d, kind)
				}
			}
		}
	}
}

// TestHaarUniform: each entry of a Haar-random orthogonal matrix has mean
// 0 and variance 1/d; the mean of a fixed entry over many draws must be
// within 4 standard errors of 0 and its variance within 10% of 1/d.
func TestHaarUniform(t *testing.T) {
	const d, draws = 8, 4000
	var s, s2 float64
	for seed := range draws {
		rot, err := NewDense(d, uint64(seed))
		if err != nil {
			t.Fatal(err)
		}
		v := float64(rot.m[0]) // entry (0, 0)
		s += v
		s2 += v * v
	}
	mean, variance := s/draws, s2/draws
	if math.Abs(mean) > 4*math.Sqrt(1.0/d/draws) {
		t.Errorf("mean of Q[0,0] = %g", mean)
	}
	if math.Abs(variance*d-1) > 0.1 {
		t.Errorf("variance of Q[0,0] ×d = %g, want 1", variance*d)
	}
}

// TestFWHTKernel: the Walsh–Hadamard butterflies on every kernel the CPU
// has give fwhtGo's float32 sums bit for bit, for every power of two up
// to 512, on values of every scale with zeros of both signs among them.
func TestFWHTKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, level := range levels() {
		for n := 1; n <= 512; n *= 2 {
			for trial := range 20 {
				x := make([]float32, n)
				for i := range x {
					x[i] = float32(r.NormFloat64() * math.Pow(10, float64(r.IntN(7)-3)))
					switch r.IntN(8) {
					case 0:
						x[i] = 0
					case 1:
						x[i] = float32(math.Copysign(0, -1))
					}
				}
				want := append([]float32(nil), x...)
				fwhtGo(want)
				got := append([]float32(nil), x...)
				fwhtAt(level, got)
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("level %d, n %d, trial %d: x[%d] = %g, fwhtGo %g", level, n, trial, i, got[i], want[i])
					}
				}
			}
		}
	}
}
