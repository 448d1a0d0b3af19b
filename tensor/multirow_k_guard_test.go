//go:build linux

package tensor

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/turbomem/turbomem/internal/guardpage"
)

// TestDotKRowsGuardPage: the K-quant multi-row products read no byte past
// the weights or the pack and write none past the outputs, each placed
// against an inaccessible page (a fault kills the test), for one and
// several rows, one and several blocks, and 1, 5 and 16 vectors; and
// give what they give on ordinary slices.
func TestDotKRowsGuardPage(t *testing.T) {
	r := rand.New(rand.NewPCG(29, 30))
	for _, k := range multiKTypes {
		for _, rows := range []int{1, 3} {
			for _, cols := range []int{QK_K, 3 * QK_K} {
				for _, n := range []int{1, 5, multiRows} {
					t.Run(fmt.Sprintf("%s/rows=%d/cols=%d/n=%d", k.ty, rows, cols, n), func(t *testing.T) {
						w, acts, _ := gemmSetup(t, r, k.ty, rows, cols, n)
						rowBytes := len(w) / rows
						var p multiPack
						p.set(actQ8_K, acts, cols)
						want := make([]float32, n*rows)
						k.kernel(w, rowBytes, rows, &p, want, rows)
						gw := guardpage.Bytes(t, len(w))
						copy(gw, w)
						gb := guardpage.Bytes(t, len(p.b))
						copy(gb, p.b)
						p.b = gb
						got := guardpage.Bytes(t, 4*n*rows)
						out := bytesAsF32(got)
						k.kernel(gw, rowBytes, rows, &p, out, rows)
						for i := range want {
							if out[i] != want[i] {
								t.Errorf("out[%d] = %g against the guard page, %g without", i, out[i], want[i])
							}
						}
					})
				}
			}
		}
	}
}
