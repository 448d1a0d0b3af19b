package compact

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
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

// BenchmarkCompactVsPrefill times, side by side on the same threads, the
// recorded prefill of a 4000-token context of held-out text with the
// embedded model, the self-study reference queries (32 samples of up to
// 24 tokens, the command line's default) and each attention-matching
// method's compaction to 20x (fits and caches), and reports each and
// their times over the prefill's: the target is a compaction no
// longer than the prefill.
func BenchmarkCompactVsPrefill(b *testing.B) {
	m := loadDefault(b)
	tok, err := model.LoadTokenizer(m.File())
	if err != nil {
		b.Fatal(err)
	}
	held := tok.Encode(defaultmodel.HeldOut(), false)
	ids := append([]int32{tok.BOS()}, held[:3999]...)
	for _, meth := range []Method{AMHighest, AMOMPMethod} {
		b.Run(string(meth), func(b *testing.B) {
			for b.Loop() {
				start := time.Now()
				_, c, _, err := Prefill(m, nil, ids, 0)
				if err != nil {
					b.Fatal(err)
				}
				prefill := time.Since(start)
				start = time.Now()
				extra, err := CollectQueries(context.Background(), m, tok, c, ids, QueryOptions{SelfStudy: 32}, 0)
				if err != nil {
					b.Fatal(err)
				}
				queries := time.Since(start)
				c.Extra = extra.For(meth)
				start = time.Now()
				comp, err := Compact(context.Background(), c, Options{Method: meth, Ratio: 20, Window: 16})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := Install(comp, kvcache.F16()); err != nil {
					b.Fatal(err)
				}
				fit := time.Since(start)
				b.ReportMetric(prefill.Seconds(), "prefill-s")
				b.ReportMetric(queries.Seconds(), "queries-s")
				b.ReportMetric(fit.Seconds(), "compact-s")
				b.ReportMetric(fit.Seconds()/prefill.Seconds(), "compact/prefill")
				b.ReportMetric((queries+fit).Seconds()/prefill.Seconds(), "(queries+compact)/prefill")
			}
		})
	}
}
