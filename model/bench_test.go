package model_test

import (
	"os"
	"testing"

	"github.com/turbomem/turbomem/defaultmodel"
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
