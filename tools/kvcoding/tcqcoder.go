package main

import (
	"math/rand/v2"

	"github.com/turbomem/turbomem/quant"
)

// tcqKey names a Gaussian TCQ union codebook: trellis size and bits.
type tcqKey struct{ states, bits int }

const (
	// tcqMaxBits is the widest index a TCQ column codes; wider
	// components keep the scalar code (the doubled alphabet of 8 bits
	// would start from a 9-bit Lloyd–Max codebook, and such components
	// are few and carry little of the error).
	tcqMaxBits = 7
	// tcqMinRun is the shortest run of equal bits coded by TCQ; shorter
	// runs keep the scalar code (the trellis starts in state 0, so its
	// first components see half the union codebook).
	tcqMinRun = 4
)

// gaussianTCQBooks returns, for each trellis and 1 to tcqMaxBits bits,
// the TCQ union codebook for a unit Gaussian: Marcellin and Fischer's
// doubled Lloyd–Max alphabet (the (b+1)-bit codebook) refined by the
// TCQ Lloyd iteration on i.i.d. N(0, 1) sequences of 64 (a seeded
// draw), the length of a typical run of equal bits.
func gaussianTCQBooks(trs []trellis) (map[tcqKey][]float64, error) {
	out := map[tcqKey][]float64{}
	for _, tr := range trs {
		for b := 1; b <= tcqMaxBits; b++ {
			cb, err := quant.LloydMaxGaussian(b+1, 1)
			if err != nil {
				return nil, err
			}
			q, err := newTCQ(tr, b, toF64(cb.Centroids))
			if err != nil {
				return nil, err
			}
			r := rand.New(rand.NewPCG(uint64(tr.states()), uint64(b)))
			seqs := make([][]float64, max(600, 4<<(b+1)))
			for i := range seqs {
				seqs[i] = make([]float64, 64)
				for j := range seqs[i] {
					seqs[i][j] = r.NormFloat64()
				}
			}
			q.train(seqs, nil, 10)
			out[tcqKey{tr.states(), b}] = q.book
		}
	}
	return out, nil
}

// tcqCoder codes a klt design's normalised coefficients with TCQ along
// each run of components of equal bits (1 to tcqMaxBits, at least
// tcqMinRun long) of one vector, the rest with the scalar code; each
// vector is coded alone, as the cache appends it.
type tcqCoder struct {
	p quant.KLTParams
	// diag is the error metric's diagonal in the KLT basis (keys: the
	// queries' second moment turned; values: 1), the Viterbi weights.
	diag  []float64
	gauss map[int][]float64 // scalar Lloyd–Max codebooks by bits
}

type bitRun struct{ lo, hi, b int }

// runs returns the runs of components that TCQ codes.
func (c tcqCoder) runs() []bitRun {
	var out []bitRun
	bs := c.p.Bits
	for lo := 0; lo < len(bs); {
		hi := lo + 1
		for hi < len(bs) && bs[hi] == bs[lo] {
			hi++
		}
		if b := int(bs[lo]); b >= 1 && b <= tcqMaxBits && hi-lo >= tcqMinRun {
			out = append(out, bitRun{lo, hi, b})
		}
		lo = hi
	}
	return out
}

// quantizers returns a TCQ of trellis tr for each width the runs code,
// with the Gaussian union codebooks books.
func (c tcqCoder) quantizers(tr trellis, books map[tcqKey][]float64) (map[int]*tcq, error) {
	qs := map[int]*tcq{}
	for _, rn := range c.runs() {
		if qs[rn.b] != nil {
			continue
		}
		q, err := newTCQ(tr, rn.b, books[tcqKey{tr.states(), rn.b}])
		if err != nil {
			return nil, err
		}
		qs[rn.b] = q
	}
	return qs, nil
}

// seq writes run rn of vector v, normalised (yᵢ/(ρ̂·σᵢ)), to x and its
// Viterbi weights (the metric's diagonal times the squared scale) to w.
func (c tcqCoder) seq(v coded, rn bitRun, x, w []float64) {
	for i := range x {
		r := rn.lo + i
		sc := v.rho * float64(c.p.Sigma[r])
		x[i] = v.y[r] / sc
		w[i] = c.diag[r] * sc * sc
	}
}

// total is the mean error of the test vectors coded with the TCQs qs on
// the runs and the scalar code elsewhere.
func (c tcqCoder) total(tv []coded, qs map[int]*tcq, errOf func([]float64) float64) float64 {
	d := len(c.p.Sigma)
	runs := c.runs()
	inRun := make([]bool, d)
	for _, rn := range runs {
		for r := rn.lo; r < rn.hi; r++ {
			inRun[r] = true
		}
	}
	dy := make([]float64, d)
	var x, w, dec []float64
	var pv, idx []int
	var s float64
	for _, v := range tv {
		for r := range d {
			dy[r] = v.y[r]
			if c.p.Bits[r] == 0 || v.rho == 0 || inRun[r] {
				continue
			}
			sc := v.rho * float64(c.p.Sigma[r])
			cb := c.gauss[int(c.p.Bits[r])]
			dy[r] -= cb[nearest(cb, v.y[r]/sc)] * sc
		}
		if v.rho > 0 {
			for _, rn := range runs {
				n := rn.hi - rn.lo
				x, w, dec = resize(x, n), resize(w, n), resize(dec, n)
				pv, idx = resize(pv, n), resize(idx, n)
				c.seq(v, rn, x, w)
				q := qs[rn.b]
				q.encode(x, w, pv, idx)
				q.decode(dec, pv, idx)
				for i := range n {
					r := rn.lo + i
					dy[r] -= dec[i] * v.rho * float64(c.p.Sigma[r])
				}
			}
		}
		s += errOf(dy)
	}
	return s / float64(len(tv))
}

// train refines each width's union codebook on the calibration vectors'
// runs of that width (the TCQ Lloyd iteration, weighted as the encoder
// weighs): one codebook per width, as "shared" is for the scalar code.
func (c tcqCoder) train(cv []coded, qs map[int]*tcq) {
	seqs, ws := map[int][][]float64{}, map[int][][]float64{}
	for _, v := range cv {
		if v.rho == 0 {
			continue
		}
		for _, rn := range c.runs() {
			n := rn.hi - rn.lo
			x, w := make([]float64, n), make([]float64, n)
			c.seq(v, rn, x, w)
			seqs[rn.b] = append(seqs[rn.b], x)
			ws[rn.b] = append(ws[rn.b], w)
		}
	}
	for b, q := range qs {
		q.train(seqs[b], ws[b], 6)
	}
}
