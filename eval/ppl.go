// Package eval measures what a model configuration answers: perplexity on
// held-out text, agreement of its next-token distributions with a
// reference run (KL divergence, top-1), and retrieval from long contexts
// (needle in a haystack).
package eval

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/turbomem/turbomem/model"
)

// PPLOptions configures Perplexity.
type PPLOptions struct {
	// Ctx is the window length in tokens (llama-perplexity's -c).
	Ctx int
	// NewCache makes the KV caches under test (model.F16Cache if nil).
	NewCache model.NewCache
	// MaxChunks limits the number of windows (0: all).
	MaxChunks int
	// TopK is the number of most likely tokens whose log-probabilities
	// each scored position keeps for KL divergence (0: 64).
	TopK int
	// Progress, if set, is called after each window.
	Progress func(done, total int)
}

// PPLResult is the outcome of Perplexity.
type PPLResult struct {
	Tokens    int     `json:"tokens"` // scored positions
	Chunks    int     `json:"chunks"`
	NLL       float64 `json:"nll"` // mean negative log-likelihood, nats
	PPL       float64 `json:"ppl"`
	PPLStdErr float64 `json:"ppl_stderr"`
	// Dists holds, per scored position, the top-K log-probabilities: what
	// a later run is compared with.
	Dists *Dists `json:"-"`
}

// Perplexity scores ids the way llama.cpp's llama-perplexity does, so the
// numbers compare: the tokens (BOS first, as tokenized) are cut into
// windows of Ctx tokens, each window's first token is replaced by BOS
// (when bos ≥ 0), and only the second half of each window is scored, so
// every scored token has at least Ctx/2 tokens of context.
func Perplexity(ctx context.Context, m *model.Model, ids []int32, bos int32, o PPLOptions) (PPLResult, error) {
	if o.Ctx < 4 || o.Ctx > m.Config.Context {
		return PPLResult{}, fmt.Errorf("eval: window of %d tokens: want 4 to the model's context %d", o.Ctx, m.Config.Context)
	}
	topK := o.TopK
	if topK == 0 {
		topK = 64
	}
	if topK < 1 || topK > m.Config.Vocab {
		return PPLResult{}, fmt.Errorf("eval: top-k %d out of range [1, %d]", topK, m.Config.Vocab)
	}
	chunks := len(ids) / o.Ctx
	if o.MaxChunks > 0 {
		chunks = min(chunks, o.MaxChunks)
	}
	if chunks == 0 {
		return PPLResult{}, fmt.Errorf("eval: %d tokens make no window of %d", len(ids), o.Ctx)
	}
	res := PPLResult{Chunks: chunks, Dists: &Dists{K: topK, Vocab: m.Config.Vocab}}
	first := o.Ctx / 2
	var sum, sumSq float64
	window := make([]int32, o.Ctx)
	for c := range chunks {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		copy(window, ids[c*o.Ctx:(c+1)*o.Ctx])
		if bos >= 0 {
			window[0] = bos
		}
		s, err := m.NewSession(o.NewCache, o.Ctx)
		if err != nil {
			return res, err
		}
		logits, err := s.Forward(window[:o.Ctx-1], true)
		if err != nil {
			return res, err
		}
		v := m.Config.Vocab
		for pos := first - 1; pos < o.Ctx-1; pos++ {
			lp := logSoftmax(logits[pos*v : (pos+1)*v])
			nll := -lp[window[pos+1]]
			sum += nll
			sumSq += nll * nll
			res.Tokens++
			res.Dists.add(lp, window[pos+1], topK)
		}
		if o.Progress != nil {
			o.Progress(c+1, chunks)
		}
	}
	n := float64(res.Tokens)
	res.NLL = sum / n
	res.PPL = math.Exp(res.NLL)
	// Standard error of exp(mean): exp(mean)·sd/√n, as llama-perplexity.
	variance := math.Max(sumSq/n-res.NLL*res.NLL, 0)
	res.PPLStdErr = res.PPL * math.Sqrt(variance/math.Max(n-1, 1))
	return res, nil
}

// logSoftmax returns log(softmax(x)) in float64.
func logSoftmax(x []float32) []float64 {
	m := math.Inf(-1)
	for _, v := range x {
		m = math.Max(m, float64(v))
	}
	var sum float64
	for _, v := range x {
		sum += math.Exp(float64(v) - m)
	}
	lse := m + math.Log(sum)
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v) - lse
	}
	return out
}

// Dists holds per-position next-token distributions, reduced to the K most
// likely tokens: their ids and log-probabilities, plus the log-probability
// of the token that actually came next.
type Dists struct {
	K, Vocab int
	IDs      []int32   // positions × K
	LogP     []float32 // positions × K, descending
	Target   []int32   // the actual next token per position
	TargetLP []float32 // its log-probability
}

// Len returns the number of positions.
func (d *Dists) Len() int { return len(d.Target) }

func (d *Dists) add(lp []float64, target int32, k int) {
	idx := topIndices(lp, k)
	for _, i := range idx {
		d.IDs = append(d.IDs, int32(i))
		d.LogP = append(d.LogP, float32(lp[i]))
	}
	d.Target = append(d.Target, target)
	d.TargetLP = append(d.TargetLP, float32(lp[target]))
}

// topIndices returns the indices of the k largest values, largest first
// (lower index first among equals), in O(n log k) with a min-heap.
func topIndices(x []float64, k int) []int {
	h := make([]int, 0, k)        // min-heap by (value, then higher index first)
	less := func(a, b int) bool { // a is "smaller" than b
		if x[a] != x[b] {
			return x[a] < x[b]
		}
		return a > b
	}
	down := func(i int) {
		for {
			l, s := 2*i+1, i
			if l < len(h) && less(h[l], h[s]) {
				s = l
			}
			if r := l + 1; r < len(h) && less(h[r], h[s]) {
				s = r
			}
			if s == i {
				return
			}
			h[i], h[s] = h[s], h[i]
			i = s
		}
	}
	for i := range x {
		if len(h) < k {
			h = append(h, i)
			for j := len(h) - 1; j > 0; {
				p := (j - 1) / 2
				if !less(h[j], h[p]) {
					break
				}
				h[j], h[p] = h[p], h[j]
				j = p
			}
			continue
		}
		if less(h[0], i) {
			h[0] = i
			down(0)
		}
	}
	sort.Slice(h, func(a, b int) bool { return less(h[b], h[a]) })
	return h
}

// Agreement compares a run's distributions with a reference run's on the
// same positions.
type Agreement struct {
	KLMean float64 `json:"kl_mean"`
	KLP99  float64 `json:"kl_p99"`
	KLMax  float64 `json:"kl_max"`
	// Top1 is the fraction of positions where both runs' most likely
	// token is the same.
	Top1 float64 `json:"top1"`
	// DeltaNLL is the run's mean NLL minus the reference's.
	DeltaNLL float64 `json:"delta_nll"`
}

// ErrMismatch reports distributions from runs that do not line up.
var ErrMismatch = errors.New("eval: runs do not match")

// Compare measures how far run is from ref. KL(ref ‖ run) is computed over
// the reference's top-K tokens plus one bucket for the rest of the
// vocabulary: merging tokens into a bucket can only lower KL (the
// log-sum inequality), so this is a lower bound that is tight when the
// top K hold nearly all the mass. The run's probabilities of the
// reference's top-K tokens come from its own top-K where present; tokens
// outside it share what its top-K leaves.
func Compare(ref, run *Dists) (Agreement, error) {
	if ref.Len() != run.Len() || ref.Vocab != run.Vocab {
		return Agreement{}, fmt.Errorf("%w: %d positions × %d vocabulary vs %d × %d", ErrMismatch, ref.Len(), ref.Vocab, run.Len(), run.Vocab)
	}
	n := ref.Len()
	kls := make([]float64, n)
	var top1 int
	var nllRef, nllRun float64
	for p := range n {
		if ref.Target[p] != run.Target[p] {
			return Agreement{}, fmt.Errorf("%w: position %d scores token %d vs %d", ErrMismatch, p, ref.Target[p], run.Target[p])
		}
		nllRef -= float64(ref.TargetLP[p])
		nllRun -= float64(run.TargetLP[p])
		rIDs, rLP := ref.IDs[p*ref.K:(p+1)*ref.K], ref.LogP[p*ref.K:(p+1)*ref.K]
		qIDs, qLP := run.IDs[p*run.K:(p+1)*run.K], run.LogP[p*run.K:(p+1)*run.K]
		if rIDs[0] == qIDs[0] {
			top1++
		}
		q := make(map[int32]float64, len(qIDs))
		var qMass float64
		for i, id := range qIDs {
			pr := math.Exp(float64(qLP[i]))
			q[id] = pr
			qMass += pr
		}
		// Tokens outside the run's top-K share its leftover mass evenly.
		outside := float64(run.Vocab - run.K)
		leftover := math.Max(1-qMass, 0)
		var kl, pMass, qIn float64
		for i, id := range rIDs {
			pr := math.Exp(float64(rLP[i]))
			qi, ok := q[id]
			if !ok {
				qi = leftover / math.Max(outside, 1)
			}
			qi = math.Max(qi, 1e-30)
			kl += pr * (float64(rLP[i]) - math.Log(qi))
			pMass += pr
			qIn += qi
		}
		if pRest, qRest := 1-pMass, 1-qIn; pRest > 1e-12 {
			kl += pRest * (math.Log(pRest) - math.Log(math.Max(qRest, 1e-30)))
		}
		kls[p] = math.Max(kl, 0)
	}
	a := Agreement{Top1: float64(top1) / float64(n), DeltaNLL: (nllRun - nllRef) / float64(n)}
	for _, k := range kls {
		a.KLMean += k
		a.KLMax = math.Max(a.KLMax, k)
	}
	a.KLMean /= float64(n)
	sorted := append([]float64(nil), kls...)
	sort.Float64s(sorted)
	a.KLP99 = sorted[min(n-1, int(math.Ceil(0.99*float64(n)))-1)]
	return a, nil
}
