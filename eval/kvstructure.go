package eval

import (
	"fmt"
	"math"
	"slices"
)

// KVStructureRow is what one KV head of one layer holds that a KV format
// can use or must survive, measured on a recorded trace: where its
// attention goes, how far its keys are from centred, and how uneven their
// channels are.
type KVStructureRow struct {
	Layer int `json:"layer"`
	Head  int `json:"head"`
	// Attention mass, averaged over the group's query heads and the
	// compared positions: on the first token (an attention sink when
	// large), on tokens 1–3, and on the Recent most recent tokens (what
	// an fp16 window of that length keeps exact). The rest goes to the
	// tokens in between.
	Sink, First, Recent float64
	// Key0 is ‖k_0‖ over the median key norm of the other tokens.
	Key0 float64 `json:"key0_norm_ratio"`
	// MeanShare is ‖mean k‖²/E‖k‖² of the keys as cached (after RoPE);
	// PreMeanShare the same before RoPE (the trace's Rope turned back),
	// the share centred keys take out; ValueMeanShare for the values.
	MeanShare      float64 `json:"key_mean_share"`
	PreMeanShare   float64 `json:"key_premean_share"`
	ValueMeanShare float64 `json:"value_mean_share"`
	// TopChannel is the largest per-channel energy E[x_c²] of the keys
	// over the mean one (outlier channels); CenteredTop the same after
	// the pre-RoPE mean, turned to each position, is taken out.
	TopChannel  float64 `json:"key_top_channel"`
	CenteredTop float64 `json:"key_centered_top_channel"`
	ValueTop    float64 `json:"value_top_channel"`
}

// KVStructure measures, per layer and KV head of the traces (RecordKV's,
// every token's query recorded), the structure that KVStructureRow
// describes. Attention is the exact softmax of the recorded queries over
// the keys up to their position, at positions first, first+every, ….
// recent is the length of the recent span whose mass is reported.
func KVStructure(traces []*KVTrace, first, every, recent int) ([]KVStructureRow, error) {
	if first < 0 || every < 1 || recent < 0 {
		return nil, fmt.Errorf("eval: kv structure: first %d, every %d, recent %d", first, every, recent)
	}
	var rows []KVStructureRow
	for layer, tr := range traces {
		if tr == nil {
			continue
		}
		sh := tr.Shape
		n, d, g := tr.Len(), sh.HeadDim, sh.Group()
		if n < 2 || tr.Queries() != n || tr.QPos != nil {
			return nil, fmt.Errorf("eval: kv structure: layer %d: %d tokens and %d queries; want every position's query and at least 2 tokens", layer, n, tr.Queries())
		}
		for h := range sh.KVHeads {
			row := KVStructureRow{Layer: layer, Head: h}
			keys := headVectors(tr.K, sh.KVHeads, d, h)
			values := headVectors(tr.V, sh.KVHeads, d, h)
			row.Sink, row.First, row.Recent = attentionMass(tr, h, g, keys, first, every, recent)
			norms := make([]float64, n-1)
			for t := 1; t < n; t++ {
				norms[t-1] = norm64(keys[t])
			}
			slices.Sort(norms)
			row.Key0 = norm64(keys[0]) / norms[len(norms)/2]
			pre := make([][]float64, n)
			for t, k := range keys {
				pre[t] = make([]float64, d)
				sh.Rope.Rotate(pre[t], k, -t)
			}
			row.MeanShare = meanShare(keys)
			row.PreMeanShare = meanShare(pre)
			row.ValueMeanShare = meanShare(values)
			mu := meanVector(pre)
			centred := make([][]float64, n)
			for t, k := range keys {
				centred[t] = make([]float64, d)
				sh.Rope.Rotate(centred[t], mu, t)
				for i := range k {
					centred[t][i] = k[i] - centred[t][i]
				}
			}
			row.TopChannel, row.CenteredTop, row.ValueTop = topChannel(keys), topChannel(centred), topChannel(values)
			rows = append(rows, row)
		}
	}
	return rows, nil
}

// headVectors returns KV head h's vectors (d each, float64) from rows of
// heads·d values.
func headVectors(x []float32, heads, d, h int) [][]float64 {
	n := len(x) / (heads * d)
	out := make([][]float64, n)
	for t := range out {
		v := make([]float64, d)
		for i, f := range x[(t*heads+h)*d : (t*heads+h+1)*d] {
			v[i] = float64(f)
		}
		out[t] = v
	}
	return out
}

// attentionMass returns the mean attention weight of KV head h's query
// heads on token 0, on tokens 1–3 and on the recent most recent tokens
// (token 0–3 left out), at positions first, first+every, ….
func attentionMass(tr *KVTrace, h, g int, keys [][]float64, first, every, recent int) (sink, firstMass, recentMass float64) {
	sh := tr.Shape
	d, qd := sh.HeadDim, sh.QHeads*sh.HeadDim
	scale := float64(tr.Scale)
	count := 0
	s := make([]float64, len(keys))
	for p := first; p < len(keys); p += every {
		for j := h * g; j < (h+1)*g; j++ {
			q := tr.Q[p*qd+j*d : p*qd+(j+1)*d]
			m := math.Inf(-1)
			for t := 0; t <= p; t++ {
				var a float64
				for i, v := range keys[t] {
					a += float64(q[i]) * v
				}
				s[t] = scale * a
				m = math.Max(m, s[t])
			}
			var sum float64
			for t := 0; t <= p; t++ {
				s[t] = math.Exp(s[t] - m)
				sum += s[t]
			}
			for t := 0; t <= p; t++ {
				w := s[t] / sum
				switch {
				case t == 0:
					sink += w
				case t < 4:
					firstMass += w
				case t > p-recent:
					recentMass += w
				}
			}
			count++
		}
	}
	if count == 0 {
		return 0, 0, 0
	}
	c := float64(count)
	return sink / c, firstMass / c, recentMass / c
}

func meanVector(xs [][]float64) []float64 {
	mu := make([]float64, len(xs[0]))
	for _, x := range xs {
		for i, v := range x {
			mu[i] += v
		}
	}
	for i := range mu {
		mu[i] /= float64(len(xs))
	}
	return mu
}

// meanShare returns ‖mean x‖²/E‖x‖² (0 for all-zero vectors).
func meanShare(xs [][]float64) float64 {
	var e float64
	for _, x := range xs {
		n := norm64(x)
		e += n * n
	}
	if e == 0 {
		return 0
	}
	m := norm64(meanVector(xs))
	return m * m / (e / float64(len(xs)))
}

// topChannel returns the largest per-channel energy over the mean one.
func topChannel(xs [][]float64) float64 {
	e := make([]float64, len(xs[0]))
	for _, x := range xs {
		for i, v := range x {
			e[i] += v * v
		}
	}
	var sum float64
	for _, v := range e {
		sum += v
	}
	if sum == 0 {
		return 0
	}
	return slices.Max(e) / (sum / float64(len(e)))
}

func norm64(x []float64) float64 {
	var s float64
	for _, v := range x {
		s += v * v
	}
	return math.Sqrt(s)
}
