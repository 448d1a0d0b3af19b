package compact

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// Prefill runs the context ids through a new session whose caches kv makes
// (nil: f16), recording what every layer's cache sees (kvcache.Recorder):
// it returns the session, which holds the context and can go on, the
// recorded context for Compact, and the last token's logits. maxTokens
// bounds the session as model.NewSession's does.
func Prefill(m *model.Model, kv kvcache.Maker, ids []int32, maxTokens int) (*model.Session, Context, []float32, error) {
	if kv == nil {
		kv = kvcache.F16()
	}
	c := Context{Layers: make([]*kvcache.Trace, m.Config.Layers)}
	s, err := m.NewSession(kvcache.NewCacheFunc(func(layer int, sh kvcache.Shape) (kvcache.Cache, error) {
		inner, err := kv.NewCache(layer, sh)
		if err != nil {
			return nil, err
		}
		r := kvcache.NewRecorder(inner, sh)
		kd, qd := sh.KVHeads*sh.HeadDim, sh.QHeads*sh.HeadDim
		r.Trace.K, r.Trace.V = make([]float32, 0, len(ids)*kd), make([]float32, 0, len(ids)*kd)
		r.Trace.Q = make([]float32, 0, len(ids)*qd)
		c.Layers[layer] = r.Trace
		return r.Recording(), nil
	}), maxTokens)
	if err != nil {
		return nil, Context{}, nil, fmt.Errorf("compact: prefill: %w", err)
	}
	logits, err := s.Forward(ids, false)
	if err != nil {
		return nil, Context{}, nil, fmt.Errorf("compact: prefill: %w", err)
	}
	return s, c, logits, nil
}

// sharedContext returns, per layer, the recorded context held in fp16 (as
// the f16 cache of a session holds it; every bias 0) as a compacted
// context that the sessions reading after it fork
// (kvcache.Compacted.Fork): one copy of the context however many
// continuations read it. The layers are converted side by side on m's
// threads, each with the float32 panels its forks read it from
// (kvcache.Compacted.PreparePanels: made on the forks' first step, they
// were made one layer after another).
func sharedContext(m *model.Model, c Context) ([]*kvcache.Compacted, error) {
	out := make([]*kvcache.Compacted, len(c.Layers))
	errs := make([]error, len(c.Layers))
	m.Parallel(len(c.Layers), func(l, _ int) {
		tr := c.Layers[l]
		sh, n := tr.Shape, tr.Len()
		keys, values, bias := make([][]float32, sh.KVHeads), make([][]float32, sh.KVHeads), make([][]float32, sh.KVHeads)
		for h := range sh.KVHeads {
			keys[h] = headRows(tr.K, sh.KVHeads, sh.HeadDim, h, 0, n)
			values[h] = headRows(tr.V, sh.KVHeads, sh.HeadDim, h, 0, n)
			bias[h] = make([]float32, n)
		}
		out[l], errs[l] = kvcache.F16().NewCompacted(l, sh, keys, bias, values)
		if errs[l] != nil {
			errs[l] = fmt.Errorf("layer %d: %w", l, errs[l])
			return
		}
		out[l].PreparePanels()
	})
	return out, errors.Join(errs...)
}

// forkRecording returns a session that continues the shared context of n
// tokens (its own tokens in f16 caches after it), each layer's cache
// wrapped in a recorder that keeps the queries of positions from on, and
// the recorders' traces, with room for rows tokens and queries (the
// most the caller appends). With past (traces of such a session, one per
// layer), the new session starts where that one stands: its tokens'
// keys and values appended as they were recorded (nothing recomputed)
// and its queries copied, so that the two go on alike.
func forkRecording(m *model.Model, shared []*kvcache.Compacted, n, from, rows, limit int, past []*kvcache.Trace) (*model.Session, []*kvcache.Trace, error) {
	caches := make([]kvcache.Cache, len(shared))
	traces := make([]*kvcache.Trace, len(shared))
	sh := m.CacheShape()
	pos := n
	for l, cc := range shared {
		inner, err := kvcache.NewF16(sh)
		if err != nil {
			return nil, nil, err
		}
		f, err := cc.Fork(inner)
		if err != nil {
			return nil, nil, err
		}
		r := kvcache.NewRecorder(f, sh)
		r.KeepQuery = func(pos int) bool { return pos >= from-n }
		kd, qd := sh.KVHeads*sh.HeadDim, sh.QHeads*sh.HeadDim
		r.Trace.K, r.Trace.V, r.Trace.Q = make([]float32, 0, rows*kd), make([]float32, 0, rows*kd), make([]float32, 0, rows*qd)
		if past != nil {
			p := past[l]
			for i := range p.Len() {
				if err := r.Append(p.K[i*kd:(i+1)*kd], p.V[i*kd:(i+1)*kd]); err != nil {
					return nil, nil, err
				}
			}
			r.Trace.Q = append(r.Trace.Q, p.Q...)
			r.Trace.QPos = append(r.Trace.QPos, p.QPos...)
			r.Trace.Scale = p.Scale
			pos = n + p.Len()
		}
		caches[l], traces[l] = r.Recording(), r.Trace
	}
	s, err := m.Resume(caches, pos, limit)
	return s, traces, err
}

// forward runs one Batch step of the sessions over their tokens and
// returns their logits, or the first session's error.
func forward(b *model.Batch, seqs []*model.Session, tokens [][]int32) ([][]float32, error) {
	logits, errs := b.Forward(seqs, tokens)
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return logits, nil
}

// queriesOf returns, per layer, the queries the traces recorded, session
// after session.
func queriesOf(traces [][]*kvcache.Trace, layers int) [][]float32 {
	out := make([][]float32, layers)
	for l := range out {
		size := 0
		for _, tr := range traces {
			size += len(tr[l].Q)
		}
		out[l] = make([]float32, 0, size)
	}
	for _, tr := range traces {
		for l := range out {
			out[l] = append(out[l], tr[l].Q...)
		}
	}
	return out
}

// RepeatQueries returns, per layer, the queries of the model rereading
// the context (the paper's and KVzip's "repeat-prefill"): after the
// context come the instruction (e.g. the tokens of "\nRepeat the previous
// context.\n") and the context's tokens again (ids without its first
// token when skipFirst, for BOS), and the queries of the repeated tokens
// are kept, QHeads·HeadDim values each. Where the repetition does not fit
// the model's context after the original (limit tokens in all; 0: the
// model's), it is read in chunks that each follow the context and the
// instruction afresh (KVzip's chunked scoring).
func RepeatQueries(ctx context.Context, m *model.Model, c Context, ids, instr []int32, skipFirst bool, limit int) ([][]float32, error) {
	if _, n, err := c.validate(); err != nil {
		return nil, err
	} else if n != len(ids) {
		return nil, fmt.Errorf("compact: repeat: %d tokens recorded for a context of %d", n, len(ids))
	}
	if limit <= 0 {
		limit = m.Config.Context
	}
	text := ids
	if skipFirst && len(text) > 0 {
		text = text[1:]
	}
	n := len(ids)
	chunk := min(len(text), limit-n-len(instr))
	if chunk < 1 {
		return nil, fmt.Errorf("compact: repeat: a context of %d tokens and an instruction of %d leave no room to reread it within %d", n, len(instr), limit)
	}
	shared, err := sharedContext(m, c)
	if err != nil {
		return nil, fmt.Errorf("compact: repeat: %w", err)
	}
	// Every chunk a session of its own, read together as one batch.
	var seqs []*model.Session
	var traces [][]*kvcache.Trace
	var tokens [][]int32
	for start := 0; start < len(text); start += chunk {
		s, tr, err := forkRecording(m, shared, n, n+len(instr), len(instr)+chunk, limit, nil)
		if err != nil {
			return nil, fmt.Errorf("compact: repeat: %w", err)
		}
		seqs, traces = append(seqs, s), append(traces, tr)
		tokens = append(tokens, slices.Concat(instr, text[start:min(start+chunk, len(text))]))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if _, err := forward(m.NewBatch(), seqs, tokens); err != nil {
		return nil, fmt.Errorf("compact: repeat: %w", err)
	}
	return queriesOf(traces, len(c.Layers)), nil
}

// SelfQueries returns, per layer, the queries of the model writing about
// the context: for each prompt (e.g. the tokens of "\nQuestion:"), it
// reads the prompt after the context and writes up to tokens tokens more,
// and keeps the queries of the prompt and what it wrote, QHeads·HeadDim
// values each (the paper's self-study, for a model that may not follow
// instructions). A sample ends early after a token for which stop (nil:
// none) is true, that token's query kept.
//
// With sc.Temperature 0 each sample writes greedily. Otherwise samples
// are drawn at that temperature (sc's other fields unused), the samples
// that have written the same so far together (stratified, Seed the
// seed): a group of g splits over the next tokens by systematic sampling
// from the distribution, so each token gets ⌊g·p⌋ or ⌈g·p⌉ of them and
// every sample alone still follows the model's distribution. Samples of
// one prompt thus ask about different things where the model hesitates
// (which fact to ask about) instead of repeating the likeliest, whose
// queries would be copies.
//
// The samples of a group are one session (a writer) until they write
// different tokens: a group's next step is computed once, and its
// queries are copied to each of its samples. (Samples of one prompt
// write the same first tokens for a while: on the embedded model, 32
// samples after DefaultSelfPrompt are 1 to 3 groups for their first 9
// steps, half of all the rows the samples write.) A group that splits
// hands its session to its first part and a copy of it to each other
// part (kvcache keys, values and queries copied, nothing recomputed).
func SelfQueries(ctx context.Context, m *model.Model, c Context, prompts [][]int32, tokens int, sc model.SamplerConfig, stop func(int32) bool, limit int) ([][]float32, error) {
	return selfQueries(ctx, m, c, prompts, tokens, sc, stop, limit, true)
}

// selfQueries is SelfQueries; with share false every sample writes in a
// session of its own (each group's step computed once per sample), as a
// reference for the shared writers.
func selfQueries(ctx context.Context, m *model.Model, c Context, prompts [][]int32, tokens int, sc model.SamplerConfig, stop func(int32) bool, limit int, share bool) ([][]float32, error) {
	_, n, err := c.validate()
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = m.Config.Context
	}
	if !(sc.Temperature >= 0) || math.IsInf(sc.Temperature, 0) {
		return nil, fmt.Errorf("compact: self-study temperature %g: want a finite temperature ≥ 0", sc.Temperature)
	}
	group := make([]int, len(prompts)) // samples that have written the same share a group
	for i, p := range prompts {
		if len(p) == 0 || n+len(p)+tokens > limit {
			return nil, fmt.Errorf("compact: self-study prompt %d: %d tokens and %d to write after a context of %d exceed %d (or the prompt is empty)", i, len(p), tokens, n, limit)
		}
		group[i] = i
		for j := range i {
			if slices.Equal(p, prompts[j]) {
				group[i] = group[j]
				break
			}
		}
	}
	shared, err := sharedContext(m, c)
	if err != nil {
		return nil, fmt.Errorf("compact: self-study: %w", err)
	}
	// The writers are sessions of their own, written together as one
	// batch: each step reads the weights once for all of them. writer[i]
	// is sample i's; a writer's samples have written the same.
	var seqs []*model.Session
	var traces [][]*kvcache.Trace
	newWriter := func(rows int, past []*kvcache.Trace) (int, error) {
		s, tr, err := forkRecording(m, shared, n, n, rows, limit, past)
		if err != nil {
			return 0, fmt.Errorf("compact: self-study: %w", err)
		}
		seqs, traces = append(seqs, s), append(traces, tr)
		return len(seqs) - 1, nil
	}
	writer := make([]int, len(prompts))
	for i, p := range prompts {
		if share && group[i] != i {
			writer[i] = writer[group[i]]
			continue
		}
		if writer[i], err = newWriter(len(p)+tokens+1, nil); err != nil {
			return nil, err
		}
	}
	r := rand.New(rand.NewPCG(sc.Seed, 0x5e1f))
	var scratch []float32 // systematic's weights
	b := m.NewBatch()
	active := make([]int, len(prompts)) // the samples still writing
	for i := range active {
		active[i] = i
	}
	next := slices.Clone(prompts)
	ended := make([]bool, len(prompts))
	var row []int // writer → its row of the step (-1: none)
	for step := 0; len(active) > 0; step++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		row = row[:0]
		for range seqs {
			row = append(row, -1)
		}
		var in []*model.Session
		var toks [][]int32
		for _, i := range active {
			if w := writer[i]; row[w] < 0 {
				row[w] = len(in)
				in, toks = append(in, seqs[w]), append(toks, next[i])
			}
		}
		logits, err := forward(b, in, toks)
		if err != nil {
			return nil, fmt.Errorf("compact: self-study: %w", err)
		}
		if step == tokens {
			break // what they wrote last is read too: its query counts
		}
		// The samples of one group draw their next tokens together.
		members := map[int][]int{} // group → positions in active
		var order []int
		for k, i := range active {
			if ended[i] {
				continue
			}
			if members[group[i]] == nil {
				order = append(order, group[i])
			}
			members[group[i]] = append(members[group[i]], k)
		}
		var still []int
		regroup := map[[2]int]int{} // (group, token) → new group
		kept := map[int]bool{}      // writers that went on with a part of their group
		for _, gr := range order {
			ks := members[gr]
			var drawn []int32
			lg := logits[row[writer[active[ks[0]]]]]
			if sc.Temperature == 0 {
				drawn = slices.Repeat([]int32{int32(slices.Index(lg, slices.Max(lg)))}, len(ks))
			} else {
				drawn = systematic(lg, sc.Temperature, len(ks), r, &scratch)
			}
			parts := map[int]int{} // new group → its writer
			for j, k := range ks {
				i, t := active[k], drawn[j]
				key := [2]int{gr, int(t)}
				if _, ok := regroup[key]; !ok {
					regroup[key] = len(regroup)
				}
				next[i], group[i] = []int32{t}, regroup[key]
				ended[i] = stop != nil && stop(t)
				still = append(still, i)
				if !share {
					continue
				}
				w, ok := parts[group[i]]
				switch {
				case ok:
				case !kept[writer[i]]:
					w, kept[writer[i]] = writer[i], true
				default:
					// A new part of the group: a copy of its writer.
					if w, err = newWriter(len(prompts[i])+tokens+1, traces[writer[i]]); err != nil {
						return nil, err
					}
				}
				parts[group[i]], writer[i] = w, w
			}
		}
		active = still
	}
	out := make([][]*kvcache.Trace, len(prompts))
	for i := range out {
		out[i] = traces[writer[i]]
	}
	return queriesOf(out, len(c.Layers)), nil
}

// systematic draws g tokens from softmax(logits/temp) by systematic
// sampling: one uniform u, the points (u+k)/g for k < g, each taking the
// token whose interval of the cumulative distribution holds it. Token j
// is drawn ⌊g·p_j⌋ or ⌈g·p_j⌉ times, g·p_j on average; the draws come
// shuffled, so that which sample gets which token is random too.
func systematic(logits []float32, temp float64, g int, r *rand.Rand, scratch *[]float32) []int32 {
	// The weights e^((x − max)/temp) on the attention's exponential
	// kernel (a step draws them for every group over the whole
	// vocabulary), summed again in float64 in the order the walk below
	// takes them, so that its last point falls inside the total.
	p := append((*scratch)[:0], logits...)
	*scratch = p
	kvcache.ExpShifted(p, float32(min(1/temp, math.MaxFloat32)))
	var sum float64
	for _, x := range p {
		sum += float64(x)
	}
	out := make([]int32, 0, g)
	u := r.Float64()
	cum, j := 0.0, 0
	for k := range g {
		at := (u + float64(k)) / float64(g) * sum
		for j < len(p)-1 && cum+float64(p[j]) <= at {
			cum += float64(p[j])
			j++
		}
		out = append(out, int32(j))
	}
	r.Shuffle(len(out), func(a, b int) { out[a], out[b] = out[b], out[a] })
	return out
}
