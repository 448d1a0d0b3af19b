package compact

import (
	"cmp"
	"fmt"
	"math"
	"slices"

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
	n, t int       // queries, tokens
	e    []float32 // n×t, query-major
	mass []float64 // n
	y    []float32 // n×d
}

func newAttention(b Block) (*attention, error) {
	d, t := b.Dim, b.Len()
	n := len(b.Queries) / d
	a := &attention{b: b, n: n, t: t, e: make([]float32, n*t), mass: make([]float64, n), y: make([]float32, n*d)}
	// Scores in blocks of keys that stay in cache while every query
	// passes over them.
	for j0 := 0; j0 < t; j0 += attnBlock {
		j1 := min(t, j0+attnBlock)
		for i := range n {
			tensor.DotRowsF32(a.e[i*t+j0:i*t+j1], b.Queries[i*d:(i+1)*d], b.Keys[j0*d:j1*d])
		}
	}
	s := float64(b.Scale)
	for i := range n {
		row := a.e[i*t : (i+1)*t]
		m := slices.Max(row)
		if math.IsInf(float64(m), 0) || math.IsNaN(float64(m)) {
			return nil, fmt.Errorf("compact: query %d: attention score %g is not finite", i, m)
		}
		var sum float64
		for j, x := range row {
			e := math.Exp(s * (float64(x) - float64(m)))
			row[j] = float32(e)
			sum += e
		}
		a.mass[i] = sum
	}
	// Outputs y_i = Σ_j e_ij·v_j / mass_i, the values in blocks likewise.
	for j0 := 0; j0 < t; j0 += attnBlock {
		j1 := min(t, j0+attnBlock)
		for i := range n {
			tensor.WeightedSumF32(a.y[i*d:(i+1)*d], a.e[i*t+j0:i*t+j1], b.Values[j0*d:j1*d])
		}
	}
	for i := range n {
		inv := float32(1 / a.mass[i])
		for k := range a.y[i*d : (i+1)*d] {
			a.y[i*d+k] *= inv
		}
	}
	return a, nil
}

// attnBlock is the number of keys (or values) newAttention works on at
// once: 256 rows of head dimension 128 are 128 KiB, which stay in a
// core's L2 cache while all the queries pass over them.
const attnBlock = 256

// keyScores returns each key's attention weight over the reference
// queries, summarised as sel says: root mean square, maximum or mean.
func (a *attention) keyScores(sel Selection) []float64 {
	sc := make([]float64, a.t)
	for i := range a.n {
		inv := 1 / a.mass[i]
		for j, e := range a.e[i*a.t : (i+1)*a.t] {
			w := float64(e) * inv
			switch sel {
			case ByRMS:
				sc[j] += w * w
			case ByMax:
				sc[j] = max(sc[j], w)
			default:
				sc[j] += w
			}
		}
	}
	switch sel {
	case ByRMS:
		for j := range sc {
			sc[j] = math.Sqrt(sc[j] / float64(a.n))
		}
	case ByMean:
		for j := range sc {
			sc[j] /= float64(a.n)
		}
	}
	return sc
}

// maxThenRMS returns k keys, ascending: the (k+1)/2 with the largest
// attention weight from any reference query, then the rest by RMS
// attention among the others.
func (a *attention) maxThenRMS(k int) []int {
	first := topK(a.keyScores(ByMax), (k+1)/2)
	rms := a.keyScores(ByRMS)
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
