//go:build amd64 && !purego

package quant

//go:noescape
func expandCodesAVX512(dst *float32, rowLen int, n int, groups int, table *[16]float32, codes *byte, stride int, b int, ctrl *[64]byte)

// expandCodesFast runs the AVX-512 expansion where the CPU has it and d
// is a multiple of 16, leaving to the Go twin the last codes, whose
// 8-byte loads would run past the end of codes.
func expandCodesFast(dst []float32, rowLen, col, d int, table *[16]float32, codes []byte, n, stride, off, b int) {
	if !simd.avx512 || d%16 != 0 || n == 0 {
		expandCodesGo(dst, rowLen, col, d, table, codes, n, stride, off, b)
		return
	}
	end := off + 2 + d/8*b + 7 // bytes the kernel may touch in one code
	m := n
	for m > 0 && (m-1)*stride+end > len(codes) {
		m--
	}
	if m < n {
		expandCodesGo(dst[m*rowLen:], rowLen, col, d, table, codes[m*stride:], n-m, stride, off, b)
	}
	if m == 0 {
		return
	}
	_ = codes[(m-1)*stride+end-1]
	_ = dst[(m-1)*rowLen+col+d-1]
	var rep [16]float32
	for k := range rep {
		rep[k] = table[k&(1<<b-1)]
	}
	var ctrl [64]byte
	for k := range 8 {
		ctrl[8*k] = byte(2 * k * b)
		ctrl[8*k+4] = byte((2*k + 1) * b)
	}
	expandCodesAVX512(&dst[col], rowLen, m, d/16, &rep, &codes[off], stride, b, &ctrl)
}

//go:noescape
func dotCodesGroup4AVX512(dst *float32, n int, q *float32, groups int, table *[16]float32, codes *byte, stride int, b int, ctrl *[64]byte, flags int)

// hasGroup4 reports whether dotCodesGroup4 has a SIMD kernel.
func hasGroup4() bool { return simd.avx512 }

// dotCodesGroup4 scores n scaled codes against four queries interleaved
// by 16-coordinate group (see dotCodesGroup4Go), on the AVX-512 kernel,
// leaving to the Go twin the last codes, whose 8-byte loads would run
// past the end of codes.
func dotCodesGroup4(dst, qi []float32, d int, table *[16]float32, codes []byte, n, stride, off, b int, add bool) {
	if !simd.avx512 || d%16 != 0 || n == 0 {
		dotCodesGroup4Go(dst, qi, d, table, codes, n, stride, off, b, add)
		return
	}
	end := off + 2 + d/8*b + 7
	m := n
	for m > 0 && (m-1)*stride+end > len(codes) {
		m--
	}
	if m < n {
		dotCodesGroup4Go(dst[4*m:], qi, d, table, codes[m*stride:], n-m, stride, off, b, add)
	}
	if m == 0 {
		return
	}
	_ = codes[(m-1)*stride+end-1]
	_ = dst[4*m-1]
	_ = qi[4*d-1]
	var rep [16]float32
	for k := range rep {
		rep[k] = table[k&(1<<b-1)]
	}
	var ctrl [64]byte
	for k := range 8 {
		ctrl[8*k] = byte(2 * k * b)
		ctrl[8*k+4] = byte((2*k + 1) * b)
	}
	flags := 0
	if add {
		flags = 1
	}
	dotCodesGroup4AVX512(&dst[0], m, &qi[0], d/16, &rep, &codes[off], stride, b, &ctrl, flags)
}

//go:noescape
func accCodes4AVX512(acc *[4]*float32, w *[4]*float32, n int, groups int, table *[16]float32, codes *byte, idx int, stride int, b int, ctrl *[64]byte)

// accCodes4 adds n scaled codes' index groups g and (if acc has 32
// values) g+1, weighted per head, to four heads' sums (see accCodes4Go),
// on the AVX-512 kernel, leaving to the Go twin the last codes, whose
// 8-byte loads would run past the end of codes.
func accCodes4(acc, w *[4][]float32, table *[16]float32, codes []byte, n, stride, off, g, b int) {
	groups := len(acc[0]) / 16
	if !simd.avx512 || n == 0 || groups < 1 || groups > 2 || len(acc[0]) != 16*groups {
		accCodes4Go(acc, w, table, codes, n, stride, off, g, b)
		return
	}
	idx := 2 + g*2*b
	end := off + idx + (groups-1)*2*b + 8 // bytes the kernel may touch in one code
	m := n
	for m > 0 && (m-1)*stride+end > len(codes) {
		m--
	}
	if m < n {
		var wr [4][]float32
		for j := range wr {
			wr[j] = w[j][m:]
		}
		accCodes4Go(acc, &wr, table, codes[m*stride:], n-m, stride, off, g, b)
	}
	if m == 0 {
		return
	}
	_ = codes[(m-1)*stride+end-1]
	var pa, pw [4]*float32
	for j := range 4 {
		pa[j] = &acc[j][:16*groups][0]
		pw[j] = &w[j][:m][0]
	}
	var rep [16]float32
	for k := range rep {
		rep[k] = table[k&(1<<b-1)]
	}
	var ctrl [64]byte
	for k := range 8 {
		ctrl[8*k] = byte(2 * k * b)
		ctrl[8*k+4] = byte((2*k + 1) * b)
	}
	accCodes4AVX512(&pa, &pw, m, groups, &rep, &codes[off], idx, stride, b, &ctrl)
}
