//go:build amd64 && !purego

package quant

//go:noescape
func kltScore4AVX2(dst *float32, blocks int, codes *byte, stride int, segs *kltSeg, nsegs int, q *float32, tr *byte)

//go:noescape
func kltAcc4AVX2(accs *[4]*float32, w *float32, pairs int, codes *byte, stride int, segs *kltSeg, nsegs int, tr *byte, last int)

//go:noescape
func kltScore4AVX512(dst *[4]*float32, base *[4]float32, rho *float32, blocks int, codes *byte, stride int, segs *kltSeg, nsegs int, q *float32, tr *byte)

//go:noescape
func kltAcc4AVX512(accs *[4]*float32, ws *[4]*float32, rho *float32, blocks int, codes *byte, stride int, segs *kltSeg, nsegs int, tr *byte)

// hasKLTLanes reports whether the KLT lane kernels (klt_amd64.s) run.
func hasKLTLanes() bool { return simd.avx2 }

// hasKLTLanes512 reports whether they are the AVX-512 ones, sixteen
// codes a pass (unless kltAVX2Only).
func hasKLTLanes512() bool { return simd.avx2 && simd.avx512 && !kltAVX2Only }
