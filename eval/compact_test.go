package eval

import (
	"context"
	"math"
	"testing"

	"github.com/turbomem/turbomem/compact"
	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// TestCompactEval runs the harness small: every row is there, the
// uncompacted f16 row agrees with itself (KL 0, top-1 1) and holds the
// f16 bytes, compaction at 4x keeps a quarter of the tokens per head and
// its caches' bytes are what kvcache counts for them, composing with a
// quantized format shrinks them further, and scores are fractions.
func TestCompactEval(t *testing.T) {
	m := loadDefault(t)
	tok, err := model.LoadTokenizer(m.File())
	if err != nil {
		t.Fatal(err)
	}
	held := tok.Encode(defaultmodel.HeldOut()[:20000], false)
	q8, _ := kvcache.Parse("q8_0")
	length := 192
	if testing.Short() { // the pure-Go CI pass: contexts half as long, so a shorter fp16 window
		length = 96
		q8, _ = q8.WithWindow(8)
	}
	o := CompactOptions{
		Methods: []compact.Method{compact.AMHighest, compact.SnapKV}, Ratios: []float64{4},
		KV: q8, Window: 8, Length: length, Depths: 2, Trials: 1, Facts: 2, FactContexts: 1, KLContexts: 1, KLTokens: 12,
		Extra: compact.QueryOptions{SelfStudy: 2, SelfTokens: 6},
	}
	if testing.Short() { // one method, one needle, one fact
		o.Methods = o.Methods[:1]
		o.Depths, o.Facts = 1, 1
	}
	res, err := CompactEval(context.Background(), m, tok, held, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 2+len(o.Methods) {
		t.Fatalf("%d rows, want %d", len(res.Rows), 2+len(o.Methods))
	}
	f16 := res.Rows[0]
	sh := m.CacheShape()
	wantF16, _ := kvcache.F16().BytesAt(o.Length, m.Config.Layers, sh)
	if f16.Method != "none" || f16.KV != "f16" || f16.KL > 1e-9 || f16.Top1 != 1 || f16.Bytes != float64(wantF16) || f16.Reduction != 1 {
		t.Errorf("f16 row %+v", f16)
	}
	if q := res.Rows[1]; q.KV != "q8_0" || !(q.Reduction > 1.2) {
		t.Errorf("q8_0 row %+v", q)
	}
	for _, r := range res.Rows[2:] {
		if r.Kept != float64(o.Length/4) {
			t.Errorf("%s keeps %g tokens per head, want %d", r.Method, r.Kept, o.Length/4)
		}
		kept := make([]int, sh.KVHeads)
		for i := range kept {
			kept[i] = o.Length / 4 // the window is held with the kept tokens
		}
		var want int64
		for l := range m.Config.Layers {
			b, err := q8.CompactedBytesAt(l, kept, 0, sh)
			if err != nil {
				t.Fatal(err)
			}
			want += b
		}
		if r.Bytes != float64(want) || math.Abs(r.Reduction-float64(wantF16)/float64(want)) > 1e-9 {
			t.Errorf("%s: %g bytes (reduction %g), want %d", r.Method, r.Bytes, r.Reduction, want)
		}
		for _, x := range []float64{r.Needle, r.Facts, r.Top1} {
			if !(x >= 0 && x <= 1) {
				t.Errorf("%s: score %g outside [0, 1]", r.Method, x)
			}
		}
		if !(r.KL >= 0) || !(r.Seconds > 0) {
			t.Errorf("%s: KL %g, %g s", r.Method, r.KL, r.Seconds)
		}
	}
}
