package tensor

import (
	"encoding/binary"
	"math"
)

// Row dot products of the K-quants against a Q8_K activation: integer sums
// per sub-block, weighted by the integer sub-block scales, and the min
// terms taken from the activation's 16-element sums (bsums), as
// llama.cpp's ggml_vec_dot_q*_K_q8_K do.

// dotRowQ2_KGo: dotRowQ2_K runs it, or its assembly twin where the CPU has
// AVX2.
func dotRowQ2_KGo(w []byte, a *activation) float32 {
	var sum float32
	for b := range len(w) / q2_KBytes {
		blk := (*[q2_KBytes]byte)(w[b*q2_KBytes:])
		q8 := (*[QK_K]int8)(a.qs[b*QK_K:])
		bs := (*[16]int16)(a.bsums[b*16:])
		var isum, msum int32
		is := 0
		for n := 0; n < QK_K; n += 128 {
			q := (*[32]byte)(blk[16+n/4:])
			for j := range 4 {
				shift := uint(2 * j)
				for h := range 2 {
					y := (*[16]int8)(q8[n+32*j+16*h:])
					qq := (*[16]byte)(q[16*h:])
					var s int32
					for l := range 16 {
						s += int32(qq[l]>>shift&3) * int32(y[l])
					}
					sc := blk[is]
					isum += s * int32(sc&0xf)
					msum += int32(sc>>4) * int32(bs[is])
					is++
				}
			}
		}
		d := a.d[b]
		sum += f16Scale(blk[80:])*d*float32(isum) - f16Scale(blk[82:])*d*float32(msum)
	}
	return sum
}

// dotRowQ3_KGo: dotRowQ3_K runs it, or its assembly twin where the CPU has
// AVX2.
func dotRowQ3_KGo(w []byte, a *activation) float32 {
	var sum float32
	for b := range len(w) / q3_KBytes {
		blk := (*[q3_KBytes]byte)(w[b*q3_KBytes:])
		q8 := (*[QK_K]int8)(a.qs[b*QK_K:])
		hmask := (*[32]byte)(blk[0:])
		scales := (*[12]byte)(blk[96:108])
		var isum int32
		is := 0
		for n := 0; n < QK_K; n += 128 {
			q := (*[32]byte)(blk[32+n/4:])
			for j := range 4 {
				shift := uint(2 * j)
				bit := uint(n/32 + j)
				for h := range 2 {
					y := (*[16]int8)(q8[n+32*j+16*h:])
					var s int32
					for l := range 16 {
						v := int32(q[16*h+l]>>shift&3) - 4 + 4*int32(hmask[16*h+l]>>bit&1)
						s += v * int32(y[l])
					}
					isum += s * scaleQ3_K(is, scales)
					is++
				}
			}
		}
		sum += f16Scale(blk[108:]) * a.d[b] * float32(isum)
	}
	return sum
}

// kScales unpacks the eight 6-bit scales and mins of a Q4_K/Q5_K block.
func kScales(s *[12]byte) (sc, m [8]int32) {
	for j := range 8 {
		a, b := scaleMinK4(j, s)
		sc[j], m[j] = int32(a), int32(b)
	}
	return sc, m
}

func dotRowQ4_KGo(w []byte, a *activation) float32 {
	var sum float32
	for b := range len(w) / q4_KBytes {
		blk := (*[q4_KBytes]byte)(w[b*q4_KBytes:])
		q8 := (*[QK_K]int8)(a.qs[b*QK_K:])
		bs := (*[16]int16)(a.bsums[b*16:])
		sc, m := kScales((*[12]byte)(blk[4:16]))
		var isum, msum int32
		for c := range 4 {
			q := (*[32]byte)(blk[16+32*c:])
			y := (*[64]int8)(q8[64*c:])
			var s1, s2 int32
			for l := range 32 {
				s1 += int32(q[l]&0xf) * int32(y[l])
				s2 += int32(q[l]>>4) * int32(y[l+32])
			}
			isum += s1*sc[2*c] + s2*sc[2*c+1]
		}
		for j := range 8 {
			msum += m[j] * (int32(bs[2*j]) + int32(bs[2*j+1]))
		}
		d := a.d[b]
		sum += f16Scale(blk[0:])*d*float32(isum) - f16Scale(blk[2:])*d*float32(msum)
	}
	return sum
}

// dotRowQ5_KGo: dotRowQ5_K runs it, or its assembly twin where the CPU has
// AVX2.
func dotRowQ5_KGo(w []byte, a *activation) float32 {
	var sum float32
	for b := range len(w) / q5_KBytes {
		blk := (*[q5_KBytes]byte)(w[b*q5_KBytes:])
		q8 := (*[QK_K]int8)(a.qs[b*QK_K:])
		bs := (*[16]int16)(a.bsums[b*16:])
		sc, m := kScales((*[12]byte)(blk[4:16]))
		qh := (*[32]byte)(blk[16:48])
		var isum, msum int32
		for c := range 4 {
			ql := (*[32]byte)(blk[48+32*c:])
			y := (*[64]int8)(q8[64*c:])
			lo, hi := uint(2*c), uint(2*c+1)
			var s1, s2 int32
			for l := range 32 {
				s1 += int32(ql[l]&0xf|(qh[l]>>lo&1)<<4) * int32(y[l])
				s2 += int32(ql[l]>>4|(qh[l]>>hi&1)<<4) * int32(y[l+32])
			}
			isum += s1*sc[2*c] + s2*sc[2*c+1]
		}
		for j := range 8 {
			msum += m[j] * (int32(bs[2*j]) + int32(bs[2*j+1]))
		}
		d := a.d[b]
		sum += f16Scale(blk[0:])*d*float32(isum) - f16Scale(blk[2:])*d*float32(msum)
	}
	return sum
}

func dotRowQ6_KGo(w []byte, a *activation) float32 {
	var sum float32
	for b := range len(w) / q6_KBytes {
		blk := (*[q6_KBytes]byte)(w[b*q6_KBytes:])
		q8 := (*[QK_K]int8)(a.qs[b*QK_K:])
		var isum int32
		for n := range 2 {
			ql := (*[64]byte)(blk[64*n:])
			qh := (*[32]byte)(blk[128+32*n:])
			sc := (*[8]byte)(blk[192+8*n:])
			y := (*[128]int8)(q8[128*n:])
			for h := range 2 { // l in [16h, 16h+16): scale index h (+2, +4, +6)
				var s1, s2, s3, s4 int32
				for l := 16 * h; l < 16*h+16; l++ {
					s1 += (int32(ql[l]&0xf|(qh[l]&3)<<4) - 32) * int32(y[l])
					s2 += (int32(ql[l+32]&0xf|(qh[l]>>2&3)<<4) - 32) * int32(y[l+32])
					s3 += (int32(ql[l]>>4|(qh[l]>>4&3)<<4) - 32) * int32(y[l+64])
					s4 += (int32(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32) * int32(y[l+96])
				}
				isum += s1*int32(int8(sc[h])) + s2*int32(int8(sc[h+2])) + s3*int32(int8(sc[h+4])) + s4*int32(int8(sc[h+6]))
			}
		}
		sum += f16Scale(blk[208:]) * a.d[b] * float32(isum)
	}
	return sum
}

func dotRowQ8_K(w []byte, a *activation) float32 {
	var sum float32
	for b := range len(w) / q8_KBytes {
		blk := (*[q8_KBytes]byte)(w[b*q8_KBytes:])
		q8 := (*[QK_K]int8)(a.qs[b*QK_K:])
		var isum int32
		for j := range QK_K {
			isum += int32(int8(blk[4+j])) * int32(q8[j])
		}
		dw := math.Float32frombits(binary.LittleEndian.Uint32(blk[0:]))
		sum += dw * a.d[b] * float32(isum)
	}
	return sum
}
