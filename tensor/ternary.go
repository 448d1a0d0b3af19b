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

// tq2Code returns the 2-bit code of element i (0..255) of a TQ2_0 block.
func tq2Code(blk *[tq2_0Bytes]byte, i int) uint8 {
	return blk[32*(i/128)+i%32] >> (2 * uint(i%128/32)) & 3
}

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

// dotRowTQ2_0 is the dot product of a TQ2_0 row with a Q8_K activation:
// per block the exact integer sum Σ (q − 1)·a = Σ q·a − Σ a (the last
// from the activation's 16-element sums), times d·d_a, as
// ggml_vec_dot_tq2_0_q8_K computes it.
func dotRowTQ2_0(w []byte, a *activation) float32 {
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

// quantTQ2_0 reproduces quantize_row_tq2_0_ref: d = max|x|, q =
// round(x/d) + 1 (halves away from zero), with 1/d in float32.
func quantTQ2_0(dst []byte, src []float32) {
	var t [QK_K]int8
	for b := range len(src) / QK_K {
		x := src[b*QK_K : (b+1)*QK_K]
		var amax float32
		for _, v := range x {
			amax = max(amax, abs32(v))
		}
		var id float32
		if amax != 0 {
			id = 1 / amax
		}
		for i, v := range x {
			t[i] = int8(roundAway(v * id))
		}
		packTQ2_0(dst[b*tq2_0Bytes:], amax, &t)
	}
}

// weightedTQ2_0 encodes blocks of 256 with the ternary levels and scale
// that minimise Σ wᵢ·(xᵢ − d·tᵢ)², tᵢ ∈ {−1, 0, 1}. For a given d the
// best tᵢ is sign(xᵢ) where |xᵢ| > d/2 and 0 elsewhere, so the best
// encoding keeps the k elements of largest magnitude for some k; for
// that set S the best d is Σ_S wᵢ|xᵢ| / Σ_S wᵢ and the error
// Σ wᵢxᵢ² − (Σ_S wᵢ|xᵢ|)² / Σ_S wᵢ. Every k is tried: the search is
// exact. The fp16 rounding of d and its two neighbours are then tried,
// each with its levels re-thresholded, and the best stored block kept.
func weightedTQ2_0(dst []byte, x, imp []float32) {
	var w [QK_K]float64
	var order [QK_K]uint8
	var t, bestT [QK_K]int8
	for b := range len(x) / QK_K {
		xb := x[b*QK_K : (b+1)*QK_K]
		blockWeights(w[:], imp[b*QK_K:(b+1)*QK_K])
		for i := range order {
			order[i] = uint8(i)
		}
		slices.SortFunc(order[:], func(i, j uint8) int {
			ai, aj := abs32(xb[i]), abs32(xb[j])
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
			sa += w[i] * math.Abs(float64(xb[i]))
			sw += w[i]
			if g := sa * sa / sw; g > bestGain {
				bestGain, bestD = g, sa/sw
			}
		}
		d := half.F32ToF16(float32(min(bestD, 65504)))
		bestErr := math.Inf(1)
		var bestDF float32
		for _, c := range [3]half.F16{d, d - 1, d + 1} {
			df := half.F16ToF32(c)
			if !(df >= 0) || math.IsInf(float64(df), 0) || c&0x8000 != 0 {
				continue
			}
			var e float64
			for i, v := range xb {
				t[i] = 0
				if a := abs32(v); df != 0 && a > df/2 {
					t[i] = 1
					if v < 0 {
						t[i] = -1
					}
				}
				r := float64(v) - float64(float32(t[i])*df)
				e += w[i] * r * r
			}
			if e < bestErr {
				bestErr, bestDF, bestT = e, df, t
			}
		}
		packTQ2_0(dst[b*tq2_0Bytes:], bestDF, &bestT)
	}
}
