//go:build amd64 && !purego

package tensor

import "golang.org/x/sys/cpu"

// hasAVX2 selects the assembly kernels; it is read-only after package
// initialisation. The pure-Go twins run where it is false and are what
// the tests compare the assembly against.
var hasAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA && cpu.X86.HasF16C

// SIMDLevel names the instruction set the hot kernels use ("avx2" or
// "purego"), for benchmark reports.
func SIMDLevel() string {
	if hasAVX2 {
		return "avx2"
	}
	return "purego"
}

//go:noescape
func dotF32AVX2(w, x *float32, n int) float32

//go:noescape
func dotF16AVX2(w *uint16, x *float32, n int) float32

//go:noescape
func dotQ8_0AVX2(w *byte, xq *int8, xd *float32, nb int) float32

func dotF32(w, x []float32) float32 {
	n := len(w) &^ 31
	if !hasAVX2 || n == 0 {
		return dotF32Go(w, x)
	}
	x = x[:len(w)]
	return dotF32AVX2(&w[0], &x[0], n) + dotF32Go(w[n:], x[n:])
}

func dotF16(w []uint16, x []float32) float32 {
	n := len(w) &^ 31
	if !hasAVX2 || n == 0 {
		return dotF16Go(w, x)
	}
	x = x[:len(w)]
	return dotF16AVX2(&w[0], &x[0], n) + dotF16Go(w[n:], x[n:])
}

func dotRowQ8_0(w []byte, a *activation) float32 {
	nb := len(w) / q8_0Bytes
	if !hasAVX2 || nb == 0 {
		return dotRowQ8_0Go(w, a)
	}
	_ = a.qs[nb*qk0-1]
	_ = a.d[nb-1]
	return dotQ8_0AVX2(&w[0], &a.qs[0], &a.d[0], nb)
}

// kernelK32 is an AVX2 row kernel of a 256-element block type that takes
// the Q8_K activation's sums per 32 elements (Q4_K, Q5_K, TQ1_0, TQ2_0).
type kernelK32 func(w *byte, xq *int8, xd *float32, bs *int32, nb int) float32

// kernelK16 is one that takes the sums per 16 elements (Q2_K, Q3_K).
type kernelK16 func(w *byte, xq *int8, xd *float32, bs *int16, nb int) float32

// dotRowK32 is the dot product of the row w of blocks of blockBytes with
// a: asm where AVX2 is present (its bounds checked once here), goTwin
// elsewhere and for an empty row.
func dotRowK32(w []byte, a *activation, blockBytes int, asm kernelK32, goTwin func([]byte, *activation) float32) float32 {
	nb := len(w) / blockBytes
	if !hasAVX2 || nb == 0 {
		return goTwin(w, a)
	}
	_ = a.qs[nb*QK_K-1]
	_ = a.d[nb-1]
	_ = a.bsum32[nb*8-1]
	return asm(&w[0], &a.qs[0], &a.d[0], &a.bsum32[0], nb)
}

// dotRowK16 is dotRowK32 for the kernels of the sums per 16 elements.
func dotRowK16(w []byte, a *activation, blockBytes int, asm kernelK16, goTwin func([]byte, *activation) float32) float32 {
	nb := len(w) / blockBytes
	if !hasAVX2 || nb == 0 {
		return goTwin(w, a)
	}
	_ = a.qs[nb*QK_K-1]
	_ = a.d[nb-1]
	_ = a.bsums[nb*16-1]
	return asm(&w[0], &a.qs[0], &a.d[0], &a.bsums[0], nb)
}

func dotRowQ4_K(w []byte, a *activation) float32 {
	return dotRowK32(w, a, q4_KBytes, dotQ4_KFullAVX2, dotRowQ4_KGo)
}

func dotRowQ5_K(w []byte, a *activation) float32 {
	return dotRowK32(w, a, q5_KBytes, dotQ5_KFullAVX2, dotRowQ5_KGo)
}

func dotRowTQ1_0(w []byte, a *activation) float32 {
	return dotRowK32(w, a, tq1_0Bytes, dotTQ1_0AVX2, dotRowTQ1_0Go)
}

func dotRowTQ2_0(w []byte, a *activation) float32 {
	return dotRowK32(w, a, tq2_0Bytes, dotTQ2_0AVX2, dotRowTQ2_0Go)
}

func dotRowQ2_K(w []byte, a *activation) float32 {
	return dotRowK16(w, a, q2_KBytes, dotQ2_KAVX2, dotRowQ2_KGo)
}

func dotRowQ3_K(w []byte, a *activation) float32 {
	return dotRowK16(w, a, q3_KBytes, dotQ3_KAVX2, dotRowQ3_KGo)
}

//go:noescape
func dotQ2_KAVX2(w *byte, xq *int8, xd *float32, bs *int16, nb int) float32

//go:noescape
func dotQ3_KAVX2(w *byte, xq *int8, xd *float32, bs *int16, nb int) float32

//go:noescape
func dotTQ1_0AVX2(w *byte, xq *int8, xd *float32, bs *int32, nb int) float32

//go:noescape
func dotTQ2_0AVX2(w *byte, xq *int8, xd *float32, bs *int32, nb int) float32

//go:noescape
func dotQ5_KFullAVX2(w *byte, xq *int8, xd *float32, bs *int32, nb int) float32

//go:noescape
func dotQ4_KFullAVX2(w *byte, xq *int8, xd *float32, bs *int32, nb int) float32

//go:noescape
func dotQ4_0AVX2(w *byte, xq *int8, xd *float32, nb int) float32

//go:noescape
func dotQ6_KAVX2(w *byte, xq *int8, sc *int16, d *float32, nb int) float32

func dotRowQ4_0(w []byte, a *activation) float32 {
	nb := len(w) / q4_0Bytes
	if !hasAVX2 || nb == 0 {
		return dotRowQ4_0Go(w, a)
	}
	_ = a.qs[nb*qk0-1]
	_ = a.d[nb-1]
	return dotQ4_0AVX2(&w[0], &a.qs[0], &a.d[0], nb)
}

// q6KChunk is how many Q6_K blocks dotRowQ6_K prepares (scales widened,
// scale products, the -32 offset terms) before handing them to the
// assembly.
const q6KChunk = 16

func dotRowQ6_K(w []byte, a *activation) float32 {
	nb := len(w) / q6_KBytes
	if !hasAVX2 || nb == 0 {
		return dotRowQ6_KGo(w, a)
	}
	_ = a.qs[nb*QK_K-1]
	var sc [16 * q6KChunk]int16
	var dd [q6KChunk]float32
	var sum float32
	for b0 := 0; b0 < nb; b0 += q6KChunk {
		n := min(q6KChunk, nb-b0)
		var offset float32
		for i := range n {
			b := b0 + i
			blk := (*[q6_KBytes]byte)(w[b*q6_KBytes:])
			bs := (*[16]int16)(a.bsums[b*16:])
			s := (*[16]byte)(blk[192:208])
			var corr int32
			for g := range 16 {
				v := int16(int8(s[g]))
				sc[16*i+g] = v
				corr += int32(v) * int32(bs[g])
			}
			dd[i] = f16Scale(blk[208:]) * a.d[b]
			offset += dd[i] * float32(32*corr)
		}
		sum += dotQ6_KAVX2(&w[b0*q6_KBytes], &a.qs[b0*QK_K], &sc[0], &dd[0], n) - offset
	}
	return sum
}

//go:noescape
func dotQ8_0x4AVX2(w *byte, xq *[4]*int8, xd *[4]*float32, nb int, out *[4]float32)

// dotRowQ8_0x4 is dotRowQ8_0 for four activations at once (prefill).
func dotRowQ8_0x4(w []byte, a *[4]*activation, out *[4]float32) {
	nb := len(w) / q8_0Bytes
	if !hasAVX2 || nb == 0 {
		dotRowQ8_0x4Go(w, a, out)
		return
	}
	var xq [4]*int8
	var xd [4]*float32
	for k, ak := range a {
		_ = ak.qs[nb*qk0-1]
		_ = ak.d[nb-1]
		xq[k], xd[k] = &ak.qs[0], &ak.d[0]
	}
	dotQ8_0x4AVX2(&w[0], &xq, &xd, nb, out)
}

//go:noescape
func dequantQ8_0AVX2(dst *float32, src *byte, nb int)

//go:noescape
func dequantQ4_0AVX2(dst *float32, src *byte, nb int)

func dequantQ8_0Fast(dst []float32, src []byte) {
	dequantBlocks(dst, src, q8_0Bytes, dequantQ8_0AVX2, dequantQ8_0)
}

func dequantQ4_0Fast(dst []float32, src []byte) {
	dequantBlocks(dst, src, q4_0Bytes, dequantQ4_0AVX2, dequantQ4_0)
}

// dequantBlocks decodes the whole blocks of 32 elements in src with the
// assembly kernel asm, or with its Go twin where AVX2 is missing.
func dequantBlocks(dst []float32, src []byte, blockBytes int, asm func(*float32, *byte, int), twin func([]float32, []byte)) {
	nb := len(src) / blockBytes
	if !hasAVX2 || nb == 0 {
		twin(dst, src)
		return
	}
	_ = dst[nb*qk0-1]
	asm(&dst[0], &src[0], nb)
}

//go:noescape
func dotQ8_0R4AVX2(w *byte, stride int, xq *int8, xd *float32, nb int, out *[4]float32)

//go:noescape
func dotQ8_0R4VNNI(w *byte, stride int, xq *int8, xd *float32, nb int, out *[4]float32)

// hasVNNI selects the AVX-512 VNNI decode kernels (which give the AVX2
// kernels' bits); read-only after initialisation.
var hasVNNI = hasAVX2 && hasGEMM

// dotRowsQ8_0x4 is dotRowQ8_0 for the four rows of w (rowBytes each)
// against one activation (decode).
func dotRowsQ8_0x4(w []byte, rowBytes int, a *activation, out *[4]float32) {
	nb := rowBytes / q8_0Bytes
	if !hasAVX2 || nb == 0 {
		dotRowsQ8_0x4Go(w, rowBytes, a, out)
		return
	}
	_ = w[4*rowBytes-1]
	_ = a.qs[nb*qk0-1]
	_ = a.d[nb-1]
	if hasVNNI {
		dotQ8_0R4VNNI(&w[0], rowBytes, &a.qs[0], &a.d[0], nb, out)
		return
	}
	dotQ8_0R4AVX2(&w[0], rowBytes, &a.qs[0], &a.d[0], nb, out)
}

//go:noescape
func dotF16R4AVX512(w *uint16, stride int, x *float32, n int, out *[4]float32)

// dotRowsF16R4 is dotRowF16 for the four rows of w (rowBytes each)
// against one activation (decode): the AVX-512 kernel for the multiple
// of 32 elements, the Go twin for the rest of each row, as dotF16 adds
// them.
func dotRowsF16R4(w []byte, rowBytes int, a *activation, out *[4]float32) {
	n := rowBytes / 2 &^ 31
	if !hasAVX512VL || n == 0 {
		dotRowsF16R4Go(w, rowBytes, a, out)
		return
	}
	_ = w[4*rowBytes-1]
	x := a.f32[:rowBytes/2]
	dotF16R4AVX512(&bytesAsU16(w)[0], rowBytes, &x[0], n, out)
	if n < len(x) {
		for r := range out {
			out[r] += dotF16Go(bytesAsU16(w[r*rowBytes : (r+1)*rowBytes])[n:], x[n:])
		}
	}
}

// scalesQ8_0AVX2 writes dw[b·16+m] = the fp16 scale of block b of row m
// (rowBytes bytes apart from w) for 16 rows and blocks blocks.
//
//go:noescape
func scalesQ8_0AVX2(dw *float32, w *byte, rowBytes, blocks int)

// scalesGather is panelScalesQ8_0 for a whole panel (16 rows) on AVX2
// gathers; it reports false, doing nothing, where it cannot run.
func scalesGather(dw []float32, w []byte, rowBytes, blocks int) bool {
	if !hasAVX2 || rowBytes*amxRows >= 1<<31 || blocks*q8_0Bytes > rowBytes {
		return false
	}
	scalesQ8_0AVX2(&dw[0], &w[0], rowBytes, blocks)
	return true
}

//go:noescape
func fromF16AVX2(dst *float32, src *uint16, n int)

//go:noescape
func toF16AVX2(dst *uint16, src *float32, n int)

func toF16(dst []uint16, src []float32) {
	src = src[:len(dst)]
	n := len(dst) &^ 7
	if !hasAVX2 || n == 0 {
		toF16Go(dst, src)
		return
	}
	toF16AVX2(&dst[0], &src[0], n)
	toF16Go(dst[n:], src[n:])
}

func fromF16(dst []float32, src []uint16) {
	src = src[:len(dst)]
	n := len(dst) &^ 7
	if !hasAVX2 || n == 0 {
		fromF16Go(dst, src)
		return
	}
	fromF16AVX2(&dst[0], &src[0], n)
	fromF16Go(dst[n:], src[n:])
}
