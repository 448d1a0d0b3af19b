//go:build !amd64 || purego

package tensor

// Without assembly the hot kernels are their pure-Go versions.

// SIMDLevel names the instruction set the hot kernels use ("avx2" or
// "purego"), for benchmark reports.
func SIMDLevel() string { return "purego" }

func dotF32(w, x []float32) float32               { return dotF32Go(w, x) }
func dotF16(w []uint16, x []float32) float32      { return dotF16Go(w, x) }
func dotRowQ8_0(w []byte, a *activation) float32  { return dotRowQ8_0Go(w, a) }
func dotRowQ4_K(w []byte, a *activation) float32  { return dotRowQ4_KGo(w, a) }
func dotRowQ4_0(w []byte, a *activation) float32  { return dotRowQ4_0Go(w, a) }
func dotRowQ6_K(w []byte, a *activation) float32  { return dotRowQ6_KGo(w, a) }
func dotRowTQ2_0(w []byte, a *activation) float32 { return dotRowTQ2_0Go(w, a) }
func dotRowQ2_K(w []byte, a *activation) float32  { return dotRowQ2_KGo(w, a) }
func dotRowQ3_K(w []byte, a *activation) float32  { return dotRowQ3_KGo(w, a) }
func dotRowQ5_K(w []byte, a *activation) float32  { return dotRowQ5_KGo(w, a) }
func dotRowTQ1_0(w []byte, a *activation) float32 { return dotRowTQ1_0Go(w, a) }

func axpyF32(y []float32, a float32, x []float32) { axpyF32Go(y, a, x) }
func axpyF16(y []float32, a float32, w []uint16)  { axpyF16Go(y, a, w) }
func fromF16(dst []float32, src []uint16)         { fromF16Go(dst, src) }
func toF16(dst []uint16, src []float32)           { toF16Go(dst, src) }

func dotRowsF16(dst, q []float32, rows []uint16)     { dotRowsF16Go(dst, q, rows) }
func dotRowsF32(dst, q, rows []float32)              { dotRowsF32Go(dst, q, rows) }
func weightedSumF16(acc, w []float32, rows []uint16) { weightedSumF16Go(acc, w, rows) }
func weightedSumF32(acc, w, rows []float32)          { weightedSumF32Go(acc, w, rows) }

func dotRowQ8_0x4(w []byte, a *[4]*activation, out *[4]float32) { dotRowQ8_0x4Go(w, a, out) }

func dotRowsQ8_0x4(w []byte, rowBytes int, a *activation, out *[4]float32) {
	dotRowsQ8_0x4Go(w, rowBytes, a, out)
}

func dotRowsF16R4(w []byte, rowBytes int, a *activation, out *[4]float32) {
	dotRowsF16R4Go(w, rowBytes, a, out)
}

func dequantQ8_0Fast(dst []float32, src []byte) { dequantQ8_0(dst, src) }

func quantActQ8_0(qs []int8, d, x []float32) { quantActQ8_0Go(qs, d, x) }

func quantActQ8_K(qs []int8, d []float32, bsums []int16, x []float32) {
	quantActQ8_KGo(qs, d, bsums, x)
}

// SwiGLU sets g[i] = silu(g[i])·u[i], silu(z) = z·σ(z) = z/(1 + e^−z), the
// gated activation of llama's feed-forward layers.
func SwiGLU(g, u []float32)                     { swiGLUGo(g, u) }
func dequantQ4_0Fast(dst []float32, src []byte) { dequantQ4_0(dst, src) }

// hasGEMM is false without assembly: MatMul keeps to the row kernels.
const hasGEMM = false

func gemmKernel(p *gemmPanel, g *gemmActs, steps int, out *[gemmRows * gemmCols]float32) {
	gemmKernelGo(p, g, steps, out)
}

func dotRowsF16x4(dst []float32, stride, n int, q []float32, rows []uint16) {
	dotRowsF16x4Go(dst, stride, n, q, rows)
}

func weightedSumF16x4(acc *[4][]float32, w []float32, stride, n int, rows []uint16) {
	weightedSumF16x4Go(acc, w, stride, n, rows)
}

// scalesGather needs the assembly: the Go loop runs instead.
func scalesGather(dw []float32, w []byte, rowBytes, blocks int) bool { return false }
