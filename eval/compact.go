package eval

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/turbomem/turbomem/compact"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tokenizer"
)

// CompactOptions configures CompactEval.
type CompactOptions struct {
	// Methods and Ratios are compared on the same contexts; a ratio is
	// the context's tokens per token kept (per KV head, the window
	// included).
	Methods []compact.Method
	Ratios  []float64
	// KV is how the caches store tokens, the compacted ones included:
	// compaction composes with quantization (the zero Config: f16).
	KV kvcache.Config
	// Window is the number of the context's last tokens kept as they
	// are; Queries the reference queries per KV head (0:
	// compact.DefaultQueries); Extra the reference queries collected
	// beyond the prefill's own (KVzip always rereads the context; the
	// seed is advanced per context).
	Window, Queries int
	Extra           compact.QueryOptions
	// ExtraShare is the largest share of the reference queries the extra
	// ones take (compact.Options.ExtraShare; 0: the default).
	ExtraShare float64
	// Select is the am method's key selection (0: compact.ByRMS).
	Select compact.Selection
	// Measured adds, for the attention-matching methods, rows with
	// non-uniform budgets per layer and KV head chosen from measured loss
	// (CompactShares) on the end of the held-out text.
	Measured bool
	// Shares, if set, adds for the attention-matching methods rows with
	// its budgets per layer and KV head (measured before, on another
	// run; Budgets "file").
	Shares *compact.BudgetShares
	// Length is the context's length in tokens (0: 2048), questions and
	// continuations not counted.
	Length int
	// Depths and Trials: needles at Depths depths (0: 5) from start to
	// end, Trials contexts per depth (0: 2).
	Depths, Trials int
	// Facts key→value facts per multi-fact context (0: 4), every one
	// asked; FactContexts such contexts (0: 3; negative: none).
	Facts, FactContexts int
	// KLContexts held-out windows (0: 2; negative: none) whose next KLTokens tokens (0:
	// 256) score the KL divergence from the uncompacted f16 cache.
	KLContexts, KLTokens int
	Seed                 uint64
	// Install makes a compacted context's caches, one per layer (nil:
	// compact.Install with KV).
	Install func(c *compact.Compacted, kv kvcache.Config) ([]kvcache.Cache, error)
	// Progress, if set, is called after each context.
	Progress func(done, total int)
}

// CompactRow is one configuration's scores on every context: the
// fraction of needles and of facts answered exactly, the mean KL
// divergence (nats) of the next-token distributions over the held-out
// continuations from the uncompacted f16 cache's, and what the cache
// holds right after compaction.
type CompactRow struct {
	Method string  `json:"method"` // "none" for the uncompacted caches
	Ratio  float64 `json:"ratio"`  // asked for (1: none)
	// Budgets is "uniform" (as many tokens per head everywhere),
	// "measured" (CompactShares) or "file" (CompactOptions.Shares).
	Budgets string `json:"budgets"`
	// Plan is what CompactShares measured and chose, for measured
	// budgets.
	Plan *CompactPlan `json:"plan,omitempty"`
	KV   string       `json:"kv"`
	// Kept is the mean tokens kept per layer and KV head, the window
	// included.
	Kept float64 `json:"kept"`
	// Bytes is the mean bytes of all layers' caches holding the context
	// (after compaction); Reduction the f16 cache's bytes for the same
	// context divided by it: the total compression, formats and
	// compaction together.
	Bytes     float64   `json:"bytes"`
	Reduction float64   `json:"reduction"`
	Needle    float64   `json:"needle"`
	ByDepth   []float64 `json:"needle_by_depth"`
	Facts     float64   `json:"facts"`
	KL        float64   `json:"kl"`
	Top1      float64   `json:"top1"`
	// Seconds is the mean time of one compaction (reference queries
	// from the prefill; the rereading's prefill not included).
	Seconds  float64 `json:"seconds"`
	Warnings int     `json:"warnings"`
}

// CompactResult is the outcome of CompactEval.
type CompactResult struct {
	Tokens int          `json:"tokens"` // context length
	Depths []float64    `json:"depths"`
	Rows   []CompactRow `json:"rows"` // uncompacted f16 (and KV) first
}

// compactProbe is one context and what is asked after it: questions with
// their answers, or a continuation whose distributions are compared.
type compactProbe struct {
	ctx       []int32
	questions [][]int32
	answers   []string
	cont      []int32
	depth     int // needle depth index, or −1
	kind      askKind
}

type askKind uint8

const (
	askNeedle askKind = iota
	askFacts
	askKL
)

// factWords name the facts of the multi-fact contexts (words of the
// reference model's retrieval training data).
var factWords = strings.Fields("apple river stone cloud tiger violet harbor lantern maple comet falcon velvet meadow copper orchid glacier")

// CompactEval measures compaction on the model: needles at several depths
// and multi-fact key→value retrieval in contexts of held-out text (token
// ids from heldout, never trained on), and the KL divergence of the
// distributions over held-out continuations from the uncompacted f16
// cache's. Every context is prefilled once (its keys, values and queries
// recorded), compacted by every method at every ratio, and each question
// asked from the compacted caches (compact.Install, model.Resume); the
// uncompacted f16 row asks the same questions from the same recorded
// prefill, installed whole (no prefill of its own per question), and the
// uncompacted row of another --kv format from its own prefills.
func CompactEval(ctx context.Context, m *model.Model, tok *tokenizer.Tokenizer, heldout []int32, o CompactOptions) (CompactResult, error) {
	o = o.withDefaults()
	if len(o.Methods) == 0 || len(o.Ratios) == 0 {
		return CompactResult{}, fmt.Errorf("eval: compact: no methods or no ratios")
	}
	if o.Install == nil {
		o.Install = compact.Install
	}
	if err := o.KV.Check(m.Config.Layers, m.CacheShape()); err != nil {
		return CompactResult{}, err
	}
	probes, depths, err := compactProbes(tok, heldout, o)
	if err != nil {
		return CompactResult{}, err
	}
	if o.Length+probeTail(probes) > m.Config.Context {
		return CompactResult{}, fmt.Errorf("eval: compact: contexts of %d tokens and what follows them exceed the model's context %d", o.Length, m.Config.Context)
	}
	res := CompactResult{Tokens: o.Length, Depths: depths}
	f16Bytes, err := kvcache.F16().BytesAt(o.Length, m.Config.Layers, m.CacheShape())
	if err != nil {
		return res, err
	}
	type acc struct {
		row                              CompactRow
		needles, needleOK, facts, factOK int
		depthOK, depthN                  []int
		compactions                      int
		agree                            agreementAcc
	}
	newAcc := func(method string, ratio float64, kv kvcache.Config) *acc {
		return &acc{row: CompactRow{Method: method, Ratio: ratio, KV: kv.String()}, depthOK: make([]int, len(depths)), depthN: make([]int, len(depths))}
	}
	accs := []*acc{newAcc("none", 1, kvcache.F16())}
	if o.KV.String() != kvcache.F16().String() {
		accs = append(accs, newAcc("none", 1, o.KV))
	}
	uncompacted := len(accs)
	type config struct {
		method compact.Method
		ratio  float64
		share  [][]float64
	}
	var configs []config
	for _, meth := range o.Methods {
		for _, r := range o.Ratios {
			configs = append(configs, config{method: meth, ratio: r})
			a := newAcc(string(meth), r, o.KV)
			a.row.Budgets = "uniform"
			accs = append(accs, a)
			if !meth.Fits() {
				continue
			}
			if o.Shares != nil {
				configs = append(configs, config{method: meth, ratio: r, share: o.Shares.Shares})
				a = newAcc(string(meth), r, o.KV)
				a.row.Budgets = "file"
				accs = append(accs, a)
			}
			if !o.Measured {
				continue
			}
			plan, err := CompactShares(ctx, m, tok, heldout, CompactPlanOptions{Method: meth, Ratio: r, Window: o.Window, Queries: o.Queries, Extra: o.Extra, KV: o.KV, Length: o.Length, Seed: o.Seed})
			if err != nil {
				return CompactResult{}, err
			}
			configs = append(configs, config{method: meth, ratio: r, share: plan.Shares})
			a = newAcc(string(meth), r, o.KV)
			a.row.Budgets, a.row.Plan = "measured", plan
			accs = append(accs, a)
		}
	}
	score := func(a *acc, p compactProbe, q int, ok bool) {
		if p.kind == askNeedle {
			a.needles++
			a.depthN[p.depth]++
			if ok {
				a.needleOK++
				a.depthOK[p.depth]++
			}
			return
		}
		a.facts++
		if ok {
			a.factOK++
		}
	}
	qo := o.Extra
	qo.Repeat = qo.Repeat || slices.Contains(o.Methods, compact.KVzip)
	for pi, p := range probes {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		n := len(p.ctx)
		// One recorded prefill per context serves every row: the
		// uncompacted f16 row reads the recorded context installed whole
		// (every token kept, β = 0, fp16 as the f16 cache holds it), the
		// compacted rows read what each method made of it.
		_, cc, _, err := compact.Prefill(m, o.KV, p.ctx, n)
		if err != nil {
			return res, err
		}
		whole, err := compact.Compact(ctx, cc, compact.Options{Method: compact.Truncate, Keep: n, Workers: m.Threads()})
		if err != nil {
			return res, err
		}
		// ask asks the probe's questions (and reads its continuation)
		// on sessions that continue after the context on the caches
		// install makes; it returns the continuation's logits (nil for
		// none) and the bytes of the first caches.
		ask := func(a *acc, install func() ([]kvcache.Cache, error)) ([]float32, int64, error) {
			var bytes int64
			resume := func(extra int) (*model.Session, error) {
				caches, err := install()
				if err != nil {
					return nil, err
				}
				if bytes == 0 {
					for _, c := range caches {
						bytes += int64(c.Bytes())
					}
				}
				return m.Resume(caches, n, n+extra)
			}
			for q, question := range p.questions {
				s, err := resume(len(question) + len(p.answers[q]) + 4)
				if err != nil {
					return nil, 0, err
				}
				logits, err := s.Forward(question, false)
				if err != nil {
					return nil, 0, err
				}
				ok, err := answerFrom(s, logits, tok, p.answers[q])
				if err != nil {
					return nil, 0, err
				}
				score(a, p, q, ok)
			}
			if p.kind != askKL {
				return nil, bytes, nil
			}
			s, err := resume(len(p.cont))
			if err != nil {
				return nil, 0, err
			}
			logits, err := s.Forward(p.cont[:len(p.cont)-1], true)
			return logits, bytes, err
		}
		// The uncompacted rows: f16 from the recorded prefill; the --kv
		// format (its own recent window and all) by a prefill of its own
		// per question.
		var ref *Dists
		for ai, a := range accs[:uncompacted] {
			kv := kvcache.F16()
			if ai > 0 {
				kv = o.KV
			}
			b, err := kv.BytesAt(n, m.Config.Layers, m.CacheShape())
			if err != nil {
				return res, err
			}
			a.row.Bytes += float64(b)
			a.row.Kept += float64(n)
			var logits []float32
			if ai == 0 {
				logits, _, err = ask(a, func() ([]kvcache.Cache, error) { return o.Install(whole, kvcache.F16()) })
				if err != nil {
					return res, err
				}
				if p.kind == askKL {
					ref = continuationDists(logits, p.cont)
				}
			} else {
				for q, question := range p.questions {
					ok, err := answers(m, tok, slices.Concat(p.ctx, question), p.answers[q], kv)
					if err != nil {
						return res, err
					}
					score(a, p, q, ok)
				}
				if p.kind == askKL {
					if logits, err = continuation(m, kv, p.ctx, p.cont); err != nil {
						return res, err
					}
				}
			}
			if p.kind == askKL {
				a.agree.addLogits(ref, logits)
			}
		}
		// Compaction: the extra reference queries once per context, then
		// every method at every ratio.
		qo.Seed = o.Extra.Seed + uint64(pi)<<16
		extra, err := compact.CollectQueries(ctx, m, tok, cc, p.ctx, qo, 0)
		if err != nil {
			return res, err
		}
		for ci, cf := range configs {
			a := accs[uncompacted+ci]
			meth := cf.method
			opts := compact.Options{Method: meth, Ratio: cf.ratio, Window: o.Window, Queries: o.Queries, ExtraShare: o.ExtraShare, Seed: o.Seed, Share: cf.share, Select: o.Select, Workers: m.Threads()}
			use := extra
			if !o.Extra.Repeat {
				use.Repeat = nil // collected for KVzip alone
			}
			if meth == compact.KVzip {
				use.Repeat = extra.Repeat
			}
			c := cc
			c.Extra = use.For(meth)
			start := time.Now()
			comp, err := compact.Compact(ctx, c, opts)
			if err != nil {
				return res, fmt.Errorf("eval: compact: %s at %gx: %w", meth, cf.ratio, err)
			}
			a.row.Seconds += time.Since(start).Seconds()
			a.compactions++
			a.row.Warnings += len(comp.Warnings)
			a.row.Kept += float64(comp.Kept()) / float64(m.Config.Layers*m.Config.KVHeads)
			logits, bytes, err := ask(a, func() ([]kvcache.Cache, error) { return o.Install(comp, o.KV) })
			if err != nil {
				return res, err
			}
			a.row.Bytes += float64(bytes)
			if p.kind == askKL {
				a.agree.addLogits(ref, logits)
			}
		}
		if o.Progress != nil {
			o.Progress(pi+1, len(probes))
		}
	}
	for _, a := range accs {
		r := a.row
		r.Bytes /= float64(len(probes))
		r.Kept /= float64(len(probes))
		if r.Bytes > 0 {
			r.Reduction = float64(f16Bytes) / r.Bytes
		}
		if a.needles > 0 {
			r.Needle = float64(a.needleOK) / float64(a.needles)
		}
		for d := range depths {
			if a.depthN[d] > 0 {
				r.ByDepth = append(r.ByDepth, float64(a.depthOK[d])/float64(a.depthN[d]))
			}
		}
		if a.facts > 0 {
			r.Facts = float64(a.factOK) / float64(a.facts)
		}
		ag := a.agree.result()
		r.KL, r.Top1 = ag.KLMean, ag.Top1
		if a.compactions > 0 {
			r.Seconds /= float64(a.compactions)
		}
		res.Rows = append(res.Rows, r)
	}
	return res, nil
}

func (o CompactOptions) withDefaults() CompactOptions {
	def := func(x *int, v int) {
		if *x == 0 {
			*x = v
		}
	}
	def(&o.Length, 2048)
	def(&o.Depths, 5)
	def(&o.Trials, 2)
	def(&o.Facts, 4)
	def(&o.FactContexts, 3)
	def(&o.KLContexts, 2)
	def(&o.KLTokens, 256)
	o.Trials, o.FactContexts, o.KLContexts = max(o.Trials, 0), max(o.FactContexts, 0), max(o.KLContexts, 0)
	return o
}

// probeTail returns the most tokens any probe adds after its context.
func probeTail(ps []compactProbe) int {
	t := 0
	for _, p := range ps {
		t = max(t, len(p.cont))
		for q, question := range p.questions {
			t = max(t, len(question)+len(p.answers[q])+4)
		}
	}
	return t
}

// compactProbes makes the contexts: needles at every depth, multi-fact
// contexts, and held-out windows with their continuations; every context
// starts with BOS (where the tokenizer has one) and has o.Length tokens.
func compactProbes(tok *tokenizer.Tokenizer, heldout []int32, o CompactOptions) ([]compactProbe, []float64, error) {
	if o.Length < 16 || o.Depths < 1 || o.Trials < 0 || o.Facts < 1 || o.Facts > len(factWords) || o.FactContexts < 0 || o.KLContexts < 0 || o.KLTokens < 2 {
		return nil, nil, fmt.Errorf("eval: compact: context of %d tokens, %d depths × %d trials, %d facts × %d contexts, %d KL contexts of %d tokens: out of range", o.Length, o.Depths, o.Trials, o.Facts, o.FactContexts, o.KLContexts, o.KLTokens)
	}
	var prefix []int32
	if b := tok.BOS(); b >= 0 {
		prefix = []int32{b}
	}
	fill := o.Length - len(prefix)
	if len(heldout) < fill+o.KLTokens {
		return nil, nil, fmt.Errorf("eval: compact: %d held-out tokens are fewer than the %d a context and its continuation need", len(heldout), fill+o.KLTokens)
	}
	r := rand.New(rand.NewPCG(o.Seed, 13))
	var out []compactProbe
	depths := make([]float64, o.Depths)
	for d := range depths {
		if o.Depths > 1 {
			depths[d] = float64(d) / float64(o.Depths-1)
		} else {
			depths[d] = 0.5
		}
	}
	number := func() string { return fmt.Sprintf("%d", 10000+r.IntN(90000)) }
	filler := func(n int) []int32 {
		start := r.IntN(len(heldout) - n + 1)
		return heldout[start : start+n]
	}
	t := DefaultNeedle
	for d, depth := range depths {
		for range o.Trials {
			v := number()
			needle := tok.Encode(strings.ReplaceAll(t.Needle, "{value}", v), false)
			ctx := slices.Concat(prefix, bury(tok, filler(fill-len(needle)), [][]int32{needle}, []float64{depth}))
			out = append(out, compactProbe{ctx: ctx, questions: [][]int32{tok.Encode(t.Question, false)}, answers: []string{v}, depth: d, kind: askNeedle})
		}
	}
	for range o.FactContexts {
		words := slices.Clone(factWords)
		r.Shuffle(len(words), func(i, j int) { words[i], words[j] = words[j], words[i] })
		p := compactProbe{depth: -1, kind: askFacts}
		var items [][]int32
		var at []float64
		size := 0
		for _, w := range words[:o.Facts] {
			v := number()
			items = append(items, tok.Encode(fmt.Sprintf(" The special magic number for %s is %s. ", w, v), false))
			size += len(items[len(items)-1])
			at = append(at, r.Float64())
			p.questions = append(p.questions, tok.Encode(fmt.Sprintf("\n\nWhat is the special magic number for %s? The special magic number for %s is", w, w), false))
			p.answers = append(p.answers, v)
		}
		if size >= fill {
			return nil, nil, fmt.Errorf("eval: compact: %d facts do not fit a context of %d tokens", o.Facts, o.Length)
		}
		order := make([]int, len(items))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(x, y int) int { return cmpFloat(at[x], at[y]) })
		sortedItems := make([][]int32, len(items))
		sortedAt := make([]float64, len(items))
		for k, i := range order {
			sortedItems[k], sortedAt[k] = items[i], at[i]
		}
		p.ctx = slices.Concat(prefix, bury(tok, filler(fill-size), sortedItems, sortedAt))
		out = append(out, p)
	}
	for range o.KLContexts {
		w := filler(fill + o.KLTokens)
		out = append(out, compactProbe{ctx: slices.Concat(prefix, w[:fill]), cont: w[fill:], depth: -1, kind: askKL})
	}
	return out, depths, nil
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// continuation returns the logits a new session with caches kv gives
// over cont after ctx, at each position after cont's first token (the
// prefill's last position, which compaction cannot change, is left out).
func continuation(m *model.Model, kv kvcache.Maker, ctx, cont []int32) ([]float32, error) {
	s, err := m.NewSession(kv, len(ctx)+len(cont))
	if err != nil {
		return nil, err
	}
	if _, err := s.Forward(ctx, false); err != nil {
		return nil, err
	}
	return s.Forward(cont[:len(cont)-1], true)
}

// continuationDists returns the top-64 log-probabilities of continuation
// logits, with cont's next tokens: the reference they are compared with.
func continuationDists(logits []float32, cont []int32) *Dists {
	vocab := len(logits) / (len(cont) - 1)
	d := &Dists{K: 64, Vocab: vocab}
	for i := range len(cont) - 1 {
		d.add(LogSoftmax(logits[i*vocab:(i+1)*vocab]), cont[i+1], d.K)
	}
	return d
}

// addLogits adds the agreement with ref of every position of logits
// (ref's positions, one row of ref.Vocab each).
func (a *agreementAcc) addLogits(ref *Dists, logits []float32) {
	for p := range ref.Len() {
		a.add(ref, p, LogSoftmax(logits[p*ref.Vocab:(p+1)*ref.Vocab]))
	}
}
