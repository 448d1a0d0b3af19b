package model_test

import (
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// benchModel returns the embedded model, or the GGUF file named by
// $TURBOMEM_BENCH_MODEL (a bigger model from tools/randmodel, say).
func benchModel(b *testing.B, threads int) *model.Model {
	b.Helper()
	o := model.Options{Threads: threads}
	var m *model.Model
	var err error
	if p := os.Getenv("TURBOMEM_BENCH_MODEL"); p != "" {
		m, err = model.Open(p, o)
	} else {
		m, err = defaultmodel.Load(o)
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

// BenchmarkDecode times one decode step after a 128-token prompt (f16
// cache): what a token of generation costs at short context.
func BenchmarkDecode(b *testing.B) {
	m := benchModel(b, 0)
	ids := make([]int32, 128)
	for i := range ids {
		ids[i] = int32(7 + 31*i%1000)
	}
	const steps = 512 // per session; a fresh one then starts, untimed
	var s *model.Session
	tok := []int32{42}
	b.ReportAllocs()
	for b.Loop() {
		if s == nil || s.Len() == len(ids)+steps {
			b.StopTimer()
			var err error
			if s, err = m.NewSession(nil, len(ids)+steps); err != nil {
				b.Fatal(err)
			}
			if _, err := s.Forward(ids, false); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		if _, err := s.Forward(tok, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPrefill times a 512-token prompt (llama-bench's pp512).
func BenchmarkPrefill(b *testing.B) {
	m := benchModel(b, 0)
	ids := make([]int32, 512)
	for i := range ids {
		ids[i] = int32(7 + 31*i%1000)
	}
	b.ReportAllocs()
	for b.Loop() {
		s, err := m.NewSession(nil, len(ids))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Forward(ids, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(ids))*float64(b.N)/b.Elapsed().Seconds(), "tok/s")
}

// BenchmarkBatchDecode times one Batch decode step of 1, 4 and 16
// sequences (each after a 64-token prompt; f16 caches, and turbo3.5 as
// the server's default) at one, two and (where the machine has them)
// sixteen threads, in ns per token: batching pays when a 16-sequence
// step costs far less than 16 one-sequence steps (the weights are read
// once per step for every sequence).
func BenchmarkBatchDecode(b *testing.B) {
	ids := make([]int32, 64)
	for i := range ids {
		ids[i] = int32(7 + 31*i%1000)
	}
	for _, threads := range []int{1, 2, 16} {
		if threads > 2 && threads > runtime.NumCPU() {
			continue
		}
		m := benchModel(b, threads)
		for _, kv := range []string{"f16", "turbo3.5"} {
			cfg, err := kvcache.Parse(kv)
			if err != nil {
				b.Fatal(err)
			}
			for _, n := range []int{1, 4, 16} {
				b.Run(fmt.Sprintf("threads=%d/kv=%s/seqs=%d", threads, kv, n), func(b *testing.B) {
					const steps = 256 // per session; fresh ones then start, untimed
					batch := m.NewBatch()
					seqs := make([]*model.Session, n)
					toks := make([][]int32, n)
					for i := range toks {
						toks[i] = []int32{int32(42 + i)}
					}
					b.ReportAllocs()
					for b.Loop() {
						if seqs[0] == nil || seqs[0].Len() == len(ids)+steps {
							b.StopTimer()
							for i := range seqs {
								var err error
								if seqs[i], err = m.NewSession(cfg, len(ids)+steps); err != nil {
									b.Fatal(err)
								}
								if _, err := seqs[i].Forward(ids, false); err != nil {
									b.Fatal(err)
								}
							}
							b.StartTimer()
						}
						if _, errs := batch.Forward(seqs, toks); errs != nil {
							for _, err := range errs {
								if err != nil {
									b.Fatal(err)
								}
							}
						}
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/token")
				})
			}
		}
	}
}
