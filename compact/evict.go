package compact

import (
	"math"
	"slices"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/tensor"
)

// The eviction baselines choose which of the block's tokens to keep as
// they are (β = 0, original values); docs/ALGORITHMS.md §12.

// snapWindow is SnapKV's observation window: the context's last queries,
// whose attention votes for the keys to keep (the SnapKV paper's 32).
const snapWindow = 32

// snapPool is the width of SnapKV's max-pooling over key positions,
// which keeps a voted token's neighbours with it.
const snapPool = 7

// streamingSinks is the number of first tokens StreamingLLM keeps (the
// "attention sinks").
const streamingSinks = 4

// pyramidRatio is PyramidKV's ratio of the first layer's budget to the
// last's (its β = 20).
const pyramidRatio = 20

// queryPos returns the position of the trace's i-th recorded query.
func queryPos(tr *kvcache.Trace, i int) int {
	if tr.QPos == nil {
		return i
	}
	return tr.QPos[i]
}

// causalWeights calls f with the causal softmax weights (scale·q·kⱼ over
// the keys of positions j ≤ p) of every query head of KV head h's group,
// for each recorded query whose position p is in [from, to): the
// attention the prefill computed.
func causalWeights(tr *kvcache.Trace, h, from, to int, f func(w []float32)) {
	sh := tr.Shape
	d, g := sh.HeadDim, sh.Group()
	qd := sh.QHeads * d
	keys := headRows(tr.K, sh.KVHeads, d, h, 0, tr.Len())
	s := make([]float32, tr.Len())
	for i := range tr.Queries() {
		p := queryPos(tr, i)
		if p < from || p >= to {
			continue
		}
		for j := range g {
			q := tr.Q[i*qd+(h*g+j)*d : i*qd+(h*g+j+1)*d]
			w := s[:p+1]
			tensor.DotRowsF32(w, q, keys[:(p+1)*d])
			softmaxScaled(w, tr.Scale)
			f(w)
		}
	}
}

// softmaxScaled replaces s by softmax(scale·s), the maximum subtracted
// first.
func softmaxScaled(s []float32, scale float32) {
	m := slices.Max(s)
	var sum float64
	for i, x := range s {
		e := math.Exp(float64(scale) * float64(x-m))
		s[i] = float32(e)
		sum += e
	}
	inv := float32(1 / sum)
	for i := range s {
		s[i] *= inv
	}
}

// snapKV returns the t of the block's tokens SnapKV keeps for KV head h:
// the last min(32, t/2) tokens, and the rest by the attention of the
// context's last 32 queries (summed over them and the group's query
// heads, max-pooled over 7 positions; among equal pooled votes, a
// token's own votes first).
func snapKV(tr *kvcache.Trace, h, block, t int) []int {
	recent := min(snapWindow, t/2)
	n := tr.Len()
	votes := make([]float64, block-recent)
	causalWeights(tr, h, max(0, n-snapWindow), n, func(w []float32) {
		for j := range min(len(votes), len(w)) {
			votes[j] += float64(w[j])
		}
	})
	pooled := make([]float64, len(votes))
	for j := range pooled {
		for k := max(0, j-snapPool/2); k <= min(len(votes)-1, j+snapPool/2); k++ {
			pooled[j] = max(pooled[j], votes[k])
		}
	}
	return append(topKTie(pooled, votes, t-recent), lastN(block, recent)...)
}

// h2o returns the t of the block's tokens H2O keeps for KV head h: the
// last t/2, and the rest by the attention they received from every
// recorded query of the context (causal, summed over the group's query
// heads): the "heavy hitters".
func h2o(tr *kvcache.Trace, h, block, t int) []int {
	recent := t / 2
	acc := make([]float64, block-recent)
	causalWeights(tr, h, 0, tr.Len(), func(w []float32) {
		for j := range min(len(acc), len(w)) {
			acc[j] += float64(w[j])
		}
	})
	return append(topK(acc, t-recent), lastN(block, recent)...)
}

// streaming returns the first min(4, t) tokens and the last of the block,
// t in all.
func streaming(block, t int) []int {
	sinks := min(streamingSinks, t)
	return append(firstN(sinks), lastN(block, t-sinks)...)
}

// firstN returns 0, 1, …, k−1.
func firstN(k int) []int {
	out := make([]int, k)
	for i := range out {
		out[i] = i
	}
	return out
}

// lastN returns the last k positions before end, ascending.
func lastN(end, k int) []int {
	out := make([]int, k)
	for i := range out {
		out[i] = end - k + i
	}
	return out
}

// pyramid returns PyramidKV's budgets: per layer, from 2t − t/20 at the
// first layer down to t/20 at the last in equal steps (t on average), the
// same for every KV head of a layer, at least 1 and at most the block.
func pyramid(layers, heads, t, block int) [][]int {
	lo := max(1, t/pyramidRatio)
	hi := 2*t - lo
	out := make([][]int, layers)
	for l := range out {
		b := t
		if layers > 1 {
			b = hi - (hi-lo)*l/(layers-1)
		}
		out[l] = make([]int, heads)
		for h := range out[l] {
			out[l][h] = min(max(b, 1), block)
		}
	}
	return out
}
