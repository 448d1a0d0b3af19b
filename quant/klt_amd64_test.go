//go:build amd64 && !purego

package quant

import "testing"

// TestKLTLanes512: where the CPU has AVX-512 the KLT lane kernels are
// the AVX-512 ones (so that the twin tests run them there), and
// kltAVX2Only turns them to the AVX2 ones.
func TestKLTLanes512(t *testing.T) {
	if got, want := hasKLTLanes512(), simd.avx2 && simd.avx512; got != want {
		t.Fatalf("hasKLTLanes512() = %v on a CPU with AVX2 %v, AVX-512 %v", got, simd.avx2, simd.avx512)
	}
	if kernels := kltKernels(); simd.avx512 && (len(kernels) != 2 || kernels[0].name != "avx512") {
		t.Fatalf("kernels tested: %v, want avx512 and avx2", kernels)
	}
	k := kltCases(t)[0].k
	if a := newKLTAcc(k, true); a.wide != hasKLTLanes512() {
		t.Fatalf("accumulator on the AVX-512 kernel: %v, want %v", a.wide, hasKLTLanes512())
	}
	useKernel(t, true)
	if hasKLTLanes512() || newKLTAcc(k, true).wide {
		t.Fatal("kltAVX2Only: still the AVX-512 kernels")
	}
	t.Logf("AVX2 %v, AVX-512 %v", simd.avx2, simd.avx512)
}
