//go:build amd64 && !purego

package tensor

import "golang.org/x/sys/cpu"

//go:noescape
func axpyF32AVX2(y *float32, a float32, x *float32, n int)

//go:noescape
func axpyF16AVX2(y *float32, a float32, w *uint16, n int)

func axpyF32(y []float32, a float32, x []float32) {
	n := len(y) &^ 15
	if !hasAVX2 || n == 0 {
		axpyF32Go(y, a, x)
		return
	}
	x = x[:len(y)]
	axpyF32AVX2(&y[0], a, &x[0], n)
	axpyF32Go(y[n:], a, x[n:])
}

func axpyF16(y []float32, a float32, w []uint16) {
	n := len(y) &^ 15
	if !hasAVX2 || n == 0 {
		axpyF16Go(y, a, w)
		return
	}
	w = w[:len(y)]
	axpyF16AVX2(&y[0], a, &w[0], n)
	axpyF16Go(y[n:], a, w[n:])
}

//go:noescape
func dotRowsF16AVX2(dst *float32, n int, q *float32, d int, rows *uint16)

//go:noescape
func dotRowsF32AVX2(dst *float32, n int, q *float32, d int, rows *float32)

//go:noescape
func weightedSumF16AVX2(acc *float32, d int, w *float32, n int, rows *uint16)

//go:noescape
func weightedSumF32AVX2(acc *float32, d int, w *float32, n int, rows *float32)

func dotRowsF16(dst, q []float32, rows []uint16) {
	if !hasAVX2 || len(q)%32 != 0 || len(dst) == 0 {
		dotRowsF16Go(dst, q, rows)
		return
	}
	dotRowsF16AVX2(&dst[0], len(dst), &q[0], len(q), &rows[0])
}

func dotRowsF32(dst, q, rows []float32) {
	if !hasAVX2 || len(q)%32 != 0 || len(dst) == 0 {
		dotRowsF32Go(dst, q, rows)
		return
	}
	dotRowsF32AVX2(&dst[0], len(dst), &q[0], len(q), &rows[0])
}

func weightedSumF16(acc, w []float32, rows []uint16) {
	if !hasAVX2 || len(acc)%32 != 0 || len(w) == 0 {
		weightedSumF16Go(acc, w, rows)
		return
	}
	weightedSumF16AVX2(&acc[0], len(acc), &w[0], len(w), &rows[0])
}

func weightedSumF32(acc, w, rows []float32) {
	if !hasAVX2 || len(acc)%32 != 0 || len(w) == 0 {
		weightedSumF32Go(acc, w, rows)
		return
	}
	weightedSumF32AVX2(&acc[0], len(acc), &w[0], len(w), &rows[0])
}

// hasAVX512VL selects the four-query fp16 attention kernels, which keep
// sixteen 16-lane accumulators in Z16-Z31.
var hasAVX512VL = hasAVX2 && cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL

//go:noescape
func dotRowsF16x4AVX512(dst *float32, stride int, n int, q *float32, d int, rows *uint16)

//go:noescape
func weightedSumF16x4AVX512(acc *[4]*float32, w *float32, wstride int, n int, rows *uint16, d int)

func dotRowsF16x4(dst []float32, stride, n int, q []float32, rows []uint16) {
	d := len(q) / 4
	if !hasAVX512VL || d%32 != 0 {
		dotRowsF16x4Go(dst, stride, n, q, rows)
		return
	}
	dotRowsF16x4AVX512(&dst[0], stride, n, &q[0], d, &rows[0])
}

func weightedSumF16x4(acc *[4][]float32, w []float32, stride, n int, rows []uint16) {
	d := len(acc[0])
	if !hasAVX512VL || d%32 != 0 {
		weightedSumF16x4Go(acc, w, stride, n, rows)
		return
	}
	a := [4]*float32{&acc[0][0], &acc[1][0], &acc[2][0], &acc[3][0]}
	weightedSumF16x4AVX512(&a, &w[0], stride, n, &rows[0], d)
}
