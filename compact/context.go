package compact

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/tensor"
)

// Method names a way to compact a context.
type Method string

// The methods: attention matching and the eviction baselines, all in the
// same harness (the same budgets, the same caches).
const (
	// AMHighest is attention matching with keys by highest attention:
	// half of them by the largest weight any reference query gives them,
	// the rest by RMS weight (ByMaxRMS; Options.Select picks another).
	// Measured against RMS alone, the paper's choice, on two models at
	// 50x it answered twice the multi-fact questions, and the same at 20x
	// (BENCHMARKS.md, "KV compaction").
	AMHighest Method = "am"
	// AMOMPMethod is attention matching with keys by OMP on the mass.
	AMOMPMethod Method = "am-omp"
	// SnapKV keeps the keys that the context's last 32 queries attend to
	// most (summed over the query heads of a group, max-pooled over 7
	// positions) and the most recent tokens (Li et al., 2024).
	SnapKV Method = "snapkv"
	// PyramidKV is SnapKV with budgets that shrink linearly from the
	// first layer to the last (Cai et al., 2024; ratio 20 between them).
	PyramidKV Method = "pyramidkv"
	// H2O keeps the keys with the largest attention accumulated over the
	// context's own queries (causal) and the most recent tokens, half the
	// budget each (Zhang et al., 2023).
	H2O Method = "h2o"
	// Streaming keeps 4 sink tokens at the start and the most recent ones
	// (StreamingLLM, Xiao et al., 2024).
	Streaming Method = "streaming"
	// KVzip keeps the keys with the largest attention weight from any
	// extra reference query (repeat-prefill: the model rereading the
	// context), chosen across all layers and heads at once, so the
	// budgets are non-uniform (Kim et al., 2025).
	KVzip Method = "kvzip"
	// Truncate keeps the first tokens.
	Truncate Method = "truncate"
)

var methods = []Method{AMHighest, AMOMPMethod, SnapKV, PyramidKV, H2O, Streaming, KVzip, Truncate}

// Methods returns every method, attention matching first.
func Methods() []Method { return append([]Method(nil), methods...) }

// ParseMethod returns the method called name.
func ParseMethod(name string) (Method, error) {
	for _, m := range methods {
		if string(m) == name {
			return m, nil
		}
	}
	names := make([]string, len(methods))
	for i, m := range methods {
		names[i] = string(m)
	}
	return "", fmt.Errorf("compact: unknown method %q; known: %s", name, strings.Join(names, ", "))
}

// Fits reports whether the method fits β and values (attention
// matching) rather than keeping original tokens as they are (eviction).
func (m Method) Fits() bool { return m == AMHighest || m == AMOMPMethod }

// DefaultQueries is the number of reference queries per KV head that the
// fits use when Options.Queries is 0: enough that the value fit (t
// unknowns per coordinate, t ≤ a few hundred at 20x on 4k tokens) is well
// overdetermined and takes every self-study query of 32 samples beside a
// quarter of the context's own. On the embedded model at 20x (2048-token
// contexts, 8 facts each, 32 self-study samples) 4096 answered 87 of 96
// multi-fact questions where 2048 answered 64 (BENCHMARKS.md, "KV
// compaction"); scoring them costs twice as much.
const DefaultQueries = 4096

// DefaultExtraShare is the share of the reference queries that the extra
// ones (self-study, rereading) take at most when Options.ExtraShare is 0,
// the context's own queries the rest. The extra queries are those of
// retrieval (without them attention matching answered none of 48
// multi-fact questions at 20x), the own ones keep the fitted values
// right for reading on; on one model at 20x a quarter of own queries
// answered the most (BENCHMARKS.md, "KV compaction").
const DefaultExtraShare = 0.75

// Options configures Compact.
type Options struct {
	Method Method
	// Ratio is the context's tokens per token kept, the window included
	// (≥ 1); Keep, if set instead, is the number of tokens kept per KV
	// head, the window included.
	Ratio float64
	Keep  int
	// Window is the number of the context's last tokens kept exactly as
	// they are (0: none); compaction works on the tokens before them.
	Window int
	// Queries is the number of reference queries per KV head (0:
	// DefaultQueries), drawn at random (Seed) from the extra ones (at
	// most ExtraShare of them) and the context's own (the rest).
	Queries int
	Seed    uint64
	// ExtraShare is the largest share of the reference queries that the
	// extra ones take (0: DefaultExtraShare; 1: all, the context's own
	// only where there are too few extra).
	ExtraShare float64
	// Share, if set, holds every layer's and KV head's share of the kept
	// tokens ([layer][head], summing to 1; Shares makes them from
	// measured losses); nil keeps as many per head everywhere. Methods
	// with budgets of their own (PyramidKV, KVzip) ignore it.
	Share [][]float64
	// Fit, if its Keys is not 0, overrides the fit attention matching
	// uses (selection, bounds, projected-gradient steps, ridge; Keys is
	// the budget's, and a zero Select the method's).
	Fit Fit
	// Select is AMHighest's key selection (0: ByMaxRMS): ByRMS (the
	// paper's), ByMax, ByMean or ByMaxRMS. The other methods ignore it.
	Select Selection
	// Workers is the number of goroutines Compact uses (0: NumCPU): as
	// many heads compacted at once, up to the number of heads, and the
	// rest sharing each fit's products.
	Workers int
}

// Context is a prefilled context to compact.
type Context struct {
	// Layers holds, per layer, what the layer's cache saw while the
	// context was prefilled (a kvcache.Recorder's trace): every token's
	// keys and values, and the queries of every position (or of those in
	// QPos).
	Layers []*kvcache.Trace
	// Extra holds, per layer, more reference queries, QHeads·HeadDim
	// values each (from RepeatQueries or SelfQueries); nil for none.
	Extra [][]float32
}

// validate checks that the layers agree and returns their shape and
// token count.
func (c Context) validate() (kvcache.Shape, int, error) {
	if len(c.Layers) == 0 {
		return kvcache.Shape{}, 0, fmt.Errorf("compact: a context of no layers")
	}
	if c.Extra != nil && len(c.Extra) != len(c.Layers) {
		return kvcache.Shape{}, 0, fmt.Errorf("compact: extra queries for %d layers, the context has %d", len(c.Extra), len(c.Layers))
	}
	sh, n := c.Layers[0].Shape, c.Layers[0].Len()
	if err := sh.Validate(); err != nil {
		return sh, 0, err
	}
	for l, tr := range c.Layers {
		if tr.Shape != sh || tr.Len() != n {
			return sh, 0, fmt.Errorf("compact: layer %d holds %d tokens of shape %+v, layer 0 %d of %+v", l, tr.Len(), tr.Shape, n, sh)
		}
		kd, qd := sh.KVHeads*sh.HeadDim, sh.QHeads*sh.HeadDim
		if len(tr.K)%kd != 0 || len(tr.V) != len(tr.K) || len(tr.Q)%qd != 0 {
			return sh, 0, fmt.Errorf("compact: layer %d: %d keys, %d values, %d queries do not fit its shape", l, len(tr.K), len(tr.V), len(tr.Q))
		}
		if tr.QPos != nil && len(tr.QPos) != tr.Queries() {
			return sh, 0, fmt.Errorf("compact: layer %d: %d query positions for %d queries", l, len(tr.QPos), tr.Queries())
		}
		if !(tr.Scale > 0) {
			return sh, 0, fmt.Errorf("compact: layer %d: attention scale %g (no query recorded?)", l, tr.Scale)
		}
		if c.Extra != nil && len(c.Extra[l])%qd != 0 {
			return sh, 0, fmt.Errorf("compact: layer %d: %d extra query values are not rows of %d", l, len(c.Extra[l]), qd)
		}
	}
	return sh, n, nil
}

// Compacted is a context after compaction: per layer and KV head the
// kept keys, their biases and values for the block before the window,
// and the window's tokens as they were.
type Compacted struct {
	Shape kvcache.Shape
	// Tokens is the context's length n; Window the tokens kept as they
	// were (the last ones).
	Tokens, Window int
	// Heads holds the block's compaction, [layer][KV head].
	Heads [][]Result
	// WindowK and WindowV hold, per layer, the window's keys and values
	// (Window tokens of KVHeads·HeadDim values, as Cache.Append takes).
	WindowK, WindowV [][]float32
	// Warnings lists the fits that fell back (see Result.Warnings).
	Warnings []string
}

// Kept returns the tokens kept over all layers and KV heads, the window
// included.
func (c *Compacted) Kept() int {
	k := 0
	for _, layer := range c.Heads {
		for _, h := range layer {
			k += h.Len() + c.Window
		}
	}
	return k
}

// Compact compacts a prefilled context as o says: per layer and KV head,
// the tokens before the window are replaced by the method's kept (and,
// for attention matching, fitted) ones; the window's tokens stay. Once
// ctx is done it stops (the reference attentions between blocks of
// queries, the fits between stages and OMP steps, the heads between
// heads) and returns an error that wraps ctx's.
func Compact(ctx context.Context, c Context, o Options) (*Compacted, error) {
	sh, n, err := c.validate()
	if err != nil {
		return nil, err
	}
	if _, err := ParseMethod(string(o.Method)); err != nil {
		return nil, err
	}
	if !(o.ExtraShare >= 0 && o.ExtraShare <= 1) {
		return nil, fmt.Errorf("compact: extra query share %g: want a share in [0, 1] (0: the default)", o.ExtraShare)
	}
	if o.Window < 0 || o.Window >= n {
		return nil, fmt.Errorf("compact: a context of %d tokens is not longer than the window of %d kept as is", n, o.Window)
	}
	// The fit's parameters before any head's work (plan's KVzip scores
	// every head): a bad Options.Fit or Options.Select fails at once.
	if o.Method.Fits() {
		if err := o.fit(1).validateParams(); err != nil {
			return nil, err
		}
	}
	block := n - o.Window
	p, err := o.plan(ctx, c, sh, n)
	if err != nil {
		return nil, err
	}
	out := &Compacted{Shape: sh, Tokens: n, Window: o.Window, Heads: make([][]Result, len(c.Layers))}
	kd := sh.KVHeads * sh.HeadDim
	for l, tr := range c.Layers {
		out.Heads[l] = make([]Result, sh.KVHeads)
		out.WindowK = append(out.WindowK, append([]float32(nil), tr.K[block*kd:]...))
		out.WindowV = append(out.WindowV, append([]float32(nil), tr.V[block*kd:]...))
	}
	var mu sync.Mutex
	var first error
	workers := o.workers()
	tasks := len(c.Layers) * sh.KVHeads
	// Attention matching with a worker for every head computes every
	// head's reference attention first, the blocks of queries of all
	// heads as the tasks of one region on all the workers: with the
	// threads split over the heads (16 over 6 heads: some 3, some 2) the
	// heads with fewer threads kept the others waiting. (With more heads
	// than workers, the heads take turns on the workers, each as much
	// memory at once as before.)
	var atts []*attention
	var fits []Fit
	if o.Method.Fits() && tasks <= workers {
		// The heads' attentions run as one region whose tasks stop once
		// ctx is done.
		if atts, fits, err = o.attentions(ctx, c, p, block, workers); err != nil {
			return nil, err
		}
	}
	// Then (or, for the other methods, at once) as many heads at once as
	// there are workers (or heads), each head worker's fit products on a
	// pool of its own holding the workers left over (a task of one Pool
	// cannot run a region of it): the goroutines start once per call, not
	// per product. When every head has a worker of its own, the workers
	// split by the heads' work (fitCost after the attention, headCost
	// with it), so that a head kept 4x larger (measured budgets give the
	// last layer that) is not the one left running on a few threads.
	heads := min(workers, tasks)
	outer := tensor.NewPool(heads)
	defer outer.Close()
	var shares []int // threads per worker (heads < tasks) or per task
	if heads == tasks {
		costs := make([]int, tasks)
		for task := range costs {
			t := p.budgets[task/sh.KVHeads][task%sh.KVHeads]
			if atts != nil {
				costs[task] = fitCost(t, sh.HeadDim)
			} else {
				costs[task] = headCost(block, t, sh.HeadDim)
			}
		}
		shares = threadShares(costs, workers)
	} else {
		shares = slices.Repeat([]int{(workers + heads - 1) / heads}, heads)
	}
	inner := make([]*tensor.Pool, len(shares))
	for i, n := range shares {
		if n > 1 {
			inner[i] = tensor.NewPool(n)
			defer inner[i].Close()
		}
	}
	outer.Run(tasks, func(task, w int) {
		l, h := task/sh.KVHeads, task%sh.KVHeads
		if ctx.Err() != nil {
			return
		}
		var given []int
		if p.index != nil {
			given = p.index[l][h]
		}
		pool := inner[w]
		if heads == tasks {
			pool = inner[task]
		}
		var r Result
		var err error
		if atts != nil {
			atts[task].pool = pool
			r, err = atts[task].compact(fits[task])
		} else {
			r, err = o.head(ctx, c, l, h, block, p.budgets[l][h], given, pool)
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil && first == nil {
			first = fmt.Errorf("compact: layer %d head %d: %w", l, h, err)
		}
		out.Heads[l][h] = r
		for _, warn := range r.Warnings {
			out.Warnings = append(out.Warnings, fmt.Sprintf("layer %d head %d: %s", l, h, warn))
		}
	})
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("compact: %w", err)
	}
	if first != nil {
		return nil, first
	}
	return out, nil
}

// attentions returns the reference attention of every layer's KV heads
// for attention matching (the statistics its key selection reads, every
// exp-score for OMP) and their fits, the blocks of queries of all heads
// as the tasks of one region on workers threads; once ctx is done, an
// error that wraps ctx's.
func (o Options) attentions(ctx context.Context, c Context, p plan, block, workers int) ([]*attention, []Fit, error) {
	sh := c.Layers[0].Shape
	tasks := len(c.Layers) * sh.KVHeads
	bs, fits, errs := make([]Block, tasks), make([]Fit, tasks), make([]error, tasks)
	pool := tensor.NewPool(workers)
	defer pool.Close()
	pool.Run(tasks, func(task, _ int) {
		l, h := task/sh.KVHeads, task%sh.KVHeads
		bs[task] = headBlock(c, l, h, block)
		bs[task].Queries = o.referenceQueries(c, l, h, true)
		fits[task] = o.fit(p.budgets[l][h])
		errs[task] = check(bs[task], fits[task], nil)
	})
	for task, err := range errs {
		if err != nil {
			return nil, nil, fmt.Errorf("compact: layer %d head %d: %w", task/sh.KVHeads, task%sh.KVHeads, err)
		}
	}
	sel := fits[0].Select
	atts, bad, err := newAttentions(ctx, bs, pool, sel == ByOMP, statsFor(sel)...)
	if bad < 0 {
		return nil, nil, err
	}
	if err != nil {
		return nil, nil, fmt.Errorf("compact: layer %d head %d: %w", bad/sh.KVHeads, bad%sh.KVHeads, err)
	}
	return atts, fits, nil
}

// fitCost is the work of a head's fits of t kept keys per reference
// query, for splitting the threads over the heads after their reference
// attention: the β and value fits' Gram matrices (half of each) and XᵀY,
// t·(t + d) float64 multiply-adds, and recomputing the kept keys' scores,
// t·d float32 ones (weighed a third of a float64 one).
func fitCost(t, d int) int { return 3*t*(t+d) + t*d }

// headCost is the work of a head's fit per reference query, for
// splitting the threads over the heads: its reference attention over the
// block's tokens (scores and outputs, float32 products: 2·block·d) and
// its fits of t kept keys (the β and value fits' Gram matrices, half of
// each, and XᵀY: t·(t + d) float64 multiply-adds, weighed 3 for float64
// products at about a third of the float32 rate). The attention is the
// same for every head: with budgets of 0.5x to 4x the uniform one on a
// 4k-token context, a budget alone would leave the small heads a thread
// each for it while the largest head's fit had half the threads.
func headCost(block, t, d int) int { return 2*block*d + 3*t*(t+d) }

// threadShares splits workers threads over tasks in proportion to their
// costs (each at least one thread; the threads left after rounding down
// go to the largest remainders, ties to the earlier task).
func threadShares(costs []int, workers int) []int {
	shares := make([]int, len(costs))
	total := 0
	for _, c := range costs {
		total += max(c, 0)
	}
	if total == 0 || workers <= len(costs) {
		for i := range shares {
			shares[i] = max(1, workers/max(len(costs), 1))
		}
		return shares
	}
	spare := workers - len(costs) // one thread each first
	left := spare
	rem := make([]int, len(costs))
	for i, c := range costs {
		q := spare * max(c, 0)
		shares[i] = 1 + q/total
		rem[i] = q % total
		left -= q / total
	}
	order := make([]int, len(costs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(rem[b], rem[a]) })
	for _, i := range order[:left] {
		shares[i]++
	}
	return shares
}

// perHead returns the tokens kept per KV head, the window included, that
// o asks for in a context of n tokens.
func (o Options) perHead(n int) (int, error) {
	if o.Keep != 0 {
		if o.Ratio != 0 {
			return 0, fmt.Errorf("compact: give a ratio or a number of tokens to keep, not both")
		}
		if o.Keep < 1 || o.Keep > n {
			return 0, fmt.Errorf("compact: a budget of %d tokens per head: want 1 to the context's %d", o.Keep, n)
		}
		return o.Keep, nil
	}
	if !(o.Ratio >= 1) || math.IsInf(o.Ratio, 0) {
		return 0, fmt.Errorf("compact: ratio %g: want a finite ratio of at least 1 (context tokens per token kept)", o.Ratio)
	}
	return int(float64(n) / o.Ratio), nil
}

// workers returns the number of goroutines Compact uses: o.Workers, or
// NumCPU if 0.
func (o Options) workers() int {
	if o.Workers > 0 {
		return o.Workers
	}
	return runtime.NumCPU()
}

// head compacts one layer's KV head: the block's first block tokens into
// t kept ones (those given, if not nil), the fit's products on pool (nil:
// the caller's goroutine), stopping once ctx is done.
func (o Options) head(ctx context.Context, c Context, l, h, block, t int, given []int, pool *tensor.Pool) (Result, error) {
	tr := c.Layers[l]
	d := tr.Shape.HeadDim
	b := headBlock(c, l, h, block)
	evict := Fit{Keys: t, Select: Given, NoBias: true, DirectValues: true}
	switch o.Method {
	case AMHighest, AMOMPMethod:
		f := o.fit(t)
		b.Queries = o.referenceQueries(c, l, h, true)
		f.Pool = pool
		return CompactHeadContext(ctx, b, f)
	case KVzip:
		evict.Index = given
	case SnapKV, PyramidKV:
		evict.Index = snapKV(tr, h, block, t)
	case H2O:
		evict.Index = h2o(tr, h, block, t)
	case Streaming:
		evict.Index = streaming(block, t)
	case Truncate:
		evict.Index = firstN(t)
	}
	// Eviction needs no reference queries; one row makes a valid block.
	b.Queries = make([]float32, d)
	return CompactHeadContext(ctx, b, evict)
}

// headBlock returns layer l's KV head h's first block tokens as a block,
// without reference queries.
func headBlock(c Context, l, h, block int) Block {
	tr := c.Layers[l]
	sh := tr.Shape
	d := sh.HeadDim
	return Block{Dim: d, Keys: headRows(tr.K, sh.KVHeads, d, h, 0, block), Values: headRows(tr.V, sh.KVHeads, d, h, 0, block), Scale: tr.Scale}
}

// fit returns the fit of attention matching (o.Method AMHighest or
// AMOMPMethod) for t kept keys, on the caller's goroutine.
func (o Options) fit(t int) Fit {
	f := AM(t)
	if o.Method == AMOMPMethod {
		f = AMOMP(t)
	} else {
		f.Select = cmp.Or(o.Select, ByMaxRMS)
	}
	if o.Fit.Keys != 0 {
		sel := f.Select
		f = o.Fit
		f.Keys = t
		if f.Select == 0 || f.Select == Given {
			f.Select = sel
		}
	}
	f.Threads, f.Pool = 0, nil
	return f
}

// headRows returns KV head h's rows of tokens [from, to) of x (tokens of
// heads·d values).
func headRows(x []float32, heads, d, h, from, to int) []float32 {
	out := make([]float32, 0, (to-from)*d)
	for p := from; p < to; p++ {
		out = append(out, x[(p*heads+h)*d:(p*heads+h+1)*d]...)
	}
	return out
}

// referenceQueries returns the reference queries of layer l's KV head h:
// rows of the query heads of its group, o.Queries of them (DefaultQueries
// if 0), the extra queries first (at most o.ExtraShare of them with own,
// drawn at random without replacement where there are more), then, with
// own, the context's own queries for the rest. The extra queries come
// from reading or writing about the context after it (rereading,
// self-study): they ask what later tokens will ask, so they take
// precedence over the prefill's own.
func (o Options) referenceQueries(c Context, l, h int, own bool) []float32 {
	tr := c.Layers[l]
	sh := tr.Shape
	d, g := sh.HeadDim, sh.Group()
	qd := sh.QHeads * d
	want := o.Queries
	if want <= 0 {
		want = DefaultQueries
	}
	r := rand.New(rand.NewPCG(o.Seed, uint64(l)<<32|uint64(h)))
	var out []float32
	take := func(q []float32) {
		rows := sampleRows(len(q)/qd*g, want-len(out)/d, r)
		for _, row := range rows {
			tok, j := row/g, row%g
			out = append(out, q[tok*qd+(h*g+j)*d:tok*qd+(h*g+j+1)*d]...)
		}
	}
	if c.Extra != nil {
		share := o.ExtraShare
		if share == 0 {
			share = DefaultExtraShare
		}
		all := want
		if own {
			want = int(math.Ceil(share * float64(all)))
		}
		take(c.Extra[l])
		want = all
	}
	if own {
		take(tr.Q)
	}
	return out
}

// sampleRows returns k of the rows [0, n) drawn at random without
// replacement, ascending (all of them where k ≥ n).
func sampleRows(n, k int, r *rand.Rand) []int {
	rows := make([]int, n)
	for i := range rows {
		rows[i] = i
	}
	if k < n {
		for i := range max(k, 0) { // partial Fisher–Yates
			j := i + r.IntN(n-i)
			rows[i], rows[j] = rows[j], rows[i]
		}
		rows = rows[:max(k, 0)]
		slices.Sort(rows)
	}
	return rows
}
