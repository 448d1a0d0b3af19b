package tensor

import (
	"math"
	"slices"

	"github.com/turbomem/turbomem/half"
)

// TQ2_0: ternary weights, x = d·(q − 1) with q in {0, 1, 2}, in blocks of
// QK_K = 256 elements: 64 bytes of 2-bit codes, then the fp16 scale d
// (ggml-common.h, block_tq2_0: 2.0625 bits per weight). Byte m of each
// 32-byte half h holds elements 128h + 32l + m in its bits 2l, 2l+1
// (l = 0..3): the same interleaving as Q2_K's codes. Code 3 decodes to
// 2·d (llama.cpp's reference dequantizer computes (q − 1)·d for any q),
// but llama.cpp's AVX2 dot product assumes it never occurs, so no
// quantizer here writes it.
const tq2_0Bytes = 66

// dequantTQ2_0: x = d·(q − 1), rounded to float32 once, as
// dequantize_row_tq2_0 does.
func dequantTQ2_0(dst []float32, src []byte) {
	for b := range len(src) / tq2_0Bytes {
		blk := (*[tq2_0Bytes]byte)(src[b*tq2_0Bytes:])
		y := (*[QK_K]float32)(dst[b*QK_K:])
		d := f16At(blk[64:])
		for h := range 2 {
			q := (*[32]byte)(blk[32*h:])
			for l := range 4 {
				shift := uint(2 * l)
				out := (*[32]float32)(y[128*h+32*l:])
				for m := range 32 {
					out[m] = float32(int32(q[m]>>shift&3)-1) * d
				}
			}
		}
	}
}

// dotRowTQ2_0Go is the dot product of a TQ2_0 row with a Q8_K activation:
// per block the exact integer sum Σ (q − 1)·a = Σ q·a − Σ a (the last
// from the activation's 16-element sums), times d·d_a, as
// ggml_vec_dot_tq2_0_q8_K computes it.
// (dotRowTQ2_0 runs it, or its assembly twin where the CPU has AVX2.)
func dotRowTQ2_0Go(w []byte, a *activation) float32 {
	var sum float32
	for b := range len(w) / tq2_0Bytes {
		blk := (*[tq2_0Bytes]byte)(w[b*tq2_0Bytes:])
		q8 := (*[QK_K]int8)(a.qs[b*QK_K:])
		var isum int32
		for h := range 2 {
			q := (*[32]byte)(blk[32*h:])
			for l := range 4 {
				shift := uint(2 * l)
				y := (*[32]int8)(q8[128*h+32*l:])
				for m := range 32 {
					isum += int32(q[m]>>shift&3) * int32(y[m])
				}
			}
		}
		for _, s := range a.bsums[b*16 : b*16+16] {
			isum -= int32(s)
		}
		d := a.d[b] * f16Scale(blk[64:])
		sum += float32(float32(isum) * d)
	}
	return sum
}

// packTQ2_0 writes a TQ2_0 block from its ternary levels t (−1, 0, 1)
// and scale d.
func packTQ2_0(blk []byte, d float32, t *[QK_K]int8) {
	b := (*[tq2_0Bytes]byte)(blk)
	clear(b[:64])
	for i, v := range t {
		b[32*(i/128)+i%32] |= uint8(v+1) << (2 * uint(i%128/32))
	}
	putF16(b[64:], d)
}

// fitTernary finds the ternary levels t (−1, 0, 1) and the fp16 scale d
// that minimise Σ wᵢ·(xᵢ − d·tᵢ)² over one block of 256, and returns d.
// For a given d the best tᵢ is sign(xᵢ) where |xᵢ| > d/2 and 0 elsewhere,
// so the best encoding keeps the k elements of largest magnitude for
// some k; for that set S the best d is Σ_S wᵢ|xᵢ| / Σ_S wᵢ and the error
// Σ wᵢxᵢ² − (Σ_S wᵢ|xᵢ|)² / Σ_S wᵢ. Every k is tried: the search is
// exact. The fp16 rounding of d and its two neighbours are then tried,
// each with its levels re-thresholded, and the best stored block kept.
// order is scratch.
func fitTernary(x []float32, w []float64, t *[QK_K]int8, order *[QK_K]uint8) float32 {
	for i := range order {
		order[i] = uint8(i)
	}
	slices.SortFunc(order[:], func(i, j uint8) int {
		ai, aj := abs32(x[i]), abs32(x[j])
		switch {
		case ai > aj:
			return -1
		case ai < aj:
			return 1
		}
		return 0
	})
	var sa, sw, bestGain, bestD float64
	for _, i := range order {
		sa += w[i] * math.Abs(float64(x[i]))
		sw += w[i]
		if g := sa * sa / sw; g > bestGain {
			bestGain, bestD = g, sa/sw
		}
	}
	d := half.F32ToF16(float32(min(bestD, 65504)))
	bestErr := math.Inf(1)
	var bestDF float32
	var cand [QK_K]int8
	*t = cand
	for _, c := range [3]half.F16{d, d - 1, d + 1} {
		df := half.F16ToF32(c)
		if !(df >= 0) || math.IsInf(float64(df), 0) || c&0x8000 != 0 {
			continue
		}
		var e float64
		for i, v := range x {
			cand[i] = 0
			if a := abs32(v); df != 0 && a > df/2 {
				cand[i] = 1
				if v < 0 {
					cand[i] = -1
				}
			}
			r := float64(v) - float64(float32(cand[i])*df)
			e += w[i] * r * r
		}
		if e < bestErr {
			bestErr, bestDF, *t = e, df, cand
		}
	}
	return bestDF
}

// refTernary sets t to llama.cpp's reference ternary levels of one block
// (quantize_row_tq*_0_ref): d = max|x|, t = round(x/d) (halves away from
// zero), with 1/d in float32; it returns d.
func refTernary(x []float32, t *[QK_K]int8) float32 {
	var amax float32
	for _, v := range x {
		amax = max(amax, abs32(v))
	}
	var id float32
	if amax != 0 {
		id = 1 / amax
	}
	for i, v := range x {
		// |v·id| ≤ 1 for finite blocks; NaN and ±Inf (which make amax
		// NaN or ∞) still get a level.
		switch r := roundAway(v * id); {
		case r >= 1:
			t[i] = 1
		case r <= -1:
			t[i] = -1
		default:
			t[i] = 0
		}
	}
	return amax
}

// ternaryKernels returns the reference and the importance-weighted block
// quantizers of a ternary type of bs bytes per block, written by pack.
func ternaryKernels(bs int, pack func(blk []byte, d float32, t *[QK_K]int8)) (ref func(dst []byte, src []float32), weighted func(dst []byte, x, imp []float32)) {
	ref = func(dst []byte, src []float32) {
		var t [QK_K]int8
		for b := range len(src) / QK_K {
			d := refTernary(src[b*QK_K:(b+1)*QK_K], &t)
			pack(dst[b*bs:(b+1)*bs], d, &t)
		}
	}
	weighted = func(dst []byte, x, imp []float32) {
		var w [QK_K]float64
		var order [QK_K]uint8
		var t [QK_K]int8
		for b := range len(x) / QK_K {
			blockWeights(w[:], imp[b*QK_K:(b+1)*QK_K])
			d := fitTernary(x[b*QK_K:(b+1)*QK_K], w[:], &t, &order)
			pack(dst[b*bs:(b+1)*bs], d, &t)
		}
	}
	return ref, weighted
}

var (
	quantTQ2_0, weightedTQ2_0 = ternaryKernels(tq2_0Bytes, packTQ2_0)
	quantTQ1_0, weightedTQ1_0 = ternaryKernels(tq1_0Bytes, packTQ1_0)
)

// TQ1_0: ternary weights, x = d·(q − 1), in blocks of 256 packed five to
// a byte in base 3 (ggml-common.h, block_tq1_0: qs[48], qh[4], then the
// fp16 d: 54 bytes, 1.6875 bits per weight). A byte holding codes
// c₀…c₄ (c₀ the most significant trit) stores ⌈256·Σ cₙ·3^(4−n) / 243⌉;
// code n comes back as ((byte·3ⁿ mod 256)·3) >> 8. Element order: codes
// n of qs[0:32] are elements 32n + m, of qs[32:48] elements 160 + 16n + m,
// and the four codes of qh[j] (the fifth is 0) elements 240 + 4n + j.
const tq1_0Bytes = 54

// tq1Place returns the byte of a TQ1_0 block that holds element i and the
// code's place n in it.
func tq1Place(i int) (byteIdx int, n int) {
	switch {
	case i < 160:
		return i % 32, i / 32
	case i < 240:
		return 32 + (i-160)%16, (i - 160) / 16
	}
	return 48 + (i-240)%4, (i - 240) / 4
}

// tq1Pow3 are the multipliers that bring code n of a TQ1_0 byte to the
// top.
var tq1Pow3 = [5]uint8{1, 3, 9, 27, 81}

// tq1Levels decodes the ternary levels (q − 1) of one TQ1_0 block.
func tq1Levels(blk *[tq1_0Bytes]byte, t *[QK_K]int8) {
	for i := range t {
		b, n := tq1Place(i)
		q := blk[b] * tq1Pow3[n]
		t[i] = int8((uint16(q)*3)>>8) - 1
	}
}

// dequantTQ1_0: x = d·(q − 1), as dequantize_row_tq1_0 computes it.
func dequantTQ1_0(dst []float32, src []byte) {
	var t [QK_K]int8
	for b := range len(src) / tq1_0Bytes {
		blk := (*[tq1_0Bytes]byte)(src[b*tq1_0Bytes:])
		d := f16At(blk[52:])
		tq1Levels(blk, &t)
		y := (*[QK_K]float32)(dst[b*QK_K:])
		for i, v := range t {
			y[i] = float32(v) * d
		}
	}
}

// dotRowTQ1_0Go is the dot product of a TQ1_0 row with a Q8_K activation:
// the exact integer sum Σ (q − 1)·a per block, times d·d_a. (dotRowTQ1_0
// runs it, or its assembly twin where the CPU has AVX2.)
func dotRowTQ1_0Go(w []byte, a *activation) float32 {
	var sum float32
	var t [QK_K]int8
	for b := range len(w) / tq1_0Bytes {
		blk := (*[tq1_0Bytes]byte)(w[b*tq1_0Bytes:])
		q8 := (*[QK_K]int8)(a.qs[b*QK_K:])
		tq1Levels(blk, &t)
		var isum int32
		for i, v := range t {
			isum += int32(v) * int32(q8[i])
		}
		d := a.d[b] * f16Scale(blk[52:])
		sum += float32(float32(isum) * d)
	}
	return sum
}

// packTQ1_0 writes a TQ1_0 block from its ternary levels t and scale d.
func packTQ1_0(blk []byte, d float32, t *[QK_K]int8) {
	b := (*[tq1_0Bytes]byte)(blk)
	var acc [52]uint16
	for i, v := range t {
		j, n := tq1Place(i)
		acc[j] += uint16(v+1) * uint16(tq1Pow3[4-n])
	}
	for j, q := range acc {
		b[j] = uint8((q*256 + 242) / 243)
	}
	putF16(b[52:], d)
}
