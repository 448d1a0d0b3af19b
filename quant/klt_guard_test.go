//go:build linux && amd64 && !purego

package quant

import (
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/turbomem/turbomem/internal/guardpage"
)

// guardedF32 is guardpage.Bytes for n float32s.
func guardedF32(t *testing.T, n int) []float32 {
	return unsafe.Slice((*float32)(unsafe.Pointer(&guardpage.Bytes(t, 4*n)[0])), n)
}

// TestKLTLanesStayInCodes: the lane kernels touch nothing past the codes,
// weights and score rows they are given: each count's codes, each head's
// weights and each query's scores end where a page that cannot be read
// or written begins (an access past them would fault), on each kernel the
// CPU has; the results as
// TestKLTScoreQueries and TestKLTAccumulator check them there, here only
// the accesses.
func TestKLTLanesStayInCodes(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, kn := range kltKernels() {
		t.Run(kn.name, func(t *testing.T) {
			useKernel(t, kn.avx2)
			for _, c := range kltCases(t) {
				k := c.k
				for _, n := range kltCounts {
					codes := guardpage.Bytes(t, n*k.Bytes())
					copy(codes, kltCodes(t, r, k, n))
					qs := rows(5, k.Dim())
					var p KLTQueries
					if err := k.PrepareQueries(&p, qs); err != nil {
						t.Fatal(err)
					}
					dst := make([][]float32, 5)
					for j := range dst {
						dst[j] = guardedF32(t, n)
					}
					if err := k.ScoreQueries(dst, &p, codes); err != nil {
						t.Fatal(err)
					}
					ws := make([][]float32, 5)
					for h := range ws {
						ws[h] = guardedF32(t, n)
					}
					a := newKLTAcc(k, true)
					a.Accumulate(rows(5, a.AccLen()), ws, codes)
				}
			}
		})
	}
}
