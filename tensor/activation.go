package tensor

import "github.com/turbomem/turbomem/half"

// actKind says how MatVec prepares the activation vector for a weight
// type: the float types take it as it is; the 32-element formats take it
// quantized to 8 bits per 32 elements (as llama.cpp's Q8_0/Q8_1), the
// K-quants quantized to 8 bits per 256 (as Q8_K), so the block dot
// products run on integers.
type actKind uint8

const (
	actF32 actKind = iota
	actQ8_0
	actQ8_1 // actQ8_0 plus per-block sums, for the formats with a min
	actQ8_K
	numActKinds
)

// activation is one input vector in the form a weight type's dot kernel
// reads. Layout is one slice per field (not GGML's interleaved blocks) so
// the kernels index without decoding.
type activation struct {
	f32    []float32 // actF32: the vector itself
	qs     []int8    // quants, one per element
	d      []float32 // scale per block (32 or 256 elements), float32 (not fp16) for accuracy
	s      []float32 // actQ8_1: d·Σqs per 32-element block
	bsums  []int16   // actQ8_K: Σqs per 16 elements
	bsum32 []int32   // actQ8_K: Σqs per 32 elements (pairs of bsums), for the K-quant mins
}

// newActivation sizes an activation of kind k for n elements.
func newActivation(k actKind, n int) *activation {
	a := &activation{}
	switch k {
	case actQ8_0, actQ8_1:
		a.qs = make([]int8, n)
		a.d = make([]float32, n/qk0)
		if k == actQ8_1 {
			a.s = make([]float32, n/qk0)
		}
	case actQ8_K:
		a.qs = make([]int8, n)
		a.d = make([]float32, n/QK_K)
		a.bsums = make([]int16, n/16)
		a.bsum32 = make([]int32, n/32)
	}
	return a
}

// set fills a from x according to its kind. For actQ8_0/actQ8_1 the rule
// is quantize_row_q8_0's (d = max|x|/127, q = round(x/d)) but the scale
// stays float32; for actQ8_K it is quantize_row_q8_K's exactly.
func (a *activation) set(k actKind, x []float32) {
	switch k {
	case actF32:
		a.f32 = x
	case actQ8_0:
		quantActQ8_0(a.qs, a.d, x)
	case actQ8_1:
		quantActQ8_0(a.qs, a.d, x)
		for b := range len(x) / qk0 {
			var sum int32
			for _, q := range a.qs[b*qk0 : (b+1)*qk0] {
				sum += int32(q)
			}
			a.s[b] = a.d[b] * float32(sum)
		}
	case actQ8_K:
		quantActQ8_K(a.qs, a.d, a.bsums, x)
		for j := range len(x) / QK_K * (QK_K / 32) {
			a.bsum32[j] = int32(a.bsums[2*j]) + int32(a.bsums[2*j+1])
		}
	}
}

// quantActQ8_0Go quantizes the whole blocks of x into qs and d by the
// Q8_0 activation rule of set: the twin of the assembly.
func quantActQ8_0Go(qs []int8, d, x []float32) {
	for b := range len(x) / qk0 {
		xb := (*[qk0]float32)(x[b*qk0:])
		qb := (*[qk0]int8)(qs[b*qk0:])
		var amax float32
		for _, v := range xb {
			amax = max(amax, abs32(v))
		}
		d[b] = amax / 127
		id := inverse(d[b])
		for j, v := range xb {
			qb[j] = int8(nearestInt(v * id))
		}
	}
}

// quantActQ8_KGo quantizes the whole blocks of x into qs, d and the
// sums of every 16 quants bsums by the Q8_K activation rule of set: the
// twin of the assembly.
func quantActQ8_KGo(qs []int8, d []float32, bsums []int16, x []float32) {
	for b := range len(x) / QK_K {
		xb := (*[QK_K]float32)(x[b*QK_K:])
		qb := (*[QK_K]int8)(qs[b*QK_K:])
		bs := (*[QK_K / 16]int16)(bsums[b*QK_K/16:])
		amax, mx := absMaxSigned(xb[:])
		if amax == 0 {
			clear(qb[:])
			clear(bs[:])
			d[b] = 0
			continue
		}
		iscale := -127 / mx
		for j, v := range xb {
			qb[j] = int8(min(127, nearestInt(iscale*v)))
		}
		for j := range QK_K / 16 {
			var sum int16
			for _, q := range qb[16*j : 16*j+16] {
				sum += int16(q)
			}
			bs[j] = sum
		}
		d[b] = 1 / iscale
	}
}

// f16Table maps every binary16 bit pattern to its float32 value; the F16
// kernels look weights up here instead of decoding them. It is built once
// and only read.
var f16Table = func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for i := range t {
		t[i] = half.F16ToF32(half.F16(i))
	}
	return &t
}()
