package model_test

import (
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tensor"
)

// TestBatchMatchesSessions: several sessions stepped together by a Batch
// (prompts of different lengths whose rows span more than one chunk, then
// decode steps of one token each, with a session joining late) get the
// logits that stepping each alone gives, bit for bit (the one-row
// sessions of a step attend side by side on the pool's goroutines, each
// cache on its own). The model is the
// float-weight fixture: its products are plain float sums per row,
// whichever rows share a chunk. (With quantized weights the kernels group
// rows in fours and quantize activations to 8 bits, so a row's logits
// move by a quantization step with its neighbours: an equally exact
// result of another rounding; TestBatchOneSession checks those kernels
// with the grouping held equal.)
func TestBatchMatchesSessions(t *testing.T) {
	m, err := model.Open("../testdata/llama-2-tiny-random.gguf", model.Options{Threads: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, kv := range []string{"f32", "f16"} {
		t.Run(kv, func(t *testing.T) {
			cfg, err := kvcache.Parse(kv)
			if err != nil {
				t.Fatal(err)
			}
			prompts := [][]int32{make([]int32, 50), make([]int32, 3), make([]int32, 97), make([]int32, 1)}
			for p := range prompts {
				for i := range prompts[p] {
					prompts[p][i] = int32(5 + (131*p+37*i)%2000)
				}
			}
			const steps = 6
			newSessions := func() []*model.Session {
				ss := make([]*model.Session, len(prompts))
				for i := range ss {
					if ss[i], err = m.NewSession(cfg, 200); err != nil {
						t.Fatal(err)
					}
				}
				return ss
			}
			alone, together := newSessions(), newSessions()
			b := m.NewBatch()
			next := make([]int32, len(prompts))
			for step := 0; step <= steps; step++ {
				// The last session joins at step 2, with its prompt.
				var seqs []*model.Session
				var toks [][]int32
				var idx []int
				for i := range prompts {
					switch {
					case i == 3 && step < 2:
						continue
					case step == 0 || i == 3 && step == 2:
						toks = append(toks, prompts[i])
					default:
						toks = append(toks, []int32{next[i]})
					}
					seqs = append(seqs, together[i])
					idx = append(idx, i)
				}
				got, errs := b.Forward(seqs, toks)
				for j, i := range idx {
					if errs[j] != nil {
						t.Fatalf("step %d, session %d: %v", step, i, errs[j])
					}
					want, err := alone[i].Forward(toks[j], false)
					if err != nil {
						t.Fatal(err)
					}
					if !slices.Equal(got[j], want) {
						t.Fatalf("step %d, session %d: batched logits differ", step, i)
					}
					next[i] = int32(argmax(want))
					if together[i].Len() != alone[i].Len() {
						t.Fatalf("session %d holds %d tokens batched, %d alone", i, together[i].Len(), alone[i].Len())
					}
				}
			}
		})
	}
}

// TestBatchOneSession: a Batch of one session groups its rows as Forward
// does: the logits are equal bit for bit, whatever the cache format.
func TestBatchOneSession(t *testing.T) {
	m, err := defaultmodel.Load(model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, kv := range []string{"f16", "turbo3.5", "q4_0"} {
		cfg, err := kvcache.Parse(kv)
		if err != nil {
			t.Fatal(err)
		}
		batchOneSession(t, m, cfg)
	}
}

func batchOneSession(t *testing.T, m *model.Model, cfg kvcache.Config) {
	a, _ := m.NewSession(cfg, 300)
	b, _ := m.NewSession(cfg, 300)
	bt := m.NewBatch()
	first := 150         // past the 64-token window: compressed tokens attended
	if testing.Short() { // the pure-Go CI pass, where the model is slow
		first = 40
		cfg, _ = cfg.WithWindow(8)
	}
	for _, toks := range [][]int32{make([]int32, first), {7}, {300}, {42, 43, 44}} {
		for i := range toks {
			if toks[i] == 0 {
				toks[i] = int32(3 + 17*i)
			}
		}
		want, err := a.Forward(toks, false)
		if err != nil {
			t.Fatal(err)
		}
		got, errs := bt.Forward([]*model.Session{b}, [][]int32{toks})
		if errs[0] != nil || !slices.Equal(got[0], want) {
			t.Fatalf("%s, %d tokens: batched logits differ (%v)", cfg, len(toks), errs[0])
		}
	}
}

func argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}

// TestBatchErrors: a failing session gets its error and no logits; the
// others are stepped.
func TestBatchErrors(t *testing.T) {
	m, err := defaultmodel.Load(model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	a, _ := m.NewSession(nil, 4)
	full, _ := m.NewSession(nil, 2)
	c, _ := m.NewSession(nil, 8)
	logits, errs := m.NewBatch().Forward([]*model.Session{a, full, c, a}, [][]int32{{1, 2}, {1, 2, 3}, {int32(m.Config.Vocab)}, {4}})
	if errs[0] != nil || logits[0] == nil || a.Len() != 2 {
		t.Fatalf("good session: %v, %d tokens", errs[0], a.Len())
	}
	for i := 1; i < 4; i++ {
		if errs[i] == nil || logits[i] != nil {
			t.Errorf("session %d: no error", i)
		}
	}
	if full.Len() != 0 || c.Len() != 0 {
		t.Errorf("failed sessions advanced: %d, %d", full.Len(), c.Len())
	}
}

// TestBatchSideBySide: the one-row sessions of a Batch step attend side
// by side on the pool's goroutines, each cache with its pool set aside;
// on four threads they get the logits they get on one, bit for bit, for
// every cache format (a prompt joining mid-way, rows spread over the
// compressed and the fp16 window of a cache). Under -race it checks that
// caches of one format share nothing they write.
func TestBatchSideBySide(t *testing.T) {
	var ms [2]*model.Model
	for i, threads := range []int{1, 4} {
		m, err := defaultmodel.Load(model.Options{Threads: threads})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		ms[i] = m
	}
	steps := 12
	if testing.Short() {
		steps = 3
	}
	for _, kv := range []string{"f16", "turbo3.5", "q4_0"} {
		cfg, err := kvcache.Parse(kv)
		if err != nil {
			t.Fatal(err)
		}
		if cfg, err = cfg.WithWindow(4); err != nil {
			t.Fatal(err)
		}
		var logits [2][][][]float32 // per model, step, session
		for i, m := range ms {
			seqs := make([]*model.Session, 5)
			for j := range seqs {
				if seqs[j], err = m.NewSession(cfg, 64); err != nil {
					t.Fatal(err)
				}
			}
			b := m.NewBatch()
			for step := range steps {
				toks := make([][]int32, len(seqs))
				for j := range toks {
					toks[j] = []int32{int32(11 + 97*j + 13*step)}
				}
				if step == 1 {
					toks[2] = []int32{5, 6, 7, 8, 9, 10} // a prompt joins
				}
				got, errs := b.Forward(seqs, toks)
				for j, err := range errs {
					if err != nil {
						t.Fatalf("%s, step %d, session %d: %v", kv, step, j, err)
					}
				}
				kept := make([][]float32, len(got)) // the next step reuses got's buffer
				for j := range got {
					kept[j] = slices.Clone(got[j])
				}
				logits[i] = append(logits[i], kept)
			}
		}
		for step := range steps {
			for j := range logits[0][step] {
				if !slices.Equal(logits[0][step][j], logits[1][step][j]) {
					t.Fatalf("%s, step %d, session %d: logits on four threads differ from one's", kv, step, j)
				}
			}
		}
	}
}

// TestParallel: Model.Parallel calls f once for every index, whatever the
// count against the model's goroutines, and returns after all of them;
// the goroutine numbers it passes are in [0, Threads()), and one number
// is never in two calls at once (it names one goroutine).
func TestParallel(t *testing.T) {
	m, err := model.Open("../testdata/llama-2-tiny-random.gguf", model.Options{Threads: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, n := range []int{0, 1, 3, 4, 17, 200} {
		calls := make([]atomic.Int32, n)
		busy := make([]atomic.Int32, m.Threads())
		var bad atomic.Int32
		m.Parallel(n, func(i, w int) {
			calls[i].Add(1)
			if w < 0 || w >= len(busy) {
				bad.Store(int32(w) + 1000)
				return
			}
			if busy[w].Add(1) != 1 {
				bad.Store(int32(w) + 1)
			}
			time.Sleep(10 * time.Microsecond)
			busy[w].Add(-1)
		})
		if b := bad.Load(); b != 0 {
			t.Fatalf("n %d: goroutine number %d out of range or in two calls at once", n, b-1)
		}
		for i := range calls {
			if c := calls[i].Load(); c != 1 {
				t.Fatalf("n %d: f(%d) called %d times", n, i, c)
			}
		}
	}
}

// TestBatchStepRegions: a decode step of sixteen sessions runs the
// parallel regions one session's step does, four a layer and one for the
// logits (the rows' attention inside the output projection's region),
// for f16 and turbo3.5 caches on two threads: each region ends with a
// wait for its slowest task.
func TestBatchStepRegions(t *testing.T) {
	m, prompt := twoThreadModel(t)
	want := int64(4*m.Config.Layers + 1)
	for _, kv := range []string{"f16", "turbo3.5"} {
		cfg, err := kvcache.Parse(kv)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{1, 16} {
			b := m.NewBatch()
			seqs := make([]*model.Session, n)
			toks := make([][]int32, n)
			for j := range seqs {
				if seqs[j], err = m.NewSession(cfg, len(prompt)+4); err != nil {
					t.Fatal(err)
				}
				if _, err := seqs[j].Forward(prompt, false); err != nil {
					t.Fatal(err)
				}
				toks[j] = []int32{int32(42 + j)}
			}
			for step := range 3 {
				r0 := model.PoolRegions(m)
				_, errs := b.Forward(seqs, toks)
				for _, err := range errs {
					if err != nil {
						t.Fatal(err)
					}
				}
				if got := model.PoolRegions(m) - r0; got != want {
					t.Errorf("%s, %d rows, step %d: %d regions, want %d", kv, n, step, got, want)
				}
			}
		}
	}
}

// TestBatchStepTrace: with the pool traced (tensor.RegionTrace), a
// 16-row decode step's regions are labelled by what they compute, one
// region each: a layer's Q, K and V products, its output projection with
// the rows' attention inside, its gate and up products, its down
// product, and the logits; and the step's logits are an untraced
// step's.
func TestBatchStepTrace(t *testing.T) {
	m, prompt := twoThreadModel(t)
	var err error
	var want []string
	for li := range m.Config.Layers {
		for _, name := range []string{"attn_qkv", "attn_out+attention", "ffn_gate+up", "ffn_down"} {
			want = append(want, fmt.Sprintf("L%d %s", li, name))
		}
	}
	want = append(want, "output")
	const n = 16
	var logits [2][][]float32
	for pass, traced := range []bool{false, true} {
		b := m.NewBatch()
		seqs, toks := make([]*model.Session, n), make([][]int32, n)
		for j := range seqs {
			if seqs[j], err = m.NewSession(nil, len(prompt)+1); err != nil {
				t.Fatal(err)
			}
			if _, err := seqs[j].Forward(prompt, false); err != nil {
				t.Fatal(err)
			}
			toks[j] = []int32{int32(42 + j)}
		}
		var tr tensor.RegionTrace
		if traced {
			model.SetPoolTrace(m, &tr)
		}
		out, errs := b.Forward(seqs, toks)
		model.SetPoolTrace(m, nil)
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		for _, l := range out {
			logits[pass] = append(logits[pass], slices.Clone(l))
		}
		if !traced {
			continue
		}
		var got []string
		for _, s := range tr.Stats() {
			got = append(got, s.Label.String())
			if s.Regions != 1 || s.Threads != 2 || s.Tasks < 1 {
				t.Errorf("%s: %d regions, %d threads, %d tasks; want 1, 2, ≥ 1", s.Label, s.Regions, s.Threads, s.Tasks)
			}
			if s.Busy > 2*s.Wall || s.Busy+s.Late+s.Tail > 2*s.Wall || s.Items+s.PhaseWait > s.Busy {
				t.Errorf("%s: busy %v, late %v, tail %v, items %v, phase wait %v over 2×%v",
					s.Label, s.Busy, s.Late, s.Tail, s.Items, s.PhaseWait, s.Wall)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("regions\n%q\nwant\n%q", got, want)
		}
	}
	for j := range logits[0] {
		if !slices.Equal(logits[0][j], logits[1][j]) {
			t.Errorf("session %d: traced step's logits differ", j)
		}
	}
}

// twoThreadModel loads the embedded model on two threads (closed when the
// test ends) and makes a 20-token prompt for its sessions.
func twoThreadModel(t *testing.T) (*model.Model, []int32) {
	t.Helper()
	m, err := defaultmodel.Load(model.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	prompt := make([]int32, 20)
	for i := range prompt {
		prompt[i] = int32(7 + 31*i%1000)
	}
	return m, prompt
}
