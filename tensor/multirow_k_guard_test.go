//go:build linux

package tensor

import (
	"fmt"
	"math/rand/v2"
	"os"
	"syscall"
	"testing"
)

// guarded returns a slice of n bytes that ends where an inaccessible page
// begins, so that a kernel reading or writing one byte past it faults.
func guarded(t *testing.T, n int) []byte {
	t.Helper()
	page := os.Getpagesize()
	size := (n + page - 1) / page * page
	mem, err := syscall.Mmap(-1, 0, size+page, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Skipf("mmap: %v", err)
	}
	t.Cleanup(func() { syscall.Munmap(mem) })
	if err := syscall.Mprotect(mem[size:], syscall.PROT_NONE); err != nil {
		t.Skipf("mprotect: %v", err)
	}
	return mem[size-n : size : size]
}

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
						gw := guarded(t, len(w))
						copy(gw, w)
						gb := guarded(t, len(p.b))
						copy(gb, p.b)
						p.b = gb
						got := guarded(t, 4*n*rows)
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
