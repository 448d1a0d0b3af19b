package compact

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/turbomem/turbomem/tensor"
)

// TestCholesky: the blocked Cholesky factorisation and its solve against
// gonum's mat.Cholesky (Factorize, Cond, SolveTo): the same factor,
// solution and condition estimate within float64 rounding, the same
// verdict on matrices that are not positive definite or conditioned
// beyond maxGramCond, and the same bits on one thread and several; for
// sizes around the block boundaries, one right-hand side and many.
func TestCholesky(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	type matrix struct {
		name string
		t, c int
		// kind: "gram" (XᵀX of exp-scores, n = 2t rows), "ill" (a Gram
		// matrix with two columns of X equal but for 1e-7), "indef"
		// (a Gram matrix less 2 on one diagonal entry past the first
		// block), "zero" (a zero row and column).
		kind string
	}
	var cases []matrix
	for _, n := range []int{1, 5, cholBlock - 1, cholBlock, cholBlock + 1, 2*cholBlock + 7, 200} {
		for _, c := range []int{1, 7, 128} {
			cases = append(cases, matrix{"gram", n, c, "gram"})
		}
	}
	cases = append(cases, matrix{"ill", 100, 16, "ill"}, matrix{"indefinite", 100, 3, "indef"}, matrix{"zero", 60, 3, "zero"})
	for _, x := range cases {
		t.Run(fmt.Sprintf("%s/t=%d,c=%d", x.name, x.t, x.c), func(t *testing.T) {
			n := 2 * x.t
			xm := mat.NewDense(n, x.t, nil)
			for i := range n {
				for j := range x.t {
					if r.IntN(4) > 0 {
						xm.Set(i, j, r.ExpFloat64())
					}
				}
			}
			if x.kind == "ill" {
				for i := range n {
					xm.Set(i, 7, xm.At(i, 3)*(1+1e-7*r.NormFloat64()))
				}
			}
			if x.kind == "zero" {
				for i := range n {
					xm.Set(i, x.t/2, 0)
				}
			}
			var gd mat.Dense
			gd.Mul(xm.T(), xm)
			g := gd.RawMatrix().Data
			if x.kind == "indef" {
				k := cholBlock + 3
				g[k*x.t+k] -= 2 * g[k*x.t+k]
			}
			b := make([]float64, x.t*x.c)
			for i := range b {
				b[i] = r.NormFloat64()
			}
			s := mat.NewSymDense(x.t, slices.Clone(g))
			var want mat.Cholesky
			wantOK := want.Factorize(s)
			wantAccept := wantOK && !(want.Cond() > maxGramCond)
			var wantX mat.Dense
			if wantOK {
				_ = want.SolveTo(&wantX, mat.NewDense(x.t, x.c, slices.Clone(b)))
			}
			var first []float64
			for _, threads := range []int{1, 3, 4} {
				var pool *tensor.Pool
				if threads > 1 {
					pool = tensor.NewPool(threads)
					defer pool.Close()
				}
				ch, ok := factorCholesky(slices.Clone(g), x.t, pool)
				if ok != wantOK {
					t.Fatalf("%d threads: factored %v, gonum %v", threads, ok, wantOK)
				}
				got := choleskySolve(g, b, x.t, x.c, 0, math.Inf(1), pool)
				if (got != nil) != wantAccept {
					t.Fatalf("%d threads: solved %v, gonum %v (condition %.3g)", threads, got != nil, wantAccept, want.Cond())
				}
				if !ok || !wantAccept {
					continue // rounding decides the numbers
				}
				if c, w := ch.cond(), want.Cond(); !(math.Abs(c-w) <= 1e-6*w) {
					t.Errorf("%d threads: condition %.10g, gonum %.10g", threads, c, w)
				}
				var u mat.TriDense
				want.UTo(&u)
				for i := range x.t {
					for j := i; j < x.t; j++ {
						if d := math.Abs(ch.u[i*x.t+j] - u.At(i, j)); d > 1e-12*math.Sqrt(g[j*x.t+j]) {
							t.Fatalf("%d threads: U[%d][%d] = %v, gonum %v", threads, i, j, ch.u[i*x.t+j], u.At(i, j))
						}
					}
				}
				if got == nil {
					continue
				}
				tol := 1e-15 * want.Cond() * 10 * float64(x.t)
				xs := wantX.RawMatrix().Data
				scale := 0.0
				for _, v := range xs {
					scale = math.Max(scale, math.Abs(v))
				}
				for i, v := range got {
					if d := math.Abs(v - xs[i]); d > tol*scale {
						t.Fatalf("%d threads: X[%d] = %v, gonum %v", threads, i, v, xs[i])
					}
				}
				if first == nil {
					first = got
				} else if !slices.Equal(got, first) {
					t.Errorf("%d threads: other bits than one thread's", threads)
				}
			}
		})
	}
}

// gonumCholeskySolve is choleskySolve by gonum's mat.Cholesky: the
// reference the benchmarks compare with.
func gonumCholeskySolve(g, b []float64, t, c int) []float64 {
	var ch mat.Cholesky
	if !ch.Factorize(mat.NewSymDense(t, slices.Clone(g))) || ch.Cond() > maxGramCond {
		return nil
	}
	var x mat.Dense
	if err := ch.SolveTo(&x, mat.NewDense(t, c, slices.Clone(b))); err != nil {
		return nil
	}
	return x.RawMatrix().Data
}
