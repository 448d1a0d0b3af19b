package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tokenizer"
)

// job is one admitted or queued generation: what the handler asked for,
// and what the scheduler's loop has produced so far (under mu).
type job struct {
	id      string
	ctx     context.Context
	prompt  []int32
	p       genParams
	kvBytes int64 // the caches' bytes at prompt + max_tokens (BytesAt)
	fixed   int64 // kvBytes and the sequence's buffers
	reserve int64 // fixed and recBytes
	// recBytes is what the prefix recorder holds: the fp16 rows of the
	// prompt's whole blocks after those reused (all of them until the job
	// is admitted); released once the prompt is in and its blocks cached.
	recBytes int64
	reused   int // prompt tokens refilled from the prefix cache
	// woken is when handOff last woke the handler for text (touched by
	// the step's goroutine of the job's sequence alone).
	woken   time.Time
	arrived time.Time

	notify chan struct{} // a token of 1: something new under mu

	mu          sync.Mutex
	text        []byte // produced, not yet taken by the handler
	done        bool
	finish      string // "stop" or "length"
	err         error
	completion  int
	admitted    time.Time
	first, last time.Time
	kvHeld      int64 // the caches' bytes when the sequence ended
}

// signal wakes the handler without blocking.
func (j *job) signal() {
	select {
	case j.notify <- struct{}{}:
	default:
	}
}

// take appends the text produced since the last call to dst and reports
// whether the job has ended. The job keeps its buffer: a token's hand-off
// allocates nothing once it has grown.
func (j *job) take(dst []byte) (text []byte, done bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	text = append(dst, j.text...)
	j.text = j.text[:0]
	return text, j.done
}

// end finishes the job with a reason or an error.
func (j *job) end(finish string, err error, kv int64) {
	j.mu.Lock()
	j.done, j.finish, j.err, j.kvHeld, j.last = true, finish, err, kv, time.Now()
	j.mu.Unlock()
	j.signal()
}

// sequence is an admitted job's state, owned by the scheduler's loop.
type sequence struct {
	j         *job
	sess      *model.Session
	pending   []int32 // prompt tokens not yet fed
	next      int32   // the last sampled token, fed at the next step
	sampler   *model.Sampler
	dec       *tokenizer.Decoder
	stop      stopMatcher
	generated int
	step      StepSeq
	tok       int32 // the token sampled from the step's logits
	held      int64 // the session's cache bytes after the step
	ended     bool  // handOff ended the job (finish then only frees)
	// what decode made of tok for take: its text, whether it was an
	// end-of-generation token, and the job's end it brings ("stop",
	// "length", or "" when the job goes on)
	text  string
	eog   bool
	end   string
	one   [1]int32  // a decode step's token
	chain []*block  // prefix blocks held until the prompt is in
	rec   *recorder // the prompt's new blocks, nil when none
}

// Errors the handlers turn into responses.
var (
	errQueueFull = errors.New("server: queue full")
	errDraining  = errors.New("server: shutting down")
	errCanceled  = errors.New("server: client went away")
)

// scheduler admits jobs while their memory fits the budget and runs every
// admitted sequence one step at a time in a single loop goroutine: at
// each step every decoding sequence feeds its last token and the oldest
// prefilling sequences feed a share of their prompts, all in one Stepper
// call; a request that arrives joins at the next step.
type scheduler struct {
	m       *Model
	stepper Stepper
	met     *metrics
	kvName  string

	parallel, queueCap, prefill int
	budget                      int64 // bytes for every admitted job's reservation
	// interval is the least time between a stream's wake-ups after its
	// first token (Options.StreamInterval).
	interval time.Duration

	mu       sync.Mutex
	queue    []*job
	reserved int64
	closed   bool
	avgSecs  float64 // moving average of admitted jobs' run time, for Retry-After

	wake chan struct{}
	done chan struct{}

	active []*sequence  // the loop's only
	prefix *prefixCache // nil: no prefix cache

	// lastEnd is when the previous step ended, zero when the loop has
	// since waited or admitted a job: a decode step's time runs from it.
	lastEnd time.Time
	// the series a step updates, looked up once: the KV gauges of
	// kvName, and the decode counters of 1, 2, ... sequences
	kvInUse, kvReserved      prometheus.Gauge
	decodeSecs, decodeTokens []prometheus.Counter

	// step's lists, kept from step to step
	batch  []*StepSeq
	fed    []*sequence
	sample func(i, w int) // samples s.fed[i] on the model's goroutine w (made once)
}

// submit queues j, or refuses it: a job that could never fit gets a 400
// saying why, one beyond the queue's bound a 429.
func (s *scheduler) submit(j *job) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return errDraining
	case j.reserve > s.budget:
		return fmt.Errorf("this request needs %s of memory (KV cache %s at %d tokens = prompt %d + max_tokens %d, in %s, and %s of buffers), more than the %s the memory budget leaves for sequences; shorten the prompt or lower max_tokens",
			fmtBytes(j.reserve), fmtBytes(j.kvBytes), len(j.prompt)+j.p.maxTokens, len(j.prompt), j.p.maxTokens, s.kvName, fmtBytes(j.reserve-j.kvBytes), fmtBytes(s.budget))
	case len(s.queue) >= s.queueCap:
		return errQueueFull
	}
	s.queue = append(s.queue, j)
	s.met.queued.Set(float64(len(s.queue)))
	s.poke()
	return nil
}

// retryAfter estimates, in whole seconds, when a refused request might
// be admitted: the time for the queue ahead to drain.
func (s *scheduler) retryAfter() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	secs := s.avgSecs * float64(len(s.queue)) / float64(s.parallel)
	return max(1, int(math.Ceil(secs)))
}

// abandon removes j from the queue if it is still there (its client went
// away before it was admitted).
func (s *scheduler) abandon(j *job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, q := range s.queue {
		if q == j {
			s.queue = append(s.queue[:i], s.queue[i+1:]...)
			s.met.queued.Set(float64(len(s.queue)))
			j.end("", errCanceled, 0)
			return
		}
	}
}

func (s *scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// close stops admitting new jobs; the loop ends once the queued and
// running ones have finished.
func (s *scheduler) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.poke()
}

func (s *scheduler) loop() {
	defer close(s.done)
	for {
		if s.admit() > 0 {
			s.lastEnd = time.Time{} // admission's time is the joining prompt's
		}
		if len(s.active) == 0 {
			s.lastEnd = time.Time{}
			s.mu.Lock()
			idle := len(s.queue) == 0
			finished := idle && s.closed
			s.mu.Unlock()
			if finished {
				return
			}
			if idle {
				<-s.wake
			}
			continue
		}
		s.step()
	}
}

// admit starts queued jobs, oldest first, while a slot is free and the
// oldest one's reservation fits beside those already admitted (first in,
// first out: a large request is not overtaken by smaller ones forever).
// A job's reservation is taken under s.mu together with its leaving the
// queue (reserveNext), so that s.reserved never falls behind the
// sessions that exist; its session, which a prefix refill takes
// milliseconds to make, is made after, outside the lock, so that
// handlers submitting meanwhile do not wait for it. Only this goroutine
// touches the prefix cache and the active list. It returns how many jobs
// it started.
func (s *scheduler) admit() (started int) {
	for len(s.active) < s.parallel {
		j, chain, ok := s.reserveNext()
		if !ok {
			break
		}
		if j == nil {
			continue // canceled while queued
		}
		q, err := s.start(j, chain)
		if err != nil {
			s.mu.Lock()
			s.reserved -= j.reserve
			s.mu.Unlock()
			j.end("", err, 0)
			continue
		}
		s.active = append(s.active, q)
		started++
	}
	s.mu.Lock()
	s.met.queued.Set(float64(len(s.queue)))
	s.kvReservedGauge().Set(float64(s.reserved))
	s.mu.Unlock()
	s.met.running.Set(float64(len(s.active)))
	return started
}

// reserveNext takes the oldest queued job off the queue and reserves its
// memory, if it fits: ok is false when none is queued or the oldest does
// not fit yet; j is nil when it had been canceled. It first matches the
// job's prompt against the prefix cache, holding the blocks it will
// reuse, so that making room (evicting unheld blocks, least recently
// used first, and only if that frees enough) never takes them, and the
// reservation counts only the recorder rows of the blocks after them.
func (s *scheduler) reserveNext() (j *job, chain []*block, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return nil, nil, false
	}
	j = s.queue[0]
	if j.ctx.Err() != nil {
		s.queue = s.queue[1:]
		j.end("", errCanceled, 0)
		return nil, nil, true
	}
	p := s.prefix
	if p != nil {
		chain = p.match(j.prompt)
		j.recBytes = p.recorderBytes(len(chain)*blockTokens, len(j.prompt))
		j.reserve = j.fixed + j.recBytes
	}
	if over := s.reserved + s.prefixBytes() + j.reserve - s.budget; over > 0 {
		if p == nil || p.evictable() < over {
			if p != nil {
				p.release(chain)
			}
			return nil, nil, false
		}
		p.evict(over)
		s.met.prefixBytes.Set(float64(p.bytes))
	}
	s.queue = s.queue[1:]
	s.reserved += j.reserve
	return j, chain, true
}

func (s *scheduler) prefixBytes() int64 {
	if s.prefix == nil {
		return 0
	}
	return s.prefix.bytes
}

// start makes an admitted job's session, whose caches may hold exactly
// prompt + max_tokens tokens: refilled from the chain of prefix blocks
// its prompt starts with (held by reserveNext), recording the prompt's
// further whole blocks for the prefix cache. A chain that fails to
// refill a cache (a block Import refuses) is dropped from the cache and
// the prompt computed instead, unrecorded (the recorder's reservation
// counted the blocks after the chain only).
func (s *scheduler) start(j *job, chain []*block) (*sequence, error) {
	var rec *recorder
	p := s.prefix
	if p != nil {
		if from, to := len(chain)*blockTokens, p.recordable(len(j.prompt)); to > from {
			rec = newRecorder(p.layers, p.width, from, to)
		}
	}
	limit := len(j.prompt) + j.p.maxTokens
	var sess *model.Session
	var err error
	if len(chain) > 0 {
		if sess, err = p.restore(s.m.Model, s.m.KV, rec, chain, limit); err != nil {
			p.release(chain)
			p.drop(chain[0])
			s.met.prefixDropped.Inc()
			s.met.prefixBytes.Set(float64(p.bytes))
			chain, rec = nil, nil
			s.mu.Lock()
			s.reserved -= j.recBytes
			j.reserve -= j.recBytes
			j.recBytes = 0
			s.mu.Unlock()
		}
	}
	if sess == nil {
		var kv kvcache.Maker = s.m.KV
		if rec != nil {
			kv = kvcache.NewCacheFunc(func(l int, sh kvcache.Shape) (kvcache.Cache, error) {
				c, err := s.m.KV.NewCache(l, sh)
				if err != nil {
					return nil, err
				}
				return rec.wrap(l, c), nil
			})
		}
		if sess, err = s.m.Model.NewSession(kv, limit); err != nil {
			if p != nil {
				p.release(chain)
			}
			return nil, fmt.Errorf("server: session: %w", err)
		}
	}
	reused := len(chain) * blockTokens
	sm, err := model.NewSampler(j.p.sampler)
	if err != nil {
		if p != nil {
			p.release(chain)
		}
		return nil, err
	}
	j.mu.Lock()
	j.admitted, j.reused = time.Now(), reused
	j.mu.Unlock()
	s.met.promptTokens.Add(float64(len(j.prompt)))
	if p != nil {
		s.met.prefixTokens.WithLabelValues("reused").Add(float64(reused))
		s.met.prefixTokens.WithLabelValues("computed").Add(float64(len(j.prompt) - reused))
	}
	return &sequence{j: j, sess: sess, pending: j.prompt[reused:], sampler: sm, dec: s.m.Tokenizer.NewDecoder(),
		stop: stopMatcher{stops: j.p.stop}, chain: chain, rec: rec}, nil
}

// step runs one step of every active sequence.
func (s *scheduler) step() {
	start := time.Now()
	batch, fed := s.batch[:0], s.fed[:0]
	left := s.prefill
	decodeOnly := true
	for _, q := range s.active {
		if q.j.ctx.Err() != nil {
			s.finish(q, "", errCanceled)
			continue
		}
		var toks []int32
		switch {
		case len(q.pending) == 0:
			q.one[0] = q.next
			toks = q.one[:]
		case left > 0:
			decodeOnly = false
			n := min(len(q.pending), left)
			toks, q.pending = q.pending[:n], q.pending[n:]
			left -= n
		default:
			decodeOnly = false
			continue // its prompt waits for a later step
		}
		q.step = StepSeq{Session: q.sess, Tokens: toks}
		batch = append(batch, &q.step)
		fed = append(fed, q)
	}
	s.batch, s.fed = batch, fed
	s.sweep()
	if len(batch) == 0 {
		return
	}
	s.stepper.Step(batch)
	// The next tokens, drawn side by side (argmax over the vocabulary is
	// the step's largest serial part after the model's) with what each
	// sequence alone makes of its token (its text, the stop strings:
	// decode), the hand-off of that text to its job (handOff) and its
	// caches' bytes; what touches the scheduler's state (take) in order.
	// Parallel leaves the loop's goroutine out of the sampling (it waits):
	// where it took a sequence and yielded to that job's handler, it went
	// to the back of the global run queue, and the next step with it,
	// while the workers spun and then parked waiting for that step; had it
	// not yielded, the handler it woke waited on its processor until a
	// step's end. w = 0 is the loop's goroutine running every sequence
	// itself (one thread, or one sequence, as before): no yield then.
	if s.sample == nil {
		s.sample = func(i, w int) {
			q := s.fed[i]
			if q.step.Err != nil {
				return
			}
			q.held = q.sess.CacheBytes()
			if len(q.pending) == 0 {
				q.tok = q.sampler.Sample(q.step.Logits)
				s.decode(q)
				s.handOff(q, w != 0)
			}
		}
	}
	s.m.Model.Parallel(len(fed), s.sample)
	var inUse int64
	for _, q := range fed {
		switch {
		case q.step.Err != nil:
			s.finish(q, "", fmt.Errorf("server: step: %w", q.step.Err))
		case len(q.pending) == 0:
			s.promptDone(q)
			s.take(q)
		}
		if q.sess != nil {
			inUse += q.held
		}
	}
	n := len(fed)
	clear(s.batch)
	clear(s.fed)
	s.sweep()
	if s.kvInUse == nil {
		s.kvInUse = s.met.kvInUse.WithLabelValues(s.kvName)
	}
	s.kvInUse.Set(float64(inUse))
	end := time.Now()
	s.met.stepSeconds.Observe(end.Sub(start).Seconds())
	if decodeOnly && !s.lastEnd.IsZero() {
		s.countDecode(n, end.Sub(s.lastEnd))
	}
	s.lastEnd = end
}

// countDecode adds a step that decoded n sequences and fed no prompt
// tokens, d from the previous step's end to its own, to the decode
// counters: their ratio at n sequences against one is the aggregate
// decode throughput of batching, apart from prefill's share of the steps.
func (s *scheduler) countDecode(n int, d time.Duration) {
	for k := len(s.decodeSecs) + 1; k <= n; k++ {
		label := strconv.Itoa(k)
		s.decodeSecs = append(s.decodeSecs, s.met.decodeSeconds.WithLabelValues(label))
		s.decodeTokens = append(s.decodeTokens, s.met.decodeTokens.WithLabelValues(label))
	}
	s.decodeSecs[n-1].Add(d.Seconds())
	s.decodeTokens[n-1].Add(float64(n))
}

// promptDone caches the prompt's recorded blocks, while the budget has
// room for them beside the reservations, and frees the recorder's share
// of the job's reservation.
func (s *scheduler) promptDone(q *sequence) {
	if s.prefix == nil || q.chain == nil && q.rec == nil {
		return
	}
	if q.rec != nil {
		s.mu.Lock()
		s.prefix.insert(q.j.prompt, q.chain, q.rec, q.rec.to, func(b int64) bool {
			over := s.reserved + s.prefix.bytes + b - s.budget
			return over <= 0 || s.prefix.evict(over) >= over
		})
		s.met.prefixBytes.Set(float64(s.prefix.bytes))
		s.reserved -= q.j.recBytes
		q.j.reserve -= q.j.recBytes
		q.j.recBytes = 0
		s.mu.Unlock()
	}
	s.prefix.release(q.chain)
	q.chain, q.rec = nil, nil
}

// decode does the work of the token sampled for a sequence whose prompt
// has been fed (q.tok) that touches the sequence alone, so that the
// step's sequences do it side by side: the sampler's history, the
// token's text and the stop strings, and whether the job ends (q.text,
// q.eog, q.end, for take).
func (s *scheduler) decode(q *sequence) {
	tok := q.tok
	q.eog = s.m.Tokenizer.IsEOG(tok)
	if q.eog {
		q.text, q.end = q.stop.flush()+q.dec.Flush(), "stop"
		return
	}
	q.sampler.Accept(tok)
	q.generated++
	text, stopped := q.stop.feed(q.dec.Next(tok))
	q.text, q.end = text, ""
	switch {
	case stopped:
		q.end = "stop"
	case q.generated >= q.j.p.maxTokens:
		tail, stopped := q.stop.feed(q.dec.Flush())
		q.end = "length"
		if stopped {
			q.end = "stop"
		} else {
			tail += q.stop.flush()
		}
		q.text += tail
	}
}

// handOff counts the token decode went through (a token the job's
// handler has seen is counted: its client may read /metrics next), gives
// its text to the sequence's job, ends the job where the token ends it,
// and wakes its handler where the handler has something to do with it:
// a streaming handler for its first text, then at most once per
// s.interval (it sends what has come meanwhile in one event), and every
// handler when its job ends (a request that does not stream has nothing
// to send before). It touches the job alone, so that the
// step's sequences do it side by side (in the step's Parallel); with
// yield, the goroutine then offers its processor to the handler it woke
// (runtime.Gosched: a woken goroutine waits on the waker's processor),
// so that the step's handlers format and write their tokens side by
// side, one on each of the pool's processors, while the pool waits for
// them anyway at the end of this region. Without it they would wait
// until the loop's goroutine gives its processor up (every processor is
// the pool's while steps run back to back) and then run one after
// another, or take a processor from a worker in the middle of a later
// step's region, which every other goroutine of that region then waits
// for.
func (s *scheduler) handOff(q *sequence, yield bool) {
	j := q.j
	first := q.generated == 0 || q.generated == 1 && !q.eog
	q.ended = q.end != ""
	var now time.Time
	if first || q.ended || s.interval > 0 {
		now = time.Now()
	}
	if !q.eog {
		s.met.genTokens.Inc()
	}
	j.mu.Lock()
	if first {
		j.first = now
	}
	j.text = append(j.text, q.text...)
	j.completion = q.generated
	if q.ended {
		j.done, j.finish, j.kvHeld, j.last = true, q.end, q.held, now
	}
	j.mu.Unlock()
	if first {
		s.met.ttft.Observe(now.Sub(j.arrived).Seconds())
	}
	wake := q.ended || j.p.stream && q.text != "" && (first || s.interval == 0 || now.Sub(j.woken) >= s.interval)
	if wake {
		j.woken = now
		j.signal()
		if yield {
			runtime.Gosched()
		}
	}
}

// take finishes the sequence where the token handed off ended its job
// (its reservation and the rest of the scheduler's part), and otherwise
// feeds the token at the next step.
func (s *scheduler) take(q *sequence) {
	if q.end != "" {
		s.finish(q, q.end, nil)
		return
	}
	q.next = q.tok
}

// finish ends a sequence and frees its reservation; sweep drops it from
// the active list.
func (s *scheduler) finish(q *sequence, reason string, err error) {
	if q.sess == nil {
		return // already finished in this step
	}
	if !q.ended { // handOff has not ended the job already
		q.j.end(reason, err, q.sess.CacheBytes())
	}
	q.sess = nil
	if s.prefix != nil {
		s.prefix.release(q.chain) // a prompt that never finished caches nothing
		q.chain, q.rec = nil, nil
	}
	if err == nil {
		s.met.duration.Observe(time.Since(q.j.arrived).Seconds())
	}
	s.mu.Lock()
	s.reserved -= q.j.reserve
	secs := time.Since(q.j.admitted).Seconds()
	if s.avgSecs == 0 {
		s.avgSecs = secs
	} else {
		s.avgSecs = 0.9*s.avgSecs + 0.1*secs
	}
	s.mu.Unlock()
}

// sweep removes finished sequences from the active list.
func (s *scheduler) sweep() {
	kept := s.active[:0]
	for _, q := range s.active {
		if q.sess != nil {
			kept = append(kept, q)
		}
	}
	clear(s.active[len(kept):])
	s.active = kept
	s.met.running.Set(float64(len(s.active)))
	s.mu.Lock()
	s.kvReservedGauge().Set(float64(s.reserved))
	s.mu.Unlock()
}

// kvReservedGauge is the kv_bytes_reserved series of the scheduler's
// format (under s.mu).
func (s *scheduler) kvReservedGauge() prometheus.Gauge {
	if s.kvReserved == nil {
		s.kvReserved = s.met.kvReserved.WithLabelValues(s.kvName)
	}
	return s.kvReserved
}

// fmtBytes writes n in binary units.
func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
