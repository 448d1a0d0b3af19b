package compact

import (
	"context"
	"fmt"
	"math"
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
	a, err := SelfQueries(context.Background(), m, c, prompts, 6, sc, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := SelfQueries(context.Background(), m, c, prompts, 6, sc, 0)
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
	if _, err := SelfQueries(context.Background(), m, c, [][]int32{{1}}, m.Config.Context, sc, 0); err == nil {
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
	got, err := SelfQueries(context.Background(), fm, c, prompts, 5, model.SamplerConfig{}, 0)
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
