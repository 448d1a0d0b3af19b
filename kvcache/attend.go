package kvcache

import (
	"sync/atomic"
	"time"

	"github.com/turbomem/turbomem/half"
	"github.com/turbomem/turbomem/quant"
	"github.com/turbomem/turbomem/tensor"
)

// UsePool makes c's Attend share the goroutines of p (nil: the caller's
// alone), where c's type supports it (Dense and Compressed do, and types
// that embed them).
func UsePool(c Cache, p *tensor.Pool) {
	if pc, ok := c.(interface{ SetPool(*tensor.Pool) }); ok {
		pc.SetPool(p)
	}
}

// SharesScratch reports whether c shares Attend scratch with other
// caches (a compacted context and its forks, Compacted.Fork), so that it
// must not attend at the same time as they do: callers that attend
// several sessions' caches side by side check it.
func SharesScratch(c Cache) bool {
	s, ok := c.(interface{ SharesScratch() bool })
	return ok && s.SharesScratch()
}

// minParallelWork is the number of multiply-adds per KV head below which
// Attend runs on its caller: handing out tasks would cost more than it
// saves.
const minParallelWork = 1 << 15

// minSlice is the fewest positions worth a task of their own (Dense;
// compressedMinSlice for Compressed); slices start at multiples of
// sliceAlign positions, so that every slice of a KIVI cache starts on one
// of its 32-token key blocks.
//
// A slice of a compressed cache costs more to start and less per
// position than an fp16 one. Measured on one goroutine (a 16k step cut
// into 1, 16 and 64 slices, 4 query heads of 128, 2026-12-03): every
// extra slice costs 1–2 µs of CPU with turbo3.5 (19 ns a position; its
// queries are prepared once per step, and a slice sums the centring
// term's nodes for its own chunks only), 7 µs with q8_0 (48 ns a
// position), nothing measurable with f16; 512 positions keep that to a
// fifth of a turbo slice's time or less. On 16 threads, though, the
// formats on lane kernels (turbo, klt, tcq: laneMinSlice) decode faster
// with slices of 128 (the embedded model at 1024 and 4096 tokens:
// turbo3.5 0.71–0.81x f16's tok/s against 0.62–0.71x with 512; q8_0 and
// q4_0 slower, so they keep 512; BENCHMARKS.md, 2026-12-04).
const (
	minSlice           = 128
	compressedMinSlice = 512
	laneMinSlice       = 128
	sliceAlign         = 64
)

// helpFor is how long a goroutine that would help with a KV head's
// merges waits for its last slice before it leaves them to that slice:
// about what the slices of a 16-thread step at 16k differ by, a few
// microseconds, with room.
const helpFor = 20 * time.Microsecond

// attention is the part of Attend that every cache type shares:
// flash-decoding over a pool. The positions [0, n) of each KV head are
// cut into slices; one task per (KV head, slice) fills a Partial for each
// query head of the group; the slices' Partials then merge, in slice
// order, so the result does not depend on which goroutine ran what.
type attention struct {
	pool  *tensor.Pool
	parts []Partial   // per (KV head, slice, query of the group)
	work  []workspace // per goroutine of the pool
	left  []headLeft  // per KV head: its set-up and slices not yet done
	// bias, if set, holds a logit bias (fp16, natural-log units added to
	// the scaled score) for the first positions of each KV head: a
	// compacted context's (Compacted).
	bias [][]uint16
	// lse, if set, receives each query head's log-sum-exp of its scaled
	// scores when Attend finishes it (Compacted's attendLSE).
	lse []float32
	// early, if earlyN > 0, is work of the cache's own that a step's
	// region runs first, beside the slices, as its tasks 0 to earlyN−1
	// (early(i, worker)): a compressed cache encoding the token due to
	// leave its window next.
	early  func(i, worker int)
	earlyN int
	// split, if set, is the thread count slices are cut for in place of
	// the pool's: a pool's slicing measured on one goroutine.
	split int
	// shortest is the fewest positions of a slice (0: minSlice).
	shortest int
	// run's call: its step and sizes, read by its tasks, and the task
	// as a func value, made once for this attention (of)
	cur             attendStep
	pool1           *tensor.Pool // the pool of the call (nil: the caller's alone)
	g, k, n, accLen int
	heads, np       int
	prep            bool
	of              *attention
	taskFunc        func(task, worker int)
}

// setBias gives the first len(b[h]) positions of KV head h the logit
// biases b[h] (fp16 bits).
func (a *attention) setBias(b [][]uint16) { a.bias = b }

// biasScores adds KV head hi's logit biases of positions [t0, t0+len(s))
// to the raw scores s, divided by scale (Partial.Weigh scales them).
func (a *attention) biasScores(s []float32, hi, t0 int, scale float32) {
	if a.bias == nil {
		return
	}
	b := a.bias[hi]
	for i := range min(len(s), len(b)-t0) {
		s[i] += half.F16ToF32(half.F16(b[t0+i])) / scale
	}
}

// queryPrep is a KV head's group of queries set up for its key store
// (preparedKeys) once per attention step and shared, read-only, by the
// step's slices of positions.
type queryPrep struct {
	qs    [][]float32 // the group's queries
	lanes quant.LaneQueries
	klt   quant.KLTQueries
	mean  meanPlan
	// nc is the number of compressed positions the queries see (a
	// tiered store reads them at the rates they had then).
	nc int
	// tier is the set-up of a tiered store's low-rate keys.
	tier *queryPrep
}

// setQueries points p.qs at the g queries of KV head hi's group in q (d
// values each).
func (p *queryPrep) setQueries(q []float32, hi, g, d int) {
	p.qs = p.qs[:0]
	for j := range g {
		p.qs = append(p.qs, q[(hi*g+j)*d:(hi*g+j+1)*d])
	}
}

// workspace is one goroutine's scratch for Attend tasks. The
// goroutines' workspaces sit side by side (attention.work): the padding
// keeps each one's fields off the cache lines of its neighbours'.
type workspace struct {
	_      [64]byte
	scores []float32 // g·(slice length)
	// per query of the group: query, scores, value sums, and the
	// compressed positions' part of the scores and sums
	qs, sc, accs, cs, ca [][]float32
	accum                []quant.Accumulator // Compressed: per KV head, made lazily
	parts                []Partial           // runRows: the group's Partials
	prep                 queryPrep           // runRows: the group's queries set up
	_                    [64]byte
}

// SetPool makes Attend share the goroutines of p (nil: the caller's
// alone).
func (a *attention) SetPool(p *tensor.Pool) { a.pool = p }

// slices returns how many slices each KV head's n positions are cut into:
// none shorter than a.shortest (minSlice if unset), one when the work is
// too small to share, and otherwise the count that ends soonest when
// the heads' slices share the pool's threads (least ⌈heads·k/threads⌉/k,
// the rounds of tasks times a slice's length; the fewest slices among
// equals), from enough for a task per thread up to four times that: 18
// slices for 3 KV heads on 16 threads would take two rounds of a sixth
// of the positions, 48 take three of a sixteenth.
func (a *attention) slices(s Shape, n int) int {
	threads := a.pool.Threads()
	if a.split > 0 {
		threads = a.split
	}
	heads := s.KVHeads
	if threads == 1 || n*s.Group()*s.HeadDim < minParallelWork {
		return 1
	}
	shortest := a.shortest
	if shortest == 0 {
		shortest = minSlice
	}
	want := (threads + heads - 1) / heads
	best := max(1, min(want, n/shortest))
	for k := best + 1; k <= min(4*want, n/shortest); k++ {
		// k ends sooner than best: ⌈heads·k/threads⌉/k < ⌈heads·best/threads⌉/best
		if rounds(heads*k, threads)*best < rounds(heads*best, threads)*k {
			best = k
		}
	}
	return best
}

// stepPool returns the pool a step over n positions cut into k slices
// per KV head runs on: nil (the caller alone) where the work is too
// little to share.
func (a *attention) stepPool(s Shape, n, k int) *tensor.Pool {
	if s.KVHeads*k == 1 || (k == 1 && n*s.Group()*s.HeadDim < minParallelWork) {
		return nil
	}
	return a.pool
}

// rounds returns ⌈tasks/threads⌉.
func rounds(tasks, threads int) int { return (tasks + threads - 1) / threads }

// bounds returns slice i of k over [0, n): aligned starts, the last one
// ending at n.
func bounds(i, k, n int) (t0, t1 int) {
	at := func(i int) int {
		if i == k {
			return n
		}
		return n * i / k / sliceAlign * sliceAlign
	}
	return at(i), at(i + 1)
}

// attendStep is one Attend call's work, as attention.run hands it out:
// where the run is told to prepare, begin(hi) sizes what KV head hi's
// tasks share (the group's queries prepared for its key store) and
// prep(hi, j) fills in query j's part of it (calls for different j may
// run at once), before any of the head's tasks; task(ws, hi, t0, t1,
// parts) fills one Partial per query head of KV head hi's group (each
// Reset to accLen) from positions [t0, t1), scratch in ws; finish(ws, hi,
// j, p) writes query head hi·g+j's output from its merged Partial. A
// cache keeps its attendStep with the call's arguments in its own fields,
// so that a step makes no closures.
type attendStep interface {
	begin(hi int)
	prep(hi, j int)
	task(ws *workspace, hi, t0, t1 int, parts []Partial)
	finish(ws *workspace, hi, j int, p *Partial)
}

// run computes attention for all query heads with step (see
// attendStep), preparing the queries where prep is set.
//
// With one slice per head, a head's task makes its own set-up and
// finishes its heads. With more, one region of the pool runs the slices,
// then g−1 helper tasks per KV head. A KV head's set-up is made by its
// first slices to start, a query each (the others wait for it:
// tensor.Pool.Wait); its merges and finishes, a query at a time, by the
// goroutine that ends its last slice and by the helpers, which wait for
// that (spinning, as the pool's idle goroutines do) and leave when it
// takes long, the last slice then doing what is left. The set-up and the
// step's tail are so shared by up to g goroutines instead of holding up
// all of them on one, in one region; each query head's Partials merge in
// slice order, so the results are those of the same slicing on one
// goroutine, bit for bit.
func (a *attention) run(s Shape, n, accLen int, step attendStep, prep bool) {
	g, heads := s.Group(), s.KVHeads
	k := a.slices(s, n)
	pool := a.stepPool(s, n, k)
	if need := heads * k * g; len(a.parts) < need {
		a.parts = append(a.parts, make([]Partial, need-len(a.parts))...)
	}
	if need := pool.Threads(); len(a.work) < need {
		a.work = append(a.work, make([]workspace, need-len(a.work))...)
	}
	if len(a.left) < heads {
		a.left = make([]headLeft, heads)
	}
	if a.of != a { // made once: a step's regions make no closures
		a.of, a.taskFunc = a, a.runTask
	}
	a.cur, a.pool1, a.g, a.k, a.n, a.accLen, a.heads, a.prep = step, pool, g, k, n, accLen, heads, prep
	tasks := heads * k
	if k > 1 {
		for hi := range heads {
			l := &a.left[hi]
			if prep {
				step.begin(hi)
				l.prepNext.Store(0)
				l.prep.Set(g)
			}
			l.slices.Store(int32(k))
			l.finNext.Store(0)
			l.gaveUp.Store(false)
		}
		tasks += heads * (g - 1)
	}
	pool.Run(a.earlyN+tasks, a.taskFunc)
	a.cur, a.pool1 = nil, nil
}

// runTask is run's task ti on goroutine w: slice ti%k of KV head ti/k,
// or, past the slices, a helper of KV head (ti − heads·k)/(g−1).
func (a *attention) runTask(ti, w int) {
	if ti < a.earlyN {
		a.early(ti, w)
		return
	}
	ti -= a.earlyN
	g, k, step := a.g, a.k, a.cur
	ws := &a.work[w]
	if ti >= a.heads*k {
		hi := (ti - a.heads*k) / (g - 1)
		l := &a.left[hi]
		done := func() bool { return l.slices.Load() == 0 }
		// Once a helper has given up on the head, the next ones (on the
		// same goroutine, often) look once and leave.
		if l.gaveUp.Load() && !done() || !l.gaveUp.Load() && !a.pool1.Spin(helpFor, done) {
			l.gaveUp.Store(true)
			return
		}
		a.finishHead(ws, hi)
		return
	}
	hi, si := ti/k, ti%k
	l := &a.left[hi]
	if a.prep {
		if k == 1 {
			step.begin(hi)
			for j := range g {
				step.prep(hi, j)
			}
		} else {
			for j := int(l.prepNext.Add(1) - 1); j < g; j = int(l.prepNext.Add(1) - 1) {
				step.prep(hi, j)
				l.prep.Done()
			}
			a.pool1.Wait(&l.prep)
		}
	}
	t0, t1 := bounds(si, k, a.n)
	parts := a.parts[ti*g : (ti+1)*g]
	for j := range parts {
		parts[j].Reset(a.accLen)
	}
	step.task(ws, hi, t0, t1, parts)
	if k == 1 {
		for j := range parts {
			a.finishQuery(ws, hi, j, &parts[j])
		}
		return
	}
	if l.slices.Add(-1) == 0 {
		a.finishHead(ws, hi)
	}
}

// finishHead merges, in slice order, and finishes KV head hi's query
// heads that no other goroutine has taken, one at a time, once all its
// slices are done.
func (a *attention) finishHead(ws *workspace, hi int) {
	g, k := a.g, a.k
	l := &a.left[hi]
	for j := int(l.finNext.Add(1) - 1); j < g; j = int(l.finNext.Add(1) - 1) {
		p := &a.parts[hi*k*g+j]
		for si := 1; si < k; si++ {
			p.Merge(&a.parts[(hi*k+si)*g+j])
		}
		a.finishQuery(ws, hi, j, p)
	}
}

// finishQuery writes query head hi·g+j's output from its merged Partial
// p (and its log-sum-exp, where a.lse asks for it).
func (a *attention) finishQuery(ws *workspace, hi, j int, p *Partial) {
	a.cur.finish(ws, hi, j, p)
	if a.lse != nil {
		a.lse[hi*a.g+j] = p.logSumExp()
	}
}

// headLeft is a KV head's progress in an attention step, on cache lines
// of its own: every task's goroutine writes it.
type headLeft struct {
	_        [64]byte
	prepNext atomic.Int32 // queries whose set-up is taken
	prep     tensor.Latch // queries whose set-up is not done
	slices   atomic.Int32 // slices not done
	finNext  atomic.Int32 // queries whose merge is taken
	gaveUp   atomic.Bool  // a helper left before the slices were done
}

// runRows computes attention for n query rows at once: row i over the
// positions [0, limit(i)), its Partials of accLen(i) values, one task per
// (row, KV head) on the pool, each on a single slice, the last rows (the
// longest, in a prompt's chunk) handed out first. task and finish are as
// for run, with the row added.
func (a *attention) runRows(s Shape, n int, accLen, limit func(i int) int, task func(ws *workspace, i, hi, t0, t1 int, parts []Partial), finish func(ws *workspace, i, hi, j int, p *Partial)) {
	g := s.Group()
	if need := a.pool.Threads(); len(a.work) < need {
		a.work = append(a.work, make([]workspace, need-len(a.work))...)
	}
	a.pool.Run(n*s.KVHeads, func(ti, w int) {
		i, hi := n-1-ti/s.KVHeads, ti%s.KVHeads
		ws := &a.work[w]
		if len(ws.parts) < g {
			ws.parts = make([]Partial, g)
		}
		parts := ws.parts[:g]
		for j := range parts {
			parts[j].Reset(accLen(i))
		}
		task(ws, i, hi, 0, limit(i), parts)
		for j := range parts {
			finish(ws, i, hi, j, &parts[j])
		}
	})
}

// group sets ws's per-query views for a task over m positions of KV head
// hi: the group's queries from q (d values each), m scores each, and the
// Partials' sums; cs and ca are the first mc scores and the first al
// values of the sums (a compressed cache's compressed positions).
func (ws *workspace) group(q []float32, hi, g, d, m, mc, al int, parts []Partial) {
	if cap(ws.scores) < g*m {
		// Room to grow: a decode step's context is one longer than the
		// last's, which must not cost an array each step.
		ws.scores = make([]float32, 0, 2*g*m)
	}
	ws.scores = ws.scores[:g*m]
	ws.qs, ws.sc, ws.accs, ws.cs, ws.ca = ws.qs[:0], ws.sc[:0], ws.accs[:0], ws.cs[:0], ws.ca[:0]
	for j := range g {
		sc := ws.scores[j*m : (j+1)*m]
		ws.qs = append(ws.qs, q[(hi*g+j)*d:(hi*g+j+1)*d])
		ws.sc = append(ws.sc, sc)
		ws.accs = append(ws.accs, parts[j].Acc)
		ws.cs = append(ws.cs, sc[:mc])
		ws.ca = append(ws.ca, parts[j].Acc[:al])
	}
}

// accumulator returns this goroutine's Accumulator for KV head hi's
// values (of heads heads), made on first use.
func (ws *workspace) accumulator(hi, heads int, v valueStore) quant.Accumulator {
	if len(ws.accum) < heads {
		ws.accum = append(ws.accum, make([]quant.Accumulator, heads-len(ws.accum))...)
	}
	if ws.accum[hi] == nil {
		ws.accum[hi] = v.newAccumulator()
	}
	return ws.accum[hi]
}
