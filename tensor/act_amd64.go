//go:build amd64 && !purego

package tensor

//go:noescape
func quantQ8_0AVX512(x *float32, qs *int8, d *float32, nb int)

//go:noescape
func quantQ8_KAVX512(x *float32, qs *int8, d *float32, bsums *int16, nb int)

// quantActQ8_K quantizes the whole blocks of x into qs, d and bsums by
// the Q8_K activation rule (activation.set).
func quantActQ8_K(qs []int8, d []float32, bsums []int16, x []float32) {
	nb := len(x) / QK_K
	if !hasAVX512VL || nb == 0 {
		quantActQ8_KGo(qs, d, bsums, x)
		return
	}
	_ = qs[nb*QK_K-1]
	_ = d[nb-1]
	_ = bsums[nb*QK_K/16-1]
	quantQ8_KAVX512(&x[0], &qs[0], &d[0], &bsums[0], nb)
}

//go:noescape
func swiGLUAVX512(gs, u *float32, n int)

// quantActQ8_0 quantizes the whole blocks of x into qs and d by the Q8_0
// activation rule (activation.set).
func quantActQ8_0(qs []int8, d, x []float32) {
	nb := len(x) / qk0
	if !hasAVX512VL || nb == 0 {
		quantActQ8_0Go(qs, d, x)
		return
	}
	_ = qs[nb*qk0-1]
	_ = d[nb-1]
	quantQ8_0AVX512(&x[0], &qs[0], &d[0], nb)
}

// SwiGLU sets g[i] = silu(g[i])·u[i], silu(z) = z·σ(z) = z/(1 + e^−z), the
// gated activation of llama's feed-forward layers.
func SwiGLU(g, u []float32) {
	n := len(g) &^ 15
	if !hasAVX512VL || n == 0 {
		swiGLUGo(g, u)
		return
	}
	u = u[:len(g)]
	swiGLUAVX512(&g[0], &u[0], n)
	swiGLUGo(g[n:], u[n:])
}
