package kvcache

import "github.com/turbomem/turbomem/tensor"

// Trace is what passed through one layer's cache: the keys (after RoPE)
// and values of every token, each KVHeads·HeadDim values, and the
// QHeads·HeadDim queries attended with, with their scale.
type Trace struct {
	Shape   Shape
	K, V, Q []float32
	// QPos holds the position of each recorded query where a Recorder
	// keeps only some (Recorder.KeepQuery); nil when every position's
	// query is recorded, in order.
	QPos  []int
	Scale float32
}

// Len returns the number of tokens traced.
func (t *Trace) Len() int { return len(t.K) / (t.Shape.KVHeads * t.Shape.HeadDim) }

// Queries returns the number of queries traced.
func (t *Trace) Queries() int { return len(t.Q) / (t.Shape.QHeads * t.Shape.HeadDim) }

// Recorder is a cache that records the tokens appended to it and the
// queries attended with into its Trace, and serves attention from the
// cache it wraps (so a session runs exactly as it would without it).
type Recorder struct {
	Cache
	Trace *Trace
	// KeepQuery, if set, says which positions' queries are recorded
	// (listed in Trace.QPos); nil records every one.
	KeepQuery func(pos int) bool
}

// SetPool passes the pool on to the recorded cache (UsePool).
func (r *Recorder) SetPool(p *tensor.Pool) { UsePool(r.Cache, p) }

// SharesScratch reports whether the recorded cache does (SharesScratch).
func (r *Recorder) SharesScratch() bool { return SharesScratch(r.Cache) }

// NewRecorder returns a recorder around c, a cache of shape sh.
func NewRecorder(c Cache, sh Shape) *Recorder {
	return &Recorder{Cache: c, Trace: &Trace{Shape: sh}}
}

// Append appends the token to the wrapped cache and, if that succeeds,
// to the trace.
func (r *Recorder) Append(k, v []float32) error {
	if err := r.Cache.Append(k, v); err != nil {
		return err
	}
	r.Trace.K = append(r.Trace.K, k...)
	r.Trace.V = append(r.Trace.V, v...)
	return nil
}

// Attend records q (the query of the latest token appended) and attends
// with the wrapped cache.
func (r *Recorder) Attend(out, q []float32, scale float32) {
	r.record(q, r.Trace.Len()-1, scale)
	r.Cache.Attend(out, q, scale)
}

// record keeps the query of position pos if KeepQuery wants it.
func (r *Recorder) record(q []float32, pos int, scale float32) {
	r.Trace.Scale = scale
	if r.KeepQuery == nil {
		r.Trace.Q = append(r.Trace.Q, q...)
	} else if r.KeepQuery(pos) {
		r.Trace.Q = append(r.Trace.Q, q...)
		r.Trace.QPos = append(r.Trace.QPos, pos)
	}
}

// Recording returns the cache a session should use to record through r:
// r itself, or, where the wrapped cache attends a prefill chunk at once
// (LastAttender), a recorder that does too, so that recording does not
// slow the prefill down.
func (r *Recorder) Recording() Cache {
	if _, ok := r.Cache.(LastAttender); ok {
		return lastRecorder{r}
	}
	return r
}

// lastRecorder is a Recorder over a LastAttender.
type lastRecorder struct{ *Recorder }

// AttendLast records the queries of the last n tokens appended and
// attends with the wrapped cache's AttendLast.
func (r lastRecorder) AttendLast(out, q []float32, n int, scale float32) {
	qd := r.Trace.Shape.QHeads * r.Trace.Shape.HeadDim
	first := r.Trace.Len() - n
	for i := range n {
		r.record(q[i*qd:(i+1)*qd], first+i, scale)
	}
	r.Cache.(LastAttender).AttendLast(out, q, n, scale)
}
