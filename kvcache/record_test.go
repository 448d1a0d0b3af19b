package kvcache

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestRecorder: a recorder attends exactly as the cache it wraps, and its
// trace holds every token appended and the queries it was asked to keep,
// with their positions.
func TestRecorder(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	sh := Shape{QHeads: 4, KVHeads: 2, HeadDim: 8}
	kd, qd := sh.KVHeads*sh.HeadDim, sh.QHeads*sh.HeadDim
	draw := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		return x
	}
	plain, _ := NewF32(sh)
	inner, _ := NewF32(sh)
	rec := NewRecorder(inner, sh)
	rec.KeepQuery = func(pos int) bool { return pos%3 == 1 }
	var ks, vs, qs []float32
	const n = 10
	for range n {
		k, v, q := draw(kd), draw(kd), draw(qd)
		ks, vs = append(ks, k...), append(vs, v...)
		if err := plain.Append(k, v); err != nil {
			t.Fatal(err)
		}
		if err := rec.Append(k, v); err != nil {
			t.Fatal(err)
		}
		want, got := make([]float32, qd), make([]float32, qd)
		plain.Attend(want, q, 0.3)
		rec.Attend(got, q, 0.3)
		if !slices.Equal(got, want) {
			t.Fatalf("recorder attends %v, the cache %v", got, want)
		}
		qs = append(qs, q...)
	}
	tr := rec.Trace
	if tr.Len() != n || !slices.Equal(tr.K, ks) || !slices.Equal(tr.V, vs) || tr.Scale != 0.3 {
		t.Fatalf("trace holds %d tokens (scale %g), want the %d appended", tr.Len(), tr.Scale, n)
	}
	if !slices.Equal(tr.QPos, []int{1, 4, 7}) || tr.Queries() != 3 {
		t.Fatalf("kept queries at %v, want 1, 4, 7", tr.QPos)
	}
	for i, p := range tr.QPos {
		if !slices.Equal(tr.Q[i*qd:(i+1)*qd], qs[p*qd:(p+1)*qd]) {
			t.Errorf("query %d differs from position %d's", i, p)
		}
	}
	if err := rec.Append(draw(kd-1), draw(kd)); err == nil || tr.Len() != n {
		t.Errorf("a refused token: error %v, trace of %d tokens", err, tr.Len())
	}
}

// TestRecordingLast: over a cache that attends a chunk at once, the
// recording cache does too, keeping the chunk's queries (as KeepQuery
// says, with their positions) and attending as the cache itself.
func TestRecordingLast(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	sh := Shape{QHeads: 2, KVHeads: 1, HeadDim: 8}
	ks, vs := kvData(r, sh, 7, false)
	plain, _ := NewF32(sh)
	inner, _ := NewF32(sh)
	rec := NewRecorder(inner, sh)
	rec.KeepQuery = func(pos int) bool { return pos != 3 }
	c := rec.Recording()
	last, ok := c.(LastAttender)
	if !ok {
		t.Fatal("recording a Dense cache cannot attend a chunk at once")
	}
	if _, ok := NewRecorder(&Compacted{}, sh).Recording().(LastAttender); ok {
		t.Fatal("recording a cache without AttendLast claims it")
	}
	for i := range ks {
		if err := plain.Append(ks[i], vs[i]); err != nil {
			t.Fatal(err)
		}
		if err := c.Append(ks[i], vs[i]); err != nil {
			t.Fatal(err)
		}
	}
	qd := sh.QHeads * sh.HeadDim
	var q []float32
	for range 4 {
		q = append(q, randQuery(r, sh)...)
	}
	want, got := make([]float32, 4*qd), make([]float32, 4*qd)
	plain.AttendLast(want, q, 4, 0.4)
	last.AttendLast(got, q, 4, 0.4)
	if !slices.Equal(got, want) {
		t.Fatal("the recording cache attends otherwise than the cache")
	}
	if !slices.Equal(rec.Trace.QPos, []int{4, 5, 6}) || !slices.Equal(rec.Trace.Q, q[qd:]) {
		t.Fatalf("kept queries at %v, want 4, 5, 6", rec.Trace.QPos)
	}
}
