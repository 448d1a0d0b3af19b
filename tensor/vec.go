package tensor

import "github.com/turbomem/turbomem/half"

// Vector kernels on uncompressed rows, for attention over a full-precision
// KV cache: dot products of a float32 query with float32 or fp16 keys, and
// weighted sums of float32 or fp16 values. fp16 values are IEEE binary16
// bit patterns (half.F16 converts to them).

// DotF32 returns Σ a[i]·b[i] over len(a); b must be at least as long.
func DotF32(a, b []float32) float32 { return dotF32(a, b) }

// DotF16 returns Σ float32(w[i])·x[i] over len(w) for fp16 w; x must be at
// least as long.
func DotF16(w []uint16, x []float32) float32 { return dotF16(w, x) }

// AxpyF32 adds a·x[i] to y[i] over len(y); x must be at least as long.
func AxpyF32(y []float32, a float32, x []float32) { axpyF32(y, a, x) }

// AxpyF16 adds a·float32(w[i]) to y[i] over len(y) for fp16 w; w must be
// at least as long.
func AxpyF16(y []float32, a float32, w []uint16) { axpyF16(y, a, w) }

func axpyF32Go(y []float32, a float32, x []float32) {
	x = x[:len(y)]
	for i := range y {
		y[i] += a * x[i]
	}
}

func axpyF16Go(y []float32, a float32, w []uint16) {
	w = w[:len(y)]
	tab := f16Table
	for i := range y {
		y[i] += a * tab[w[i]]
	}
}

// FromF16 sets dst[i] = float32(src[i]) over len(dst) for fp16 src (every
// binary16 value is exact in float32; a signalling NaN may come out
// quiet); src must be at least as long.
func FromF16(dst []float32, src []uint16) { fromF16(dst, src) }

// ToF16 sets dst[i] to the fp16 value nearest to src[i] (ties to even;
// half.F32ToF16: beyond the fp16 range ±Inf, NaN quiet NaN) over
// len(dst), with F16C where the CPU has it; src must be at least as long.
func ToF16(dst []uint16, src []float32) { toF16(dst, src) }

func toF16Go(dst []uint16, src []float32) {
	src = src[:len(dst)]
	for i, v := range src {
		dst[i] = uint16(half.F32ToF16(v))
	}
}

func fromF16Go(dst []float32, src []uint16) {
	src = src[:len(dst)]
	tab := f16Table
	for i, v := range src {
		dst[i] = tab[v]
	}
}

// DotRowsF16 sets dst[t] = <q, rows[t·d:(t+1)·d]> for t < len(dst), for
// fp16 rows of d = len(q) elements: one pass over a head's keys.
func DotRowsF16(dst, q []float32, rows []uint16) {
	d := len(q)
	_ = rows[len(dst)*d-1]
	dotRowsF16(dst, q, rows)
}

// DotRowsF32 is DotRowsF16 for float32 rows.
func DotRowsF32(dst, q, rows []float32) {
	d := len(q)
	_ = rows[len(dst)*d-1]
	dotRowsF32(dst, q, rows)
}

// WeightedSumF16 adds Σ_t w[t]·rows[t·d:(t+1)·d] to acc, for fp16 rows of
// d = len(acc) elements: one pass over a head's values.
func WeightedSumF16(acc, w []float32, rows []uint16) {
	d := len(acc)
	_ = rows[len(w)*d-1]
	weightedSumF16(acc, w, rows)
}

// WeightedSumF32 is WeightedSumF16 for float32 rows.
func WeightedSumF32(acc, w, rows []float32) {
	d := len(acc)
	_ = rows[len(w)*d-1]
	weightedSumF32(acc, w, rows)
}

func dotRowsF16Go(dst, q []float32, rows []uint16) {
	d := len(q)
	for t := range dst {
		dst[t] = dotF16Go(rows[t*d:(t+1)*d], q)
	}
}

func dotRowsF32Go(dst, q, rows []float32) {
	d := len(q)
	for t := range dst {
		dst[t] = dotF32Go(rows[t*d:(t+1)*d], q)
	}
}

func weightedSumF16Go(acc, w []float32, rows []uint16) {
	d := len(acc)
	for t, wt := range w {
		axpyF16Go(acc, wt, rows[t*d:(t+1)*d])
	}
}

func weightedSumF32Go(acc, w, rows []float32) {
	d := len(acc)
	for t, wt := range w {
		axpyF32Go(acc, wt, rows[t*d:(t+1)*d])
	}
}

// DotRowsF16x4 sets dst[j·stride+t] = <q[j·d:(j+1)·d], row t> for the
// four queries held one after another in q (d = len(q)/4) and the first n
// fp16 rows: DotRowsF16 for the four query heads of a KV head in one pass
// over the rows (each key converted once), with the same results.
func DotRowsF16x4(dst []float32, stride, n int, q []float32, rows []uint16) {
	d := len(q) / 4
	if n == 0 {
		return
	}
	_ = dst[3*stride+n-1]
	_ = rows[n*d-1]
	dotRowsF16x4(dst, stride, n, q, rows)
}

// WeightedSumF16x4 adds Σ_t w[j·stride+t]·(row t) to acc[j] over the
// first n fp16 rows of d = len(acc[0]) elements, for four queries:
// WeightedSumF16 for the four query heads of a KV head in one pass over
// the values, with the same results.
func WeightedSumF16x4(acc *[4][]float32, w []float32, stride, n int, rows []uint16) {
	d := len(acc[0])
	if n == 0 {
		return
	}
	for _, a := range acc {
		_ = a[d-1]
	}
	_ = w[3*stride+n-1]
	_ = rows[n*d-1]
	weightedSumF16x4(acc, w, stride, n, rows)
}

func dotRowsF16x4Go(dst []float32, stride, n int, q []float32, rows []uint16) {
	d := len(q) / 4
	for j := range 4 {
		dotRowsF16(dst[j*stride:j*stride+n], q[j*d:(j+1)*d], rows)
	}
}

func weightedSumF16x4Go(acc *[4][]float32, w []float32, stride, n int, rows []uint16) {
	for j, a := range acc {
		weightedSumF16(a, w[j*stride:j*stride+n], rows)
	}
}
