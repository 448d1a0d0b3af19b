package compact

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/internal/tinymodel"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

func loadDefault(t testing.TB) *model.Model {
	t.Helper()
	m, err := defaultmodel.Load(model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func testIDs(n, salt int) []int32 {
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(5 + (salt+29*i)%3000)
	}
	ids[0] = 0 // BOS
	return ids
}

// floatModel returns the tiny random model with float32 weights, whose
// products do not quantize activations: a token's results do not depend
// on the rows processed beside it (beyond float rounding), so sessions
// that batch tokens differently can be compared closely.
func floatModel(t testing.TB) *model.Model {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := tinymodel.Write(path, tinymodel.Options{}); err != nil {
		t.Fatal(err)
	}
	m, err := model.Open(path, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// recordSession returns the queries one f16 session records reading
// tokens, its first skip positions' left out, per layer.
func recordSession(t testing.TB, m *model.Model, tokens []int32, skip int) [][]float32 {
	t.Helper()
	_, c, _, err := Prefill(m, nil, tokens, 0)
	if err != nil {
		t.Fatal(err)
	}
	sh := m.CacheShape()
	qd := sh.QHeads * sh.HeadDim
	out := make([][]float32, len(c.Layers))
	for l, tr := range c.Layers {
		out[l] = tr.Q[skip*qd:]
	}
	return out
}

// closeQueries fails unless got and want agree within tol relative.
func closeQueries(t testing.TB, what string, got, want [][]float32, tol float64) {
	t.Helper()
	for l := range want {
		if len(got[l]) != len(want[l]) {
			t.Fatalf("%s, layer %d: %d query values, want %d", what, l, len(got[l]), len(want[l]))
		}
		var worst float64
		for i, w := range want[l] {
			worst = max(worst, math.Abs(float64(got[l][i]-w))/(1+math.Abs(float64(w))))
		}
		if worst > tol {
			t.Errorf("%s, layer %d: queries differ from one session's by %g", what, l, worst)
		}
	}
}

// TestRepeatQueries: the queries of the rereading (the chunks read after
// a shared copy of the context, as one batch) equal those that one
// session over context, instruction and the chunk computes for the chunk
// (float weights: within float32 rounding), whether the rereading fits
// in one piece or is read in chunks.
func TestRepeatQueries(t *testing.T) {
	m := floatModel(t)
	ids := testIDs(60, 1)
	for i := range ids {
		ids[i] %= 500
	}
	instr := []int32{17, 23, 31}
	_, c, _, err := Prefill(m, kvcache.F32(), ids, 0)
	if err != nil {
		t.Fatal(err)
	}
	from := len(ids) + len(instr)
	for _, chunk := range []int{len(ids) - 1, 25} {
		got, err := RepeatQueries(context.Background(), m, c, ids, instr, true, from+chunk)
		if err != nil {
			t.Fatal(err)
		}
		text := ids[1:]
		want := make([][]float32, len(got))
		for start := 0; start < len(text); start += chunk {
			part := text[start:min(start+chunk, len(text))]
			for l, q := range recordSession(t, m, slices.Concat(ids, instr, part), from) {
				want[l] = append(want[l], q...)
			}
		}
		closeQueries(t, fmt.Sprintf("chunks of %d", chunk), got, want, 1e-4)
	}
	if _, err := RepeatQueries(context.Background(), m, c, ids, instr, true, len(ids)+len(instr)); err == nil {
		t.Error("no room to reread, accepted")
	}
}

// TestSelfQueries: each prompt gives its own and its written tokens'
// queries; the same seed gives the same queries; written greedily, they
// are those of one session reading context, prompt and what it wrote
// (the prompts written together as one batch change nothing beyond
// float32 rounding).
func TestSelfQueries(t *testing.T) {
	m := loadDefault(t)
	ids := testIDs(50, 2)
	_, c, _, err := Prefill(m, nil, ids, 0)
	if err != nil {
		t.Fatal(err)
	}
	prompts := [][]int32{{40, 41}, {50}}
	sc := model.SamplerConfig{Temperature: 1, Seed: 3}
	a, err := SelfQueries(context.Background(), m, c, prompts, 6, sc, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := SelfQueries(context.Background(), m, c, prompts, 6, sc, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	sh := m.CacheShape()
	want := (2 + 6 + 1 + 6) * sh.QHeads * sh.HeadDim
	for l := range a {
		if len(a[l]) != want {
			t.Fatalf("layer %d: %d query values, want %d", l, len(a[l]), want)
		}
		for i := range a[l] {
			if a[l][i] != b[l][i] {
				t.Fatalf("layer %d: the same seed gave other queries", l)
			}
		}
	}
	if _, err := SelfQueries(context.Background(), m, c, [][]int32{{1}}, m.Config.Context, sc, nil, 0); err == nil {
		t.Error("a self-study beyond the model's context, accepted")
	}

	fm := floatModel(t)
	ids = ids[:40]
	for i := range ids {
		ids[i] %= 500
	}
	_, c, _, err = Prefill(fm, kvcache.F32(), ids, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := SelfQueries(context.Background(), fm, c, prompts, 5, model.SamplerConfig{}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	ref := make([][]float32, len(got))
	for _, p := range prompts {
		s, err := fm.NewSession(kvcache.F16(), 0)
		if err != nil {
			t.Fatal(err)
		}
		seq := slices.Concat(ids, p)
		logits, err := s.Forward(seq, false)
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			next := int32(slices.Index(logits, slices.Max(logits)))
			seq = append(seq, next)
			if logits, err = s.Forward([]int32{next}, false); err != nil {
				t.Fatal(err)
			}
		}
		for l, q := range recordSession(t, fm, seq, len(ids)) {
			ref[l] = append(ref[l], q...)
		}
	}
	closeQueries(t, "greedy self-study", got, ref, 1e-4)
}

// TestSelfQueriesShared: samples of a group written as one session
// (split into copies as they draw apart) give the queries of every sample
// written in a session of its own: greedy, with groups that never split
// (the random model at temperature 1 gives each group's samples one
// token), and with groups that split over the first three steps
// (temperatures 20 and 30), stop tokens or not (float weights: within
// float32 rounding, the same draws).
func TestSelfQueriesShared(t *testing.T) {
	fm := floatModel(t)
	ids := testIDs(80, 6)
	for i := range ids {
		ids[i] %= 500
	}
	_, c, _, err := Prefill(fm, kvcache.F32(), ids, 0)
	if err != nil {
		t.Fatal(err)
	}
	prompts := [][]int32{{40, 41}, {40, 41}, {50}, {40, 41}, {50}, {40, 41}, {40, 41}, {60, 61, 62}}
	for _, x := range []struct {
		sc   model.SamplerConfig
		stop func(int32) bool
	}{
		{model.SamplerConfig{}, nil},
		{model.SamplerConfig{Temperature: 1, Seed: 1}, nil},
		{model.SamplerConfig{Temperature: 20, Seed: 1}, nil},
		{model.SamplerConfig{Temperature: 30, Seed: 4}, nil},
		{model.SamplerConfig{Temperature: 30, Seed: 5}, func(t int32) bool { return t%3 == 0 }},
	} {
		ref, err := selfQueries(context.Background(), fm, c, prompts, 7, x.sc, x.stop, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		got, err := SelfQueries(context.Background(), fm, c, prompts, 7, x.sc, x.stop, 0)
		if err != nil {
			t.Fatal(err)
		}
		closeQueries(t, fmt.Sprintf("T=%g seed %d, stop %t", x.sc.Temperature, x.sc.Seed, x.stop != nil), got, ref, 1e-4)
	}
}

// TestSystematic: systematic sampling of g draws gives each token
// ⌊g·p⌋ or ⌈g·p⌉ of them, with p the softmax of the logits over the
// temperature (closed form), g·p on average, and each draw alone (the
// first after the shuffle) follows p.
func TestSystematic(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	probs := []float64{0.5, 0.3, 0.12, 0.05, 0.03}
	logits := make([]float32, len(probs))
	for j, p := range probs {
		logits[j] = float32(math.Log(p)) + 7 // a shift changes nothing
	}
	for _, temp := range []float64{1, 2} {
		p := make([]float64, len(probs))
		var sum float64
		for j, q := range probs {
			p[j] = math.Pow(q, 1/temp)
			sum += p[j]
		}
		for j := range p {
			p[j] /= sum
		}
		for _, g := range []int{1, 7, 16} {
			const runs = 20000
			mean := make([]float64, len(p))
			first := make([]float64, len(p))
			for range runs {
				count := make([]int, len(p))
				drawn := systematic(logits, temp, g, r, new([]float32))
				if len(drawn) != g {
					t.Fatalf("%d draws, want %d", len(drawn), g)
				}
				for _, tok := range drawn {
					count[tok]++
				}
				first[drawn[0]]++
				for j, c := range count {
					if lo := math.Floor(float64(g)*p[j] + 1e-9); float64(c) < lo || float64(c) > math.Ceil(float64(g)*p[j]-1e-9) {
						t.Fatalf("T=%g g=%d: token %d drawn %d times, want ⌊%g⌋ or ⌈%g⌉", temp, g, j, c, float64(g)*p[j], float64(g)*p[j])
					}
					mean[j] += float64(c) / runs
				}
			}
			for j := range p {
				sd := math.Sqrt(p[j] * (1 - p[j]) / runs)
				if math.Abs(mean[j]-float64(g)*p[j]) > 5*sd*float64(g) || math.Abs(first[j]/runs-p[j]) > 5*sd {
					t.Errorf("T=%g g=%d: token %d drawn %g times on average (first draw %g), want %g (%g)", temp, g, j, mean[j], first[j]/runs, float64(g)*p[j], p[j])
				}
			}
		}
	}
}

// TestSelfQueriesStop: a sample ends after a token for which stop is
// true, that token's query kept: with every token a stop, each prompt
// gives its own queries and one written token's.
func TestSelfQueriesStop(t *testing.T) {
	fm := floatModel(t)
	ids := testIDs(30, 4)
	for i := range ids {
		ids[i] %= 500
	}
	_, c, _, err := Prefill(fm, kvcache.F32(), ids, 0)
	if err != nil {
		t.Fatal(err)
	}
	prompts := [][]int32{{40, 41}, {40, 41}, {50}}
	sh := fm.CacheShape()
	for _, x := range []struct {
		name string
		sc   model.SamplerConfig
		stop func(int32) bool
		want int
	}{
		{"greedy, no stop", model.SamplerConfig{}, nil, 2 + 5 + 2 + 5 + 1 + 5},
		{"greedy, every token a stop", model.SamplerConfig{}, func(int32) bool { return true }, 2 + 1 + 2 + 1 + 1 + 1},
		{"sampled, every token a stop", model.SamplerConfig{Temperature: 1, Seed: 2}, func(int32) bool { return true }, 2 + 1 + 2 + 1 + 1 + 1},
	} {
		got, err := SelfQueries(context.Background(), fm, c, prompts, 5, x.sc, x.stop, 0)
		if err != nil {
			t.Fatal(err)
		}
		for l := range got {
			if len(got[l]) != x.want*sh.QHeads*sh.HeadDim {
				t.Fatalf("%s, layer %d: %d queries, want %d", x.name, l, len(got[l])/(sh.QHeads*sh.HeadDim), x.want)
			}
		}
	}
}

// TestSelfQueriesThreads: self-study samples written as one batch of
// forks of the shared context give the same queries on a pool of several
// threads as on one (float weights, greedy: within float32 rounding).
// The forks share their context's attention scratch, so a batch step
// that attended them side by side raced on it (and once stopped with an
// index out of range); they must be attended one after another.
func TestSelfQueriesThreads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := tinymodel.Write(path, tinymodel.Options{}); err != nil {
		t.Fatal(err)
	}
	ids := testIDs(200, 5)
	for i := range ids {
		ids[i] %= 500
	}
	prompts := [][]int32{{40, 41}, {50}, {60, 61, 62}, {70}, {40, 41}, {80}}
	var ref [][]float32
	for _, threads := range []int{1, 4, 7} {
		m, err := model.Open(path, model.Options{Threads: threads})
		if err != nil {
			t.Fatal(err)
		}
		_, c, _, err := Prefill(m, kvcache.F32(), ids, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := SelfQueries(context.Background(), m, c, prompts, 12, model.SamplerConfig{}, nil, 0)
		m.Close()
		if err != nil {
			t.Fatal(err)
		}
		if ref == nil {
			ref = got
			continue
		}
		closeQueries(t, fmt.Sprintf("%d threads", threads), got, ref, 1e-4)
	}
}
