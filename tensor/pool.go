package tensor

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Pool is a fixed set of worker goroutines that run the parallel parts of
// a model step: the rows of a matrix product, the positions of an
// attention step. The workers live as long as the Pool, so a parallel
// region costs a wake-up, not a goroutine start.
//
// Waiting is cheap both ways. Between regions an idle worker spins on the
// PAUSE instruction for a short while (spinFor), because a decode step
// runs dozens of regions a few microseconds apart, then parks on a
// channel until Run wakes it; the caller of Run, once its own tasks are
// done, spins likewise for the others' and then parks until the last
// task's goroutine wakes it. Where the Pool has more goroutines than
// GOMAXPROCS, nobody spins: a spinning goroutine would hold the processor
// that a goroutine with a task needs. A spinning worker offers its CPU to
// other goroutines (runtime.Gosched) at most once every yieldEvery, so
// that a server's connections get to run between the steps of a batch
// without the workers contending for the scheduler's lock.
//
// A Pool is safe for concurrent use, but runs one region at a time:
// concurrent Run calls take turns. A task must not call Run on the Pool
// running it.
type Pool struct {
	threads int
	spin    time.Duration // how long an idle goroutine spins: spinFor, or 0 when oversubscribed
	mu      sync.Mutex    // one region at a time
	cur     atomic.Pointer[job]
	workers []*worker
	closed  atomic.Bool
	// gen is the number of the last region run on the workers, which is
	// also how many there have been (Regions); written under mu, read
	// atomically by Regions. Its low 32 bits tag a dealt job.
	gen    atomic.Uint64
	shares []dealShare                 // RunDealt's, one per goroutine
	trace  atomic.Pointer[RegionTrace] // SetTrace's; nil: no clock read
	// finished wakes a parked caller of Run when its job's last task ends.
	finished chan struct{}
}

// job is one Run call: n tasks handed out through next, done counting
// the finished ones (each goroutine adds its count once, when no task is
// left). A worker that wakes after its job is over finds next ≥ n and
// leaves without touching anything else. next and done sit on cache
// lines of their own: every goroutine of a region writes both.
type job struct {
	f        func(task, worker int)
	n        int32
	gen      uint32
	shares   []dealShare // RunDealt's; nil: tasks handed out in order (next)
	finished chan struct{}
	// slots, where the Pool has a RegionTrace, are its goroutines'
	// accounts of the job, times since start; nil: no clock read.
	slots []traceSlot
	start time.Time
	_     [64]byte
	next  atomic.Int32
	_     [64]byte
	done  atomic.Int32
	// state says whether the caller parked to wait (jobParked) and
	// whether the last task ended (jobOver): whoever comes second of the
	// two knows, and the last task's goroutine then wakes the caller.
	state atomic.Int32
}

// dealShare is one goroutine's share of a RunDealt job: word holds the
// number of the job (gen) that last took from it, in its high 32 bits,
// and the share's next task to take, in its low ones; 64 bytes.
type dealShare struct {
	word atomic.Uint64
	_    [56]byte
}

// restamp is how often (in regions) run marks every share as the
// previous job's: a share no job has taken from for 2³¹ regions would
// otherwise look like a later job's.
const restamp = 1 << 30

const (
	jobRunning int32 = iota
	jobParked
	jobOver
)

type worker struct {
	id       int
	sleeping atomic.Bool
	wake     chan struct{}
	yielded  time.Time // the last runtime.Gosched while spinning
}

// spinFor is how long an idle goroutine of a Pool polls before it parks:
// longer than the gaps inside a decode step, short enough that an idle
// Pool leaves the CPUs alone.
const spinFor = 100 * time.Microsecond

// yieldEvery is the least time between two runtime.Gosched calls of one
// spinning worker: rare, because each takes the scheduler's global lock.
const yieldEvery = time.Millisecond

// NewPool starts a pool of threads goroutines in all, the caller of Run
// counted as one of them (threads−1 workers). threads ≤ 0 means
// runtime.NumCPU(). Close stops it.
func NewPool(threads int) *Pool {
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	p := &Pool{threads: threads, spin: spinFor, finished: make(chan struct{}, 1), shares: make([]dealShare, threads)}
	if runtime.GOMAXPROCS(0) < threads {
		p.spin = 0
	}
	for i := 1; i < threads; i++ {
		w := &worker{id: i, wake: make(chan struct{}, 1)}
		p.workers = append(p.workers, w)
		go p.loop(w)
	}
	return p
}

// Threads returns the number of goroutines that share a region, the
// caller included; 1 for a nil Pool.
func (p *Pool) Threads() int {
	if p == nil {
		return 1
	}
	return p.threads
}

// Regions returns how many parallel regions the Pool has run on its
// goroutines so far: the Run, RunDealt and TryRun calls that handed tasks
// to the workers (not those it ran on the caller alone). A step's count is a
// measure of its barriers: each region ends when its slowest task does.
func (p *Pool) Regions() int64 {
	if p == nil {
		return 0
	}
	return int64(p.gen.Load())
}

// Close stops the workers; Run then runs everything on its caller.
func (p *Pool) Close() {
	if p == nil {
		return
	}
	// Closed only between regions (they hold mu): a worker sees it only
	// when it looks for the next job, so every region's tasks are run,
	// RunAside's too, which have no caller to take them.
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Swap(true) {
		return
	}
	p.cur.Store(&job{}) // an empty job wakes spinners; they see closed
	for _, w := range p.workers {
		if w.sleeping.CompareAndSwap(true, false) {
			w.wake <- struct{}{}
		}
	}
}

// Run calls f(task, worker) for every task in [0, n) and returns when all
// have finished. Tasks are handed out one at a time, in the order of their
// numbers, to whichever goroutine is free, so uneven tasks balance (and a
// task may wait, with Wait, for tasks numbered before it); worker ∈ [0, Threads()) names the
// goroutine running the task (0 is the caller), for per-goroutine scratch:
// no two tasks with the same worker run at once. A nil Pool runs every
// task on the caller.
func (p *Pool) Run(n int, f func(task, worker int)) { p.runTasks(n, f, false, false, false) }

// RunAside is Run where the caller takes no task while the Pool has other
// goroutines: it waits, and the workers (1 to Threads()−1) run every
// task. Where it runs every task itself (a nil or closed Pool, one
// thread, one task) they run with worker 0, as Run's would. It is for
// tasks that wake other goroutines and give them their processor
// (runtime.Gosched): a caller that yields waits behind them in the
// global run queue, and the goroutines that wait for the caller (the
// Pool's next region) with it.
func (p *Pool) RunAside(n int, f func(task, worker int)) { p.runTasks(n, f, false, false, true) }

// RunDealt is Run with the tasks dealt in shares, one for each goroutine
// (share w is tasks [n·w/T, n·(w+1)/T) of T = Threads()): goroutine w
// runs the tasks of its own share first, in order, then takes over what
// is left of the others'. From one call to the next of the same n, a task
// goes to the same goroutine (and its data stays in that core's caches)
// unless another goroutine is held up, and the goroutines meet on a
// shared count only when they take over tasks, where Run's hand out every
// task from one count. The tasks are not handed out in order: a task must
// not Wait for others.
func (p *Pool) RunDealt(n int, f func(task, worker int)) { p.runTasks(n, f, true, false, false) }

// runTasks is Run (dealt false), RunDealt (dealt true) and RunAside
// (aside); with try (TryRun) it runs every task on the caller where the
// Pool's lock is held instead of waiting for it. Where the Pool has no
// other goroutine for the tasks (nil, one thread, one task, closed, also
// while this waited for the lock: Close marks it closed holding the lock)
// the caller runs them all.
func (p *Pool) runTasks(n int, f func(task, worker int), dealt, try, aside bool) {
	if p != nil && p.threads > 1 && n > 1 && !p.closed.Load() {
		locked := true
		if try {
			locked = p.mu.TryLock()
		} else {
			p.mu.Lock()
		}
		if locked {
			defer p.mu.Unlock()
			if !p.closed.Load() {
				p.run(n, f, dealt, aside)
				return
			}
		}
	}
	for i := range n {
		f(i, 0)
	}
}

// TryRun is Run where the Pool runs no region now; where one runs (the
// caller is a task of this Pool, or another goroutine's region holds it)
// it calls every task on the caller instead of waiting, with worker 0.
// It lets work that may be called from inside a region (a cache's Append
// from a task of the Pool that its Attend uses) share the Pool's
// goroutines where they are free, without deadlock.
func (p *Pool) TryRun(n int, f func(task, worker int)) { p.runTasks(n, f, false, true, false) }

// run is Run's region, the Pool's lock held; RunDealt's with dealt,
// RunAside's with aside (the caller takes no task).
func (p *Pool) run(n int, f func(task, worker int), dealt, aside bool) {
	gen := uint32(p.gen.Add(1))
	if gen%restamp == 0 {
		// Every share then names a job at most restamp regions old, so
		// that dealt's signed difference of numbers (mod 2³²) tells an
		// earlier job from a later one: the previous job's, all taken.
		for i := range p.shares {
			p.shares[i].word.Store(uint64(gen-1)<<32 | math.MaxUint32)
		}
	}
	j := &job{f: f, n: int32(n), gen: gen, finished: p.finished}
	if dealt {
		j.shares = p.shares
	}
	tr := p.trace.Load()
	if tr != nil {
		tr.begin()
		j.slots, j.start = tr.slots, time.Now()
	}
	p.cur.Store(j)
	// Wake as many sleepers as there are tasks beyond the caller's first
	// (every task, for RunAside); spinning workers see the job by
	// themselves.
	need := n - 1
	if aside {
		need = n
	}
	for _, w := range p.workers {
		if need == 0 {
			break
		}
		if w.sleeping.Load() && w.sleeping.CompareAndSwap(true, false) {
			w.wake <- struct{}{}
		}
		need--
	}
	if !aside {
		j.work(0)
	}
	// Wait for the tasks other goroutines took: spin for a while, then
	// park until the last of them wakes this goroutine.
	if !spinUntil(p.spin, func() bool { return j.done.Load() == j.n }, nil) &&
		j.state.CompareAndSwap(jobRunning, jobParked) {
		<-j.finished
	}
	if tr != nil {
		tr.end(time.Since(j.start))
	}
}

// Latch is a count of tasks that other tasks of a region wait for
// (Pool.Wait) until it reaches zero: a region's later stage waiting on its
// earlier one, without a region of its own. Set it before the region;
// each task it counts calls Done once. Its zero value counts nothing.
type Latch struct {
	n       atomic.Int32
	waiters atomic.Int32 // goroutines parked or about to park
	mu      sync.Mutex
	cond    *sync.Cond
}

// Set makes l count n tasks. It must not be called while a Wait on l or
// its tasks are running.
func (l *Latch) Set(n int) {
	if l.cond == nil {
		l.cond = sync.NewCond(&l.mu)
	}
	l.n.Store(int32(n))
}

// Done counts one of l's tasks finished, waking those who wait where it
// is the last.
func (l *Latch) Done() {
	if l.n.Add(-1) == 0 && l.waiters.Load() > 0 {
		l.mu.Lock()
		l.cond.Broadcast()
		l.mu.Unlock()
	}
}

// Wait returns once every task l counts is done. It is for a task of a
// region of p that waits for tasks numbered before it, which Run has
// handed out already, so that goroutines are running them; on a nil
// Pool, whose Run runs its tasks one after another, they are done
// already. It spins on PAUSE as p's goroutines do between regions (not
// at all where p has more goroutines than GOMAXPROCS), then parks until
// the last of l's tasks wakes it.
func (p *Pool) Wait(l *Latch) {
	var spin time.Duration
	if p != nil {
		spin = p.spin
	}
	if spinUntil(spin, func() bool { return l.n.Load() <= 0 }, nil) {
		return
	}
	l.mu.Lock()
	l.waiters.Add(1)
	for l.n.Load() > 0 {
		l.cond.Wait()
	}
	l.waiters.Add(-1)
	l.mu.Unlock()
}

// Spin polls ready for up to d, spinning on PAUSE as p's goroutines do
// between regions (not at all where p has more goroutines than
// GOMAXPROCS, or is nil), and reports whether it became true: for a task
// that would help with work other tasks of its region are finishing, and
// can leave it to them when that takes long.
func (p *Pool) Spin(d time.Duration, ready func() bool) bool {
	if p == nil {
		return ready()
	}
	return spinUntil(min(d, p.spin), ready, nil)
}

// spinUntil polls ready with PAUSE between polls for up to d and reports
// whether it became true; every 64 polls it calls tick, if not nil, with
// the time.
func spinUntil(d time.Duration, ready func() bool, tick func(now time.Time)) bool {
	if ready() {
		return true
	}
	if d <= 0 {
		return false
	}
	start := time.Now()
	for i := 1; ; i++ {
		spinPause()
		if ready() {
			return true
		}
		if i&63 == 0 {
			now := time.Now()
			if now.Sub(start) > d {
				return false
			}
			if tick != nil {
				tick(now)
			}
		}
	}
}

// work runs tasks of j until none is left, then counts them done; the
// goroutine that counts the last task wakes the caller if it parked.
func (j *job) work(worker int) {
	var ran int32
	if j.shares != nil {
		ran = j.dealt(worker)
	} else {
		for {
			i := j.next.Add(1) - 1
			if i >= j.n {
				break
			}
			if j.slots == nil {
				j.f(int(i), worker)
			} else {
				j.call(int(i), worker)
			}
			ran++
		}
	}
	if ran > 0 && j.done.Add(ran) == j.n && j.state.Swap(jobOver) == jobParked {
		j.finished <- struct{}{}
	}
}

// dealt runs tasks of a RunDealt job on goroutine w, from its own share
// on, and returns how many. A share whose word names an earlier job is
// not started in this one: its first taker sets it to the share's first
// task. One that names a later job means this job is over (a later one
// starts only once every task of this one is counted done, so this
// goroutine has run none of them): the goroutine leaves.
func (j *job) dealt(w int) (ran int32) {
	t, n := len(j.shares), int(j.n)
	for k := range t {
		s := (w + k) % t
		lo, hi := n*s/t, n*(s+1)/t
		if lo == hi {
			continue
		}
		word := &j.shares[s].word
		for {
			v := word.Load()
			if g := uint32(v >> 32); g != j.gen {
				if int32(g-j.gen) > 0 {
					return ran
				}
				start := uint64(j.gen)<<32 | uint64(lo)
				if !word.CompareAndSwap(v, start) {
					continue
				}
				v = start
			}
			i := int(uint32(v))
			if i >= hi {
				break
			}
			if !word.CompareAndSwap(v, v+1) {
				continue
			}
			if j.slots == nil {
				j.f(i, w)
			} else {
				j.call(i, w)
			}
			ran++
		}
	}
	return ran
}

// call runs task i of j on goroutine w and counts it in w's account of
// the Pool's RegionTrace (j.slots).
func (j *job) call(i, w int) {
	s := &j.slots[w]
	t0 := time.Since(j.start)
	j.f(i, w)
	t1 := time.Since(j.start)
	if s.tasks == 0 {
		s.first = t0
	}
	s.tasks++
	s.busy += t1 - t0
	s.last = t1
}

// loop is a worker: it runs the tasks of each new job, polls for the next
// one for spinFor, then parks until Run or Close wakes it.
func (p *Pool) loop(w *worker) {
	var last *job
	for {
		j := p.wait(w, last)
		if p.closed.Load() {
			return
		}
		last = j
		j.work(w.id)
	}
}

// wait returns the first job that is not last.
func (p *Pool) wait(w *worker, last *job) *job {
	var j *job
	ready := func() bool {
		j = p.cur.Load()
		return j != last
	}
	// Let a goroutine that waits for this CPU run now and then (a
	// server's connections between the steps of a batch): spinning
	// workers would otherwise hold every P until they park.
	yield := func(now time.Time) {
		if now.Sub(w.yielded) > yieldEvery {
			w.yielded = now
			runtime.Gosched()
		}
	}
	if spinUntil(p.spin, ready, yield) {
		return j
	}
	for {
		w.sleeping.Store(true)
		if j := p.cur.Load(); j != last || p.closed.Load() {
			// A job arrived while going to sleep: take it, and take the
			// wake-up back if Run or Close already sent one.
			if !w.sleeping.CompareAndSwap(true, false) {
				<-w.wake
			}
			return j
		}
		<-w.wake
		if j := p.cur.Load(); j != last || p.closed.Load() {
			return j
		}
	}
}
