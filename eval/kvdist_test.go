package eval

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

func TestRelErr(t *testing.T) {
	for _, tt := range []struct {
		name   string
		x, ref []float32
		want   float64
	}{
		{"equal", []float32{1, -2, 3}, []float32{1, -2, 3}, 0},
		// ‖(0, 1)‖² / ‖(1, 1)‖² = 1/2.
		{"one off", []float32{1, 2}, []float32{1, 1}, 0.5},
		// ‖(−3, −4, 0)‖² / ‖(3, 4, 0)‖² = 25/25.
		{"zero output", []float32{0, 0, 0}, []float32{3, 4, 0}, 1},
		// ‖(0.5, 0, −1, 1)‖² = 2.25 over ‖(1, 2, 2, 0)‖² = 9.
		{"mixed", []float32{1.5, 2, 1, 1}, []float32{1, 2, 2, 0}, 0.25},
		{"both zero", []float32{0, 0}, []float32{0, 0}, 0},
		{"zero reference", []float32{1, 0}, []float32{0, 0}, math.Inf(1)},
	} {
		if got := RelErr(tt.x, tt.ref); got != tt.want {
			t.Errorf("%s: RelErr = %g, want %g", tt.name, got, tt.want)
		}
	}
	// meanRelErr averages the parts: (0.5 + 0)/2.
	if got := meanRelErr([]float32{1, 2, 5, 5}, []float32{1, 1, 5, 5}, 2); got != 0.25 {
		t.Errorf("meanRelErr = %g, want 0.25", got)
	}
}

func loadDefault(t *testing.T) *model.Model {
	t.Helper()
	m, err := defaultmodel.Load(model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func specs(t *testing.T, names ...string) []kvcache.Spec {
	t.Helper()
	var out []kvcache.Spec
	for _, n := range names {
		k, v, _ := strings.Cut(n, ":")
		s, err := kvcache.ParseSpec(k, v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// TestKVDistortion runs the embedded model over held-out text and checks
// the errors against what each format must give.
func TestKVDistortion(t *testing.T) {
	m := loadDefault(t)
	tok, err := model.LoadTokenizer(m.File())
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode(defaultmodel.HeldOut()[:20000], true)
	n := 384
	if testing.Short() {
		n = 192
	}
	names := []string{"f32", "f16", "q8_0", "turbo4", "turbo2.5", "f16:turbo3"}
	res, err := KVDistortion(context.Background(), m, ids, specs(t, names...), KVDistOptions{Ctx: n, Every: 16, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Tokens != n || res.Positions[0] != kvcache.DefaultWindow || res.Positions[1] != kvcache.DefaultWindow+16 || res.Positions[len(res.Positions)-1] >= n {
		t.Errorf("tokens %d, positions %v", res.Tokens, res.Positions)
	}
	if len(res.Rows) != m.Config.Layers*len(names) {
		t.Fatalf("%d rows, want %d", len(res.Rows), m.Config.Layers*len(names))
	}
	for _, r := range res.Rows {
		all := []float64{r.AttnReal, r.AttnRandom, r.KeyReal, r.KeyRandom, r.ValueReal, r.ValueRandom}
		switch r.Format {
		case "f32":
			// The same float32 cache fed the same tokens: bit for bit.
			for _, e := range all {
				if e != 0 {
					t.Errorf("layer %d f32: errors %v, want 0", r.Layer, all)
					break
				}
			}
		case "f16":
			// fp16 rounding (relative 2^-11 per coordinate, ~1e-7 in
			// squared relative error), with margin for softmax amplifying
			// it on sharp attention.
			for _, e := range all {
				if !(e > 0 && e < 1e-5) {
					t.Errorf("layer %d f16: errors %v, want in (0, 1e-5)", r.Layer, all)
					break
				}
			}
		case "f16/turbo3":
			// Keys stay fp16: their part is fp16 rounding alone, far
			// below what 3-bit values cost.
			if !(r.KeyReal < 1e-5 && r.ValueReal > 1e-5 && r.ValueRandom > 1e-5) {
				t.Errorf("layer %d f16/turbo3: %+v", r.Layer, r)
			}
		default:
			for _, e := range all {
				if !(e > 0 && e < 10) {
					t.Errorf("layer %d %s: errors %v, want finite and positive", r.Layer, r.Format, all)
					break
				}
			}
		}
	}
	means := map[string]KVDistRow{}
	for _, r := range res.Means() {
		means[r.Format] = r
	}
	if len(means) != len(names) || means["f32"].Layer != -1 {
		t.Fatalf("means %v", res.Means())
	}
	// More bits, less error: q8_0 (8.5 bits) < turbo4 (4.125) < turbo2.5,
	// averaged over layers, on real and random vectors alike.
	for _, get := range []func(KVDistRow) float64{
		func(r KVDistRow) float64 { return r.AttnReal },
		func(r KVDistRow) float64 { return r.AttnRandom },
	} {
		if a, b, c := get(means["q8_0"]), get(means["turbo4"]), get(means["turbo2.5"]); !(a < b && b < c) {
			t.Errorf("errors q8_0 %g, turbo4 %g, turbo2.5 %g: want increasing", a, b, c)
		}
	}
}

func TestKVDistortionErrors(t *testing.T) {
	m := loadDefault(t)
	ids := make([]int32, 100)
	for _, tt := range []struct {
		name  string
		specs []kvcache.Spec
		o     KVDistOptions
		want  string
	}{
		{"qjl values", specs(t, "f16", "qjl"), KVDistOptions{}, "keys only"},
		{"no position", specs(t, "f16"), KVDistOptions{Ctx: 64}, "no position"},
		{"bad step", specs(t, "f16"), KVDistOptions{Every: -1}, "every"},
	} {
		_, err := KVDistortion(context.Background(), m, ids, tt.specs, tt.o)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.want)
		}
	}
}

// TestRecordKV: recording one layer gives what recording all gives for
// it, and nothing for the others, with the keys' rope; a layer beyond
// the model is refused.
func TestRecordKV(t *testing.T) {
	m := loadDefault(t)
	ids := []int32{1, 50, 60, 70, 80, 90, 100, 110}
	all, err := RecordKV(m, ids, -1)
	if err != nil {
		t.Fatal(err)
	}
	one, err := RecordKV(m, ids, 2)
	if err != nil {
		t.Fatal(err)
	}
	for l := range all {
		if all[l] == nil || all[l].Len() != len(ids) {
			t.Fatalf("layer %d: trace %v", l, all[l])
		}
		if (one[l] != nil) != (l == 2) {
			t.Errorf("layer %d recorded: %v", l, one[l] != nil)
		}
	}
	if !slices.Equal(one[2].K, all[2].K) || !slices.Equal(one[2].V, all[2].V) || !slices.Equal(one[2].Q, all[2].Q) || one[2].Scale != all[2].Scale {
		t.Error("layer 2 alone differs from layer 2 among all")
	}
	if all[2].Shape.Rope == nil {
		t.Error("the trace lacks the keys' rope, which replayed caches need for centred keys")
	}
	if _, err := RecordKV(m, ids, m.Config.Layers); err == nil {
		t.Error("layer beyond the model: no error")
	}
}
