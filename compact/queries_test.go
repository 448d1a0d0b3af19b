package compact

import (
	"context"
	"math"
	"testing"

	"github.com/turbomem/turbomem/defaultmodel"
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

// TestRepeatQueries: the queries of the rereading equal those that one
// session over context, instruction and context again computes for the
// reread tokens (within float32 rounding: the sessions cut the tokens
// into other batches), whether the rereading fits in one piece or is
// read in chunks after the context.
func TestRepeatQueries(t *testing.T) {
	m := loadDefault(t)
	ids := testIDs(60, 1)
	instr := []int32{17, 23, 31}
	_, c, _, err := Prefill(m, kvcache.F32(), ids, 0)
	if err != nil {
		t.Fatal(err)
	}
	full := append(append(append([]int32(nil), ids...), instr...), ids[1:]...)
	_, ref, _, err := Prefill(m, kvcache.F32(), full, 0)
	if err != nil {
		t.Fatal(err)
	}
	sh := m.CacheShape()
	qd := sh.QHeads * sh.HeadDim
	from := len(ids) + len(instr)
	for _, limit := range []int{0, len(ids) + len(instr) + 25} {
		got, err := RepeatQueries(context.Background(), m, c, ids, instr, true, limit)
		if err != nil {
			t.Fatal(err)
		}
		for l := range got {
			if len(got[l]) != (len(ids)-1)*qd {
				t.Fatalf("limit %d, layer %d: %d query values, want %d tokens' worth", limit, l, len(got[l]), len(ids)-1)
			}
			if limit != 0 {
				continue // chunks see less of the rereading than one session does
			}
			want := ref.Layers[l].Q[from*qd:]
			var worst float64
			for i, w := range want {
				worst = max(worst, math.Abs(float64(got[l][i]-w))/(1+math.Abs(float64(w))))
			}
			if worst > 1e-3 {
				t.Errorf("layer %d: repeat queries differ from one session's by %g", l, worst)
			}
		}
	}
	if _, err := RepeatQueries(context.Background(), m, c, ids, instr, true, len(ids)+len(instr)); err == nil {
		t.Error("no room to reread, accepted")
	}
}

// TestSelfQueries: each prompt gives its own and its written tokens'
// queries; the same seed gives the same queries.
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
}
