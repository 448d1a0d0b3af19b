//go:build amd64 && !purego

package quant

import "golang.org/x/sys/cpu"

// The assembly kernels are chosen once from what the CPU reports; the
// pure-Go twins in kernel.go run elsewhere and are what the tests compare
// against. simd is read-only after package initialisation.
var simd = struct{ avx2, avx512 bool }{
	avx2:   cpu.X86.HasAVX2 && cpu.X86.HasFMA && cpu.X86.HasF16C,
	avx512: cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VBMI && cpu.X86.HasF16C,
}

// SIMDLevel names the scoring kernels in use ("avx512", "avx2" or
// "purego"), for benchmark reports.
func SIMDLevel() string {
	switch {
	case simd.avx512:
		return "avx512"
	case simd.avx2:
		return "avx2"
	}
	return "purego"
}

//go:noescape
func dotCodes8AVX2(dst *float32, n int, q *float32, groups int, table *[16]float32, codes *byte, stride int, b int, shifts *[8]uint32, flags int)

//go:noescape
func dotCodes16AVX2(dst *float32, n int, q *float32, groups int, table *[16]float32, codes *byte, stride int, b int, shifts *[8]uint32, flags int)

//go:noescape
func dotCodesAVX512(dst *float32, n int, q *float32, groups int, table *[16]float32, codes *byte, stride int, b int, ctrl *[64]byte, flags int)

//go:noescape
func dotCodes4AVX512(dst *float32, n int, q *float32, groups int, table *[16]float32, codes *byte, stride int, b int, ctrl *[64]byte, flags int)

//go:noescape
func dotRowsAVX512(dst *float32, n int, q *float32, d int, keys *float32)

func bestLevel() kernelLevel {
	switch {
	case simd.avx512:
		return levelAVX512
	case simd.avx2:
		return levelAVX2
	}
	return levelGo
}

func dotCodes(dst, q []float32, table *[16]float32, codes []byte, stride, off, b int, add bool) {
	dotCodesAt(bestLevel(), dst, q, table, codes, stride, off, b, add)
}

func dotCodesAt(level kernelLevel, dst, q []float32, table *[16]float32, codes []byte, stride, off, b int, add bool) {
	d := len(q)
	if level == levelGo || d%32 != 0 || len(dst) == 0 || b > 4 {
		dotCodesGo(dst, q, table, codes, stride, off, b, add)
		return
	}
	// The kernels load 4 (AVX2) or 8 (AVX-512) bytes per group: keep that
	// much slack inside codes after the last index byte, leaving the last
	// code(s) to the Go twin where there is not.
	slack := 3
	if level == levelAVX512 {
		slack = 7
	}
	end := off + 2 + d/8*b + slack // bytes the kernel may touch in one code
	n := len(dst)
	for n > 0 && (n-1)*stride+end > len(codes) {
		n--
	}
	if n < len(dst) {
		dotCodesGo(dst[n:], q, table, codes[n*stride:], stride, off, b, add)
	}
	if n == 0 {
		return
	}
	_ = codes[(n-1)*stride+end-1] // the range the assembly reads is in bounds
	flags := 0
	if add {
		flags = 1
	}
	// Replicate the table so that index bits above b, which belong to
	// the next index, select the same entry: the kernels need no mask.
	var rep [16]float32
	for k := range rep {
		rep[k] = table[k&(1<<b-1)]
	}
	switch {
	case level == levelAVX512:
		var ctrl [64]byte
		for k := range 8 {
			ctrl[8*k] = byte(2 * k * b)
			ctrl[8*k+4] = byte((2*k + 1) * b)
		}
		quads := n &^ 3
		if quads > 0 {
			dotCodes4AVX512(&dst[0], quads, &q[0], d/16, &rep, &codes[off], stride, b, &ctrl, flags)
		}
		if quads < n {
			dotCodesAVX512(&dst[quads], n-quads, &q[0], d/16, &rep, &codes[quads*stride+off], stride, b, &ctrl, flags)
		}
	case b == 4:
		shifts := laneShifts(b)
		dotCodes16AVX2(&dst[0], n, &q[0], d/8, &rep, &codes[off], stride, b, &shifts, flags)
	default:
		shifts := laneShifts(b)
		dotCodes8AVX2(&dst[0], n, &q[0], d/8, &rep, &codes[off], stride, b, &shifts, flags)
	}
}

func laneShifts(b int) [8]uint32 {
	var s [8]uint32
	for j := range s {
		s[j] = uint32(j * b)
	}
	return s
}

func dotRows(dst, q, keys []float32) { dotRowsAt(bestLevel(), dst, q, keys) }

// dotRowsAt runs the fp32 baseline scan at a kernel level: AVX-512 here,
// AVX2 (or pure Go) through package tensor's row kernel.
func dotRowsAt(level kernelLevel, dst, q, keys []float32) {
	d := len(q)
	if level != levelAVX512 || d%32 != 0 || len(dst) == 0 {
		dotRowsGo(dst, q, keys)
		return
	}
	_ = keys[len(dst)*d-1]
	dotRowsAVX512(&dst[0], len(dst), &q[0], d, &keys[0])
}

// levels lists the kernel generations this CPU runs, lowest first.
func levels() []kernelLevel {
	l := []kernelLevel{levelGo}
	if simd.avx2 {
		l = append(l, levelAVX2)
	}
	if simd.avx512 {
		l = append(l, levelAVX512)
	}
	return l
}
