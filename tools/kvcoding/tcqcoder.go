package main

import (
	"math/rand/v2"
	"slices"

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
	// runs keep the scalar code.
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
			q.tailBiting = true
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

// tcqCoder codes a klt design's normalised coefficients with TCQ, each
// vector alone as the cache appends it, and the components it leaves
// with the scalar code. Per run (whole false), the trellis runs along
// each run of components of equal bits (1 to tcqMaxBits, at least
// tcqMinRun long); whole, one trellis path runs along all the vector's
// components of 1 to tcqMaxBits bits in order, each step with its
// width's union codebook (the trellis only picks subsets, so widths may
// change from step to step; still b bits a component).
type tcqCoder struct {
	p quant.KLTParams
	// diag is the error metric's diagonal in the KLT basis (keys: the
	// queries' second moment turned; values: 1), the Viterbi weights.
	diag  []float64
	gauss map[int][]float64 // scalar Lloyd–Max codebooks by bits
	whole bool
}

// seqs returns the sequences TCQ codes, as component indices.
func (c tcqCoder) seqs() [][]int {
	var out [][]int
	bs := c.p.Bits
	if c.whole {
		var all []int
		for r, b := range bs {
			if b >= 1 && b <= tcqMaxBits {
				all = append(all, r)
			}
		}
		if len(all) > 0 {
			out = append(out, all)
		}
		return out
	}
	for lo := 0; lo < len(bs); {
		hi := lo + 1
		for hi < len(bs) && bs[hi] == bs[lo] {
			hi++
		}
		if b := int(bs[lo]); b >= 1 && b <= tcqMaxBits && hi-lo >= tcqMinRun {
			run := make([]int, 0, hi-lo)
			for r := lo; r < hi; r++ {
				run = append(run, r)
			}
			out = append(out, run)
		}
		lo = hi
	}
	return out
}

// tcqSet is a coder's quantizers: one per width (its union codebook) and
// one to drive each sequence.
type tcqSet struct {
	byWidth map[int]*tcq
	drivers []*tcq
}

// quantizers returns the tail-biting TCQs of trellis tr for the
// sequences, with the Gaussian union codebooks books.
func (c tcqCoder) quantizers(tr trellis, books map[tcqKey][]float64) (tcqSet, error) {
	set := tcqSet{byWidth: map[int]*tcq{}}
	width := func(b int) (*tcq, error) {
		if q := set.byWidth[b]; q != nil {
			return q, nil
		}
		q, err := newTCQ(tr, b, books[tcqKey{tr.states(), b}])
		if err != nil {
			return nil, err
		}
		q.tailBiting = true
		set.byWidth[b] = q
		return q, nil
	}
	for _, seq := range c.seqs() {
		first, err := width(int(c.p.Bits[seq[0]]))
		if err != nil {
			return tcqSet{}, err
		}
		if !c.whole {
			set.drivers = append(set.drivers, first)
			continue
		}
		d, err := newTCQ(tr, first.b, first.book)
		if err != nil {
			return tcqSet{}, err
		}
		d.tailBiting = true
		for _, r := range seq {
			q, err := width(int(c.p.Bits[r]))
			if err != nil {
				return tcqSet{}, err
			}
			d.steps = append(d.steps, &q.sub)
		}
		set.drivers = append(set.drivers, d)
	}
	return set, nil
}

// fill writes the components seq of vector v, normalised (yᵢ/(ρ̂·σᵢ)), to
// x and their Viterbi weights (the metric's diagonal times the squared
// scale) to w.
func (c tcqCoder) fill(v coded, seq []int, x, w []float64) {
	for i, r := range seq {
		sc := v.rho * float64(c.p.Sigma[r])
		x[i] = v.y[r] / sc
		w[i] = c.diag[r] * sc * sc
	}
}

// total is the mean error of the test vectors coded with the TCQs of set
// on the sequences and the scalar code elsewhere.
func (c tcqCoder) total(tv []coded, set tcqSet, errOf func([]float64) float64) float64 {
	d := len(c.p.Sigma)
	seqs := c.seqs()
	inSeq := make([]bool, d)
	for _, seq := range seqs {
		for _, r := range seq {
			inSeq[r] = true
		}
	}
	dy := make([]float64, d)
	var x, w, dec []float64
	var pv, idx []int
	var s float64
	for _, v := range tv {
		for r := range d {
			dy[r] = v.y[r]
			if c.p.Bits[r] == 0 || v.rho == 0 || inSeq[r] {
				continue
			}
			sc := v.rho * float64(c.p.Sigma[r])
			cb := c.gauss[int(c.p.Bits[r])]
			dy[r] -= cb[nearest(cb, v.y[r]/sc)] * sc
		}
		if v.rho > 0 {
			for k, seq := range seqs {
				n := len(seq)
				x, w, dec = resize(x, n), resize(w, n), resize(dec, n)
				pv, idx = resize(pv, n), resize(idx, n)
				c.fill(v, seq, x, w)
				q := set.drivers[k]
				q.encode(x, w, pv, idx)
				q.decode(dec, pv, idx)
				for i, r := range seq {
					dy[r] -= dec[i] * v.rho * float64(c.p.Sigma[r])
				}
			}
		}
		s += errOf(dy)
	}
	return s / float64(len(tv))
}

// train refines each width's union codebook on the calibration vectors
// (the TCQ Lloyd iteration, iters times, weighted as the encoder weighs):
// one codebook per width, as "shared" is for the scalar code.
func (c tcqCoder) train(cv []coded, set tcqSet, iters int) {
	seqs := c.seqs()
	var x, w []float64
	var pv, idx []int
	for range iters {
		sum, num := map[int][]float64{}, map[int][]float64{}
		for b, q := range set.byWidth {
			sum[b], num[b] = make([]float64, len(q.book)), make([]float64, len(q.book))
		}
		for _, v := range cv {
			if v.rho == 0 {
				continue
			}
			for k, seq := range seqs {
				n := len(seq)
				x, w, pv, idx = resize(x, n), resize(w, n), resize(pv, n), resize(idx, n)
				c.fill(v, seq, x, w)
				q := set.drivers[k]
				q.encode(x, w, pv, idx)
				for i, r := range seq {
					b := int(c.p.Bits[r])
					l := 4*idx[i] + q.lbl[q.state(pv, i)*2+pv[i]]
					sum[b][l] += w[i] * x[i]
					num[b][l] += w[i]
				}
			}
		}
		for b, q := range set.byWidth {
			book := slices.Clone(q.book)
			for l := range book {
				if num[b][l] > 0 {
					book[l] = sum[b][l] / num[b][l]
				}
			}
			slices.Sort(book)
			q.setBook(book)
		}
	}
}
