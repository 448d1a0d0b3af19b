package wquant

import (
	"crypto/sha256"
	"errors"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/turbomem/turbomem/gguf"
)

// ErrStopped is returned by Background.Wait when Stop ended the check
// before every tensor was hashed.
var ErrStopped = errors.New("wquant: the background check was stopped")

// Background checks a file's tensors against its manifest on background
// goroutines, in the order a model first uses them, while the model
// loads, runs and waits for work. It gates a model in one of two ways:
//
//   - Settled (model.Options.Settled) holds back the model's output: the
//     steps compute on the weights as they are being checked, and each
//     Forward waits, before it returns, for the whole check (hashing
//     what is left of it itself, on every CPU), failing with the error
//     that names each tensor that differs. No value derived from a
//     tensor leaves the model before the tensor has passed.
//   - Check (model.Options.FirstUse) holds back each product: a tensor's
//     first use waits for what is left of that tensor's hash, so no
//     product reads a tensor before its hash has been compared.
//
// With BackgroundOptions.Metadata it also compares the file's metadata
// and tensor directory with the manifest (CheckMetadata), first, beside
// the model's load instead of before it: Settled and Wait include what
// differs there, Metadata waits for that comparison alone, and Check does
// not wait for it.
//
// The hashes are of the very bytes the model reads (the file's memory
// mapping). Create it with Manifest.Start; Stop it before the file is
// closed.
type Background struct {
	m       *Manifest
	f       *gguf.File
	byName  map[string]*pending
	queue   []pieceRef // every piece of every tensor, in first-use order
	jobs    [][2]int   // queue's pieces in ones and twos (pairUp)
	next    atomic.Int64
	helpers int
	left    atomic.Int64 // tensors whose hash is not yet compared
	all     chan struct{}
	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup
	mu      sync.Mutex
	failed  []error // mismatches, in the order found
	once    sync.Once
	result  error // Wait's result once every tensor is checked

	// The metadata comparison (BackgroundOptions.Metadata), claimed once
	// by a worker or by Metadata: metaErr is set before metaDone closes.
	metaClaimed atomic.Bool
	metaDone    chan struct{}
	metaErr     error
}

// pending is one tensor's check: its pieces, who claimed each, and the
// result once the last piece is hashed.
type pending struct {
	t       gguf.TensorInfo
	data    []byte
	sums    [][sha256.Size]byte
	claimed []atomic.Bool
	left    atomic.Int64 // pieces not yet hashed
	done    chan struct{}
	err     error // set before done is closed
}

// pieceRef names piece i of a tensor.
type pieceRef struct {
	p *pending
	i int
}

// data returns the piece's bytes.
func (r pieceRef) data() []byte {
	return r.p.data[r.i*HashChunk : min((r.i+1)*HashChunk, len(r.p.data))]
}

// BackgroundOptions configures Manifest.Start.
type BackgroundOptions struct {
	// Workers is the number of goroutines that hash in the background
	// (0: one). They yield the CPU every YieldEvery bytes, so that a
	// model's goroutines waiting to run are not held up behind a hash.
	Workers int
	// Helpers is the number of goroutines a first use hashes the rest of
	// its tensor on while the model waits for it (0: all CPUs).
	Helpers int
	// Metadata has the background compare f's metadata and tensor
	// directory with the manifest (CheckMetadata) before any tensor, so
	// that the caller need not wait for it before loading the model;
	// unset, the caller has checked them.
	Metadata bool
}

// Start begins checking the tensors of f in the background (and its
// metadata, with o.Metadata). A file whose tensors are not memory-mapped
// gets no background hashing: its Check hashes the bytes it is given, at
// first use.
func (m *Manifest) Start(f *gguf.File, o BackgroundOptions) *Background {
	b := &Background{m: m, f: f, byName: make(map[string]*pending, len(f.Tensors)), helpers: o.Helpers,
		all: make(chan struct{}), stop: make(chan struct{}), metaDone: make(chan struct{})}
	if b.helpers <= 0 {
		b.helpers = runtime.NumCPU()
	}
	meta := 0 // the metadata comparison, which the workers begin with (work)
	if o.Metadata {
		meta = 1
	} else {
		b.metaClaimed.Store(true)
		close(b.metaDone)
	}
	var trivial []*pending
	if f.Mapped() {
		trivial = b.queueTensors(f)
	}
	b.left.Store(int64(meta + len(b.byName)))
	if meta+len(b.byName) == 0 {
		close(b.all)
	}
	for _, p := range trivial {
		b.finish(p)
	}
	b.jobs = pairUp(len(b.queue), func(i int) int { return len(b.queue[i].data()) })
	b.startWorkers(min(max(o.Workers, 1), meta+len(b.jobs)))
	return b
}

// startWorkers starts n background workers. The caller (a model's
// loader, on its way to load the model) starts only the first, which
// starts the others: each start of a goroutine may wake an idle CPU's
// thread (a futex call, and in a virtual machine an interrupt to the
// host), which the loader would otherwise pay for n times.
func (b *Background) startWorkers(n int) {
	if n <= 0 {
		return
	}
	work := func() {
		defer b.wg.Done()
		b.work(b.stop, true)
	}
	b.wg.Add(n)
	go func() {
		for range n - 1 {
			go work()
		}
		work()
	}()
}

// queueTensors queues the pieces of f's tensors that the manifest lists,
// in first-use order, and returns those with no data (nothing to hash).
// It runs on the loader's path: the tensors' states are allocated
// together, and each name is ranked once.
func (b *Background) queueTensors(f *gguf.File) (trivial []*pending) {
	type listed struct {
		t     gguf.TensorInfo
		data  []byte
		rank  int
		start int // its first piece's index in the sums and claims
	}
	ts := make([]listed, 0, len(f.Tensors))
	pieces := 0
	for _, t := range f.Tensors {
		if _, ok := b.m.tensorIndex(t.Name); !ok {
			continue // Check reports it
		}
		data, err := f.ReadTensor(t)
		if err != nil {
			continue // Check hashes what the model reads, or the model fails to read it
		}
		rank := useRank(t.Name)
		if len(t.Shape) == 1 {
			rank = vectorRank // the load reads them
		}
		ts = append(ts, listed{t: t, data: data, rank: rank, start: pieces})
		pieces += numPieces(len(data))
	}
	slices.SortStableFunc(ts, func(x, y listed) int { return x.rank - y.rank })
	states := make([]pending, len(ts))
	sums := make([][sha256.Size]byte, pieces)
	claimed := make([]atomic.Bool, pieces)
	b.queue = slices.Grow(b.queue, pieces)
	for k, l := range ts {
		n := numPieces(len(l.data))
		p := &states[k]
		*p = pending{t: l.t, data: l.data, sums: sums[l.start : l.start+n : l.start+n], claimed: claimed[l.start : l.start+n : l.start+n], done: make(chan struct{})}
		p.left.Store(int64(n))
		b.byName[l.t.Name] = p
		for i := range n {
			b.queue = append(b.queue, pieceRef{p, i})
		}
		if n == 0 {
			trivial = append(trivial, p)
		}
	}
	return trivial
}

// YieldEvery is how many bytes of each of its pieces a background worker
// hashes between yields of its CPU (runtime.Gosched): about 40 µs of
// SHA-256 on two pieces.
const YieldEvery = 64 << 10

// PreemptEvery is how many bytes of each of its pieces a background
// worker hashes between points where it can be stopped: a stop of the
// world (a garbage collection's start and end, which the model's loader
// waits for as well) waits for every running goroutine to reach a
// function call, and the SHA-256 loop (assembly) makes none: about 10 µs
// of SHA-256 on two pieces.
const PreemptEvery = 16 << 10

// preemptible is a point where a goroutine can be stopped: its prologue,
// as that of every function that calls another (not inlined), checks
// for a pending preemption.
//
//go:noinline
func preemptible() { preemptibleLeaf() }

//go:noinline
func preemptibleLeaf() {}

// vectorRank is the first-use rank of a vector (a one-dimensional
// tensor: a norm's weights, a bias): before any matrix, as a model's load
// reads each of them while it takes only the matrices' places.
const vectorRank = -2

// useRank orders tensors as a transformer first uses them: the token
// embedding, then the blocks in order, then the rest (the output norm
// and head).
func useRank(name string) int {
	if name == "token_embd.weight" {
		return -1
	}
	if rest, ok := strings.CutPrefix(name, "blk."); ok {
		if n, _, ok := strings.Cut(rest, "."); ok {
			if i, err := strconv.Atoi(n); err == nil && i >= 0 {
				return min(i, 1<<30)
			}
		}
	}
	return 1<<30 + 1
}

// work compares the metadata unless someone has claimed that, then
// hashes the queue's unclaimed pieces in order, a job (one or two
// pieces) at a time, until it is done or stop is closed (a nil stop never
// is), yielding the CPU as it goes if yield is set.
func (b *Background) work(stop <-chan struct{}, yield bool) {
	if closed(stop) {
		return
	}
	b.checkMetadata()
	for !closed(stop) {
		k := b.next.Add(1) - 1
		if k >= int64(len(b.jobs)) {
			return
		}
		var got []pieceRef
		for _, i := range b.jobs[k] {
			if i < 0 {
				continue // a job of one piece
			}
			if r := b.queue[i]; r.p.claimed[r.i].CompareAndSwap(false, true) {
				got = append(got, r)
			}
		}
		b.hash(got, yield)
	}
}

// closed reports whether c is closed; a nil c never is.
func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// checkMetadata compares the file's metadata with the manifest unless
// someone has claimed that already, and publishes the result.
func (b *Background) checkMetadata() {
	if !b.metaClaimed.CompareAndSwap(false, true) {
		return
	}
	b.metaErr = b.m.CheckMetadata(b.f)
	close(b.metaDone)
	b.done(b.metaErr)
}

// Metadata returns the comparison of the file's metadata and tensor
// directory with the manifest (BackgroundOptions.Metadata), running it
// here if no worker has begun it, else waiting for it: nil, or an error
// that wraps ErrAltered and names each key and tensor that differs. It is
// nil at once without BackgroundOptions.Metadata, and safe for
// concurrent use.
func (b *Background) Metadata() error {
	b.checkMetadata()
	<-b.metaDone
	return b.metaErr
}

// hash hashes the pieces rs (claimed, at most two: side by side, as
// sumPieces does), making a point where it can be stopped every
// PreemptEvery bytes of each and yielding the CPU every YieldEvery bytes
// if yield is set; a tensor's last piece's hasher compares the tensor's
// hash with the manifest's.
func (b *Background) hash(rs []pieceRef, yield bool) {
	var two [2]piece
	ps := two[:len(rs)]
	for k, r := range rs {
		ps[k] = piece{data: r.data(), sum: &r.p.sums[r.i]}
	}
	if yield {
		parts, per := 0, YieldEvery/PreemptEvery
		sumPieces(ps, PreemptEvery, func() {
			if parts++; parts%per == 0 {
				runtime.Gosched()
			} else {
				preemptible()
			}
		})
	} else {
		sumPieces(ps, 0, nil)
	}
	for _, r := range rs {
		if r.p.left.Add(-1) == 0 {
			b.finish(r.p)
		}
	}
}

// finish compares p's hash with the manifest's and publishes the result.
func (b *Background) finish(p *pending) {
	sum := combine(p.t.Type, p.t.Shape, p.sums)
	p.err = b.m.compare(p.t.Name, sum[:])
	close(p.done)
	b.done(p.err)
}

// done records the result of one of the check's jobs (a tensor's hash
// or the metadata) and closes all after the last.
func (b *Background) done(err error) {
	if err != nil {
		b.mu.Lock()
		b.failed = append(b.failed, err)
		b.mu.Unlock()
	}
	if b.left.Add(-1) == 0 {
		close(b.all)
	}
}

// Check is model.Options.FirstUse: it returns once t's hash is compared
// with the manifest's (hashing whatever pieces no one has claimed yet on
// up to Helpers goroutines), with an error that wraps ErrAltered and
// names the tensor if it differs. Bytes other than those hashed in the
// background (another copy, another view) are hashed here. It does not
// wait for the metadata (Metadata does). It is safe for concurrent use.
func (b *Background) Check(t gguf.TensorInfo, data []byte) error {
	p, ok := b.byName[t.Name]
	if !ok || !sameBytes(p.data, data) || p.t.Type != t.Type || !slices.Equal(p.t.Shape, t.Shape) {
		return b.m.CheckTensor(t, data)
	}
	select {
	case <-p.done:
		return p.err
	default:
	}
	help := func() {
		var got []pieceRef
		for i := range p.claimed {
			if p.claimed[i].CompareAndSwap(false, true) {
				if got = append(got, pieceRef{p, i}); len(got) == 2 {
					b.hash(got, false)
					got = got[:0]
				}
			}
		}
		b.hash(got, false)
	}
	var wg sync.WaitGroup
	for range min(b.helpers, len(p.claimed)) - 1 {
		wg.Go(help)
	}
	help()
	wg.Wait()
	<-p.done // pieces still being hashed by the background
	return p.err
}

// sameBytes reports whether x and y are the same memory.
func sameBytes(x, y []byte) bool {
	return len(x) == len(y) && (len(x) == 0 || &x[0] == &y[0])
}

// Settled is model.Options.Settled: it returns once every tensor (and
// the metadata, with BackgroundOptions.Metadata) is checked, with Wait's
// result, hashing what the background has not yet
// claimed on up to Helpers goroutines meanwhile (the model waits for it,
// so its CPUs are free); ErrStopped if Stop came first. Once the check
// is complete it costs a channel receive. It is safe for concurrent use.
func (b *Background) Settled() error {
	select {
	case <-b.all:
		return b.outcome()
	case <-b.stop:
		return b.Wait()
	default:
	}
	var wg sync.WaitGroup
	for range b.helpers - 1 {
		wg.Go(func() { b.work(nil, false) })
	}
	b.work(nil, false)
	wg.Wait()
	<-b.all // pieces still being hashed by the background
	return b.outcome()
}

// Wait returns once every tensor (and the metadata, with
// BackgroundOptions.Metadata) is checked: nil if all match, else an error
// that wraps ErrAltered and names each key and tensor that differs; or
// ErrStopped if Stop came first.
func (b *Background) Wait() error {
	select {
	case <-b.all:
	case <-b.stop:
		select {
		case <-b.all:
		default:
			return ErrStopped
		}
	}
	return b.outcome()
}

// outcome returns the result of the complete check: nil, or the error
// naming each tensor that differs.
func (b *Background) outcome() error {
	b.once.Do(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		var names []string
		for _, err := range b.failed {
			names = append(names, strings.TrimPrefix(err.Error(), ErrAltered.Error()+": "))
		}
		b.result = altered(names)
	})
	return b.result
}

// Done returns a channel closed when every tensor is checked.
func (b *Background) Done() <-chan struct{} { return b.all }

// Stop ends the background hashing and returns once no background
// goroutine reads the file; a Check after Stop hashes what is left of its
// tensor itself. It may be called more than once.
func (b *Background) Stop() {
	b.stopped.Do(func() { close(b.stop) })
	b.wg.Wait()
}
