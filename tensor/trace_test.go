package tensor

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// checkStat checks the identities every RegionStat keeps: each
// goroutine's wake-up, tasks and tail fit in the region, the busiest
// goroutine's tasks too, and the phases' items and waits are inside the
// tasks.
func checkStat(t *testing.T, s RegionStat) {
	t.Helper()
	threads := time.Duration(s.Threads)
	if s.Busy < 0 || s.Busy > threads*s.Wall {
		t.Errorf("%s: busy %v outside [0, %d×%v]", s.Label, s.Busy, s.Threads, s.Wall)
	}
	if s.Busy+s.Late+s.Tail > threads*s.Wall || s.Gaps() < 0 {
		t.Errorf("%s: busy %v + late %v + tail %v > %d×%v", s.Label, s.Busy, s.Late, s.Tail, s.Threads, s.Wall)
	}
	if s.Slowest > s.Wall || s.Slowest > s.Busy || threads*s.Slowest < s.Busy {
		t.Errorf("%s: slowest %v against wall %v, busy %v", s.Label, s.Slowest, s.Wall, s.Busy)
	}
	if s.Items < 0 || s.PhaseWait < 0 || s.Items+s.PhaseWait > s.Busy {
		t.Errorf("%s: items %v + phase wait %v > busy %v", s.Label, s.Items, s.PhaseWait, s.Busy)
	}
	if w := s.WaitShare(); w < 0 || w > 1 {
		t.Errorf("%s: wait share %v", s.Label, w)
	}
}

// TestRegionTrace: a traced Pool counts its regions and tasks under the
// label given last, in the order first seen, with the bookkeeping's
// identities; regions run on the caller alone, and those after
// SetTrace(nil), are not counted.
func TestRegionTrace(t *testing.T) {
	var tr RegionTrace
	p := NewPool(3)
	defer p.Close()
	p.Run(4, func(_, _ int) {}) // before the trace: not counted
	p.SetTrace(&tr)
	sleep := func(_, _ int) { time.Sleep(100 * time.Microsecond) }
	p.Run(5, sleep) // unlabelled
	p.Label("ffn_down", 3)
	p.Run(6, sleep)
	p.RunDealt(7, sleep)
	p.Run(1, sleep) // on the caller: no region
	p.Label("output", -1)
	p.Run(2, sleep)
	p.Label("ffn_down", 3) // a label seen before adds to its stat
	p.Run(3, sleep)
	p.SetTrace(nil)
	p.Run(4, sleep)
	p.Label("gone", 0) // no trace: nothing
	want := []struct {
		label          string
		regions, tasks int
	}{{"unlabelled", 1, 5}, {"L3 ffn_down", 3, 16}, {"output", 1, 2}}
	got := tr.Stats()
	if len(got) != len(want) {
		t.Fatalf("%d labels, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		s := got[i]
		if s.Label.String() != w.label || s.Regions != w.regions || s.Tasks != w.tasks || s.Threads != 3 {
			t.Errorf("stat %d: %q, %d regions, %d tasks, %d threads; want %q, %d, %d, 3",
				i, s.Label, s.Regions, s.Tasks, s.Threads, w.label, w.regions, w.tasks)
		}
		if s.Busy < time.Duration(s.Tasks)*100*time.Microsecond {
			t.Errorf("%s: busy %v for %d tasks of 100µs", s.Label, s.Busy, s.Tasks)
		}
		checkStat(t, s)
	}
	tr.Reset()
	if s := tr.Stats(); len(s) != 0 {
		t.Errorf("after Reset: %+v", s)
	}
	var nilPool *Pool
	nilPool.SetTrace(&tr)
	nilPool.Label("x", 1)
}

// TestRegionTraceProducts: a traced product's region counts the time in
// its vectors' preparation (Options.Prepare, here made slow) as items,
// inside its tasks' time; and the product's results are an untraced
// pool's.
func TestRegionTraceProducts(t *testing.T) {
	const rows, cols = 512, 256
	rng := rand.New(rand.NewPCG(3, 4))
	wf := make([]float32, rows*cols)
	for i := range wf {
		wf[i] = rng.Float32()*2 - 1
	}
	for _, n := range []int{1, 4, 16} {
		x := make([]float32, n*cols)
		for i := range x {
			x[i] = rng.Float32()*2 - 1
		}
		for _, dt := range []DType{F32, Q8_0} {
			rb, err := dt.RowBytes(cols)
			if err != nil {
				t.Fatal(err)
			}
			w := make([]byte, rows*int(rb))
			if dt == F32 {
				for i, f := range wf {
					binary.LittleEndian.PutUint32(w[4*i:], math.Float32bits(f))
				}
			} else if err := Quantize(dt, w, wf); err != nil {
				t.Fatal(err)
			}
			var tr RegionTrace
			p := NewPool(3)
			want, got := make([]float32, n*rows), make([]float32, n*rows)
			prep := func(int) { time.Sleep(50 * time.Microsecond) }
			if err := MatMul(want, w, dt, rows, cols, x, n, Options{Pool: p, Prepare: prep}); err != nil {
				t.Fatal(err)
			}
			p.SetTrace(&tr)
			p.Label("ffn_down", 0)
			if err := matMulShared([]Product{{Out: got, W: w, Type: dt, Rows: rows}}, cols, x, n, Options{Pool: p, Prepare: prep}, 1); err != nil {
				t.Fatal(err)
			}
			p.Close()
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("%s, n=%d: traced out[%d] = %v, untraced %v", dt, n, i, got[i], want[i])
				}
			}
			st := tr.Stats()
			if len(st) != 1 || st[0].Regions != 1 {
				t.Fatalf("%s, n=%d: %+v, want one region", dt, n, st)
			}
			if st[0].Items < time.Duration(n)*50*time.Microsecond {
				t.Errorf("%s, n=%d: items %v for %d vectors prepared in 50µs", dt, n, st[0].Items, n)
			}
			checkStat(t, st[0])
		}
	}
}
