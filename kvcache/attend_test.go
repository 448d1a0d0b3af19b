package kvcache

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"github.com/turbomem/turbomem/tensor"
)

// TestPartialMerge: a Partial built from scores in pieces (Weigh called
// on each, values added) and Partials merged in any grouping give
// softmax attention computed in float64 at once, including pieces whose
// maximum is far below or above the others' (e^−80) and an empty piece.
func TestPartialMerge(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const n, d, scale = 300, 16, 0.3
	s := make([]float32, n)
	v := make([]float32, n*d)
	for i := range s {
		s[i] = float32(r.NormFloat64() * 4)
		if i >= 200 && i < 220 {
			s[i] += 270 // scale·270 = 81: this piece dominates
		}
	}
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	// float64 reference
	m := math.Inf(-1)
	for _, x := range s {
		m = math.Max(m, scale*float64(x))
	}
	want := make([]float64, d)
	var sum float64
	for i, x := range s {
		e := math.Exp(scale*float64(x) - m)
		sum += e
		for c := range d {
			want[c] += e * float64(v[i*d+c])
		}
	}
	for c := range want {
		want[c] /= sum
	}
	wantLSE := m + math.Log(sum)
	weigh := func(p *Partial, t0, t1 int) {
		w := append([]float32(nil), s[t0:t1]...)
		p.Weigh(w, scale)
		for i, x := range w {
			tensor.AxpyF32(p.Acc, x, v[(t0+i)*d:(t0+i+1)*d])
		}
	}
	check := func(name string, p *Partial) {
		got := make([]float32, d)
		p.Result(got)
		// in place, as AttendTogether writes its rows: the same bits
		in := Partial{Max: p.Max, Sum: p.Sum, Acc: slices.Clone(p.Acc)}
		if in.Result(in.Acc); !slices.Equal(in.Acc, got) {
			t.Errorf("%s: result in place %v, into another slice %v", name, in.Acc, got)
		}
		for c := range d {
			// float32 sums of 300 terms of magnitude ≤ 1 (weights ≤ 1)
			if math.Abs(float64(got[c])-want[c]) > 1e-5 {
				t.Errorf("%s: out[%d] = %g, want %g", name, c, got[c], want[c])
			}
		}
		// Max + log Sum: float32 rounding of a value near 90.
		if lse := p.logSumExp(); math.Abs(float64(lse)-wantLSE) > 1e-5*math.Abs(wantLSE) {
			t.Errorf("%s: log-sum-exp %g, want %g", name, lse, wantLSE)
		}
	}
	cuts := [][]int{{0, n}, {0, 100, 200, 220, n}, {0, 7, 7, 150, 299, n}, {0, 210, n}}
	for _, cut := range cuts {
		// one Partial fed piece by piece
		var one Partial
		one.Reset(d)
		for i := 0; i+1 < len(cut); i++ {
			weigh(&one, cut[i], cut[i+1])
		}
		check("sequential", &one)
		// one Partial per piece, merged forwards and backwards
		parts := make([]Partial, len(cut)-1)
		for i := range parts {
			parts[i].Reset(d)
			weigh(&parts[i], cut[i], cut[i+1])
		}
		var fwd, bwd Partial
		fwd.Reset(d)
		bwd.Reset(d)
		for i := range parts {
			fwd.Merge(&parts[i])
			bwd.Merge(&parts[len(parts)-1-i])
		}
		check("merged forwards", &fwd)
		check("merged backwards", &bwd)
		// merged into one that starts at their largest maximum (as
		// AttendTogether merges its chunks: no merge rescales)
		var top Partial
		top.Reset(d)
		for i := range parts {
			top.Max = max(top.Max, parts[i].Max)
		}
		for i := range parts {
			top.Merge(&parts[i])
		}
		check("merged from the largest maximum", &top)
	}
	var empty Partial
	empty.Reset(d)
	got := make([]float32, d)
	got[0] = 7
	empty.Result(got)
	if empty.Sum != 0 || !math.IsInf(float64(empty.Max), -1) || got[0] != 0 || !math.IsInf(float64(empty.logSumExp()), -1) {
		t.Errorf("empty Partial: Sum %g, Max %g, result %g, log-sum-exp %g", empty.Sum, empty.Max, got[0], empty.logSumExp())
	}
}

// TestSlices: the slice count is what the old rule gave (a slice per
// thread, none shorter than the shortest) wherever the KV heads divide
// the threads or the threads the heads evenly, and otherwise the count
// of least ⌈heads·k/threads⌉/k (the fewest among equals) from there to
// four times it: never more rounds of tasks per position than the old
// rule. One slice on one thread or below minParallelWork.
func TestSlices(t *testing.T) {
	sh := func(heads int) Shape { return Shape{QHeads: 4 * heads, KVHeads: heads, HeadDim: 128} }
	for _, c := range []struct{ heads, threads, n, want int }{
		{1, 1, 16384, 1}, {1, 16, 16384, 16}, {2, 16, 16384, 8}, {4, 16, 16384, 4}, {4, 4, 16384, 1},
		{1, 16, 2048, 4},   // no shorter than 512 positions
		{3, 16, 16384, 16}, // 48 slices in three rounds, not 18 in two
		{2, 3, 16384, 3}, {4, 6, 16384, 3}, {8, 6, 16384, 3}, {2, 5, 16384, 5},
		{1, 16, 40, 1}, // below minParallelWork
	} {
		a := &attention{split: c.threads, shortest: compressedMinSlice}
		got := a.slices(sh(c.heads), c.n)
		if got != c.want {
			t.Errorf("%d KV heads, %d threads, %d positions: %d slices, want %d", c.heads, c.threads, c.n, got, c.want)
		}
		old := 1
		if c.threads > c.heads && c.n*4*128 >= minParallelWork {
			old = max(1, min((c.threads+c.heads-1)/c.heads, c.n/compressedMinSlice))
		}
		if rounds(c.heads*got, c.threads)*old > rounds(c.heads*old, c.threads)*got {
			t.Errorf("%d KV heads, %d threads: %d slices take longer than the old rule's %d", c.heads, c.threads, got, old)
		}
	}
}

// TestBounds: slices cover [0, n) in order, start on multiples of
// sliceAlign and are never empty for n ≥ k·minSlice.
func TestBounds(t *testing.T) {
	for _, n := range []int{512, 513, 1000, 4096, 16411} {
		for k := 1; k <= n/minSlice; k++ {
			prev := 0
			for i := range k {
				t0, t1 := bounds(i, k, n)
				if t0 != prev || t0%sliceAlign != 0 || t1 <= t0 {
					t.Fatalf("n=%d k=%d slice %d: [%d, %d) after %d", n, k, i, t0, t1, prev)
				}
				prev = t1
			}
			if prev != n {
				t.Fatalf("n=%d k=%d: slices end at %d", n, k, prev)
			}
		}
	}
}

// TestAttendParallel: with a pool, every format's Attend (keys and values
// split over threads by position and merged) gives what it gives on one
// goroutine, within float rounding: 1e-5 of the output's RMS plus the
// element's magnitude (the slices sum their terms in another order and
// normalise once per slice: a few float32 ulps, 2^-24 each, per term), at lengths where slices fall in the compressed
// part, the window, and across the two, for 1 and 2 KV heads, with and
// without a rope; the slices share their KV head's queries prepared once
// (preparedKeys) where there is more than one slice per head.
func TestAttendParallel(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	names := append([]string{"f32", "f16"}, FormatNames()...)
	pools := []*tensor.Pool{tensor.NewPool(2), tensor.NewPool(5)}
	defer func() {
		for _, p := range pools {
			p.Close()
		}
	}()
	// the third shape has a rope (the turbo formats' centring term) and
	// groups of 3 queries (a padded group of four)
	for _, sh := range []Shape{{QHeads: 4, KVHeads: 1, HeadDim: 128}, {QHeads: 8, KVHeads: 2, HeadDim: 64},
		{QHeads: 6, KVHeads: 2, HeadDim: 64, Rope: testRope(t, 64, 64, false)}} {
		ks, vs := kvData(r, sh, 1400, true)
		for _, name := range names {
			spec := withCov(t, specFor(t, name, 64), sh)
			if name == "f32" || name == "f16" {
				spec.Window = 0
			}
			if testing.Short() && name != "f16" && name != "turbo3.5" && name != "kivi2" {
				continue
			}
			var caches []Cache
			for range 1 + len(pools) {
				c, err := newTestCache(name, spec, sh)
				if err != nil {
					t.Fatal(err)
				}
				caches = append(caches, c)
			}
			for i, p := range pools {
				UsePool(caches[i+1], p)
			}
			// the second pool's cache in slices as short as Dense's, so
			// that slices fall in the window and across it at every length
			caches[2].(interface{ att() *attention }).att().shortest = minSlice
			for n := 1; n <= len(ks); n++ {
				for _, c := range caches {
					if err := c.Append(ks[n-1], vs[n-1]); err != nil {
						t.Fatal(err)
					}
				}
				if n != 40 && n != 600 && n != 1037 && n != len(ks) {
					continue
				}
				q := randQuery(r, sh)
				want := make([]float32, len(q))
				caches[0].Attend(want, q, 0.088)
				var rms float64
				for _, w := range want {
					rms += float64(w) * float64(w)
				}
				rms = math.Sqrt(rms / float64(len(want)))
				for i, c := range caches[1:] {
					got := make([]float32, len(q))
					c.Attend(got, q, 0.088)
					for j := range got {
						if math.Abs(float64(got[j]-want[j])) > 1e-5*(rms+math.Abs(float64(want[j]))) {
							t.Fatalf("%s %v n=%d pool %d: out[%d] = %g, one goroutine %g (rms %g)", name, sh, n, pools[i].Threads(), j, got[j], want[j], rms)
						}
					}
				}
			}
		}
	}
}

// TestAttendSplitExact: on a pool, Attend's one region (each query's
// set-up, the slices, each query's merge, tasks waiting for the ones
// before them) gives bit for bit what the same slicing gives with every
// task on the caller, in task order: for f16, the turbo formats (queries
// set up per query: lanes and the centring term) and klt3.5 (set up per
// group), 1 and 2 KV heads, groups of 4 and 3, on pools smaller and
// larger than GOMAXPROCS (whose waits yield the processor).
func TestAttendSplitExact(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	pools := []*tensor.Pool{tensor.NewPool(2), tensor.NewPool(5), tensor.NewPool(2*runtime.GOMAXPROCS(0) + 3)}
	defer func() {
		for _, p := range pools {
			p.Close()
		}
	}()
	for _, sh := range []Shape{{QHeads: 4, KVHeads: 1, HeadDim: 128}, {QHeads: 6, KVHeads: 2, HeadDim: 64}} {
		sh.Rope = testRope(t, sh.HeadDim, sh.HeadDim, false)
		ks, vs := kvData(r, sh, 1500, true)
		for _, name := range []string{"f16", "turbo3.5", "turbo2.5", "klt3.5"} {
			spec := withCov(t, specFor(t, name, 64), sh)
			var caches []Cache // one per pool, then one per pool's slicing on the caller
			for range 2 * len(pools) {
				c, err := newTestCache(name, spec, sh)
				if err != nil {
					t.Fatal(err)
				}
				for i := range ks {
					if err := c.Append(ks[i], vs[i]); err != nil {
						t.Fatal(err)
					}
				}
				a := c.(interface{ att() *attention }).att()
				a.shortest = minSlice
				caches = append(caches, c)
			}
			for i, p := range pools {
				UsePool(caches[i], p)
				caches[len(pools)+i].(interface{ att() *attention }).att().split = p.Threads()
			}
			for range 3 {
				q := randQuery(r, sh)
				for i, p := range pools {
					want, got := make([]float32, len(q)), make([]float32, len(q))
					caches[len(pools)+i].Attend(want, q, 0.088)
					caches[i].Attend(got, q, 0.088)
					for j := range got {
						if got[j] != want[j] {
							t.Fatalf("%s %d KV heads, pool of %d: out[%d] = %g, on the caller %g", name, sh.KVHeads, p.Threads(), j, got[j], want[j])
						}
					}
				}
			}
		}
	}
}

// newTestCache makes a cache of format name: Dense for f32 and f16, else
// spec's.
func newTestCache(name string, spec Spec, sh Shape) (Cache, error) {
	switch name {
	case "f32":
		return NewF32(sh)
	case "f16":
		return NewF16(sh)
	}
	return spec.NewCache(0, sh)
}

// step16k returns a query of the embedded model's shape (4 query heads,
// 1 KV head of 128, RoPE base 10⁴) and a cache of each format named
// holding 16k tokens of keys that turn with a mean of 4 times their
// residual's energy, as real keys do.
func step16k(b *testing.B, names []string) (q []float32, caches []Cache) {
	return stepAt(b, names, Shape{QHeads: 4, KVHeads: 1, HeadDim: 128}, 16384)
}

// stepAt is step16k for the shape sh (given a RoPE of base 10⁴) and n
// tokens.
func stepAt(b *testing.B, names []string, sh Shape, n int) (q []float32, caches []Cache) {
	sh.Rope = testRope(b, sh.HeadDim, sh.HeadDim, false)
	r := rand.New(rand.NewPCG(1, 1))
	ks, vs := rotatingKeys(r, sh, sh.Rope, n, 4)
	for _, name := range names {
		c, err := newTestCache(name, withCov(b, specFor(b, name, 0), sh), sh)
		if err != nil {
			b.Fatal(err)
		}
		for i := range ks {
			if err := c.Append(ks[i], vs[i]); err != nil {
				b.Fatal(err)
			}
		}
		caches = append(caches, c)
	}
	return randQuery(r, sh), caches
}

// BenchmarkAttendThreads times one attention step at 16k tokens
// (step16k) on 1 goroutine and on all CPUs: a single KV head is split
// over threads by position; and at 4k tokens on all CPUs (ctx=4096),
// where the step's fixed costs (its region, the queries' set-up, the
// tail) weigh more.
func BenchmarkAttendThreads(b *testing.B) {
	names := []string{"f16", "q8_0", "turbo3.5", "tcq3.5"}
	q, caches := step16k(b, names)
	out := make([]float32, len(q))
	for i, c := range caches {
		for _, threads := range []int{1, 0} {
			p := tensor.NewPool(threads)
			UsePool(c, p)
			b.Run(fmt.Sprintf("%s/threads=%d", names[i], p.Threads()), func(b *testing.B) {
				for b.Loop() {
					c.Attend(out, q, 0.088)
				}
			})
			p.Close()
		}
	}
	q, caches = stepAt(b, names, Shape{QHeads: 4, KVHeads: 1, HeadDim: 128}, 4096)
	p := tensor.NewPool(0)
	defer p.Close()
	for i, c := range caches {
		UsePool(c, p)
		b.Run(fmt.Sprintf("%s/ctx=4096/threads=%d", names[i], p.Threads()), func(b *testing.B) {
			for b.Loop() {
				c.Attend(out, q, 0.088)
			}
		})
	}
}

// BenchmarkAttendPosition times one attention step on one goroutine at
// 4k and 16k tokens, for the embedded model's shape (4 query heads, 1 KV
// head of 128: g=4) and a GQA group of two (4 query heads, 2 KV heads:
// g=2), and reports ns/pos, the step's time per cached position (every KV
// head's). cpu-ns/op is the thread's CPU time, which holds on a loaded
// machine where the wall time does not.
func BenchmarkAttendPosition(b *testing.B) {
	names := []string{"f16", "turbo3.5", "turbo2.5"}
	for _, sh := range []Shape{{QHeads: 4, KVHeads: 1, HeadDim: 128}, {QHeads: 4, KVHeads: 2, HeadDim: 128}} {
		for _, n := range []int{4096, 16384} {
			q, caches := stepAt(b, names, sh, n)
			out := make([]float32, len(q))
			for i, c := range caches {
				b.Run(fmt.Sprintf("g=%d/%s/ctx=%d", sh.Group(), names[i], n), func(b *testing.B) {
					loopCPU(b, func() { c.Attend(out, q, 0.088) })
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/pos")
				})
			}
		}
	}
}

// att returns the attention a cache embeds (Dense, Compressed).
func (a *attention) att() *attention { return a }

// BenchmarkAttendSlices: one attention step at 16k tokens (step16k) cut
// into the slices of 1 and of 16 threads, every slice run on the one
// goroutine (attention.split): the difference is what 15 more slices cost
// in all (the per-slice set-up, partial sums and merges), which a
// 16-thread step pays on its critical path once per slice it waits for.
// cpu-ns/op, the thread's CPU time, holds on a loaded machine where the
// wall time does not.
func BenchmarkAttendSlices(b *testing.B) {
	names := []string{"f16", "turbo3.5", "turbo2.5", "klt3.5"}
	q, caches := step16k(b, names)
	out := make([]float32, len(q))
	for i, c := range caches {
		a := c.(interface{ att() *attention }).att()
		for _, k := range []int{1, 16} {
			a.split = k
			b.Run(fmt.Sprintf("%s/slices=%d", names[i], k), func(b *testing.B) {
				loopCPU(b, func() { c.Attend(out, q, 0.088) })
			})
		}
	}
}

// BenchmarkAttendParts times, on one goroutine, the parts of a turbo3.5
// attention step at 16k (step16k: 4 query heads on one KV head) that a
// 16-thread step runs as its critical path: one query's set-up (each of
// the first slices to start makes one), one slice of 1024 positions
// (16 threads' share; its codes stay in cache from call to call, as a
// lone layer's do), one query's merge of 16 slices and rotation back
// (the tail, a query per goroutine), and the Append of one token (on the
// caller, before the step; with a pool, the move of the token leaving the
// window is two tasks, timed here each). cpu-ns/op is the thread's CPU
// time.
func BenchmarkAttendParts(b *testing.B) {
	q, caches := step16k(b, []string{"turbo3.5"})
	c := caches[0].(*Compressed)
	out := make([]float32, len(q))
	c.Attend(out, q, 0.088)
	al := c.heads[0].values.accLen()
	c.call = compressedStep{c: c, out: out, q: q, scale: 0.088, al: al, nc: c.nc}
	c.call.begin(0)
	b.Run("setup/query", func(b *testing.B) { loopCPU(b, func() { c.call.prep(0, 1) }) })
	for j := range 4 {
		c.call.prep(0, j)
	}
	const slices, m = 16, 1024
	g := c.shape.Group()
	parts := make([]Partial, slices*g)
	ws := &workspace{}
	for si := range slices {
		for j := range g {
			parts[si*g+j].Reset(al + c.shape.HeadDim)
		}
		c.call.task(ws, 0, si*m, (si+1)*m, parts[si*g:(si+1)*g])
	}
	b.Run("slice=1024", func(b *testing.B) {
		p := make([]Partial, g)
		loopCPU(b, func() {
			for j := range p {
				p[j].Reset(al + c.shape.HeadDim)
			}
			c.call.task(ws, 0, 0, m, p)
		})
	})
	b.Run("tail/query", func(b *testing.B) {
		var p Partial
		loopCPU(b, func() {
			p.Reset(al + c.shape.HeadDim)
			p.Max, p.Sum = parts[0].Max, parts[0].Sum
			copy(p.Acc, parts[0].Acc)
			for si := 1; si < slices; si++ {
				p.Merge(&parts[si*g])
			}
			c.call.finish(ws, 0, 0, &p)
		})
	})
	c.call = compressedStep{}
	k, v := make([]float32, c.shape.HeadDim), make([]float32, c.shape.HeadDim)
	for i := range k {
		k[i], v[i] = float32(i%7)*0.1, float32(i%5)*0.1
	}
	b.Run("append", func(b *testing.B) {
		loopCPU(b, func() {
			if err := c.Append(k, v); err != nil {
				b.Fatal(err)
			}
		})
	})
	// With a pool, the token leaving the window is two tasks (compress):
	// its key (centred, encoded, put into its block) and its value; the
	// caller's part of Append is the rest.
	for t, name := range []string{"keys", "values"} {
		b.Run("append/move="+name, func(b *testing.B) {
			loopCPU(b, func() { c.moveTask(t, 0) })
			if err := c.moveErrs[t]; err != nil {
				b.Fatal(err)
			}
		})
	}
}

// TestAttendLast: Dense's AttendLast over a chunk of tokens just appended
// gives, bit for bit, what Attend after each Append gives on one
// goroutine, for chunks at the start and after earlier tokens, with and
// without a pool.
func TestAttendLast(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	sh := Shape{QHeads: 8, KVHeads: 2, HeadDim: 64}
	ks, vs := kvData(r, sh, 300, true)
	qd := sh.QHeads * sh.HeadDim
	q := make([]float32, len(ks)*qd)
	for i := range len(ks) {
		copy(q[i*qd:], randQuery(r, sh))
	}
	pool := tensor.NewPool(3)
	defer pool.Close()
	for _, name := range []string{"f32", "f16"} {
		ref, _ := newTestCache(name, Spec{}, sh)
		want := make([]float32, len(q))
		for i := range ks {
			if err := ref.Append(ks[i], vs[i]); err != nil {
				t.Fatal(err)
			}
			ref.Attend(want[i*qd:(i+1)*qd], q[i*qd:(i+1)*qd], 0.1)
		}
		for _, p := range []*tensor.Pool{nil, pool} {
			c, _ := newTestCache(name, Spec{}, sh)
			UsePool(c, p)
			got := make([]float32, len(q))
			for _, chunk := range [][2]int{{0, 1}, {1, 100}, {100, 300}} {
				for i := chunk[0]; i < chunk[1]; i++ {
					if err := c.Append(ks[i], vs[i]); err != nil {
						t.Fatal(err)
					}
				}
				n := chunk[1] - chunk[0]
				c.(LastAttender).AttendLast(got[chunk[0]*qd:chunk[1]*qd], q[chunk[0]*qd:chunk[1]*qd], n, 0.1)
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("%s pool %d: out[%d] (token %d) = %g, Attend after each Append %g", name, p.Threads(), i, i/qd, got[i], want[i])
				}
			}
		}
	}
}
