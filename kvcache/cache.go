// Package kvcache holds the keys and values of one sequence's attention
// layers, in full precision or compressed, and computes attention on what
// it holds. The cache owns attention (docs/ARCHITECTURE.md): a compressed
// cache scores queries against its compressed keys directly instead of
// handing back decompressed copies.
package kvcache

import (
	"fmt"
	"math"

	"github.com/turbomem/turbomem/tensor"
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

// LastAttender is implemented by caches that attend a batch of tokens
// just appended at once (Dense): AttendLast(out, q, n, scale) gives the n
// rows of out that Attend after each of the last n Appends would have
// given, q holding the n tokens' queries. Prefill uses it to spread a
// chunk's attention over threads token by token.
type LastAttender interface {
	AttendLast(out, q []float32, n int, scale float32)
}

// Shape is the geometry of one layer's attention.
type Shape struct {
	QHeads, KVHeads, HeadDim int
	// Rope is the rotary embedding the model applied to the keys (nil:
	// none known); caches that centre keys use it (centered.go). A
	// model's shapes share one, so they compare equal.
	Rope *Rope
}

// Validate checks that the shape is usable for grouped-query attention.
func (s Shape) Validate() error {
	if s.QHeads <= 0 || s.KVHeads <= 0 || s.HeadDim <= 0 || s.QHeads%s.KVHeads != 0 {
		return fmt.Errorf("kvcache: shape %d query heads, %d KV heads, head dim %d: need positive sizes and query heads a multiple of KV heads", s.QHeads, s.KVHeads, s.HeadDim)
	}
	if s.Rope != nil && s.Rope.d != s.HeadDim {
		return fmt.Errorf("kvcache: shape of head dim %d with a rope of head dim %d", s.HeadDim, s.Rope.d)
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

// ExpShifted replaces each s[i] (s not empty) by e^(scale·(s[i] − m)), m
// the largest s[i], and returns m and the sum of the new s[i] (float32,
// in lanes): softmax before its normalisation, on Attend's kernels
// (package compact's reference attention reads the shifted weights and
// their sum apart).
func ExpShifted(s []float32, scale float32) (m, sum float32) {
	m = maxOf(s)
	return m, expSum(s, m, scale)
}

// ExpShiftedBy is ExpShifted with the shift m given (s[i] ≤ m): each
// s[i] becomes e^(scale·(s[i] − m)) on the same kernels, and the sum is
// returned. An entry's value depends on its place in s only through the
// kernel that takes it (the last len(s) mod 8 on a scalar twin where the
// vector kernel runs the rest).
func ExpShiftedBy(s []float32, m, scale float32) float32 { return expSum(s, m, scale) }

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

// expNeg returns e^x for x ≤ 0 (tensor.Exp: within 2 ulp; 1.2e-38 below
// −87.3), the twin of the exponential in softmax's kernels.
func expNeg(x float32) float32 { return tensor.Exp(x) }
