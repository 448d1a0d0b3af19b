package kvcache

import (
	"math"

	"github.com/turbomem/turbomem/tensor"
)

// Partial is softmax attention of one query over part of a cache's
// positions, kept in the form that lets parts be combined
// (flash-decoding; ALGORITHMS-style online softmax): with s_t the scaled
// scores of the part,
//
//	Max = max_t s_t,  Sum = Σ_t e^(s_t − Max),  Acc = Σ_t e^(s_t − Max)·v_t,
//
// and the attention output over the part is Acc/Sum. Two parts merge
// exactly (up to float rounding) by bringing both to the larger Max:
// Acc = e^(Max₁−M)·Acc₁ + e^(Max₂−M)·Acc₂, likewise Sum. Attend splits a
// long cache over threads this way (each slice of positions one Partial,
// then one merge per query head); a compacted prefix and the tokens
// appended after it combine the same way.
//
// Acc may hold the values in any basis in which they add linearly (the
// compressed caches keep a rotated-basis sum for their compressed tokens
// and an original-basis one for the fp16 window side by side); Merge
// treats it as a plain vector.
type Partial struct {
	Max float32   // largest scaled score; −Inf while empty
	Sum float32   // Σ e^(s_t − Max)
	Acc []float32 // Σ e^(s_t − Max)·v_t
}

// Reset empties p for a sum of accLen values, reusing its storage.
func (p *Partial) Reset(accLen int) {
	p.Max, p.Sum = float32(math.Inf(-1)), 0
	if cap(p.Acc) < accLen {
		p.Acc = make([]float32, accLen)
	}
	p.Acc = p.Acc[:accLen]
	clear(p.Acc)
}

// Weigh turns the raw scores s (⟨q, k_t⟩, before scaling) of the next
// positions into their softmax weights relative to p: Max rises to cover
// scale·s where needed (Sum and Acc are rescaled to match), each s[t]
// becomes e^(scale·s[t] − Max), and their sum joins Sum. The caller then
// adds Σ_t s[t]·v_t to Acc.
func (p *Partial) Weigh(s []float32, scale float32) {
	if len(s) == 0 {
		return
	}
	if m := scale * maxOf(s); m > p.Max {
		p.rescale(m)
	}
	p.Sum += expSum(s, p.Max/scale, scale)
}

// rescale moves p to the maximum m ≥ Max.
func (p *Partial) rescale(m float32) {
	if p.Sum != 0 {
		r := expNeg(p.Max - m)
		p.Sum *= r
		scaleVec(p.Acc, r)
	}
	p.Max = m
}

// Merge folds o into p: p then holds what one Partial over both parts'
// positions would. o is unchanged; both must have the same Acc length.
func (p *Partial) Merge(o *Partial) {
	if o.Sum == 0 {
		return
	}
	if o.Max > p.Max {
		p.rescale(o.Max)
	}
	f := expNeg(o.Max - p.Max)
	tensor.AxpyF32(p.Acc, f, o.Acc)
	p.Sum += f * o.Sum
}

// Result writes the attention output Acc/Sum to dst (len(Acc) values;
// dst may be Acc itself).
func (p *Partial) Result(dst []float32) {
	inv := float32(0)
	if p.Sum > 0 {
		inv = 1 / p.Sum
	}
	dst = dst[:len(p.Acc)]
	copy(dst, p.Acc)
	scaleVec(dst, inv)
}

// logSumExp returns the log-sum-exp of p's scaled scores, log Σ_t e^(s_t)
// = Max + log Sum (−Inf while empty).
func (p *Partial) logSumExp() float32 {
	return p.Max + float32(math.Log(float64(p.Sum)))
}
