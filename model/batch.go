package model

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/turbomem/turbomem/kvcache"
)

// Batch runs one step of several sessions together: their tokens go
// through the layers as the rows of one chunk, so each weight matrix is
// read once per step for all of them (a matrix product over every row),
// while each row attends with its own session's caches at its own
// position; the step's one-row sessions attend side by side, each row's
// attention the preparation of its vector in the parallel region of the
// attention's output projection (attendRows). It is the same layer
// code as Session.Forward's: with float weights the logits are Forward's
// bit for bit; with quantized weights the products take other kernels for
// several rows than for one (Q8_0 weights: a pass over each weight row
// for up to 16 rows at once, read as stored) and quantize activations to
// 8 bits, so a row's logits can move by a rounding step with the number
// of rows beside it, as they do between Forward calls chunked
// differently. A Batch holds the step's buffers; it is not safe for
// concurrent use.
type Batch struct {
	w      *Session // lends its buffers; holds no caches
	rows   batchRows
	logits []float32 // every session's logits of the last step
	// Forward's results and working lists, kept from step to step: a
	// step allocates nothing.
	outLogits [][]float32
	outErrs   []error
	all       []batchRow
	ids       []int32
}

// batchRow is one row of a step: token tok of session seq.
type batchRow struct{ seq, tok int }

// batchRows maps the rows of a Batch chunk to their sessions.
type batchRows struct {
	seq    []*Session
	pos    []int
	logits []int   // rows whose logits are wanted, ascending
	errs   []error // per row, set by fail
	// attendRows's scratch: the rows of sessions with one row in the
	// chunk, and the [first, end) rows of the others
	singles []int
	multis  [][2]int
	// attendWaves' sessions (spans of rows), the other sessions of
	// several rows, and the caches, outputs and queries of a wave
	spans, keep [][2]int
	caches      []kvcache.Cache
	outs, qs    [][]float32
	// attendRows's call, for its tasks: the session lending its buffers,
	// the layer and the scale, and the side-by-side task and Prepare
	// made once (of)
	s     *Session
	li    int
	scale float32
	of    *batchRows
	side  func(t, w int)
	late  func(v int)
}

func (r *batchRows) fail(i int, err error) { r.errs[i] = err }

// NewBatch returns a Batch for the model's sessions.
func (m *Model) NewBatch() *Batch { return &Batch{w: &Session{m: m}} }

// ScratchBytes returns the bytes of the batch's working buffers, the
// logits of its last step included.
func (b *Batch) ScratchBytes() int64 { return b.w.ScratchBytes() + 4*int64(cap(b.logits)) }

// Forward appends tokens[i] to seqs[i] for every i, in chunks of at most
// MaxBatch rows in all, and returns each session's next-token logits
// after its last token. A session that fails (a token outside the
// vocabulary, its limit passed, a cache that refuses a value) gets its
// error in errs and nil logits, and must not be used again; the others go
// on. Sessions must be distinct. The results, logits and errs, live in
// the batch's buffers: they hold until the next Forward call, which
// reuses them (a step allocates nothing).
func (b *Batch) Forward(seqs []*Session, tokens [][]int32) (logits [][]float32, errs []error) {
	m := b.w.m
	c := &m.Config
	b.outLogits, b.outErrs = resize(b.outLogits, len(seqs)), resize(b.outErrs, len(seqs))
	logits, errs = b.outLogits, b.outErrs
	if len(tokens) != len(seqs) {
		for i := range errs {
			errs[i] = fmt.Errorf("model: Batch.Forward of %d sessions and %d token lists", len(seqs), len(tokens))
		}
		return
	}
	// The rows in order: every session's tokens, one after another.
	all := b.all[:0]
	for i, s := range seqs {
		switch {
		case s == nil || s.m != m:
			errs[i] = errors.New("model: Batch.Forward of a session of another model")
		case slices.Contains(seqs[:i], s):
			errs[i] = errors.New("model: Batch.Forward of one session twice")
		case len(tokens[i]) == 0:
			errs[i] = errors.New("model: Forward of no tokens")
		case s.pos+len(tokens[i]) > s.limit:
			errs[i] = fmt.Errorf("model: sequence of %d tokens would exceed the limit of %d", s.pos+len(tokens[i]), s.limit)
		}
		for _, t := range tokens[i] {
			if errs[i] == nil && (t < 0 || int(t) >= c.Vocab) {
				errs[i] = fmt.Errorf("model: token id %d outside the vocabulary of %d", t, c.Vocab)
			}
		}
		if errs[i] != nil {
			continue
		}
		for j := range tokens[i] {
			all = append(all, batchRow{i, j})
		}
	}
	b.all = all
	b.logits = grow(b.logits, len(seqs)*c.Vocab)
	done := 0 // rows of b.logits filled by earlier chunks
	for start := 0; start < len(all); start += MaxBatch {
		chunk := all[start:min(len(all), start+MaxBatch)]
		r := &b.rows
		r.seq, r.pos, r.logits, r.errs = r.seq[:0], r.pos[:0], r.logits[:0], r.errs[:0]
		b.ids = slices.Grow(b.ids[:0], len(chunk))[:len(chunk)]
		ids := b.ids
		for k, x := range chunk {
			s := seqs[x.seq]
			ids[k] = tokens[x.seq][x.tok]
			r.seq = append(r.seq, s)
			r.pos = append(r.pos, s.pos+x.tok)
			r.errs = append(r.errs, nil)
			if x.tok == len(tokens[x.seq])-1 {
				r.logits = append(r.logits, k)
			}
		}
		if err := b.w.embed(ids); err != nil {
			for _, x := range chunk {
				errs[x.seq] = err
			}
			continue
		}
		out, err := b.w.forward(len(chunk), 0, 0, len(r.logits) > 0, b.logits[done*c.Vocab:(done+len(r.logits))*c.Vocab], r)
		done += len(r.logits)
		for k, x := range chunk {
			if e := r.errs[k]; e != nil && errs[x.seq] == nil {
				errs[x.seq] = e
			}
			if err != nil && errs[x.seq] == nil {
				errs[x.seq] = err
			}
		}
		for j, k := range r.logits {
			if i := chunk[k].seq; errs[i] == nil {
				logits[i] = out[j*c.Vocab : (j+1)*c.Vocab : (j+1)*c.Vocab]
			}
		}
	}
	if err := m.settle(); err != nil {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = err
			}
		}
	}
	for i, s := range seqs {
		if errs[i] == nil {
			s.pos += len(tokens[i])
		} else {
			logits[i] = nil
		}
	}
	return logits, errs
}

// resize returns b with n zero elements, reusing its array.
func resize[T any](b []T, n int) []T {
	b = slices.Grow(b[:0], n)[:n]
	clear(b)
	return b
}

// attendRows is attend for the rows of a Batch chunk (each row's own
// session's caches, at its own position). A session with one row in the
// chunk (a decode step) is a task of one parallel region that rotates,
// appends and attends its row on one goroutine, its caches' own pools set
// aside: one region for the whole step's attention instead of one or
// none per row, the rows' caches working side by side. Where every row
// of the chunk is such a row (a step that feeds no prompt), that region
// is the output projection's: attendRows does nothing and reports late,
// and the caller passes rows.late, row v's attention, as the projection's
// Prepare of vector v (a region and its barrier fewer per layer). A session with
// several rows (a prompt joining the step) goes after, its rows appended
// in order and attended over the pool, at once where its cache can
// (kvcache.ChunkAttender, kvcache.LastAttender). When few single rows have long contexts, each
// is attended in turn over the whole pool instead, as a lone session's
// would be (flash-decoding across the pool beats two or three rows side
// by side). Sessions whose caches share their scratch with others
// (kvcache.SharesScratch: the forks of one compacted context) go first,
// their rows in waves attended together (attendWaves).
func (s *Session) attendRows(li, n int, rows *batchRows) (late bool) {
	c := &s.m.Config
	qd, kd := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	scale := float32(1 / math.Sqrt(float64(c.HeadDim)))
	pool := s.opts().Pool
	// The chunk's rows are each session's rows one after another: cut
	// them into spans of one session.
	singles, multis := rows.singles[:0], rows.multis[:0]
	longest, apart := 0, false
	for i := 0; i < n; {
		j := i + 1
		for j < n && rows.seq[j] == rows.seq[i] {
			j++
		}
		if j == i+1 {
			singles = append(singles, i)
			longest = max(longest, rows.pos[i])
			apart = apart || kvcache.SharesScratch(rows.seq[i].caches[li])
		} else {
			multis = append(multis, [2]int{i, j})
			apart = apart || kvcache.SharesScratch(rows.seq[i].caches[li])
		}
		i = j
	}
	rows.singles, rows.multis = singles, multis
	rows.s, rows.li, rows.scale = s, li, scale
	if rows.of != rows { // made once: a step's regions make no closures
		rows.of, rows.side, rows.late = rows, rows.sideTask, rows.lateTask
	}
	threads := pool.Threads()
	if apart {
		// Forks of one context: their rows appended in waves (a
		// session's first row, then its second, …) and each wave's
		// rows attended together (kvcache.AttendTogether: the shared
		// context read once for all of them).
		spans := rows.spans[:0]
		for _, i := range singles {
			spans = append(spans, [2]int{i, i + 1})
		}
		keep := rows.keep[:0]
		for _, sp := range multis {
			cache := rows.seq[sp[0]].caches[li]
			if _, last := cache.(kvcache.LastAttender); !last && kvcache.SharesScratch(cache) {
				spans = append(spans, sp)
			} else {
				keep = append(keep, sp)
			}
		}
		rows.spans, rows.keep = spans, keep
		s.attendWaves(li, spans, rows, scale)
		singles, multis = nil, keep
	}
	side := len(singles) >= 2 && (2*len(singles) >= threads || longest < sideBySideContext)
	if side && len(singles) == n { // never after apart: it leaves no singles
		return true
	}
	if side {
		pool.Run(len(singles), rows.side)
	} else {
		for _, i := range singles {
			rows.one(i, true)
		}
	}
	for _, sp := range multis {
		i0, i1 := sp[0], sp[1]
		seq := rows.seq[i0]
		cache := seq.caches[li]
		if ca, ok := cache.(kvcache.ChunkAttender); ok {
			s.ropeRows(i0, i1)
			if err := ca.AppendAttend(s.att[i0*qd:i1*qd], s.q[i0*qd:i1*qd], s.k[i0*kd:i1*kd], s.v[i0*kd:i1*kd], i1-i0, scale); err != nil {
				// The session is lost (Forward drops it): its rows fail
				// with it.
				for k := i0; k < i1; k++ {
					rows.fail(k, err)
				}
				clear(s.att[i0*qd : i1*qd])
			}
			continue
		}
		last, whole := cache.(kvcache.LastAttender)
		if !whole {
			for i := i0; i < i1; i++ {
				rows.one(i, true)
			}
			continue
		}
		s.ropeRows(i0, i1)
		appended := true
		for i := i0; i < i1 && appended; i++ {
			if err := cache.Append(s.k[i*kd:(i+1)*kd], s.v[i*kd:(i+1)*kd]); err != nil {
				// The session is lost (Forward drops it): its other rows
				// fail with it, and its attention is not wanted.
				for k := i0; k < i1; k++ {
					rows.fail(k, err)
				}
				clear(s.att[i0*qd : i1*qd])
				appended = false
			}
		}
		if appended {
			last.AttendLast(s.att[i0*qd:i1*qd], s.q[i0*qd:i1*qd], i1-i0, scale)
		}
	}
	return false
}

// one rotates, appends and attends row i of the chunk (attendRows's
// call), on the caches' own pools if alone, else on this goroutine.
func (rows *batchRows) one(i int, alone bool) {
	s, li, scale := rows.s, rows.li, rows.scale
	c := &s.m.Config
	qd, kd := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	s.ropeRows(i, i+1) // one row: on this goroutine
	seq := rows.seq[i]
	cache := seq.caches[li]
	if err := cache.Append(s.k[i*kd:(i+1)*kd], s.v[i*kd:(i+1)*kd]); err != nil {
		rows.fail(i, err)
		clear(s.att[i*qd : (i+1)*qd])
		return
	}
	if alone {
		cache.Attend(s.att[i*qd:(i+1)*qd], s.q[i*qd:(i+1)*qd], scale)
		return
	}
	kvcache.UsePool(cache, nil)
	cache.Attend(s.att[i*qd:(i+1)*qd], s.q[i*qd:(i+1)*qd], scale)
	kvcache.UsePool(cache, seq.opts().Pool)
}

// sideTask is attendRows's task t: single row t, side by side with the
// others.
func (rows *batchRows) sideTask(t, _ int) { rows.one(rows.singles[t], false) }

// lateTask is the Prepare of vector v of the output projection when
// attendRows reported late: row v's attention, side by side with the
// others'.
func (rows *batchRows) lateTask(v int) { rows.one(v, false) }

// attendWaves appends and attends the rows of the sessions spans (rows
// [i0, i1) each) of layer li: wave w takes each session's row i0+w, the
// rows of a wave attended together (kvcache.AttendTogether). A session
// whose Append fails loses its later rows too.
func (s *Session) attendWaves(li int, spans [][2]int, rows *batchRows, scale float32) {
	c := &s.m.Config
	qd, kd := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	for w := 0; ; w++ {
		caches, outs, qs := rows.caches[:0], rows.outs[:0], rows.qs[:0]
		more := false
		for _, sp := range spans {
			i := sp[0] + w
			if i >= sp[1] {
				continue
			}
			more = true
			if rows.errs[i] != nil {
				continue
			}
			s.ropeRows(i, i+1)
			if err := rows.seq[i].caches[li].Append(s.k[i*kd:(i+1)*kd], s.v[i*kd:(i+1)*kd]); err != nil {
				for k := i; k < sp[1]; k++ {
					rows.fail(k, err)
				}
				clear(s.att[i*qd : sp[1]*qd])
				continue
			}
			caches = append(caches, rows.seq[i].caches[li])
			outs, qs = append(outs, s.att[i*qd:(i+1)*qd]), append(qs, s.q[i*qd:(i+1)*qd])
		}
		rows.caches, rows.outs, rows.qs = caches, outs, qs
		if !more {
			return
		}
		kvcache.AttendTogether(caches, outs, qs, scale, s.opts().Pool)
	}
}

// sideBySideContext is the context length below which single rows are
// attended side by side even when they are fewer than half the pool's
// threads: a cache splits so short a context over few goroutines, if any.
const sideBySideContext = 1024
