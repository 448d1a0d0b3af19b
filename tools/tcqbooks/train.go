package main

import (
	"math"
	"runtime"
	"slices"
	"sync"

	"github.com/turbomem/turbomem/quant"
)

// trainShards is how many parts a training set is split into for the
// encoding passes: each part's sums are added in part order, so a book
// does not depend on the number of cores.
const trainShards = 16

// books are union codebooks by width, 1 to quant.TCQMaxBits bits (nil:
// width not trained).
type books [quant.TCQMaxBits + 1][]float64

// sequence is one trellis path's values, as the klt coder hands them to
// its Viterbi encoder: x the normalised components, w their weights in
// the error (nil: 1), width each step's bits (nil: all of the training
// set's one width).
type sequence struct {
	x, w  []float64
	width []int
}

// trainConfig is how union codebooks are trained.
type trainConfig struct {
	// maxIters bounds the Lloyd iterations; tol stops them earlier, when
	// an iteration lowers the mean error by less than this fraction.
	maxIters int
	tol      float64
	// symmetric keeps each book symmetric about 0 (level ℓ = −level
	// N−1−ℓ): negating a path's values maps subset j to 3−j, which the
	// trellis does by complementing the path bits (h0 and h1 have an odd
	// number of taps), so a symmetric source's best book is symmetric,
	// and averaging the two halves halves the centroids' sampling noise.
	symmetric bool
}

// train runs the generalized Lloyd iteration of tail-biting TCQ
// (Marcellin and Fischer 1990, §IV) from bks on seqs: encode every
// sequence (Viterbi, weighted as the klt coder weighs), move each union
// level to the weighted mean of the values coded by it (the centroid of
// the weighted squared error), keep the levels ascending (and symmetric
// with cfg.symmetric). It returns the books, the mean weighted error per
// component of the returned books' encoding, and the iterations run.
func train(tr quant.Trellis, bks books, seqs []sequence, width int, cfg trainConfig) (books, float64, int) {
	for b, bk := range bks {
		bks[b] = slices.Clone(bk)
		if cfg.symmetric && bk != nil {
			symmetrize(bks[b])
		}
	}
	prev := math.Inf(1)
	for it := 1; ; it++ {
		acc, mse := encodeAll(tr, bks, seqs, width)
		if it > cfg.maxIters || prev-mse < cfg.tol*prev {
			return bks, mse, it - 1
		}
		prev = mse
		for b, bk := range bks {
			for l := range bk {
				if n := acc[b].num[l]; n > 0 {
					bk[l] = acc[b].sum[l] / n
				}
			}
			slices.Sort(bk)
			if cfg.symmetric && bk != nil {
				symmetrize(bk)
			}
		}
	}
}

// symmetrize makes the ascending book symmetric about 0, each pair of
// mirrored levels at the mean of their magnitudes.
func symmetrize(book []float64) {
	n := len(book)
	for l := range n / 2 {
		m := (book[n-1-l] - book[l]) / 2
		book[l], book[n-1-l] = -m, m
	}
}

// levelSums are, per union level of one width, the weighted sum of the
// values coded by it and their total weight.
type levelSums struct{ sum, num []float64 }

// encodeAll codes every sequence with the tail-biting TCQ of books bks
// (width: the sequences' one width, when they carry none) and returns
// the level sums per width and the mean weighted error per component.
func encodeAll(tr quant.Trellis, bks books, seqs []sequence, width int) ([quant.TCQMaxBits + 1]levelSums, float64) {
	type part struct {
		acc    [quant.TCQMaxBits + 1]levelSums
		err, n float64
	}
	parts := make([]part, trainShards)
	next := make(chan int, trainShards)
	for p := range trainShards {
		next <- p
	}
	close(next)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), trainShards) {
		wg.Go(func() {
			enc := newEncoder(tr, bks)
			for p := range next {
				pt := &parts[p]
				for b, bk := range bks {
					pt.acc[b] = levelSums{make([]float64, len(bk)), make([]float64, len(bk))}
				}
				for k := p; k < len(seqs); k += trainShards {
					s := &seqs[k]
					err, levels := enc.encode(s, width)
					pt.err += err
					pt.n += float64(len(s.x))
					for t, xt := range s.x {
						wt, b := 1.0, width
						if s.w != nil {
							wt = s.w[t]
						}
						if s.width != nil {
							b = s.width[t]
						}
						pt.acc[b].sum[levels[t]] += wt * xt
						pt.acc[b].num[levels[t]] += wt
					}
				}
			}
		})
	}
	wg.Wait()
	var acc [quant.TCQMaxBits + 1]levelSums
	for b, bk := range bks {
		acc[b] = levelSums{make([]float64, len(bk)), make([]float64, len(bk))}
	}
	var e, n float64
	for _, pt := range parts {
		for b := range acc {
			for l := range acc[b].sum {
				acc[b].sum[l] += pt.acc[b].sum[l]
				acc[b].num[l] += pt.acc[b].num[l]
			}
		}
		e += pt.err
		n += pt.n
	}
	return acc, e / max(n, 1)
}

// encoder codes sequences with one goroutine's tail-biting TCQs, one per
// width.
type encoder struct {
	byWidth [quant.TCQMaxBits + 1]*quant.TCQ
	steps   []*quant.TCQ
	v, idx  []int
	levels  []int
}

func newEncoder(tr quant.Trellis, bks books) *encoder {
	e := &encoder{}
	for b, bk := range bks {
		if bk == nil {
			continue
		}
		q, err := quant.NewTCQ(tr, b, bk)
		if err != nil {
			panic(err) // the trainer's own sorted books: a bug
		}
		q.TailBiting = true
		e.byWidth[b] = q
	}
	return e
}

// encode codes s and returns its weighted error and each step's union
// level.
func (e *encoder) encode(s *sequence, width int) (float64, []int) {
	n := len(s.x)
	e.v, e.idx, e.levels = grow(e.v, n), grow(e.idx, n), grow(e.levels, n)
	q := e.byWidth[width]
	if s.width != nil {
		e.steps = e.steps[:0]
		for _, b := range s.width {
			e.steps = append(e.steps, e.byWidth[b])
		}
		q = e.steps[0]
		if err := q.SetSteps(e.steps); err != nil {
			panic(err)
		}
		defer q.SetSteps(nil)
	}
	err := q.Encode(s.x, s.w, e.v, e.idx)
	for t := range n {
		e.levels[t] = q.UnionLevel(e.v, e.idx, t)
	}
	return err, e.levels
}

func grow(s []int, n int) []int {
	if cap(s) < n {
		return make([]int, n)
	}
	return s[:n]
}
