package compact

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

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
