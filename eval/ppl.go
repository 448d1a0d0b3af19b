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
	"slices"
	"sort"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// PPLOptions configures Perplexity.
type PPLOptions struct {
	// Ctx is the window length in tokens (llama-perplexity's -c).
	Ctx int
	// KV makes the KV caches under test: a kvcache.Config (nil: f16).
	KV kvcache.Maker
	// MaxChunks limits the number of windows (0: all).
	MaxChunks int
	// TopK is the number of most likely tokens whose log-probabilities
	// each scored position keeps for KL divergence (0: 64).
	TopK int
	// Ref, if set, holds the distributions of a reference run on the same
	// text and windows (from an earlier run's Dists): the result then
	// includes the agreement with it.
	Ref *Dists
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
	// Agreement with PPLOptions.Ref, when given.
	Agreement *Agreement `json:"agreement,omitempty"`
}

// Perplexity scores ids the way llama.cpp's llama-perplexity does, so the
// numbers compare: the tokens (BOS first, as tokenized) are cut into
// windows of Ctx tokens, each window's first token is replaced by BOS
// (when bos ≥ 0), and the logits at positions Ctx/2 … Ctx−2 of each
// window are scored against the token that follows (ScoredPerWindow of
// them), so every scored token has more than Ctx/2 tokens of context.
func Perplexity(ctx context.Context, m *model.Model, ids []int32, bos int32, o PPLOptions) (PPLResult, error) {
	ws, err := windows(m, ids, bos, o.Ctx, o.MaxChunks)
	if err != nil {
		return PPLResult{}, err
	}
	topK := o.TopK
	if topK == 0 {
		topK = 64
	}
	if topK < 1 || topK > m.Config.Vocab {
		return PPLResult{}, fmt.Errorf("eval: top-k %d out of range [1, %d]", topK, m.Config.Vocab)
	}
	chunks := len(ws)
	res := PPLResult{Chunks: chunks, Dists: &Dists{K: topK, Vocab: m.Config.Vocab}}
	if o.Ref != nil && o.Ref.Vocab != m.Config.Vocab {
		return res, fmt.Errorf("%w: reference has a vocabulary of %d, the model %d", ErrMismatch, o.Ref.Vocab, m.Config.Vocab)
	}
	var agree agreementAcc
	var sum, sumSq float64
	for c, window := range ws {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		s, err := m.NewSession(o.KV, o.Ctx)
		if err != nil {
			return res, err
		}
		logits, err := scoredLogits(s, window)
		if err != nil {
			return res, err
		}
		err = scored(logits, window, m.Config.Vocab, func(lp []float64, target int32) error {
			nll := -lp[target]
			sum += nll
			sumSq += nll * nll
			if o.Ref != nil {
				p := res.Tokens
				if p >= o.Ref.Len() || o.Ref.Target[p] != target {
					return fmt.Errorf("%w: position %d differs from the reference run (other text or window?)", ErrMismatch, p)
				}
				agree.add(o.Ref, p, lp)
			}
			res.Tokens++
			res.Dists.add(lp, target, topK)
			return nil
		})
		if err != nil {
			return res, err
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
	if o.Ref != nil {
		if res.Tokens != o.Ref.Len() {
			return res, fmt.Errorf("%w: %d positions scored, the reference has %d", ErrMismatch, res.Tokens, o.Ref.Len())
		}
		a := agree.result()
		res.Agreement = &a
	}
	return res, nil
}

// windows cuts ids into the windows of Perplexity: ctxLen tokens each,
// one after another, the first replaced by bos when bos ≥ 0; at most
// maxChunks of them (0: all). The window must fit the model's context and
// the text must make at least one.
func windows(m *model.Model, ids []int32, bos int32, ctxLen, maxChunks int) ([][]int32, error) {
	if ctxLen < 4 || ctxLen > m.Config.Context {
		return nil, fmt.Errorf("eval: window of %d tokens: want 4 to the model's context %d", ctxLen, m.Config.Context)
	}
	chunks := len(ids) / ctxLen
	if maxChunks > 0 {
		chunks = min(chunks, maxChunks)
	}
	if chunks == 0 {
		return nil, fmt.Errorf("eval: %d tokens make no window of %d", len(ids), ctxLen)
	}
	ws := make([][]int32, chunks)
	for c := range ws {
		ws[c] = slices.Clone(ids[c*ctxLen : (c+1)*ctxLen])
		if bos >= 0 {
			ws[c][0] = bos
		}
	}
	return ws, nil
}

// ScoredPerWindow returns how many positions Perplexity scores in each
// window of ctxLen tokens: ctxLen − 1 − ctxLen/2, the logits at positions
// ctxLen/2 … ctxLen−2, as llama-perplexity (n_ctx − 1 − first with first
// = n_ctx/2).
func ScoredPerWindow(ctxLen int) int { return ctxLen - 1 - ctxLen/2 }

// scoredLogits runs a window through s and returns the logits of its
// scored positions only (ScoredPerWindow of them, from position len/2):
// the output projection of the unscored first half is not computed.
func scoredLogits(s *model.Session, window []int32) ([]float32, error) {
	return s.ForwardTail(window[:len(window)-1], ScoredPerWindow(len(window)))
}

// scored calls f for each scored position of a window, given the logits
// of those positions (scoredLogits): the log-probabilities they give, and
// the token that came next. Every measurement over Perplexity's windows
// (KL against a reference, sensitivities) scores through it.
func scored(logits []float32, window []int32, vocab int, f func(lp []float64, target int32) error) error {
	first := len(window) / 2
	for i := range ScoredPerWindow(len(window)) {
		if err := f(LogSoftmax(logits[i*vocab:(i+1)*vocab]), window[first+i+1]); err != nil {
			return err
		}
	}
	return nil
}

// LogSoftmax returns log(softmax(x)) in float64, from the maximum (so
// that no exponent overflows).
func LogSoftmax(x []float32) []float64 {
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

// Agreement compares a run's next-token distributions with a reference
// run's on the same positions, as llama-perplexity --kl-divergence does.
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

// ErrMismatch reports runs that do not line up.
var ErrMismatch = errors.New("eval: runs do not match")

// klBucketed returns KL(P ‖ Q) over the reference's top-K tokens (ids,
// log-probabilities refLP) plus one bucket for the rest of the
// vocabulary, with Q given in full (lp). Merging tokens into one bucket in
// both distributions can only lower KL (the log-sum inequality), so this
// is a lower bound of the full KL, tight when the top K hold nearly all
// of P's mass.
func klBucketed(ids []int32, refLP []float32, lp []float64) float64 {
	var kl, pIn, qIn float64
	for i, id := range ids {
		p := math.Exp(float64(refLP[i]))
		kl += p * (float64(refLP[i]) - lp[id])
		pIn += p
		qIn += math.Exp(lp[id])
	}
	if pRest, qRest := 1-pIn, 1-qIn; pRest > 1e-12 {
		kl += pRest * (math.Log(pRest) - math.Log(math.Max(qRest, 1e-300)))
	}
	return math.Max(kl, 0)
}

// agreementAcc accumulates an Agreement position by position.
type agreementAcc struct {
	kls          []float64
	top1         int
	nllRef, nllQ float64
}

func (a *agreementAcc) add(ref *Dists, p int, lp []float64) {
	ids, refLP := ref.IDs[p*ref.K:(p+1)*ref.K], ref.LogP[p*ref.K:(p+1)*ref.K]
	a.kls = append(a.kls, klBucketed(ids, refLP, lp))
	best := 0
	for i, v := range lp {
		if v > lp[best] {
			best = i
		}
	}
	if int32(best) == ids[0] {
		a.top1++
	}
	a.nllRef -= float64(ref.TargetLP[p])
	a.nllQ -= lp[ref.Target[p]]
}

func (a *agreementAcc) result() Agreement {
	n := len(a.kls)
	if n == 0 {
		return Agreement{}
	}
	r := Agreement{Top1: float64(a.top1) / float64(n), DeltaNLL: (a.nllQ - a.nllRef) / float64(n)}
	for _, k := range a.kls {
		r.KLMean += k
		r.KLMax = math.Max(r.KLMax, k)
	}
	r.KLMean /= float64(n)
	sorted := append([]float64(nil), a.kls...)
	sort.Float64s(sorted)
	r.KLP99 = sorted[max(0, int(math.Ceil(0.99*float64(n)))-1)]
	return r
}
