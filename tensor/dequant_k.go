package tensor

import (
	"encoding/binary"
	"math"
)

// Byte sizes and field offsets of the K-quant super-blocks (ggml-common.h).
// Each super-block holds QK_K = 256 elements in sub-blocks of 16 (Q2_K,
// Q3_K, Q6_K) or 32 (Q4_K, Q5_K) that have their own quantized scale.
const (
	q2_KBytes = 84  // scales[16] (scale | min<<4), qs[64], d, dmin
	q3_KBytes = 110 // hmask[32], qs[64], scales[12] (6-bit, packed), d
	q4_KBytes = 144 // d, dmin, scales[12] (6-bit scales and mins), qs[128]
	q5_KBytes = 176 // d, dmin, scales[12], qh[32], qs[128]
	q6_KBytes = 210 // ql[128], qh[64], scales[16] (int8), d
	q8_KBytes = 292 // d (float32), qs[256] (int8), bsums[16] (int16)
)

// scaleMinK4 unpacks the 6-bit scale and min of sub-block j (0..7) from
// the 12 packed bytes of a Q4_K or Q5_K super-block: sub-blocks 0..3 keep
// theirs in the low 6 bits of bytes j and j+4; sub-blocks 4..7 split
// theirs between a nibble of byte j+4 and the top two bits of bytes j-4
// (scale) and j (min).
func scaleMinK4(j int, q *[12]byte) (sc, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return q[j+4]&0xf | (q[j-4]>>6)<<4, q[j+4]>>4 | (q[j]>>6)<<4
}

// scaleQ3_K returns the signed 6-bit scale of sub-block j (0..15) of a
// Q3_K super-block: its low 4 bits are a nibble of bytes 0..7, its high 2
// bits a pair in bytes 8..11.
func scaleQ3_K(j int, s *[12]byte) int32 {
	var lo uint8
	if j < 8 {
		lo = s[j] & 0xf
	} else {
		lo = s[j-8] >> 4
	}
	hi := s[8+j%4] >> (2 * (j / 4)) & 3
	return int32(lo|hi<<4) - 32
}

// dequantQ2_K: x = d·sc·q - dmin·m per 16-element sub-block, q in 0..3.
func dequantQ2_K(dst []float32, src []byte) {
	for b := range len(src) / q2_KBytes {
		blk := (*[q2_KBytes]byte)(src[b*q2_KBytes:])
		y := (*[QK_K]float32)(dst[b*QK_K:])
		d, dmin := f16At(blk[80:]), f16At(blk[82:])
		is := 0
		for n := 0; n < QK_K; n += 128 {
			q := blk[16+n/4 : 16+n/4+32]
			for j := range 4 {
				shift := uint(2 * j)
				for h := range 2 {
					sc := blk[is]
					is++
					dl := d * float32(sc&0xf)
					ml := dmin * float32(sc>>4)
					out := y[n+32*j+16*h : n+32*j+16*h+16]
					for l := range 16 {
						out[l] = float32(dl*float32(q[16*h+l]>>shift&3)) - ml
					}
				}
			}
		}
	}
}

// dequantQ3_K: x = d·(sc-32)·(q-4) per 16-element sub-block; q's low two
// bits are in qs, its high bit in hmask (set means +4).
func dequantQ3_K(dst []float32, src []byte) {
	for b := range len(src) / q3_KBytes {
		blk := (*[q3_KBytes]byte)(src[b*q3_KBytes:])
		y := (*[QK_K]float32)(dst[b*QK_K:])
		hmask := blk[0:32]
		scales := (*[12]byte)(blk[96:108])
		d := f16At(blk[108:])
		is := 0
		for n := 0; n < QK_K; n += 128 {
			q := blk[32+n/4 : 32+n/4+32]
			for j := range 4 {
				shift := uint(2 * j)
				bit := uint(n/32 + j)
				for h := range 2 {
					dl := d * float32(scaleQ3_K(is, scales))
					is++
					out := y[n+32*j+16*h : n+32*j+16*h+16]
					for l := range 16 {
						v := int32(q[16*h+l]>>shift&3) - 4 + 4*int32(hmask[16*h+l]>>bit&1)
						out[l] = dl * float32(v)
					}
				}
			}
		}
	}
}

// dequantQ4_K: x = d·sc·q - dmin·m per 32-element sub-block, q in 0..15.
func dequantQ4_K(dst []float32, src []byte) {
	for b := range len(src) / q4_KBytes {
		blk := (*[q4_KBytes]byte)(src[b*q4_KBytes:])
		y := (*[QK_K]float32)(dst[b*QK_K:])
		d, dmin := f16At(blk[0:]), f16At(blk[2:])
		scales := (*[12]byte)(blk[4:16])
		for c := range 4 { // 64 elements: low nibbles, then high nibbles of 32 bytes
			q := (*[32]byte)(blk[16+32*c:])
			sc, m := scaleMinK4(2*c, scales)
			d1, m1 := d*float32(sc), dmin*float32(m)
			sc, m = scaleMinK4(2*c+1, scales)
			d2, m2 := d*float32(sc), dmin*float32(m)
			out := (*[64]float32)(y[64*c:])
			for l := range 32 {
				out[l] = float32(d1*float32(q[l]&0xf)) - m1
				out[l+32] = float32(d2*float32(q[l]>>4)) - m2
			}
		}
	}
}

// dequantQ5_K: as Q4_K with a fifth bit per element from qh.
func dequantQ5_K(dst []float32, src []byte) {
	for b := range len(src) / q5_KBytes {
		blk := (*[q5_KBytes]byte)(src[b*q5_KBytes:])
		y := (*[QK_K]float32)(dst[b*QK_K:])
		d, dmin := f16At(blk[0:]), f16At(blk[2:])
		scales := (*[12]byte)(blk[4:16])
		qh := (*[32]byte)(blk[16:48])
		for c := range 4 {
			ql := (*[32]byte)(blk[48+32*c:])
			sc, m := scaleMinK4(2*c, scales)
			d1, m1 := d*float32(sc), dmin*float32(m)
			sc, m = scaleMinK4(2*c+1, scales)
			d2, m2 := d*float32(sc), dmin*float32(m)
			out := (*[64]float32)(y[64*c:])
			lo, hi := uint(2*c), uint(2*c+1)
			for l := range 32 {
				q1 := ql[l]&0xf | (qh[l]>>lo&1)<<4
				q2 := ql[l]>>4 | (qh[l]>>hi&1)<<4
				out[l] = float32(d1*float32(q1)) - m1
				out[l+32] = float32(d2*float32(q2)) - m2
			}
		}
	}
}

// dequantQ6_K: x = d·sc·(q-32) per 16-element sub-block; q's low 4 bits
// are in ql, its high 2 bits in qh.
func dequantQ6_K(dst []float32, src []byte) {
	for b := range len(src) / q6_KBytes {
		blk := (*[q6_KBytes]byte)(src[b*q6_KBytes:])
		y := (*[QK_K]float32)(dst[b*QK_K:])
		d := f16At(blk[208:])
		for n := range 2 { // 128 elements: 64 bytes of ql, 32 of qh, 8 scales
			ql := (*[64]byte)(blk[64*n:])
			qh := (*[32]byte)(blk[128+32*n:])
			sc := (*[8]byte)(blk[192+8*n:])
			out := (*[128]float32)(y[128*n:])
			for l := range 32 {
				is := l / 16
				q1 := int32(ql[l]&0xf|(qh[l]>>0&3)<<4) - 32
				q2 := int32(ql[l+32]&0xf|(qh[l]>>2&3)<<4) - 32
				q3 := int32(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
				q4 := int32(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
				out[l] = float32(d*float32(int8(sc[is]))) * float32(q1)
				out[l+32] = float32(d*float32(int8(sc[is+2]))) * float32(q2)
				out[l+64] = float32(d*float32(int8(sc[is+4]))) * float32(q3)
				out[l+96] = float32(d*float32(int8(sc[is+6]))) * float32(q4)
			}
		}
	}
}

// dequantQ8_K: x = q·d with a float32 d.
func dequantQ8_K(dst []float32, src []byte) {
	for b := range len(src) / q8_KBytes {
		blk := (*[q8_KBytes]byte)(src[b*q8_KBytes:])
		y := (*[QK_K]float32)(dst[b*QK_K:])
		d := math.Float32frombits(binary.LittleEndian.Uint32(blk[0:]))
		for j := range QK_K {
			y[j] = float32(int8(blk[4+j])) * d
		}
	}
}
