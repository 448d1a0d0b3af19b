//go:build amd64 && !purego

package tensor

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
