package compact

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/turbomem/turbomem/tensor"
)

// TestGram: the Gram matrix of the normal equations, its upper blocks
// computed and the lower ones copied, is the whole product XᵀX bit for
// bit (the one product of X packed whole) and, within float64 rounding,
// the sums of products taken one by one; on one thread and on a pool,
// for block counts of one to several, blocks whole and cut short.
func TestGram(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, x := range []struct{ t, n, threads int }{
		{1, 5, 1}, {7, 3, 1}, {47, 30, 1}, {48, 100, 3}, {49, 64, 3}, {130, 257, 1}, {130, 257, 4}, {200, 41, 2},
	} {
		t.Run(fmt.Sprintf("t=%d,n=%d,threads=%d", x.t, x.n, x.threads), func(t *testing.T) {
			xt := make([]float64, x.t*x.n)
			for i := range xt {
				if r.IntN(4) > 0 { // exp-scores: non-negative, some zero
					xt[i] = r.ExpFloat64()
				}
			}
			var pool *tensor.Pool
			if x.threads > 1 {
				pool = tensor.NewPool(x.threads)
				defer pool.Close()
			}
			p := &normal{t: x.t, n: x.n, xt: xt, pool: pool}
			g := p.gram()
			var whole tensor.Panels[float64]
			whole.PackT(xt, x.t, x.n, x.n)
			want := p.product(&whole)
			for i := range x.t {
				for j := range x.t {
					if g[i*x.t+j] != want[i*x.t+j] {
						t.Fatalf("G[%d][%d] = %v, the whole product %v", i, j, g[i*x.t+j], want[i*x.t+j])
					}
					var s float64
					for k := range x.n {
						s += xt[i*x.n+k] * xt[j*x.n+k]
					}
					if d := math.Abs(g[i*x.t+j] - s); d > 1e-13*float64(x.n)*math.Max(1, math.Abs(s)) {
						t.Fatalf("G[%d][%d] = %v, the sum of products %v", i, j, g[i*x.t+j], s)
					}
				}
			}
		})
	}
}

// TestLstsqConditioning: least squares without a ridge solves a full-rank
// matrix whose columns differ in size by 10⁸ (a key the queries attend
// little is not a rounding direction), and refuses one whose two columns
// differ by a float32 rounding, or a zero column.
func TestLstsqConditioning(t *testing.T) {
	const m, k = 40, 5
	r := rand.New(rand.NewPCG(31, 32))
	base := make([]float64, m*k)
	for i := range base {
		base[i] = r.Float64() + 0.1
	}
	tests := []struct {
		name string
		edit func(a *mat.Dense)
		ok   bool
	}{
		{"well posed", func(*mat.Dense) {}, true},
		{"small column", func(a *mat.Dense) {
			for i := range m {
				a.Set(i, 2, a.At(i, 2)*1e-8)
			}
		}, true},
		{"rounding twin", func(a *mat.Dense) {
			for i := range m {
				v := float32(a.At(i, 0))
				a.Set(i, 3, float64(math.Nextafter32(v, 2*v)))
			}
		}, false},
		{"zero column", func(a *mat.Dense) {
			for i := range m {
				a.Set(i, 1, 0)
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := mat.NewDense(m, k, slices.Clone(base))
			tt.edit(a)
			want := mat.NewDense(k, 1, []float64{1, -2, 3, 0.5, -1})
			var b mat.Dense
			b.Mul(a, want)
			x, err := lstsq(a, &b, 0, math.Inf(1))
			if !tt.ok {
				if !errors.Is(err, errIllConditioned) {
					t.Fatalf("got %v, want an ill-conditioned error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for j := range k {
				if d := math.Abs(x.At(j, 0) - want.At(j, 0)); d > 1e-6*math.Abs(want.At(j, 0)) {
					t.Errorf("x[%d] = %g, want %g", j, x.At(j, 0), want.At(j, 0))
				}
			}
		})
	}
}
