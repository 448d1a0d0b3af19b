package tensor

import (
	"fmt"
	"math"

	"github.com/turbomem/turbomem/half"
)

// Importance-weighted quantization. The reference quantizers above choose
// each block's scales by heuristics of the block alone; the quantizers
// here choose them to minimise the error that matters for a matrix
// product y = W·x:
//
//	E[(Σⱼ (wⱼ − ŵⱼ)·xⱼ)²] ≈ Σⱼ Iⱼ·(wⱼ − ŵⱼ)²,  Iⱼ = E[xⱼ²]
//
// (the diagonal of the inputs' second moments: an importance matrix, as
// llama.cpp's imatrix defines it). They write the same bit layouts as the
// reference quantizers, so any GGML dequantizer reads them.
//
// Every block is fitted in three steps: (1) each sub-block's continuous
// scale (and min) by a weighted least-squares fit over a grid of
// candidate level assignments, refined by re-rounding; (2) the
// sub-blocks' scales quantized to their integer codes under the
// super-block scale, weighted by how much each scale's error costs
// (Σ Iᵢ·lᵢ² for a scale, Σ Iᵢ for a min); (3) the levels re-rounded
// against the stored scales, then polished: each code moved by ±1 where
// that lowers its sub-block's error, and the super-block scales refitted
// by least squares, kept only when the stored block's error (measured by
// the real dequantizer) falls.

// weightedKernels maps each type QuantizeWeighted supports to its block
// kernel, which encodes whole blocks of x with importance imp (same
// length).
var weightedKernels = map[DType]func(dst []byte, x, imp []float32){
	Q8_0:  func(dst []byte, x, imp []float32) { weightedSingle(Q8_0, dst, x, imp, -128, 127, 0) },
	Q4_0:  func(dst []byte, x, imp []float32) { weightedSingle(Q4_0, dst, x, imp, -8, 7, 8) },
	Q2_K:  func(dst []byte, x, imp []float32) { weightedK(&specQ2_K, dst, x, imp) },
	Q3_K:  func(dst []byte, x, imp []float32) { weightedK(&specQ3_K, dst, x, imp) },
	Q4_K:  func(dst []byte, x, imp []float32) { weightedK(&specQ4_K, dst, x, imp) },
	Q5_K:  func(dst []byte, x, imp []float32) { weightedK(&specQ5_K, dst, x, imp) },
	Q6_K:  func(dst []byte, x, imp []float32) { weightedK(&specQ6_K, dst, x, imp) },
	TQ1_0: weightedTQ1_0,
	TQ2_0: weightedTQ2_0,
}

// CanQuantizeWeighted reports whether QuantizeWeighted supports t.
func CanQuantizeWeighted(t DType) bool { _, ok := weightedKernels[t]; return ok }

// QuantizeWeighted encodes src into dst in type t, choosing scales (and
// mins) that minimise the importance-weighted squared error
// Σⱼ imp[j mod len(imp)]·(srcⱼ − ŝrcⱼ)²: src is a matrix of rows of
// len(imp) elements and imp holds one non-negative weight per column. A
// nil imp weighs every element 1 (plain squared error). The layout is
// exactly that of Quantize. len(imp) must be a whole number of blocks of
// t, len(src) a whole number of rows, len(dst) t.RowBytes(len(src)).
func QuantizeWeighted(t DType, dst []byte, src, imp []float32) error {
	kernel, ok := weightedKernels[t]
	if !ok {
		return fmt.Errorf("tensor: %s: weighted quantization not supported", t)
	}
	if err := checkQuantize(t, dst, src); err != nil {
		return err
	}
	if imp == nil {
		// Every block alike: one block of ones serves as the row.
		imp = make([]float32, t.BlockSize())
		for i := range imp {
			imp[i] = 1
		}
	}
	n := len(imp)
	if n == 0 || n%t.BlockSize() != 0 || len(src)%n != 0 {
		return fmt.Errorf("tensor: %s: %d importance weights for %d elements: want a whole number of blocks of %d that divides them", t, n, len(src), t.BlockSize())
	}
	for j, v := range imp {
		if !(v >= 0) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("tensor: importance weight %d is %g: want finite and ≥ 0", j, v)
		}
	}
	rowBytes, _ := t.RowBytes(int64(n))
	for r := range len(src) / n {
		kernel(dst[int64(r)*rowBytes:int64(r+1)*rowBytes], src[r*n:(r+1)*n], imp)
	}
	return nil
}

// blockWeights fills w with the importance of one block as float64: imp,
// plus a floor of 1e-6 of its mean so that columns with no recorded
// activity still get their nearest level; all ones when imp is all zero.
func blockWeights(w []float64, imp []float32) {
	var sum float64
	for _, v := range imp {
		sum += float64(v)
	}
	if sum == 0 {
		for i := range w {
			w[i] = 1
		}
		return
	}
	floor := 1e-6 * sum / float64(len(imp))
	for i, v := range imp {
		w[i] = float64(v) + floor
	}
}

// roundClamp returns v rounded to the nearest integer (halves to even:
// a single instruction), clamped to [lo, hi]; NaN goes to lo.
func roundClamp(v float64, lo, hi int32) int32 {
	r := math.RoundToEven(v)
	if !(r >= float64(lo)) {
		return lo
	}
	if r > float64(hi) {
		return hi
	}
	return int32(r)
}

// maxLevelSweep bounds the level ranges for which fitScale tries putting
// the largest element on every level, and the code ranges that
// polishCodes searches whole.
const maxLevelSweep = 64

// levelReach is how many levels on either side fitScale tries for the
// most important element in ranges longer than maxLevelSweep.
const levelReach = 12

// gridSteps is the number of candidate scales on each side of the
// natural one that the fits try.
const gridSteps = 12

// fitScale finds s and integer levels L[i] in [lo, hi] that minimise
// Σ wᵢ·(xᵢ − s·Lᵢ)². The candidates are the scales that map an element of
// the upper half of magnitudes exactly to either end of the range
// (clipping every larger one: the best fit often gives up an outlier of
// little importance), a grid that stretches the largest element's map by
// up to ±15%, and the scales that put the most important element on a
// level; each is followed by the least-squares s for its levels, and the
// best by up to four rounds of re-rounding. It returns s and the error.
func fitScale(x, w []float64, lo, hi int32, L []int32) (float64, float64) {
	var amax, xmax, sxx float64
	for i, v := range x {
		if a := math.Abs(v); a > amax {
			amax, xmax = a, v
		}
		sxx += w[i] * v * v
	}
	for i := range L {
		L[i] = 0
	}
	if amax < groupMaxEps || math.IsNaN(amax) || math.IsInf(amax, 0) {
		return 0, sxx
	}
	var tmp [QK_K]int32
	cand := tmp[:len(x)]
	bestS, bestErr := 0.0, sxx
	try := func(iscale float64) {
		var sxl, sll float64
		for i, v := range x {
			l := roundClamp(v*iscale, lo, hi)
			cand[i] = l
			fl := float64(l)
			sxl += w[i] * v * fl
			sll += w[i] * fl * fl
		}
		if sll <= 0 {
			return
		}
		// For fixed levels the best scale is sxl/sll and the error
		// sxx − sxl²/sll.
		if e := sxx - sxl*sxl/sll; e < bestErr {
			bestErr, bestS = e, sxl/sll
			copy(L, cand)
		}
	}
	for _, end := range [2]int32{lo, hi} {
		if end == 0 {
			continue
		}
		t := float64(end)
		for _, v := range x {
			// Elements in the upper half only: mapping a small one to
			// the end of the range clips too much to pay (measured: the
			// same errors, at half the time).
			if a := math.Abs(v); a > groupMaxEps && v != xmax && 2*a >= amax {
				try(t / v)
			}
		}
		step := 0.15 / gridSteps
		for k := -gridSteps; k <= gridSteps; k++ {
			try(t * (1 + float64(k)*step) / xmax)
		}
	}
	// The most important element on each level, and for short ranges
	// the largest too: a grid that the data (or the elements that
	// matter) sit on exactly is found again. Long ranges (Q8_0) try the
	// levels within ±levelReach of where the best scale so far puts it.
	var xw, most float64
	for i, v := range x {
		if e := w[i] * v * v; e > most {
			most, xw = e, v
		}
	}
	from, to := lo, hi
	if hi-lo > maxLevelSweep && bestS != 0 {
		at := int32(math.Round(xw / bestS))
		from, to = max(lo, at-levelReach), min(hi, at+levelReach)
	}
	for l := from; l <= to; l++ {
		if l == 0 {
			continue
		}
		if math.Abs(xw) > groupMaxEps {
			try(float64(l) / xw)
		}
		if hi-lo <= maxLevelSweep && xw != xmax {
			try(float64(l) / xmax)
		}
	}
	for range 4 {
		if bestS == 0 {
			break
		}
		prev := bestErr
		try(1 / bestS)
		if bestErr >= prev {
			break
		}
	}
	return bestS, math.Max(bestErr, 0)
}

// fitAffine finds s ≥ 0, m ≥ 0 and levels L[i] in [0, nmax] that
// minimise Σ wᵢ·(xᵢ − (s·Lᵢ − m))². The candidates map [min(x, 0),
// max(x)] onto the levels, stretched by −1 to +1 level, or clip at one
// end, mapping [min(x, 0), xᵢ] or [xᵢ, max(x)] for some element xᵢ; each
// is followed by the weighted least-squares (s, m) for its levels, and
// the best by up to four rounds of re-rounding. It returns s, m and the
// error.
func fitAffine(x, w []float64, nmax int32, L []int32) (s, m, e float64) {
	lo, hi := 0.0, math.Inf(-1)
	var sw, swx, swxx float64
	for i, v := range x {
		lo = math.Min(lo, v)
		hi = math.Max(hi, v)
		sw += w[i]
		swx += w[i] * v
		swxx += w[i] * v * v
	}
	for i := range L {
		L[i] = 0
	}
	if !(hi-lo > groupMaxEps) || math.IsInf(hi-lo, 0) {
		// A constant non-positive sub-block is its min; anything else
		// (NaN, infinities) gets zeros.
		if hi == lo {
			return 0, -lo, 0
		}
		return 0, 0, swxx
	}
	var tmp [QK_K]int32
	cand := tmp[:len(x)]
	bestS, bestM, bestErr := 0.0, 0.0, math.Inf(1)
	// fitLevels sets cand from the map x ↦ (x + off)·iscale and keeps the
	// least-squares (s, m) for it if it beats the best.
	fitLevels := func(iscale, off float64) {
		var sl, sll, sxl float64
		for i, v := range x {
			l := roundClamp((v+off)*iscale, 0, nmax)
			cand[i] = l
			fl := float64(l)
			sl += w[i] * fl
			sll += w[i] * fl * fl
			sxl += w[i] * v * fl
		}
		det := sw*sll - sl*sl
		if !(det > 0) {
			return
		}
		// x ≈ s·l + b with b = −m ≤ 0.
		ss := (sw*sxl - swx*sl) / det
		b := (sll*swx - sl*sxl) / det
		if b > 0 {
			b = 0
			ss = sxl / sll
		}
		if !(ss > 0) {
			return
		}
		err := swxx + ss*ss*sll + b*b*sw - 2*ss*sxl - 2*b*swx + 2*ss*b*sl
		if err < bestErr {
			bestS, bestM, bestErr = ss, -b, err
			copy(L, cand)
		}
	}
	fmax := float64(nmax)
	for k := -gridSteps; k <= gridSteps; k++ {
		fitLevels((fmax+float64(k)/gridSteps)/(hi-lo), -lo)
	}
	for l := int32(1); l < nmax; l++ {
		fitLevels(float64(l)/(hi-lo), -lo)
	}
	// Clipping at an element in the outer half of the range on either
	// side (further in clips too much to pay).
	mid := lo + (hi-lo)/2
	for _, v := range x {
		if v > mid && v < hi {
			fitLevels(fmax/(v-lo), -lo)
		}
		if v < 0 && v > lo && v < mid {
			fitLevels(fmax/(hi-v), -v)
		}
	}
	for range 4 {
		if bestS == 0 {
			break
		}
		prev := bestErr
		fitLevels(1/bestS, bestM)
		if bestErr >= prev {
			break
		}
	}
	if math.IsInf(bestErr, 1) {
		return 0, -lo, swxx
	}
	return bestS, bestM, math.Max(bestErr, 0)
}

// weightedSingle encodes blocks of 32 with one fp16 scale each (Q8_0 as
// d·l, Q4_0 as d·(q−8)): levels l in [lo, hi] stored as l+zero.
func weightedSingle(t DType, dst []byte, x, imp []float32, lo, hi, zero int32) {
	var xs, w [qk0]float64
	var L [qk0]int32
	var y [qk0]float32
	bs := t.BlockBytes()
	for b := range len(x) / qk0 {
		xb, blk := x[b*qk0:(b+1)*qk0], dst[b*bs:(b+1)*bs]
		for i, v := range xb {
			xs[i] = float64(v)
		}
		blockWeights(w[:], imp[b*qk0:(b+1)*qk0])
		s, _ := fitScale(xs[:], w[:], lo, hi, L[:])
		// The stored scale is fp16: try it and its two neighbours, each
		// with the levels re-rounded, and keep the best stored block.
		d := half.F32ToF16(float32(s))
		bestErr := math.Inf(1)
		var best [34]byte
		for _, c := range [3]half.F16{d, d - 1, d + 1} {
			df := half.F16ToF32(c)
			if math.IsNaN(float64(df)) || math.IsInf(float64(df), 0) || (c^d)&0x8000 != 0 {
				continue
			}
			putF16(blk, df)
			for i, v := range xs {
				l := int32(0)
				if df != 0 {
					l = roundClamp(v/float64(df), lo, hi)
				}
				if t == Q8_0 {
					blk[2+i] = byte(int8(l))
				} else if i < 16 {
					blk[2+i] = byte(l + zero)
				} else {
					blk[2+i-16] |= byte(l+zero) << 4
				}
			}
			dequantizers[t](y[:], blk)
			if e := weightedErr(xb, y[:], w[:]); e < bestErr {
				bestErr = e
				copy(best[:], blk)
			}
		}
		copy(blk, best[:bs])
	}
}

// weightedErr returns Σ wᵢ·(xᵢ − yᵢ)².
func weightedErr(x, y []float32, w []float64) float64 {
	var e float64
	for i := range x {
		d := float64(x[i]) - float64(y[i])
		e += w[i] * d * d
	}
	return e
}

// kSpec describes a K-quant super-block for weightedK: QK_K elements in
// sub-blocks of sub, each x ≈ d·sc·l − dmin·mn with integer level l in
// [lo, hi] and integer scale code sc in [cmin, cmax] (and, where affine,
// min code mn in [0, cmax]); d and dmin are fp16.
type kSpec struct {
	t          DType
	sub        int
	lo, hi     int32
	cmin, cmax int32
	affine     bool
	// pack writes a super-block from d, dmin, the codes and the levels.
	pack func(blk []byte, d, dmin float32, sc, mn []int32, L *[QK_K]int32)
}

var (
	specQ2_K = kSpec{t: Q2_K, sub: 16, lo: 0, hi: 3, cmin: 0, cmax: 15, affine: true, pack: packQ2_K}
	specQ3_K = kSpec{t: Q3_K, sub: 16, lo: -4, hi: 3, cmin: -32, cmax: 31, pack: packQ3_K}
	specQ4_K = kSpec{t: Q4_K, sub: 32, lo: 0, hi: 15, cmin: 0, cmax: 63, affine: true, pack: packQ4_K}
	specQ5_K = kSpec{t: Q5_K, sub: 32, lo: 0, hi: 31, cmin: 0, cmax: 63, affine: true, pack: packQ5_K}
	specQ6_K = kSpec{t: Q6_K, sub: 16, lo: -32, hi: 31, cmin: -128, cmax: 127, pack: packQ6_K}
)

func packQ2_K(blk []byte, d, dmin float32, sc, mn []int32, L *[QK_K]int32) {
	b := (*[q2_KBytes]byte)(blk)
	var q [QK_K]uint8
	for j := range 16 {
		b[j] = uint8(sc[j]) | uint8(mn[j])<<4
	}
	for i, l := range L {
		q[i] = uint8(l)
	}
	pack2Bits(b[16:80], &q)
	putF16(b[80:], d)
	putF16(b[82:], dmin)
}

func packQ3_K(blk []byte, d, _ float32, sc, _ []int32, L *[QK_K]int32) {
	b := (*[q3_KBytes]byte)(blk)
	var ls [QK_K / 16]uint8
	for j := range ls {
		ls[j] = uint8(sc[j] + 32)
	}
	packScalesQ3_K((*[12]byte)(b[96:108]), &ls)
	var q [QK_K]int8
	for i, l := range L {
		q[i] = int8(l + 4)
	}
	packLevelsQ3_K(b, &q)
	putF16(b[108:], d)
}

func packQ4_K(blk []byte, d, dmin float32, sc, mn []int32, L *[QK_K]int32) {
	b := (*[q4_KBytes]byte)(blk)
	packHeaderK4(b[:16], d, dmin, sc, mn)
	var q [QK_K]uint8
	for i, l := range L {
		q[i] = uint8(l)
	}
	packLevelsQ4_K(b, &q)
}

func packQ5_K(blk []byte, d, dmin float32, sc, mn []int32, L *[QK_K]int32) {
	b := (*[q5_KBytes]byte)(blk)
	packHeaderK4(b[:16], d, dmin, sc, mn)
	var q [QK_K]uint8
	for i, l := range L {
		q[i] = uint8(l)
	}
	packLevelsQ5_K(b, &q)
}

// packHeaderK4 writes d, dmin and the eight 6-bit scales and mins of a
// Q4_K or Q5_K super-block.
func packHeaderK4(hdr []byte, d, dmin float32, sc, mn []int32) {
	var ls, lm [8]uint8
	for j := range 8 {
		ls[j], lm[j] = uint8(sc[j]), uint8(mn[j])
	}
	s := (*[12]byte)(hdr[4:16])
	clear(s[:])
	packScalesK4(s, &ls, &lm)
	putF16(hdr[0:], d)
	putF16(hdr[2:], dmin)
}

func packQ6_K(blk []byte, d, _ float32, sc, _ []int32, L *[QK_K]int32) {
	b := (*[q6_KBytes]byte)(blk)
	for j := range 16 {
		b[192+j] = byte(int8(sc[j]))
	}
	var q [QK_K]int8
	for i, l := range L {
		q[i] = int8(l + 32)
	}
	packLevelsQ6_K(b, &q)
	putF16(b[208:], d)
}

// kBlock is the working state of one super-block in weightedK.
type kBlock struct {
	spec   *kSpec
	x      [QK_K]float64
	xf     []float32
	w      [QK_K]float64
	L      [QK_K]int32
	sc, mn [QK_K / 16]int32
	d, dm  float32 // the stored (fp16-representable) super-block scales
}

// subErr re-rounds the levels of sub-block j for codes sc, mn under the
// stored d, dm (as the dequantizer computes them, in float32) and
// returns its error.
func (k *kBlock) subErr(j int, sc, mn int32, L []int32) float64 {
	sp := k.spec
	dl := float64(k.d * float32(sc))
	ml := float64(k.dm * float32(mn))
	var inv float64
	if dl != 0 {
		inv = 1 / dl
	}
	var e float64
	for i := range sp.sub {
		idx := j*sp.sub + i
		v := k.x[idx]
		l := roundClamp((v+ml)*inv, sp.lo, sp.hi)
		if dl == 0 {
			l = 0
		}
		L[i] = l
		r := v - (dl*float64(l) - ml)
		e += k.w[idx] * r * r
	}
	return e
}

// polishCodes chooses each sub-block's codes for the stored super-block
// scales: with search, the scale code that gives the least error of the
// sub-block with its levels re-rounded, over the whole code range (within
// ±16 and the sign flip for Q6_K's 256 codes); then single ±1 moves of
// the scale or min code while they help. It returns the total error.
func (k *kBlock) polishCodes(search bool) float64 {
	sp := k.spec
	nsub := QK_K / sp.sub
	var total float64
	var tmp, best [32]int32
	for j := range nsub {
		bestErr := k.subErr(j, k.sc[j], k.mn[j], best[:sp.sub])
		consider := func(sc, mn int32) bool {
			if sc < sp.cmin || sc > sp.cmax || mn < 0 || mn > sp.cmax {
				return false
			}
			if e := k.subErr(j, sc, mn, tmp[:sp.sub]); e < bestErr {
				bestErr, k.sc[j], k.mn[j] = e, sc, mn
				copy(best[:], tmp[:sp.sub])
				return true
			}
			return false
		}
		if search {
			lo, hi := sp.cmin, sp.cmax
			if hi-lo > maxLevelSweep {
				lo, hi = max(lo, k.sc[j]-16), min(hi, k.sc[j]+16)
				consider(-k.sc[j], k.mn[j])
			}
			cur := k.sc[j]
			for c := lo; c <= hi; c++ {
				if c != cur {
					consider(c, k.mn[j])
				}
			}
		}
		for range 4 {
			improved := false
			for _, d := range [4][2]int32{{-1, 0}, {1, 0}, {0, -1}, {0, 1}} {
				if sp.affine || d[1] == 0 {
					improved = consider(k.sc[j]+d[0], k.mn[j]+d[1]) || improved
				}
			}
			if !improved {
				break
			}
		}
		copy(k.L[j*sp.sub:], best[:sp.sub])
		total += bestErr
	}
	return total
}

// refitSuper solves for the d (and dmin) that minimise the error with
// the codes and levels fixed: weighted least squares in one or two
// unknowns. It returns false when the system is singular.
func (k *kBlock) refitSuper() (d, dm float64, ok bool) {
	sp := k.spec
	// x ≈ d·a − dm·c with a = sc·l, c = mn.
	var saa, sac, scc, sxa, sxc float64
	for i := range QK_K {
		j := i / sp.sub
		a := float64(k.sc[j]) * float64(k.L[i])
		c := float64(k.mn[j])
		w := k.w[i]
		saa += w * a * a
		sac += w * a * c
		scc += w * c * c
		sxa += w * k.x[i] * a
		sxc += w * k.x[i] * c
	}
	if !sp.affine || scc == 0 {
		if saa <= 0 {
			return 0, 0, false
		}
		return sxa / saa, float64(k.dm), true
	}
	// Minimise Σw(x − d·a + dm·c)²: [saa −sac; −sac scc]·[d; dm] = [sxa; −sxc].
	det := saa*scc - sac*sac
	if !(det > 0) {
		return 0, 0, false
	}
	d = (sxa*scc - sac*sxc) / det
	dm = (sac*sxa - saa*sxc) / det
	return d, dm, d >= 0 && dm >= 0
}

// weightedK encodes super-blocks of the K-quant sp.
func weightedK(sp *kSpec, dst []byte, x, imp []float32) {
	var k kBlock
	k.spec = sp
	nsub := QK_K / sp.sub
	var s, m, ws, wm [QK_K / 16]float64
	var Lsub [32]int32
	var codes [QK_K / 16]int32
	var y [QK_K]float32
	bs := sp.t.BlockBytes()
	cur := make([]byte, bs)
	for b := range len(x) / QK_K {
		blk := dst[b*bs : (b+1)*bs]
		k.xf = x[b*QK_K : (b+1)*QK_K]
		for i, v := range k.xf {
			k.x[i] = float64(v)
		}
		blockWeights(k.w[:], imp[b*QK_K:(b+1)*QK_K])
		// (1) Each sub-block's own scale and min.
		for j := range nsub {
			xs, w := k.x[j*sp.sub:(j+1)*sp.sub], k.w[j*sp.sub:(j+1)*sp.sub]
			if sp.affine {
				s[j], m[j], _ = fitAffine(xs, w, sp.hi, Lsub[:sp.sub])
			} else {
				s[j], _ = fitScale(xs, w, sp.lo, sp.hi, Lsub[:sp.sub])
			}
			ws[j], wm[j] = 0, 0
			for i, l := range Lsub[:sp.sub] {
				ws[j] += w[i] * float64(l) * float64(l)
				wm[j] += w[i]
			}
		}
		// (2) The scales (and mins) as codes under fp16 super-scales.
		d, _ := fitScale(s[:nsub], ws[:nsub], sp.cmin, sp.cmax, codes[:nsub])
		k.d = half.F16ToF32(half.F32ToF16(float32(d)))
		for j := range nsub {
			k.sc[j] = 0
			if k.d != 0 {
				k.sc[j] = roundClamp(s[j]/float64(k.d), sp.cmin, sp.cmax)
			}
		}
		k.dm = 0
		if sp.affine {
			dm, _ := fitScale(m[:nsub], wm[:nsub], 0, sp.cmax, codes[:nsub])
			k.dm = half.F16ToF32(half.F32ToF16(float32(dm)))
			for j := range nsub {
				k.mn[j] = 0
				if k.dm != 0 {
					k.mn[j] = roundClamp(m[j]/float64(k.dm), 0, sp.cmax)
				}
			}
		}
		// (3) Levels against the stored scales, codes polished; then the
		// super-block scales refitted, kept while the stored block's
		// real error falls.
		k.polishCodes(true)
		sp.pack(blk, k.d, k.dm, k.sc[:nsub], k.mn[:nsub], &k.L)
		dequantizers[sp.t](y[:], blk)
		bestErr := weightedErr(k.xf, y[:], k.w[:])
		for range 3 {
			d, dm, ok := k.refitSuper()
			if !ok {
				break
			}
			saved := k
			k.d = half.F16ToF32(half.F32ToF16(float32(d)))
			k.dm = half.F16ToF32(half.F32ToF16(float32(dm)))
			k.polishCodes(false)
			sp.pack(cur, k.d, k.dm, k.sc[:nsub], k.mn[:nsub], &k.L)
			dequantizers[sp.t](y[:], cur)
			e := weightedErr(k.xf, y[:], k.w[:])
			if !(e < bestErr) {
				k = saved
				break
			}
			bestErr = e
			copy(blk, cur)
		}
	}
}
