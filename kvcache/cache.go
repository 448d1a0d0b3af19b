// Package kvcache holds the keys and values of one sequence's attention
// layers, in full precision or compressed, and computes attention on what
// it holds. The cache owns attention (docs/ARCHITECTURE.md): a compressed
// cache scores queries against its compressed keys directly instead of
// handing back decompressed copies.
package kvcache

import (
	"fmt"
	"math"
)

// Cache holds one sequence's keys and values for one layer, all KV heads.
type Cache interface {
	// Append adds one token: k and v hold KVHeads·HeadDim values each,
	// head after head; keys are taken after RoPE.
	Append(k, v []float32) error
	// Attend computes softmax(scale·q·Kᵀ)·V for every query head against
	// every stored token and writes the QHeads·HeadDim results to out.
	// Query head h uses KV head h/(QHeads/KVHeads) (grouped-query
	// attention).
	Attend(out, q []float32, scale float32)
	// Len returns the number of tokens held.
	Len() int
	// Bytes returns the exact number of bytes the cache holds for its
	// tokens (capacity reserved but unused is not counted).
	Bytes() int
}

// Shape is the geometry of one layer's attention.
type Shape struct {
	QHeads, KVHeads, HeadDim int
}

// Validate checks that the shape is usable for grouped-query attention.
func (s Shape) Validate() error {
	if s.QHeads <= 0 || s.KVHeads <= 0 || s.HeadDim <= 0 || s.QHeads%s.KVHeads != 0 {
		return fmt.Errorf("kvcache: shape %d query heads, %d KV heads, head dim %d: need positive sizes and query heads a multiple of KV heads", s.QHeads, s.KVHeads, s.HeadDim)
	}
	if s.HeadDim > 1<<14 || s.QHeads > 1<<12 {
		return fmt.Errorf("kvcache: shape %d heads × %d dims is out of range", s.QHeads, s.HeadDim)
	}
	return nil
}

// Group returns the number of query heads that share one KV head.
func (s Shape) Group() int { return s.QHeads / s.KVHeads }

// softmax replaces s by softmax(scale·s) (scale > 0), subtracting the
// maximum first so that large scores cannot overflow; SIMD kernels where
// there are some.
func softmax(s []float32, scale float32) {
	m := maxOf(s)
	scaleVec(s, 1/expSum(s, m, scale))
}

// softmaxGo is softmax with the pure-Go twins of its kernels.
func softmaxGo(s []float32, scale float32) {
	m := maxGo(s)
	scaleGo(s, 1/expSumGo(s, m, scale))
}

func maxGo(s []float32) float32 {
	m := float32(math.Inf(-1))
	for _, v := range s {
		m = max(m, v)
	}
	return m
}

func expSumGo(s []float32, m, scale float32) float32 {
	var sum float32
	for i, v := range s {
		e := expNeg(scale * (v - m))
		s[i] = e
		sum += e
	}
	return sum
}

func scaleGo(s []float32, a float32) {
	for i := range s {
		s[i] *= a
	}
}

// expNeg returns e^x for x ≤ 0 in float32, within 2 ulp (Cephes expf:
// x = n·ln 2 + r with |r| ≤ ln 2/2, Cody–Waite reduction in two parts,
// a degree-6 polynomial for e^r, 2^n put in the exponent). It is 3–4×
// cheaper than math.Exp, which the softmax of a long context calls once
// per token and query head.
func expNeg(x float32) float32 {
	// Below −87.3, e^x is under the smallest normal float32: clamp (the
	// result, 1.2e-38, is as good as 0 next to the maximum's e^0 = 1).
	x = max(x, -87.3)
	n := float32(math.Floor(float64(x*1.44269504088896341 + 0.5))) // round(x·log₂e)
	r := x - n*0.693359375 + n*2.12194440e-4
	p := float32(1.9875691500e-4)
	p = p*r + 1.3981999507e-3
	p = p*r + 8.3334519073e-3
	p = p*r + 4.1665795894e-2
	p = p*r + 1.6666665459e-1
	p = p*r + 5.0000001201e-1
	e := p*r*r + r + 1
	return e * math.Float32frombits(uint32(int32(n)+127)<<23)
}
