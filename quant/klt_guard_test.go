//go:build linux && amd64 && !purego

package quant

import (
	"math/rand/v2"
	"syscall"
	"testing"
)

// TestKLTLanesStayInCodes: the lane kernels read nothing past the codes
// they are given: each count's codes end where a page that cannot be
// read begins (a read past them would fault), on each kernel the CPU
// has; the results as TestKLTScoreQueries and TestKLTAccumulator check
// them there, here only the reads.
func TestKLTLanesStayInCodes(t *testing.T) {
	page := syscall.Getpagesize()
	mem, err := syscall.Mmap(-1, 0, 64*page, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	defer syscall.Munmap(mem)
	if err := syscall.Mprotect(mem[63*page:], syscall.PROT_NONE); err != nil {
		t.Fatalf("mprotect: %v", err)
	}
	r := rand.New(rand.NewPCG(7, 8))
	for _, kn := range kltKernels() {
		t.Run(kn.name, func(t *testing.T) {
			useKernel(t, kn.avx2)
			for _, c := range kltCases(t) {
				k := c.k
				for _, n := range kltCounts {
					if n*k.Bytes() > 63*page {
						continue
					}
					codes := mem[63*page-n*k.Bytes() : 63*page : 63*page]
					copy(codes, kltCodes(t, r, k, n))
					qs := rows(5, k.Dim())
					var p KLTQueries
					if err := k.PrepareQueries(&p, qs); err != nil {
						t.Fatal(err)
					}
					if err := k.ScoreQueries(rows(5, n), &p, codes); err != nil {
						t.Fatal(err)
					}
					a := newKLTAcc(k, true)
					a.Accumulate(rows(5, a.AccLen()), rows(5, n), codes)
				}
			}
		})
	}
}
