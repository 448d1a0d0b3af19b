package compact

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/tensor"
)

// attention is a block's reference attention: for every reference query
// i and key j the shifted exp-score e_ij = exp(s·q_i·k_j − m_i), m_i the
// row's largest scaled score (so e ≤ 1 and nothing overflows), the mass
// Σ_j e_ij (the row's partition function times e^{−m_i}) and the output
// softmax(s·q_i·Kᵀ)·V. The mass equations of a row are scaled by the
// same e^{−m_i} on both sides, so fitting them in this form fits the
// original ones.
//
// The n×T exp-scores are held only where asked for (OMP reads every
// key's column); otherwise each block of queries' scores lives in a
// worker's scratch while its outputs and the keys' statistics are taken,
// and the fits recompute the kept keys' columns (keptScores): a 4k-token
// context's 4096 reference queries would hold 65 MB a head.
type attention struct {
	b     Block
	n, t  int          // queries, tokens
	e     []float32    // n×t, query-major; nil unless asked for
	max   []float32    // n: each row's largest score q_i·k_j (unscaled)
	mass  []float64    // n
	y     []float32    // n×d
	stats [][]float64  // the key statistics asked for, in order
	pool  *tensor.Pool // runs the products and passes (nil: the caller alone)
	ctx   context.Context
}

// attnRows is the number of reference queries newAttention takes at
// once: four tiles of the float32 product, whose scores (48 × 4k keys,
// 768 KiB) are still in cache when their exponentials, outputs and
// statistics are taken.
const attnRows = 48

// keyBlock is the number of keys a task sums the blocks' statistics of.
const keyBlock = 512

// newAttention computes b's reference attention on pool (or stops, with
// an error that wraps ctx's, once ctx is done), with each
// key's attention weight over the reference queries summarised as each
// of sels says (ByRMS, ByMax or ByMean: root mean square, maximum or
// mean; attention.stats in that order), and keeps every exp-score with
// keep. A statistic's sums are taken over each block of attnRows queries
// and the blocks' sums added in order: the same bits on any number of
// threads.
func newAttention(ctx context.Context, b Block, pool *tensor.Pool, keep bool, sels ...Selection) (*attention, error) {
	as, _, err := newAttentions(ctx, []Block{b}, pool, keep, sels...)
	if err != nil {
		return nil, err
	}
	return as[0], nil
}

// newAttentions is newAttention for several blocks at once, their
// blocks of queries as the tasks of one region of pool (so that no
// thread waits for another block's last task while it has none), each
// attention's later passes on pool too. Where a block's scores are not
// finite it returns that block's index (the first such) and the error;
// once ctx is done, −1 and an error that wraps ctx's (each task looks at
// ctx before its block of queries, so the region ends within a block's
// time on each thread; the attentions keep ctx for their fits).
func newAttentions(ctx context.Context, bs []Block, pool *tensor.Pool, keep bool, sels ...Selection) ([]*attention, int, error) {
	type head struct {
		keys, values tensor.Panels[float32]
		parts        [][]float64 // per statistic: per block of queries, t each
		bad          int         // the first query whose scores are not finite (n: none)
		badScore     float32
	}
	as, hs := make([]*attention, len(bs)), make([]head, len(bs))
	starts := make([]int, len(bs)+1) // the first task of each block
	maxT := 0
	for h, b := range bs {
		d, t := b.Dim, b.Len()
		n := len(b.Queries) / d
		a := &attention{b: b, n: n, t: t, max: make([]float32, n), mass: make([]float64, n), y: make([]float32, n*d), pool: pool, ctx: ctx}
		if keep {
			a.e = make([]float32, n*t)
		}
		as[h] = a
		blocks := (n + attnRows - 1) / attnRows
		hs[h].parts = make([][]float64, len(sels))
		for i := range sels {
			hs[h].parts[i] = make([]float64, blocks*t)
		}
		hs[h].bad = n
		starts[h+1] = starts[h] + blocks
		maxT = max(maxT, t)
	}
	// headOf returns the block a task of a region over starts belongs to.
	// The keys (transposed) and values as panels, side by side.
	pool.Run(2*len(bs), func(i, _ int) {
		b := bs[i/2]
		if i%2 == 0 {
			hs[i/2].keys.PackT(b.Keys, b.Len(), b.Dim, b.Dim)
		} else {
			hs[i/2].values.Pack(b.Values, b.Len(), b.Dim, b.Dim)
		}
	})
	// Scores E = Q·Kᵀ and outputs Y = softmax(E)·V as float32 products,
	// a block of queries per task.
	var scratch [][]float32
	if !keep {
		scratch = make([][]float32, pool.Threads())
	}
	var mu sync.Mutex
	pool.Run(starts[len(bs)], func(task, w int) {
		if ctx.Err() != nil {
			return
		}
		h := rangeOf(starts, task)
		a, hd, b := as[h], &hs[h], bs[h]
		d, t, n := b.Dim, a.t, a.n
		blk := task - starts[h]
		i0, i1 := blk*attnRows, min(n, (blk+1)*attnRows)
		var e []float32
		if keep {
			e = a.e[i0*t : i1*t]
		} else {
			if scratch[w] == nil {
				scratch[w] = make([]float32, attnRows*maxT)
			}
			e = scratch[w][:(i1-i0)*t]
		}
		hd.keys.Mul(e, t, b.Queries[i0*d:], i1-i0, d)
		for i := i0; i < i1; i++ {
			m, sum := kvcache.ExpShifted(e[(i-i0)*t:(i-i0+1)*t], b.Scale)
			if math.IsInf(float64(m), 0) || math.IsNaN(float64(m)) {
				mu.Lock()
				if i < hd.bad {
					hd.bad, hd.badScore = i, m
				}
				mu.Unlock()
			}
			a.max[i], a.mass[i] = m, float64(sum)
		}
		hd.values.Mul(a.y[i0*d:], d, e, i1-i0, t)
		for i := i0; i < i1; i++ {
			inv := float32(1 / a.mass[i])
			for k := range a.y[i*d : (i+1)*d] {
				a.y[i*d+k] *= inv
			}
		}
		mine := make([][]float64, len(sels))
		for s := range sels {
			mine[s] = hd.parts[s][blk*t : (blk+1)*t]
		}
		a.blockStats(sels, mine, e, i0, i1)
	})
	if err := ctx.Err(); err != nil {
		return nil, -1, fmt.Errorf("compact: reference attention: %w", err)
	}
	for h := range bs {
		if hs[h].bad < as[h].n {
			return nil, h, fmt.Errorf("compact: query %d: attention score %g is not finite", hs[h].bad, hs[h].badScore)
		}
	}
	// Each statistic: its blocks' parts added in order, keys in blocks
	// over the pool.
	kstarts := make([]int, len(bs)+1)
	for h, a := range as {
		a.stats = make([][]float64, len(sels))
		for s := range sels {
			a.stats[s] = make([]float64, a.t)
		}
		kstarts[h+1] = kstarts[h] + (a.t+keyBlock-1)/keyBlock
	}
	pool.Run(kstarts[len(bs)], func(task, _ int) {
		h := rangeOf(kstarts, task)
		a, parts := as[h], hs[h].parts
		kb := task - kstarts[h]
		j0, j1 := kb*keyBlock, min(a.t, (kb+1)*keyBlock)
		blocks := starts[h+1] - starts[h]
		for s, sel := range sels {
			out := a.stats[s][j0:j1]
			for blk := range blocks {
				part := parts[s][blk*a.t+j0 : blk*a.t+j1]
				for j, v := range part {
					if sel == ByMax {
						if v > out[j] {
							out[j] = v
						}
					} else {
						out[j] += v
					}
				}
			}
			for j := range out {
				switch sel {
				case ByRMS:
					out[j] = math.Sqrt(out[j] / float64(a.n))
				case ByMean:
					out[j] /= float64(a.n)
				}
			}
		}
	})
	return as, 0, nil
}

// blockStats sets parts[s] to the statistic sels[s] of the exp-scores e
// of the queries i0…i1−1 (rows of t), each weight e_ij/mass_i: the sum of
// squares (ByRMS), the maximum (ByMax) or the sum (ByMean) over the
// rows, in row order. The weights are finite and not negative, so the
// maximum needs no NaN rule; max+rms takes both in one loop.
func (a *attention) blockStats(sels []Selection, parts [][]float64, e []float32, i0, i1 int) {
	t := a.t
	for i := i0; i < i1; i++ {
		inv := 1 / a.mass[i]
		row := e[(i-i0)*t : (i-i0+1)*t]
		if len(sels) == 2 && sels[0] == ByMax && sels[1] == ByRMS {
			mx, sq := parts[0][:len(row)], parts[1][:len(row)]
			for j, x := range row {
				w := float64(x) * inv
				sq[j] += w * w
				if w > mx[j] {
					mx[j] = w
				}
			}
			continue
		}
		for s, sel := range sels {
			part := parts[s][:len(row)]
			switch sel {
			case ByRMS:
				for j, x := range row {
					w := float64(x) * inv
					part[j] += w * w
				}
			case ByMax:
				for j, x := range row {
					if w := float64(x) * inv; w > part[j] {
						part[j] = w
					}
				}
			default:
				for j, x := range row {
					part[j] += float64(x) * inv
				}
			}
		}
	}
}

// statsFor returns the key statistics that a selection reads.
func statsFor(sel Selection) []Selection {
	switch sel {
	case ByRMS, ByMax, ByMean:
		return []Selection{sel}
	case ByMaxRMS:
		return []Selection{ByMax, ByRMS}
	}
	return nil
}

// keptScores returns the exp-scores of the keys idx (n rows of
// len(idx)): gathered from the held ones, or computed again, the kept
// keys' scores as a float32 product of their own (each entry the same
// sum as in the whole product) shifted by each row's largest score.
func (a *attention) keptScores(idx []int) []float32 {
	n, t, d := a.n, len(idx), a.b.Dim
	out := make([]float32, n*t)
	if t == 0 {
		return out
	}
	if a.e != nil {
		a.pool.Run((n+attnRows-1)/attnRows, func(blk, _ int) {
			for i := blk * attnRows; i < min(n, (blk+1)*attnRows); i++ {
				row := a.e[i*a.t : (i+1)*a.t]
				for k, j := range idx {
					out[i*t+k] = row[j]
				}
			}
		})
		return out
	}
	kk := make([]float32, t*d)
	for k, j := range idx {
		copy(kk[k*d:(k+1)*d], a.b.Keys[j*d:(j+1)*d])
	}
	var keys tensor.Panels[float32]
	keys.PackT(kk, t, d, d)
	a.pool.Run((n+attnRows-1)/attnRows, func(blk, _ int) {
		i0, i1 := blk*attnRows, min(n, (blk+1)*attnRows)
		keys.Mul(out[i0*t:], t, a.b.Queries[i0*d:], i1-i0, d)
		for i := i0; i < i1; i++ {
			kvcache.ExpShiftedBy(out[i*t:(i+1)*t], a.max[i], a.b.Scale)
		}
	})
	return out
}

// maxThenRMS returns k keys, ascending: the (k+1)/2 with the largest
// attention weight from any reference query, then the rest by RMS
// attention among the others.
// newAttention must have computed statsFor(ByMaxRMS).
func (a *attention) maxThenRMS(k int) []int {
	first := topK(a.stats[0], (k+1)/2)
	rms := slices.Clone(a.stats[1])
	for _, j := range first {
		rms[j] = math.Inf(-1)
	}
	return slices.Sorted(slices.Values(append(first, topK(rms, k-len(first))...)))
}

// column writes key j's exp-scores (column j of e) to dst.
func (a *attention) column(dst []float64, j int) {
	for i := range a.n {
		dst[i] = float64(a.e[i*a.t+j])
	}
}

// topK returns the positions of the k largest scores (ties to the lower
// position), ascending.
func topK(scores []float64, k int) []int { return topKTie(scores, nil, k) }

// topKTie is topK with ties in scores broken by the larger tie value
// first (tie nil: none), then the lower position.
func topKTie(scores, tie []float64, k int) []int {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(x, y int) int {
		if c := cmp.Compare(scores[y], scores[x]); c != 0 || tie == nil {
			return c
		}
		return cmp.Compare(tie[y], tie[x])
	})
	out := slices.Clone(idx[:k])
	slices.Sort(out)
	return out
}

// sortByIndex sorts idx ascending and permutes w along with it.
func sortByIndex(idx []int, w []float64) {
	order := make([]int, len(idx))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(x, y int) int { return cmp.Compare(idx[x], idx[y]) })
	i2, w2 := make([]int, len(idx)), make([]float64, len(w))
	for k, o := range order {
		i2[k], w2[k] = idx[o], w[o]
	}
	copy(idx, i2)
	copy(w, w2)
}

// rangeOf returns which of the consecutive ranges beginning at starts
// (ascending, starts[0] ≤ i) holds i: the last one that begins at or
// before it (of ranges that begin at the same place, the last: the
// others are empty).
func rangeOf(starts []int, i int) int {
	r, _ := slices.BinarySearch(starts, i+1)
	return r - 1
}
