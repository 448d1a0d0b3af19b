package compact

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tensor"
)

// BenchmarkCompactHead compacts one KV head of a 4096-token context with
// 2048 reference queries at head dimension 128 (the default model's
// shape) by 20x and 50x.
func BenchmarkCompactHead(b *testing.B) {
	r := rand.New(rand.NewPCG(9, 10))
	const T, d, n = 4096, 128, 2048
	blk := Block{Dim: d, Keys: gaussian(r, T*d, 1), Values: gaussian(r, T*d, 1), Queries: gaussian(r, n*d, 1.5), Scale: 0.0884}
	for _, ratio := range []int{20, 50} {
		for _, f := range []Fit{AM(T / ratio), AMOMP(T / ratio)} {
			b.Run(fmt.Sprintf("%s/%dx", f.Select, ratio), func(b *testing.B) {
				for b.Loop() {
					if _, err := CompactHead(blk, f); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkCompactVsPrefill times, side by side on the same threads (1
// and all), the recorded prefill of a 4000-token context of held-out
// text with the embedded model, the self-study reference queries (32
// samples of up to 24 tokens, the command line's default) and each
// attention-matching method's compaction to 20x (fits and caches), and
// reports each and their times over the prefill's: the target is
// a compaction no longer than the prefill. Each phase's CPU time (the
// process's, Linux) is reported too (-cpu-s): on a shared machine, time
// spent waiting for a CPU is left out.
func BenchmarkCompactVsPrefill(b *testing.B) {
	for _, threads := range []int{1, runtime.NumCPU()} {
		m, err := defaultmodel.Load(model.Options{Threads: threads})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		tok, err := model.LoadTokenizer(m.File())
		if err != nil {
			b.Fatal(err)
		}
		held := tok.Encode(defaultmodel.HeldOut(), false)
		ids := append([]int32{tok.BOS()}, held[:3999]...)
		for _, meth := range []Method{AMHighest, AMOMPMethod} {
			b.Run(fmt.Sprintf("%s/threads=%d", meth, threads), func(b *testing.B) {
				for b.Loop() {
					var wall, cpu [3]float64
					phase := func(i int, f func() error) {
						w, c := time.Now(), processCPU()
						if err := f(); err != nil {
							b.Fatal(err)
						}
						wall[i], cpu[i] = time.Since(w).Seconds(), processCPU()-c
					}
					var c Context
					var extra Extra
					phase(0, func() (err error) { _, c, _, err = Prefill(m, nil, ids, 0); return err })
					phase(1, func() (err error) {
						extra, err = CollectQueries(context.Background(), m, tok, c, ids, QueryOptions{SelfStudy: 32}, 0)
						return err
					})
					c.Extra = extra.For(meth)
					phase(2, func() error {
						comp, err := Compact(context.Background(), c, Options{Method: meth, Ratio: 20, Window: 16, Workers: threads})
						if err == nil {
							_, err = Install(comp, kvcache.F16())
						}
						return err
					})
					for i, name := range []string{"prefill", "queries", "compact"} {
						b.ReportMetric(wall[i], name+"-s")
						if cpu[i] > 0 {
							b.ReportMetric(cpu[i], name+"-cpu-s")
						}
					}
					b.ReportMetric(wall[2]/wall[0], "compact/prefill")
					b.ReportMetric((wall[1]+wall[2])/wall[0], "(queries+compact)/prefill")
					if cpu[0] > 0 {
						b.ReportMetric((cpu[1]+cpu[2])/cpu[0], "cpu:(queries+compact)/prefill")
					}
				}
			})
		}
	}
}

// BenchmarkFitHead compacts one KV head of a 4096-token context with
// 2048 reference queries at head dimension 128 to 758 keys (the embedded
// model's largest measured budget at 20x, 4x the others) on 1 and 2
// threads, and reports the CPU time (-cpu-s, Linux) with the wall.
func BenchmarkFitHead(b *testing.B) {
	r := rand.New(rand.NewPCG(9, 10))
	const T, d, n = 4096, 128, 2048
	blk := Block{Dim: d, Keys: gaussian(r, T*d, 1), Values: gaussian(r, T*d, 1), Queries: gaussian(r, n*d, 1.5), Scale: 0.0884}
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("keys=758/threads=%d", threads), func(b *testing.B) {
			f := AM(758)
			f.Threads = threads
			c := processCPU()
			for b.Loop() {
				if _, err := CompactHead(blk, f); err != nil {
					b.Fatal(err)
				}
			}
			if c := processCPU() - c; c > 0 {
				b.ReportMetric(c/float64(b.N), "cpu-s/op")
			}
		})
	}
}

// BenchmarkCholeskySolve solves the normal equations of a 758-key fit
// (G = XᵀX of 2048 rows of exp-scores) for 1 and 128 right-hand sides
// (the mass fit and the values' columns) by gonum's mat.Cholesky and by
// choleskySolve on 1 and 2 threads, side by side.
func BenchmarkCholeskySolve(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	const t, n = 758, 2048
	xt := make([]float64, t*n)
	for i := range xt {
		xt[i] = math.Exp(2 * r.NormFloat64())
	}
	g := (&normal{t: t, n: n, xt: xt}).gram()
	for _, c := range []int{1, 128} {
		rhs := gaussian(r, t*c, 1)
		y := make([]float64, len(rhs))
		for i, v := range rhs {
			y[i] = float64(v)
		}
		for _, threads := range []int{1, 2} {
			for _, impl := range []string{"gonum", "blocked"} {
				if impl == "gonum" && threads > 1 {
					continue
				}
				b.Run(fmt.Sprintf("c=%d/%s/threads=%d", c, impl, threads), func(b *testing.B) {
					var pool *tensor.Pool
					if threads > 1 {
						pool = tensor.NewPool(threads)
						defer pool.Close()
					}
					cpu := processCPU()
					for b.Loop() {
						var x []float64
						if impl == "gonum" {
							x = gonumCholeskySolve(g, y, t, c)
						} else {
							x = choleskySolve(g, y, t, c, 0, math.Inf(1), pool)
						}
						if x == nil {
							b.Fatal("no solution")
						}
					}
					if c := processCPU() - cpu; c > 0 {
						b.ReportMetric(c/float64(b.N), "cpu-s/op")
					}
				})
			}
		}
	}
}
