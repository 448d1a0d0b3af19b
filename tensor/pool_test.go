package tensor

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPoolRun: every task runs exactly once, on a worker id in range,
// never two at once on the same id; across pool sizes (more goroutines
// than GOMAXPROCS among them), task counts, regions back to back
// (spinning workers), after a pause longer than spinFor (parked workers)
// and with tasks longer than spinFor (a parked caller); a nil and a
// closed pool run on the caller. RunAside the same, its tasks never on
// the caller (worker 0) where the pool has other goroutines and more than
// one task, always on it where it has none.
func TestPoolRun(t *testing.T) {
	for _, aside := range []bool{false, true} {
		for _, threads := range []int{1, 2, 3, 8, 2 * runtime.GOMAXPROCS(0)} {
			testPoolRun(t, threads, aside)
		}
	}
	var nilPool *Pool
	ran := 0
	nilPool.Run(3, func(int, int) { ran++ })
	nilPool.RunAside(2, func(int, int) { ran++ })
	if ran != 5 || nilPool.Threads() != 1 {
		t.Errorf("nil pool: ran %d, threads %d", ran, nilPool.Threads())
	}
}

func testPoolRun(t *testing.T, threads int, aside bool) {
	{
		p := NewPool(threads)
		run := p.Run
		if aside {
			run = p.RunAside
		}
		for round := range 40 {
			if round == 20 {
				time.Sleep(3 * spinFor) // the workers go to sleep
			}
			n := 1 + round*7%23
			var slow time.Duration
			if round >= 30 && round < 34 {
				slow = 2 * spinFor // the caller parks for the others' tasks
			}
			hits := make([]atomic.Int32, n)
			busy := make([]atomic.Int32, threads)
			var bad atomic.Int32
			onCaller := threads == 1 || n == 1
			run(n, func(task, w int) {
				if w < 0 || w >= threads || busy[w].Add(1) != 1 || aside && (w == 0) != onCaller {
					bad.Add(1)
				}
				if w != 0 {
					time.Sleep(slow)
				}
				hits[task].Add(1)
				busy[w].Add(-1)
			})
			if bad.Load() != 0 {
				t.Fatalf("threads %d round %d aside %v: worker id out of range, shared, or the caller's where it should not be", threads, round, aside)
			}
			for i := range hits {
				if hits[i].Load() != 1 {
					t.Fatalf("threads %d round %d aside %v: task %d ran %d times", threads, round, aside, i, hits[i].Load())
				}
			}
		}
		p.Close()
		p.Close() // twice is harmless
		ran := 0
		run(5, func(_, w int) {
			if w == 0 {
				ran++
			}
		})
		if ran != 5 {
			t.Errorf("closed pool of %d (aside %v): %d of 5 tasks on the caller", threads, aside, ran)
		}
	}
}

// TestPoolConcurrentRun: Run calls from several goroutines take turns and
// each completes all of its own tasks.
func TestPoolConcurrentRun(t *testing.T) {
	p := NewPool(4)
	defer p.Close()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for range 50 {
				var sum atomic.Int64
				p.Run(10+g, func(task, _ int) { sum.Add(int64(task)) })
				if want := int64((10 + g) * (9 + g) / 2); sum.Load() != want {
					t.Errorf("goroutine %d: sum %d, want %d", g, sum.Load(), want)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestPoolCloseDuringRegions: Close while other goroutines run regions
// back to back, RunAside's among them (whose caller takes no task), ends
// with every task of every region run and nothing left waiting.
func TestPoolCloseDuringRegions(t *testing.T) {
	for round := range 20 {
		p := NewPool(4)
		var wg sync.WaitGroup
		for g := range 3 {
			wg.Go(func() {
				for i := range 200 {
					n := 2 + (g+i)%9
					var hits atomic.Int32
					f := func(int, int) { hits.Add(1) }
					if g%2 == 0 {
						p.RunAside(n, f)
					} else {
						p.Run(n, f)
					}
					if hits.Load() != int32(n) {
						t.Errorf("round %d goroutine %d: %d of %d tasks ran", round, g, hits.Load(), n)
						return
					}
				}
			})
		}
		time.Sleep(time.Duration(round%5) * 100 * time.Microsecond)
		p.Close()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("round %d: regions still waiting 20 s after Close", round)
		}
	}
}

// TestPoolTryRun: TryRun runs every task once, on the pool where it is
// free, on the caller (worker 0) from inside a task of the same pool
// (where Run would wait for itself), and on a nil pool.
func TestPoolTryRun(t *testing.T) {
	p := NewPool(3)
	defer p.Close()
	for _, pool := range []*Pool{nil, p} {
		counts := make([]atomic.Int32, 7)
		pool.TryRun(len(counts), func(task, w int) {
			if w < 0 || w >= pool.Threads() {
				t.Errorf("task %d on worker %d of %d", task, w, pool.Threads())
			}
			counts[task].Add(1)
		})
		for i := range counts {
			if n := counts[i].Load(); n != 1 {
				t.Errorf("pool of %d: task %d ran %d times", pool.Threads(), i, n)
			}
		}
	}
	var inner [2][5]atomic.Int32
	p.Run(2, func(task, _ int) {
		p.TryRun(5, func(i, w int) {
			if w != 0 {
				t.Errorf("inside a region: task %d on worker %d", i, w)
			}
			inner[task][i].Add(1)
		})
	})
	for task := range inner {
		for i := range inner[task] {
			if n := inner[task][i].Load(); n != 1 {
				t.Errorf("inside task %d: task %d ran %d times", task, i, n)
			}
		}
	}
}

// TestPoolWait: tasks that wait (Wait on a Latch) for tasks numbered
// before them finish, and see those tasks' writes, on pools with fewer
// and with more goroutines than GOMAXPROCS (where nobody spins) and on a
// nil pool; a chain of stages, each task waiting for the whole stage
// before it, as Attend's set-up, slices and merges do, with tasks slow
// enough now and then that the waiters park.
func TestPoolWait(t *testing.T) {
	for _, threads := range []int{1, 3, 2*runtime.GOMAXPROCS(0) + 1} {
		for _, p := range []*Pool{NewPool(threads), nil} {
			const stages, width = 4, 5
			var left [stages]Latch
			for round := range 20 {
				for s := range left {
					left[s].Set(width)
				}
				var vals [stages * width]int
				p.Run(stages*width, func(task, _ int) {
					s := task / width
					if s > 0 {
						p.Wait(&left[s-1])
						for i := range width {
							if vals[(s-1)*width+i] != s {
								t.Errorf("threads %d: task %d saw value %d of stage %d", p.Threads(), task, vals[(s-1)*width+i], s-1)
							}
						}
					}
					if s == 0 && !p.Spin(time.Millisecond, func() bool { return true }) {
						t.Errorf("threads %d: Spin on a ready condition reports false", p.Threads())
					}
					if round%5 == 4 && task%width == 0 {
						time.Sleep(2 * spinFor)
					}
					vals[task] = s + 1
					left[s].Done()
				})
			}
			p.Close()
		}
	}
}

// BenchmarkPoolRun measures one parallel region of trivial tasks: the
// fixed cost a matrix product or an attention step pays to use the pool.
func BenchmarkPoolRun(b *testing.B) {
	p := NewPool(0)
	defer p.Close()
	var sink atomic.Int64
	for b.Loop() {
		p.Run(p.Threads(), func(task, _ int) { sink.Add(int64(task)) })
	}
}

// TestPoolRegions: Regions counts the Run, RunDealt and TryRun calls that
// used the workers, not those run on the caller alone (one task, one
// thread, a nil or closed pool, TryRun inside a region).
func TestPoolRegions(t *testing.T) {
	var nilPool *Pool
	nilPool.Run(3, func(_, _ int) {})
	if got := nilPool.Regions(); got != 0 {
		t.Errorf("nil pool: %d regions", got)
	}
	nop := func(_, _ int) {}
	for _, tc := range []struct {
		name    string
		threads int
		call    func(p *Pool)
		want    int64 // regions counted
	}{
		{"Run", 4, func(p *Pool) { p.Run(5, nop) }, 1},
		{"RunDealt", 4, func(p *Pool) { p.RunDealt(5, nop) }, 1},
		{"TryRun", 4, func(p *Pool) { p.TryRun(4, nop) }, 1},
		{"one task", 4, func(p *Pool) { p.Run(1, nop); p.RunDealt(1, nop); p.TryRun(1, nop) }, 0},
		{"no task", 4, func(p *Pool) { p.Run(0, nop); p.RunDealt(-1, nop) }, 0},
		{"one thread", 1, func(p *Pool) { p.Run(5, nop); p.RunDealt(5, nop); p.TryRun(5, nop) }, 0},
		{"TryRun inside", 4, func(p *Pool) {
			p.Run(2, func(task, _ int) {
				if task == 0 {
					p.TryRun(3, nop) // the pool is busy: on the caller
				}
			})
		}, 1},
		{"closed", 4, func(p *Pool) { p.Close(); p.Run(5, nop); p.RunDealt(5, nop) }, 0},
		{"mixed", 3, func(p *Pool) {
			for i := range 10 {
				p.Run(2+i%3, nop)
				p.RunDealt(1+i%2, nop)
			}
		}, 15},
	} {
		p := NewPool(tc.threads)
		tc.call(p)
		if got := p.Regions(); got != tc.want {
			t.Errorf("%s (pool of %d): %d regions, want %d", tc.name, tc.threads, got, tc.want)
		}
		p.Close()
		p.Run(5, nop)
		if got := p.Regions(); got != tc.want {
			t.Errorf("%s (pool of %d), closed: %d regions, want %d", tc.name, tc.threads, got, tc.want)
		}
	}
}

// TestPoolRunDealt: RunDealt runs every task exactly once, on a worker id
// in range, never two at once on the same id; for task counts below, at
// and above the goroutines' (odd ones among them), regions back to back
// and interleaved with Run's (goroutines that see a region late find
// shares of later regions), after a pause longer than spinFor (parked
// workers), with tasks longer than spinFor (a parked caller) and with
// goroutines slowed at random (their shares taken over); a nil and a
// closed pool run on the caller.
func TestPoolRunDealt(t *testing.T) {
	for _, threads := range []int{1, 2, 3, 8, 2 * runtime.GOMAXPROCS(0)} {
		p := NewPool(threads)
		for round := range 60 {
			if round == 20 {
				time.Sleep(3 * spinFor)
			}
			n := 1 + round*7%23
			hits := make([]atomic.Int32, n)
			busy := make([]atomic.Int32, threads)
			var bad atomic.Int32
			task := func(task, w int) {
				if w < 0 || w >= threads || busy[w].Add(1) != 1 {
					bad.Add(1)
				}
				switch {
				case round >= 30 && round < 34 && w != 0:
					time.Sleep(2 * spinFor) // the caller parks
				case round >= 40 && (task+round)%5 == 0:
					time.Sleep(time.Duration(task%3) * 20 * time.Microsecond)
				}
				hits[task].Add(1)
				busy[w].Add(-1)
			}
			if round%3 == 2 {
				p.Run(n, task)
			} else {
				p.RunDealt(n, task)
			}
			if bad.Load() != 0 {
				t.Fatalf("threads %d round %d: worker id out of range or shared", threads, round)
			}
			for i := range hits {
				if hits[i].Load() != 1 {
					t.Fatalf("threads %d round %d: task %d ran %d times", threads, round, i, hits[i].Load())
				}
			}
		}
		p.Close()
		ran := 0
		p.RunDealt(5, func(_, w int) {
			if w == 0 {
				ran++
			}
		})
		if ran != 5 {
			t.Errorf("closed pool of %d: %d of 5 tasks on the caller", threads, ran)
		}
	}
	var nilPool *Pool
	ran := 0
	nilPool.RunDealt(3, func(int, int) { ran++ })
	if ran != 3 {
		t.Errorf("nil pool: ran %d", ran)
	}
}

// TestPoolRunDealtNumbers: RunDealt's region numbers through their wrap
// past 2³² and across restamps, every task runs exactly once; a region
// whose number is a multiple of restamp finds shares no region has taken
// from for longer than dealt's comparison can tell (set by hand) as an
// earlier region's.
func TestPoolRunDealtNumbers(t *testing.T) {
	for _, tc := range []struct {
		last    uint32 // the region before the test's
		ancient bool   // shares last taken from 2³¹ + 7 regions before
	}{{restamp - 1, true}, {math.MaxUint32 - 3, false}, {2*restamp - 2, false}} {
		// A new pool: no goroutine is late for a region numbered before
		// the numbers set here.
		p := NewPool(4)
		p.mu.Lock()
		p.gen.Store(uint64(tc.last))
		g := tc.last
		if tc.ancient {
			g = tc.last - 1<<31 - 7
		}
		for i := range p.shares {
			p.shares[i].word.Store(uint64(g)<<32 | 3)
		}
		p.mu.Unlock()
		for round := range 8 {
			n := 2 + round*5%13
			hits := make([]atomic.Int32, n)
			p.RunDealt(n, func(task, _ int) { hits[task].Add(1) })
			for i := range hits {
				if c := hits[i].Load(); c != 1 {
					t.Fatalf("after region %d, round %d: task %d of %d ran %d times", tc.last, round, i, n, c)
				}
			}
		}
		// The count goes on past the tag's wrap.
		if got, want := p.Regions(), int64(tc.last)+8; got != want {
			t.Errorf("after region %d: Regions %d, want %d", tc.last, got, want)
		}
		p.Close()
	}
}
