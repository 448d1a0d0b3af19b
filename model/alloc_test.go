package model_test

import (
	"testing"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// TestBatchStepAllocs pins the allocations of a steady-state batched
// decode step (the server's every step): a few per step whatever the
// number of rows, for f16 and turbo3.5 caches on two threads. The
// caches' scratch (a compressed cache's encoder buffers and attention
// tasks, the products' tasks, the batch's lists) is kept from step to
// step; what is left is mostly the pool's regions, a constant per step.
func TestBatchStepAllocs(t *testing.T) {
	m, err := defaultmodel.Load(model.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	prompt := make([]int32, 64)
	for i := range prompt {
		prompt[i] = int32(7 + 31*i%1000)
	}
	const warm, runs = 3, 20
	for _, kv := range []string{"f16", "turbo3.5"} {
		cfg, err := kvcache.Parse(kv)
		if err != nil {
			t.Fatal(err)
		}
		var per [2]float64 // a step of one row, of sixteen
		for i, n := range []int{1, 16} {
			b := m.NewBatch()
			seqs := make([]*model.Session, n)
			toks := make([][]int32, n)
			for j := range seqs {
				if seqs[j], err = m.NewSession(cfg, len(prompt)+warm+runs+1); err != nil {
					t.Fatal(err)
				}
				if _, err := seqs[j].Forward(prompt, false); err != nil {
					t.Fatal(err)
				}
				toks[j] = []int32{int32(42 + j)}
			}
			step := func() {
				_, errs := b.Forward(seqs, toks)
				for _, err := range errs {
					if err != nil {
						t.Fatal(err)
					}
				}
			}
			for range warm {
				step()
			}
			per[i] = testing.AllocsPerRun(runs, step)
		}
		t.Logf("%s: %.0f allocations a step of 1 row, %.0f of 16", kv, per[0], per[1])
		if per[1] > maxStepAllocs || per[1] > per[0]+maxRowsAllocs {
			t.Errorf("%s: %.0f allocations a step of 16 rows (%.0f of 1), want at most %d and %d more than 1 row's",
				kv, per[1], per[0], maxStepAllocs, maxRowsAllocs)
		}
	}
}

// maxStepAllocs bounds the allocations of a steady-state decode step of
// the embedded model (about 25 for one row, 40 to 50 for sixteen, where
// 16 rows took 433 with f16 caches and 2,530 with turbo3.5 before: the
// pool's regions are most of what is left), and maxRowsAllocs what
// sixteen rows may add to one's (15 to 25).
const maxStepAllocs, maxRowsAllocs = 80, 40
