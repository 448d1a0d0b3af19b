package wquant_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/wquant"
)

// BenchmarkFirstToken measures the first token's latency of the embedded
// model, sealed with a manifest (a copy, its Q8_0 tensors as they are),
// as `turbomem run` meets it: open the file with the check of a
// --verify mode (wquant.OpenModel), load the tokenizer, run a prompt of
// 16 or 256 tokens, on 1 thread and on every CPU. Modes: off; lazy (the
// background check, on the CPUs the model leaves free, one at least);
// at-use (the check lazy used to be: each tensor hashed at its first use,
// on every CPU); full (every hash before loading). ns/op is the wall
// time, the latency; cpu-ms/op the process's CPU time per first token,
// which the hashing raises by the same amount in every checking mode.
//
// The request/ group times what a server's first request meets: the
// model loaded and left idle for 100 ms (waiting for requests), then the
// prompt alone.
func BenchmarkFirstToken(b *testing.B) {
	src, err := defaultmodel.Open()
	if err != nil {
		b.Fatal(err)
	}
	plan, err := wquant.Recipe(src, defaultmodel.SHA256, "Q8_0")
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "sealed.gguf")
	if err := wquant.NewQuantizer(src, nil, 0).Write(context.Background(), path, plan, wquant.WriteOptions{Tool: "bench"}); err != nil {
		b.Fatal(err)
	}
	open := func(b *testing.B, mode string, threads int) *model.Model {
		if mode == "at-use" {
			m, err := wquant.OpenModel(path, "off", model.Options{Threads: threads}, nil)
			if err != nil {
				b.Fatal(err)
			}
			man, err := wquant.ReadManifest(m.File())
			if err == nil {
				err = man.CheckMetadata(m.File())
			}
			m.Close()
			if err != nil {
				b.Fatal(err)
			}
			if m, err = model.Open(path, model.Options{Threads: threads, FirstUse: man.Lazy()}); err != nil {
				b.Fatal(err)
			}
			return m
		}
		m, err := wquant.OpenModel(path, mode, model.Options{Threads: threads}, nil)
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
	first := func(b *testing.B, m *model.Model, prompt []int32) {
		s, err := m.NewSession(nil, 512)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Forward(prompt, false); err != nil {
			b.Fatal(err)
		}
	}
	for _, threads := range []int{1, runtime.NumCPU()} {
		for _, n := range []int{16, 256} {
			prompt := make([]int32, n)
			for i := range prompt {
				prompt[i] = int32(100 + 7*i)
			}
			for _, mode := range []string{"off", "lazy", "at-use", "full"} {
				b.Run(fmt.Sprintf("threads-%d/prompt-%d/%s", threads, n, mode), func(b *testing.B) {
					defer cpuMetric(b)()
					for b.Loop() {
						m := open(b, mode, threads)
						if _, err := model.LoadTokenizer(m.File()); err != nil {
							b.Fatal(err)
						}
						first(b, m, prompt)
						m.Close()
					}
				})
			}
			for _, mode := range []string{"off", "lazy"} {
				b.Run(fmt.Sprintf("request/threads-%d/prompt-%d/%s", threads, n, mode), func(b *testing.B) {
					for b.Loop() {
						b.StopTimer()
						m := open(b, mode, threads)
						time.Sleep(100 * time.Millisecond)
						b.StartTimer()
						first(b, m, prompt)
						b.StopTimer()
						m.Close()
						b.StartTimer()
					}
				})
			}
		}
	}
}

// cpuMetric starts counting the process's CPU time; the function it
// returns reports it per op as cpu-ms/op.
func cpuMetric(b *testing.B) func() {
	cpu0, ok := wquant.CPUTime()
	return func() {
		if cpu1, _ := wquant.CPUTime(); ok {
			b.ReportMetric(1000*(cpu1-cpu0).Seconds()/float64(b.N), "cpu-ms/op")
		}
	}
}
