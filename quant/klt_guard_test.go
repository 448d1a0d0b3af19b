//go:build linux && amd64 && !purego

package quant

import (
	"math/rand/v2"
	"syscall"
	"testing"
	"unsafe"
)

// guarded returns n bytes that end where a page that cannot be read
// begins (unmapped when the test ends).
func guarded(t *testing.T, n int) []byte {
	t.Helper()
	page := syscall.Getpagesize()
	pages := (n+page-1)/page + 1
	mem, err := syscall.Mmap(-1, 0, pages*page, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	t.Cleanup(func() { syscall.Munmap(mem) })
	end := (pages - 1) * page
	if err := syscall.Mprotect(mem[end:], syscall.PROT_NONE); err != nil {
		t.Fatalf("mprotect: %v", err)
	}
	return mem[end-n : end : end]
}

// TestKLTLanesStayInCodes: the lane kernels read nothing past the codes
// and the weights they are given: each count's codes, and each head's
// weights, end where a page that cannot be read begins (a read past them
// would fault), on each kernel the CPU has; the results as
// TestKLTScoreQueries and TestKLTAccumulator check them there, here only
// the reads.
func TestKLTLanesStayInCodes(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, kn := range kltKernels() {
		t.Run(kn.name, func(t *testing.T) {
			useKernel(t, kn.avx2)
			for _, c := range kltCases(t) {
				k := c.k
				for _, n := range kltCounts {
					codes := guarded(t, n*k.Bytes())
					copy(codes, kltCodes(t, r, k, n))
					qs := rows(5, k.Dim())
					var p KLTQueries
					if err := k.PrepareQueries(&p, qs); err != nil {
						t.Fatal(err)
					}
					if err := k.ScoreQueries(rows(5, n), &p, codes); err != nil {
						t.Fatal(err)
					}
					ws := make([][]float32, 5)
					for h := range ws {
						ws[h] = unsafe.Slice((*float32)(unsafe.Pointer(&guarded(t, 4*n)[0])), n)
					}
					a := newKLTAcc(k, true)
					a.Accumulate(rows(5, a.AccLen()), ws, codes)
				}
			}
		})
	}
}
