package quant

import (
	"encoding/binary"

	"github.com/turbomem/turbomem/half"
)

// Accumulator sums weighted vectors straight from their codes: what
// attention needs for values, Σₜ pₜ·x̃ₜ, without decoding every vector to
// the original basis. For rotation-based quantizers the sum stays in the
// rotated basis (each term is scaleₜ·c[idxₜ]) and is rotated back once at
// the end (ALGORITHMS.md §1: "un-rotate the sum once").
type Accumulator interface {
	// AccLen returns the length of an accumulator vector.
	AccLen() int
	// Accumulate adds, for each head h, Σᵢ ws[h][i]·x̃ᵢ (in the internal
	// basis) to accs[h], over the len(ws[h]) codes back to back in codes.
	// Codes are read once for all heads.
	Accumulate(accs, ws [][]float32, codes []byte)
	// Finish writes the accumulated sum acc in the original basis to dst
	// (len Dim); acc may be overwritten.
	Finish(dst, acc []float32)
}

// NewAccumulator returns the accumulator for q's codes: in the rotated
// basis for TurboMSE and its outlier splits, by decoding otherwise.
func NewAccumulator(q Quantizer) Accumulator {
	switch t := q.(type) {
	case *TurboMSE:
		return &turboAcc{t: t}
	case *Split:
		if hi, ok := t.hi.(*TurboMSE); ok {
			if lo, ok := t.lo.(*TurboMSE); ok {
				return &splitAcc{s: t, hi: &turboAcc{t: hi}, lo: &turboAcc{t: lo}}
			}
		}
	}
	return &decodeAcc{q: q}
}

// turboAcc accumulates TurboMSE codes in the rotated basis.
type turboAcc struct{ t *TurboMSE }

func (a *turboAcc) AccLen() int { return a.t.d }

func (a *turboAcc) Accumulate(accs, ws [][]float32, codes []byte) {
	a.accumulate(accs, ws, codes, a.t.Bytes(), 0)
}

// accumulate reads this quantizer's code at offset off of codes at stride.
func (a *turboAcc) accumulate(accs, ws [][]float32, codes []byte, stride, off int) {
	t := a.t
	idx := make([]uint8, t.d)
	cent := t.cb.Centroids
	n := len(ws[0])
	for i := range n {
		c := codes[i*stride+off : i*stride+off+t.Bytes()]
		scale := half.F16ToF32(half.F16(binary.LittleEndian.Uint16(c)))
		unpack(idx, c[2:], t.bits)
		for h, acc := range accs {
			w := ws[h][i] * scale
			if w == 0 {
				continue
			}
			acc = acc[:len(idx)]
			for j, k := range idx {
				acc[j] += w * cent[k]
			}
		}
	}
}

func (a *turboAcc) Finish(dst, acc []float32) { a.t.rot.Invert(dst, acc) }

// splitAcc accumulates both parts of a TurboQuant outlier split, each in
// its own rotated basis: the accumulator holds the outlier part, then the
// rest.
type splitAcc struct {
	s      *Split
	hi, lo *turboAcc
}

func (a *splitAcc) AccLen() int { return a.s.d }

func (a *splitAcc) Accumulate(accs, ws [][]float32, codes []byte) {
	k := len(a.s.outliers)
	his := make([][]float32, len(accs))
	los := make([][]float32, len(accs))
	for h, acc := range accs {
		his[h], los[h] = acc[:k], acc[k:]
	}
	a.hi.accumulate(his, ws, codes, a.s.Bytes(), 0)
	a.lo.accumulate(los, ws, codes, a.s.Bytes(), a.s.hi.Bytes())
}

func (a *splitAcc) Finish(dst, acc []float32) {
	k := len(a.s.outliers)
	hi := make([]float32, k)
	lo := make([]float32, a.s.d-k)
	a.hi.Finish(hi, acc[:k])
	a.lo.Finish(lo, acc[k:])
	scatter(dst, hi, a.s.outliers)
	scatter(dst, lo, a.s.rest)
}

// decodeAcc decodes each code once and adds it to every head's sum.
type decodeAcc struct{ q Quantizer }

func (a *decodeAcc) AccLen() int { return a.q.Dim() }

func (a *decodeAcc) Accumulate(accs, ws [][]float32, codes []byte) {
	d, b := a.q.Dim(), a.q.Bytes()
	x := make([]float32, d)
	for i := range len(ws[0]) {
		if err := a.q.Decode(x, codes[i*b:(i+1)*b]); err != nil {
			continue // a code that does not decode adds nothing
		}
		for h, acc := range accs {
			if w := ws[h][i]; w != 0 {
				axpy(acc[:d], w, x)
			}
		}
	}
}

func (a *decodeAcc) Finish(dst, acc []float32) { copy(dst, acc) }
