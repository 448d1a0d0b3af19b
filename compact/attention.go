package compact

import (
	"cmp"
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
type attention struct {
	b    Block
	n, t int          // queries, tokens
	e    []float32    // n×t, query-major
	mass []float64    // n
	y    []float32    // n×d
	pool *tensor.Pool // runs the products and passes over e (nil: the caller alone)
}

// attnRows is the number of reference queries newAttention takes at
// once: four tiles of the float32 product, whose scores (48 × 4k keys,
// 768 KiB) are still in cache when their exponentials and outputs are
// taken.
const attnRows = 48

func newAttention(b Block, pool *tensor.Pool) (*attention, error) {
	d, t := b.Dim, b.Len()
	n := len(b.Queries) / d
	a := &attention{b: b, n: n, t: t, e: make([]float32, n*t), mass: make([]float64, n), y: make([]float32, n*d), pool: pool}
	// Scores E = Q·Kᵀ and outputs Y = softmax(E)·V as float32 products,
	// a block of queries per task.
	var keys, values tensor.Panels[float32]
	keys.PackT(b.Keys, t, d, d)
	values.Pack(b.Values, t, d, d)
	var mu sync.Mutex
	bad, badScore := n, float32(0)
	a.pool.Run((n+attnRows-1)/attnRows, func(blk, _ int) {
		i0, i1 := blk*attnRows, min(n, (blk+1)*attnRows)
		keys.Mul(a.e[i0*t:], t, b.Queries[i0*d:], i1-i0, d)
		for i := i0; i < i1; i++ {
			m, sum := kvcache.ExpShifted(a.e[i*t:(i+1)*t], b.Scale)
			if math.IsInf(float64(m), 0) || math.IsNaN(float64(m)) {
				mu.Lock()
				if i < bad {
					bad, badScore = i, m
				}
				mu.Unlock()
			}
			a.mass[i] = float64(sum)
		}
		values.Mul(a.y[i0*d:], d, a.e[i0*t:], i1-i0, t)
		for i := i0; i < i1; i++ {
			inv := float32(1 / a.mass[i])
			for k := range a.y[i*d : (i+1)*d] {
				a.y[i*d+k] *= inv
			}
		}
	})
	if bad < n {
		return nil, fmt.Errorf("compact: query %d: attention score %g is not finite", bad, badScore)
	}
	return a, nil
}

// keyBlock is the number of keys a task of keyScores sums over all the
// queries: its running sums stay in cache.
const keyBlock = 512

// keyScores returns each key's attention weight over the reference
// queries, summarised as sel says: root mean square, maximum or mean.
func (a *attention) keyScores(sel Selection) []float64 {
	return a.keyStats(sel)[0]
}

// keyStats returns keyScores of each selection in sels (ByRMS, ByMax or
// ByMean), all from one pass over the weights.
func (a *attention) keyStats(sels ...Selection) [][]float64 {
	out := make([][]float64, len(sels))
	var sum, sq, mx []float64
	for i, sel := range sels {
		out[i] = make([]float64, a.t)
		switch sel {
		case ByRMS:
			sq = out[i]
		case ByMax:
			mx = out[i]
		default:
			sum = out[i]
		}
	}
	a.pool.Run((a.t+keyBlock-1)/keyBlock, func(blk, _ int) {
		j0, j1 := blk*keyBlock, min(a.t, (blk+1)*keyBlock)
		for i := range a.n {
			inv := 1 / a.mass[i]
			row := a.e[i*a.t+j0 : i*a.t+j1]
			switch {
			case sq != nil && mx != nil && sum == nil:
				sq, mx := sq[j0:j1], mx[j0:j1]
				for j, e := range row {
					w := float64(e) * inv
					sq[j] += w * w
					mx[j] = max(mx[j], w)
				}
			default:
				for j, e := range row {
					w := float64(e) * inv
					if sq != nil {
						sq[j0+j] += w * w
					}
					if mx != nil {
						mx[j0+j] = max(mx[j0+j], w)
					}
					if sum != nil {
						sum[j0+j] += w
					}
				}
			}
		}
		for j := j0; j < j1; j++ {
			if sq != nil {
				sq[j] = math.Sqrt(sq[j] / float64(a.n))
			}
			if sum != nil {
				sum[j] /= float64(a.n)
			}
		}
	})
	return out
}

// maxThenRMS returns k keys, ascending: the (k+1)/2 with the largest
// attention weight from any reference query, then the rest by RMS
// attention among the others.
func (a *attention) maxThenRMS(k int) []int {
	st := a.keyStats(ByMax, ByRMS)
	first := topK(st[0], (k+1)/2)
	rms := st[1]
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
