package kvcache

import (
	"math"
	"slices"

	"github.com/turbomem/turbomem/tensor"
)

// Where a tiered format spends its high rate. The attention beyond the
// fp16 window falls off with age at very different speeds in different
// layers and heads: on the model suite some heads keep 90% of their mass
// in the window, others 11–28% and spread the rest over hundreds of
// tokens (BENCHMARKS.md, "Tiered shares per head"). A HIGH>LOW~BITS format
// therefore gives each KV head of each layer a share of its own, from the
// calibration's attention profile (HeadCovariance.Attn): the bands of
// ages past the window that carry the most squared attention weight over
// the whole model get the high rate, as reverse water-filling would hand
// out bits, so that the shares average the format's (the codes then hold
// at most BITS bits at every length, to within one token per head).

// tierBin is the width in ages of the bins the shares are chosen in.
const tierBin = 16

// maxProfileAge bounds the ages an attention profile covers (and a
// covariance file may hold).
const maxProfileAge = 1 << 17

// attentionProfile returns, for layer l's KV head h, the sum of the
// squared attention weights of the recorded queries at positions from
// the middle of each window on (every fourth; every query head of the
// group; exact softmax over the window's keys) on the key of each age,
// or nil if no queries were recorded. It is a sum, not a mean per query:
// ages beyond half the window are seen by fewer of the sampled queries,
// as by the queries that eval's perplexity windows score (BENCHMARKS.md,
// "Tiered shares per head"), so heads that look that far back rank a
// little lower than a mean per query would put them.
func attentionProfile(windows [][]*Trace, l, h int) []float32 {
	var prof []float64
	var w []float64
	for _, win := range windows {
		tr := win[l]
		sh := tr.Shape
		d, g, n := sh.HeadDim, sh.Group(), tr.Len()
		if tr.Queries() == 0 || n < 2 {
			continue
		}
		if len(prof) < n {
			prof = append(prof, make([]float64, min(n, maxProfileAge)-len(prof))...)
		}
		for i := range tr.Queries() {
			pos := i
			if tr.QPos != nil {
				pos = tr.QPos[i]
			}
			if pos < n/2 || pos >= n || pos%4 != 0 {
				continue
			}
			w = slices.Grow(w[:0], pos+1)[:pos+1]
			for j := h * g; j < (h+1)*g; j++ {
				q := tr.Q[(i*sh.QHeads+j)*d:][:d]
				softmaxScores(w, q, tr.K, sh.KVHeads, h, float64(tr.Scale))
				for u, p := range w {
					if age := pos - u; age < len(prof) {
						prof[age] += p * p
					}
				}
			}
		}
	}
	if prof == nil {
		return nil
	}
	out := make([]float32, len(prof))
	for i, v := range prof {
		out[i] = float32(v)
	}
	return out
}

// softmaxScores sets w[u] to the attention weight of query q on the key
// of KV head h of token u (keys: rows of heads·len(q) values), for every
// u < len(w): the exact softmax of the scaled dot products.
func softmaxScores(w []float64, q, keys []float32, heads, h int, scale float64) {
	d := len(q)
	for u := range w {
		w[u] = float64(tensor.DotF32(q, keys[(u*heads+h)*d:][:d])) * scale
	}
	softmax64(w)
}

// softmax64 replaces the scores w by their softmax weights.
func softmax64(w []float64) {
	m := math.Inf(-1)
	for _, x := range w {
		m = max(m, x)
	}
	var z float64
	for u := range w {
		w[u] = math.Exp(w[u] - m)
		z += w[u]
	}
	for u := range w {
		w[u] /= z
	}
}

// Profiled reports whether every head's calibration holds an attention
// profile (covariances measured before profiles were recorded hold
// none; their tiered formats give every head the same share).
func (c *Covariances) Profiled() bool {
	for _, hs := range c.Layers {
		for _, hc := range hs {
			if hc.Attn == nil {
				return false
			}
		}
	}
	return len(c.Layers) > 0
}

// tierShareKey names a set of per-head shares.
type tierShareKey struct {
	window int
	share  float64
}

// tierShares returns each layer's and KV head's share of its compressed
// tokens to hold at the high rate, for a tiered format of the given mean
// share with an fp16 window of the given length: the bins of tierBin ages
// past the window, each head's squared attention weight in them made
// non-increasing with age, the heaviest over every layer and head taken
// until they cover share of the compressed tokens of the calibration's
// length (the profiles' length). nil when the covariances hold no
// profiles (then every head takes the format's share).
func (c *Covariances) tierShares(window int, share float64) [][]float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := tierShareKey{window, share}
	if s, ok := c.shares[k]; ok {
		return s
	}
	s := tierSharesOf(c.Layers, window, share)
	if c.shares == nil {
		c.shares = map[tierShareKey][][]float64{}
	}
	c.shares[k] = s
	return s
}

// tierSharesOf is tierShares' allocation over the heads' profiles.
func tierSharesOf(layers [][]HeadCovariance, window int, share float64) [][]float64 {
	type bin struct {
		l, h, b int
		v       float64
	}
	var bins []bin
	ages, heads := 0, 0
	for _, hs := range layers {
		for _, hc := range hs {
			if len(hc.Attn) < window+tierBin {
				return nil
			}
			if heads == 0 || len(hc.Attn) < ages {
				ages = len(hc.Attn)
			}
			heads++
		}
	}
	if heads == 0 {
		return nil
	}
	nb := (ages - window) / tierBin
	for l, hs := range layers {
		for h, hc := range hs {
			prev := math.Inf(1)
			for b := range nb {
				var v float64
				for _, x := range hc.Attn[window+b*tierBin:][:tierBin] {
					v += float64(x)
				}
				prev = min(prev, v)
				bins = append(bins, bin{l, h, b, prev})
			}
		}
	}
	slices.SortStableFunc(bins, func(x, y bin) int {
		switch {
		case x.v > y.v:
			return -1
		case x.v < y.v:
			return 1
		}
		return x.b - y.b
	})
	take := int(math.Floor(float64(heads*nb)*share + 1e-9))
	count := make([][]int, len(layers))
	for l, hs := range layers {
		count[l] = make([]int, len(hs))
	}
	for _, b := range bins[:take] {
		count[b.l][b.h]++
	}
	out := make([][]float64, len(layers))
	for l, hs := range count {
		out[l] = make([]float64, len(hs))
		for h, n := range hs {
			out[l][h] = float64(n) / float64(nb)
		}
	}
	return out
}
