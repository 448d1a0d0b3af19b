package tensor

import (
	"encoding/binary"
	"math"
)

// groupMaxEps is ggml's GROUP_MAX_EPS: a group whose largest magnitude is
// below it quantizes to zeros.
const groupMaxEps = 1e-15

func sqrt32(x float32) float32 { return float32(math.Sqrt(float64(x))) }

// makeQKX2 is ggml's make_qkx2_quants: it fits x ≈ scale·L - min with
// L in 0..nmax (min ≥ 0 and the affine fit never raises the low end above
// zero), starting from the min/max grid and then trying nstep+1 stretched
// grids, (rmin + rdelta·is + nmax)/(max-min), keeping the weighted least
// squares fit of smallest weighted error (absolute error when useMAD).
// It writes the levels into L and returns scale and min.
func makeQKX2(nmax int32, x, weights []float32, L, Laux []uint8, rmin, rdelta float32, nstep int, useMAD bool) (scale, theMin float32) {
	n := len(x)
	lo, hi := x[0], x[0]
	sumW := weights[0]
	sumX := float32(sumW * x[0])
	for i := 1; i < n; i++ {
		if x[i] < lo {
			lo = x[i]
		}
		if x[i] > hi {
			hi = x[i]
		}
		w := weights[i]
		sumW += w
		sumX += float32(w * x[i])
	}
	if lo > 0 {
		lo = 0
	}
	if hi == lo {
		for i := range n {
			L[i] = 0
		}
		return 0, -lo
	}
	fmax := float32(nmax)
	iscale := fmax / (hi - lo)
	scale = 1 / iscale
	var bestErr float32
	for i := range n {
		l := nearestInt(float32(iscale * float32(x[i]-lo)))
		L[i] = uint8(max(0, min(nmax, l)))
		diff := float32(float32(scale*float32(L[i]))+lo) - x[i]
		if useMAD {
			diff = abs32(diff)
		} else {
			diff = float32(diff * diff)
		}
		bestErr += float32(weights[i] * diff)
	}
	if nstep < 1 {
		return scale, -lo
	}
	for is := 0; is <= nstep; is++ {
		iscale = float32(float32(rmin+float32(rdelta*float32(is)))+fmax) / (hi - lo)
		var sumL, sumL2, sumXL float32
		for i := range n {
			l := nearestInt(float32(iscale * float32(x[i]-lo)))
			l = max(0, min(nmax, l))
			Laux[i] = uint8(l)
			w := weights[i]
			fl := float32(l)
			wl := float32(w * fl)
			sumL += wl
			sumL2 += float32(wl * fl)
			sumXL += float32(wl * x[i])
		}
		D := float32(sumW*sumL2) - float32(sumL*sumL)
		if D > 0 {
			thisScale := (float32(sumW*sumXL) - float32(sumX*sumL)) / D
			thisMin := (float32(sumL2*sumX) - float32(sumL*sumXL)) / D
			if thisMin > 0 {
				thisMin = 0
				thisScale = sumXL / sumL2
			}
			var curErr float32
			for i := range n {
				diff := float32(float32(thisScale*float32(Laux[i]))+thisMin) - x[i]
				if useMAD {
					diff = abs32(diff)
				} else {
					diff = float32(diff * diff)
				}
				curErr += float32(weights[i] * diff)
			}
			if curErr < bestErr {
				copy(L[:n], Laux[:n])
				bestErr = curErr
				scale = thisScale
				lo = thisMin
			}
		}
	}
	return scale, -lo
}

// makeQX is ggml's make_qx_quants with rmse_type 1 and no importance
// weights: a symmetric fit x ≈ scale·(L-nmax), L in 0..2·nmax-1, weighted
// by x², trying 18 grids around nmax/max and keeping the best least-squares
// scale.
func makeQX(nmax int32, x []float32, L []int8) float32 {
	n := len(x)
	amax, mx := float32(0), float32(0)
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax, mx = a, v
		}
	}
	if amax < groupMaxEps {
		for i := range n {
			L[i] = 0
		}
		return 0
	}
	fmax := float32(nmax)
	iscale := -fmax / mx
	var sumLX, sumL2 float32
	for i := range n {
		l := nearestInt(float32(iscale * x[i]))
		l = max(-nmax, min(nmax-1, l))
		L[i] = int8(l + nmax)
		w := float32(x[i] * x[i])
		fl := float32(l)
		sumLX += float32(float32(w*x[i]) * fl)
		sumL2 += float32(float32(w*fl) * fl)
	}
	var scale float32
	if sumL2 != 0 {
		scale = sumLX / sumL2
	}
	best := float32(scale * sumLX)
	for is := -9; is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(fmax + float32(0.1*float32(is))) / mx
		sumLX, sumL2 = 0, 0
		for i := range n {
			l := nearestInt(float32(iscale * x[i]))
			l = max(-nmax, min(nmax-1, l))
			w := float32(x[i] * x[i])
			fl := float32(l)
			sumLX += float32(float32(w*x[i]) * fl)
			sumL2 += float32(float32(w*fl) * fl)
		}
		if sumL2 > 0 && float32(sumLX*sumLX) > float32(best*sumL2) {
			for i := range n {
				l := nearestInt(float32(iscale * x[i]))
				L[i] = int8(nmax + max(-nmax, min(nmax-1, l)))
			}
			scale = sumLX / sumL2
			best = float32(scale * sumLX)
		}
	}
	return scale
}

// makeQ3 is ggml's make_q3_quants with do_rmse: a symmetric fit
// x ≈ scale·(L-nmax) weighted by x², refined by up to five passes of
// coordinate descent on single levels.
func makeQ3(nmax int32, x []float32, L []int8) float32 {
	n := len(x)
	amax, mx := float32(0), float32(0)
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax, mx = a, v
		}
	}
	if amax < groupMaxEps {
		for i := range n {
			L[i] = 0
		}
		return 0
	}
	iscale := -float32(nmax) / mx
	var sumLX, sumL2 float32
	for i := range n {
		l := nearestInt(float32(iscale * x[i]))
		l = max(-nmax, min(nmax-1, l))
		L[i] = int8(l)
		w := float32(x[i] * x[i])
		fl := float32(l)
		sumLX += float32(float32(w*x[i]) * fl)
		sumL2 += float32(float32(w*fl) * fl)
	}
	for range 5 {
		changed := 0
		for i := range n {
			w := float32(x[i] * x[i])
			li := float32(L[i])
			slx := sumLX - float32(float32(w*x[i])*li)
			if slx > 0 {
				sl2 := sumL2 - float32(float32(w*li)*li)
				newL := nearestInt(float32(x[i]*sl2) / slx)
				newL = max(-nmax, min(nmax-1, newL))
				if newL != int32(L[i]) {
					fl := float32(newL)
					slx += float32(float32(w*x[i]) * fl)
					sl2 += float32(float32(w*fl) * fl)
					if sl2 > 0 && float32(float32(slx*slx)*sumL2) > float32(float32(sumLX*sumLX)*sl2) {
						L[i] = int8(newL)
						sumLX, sumL2 = slx, sl2
						changed++
					}
				}
			}
		}
		if changed == 0 {
			break
		}
	}
	for i := range n {
		L[i] += int8(nmax)
	}
	if sumL2 > 0 {
		return sumLX / sumL2
	}
	return 0
}

// pack2Bits stores 2-bit levels L[0:256] as Q2_K/Q3_K do: byte l of each
// 32-byte group g holds elements 128g+l, +32, +64, +96 at bit 0, 2, 4, 6.
func pack2Bits(qs []byte, L *[QK_K]uint8) {
	for j := 0; j < QK_K; j += 128 {
		for l := range 32 {
			qs[j/4+l] = L[j+l] | L[j+l+32]<<2 | L[j+l+64]<<4 | L[j+l+96]<<6
		}
	}
}

func quantQ2_K(dst []byte, src []float32) {
	var L, Laux [QK_K]uint8
	var weights [16]float32
	var mins, scales [QK_K / 16]float32
	const q4scale = 15
	for b := range len(src) / QK_K {
		x := (*[QK_K]float32)(src[b*QK_K:])
		blk := (*[q2_KBytes]byte)(dst[b*q2_KBytes:])
		var maxScale, maxMin float32
		for j := range QK_K / 16 {
			xs := x[16*j : 16*j+16]
			for l := range 16 {
				weights[l] = abs32(xs[l])
			}
			scales[j], mins[j] = makeQKX2(3, xs, weights[:], L[16*j:16*j+16], Laux[:16], -0.5, 0.1, 15, true)
			maxScale = max32(maxScale, scales[j])
			maxMin = max32(maxMin, mins[j])
		}
		if maxScale > 0 {
			iscale := q4scale / maxScale
			for j := range QK_K / 16 {
				blk[j] = uint8(nearestInt(float32(iscale * scales[j])))
			}
			putF16(blk[80:], maxScale/q4scale)
		} else {
			clear(blk[:16])
			putF16(blk[80:], 0)
		}
		if maxMin > 0 {
			iscale := q4scale / maxMin
			for j := range QK_K / 16 {
				blk[j] |= uint8(nearestInt(float32(iscale*mins[j])) << 4)
			}
			putF16(blk[82:], maxMin/q4scale)
		} else {
			putF16(blk[82:], 0)
		}
		d16, dmin16 := f16At(blk[80:]), f16At(blk[82:])
		for j := range QK_K / 16 {
			d := d16 * float32(blk[j]&0xf)
			if d == 0 {
				continue
			}
			dm := dmin16 * float32(blk[j]>>4)
			for ii := range 16 {
				l := nearestInt((x[16*j+ii] + dm) / d)
				L[16*j+ii] = uint8(max(0, min(3, l)))
			}
		}
		pack2Bits(blk[16:80], &L)
	}
}

// max32 is the C idiom "if (v > m) m = v", which ignores a NaN v.
func max32(m, v float32) float32 {
	if v > m {
		return v
	}
	return m
}

func quantQ3_K(dst []byte, src []float32) {
	var L [QK_K]int8
	var scales [QK_K / 16]float32
	for b := range len(src) / QK_K {
		x := (*[QK_K]float32)(src[b*QK_K:])
		blk := (*[q3_KBytes]byte)(dst[b*q3_KBytes:])
		var maxScale, amax float32
		for j := range QK_K / 16 {
			scales[j] = makeQ3(4, x[16*j:16*j+16], L[16*j:16*j+16])
			if s := abs32(scales[j]); s > amax {
				amax, maxScale = s, scales[j]
			}
		}
		sc := (*[12]byte)(blk[96:108])
		if maxScale != 0 {
			iscale := -32 / maxScale
			var ls [QK_K / 16]uint8
			for j := range QK_K / 16 {
				l := int32(int8(nearestInt(float32(iscale * scales[j]))))
				ls[j] = uint8(max(-32, min(31, l)) + 32)
			}
			packScalesQ3_K(sc, &ls)
			putF16(blk[108:], 1/iscale)
		} else {
			clear(sc[:])
			putF16(blk[108:], 0)
		}
		d16 := f16At(blk[108:])
		for j := range QK_K / 16 {
			d := d16 * float32(scaleQ3_K(j, sc))
			if d == 0 {
				continue
			}
			for ii := range 16 {
				l := nearestInt(x[16*j+ii] / d)
				L[16*j+ii] = int8(max(-4, min(3, l)) + 4)
			}
		}
		packLevelsQ3_K(blk, &L)
	}
}

// packScalesQ3_K stores sixteen 6-bit scales (0..63, the signed scale
// plus 32) as scaleQ3_K reads them.
func packScalesQ3_K(sc *[12]byte, ls *[QK_K / 16]uint8) {
	clear(sc[:])
	for j, l := range ls {
		if j < 8 {
			sc[j] = l & 0xf
		} else {
			sc[j-8] |= (l & 0xf) << 4
		}
		sc[j%4+8] |= (l >> 4) << (2 * (j / 4))
	}
}

// packLevelsQ3_K stores the levels L (0..7) of a Q3_K super-block: the
// high bit of element j in bit j/32 of hmask[j%32], the low two bits as
// Q2_K's.
func packLevelsQ3_K(blk *[q3_KBytes]byte, L *[QK_K]int8) {
	hmask := blk[0:32]
	clear(hmask)
	var low [QK_K]uint8
	for j := range QK_K {
		l := uint8(L[j])
		if l > 3 {
			hmask[j%32] |= 1 << (j / 32)
			l -= 4
		}
		low[j] = l
	}
	pack2Bits(blk[32:96], &low)
}

// packScalesK4 stores the 6-bit scales and mins of eight sub-blocks in
// the 12 bytes that scaleMinK4 reads.
func packScalesK4(s *[12]byte, ls, lm *[8]uint8) {
	for j := range 8 {
		if j < 4 {
			s[j] = ls[j]
			s[j+4] = lm[j]
		} else {
			s[j+4] = ls[j]&0xf | (lm[j]&0xf)<<4
			s[j-4] |= (ls[j] >> 4) << 6
			s[j] |= (lm[j] >> 4) << 6
		}
	}
}

// quantKX fits the eight 32-element sub-blocks of one Q4_K/Q5_K
// super-block (quantize_row_q4_K_ref and _q5_K_ref share it): a
// make_qkx2_quants fit per sub-block weighted by rms(x)+|x|, then 6-bit
// scales and mins relative to their maxima, then the levels requantized
// against the stored scales. It writes d, dmin and scales into hdr and the
// levels (0..nmax) into L.
func quantKX(hdr []byte, x *[QK_K]float32, L *[QK_K]uint8, nmax int32, rmin float32, nstep int) {
	var Laux [32]uint8
	var weights [32]float32
	var mins, scales [8]float32
	var maxScale, maxMin float32
	for j := range 8 {
		xs := x[32*j : 32*j+32]
		var sumX2 float32
		for _, v := range xs {
			sumX2 += float32(v * v)
		}
		avX := sqrt32(sumX2 / 32)
		for l, v := range xs {
			weights[l] = avX + abs32(v)
		}
		scales[j], mins[j] = makeQKX2(nmax, xs, weights[:], L[32*j:32*j+32], Laux[:], rmin, 0.1, nstep, false)
		maxScale = max32(maxScale, scales[j])
		maxMin = max32(maxMin, mins[j])
	}
	var invScale, invMin float32
	if maxScale > 0 {
		invScale = 63 / maxScale
	}
	if maxMin > 0 {
		invMin = 63 / maxMin
	}
	var ls, lm [8]uint8
	for j := range 8 {
		ls[j] = min(63, uint8(nearestInt(float32(invScale*scales[j]))))
		lm[j] = min(63, uint8(nearestInt(float32(invMin*mins[j]))))
	}
	s := (*[12]byte)(hdr[4:16])
	packScalesK4(s, &ls, &lm)
	putF16(hdr[0:], maxScale/63)
	putF16(hdr[2:], maxMin/63)
	d16, dmin16 := f16At(hdr[0:]), f16At(hdr[2:])
	for j := range 8 {
		sc, m := scaleMinK4(j, s)
		d := d16 * float32(sc)
		if d == 0 {
			continue
		}
		dm := dmin16 * float32(m)
		for ii := range 32 {
			l := nearestInt((x[32*j+ii] + dm) / d)
			L[32*j+ii] = uint8(max(0, min(nmax, l)))
		}
	}
}

func quantQ4_K(dst []byte, src []float32) {
	var L [QK_K]uint8
	for b := range len(src) / QK_K {
		x := (*[QK_K]float32)(src[b*QK_K:])
		blk := (*[q4_KBytes]byte)(dst[b*q4_KBytes:])
		quantKX(blk[:16], x, &L, 15, -1, 20)
		packLevelsQ4_K(blk, &L)
	}
}

// packLevelsQ4_K stores the levels L (0..15) of a Q4_K super-block: each
// 64 elements as 32 bytes, the first 32 in the low nibbles.
func packLevelsQ4_K(blk *[q4_KBytes]byte, L *[QK_K]uint8) {
	for c := range 4 {
		q := blk[16+32*c : 16+32*c+32]
		for l := range 32 {
			q[l] = L[64*c+l] | L[64*c+l+32]<<4
		}
	}
}

func quantQ5_K(dst []byte, src []float32) {
	var L [QK_K]uint8
	for b := range len(src) / QK_K {
		x := (*[QK_K]float32)(src[b*QK_K:])
		blk := (*[q5_KBytes]byte)(dst[b*q5_KBytes:])
		quantKX(blk[:16], x, &L, 31, -0.5, 15)
		packLevelsQ5_K(blk, &L)
	}
}

// packLevelsQ5_K stores the levels L (0..31) of a Q5_K super-block: the
// low four bits as Q4_K's, the fifth in qh.
func packLevelsQ5_K(blk *[q5_KBytes]byte, L *[QK_K]uint8) {
	qh := blk[16:48]
	clear(qh)
	for c := range 4 {
		ql := blk[48+32*c : 48+32*c+32]
		for j := range 32 {
			l1, l2 := L[64*c+j], L[64*c+j+32]
			if l1 > 15 {
				l1 -= 16
				qh[j] |= 1 << (2 * c)
			}
			if l2 > 15 {
				l2 -= 16
				qh[j] |= 2 << (2 * c)
			}
			ql[j] = l1 | l2<<4
		}
	}
}

func quantQ6_K(dst []byte, src []float32) {
	var L [QK_K]int8
	var scales [QK_K / 16]float32
	for b := range len(src) / QK_K {
		x := (*[QK_K]float32)(src[b*QK_K:])
		blk := (*[q6_KBytes]byte)(dst[b*q6_KBytes:])
		var maxScale, maxAbs float32
		for ib := range QK_K / 16 {
			s := makeQX(32, x[16*ib:16*ib+16], L[16*ib:16*ib+16])
			scales[ib] = s
			if a := abs32(s); a > maxAbs {
				maxAbs, maxScale = a, s
			}
		}
		if maxAbs < groupMaxEps {
			clear(blk[:])
			continue
		}
		iscale := -128 / maxScale
		putF16(blk[208:], 1/iscale)
		for ib := range QK_K / 16 {
			blk[192+ib] = byte(int8(min(127, nearestInt(float32(iscale*scales[ib])))))
		}
		d16 := f16At(blk[208:])
		for j := range QK_K / 16 {
			d := d16 * float32(int8(blk[192+j]))
			if d == 0 {
				continue
			}
			for ii := range 16 {
				l := nearestInt(x[16*j+ii] / d)
				L[16*j+ii] = int8(max(-32, min(31, l)) + 32)
			}
		}
		packLevelsQ6_K(blk, &L)
	}
}

// packLevelsQ6_K stores the levels L (0..63) of a Q6_K super-block: per
// 128 elements, the low four bits in 64 bytes of ql and the high two in
// 32 bytes of qh.
func packLevelsQ6_K(blk *[q6_KBytes]byte, L *[QK_K]int8) {
	for n := range 2 {
		ql := blk[64*n : 64*n+64]
		qh := blk[128+32*n : 128+32*n+32]
		Ln := L[128*n : 128*n+128]
		for l := range 32 {
			q1, q2, q3, q4 := uint8(Ln[l]), uint8(Ln[l+32]), uint8(Ln[l+64]), uint8(Ln[l+96])
			ql[l] = q1&0xf | (q3&0xf)<<4
			ql[l+32] = q2&0xf | (q4&0xf)<<4
			qh[l] = q1>>4 | (q2>>4)<<2 | (q3>>4)<<4 | (q4>>4)<<6
		}
	}
}

// quantQ8_K is quantize_row_q8_K_ref: d = max/-127 (float32, sign of the
// largest-magnitude element), q = round(x/d) ties to even, and bsums, the
// sums of each 16 quants. An all-zero block gets zero bsums (llama.cpp
// leaves them unwritten).
func quantQ8_K(dst []byte, src []float32) {
	for b := range len(src) / QK_K {
		x := (*[QK_K]float32)(src[b*QK_K:])
		blk := (*[q8_KBytes]byte)(dst[b*q8_KBytes:])
		amax, mx := absMaxSigned(x[:])
		if amax == 0 {
			clear(blk[:])
			continue
		}
		iscale := -127 / mx
		for j, v := range x {
			blk[4+j] = byte(int8(min(127, nearestInt(float32(iscale*v)))))
		}
		for j := range QK_K / 16 {
			var sum int32
			for _, q := range blk[4+16*j : 4+16*j+16] {
				sum += int32(int8(q))
			}
			binary.LittleEndian.PutUint16(blk[260+2*j:], uint16(int16(sum)))
		}
		binary.LittleEndian.PutUint32(blk[0:], math.Float32bits(1/iscale))
	}
}
