package wquant_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/wquant"
)

// BenchmarkFirstToken measures the first token's latency of the embedded
// model, sealed with a manifest (a copy, its Q8_0 tensors as they are),
// as `turbomem run` meets it: open the file with the check of a
// --verify mode (wquant.OpenModel), load the tokenizer, touch every page
// of the weights (Model.Prefault, as run does), run a prompt of
// 16 or 256 tokens, on 1 thread, 4 and every CPU. Modes: off; lazy (the
// background check on one yielding goroutine per CPU, the output held
// until every tensor has passed: model.Options.Settled); lazy-spare (the
// same on the CPUs the model leaves free, one at least); first-use (the
// check lazy was before: the background on the spare CPUs, each
// tensor's first product waiting for its hash); full (every hash before
// loading). Each iteration runs every mode once (paired): MODE-ms is the
// median wall time, the latency; MODE-cpu-ms the process's CPU time,
// which the hashing raises by about the same amount in every checking
// mode (the first token uses every tensor, so every hash is done by
// then); MODE-% the median of the mode's latency over off's, less 1.
// ns/op is the sum of the modes. For off and lazy, MODE-open-ms,
// MODE-load-ms and MODE-prompt-ms split the latency into the open (with
// the check's start), the tokenizer and page-in, and the prompt (the
// Forward, which for lazy includes waiting for what is left of the
// check); lazy-checked-ms is when the whole check (metadata and every
// tensor) was complete, from the open's start.
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
	open := func(b *testing.B, mode string, threads int, checked func()) *model.Model {
		if mode == "off" || mode == "lazy" || mode == "full" {
			m, err := wquant.OpenModel(path, model.Options{Threads: threads}, wquant.OpenOptions{Verify: mode, Checked: func(error) {
				if checked != nil {
					checked()
				}
			}})
			if err != nil {
				b.Fatal(err)
			}
			return m
		}
		f, err := gguf.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		man, err := wquant.ReadManifest(f)
		if err == nil {
			err = man.CheckMetadata(f)
		}
		if err != nil {
			b.Fatal(err)
		}
		bg := man.Start(f, wquant.BackgroundOptions{Workers: max(runtime.NumCPU()-threads, 1)})
		o := model.Options{Threads: threads, FirstUse: bg.Check, OnClose: func() { bg.Stop(); f.Close() }}
		if mode == "lazy-spare" {
			o.Settled = bg.Settled
		}
		m, err := model.New(f, o)
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
	threads := []int{1}
	for _, t := range []int{4, runtime.NumCPU()} {
		if t > threads[len(threads)-1] {
			threads = append(threads, t)
		}
	}
	for _, threads := range threads {
		for _, n := range []int{16, 256} {
			prompt := make([]int32, n)
			for i := range prompt {
				prompt[i] = int32(100 + 7*i)
			}
			b.Run(fmt.Sprintf("threads-%d/prompt-%d", threads, n), func(b *testing.B) {
				phases := map[string][]float64{}
				paired(b, []string{"off", "lazy", "lazy-spare", "first-use", "full"}, func(mode string) {
					t0 := time.Now()
					checked := make(chan float64, 1)
					m := open(b, mode, threads, func() { checked <- msSince(t0) })
					t1 := time.Now()
					if _, err := model.LoadTokenizer(m.File()); err != nil {
						b.Fatal(err)
					}
					m.Prefault(nil)
					t2 := time.Now()
					first(b, m, prompt)
					t3 := time.Now()
					m.Close()
					if mode == "off" || mode == "lazy" {
						for _, ph := range []struct {
							name     string
							from, to time.Time
						}{{"open", t0, t1}, {"load", t1, t2}, {"prompt", t2, t3}} {
							phases[mode+"-"+ph.name+"-ms"] = append(phases[mode+"-"+ph.name+"-ms"], float64(ph.to.Sub(ph.from).Microseconds())/1000)
						}
					}
					if mode == "lazy" {
						phases["lazy-checked-ms"] = append(phases["lazy-checked-ms"], <-checked)
					}
				}, nil)
				for name, x := range phases {
					b.ReportMetric(median(x), name)
				}
			})
			b.Run(fmt.Sprintf("request/threads-%d/prompt-%d", threads, n), func(b *testing.B) {
				var m *model.Model
				paired(b, []string{"off", "lazy"}, func(string) { first(b, m, prompt) }, func(mode string) func() {
					m = open(b, mode, threads, nil)
					m.Prefault(nil)
					time.Sleep(100 * time.Millisecond)
					return func() { m.Close() }
				})
			})
		}
	}
}

// paired runs each mode once per iteration, in an order that rotates,
// timing run(mode) (setup, if set, runs untimed before it and returns
// what runs untimed after), and reports each mode's median wall time
// (MODE-ms) and CPU time of the process (MODE-cpu-ms), and the median
// over iterations of each mode's wall time over the first mode's, as a
// percentage over it (MODE-%): on a machine shared with other work,
// ratios within an iteration drift less than times across a run.
func paired(b *testing.B, modes []string, run func(mode string), setup func(mode string) func()) {
	wall := make([][]float64, len(modes))
	cpu := make([][]float64, len(modes))
	over := make([][]float64, len(modes))
	it := 0
	for b.Loop() {
		got := make([]float64, len(modes))
		for k := range modes {
			i := (k + it) % len(modes)
			done := func() {}
			if setup != nil {
				b.StopTimer()
				done = setup(modes[i])
				b.StartTimer()
			}
			c0, _ := wquant.CPUTime()
			t0 := time.Now()
			run(modes[i])
			got[i] = float64(time.Since(t0).Microseconds()) / 1000
			c1, _ := wquant.CPUTime()
			if setup != nil {
				b.StopTimer()
				done()
				b.StartTimer()
			}
			wall[i] = append(wall[i], got[i])
			cpu[i] = append(cpu[i], 1000*(c1-c0).Seconds())
		}
		for i := 1; i < len(modes); i++ {
			over[i] = append(over[i], 100*(got[i]/got[0]-1))
		}
		it++
	}
	for i, mode := range modes {
		b.ReportMetric(median(wall[i]), mode+"-ms")
		b.ReportMetric(median(cpu[i]), mode+"-cpu-ms")
		if i > 0 {
			b.ReportMetric(median(over[i]), mode+"-%")
		}
	}
}

// msSince returns the milliseconds since t.
func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

// median returns the median of x (which it sorts).
func median(x []float64) float64 {
	slices.Sort(x)
	if len(x)%2 == 1 {
		return x[len(x)/2]
	}
	return (x[len(x)/2-1] + x[len(x)/2]) / 2
}
