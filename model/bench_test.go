package model_test

import (
	"cmp"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/suite"
	"github.com/turbomem/turbomem/tensor"
)

// benchModel returns the embedded model, or the one named by
// $TURBOMEM_BENCH_MODEL as a model list names it (suite.Resolve): a
// suite model ("large" for .models/suite-large.gguf, Q6_K) or a GGUF
// file's path (a bigger model from tools/randmodel, say); the benchmark
// is skipped, with a message that says so, where that file is absent.
func benchModel(b *testing.B, threads int) *model.Model {
	b.Helper()
	o := model.Options{Threads: threads}
	var m *model.Model
	var err error
	p, ok := suite.Resolve(cmp.Or(os.Getenv("TURBOMEM_BENCH_MODEL"), suite.Default))
	if !ok {
		b.Skip(suite.Absent(p))
	}
	if p != "" {
		m, err = model.Open(p, o)
	} else {
		m, err = defaultmodel.Load(o)
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

// BenchmarkDecode times one decode step after a 128-token prompt (f16
// cache): what a token of generation costs at short context.
func BenchmarkDecode(b *testing.B) {
	m := benchModel(b, 0)
	ids := make([]int32, 128)
	for i := range ids {
		ids[i] = int32(7 + 31*i%1000)
	}
	const steps = 512 // per session; a fresh one then starts, untimed
	var s *model.Session
	tok := []int32{42}
	b.ReportAllocs()
	for b.Loop() {
		if s == nil || s.Len() == len(ids)+steps {
			b.StopTimer()
			var err error
			if s, err = m.NewSession(nil, len(ids)+steps); err != nil {
				b.Fatal(err)
			}
			if _, err := s.Forward(ids, false); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		if _, err := s.Forward(tok, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPrefill times a 512-token prompt (llama-bench's pp512) into
// an f16 cache and into compressed ones (turbo3.5, the default of run and
// serve; q8_0), whose chunks append and attend together
// (kvcache.ChunkAttender).
func BenchmarkPrefill(b *testing.B) {
	m := benchModel(b, 0)
	ids := make([]int32, 512)
	for i := range ids {
		ids[i] = int32(7 + 31*i%1000)
	}
	for _, kv := range []string{"f16", "turbo3.5", "q8_0"} {
		cfg, err := kvcache.Parse(kv)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("kv="+kv, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s, err := m.NewSession(cfg, len(ids))
				if err != nil {
					b.Fatal(err)
				}
				if _, err := s.Forward(ids, false); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(ids))*float64(b.N)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}

// BenchmarkBatchDecode times one Batch decode step of 1, 4 and 16
// sequences (each after a 64-token prompt; f16 caches, and turbo3.5 as
// the server's default) at one, two and (where the machine has them)
// sixteen threads, in ns per token: batching pays when a 16-sequence
// step costs far less than 16 one-sequence steps (the weights are read
// once per step for every sequence).
func BenchmarkBatchDecode(b *testing.B) {
	for _, threads := range []int{1, 2, 16} {
		if threads > 2 && threads > runtime.NumCPU() {
			continue
		}
		m := benchModel(b, threads)
		for _, kv := range []string{"f16", "turbo3.5"} {
			for _, n := range []int{1, 4, 16} {
				b.Run(fmt.Sprintf("threads=%d/kv=%s/seqs=%d", threads, kv, n), func(b *testing.B) {
					d := newBatchDecoder(b, m, kv, n)
					b.ReportAllocs()
					for b.Loop() {
						d.step(b)
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/token")
				})
			}
		}
	}
}

// BenchmarkBatchDecodeRatio times decode steps of one sequence and of
// sixteen, one of each per iteration (both see the machine in the same
// state), on two and (where the machine has them) sixteen threads, and
// reports each one's tokens per second and their ratio, "16:1": the
// aggregate decode throughput of 16 sequences against one's, the
// server's batching target without the server around the steps; and the
// parallel regions of a 16-row step (each ends with a wait for its
// slowest task).
func BenchmarkBatchDecodeRatio(b *testing.B) {
	forThreadsKV(b, func(b *testing.B, m *model.Model, kv string) {
		one, sixteen := newBatchDecoder(b, m, kv, 1), newBatchDecoder(b, m, kv, 16)
		var t1, t16 time.Duration
		for b.Loop() {
			t1 += one.step(b)
			t16 += sixteen.step(b)
		}
		r1, r16 := float64(b.N)/t1.Seconds(), float64(16*b.N)/t16.Seconds()
		b.ReportMetric(r1, "tok/s-1")
		b.ReportMetric(r16, "tok/s-16")
		b.ReportMetric(r16/r1, "16:1")
		b.ReportMetric(float64(sixteen.regions)/float64(b.N), "regions/step-16")
	})
}

// BenchmarkBatchDecodeRegions times 16-row decode steps (as
// BenchmarkBatchDecode's seqs=16) with the model pool's regions traced
// (tensor.RegionTrace), and logs a table of them, the longest first: per
// region (a layer's product, its label saying what else runs inside it)
// the wall time a step, the goroutines' wait share 1 − busy/(threads·
// wall), and where the waits are (the wake-up, the phases of a product's
// tasks, the region's end) and how uneven the goroutines' busy times
// are. The clock is read around every task: steps run slower than
// untraced ones.
func BenchmarkBatchDecodeRegions(b *testing.B) {
	forThreadsKV(b, func(b *testing.B, m *model.Model, kv string) {
		d := newBatchDecoder(b, m, kv, 16)
		d.trace = new(tensor.RegionTrace)
		for b.Loop() {
			d.step(b)
		}
		st := d.trace.Stats()
		wall, wait, idle := logRegions(b, st, b.N)
		b.ReportMetric(float64(wall.Microseconds())/float64(b.N), "µs-regions/step")
		b.ReportMetric(wait, "wait-share")
		b.ReportMetric(idle, "idle-share")
	})
}

// logRegions logs a table of a RegionTrace's stats over steps steps,
// the longest regions first, and returns their wall time and the
// goroutines' wait and idle shares over all of them.
func logRegions(b *testing.B, st []tensor.RegionStat, steps int) (wall time.Duration, wait, idle float64) {
	slices.SortStableFunc(st, func(x, y tensor.RegionStat) int { return cmp.Compare(y.Wall, x.Wall) })
	var all tensor.RegionStat
	us := func(d time.Duration, per int) float64 { return float64(d.Nanoseconds()) / 1e3 / float64(max(per, 1)) }
	var tb strings.Builder
	// wait: 1 − busy/(threads·wall); idle: the phases' waits inside
	// the tasks counted too; items (the vectors' preparation: norms,
	// attention, packing), late (to the first task), phase (waiting for
	// others' items), tail (after the last task), gaps (between tasks):
	// µs a step per goroutine; slow/mean: the busiest goroutine's time
	// in tasks over the mean; taskless: goroutines a region that ran no
	// task.
	fmt.Fprintf(&tb, "%d steps; µs a step (items, late, phase, tail, gaps: per goroutine)\n", steps)
	fmt.Fprintf(&tb, "%-24s %7s %8s %6s %6s %7s %7s %7s %7s %7s %9s %8s\n", "region", "regions", "wall", "wait", "idle", "items", "late", "phase", "tail", "gaps", "slow/mean", "taskless")
	row := func(name string, s tensor.RegionStat) {
		t := s.Threads * steps
		mean := float64(s.Busy) / float64(max(s.Threads, 1))
		fmt.Fprintf(&tb, "%-24s %7.2f %8.1f %5.1f%% %5.1f%% %7.1f %7.1f %7.1f %7.1f %7.1f %9.2f %8.2f\n", name,
			float64(s.Regions)/float64(steps), us(s.Wall, steps), 100*s.WaitShare(), 100*s.IdleShare(),
			us(s.Items, t), us(s.Late, t), us(s.PhaseWait, t), us(s.Tail, t), us(s.Gaps(), t), float64(s.Slowest)/max(mean, 1), float64(s.Taskless)/float64(max(s.Regions, 1)))
	}
	for _, s := range st {
		row(s.Label.String(), s)
		all.Threads = s.Threads
		all.Regions += s.Regions
		all.Wall += s.Wall
		all.Busy += s.Busy
		all.Items += s.Items
		all.Late += s.Late
		all.PhaseWait += s.PhaseWait
		all.Tail += s.Tail
		all.Slowest += s.Slowest
		all.Taskless += s.Taskless
	}
	row("all", all)
	b.Log("\n" + tb.String())
	return all.Wall, all.WaitShare(), all.IdleShare()
}

// batchDecoder steps n sessions of a model together, one token each
// per step, after a 64-token prompt; they start again (untimed) every
// 256 steps.
type batchDecoder struct {
	m     *model.Model
	cfg   kvcache.Config
	batch *model.Batch
	seqs  []*model.Session
	toks  [][]int32
	ids   []int32
	// regions counts the model pool's regions in the timed steps.
	regions int64
	// trace, if set, records the timed steps' regions (not the
	// sessions' prompts).
	trace *tensor.RegionTrace
}

func newBatchDecoder(b *testing.B, m *model.Model, kv string, n int) *batchDecoder {
	cfg, err := kvcache.Parse(kv)
	if err != nil {
		b.Fatal(err)
	}
	d := &batchDecoder{m: m, cfg: cfg, batch: m.NewBatch(), seqs: make([]*model.Session, n), toks: make([][]int32, n), ids: make([]int32, 64)}
	for i := range d.ids {
		d.ids[i] = int32(7 + 31*i%1000)
	}
	for i := range d.toks {
		d.toks[i] = []int32{int32(42 + i)}
	}
	return d
}

// step runs one step and returns its time, the sessions' restart (with
// the benchmark's timer stopped) not counted.
func (d *batchDecoder) step(b *testing.B) time.Duration {
	const steps = 256 // per session; fresh ones then start, untimed
	if d.seqs[0] == nil || d.seqs[0].Len() == len(d.ids)+steps {
		b.StopTimer()
		for i := range d.seqs {
			var err error
			if d.seqs[i], err = d.m.NewSession(d.cfg, len(d.ids)+steps); err != nil {
				b.Fatal(err)
			}
			if _, err := d.seqs[i].Forward(d.ids, false); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
	r0 := model.PoolRegions(d.m)
	if d.trace != nil {
		model.SetPoolTrace(d.m, d.trace)
		defer model.SetPoolTrace(d.m, nil)
	}
	start := time.Now()
	_, errs := d.batch.Forward(d.seqs, d.toks)
	t := time.Since(start)
	d.regions += model.PoolRegions(d.m) - r0
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	return t
}

// forThreadsKV runs f as sub-benchmarks "threads=T/kv=K" for two and
// (where the machine has them) sixteen threads and the f16 and turbo3.5
// caches, with the embedded model loaded once per thread count.
func forThreadsKV(b *testing.B, f func(b *testing.B, m *model.Model, kv string)) {
	for _, threads := range []int{2, 16} {
		if threads > 2 && threads > runtime.NumCPU() {
			continue
		}
		m := benchModel(b, threads)
		for _, kv := range []string{"f16", "turbo3.5"} {
			b.Run(fmt.Sprintf("threads=%d/kv=%s", threads, kv), func(b *testing.B) { f(b, m, kv) })
		}
	}
}
