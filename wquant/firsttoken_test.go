package wquant_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/wquant"
)

// BenchmarkFirstToken measures the first token's latency of the embedded
// model, sealed with a manifest (a copy, its Q8_0 tensors as they are),
// as `turbomem run` meets it: open the file with the check of a --verify
// mode (wquant.OpenModel), load the tokenizer, touch every page of the
// weights (Model.Prefault, as run does), run a prompt of 16 or 256
// tokens, on 1 thread, 4 and every CPU. Modes: off; lazy (the background
// check on one yielding goroutine per four CPUs, LazyWorkers, the output
// held until every tensor has passed: model.Options.Settled); lazy-spare
// (the same on the CPUs the model leaves free, one at least); first-use
// (the check lazy was before: the background on the spare CPUs, each
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
	path := sealedModel(b)
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
	for _, threads := range benchThreads() {
		for _, n := range []int{16, 256} {
			prompt := benchPrompt(n)
			b.Run(fmt.Sprintf("threads-%d/prompt-%d", threads, n), func(b *testing.B) {
				phases := map[string][]float64{}
				paired(b, []string{"off", "lazy", "lazy-spare", "first-use", "full"}, func(mode string) {
					var checked chan float64
					if mode == "lazy" {
						checked = make(chan float64, 1)
					}
					split := coldFirst(b, func(t0 time.Time) *model.Model {
						return open(b, mode, threads, func() {
							if checked != nil {
								checked <- msSince(t0)
							}
						})
					}, prompt)
					if mode == "off" || mode == "lazy" {
						split.add(phases, mode)
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

// BenchmarkFirstTokenLazy is BenchmarkFirstToken's cold first token of a
// 16-token prompt (open, tokenizer, page-in, prompt) for off and lazy,
// for an A/B of lazy's cost on a machine with CPUs to spare. Every run
// is preceded, untimed, by a garbage collection (runtime.GC), as a fresh
// process has no earlier iteration's garbage to collect. It reports, per
// mode, what BenchmarkFirstToken reports for off and lazy: MODE-ms,
// MODE-cpu-ms, MODE-% (over off), the split MODE-open-ms, MODE-load-ms
// and MODE-prompt-ms, and for the lazy modes MODE-checked-ms, when the
// whole check was complete, from the open's start.
//
// Two more modes time lazy with the checked cache
// (OpenOptions.CheckedCache), apart from lazy's own cost: lazy-cache-first
// is a file's first open (an empty cache: the whole check, then its
// entry written; Close waits for that), lazy-cache-hit a later one (the
// file remembered: no hashing). The file is left alone for the cache's
// racy margin (2 s) before the first iteration.
//
// The flag -lazymodes (comma-separated, off first) runs only the modes it
// lists, for more iterations of an A/B in the same time.
func BenchmarkFirstTokenLazy(b *testing.B) {
	path := sealedModel(b)
	modes := []string{"off", "lazy", "lazy-cache-first", "lazy-cache-hit"}
	if *lazyModes != "" {
		chosen := strings.Split(*lazyModes, ",")
		for _, m := range chosen {
			if !slices.Contains(modes, m) {
				b.Fatalf("-lazymodes: %q: want some of %q", m, modes)
			}
		}
		if chosen[0] != "off" {
			b.Fatalf("-lazymodes %q: want off first (the modes are timed against it)", *lazyModes)
		}
		modes = chosen
	}
	caches := b.TempDir()
	hit := filepath.Join(caches, "hit")
	if slices.Contains(modes, "lazy-cache-hit") {
		time.Sleep(2 * time.Second) // a file changed within 2 s of its check is not remembered
		m, err := wquant.OpenModel(path, model.Options{}, wquant.OpenOptions{Verify: "lazy", CheckedCache: hit})
		if err != nil {
			b.Fatal(err)
		}
		first(b, m, benchPrompt(1))
		m.Close()
		if entries, _ := os.ReadDir(hit); len(entries) != 1 {
			b.Fatalf("the checked cache holds %d entries after a check, want 1", len(entries))
		}
	}
	runs := 0
	prompt := benchPrompt(16)
	for _, threads := range benchThreads() {
		b.Run(fmt.Sprintf("threads-%d/prompt-16", threads), func(b *testing.B) {
			phases := map[string][]float64{}
			paired(b, modes, func(mode string) {
				verify, cache, _ := strings.Cut(mode, "-")
				var checked chan float64
				coldFirst(b, func(t0 time.Time) *model.Model {
					v := wquant.OpenOptions{Verify: verify}
					switch cache {
					case "cache-first":
						runs++
						v.CheckedCache = filepath.Join(caches, fmt.Sprint(runs))
					case "cache-hit":
						v.CheckedCache = hit
					}
					if verify == "lazy" {
						checked = make(chan float64, 1)
						v.Checked = func(error) { checked <- msSince(t0) } // as turbomem run has
					}
					m, err := wquant.OpenModel(path, model.Options{Threads: threads}, v)
					if err != nil {
						b.Fatal(err)
					}
					return m
				}, prompt).add(phases, mode)
				if checked != nil {
					phases[mode+"-checked-ms"] = append(phases[mode+"-checked-ms"], <-checked)
				}
			}, func(string) func() {
				runtime.GC()
				return func() {}
			})
			for name, x := range phases {
				b.ReportMetric(median(x), name)
			}
		})
	}
}

// lazyModes is BenchmarkFirstTokenLazy's -lazymodes.
var lazyModes = flag.String("lazymodes", "", "BenchmarkFirstTokenLazy's modes to run, comma-separated, off first (default: all)")

// sealedModel writes the embedded model sealed with a manifest (a copy,
// its Q8_0 tensors as they are) into a temporary directory and returns
// its path.
func sealedModel(b *testing.B) string {
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
	return path
}

// benchThreads returns the thread counts the first-token benchmarks run
// on: 1, 4 and every CPU, those the machine has.
func benchThreads() []int {
	threads := []int{1}
	for _, t := range []int{4, runtime.NumCPU()} {
		if t > threads[len(threads)-1] {
			threads = append(threads, t)
		}
	}
	return threads
}

// benchPrompt returns a prompt of n tokens.
func benchPrompt(n int) []int32 {
	prompt := make([]int32, n)
	for i := range prompt {
		prompt[i] = int32(100 + 7*i)
	}
	return prompt
}

// first runs prompt in a new session of m.
func first(b *testing.B, m *model.Model, prompt []int32) {
	s, err := m.NewSession(nil, 512)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Forward(prompt, false); err != nil {
		b.Fatal(err)
	}
}

// split is a cold first token's time in milliseconds: the open (with the
// check's start), the load (tokenizer, page-in) and the prompt.
type split struct{ open, load, prompt float64 }

// coldFirst opens a model with open (given the time it is called), loads
// its tokenizer, pages its weights in (Model.Prefault, as `turbomem run`
// does), runs prompt, closes the model and returns the split.
func coldFirst(b *testing.B, open func(t0 time.Time) *model.Model, prompt []int32) split {
	t0 := time.Now()
	m := open(t0)
	t1 := time.Now()
	if _, err := model.LoadTokenizer(m.File()); err != nil {
		b.Fatal(err)
	}
	m.Prefault(nil)
	t2 := time.Now()
	first(b, m, prompt)
	t3 := time.Now()
	m.Close()
	ms := func(from, to time.Time) float64 { return float64(to.Sub(from).Microseconds()) / 1000 }
	return split{ms(t0, t1), ms(t1, t2), ms(t2, t3)}
}

// add appends s to phases as MODE-open-ms, MODE-load-ms and
// MODE-prompt-ms.
func (s split) add(phases map[string][]float64, mode string) {
	for _, ph := range []struct {
		name string
		ms   float64
	}{{"open", s.open}, {"load", s.load}, {"prompt", s.prompt}} {
		phases[mode+"-"+ph.name+"-ms"] = append(phases[mode+"-"+ph.name+"-ms"], ph.ms)
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

// BenchmarkLazyOpen times what --verify=lazy adds to the loader's own
// path before the prompt, on the embedded model sealed: manifest-ms is
// reading the manifest as lazy does (its own checksum compared later, with
// the metadata), start-ms Manifest.Start (with the metadata; its hashers
// stopped untimed right after), new-ms model.New without a check and
// new-checked-ms with the vectors' first-use checks (Background.Check,
// the background stopped first, so that the loader hashes every vector
// itself, as it does when it reaches one before the hashers).
func BenchmarkLazyOpen(b *testing.B) {
	f, err := gguf.Open(sealedModel(b))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var read, start, plain, checked time.Duration
	for b.Loop() {
		t0 := time.Now()
		m, err := wquant.ReadManifestUnchecked(f)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		bg := m.Start(f, wquant.BackgroundOptions{Workers: 1, Metadata: true})
		read += t1.Sub(t0)
		start += time.Since(t1)
		b.StopTimer()
		bg.Stop()
		b.StartTimer()
		for _, check := range []bool{false, true} {
			o := model.Options{Threads: 1}
			if check {
				o.FirstUse = bg.Check
			}
			t0 := time.Now()
			mod, err := model.New(f, o)
			if err != nil {
				b.Fatal(err)
			}
			if check {
				checked += time.Since(t0)
			} else {
				plain += time.Since(t0)
			}
			mod.Close()
		}
	}
	for name, d := range map[string]time.Duration{"manifest-ms": read, "start-ms": start, "new-ms": plain, "new-checked-ms": checked} {
		b.ReportMetric(float64(d.Microseconds())/1000/float64(b.N), name)
	}
}
