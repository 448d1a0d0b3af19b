package main

import (
	"slices"

	"github.com/turbomem/turbomem/quant"
)

// trellis8 is the 8-state trellis, the per-run column's.
var trellis8 = func() quant.Trellis {
	tr, err := quant.NewTrellis(8)
	if err != nil {
		panic(err)
	}
	return tr
}()

// tcqKey names a Gaussian TCQ union codebook: trellis size and bits.
type tcqKey struct{ states, bits int }

const (
	// tcqMaxBits is the widest index a TCQ column codes; wider
	// components keep the scalar code (quant.TCQMaxBits).
	tcqMaxBits = quant.TCQMaxBits
	// tcqMinRun is the shortest run of equal bits coded by TCQ; shorter
	// runs keep the scalar code.
	tcqMinRun = 4
)

// gaussianTCQBooks returns, for each trellis and 1 to tcqMaxBits bits,
// the TCQ union codebook for a unit Gaussian (quant.GaussianTCQBook:
// Marcellin and Fischer's doubled Lloyd–Max alphabet refined by the TCQ
// Lloyd iteration on i.i.d. N(0, 1) sequences of 64).
func gaussianTCQBooks(trs []quant.Trellis) (map[tcqKey][]float64, error) {
	out := map[tcqKey][]float64{}
	for _, tr := range trs {
		for b := 1; b <= tcqMaxBits; b++ {
			book, err := quant.GaussianTCQBook(tr, b)
			if err != nil {
				return nil, err
			}
			out[tcqKey{tr.States(), b}] = book
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
	byWidth map[int]*quant.TCQ
	drivers []*quant.TCQ
}

// quantizers returns the tail-biting TCQs of trellis tr for the
// sequences, with the Gaussian union codebooks books.
func (c tcqCoder) quantizers(tr quant.Trellis, books map[tcqKey][]float64) (tcqSet, error) {
	set := tcqSet{byWidth: map[int]*quant.TCQ{}}
	width := func(b int) (*quant.TCQ, error) {
		if q := set.byWidth[b]; q != nil {
			return q, nil
		}
		q, err := quant.NewTCQ(tr, b, books[tcqKey{tr.States(), b}])
		if err != nil {
			return nil, err
		}
		q.TailBiting = true
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
		d, err := quant.NewTCQ(tr, first.Bits(), first.Book())
		if err != nil {
			return tcqSet{}, err
		}
		d.TailBiting = true
		steps := make([]*quant.TCQ, len(seq))
		for i, r := range seq {
			if steps[i], err = width(int(c.p.Bits[r])); err != nil {
				return tcqSet{}, err
			}
		}
		if err := d.SetSteps(steps); err != nil {
			return tcqSet{}, err
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
				q.Encode(x, w, pv, idx)
				q.Decode(dec, pv, idx)
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
			sum[b], num[b] = make([]float64, 2<<q.Bits()), make([]float64, 2<<q.Bits())
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
				q.Encode(x, w, pv, idx)
				for i, r := range seq {
					b := int(c.p.Bits[r])
					l := q.UnionLevel(pv, idx, i)
					sum[b][l] += w[i] * x[i]
					num[b][l] += w[i]
				}
			}
		}
		for b, q := range set.byWidth {
			book := q.Book()
			for l := range book {
				if num[b][l] > 0 {
					book[l] = sum[b][l] / num[b][l]
				}
			}
			slices.Sort(book)
			q.SetBook(book)
		}
	}
}

func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
