package wquant

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tensor"
)

// TestAllocateBruteForce: on the tiny model's matrices (of three sizes),
// with random losses, Allocate's choice fits each budget and is the best
// of all 4⁶ choices (each loss as Losses weighs it) up to the
// rounding of costs.
func TestAllocateBruteForce(t *testing.T) {
	src := openGGUF(t, tinyModel(t, false))
	names := []string{"token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.ffn_down.weight", "blk.1.attn_v.weight", "blk.1.ffn_up.weight"}
	types := []tensor.DType{tensor.Q8_0, tensor.Q4_K, tensor.Q2_K}
	r := rand.New(rand.NewPCG(1, 2))
	s := Sensitivity{Tensors: names, Types: types}
	for range names {
		// Coarser types tend to cost more, not always.
		base := r.Float64()
		s.Loss = append(s.Loss, []float64{base * 0.01 * r.Float64(), base * (0.1 + 0.3*r.Float64()), base * (0.2 + r.Float64())})
	}
	// Sizes of each option (F32 kept, then the types) and the rest.
	var fixed int64
	size := map[string][]int64{}
	for _, ti := range src.Tensors {
		i := indexOf(names, ti.Name)
		if i < 0 {
			fixed += ti.Size
			continue
		}
		size[ti.Name] = append(size[ti.Name], ti.Size)
		for _, typ := range types {
			c, _ := choice(ti, typ, 0)
			size[ti.Name] = append(size[ti.Name], c.Bytes)
		}
	}
	var all, least int64 = fixed, fixed
	for _, n := range names {
		all += size[n][0]
		least += size[n][3]
	}
	for _, budget := range []int64{least, least + 40000, least + (all-least)/3, least + (all-least)/2, all - 1, all} {
		plan, err := Allocate(src, testSource, s, budget)
		if err != nil {
			t.Fatal(err)
		}
		if plan.Bytes() > budget {
			t.Errorf("budget %d: plan has %d bytes", budget, plan.Bytes())
		}
		// Costs are rounded up to 1/2²⁰ of the budget left after the
		// fixed tensors, so the choice is at least as good as the best
		// within one such step per tensor less, and no better than the
		// best within the budget.
		losses := s.Losses()
		bestWithin := func(b int64) float64 {
			best := math.Inf(1)
			for code := range 1 << (2 * len(names)) {
				bytes, loss := fixed, 0.0
				for i, n := range names {
					o := code >> (2 * i) & 3
					bytes += size[n][o]
					if o > 0 {
						loss += losses[i][o-1]
					}
				}
				if bytes <= b {
					best = math.Min(best, loss)
				}
			}
			return best
		}
		step := int64(math.Ceil(float64(budget-fixed) / allocSteps))
		lo, hi := bestWithin(budget), bestWithin(budget-int64(len(names))*step)
		if plan.Predicted < lo-1e-12 || plan.Predicted > hi+1e-12 {
			t.Errorf("budget %d: predicted %g, brute force %g within the budget, %g within %d bytes less", budget, plan.Predicted, lo, hi, int64(len(names))*step)
		}
		var sum float64
		for _, c := range plan.Tensors {
			sum += c.Loss
		}
		if math.Abs(sum-plan.Predicted) > 1e-12 {
			t.Errorf("budget %d: losses sum to %g, predicted %g", budget, sum, plan.Predicted)
		}
	}
	if _, err := Allocate(src, testSource, s, least-1); err == nil || !strings.Contains(err.Error(), "below the smallest choice") {
		t.Errorf("budget below the least: %v", err)
	}
	bad := s
	bad.Tensors = append([]string{"output_norm.weight"}, names[1:]...)
	if _, err := Allocate(src, testSource, bad, all); err == nil {
		t.Error("a norm in the sensitivity: no error")
	}
	bad = s
	bad.Loss = s.Loss[:2]
	if _, err := Allocate(src, testSource, bad, all); err == nil {
		t.Error("losses for 2 of 6 tensors: no error")
	}
}

// TestFloors: losses made as f + c·4^−bits (what Floors assumes) give
// back f; the clamps hold where the losses do not follow that law (level
// finest losses, a second loss below the first, a first loss smaller
// than the weights' part the two imply); the source's own type (−1) is
// passed over; one measured type has no floor.
func TestFloors(t *testing.T) {
	types := []tensor.DType{tensor.Q8_0, tensor.Q6_K, tensor.Q5_K, tensor.Q4_K, tensor.Q2_K}
	law := func(f, c float64) []float64 {
		row := make([]float64, len(types))
		for j, typ := range types {
			row[j] = f + c*math.Pow(4, -typ.BitsPerWeight())
		}
		return row
	}
	skip := func(row []float64, j int) []float64 { row[j] = -1; return row }
	cases := []struct {
		name string
		row  []float64
		want float64
	}{
		{"law", law(3e-4, 20), 3e-4},
		{"law, no floor", law(0, 20), 0},
		{"law, finest type not measured", skip(law(5e-4, 2), 0), 5e-4},
		{"level finest losses", []float64{7e-4, 7e-4, 8e-4, 9e-4, 2e-3}, 7e-4},
		{"second below the first", []float64{7e-4, 6e-4, 8e-4, 9e-4, 2e-3}, 7e-4},
		{"weights' part above the first loss", []float64{1e-4, 1, 2, 3, 4}, 0},
		{"one measured type", []float64{-1, -1, -1, 2e-3, -1}, 0},
	}
	for _, c := range cases {
		s := Sensitivity{Tensors: []string{"t"}, Types: types, Loss: [][]float64{c.row}}
		// 1e-12 relative: the floor is a difference of two losses of
		// order 1e-3 at most, in float64.
		if got := s.Floors()[0]; math.Abs(got-c.want) > 1e-12*max(1, c.want) {
			t.Errorf("%s: floor %g, want %g", c.name, got, c.want)
		}
	}
}

// TestAllocateWithoutFloors: adding a floor to every loss of a tensor (a
// cost that does not depend on the type) leaves the plan unchanged when
// the losses follow Floors' law.
func TestAllocateWithoutFloors(t *testing.T) {
	src := openGGUF(t, tinyModel(t, false))
	names := []string{"blk.0.attn_q.weight", "blk.0.ffn_down.weight", "blk.1.ffn_up.weight"}
	types := []tensor.DType{tensor.Q8_0, tensor.Q6_K, tensor.Q4_K, tensor.Q2_K}
	lossOf := func(c, f float64) []float64 {
		row := make([]float64, len(types))
		for j, typ := range types {
			row[j] = f + c*math.Pow(4, -typ.BitsPerWeight())
		}
		return row
	}
	clean := Sensitivity{Tensors: names, Types: types, Loss: [][]float64{lossOf(30, 0), lossOf(50, 0), lossOf(40, 0)}}
	floored := Sensitivity{Tensors: names, Types: types, Loss: [][]float64{lossOf(30, 0.05), lossOf(50, 0), lossOf(40, 0)}}
	// The unmeasured tensors as they are, the measured in a fifth of
	// their F32 bytes (about 6 bits per weight).
	var budget int64
	for _, ti := range src.Tensors {
		if indexOf(names, ti.Name) < 0 {
			budget += ti.Size
		} else {
			budget += ti.Size / 5
		}
	}
	want, err := Allocate(src, testSource, clean, budget)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Allocate(src, testSource, floored, budget)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want.Tensors {
		if got.Tensors[i].Type != want.Tensors[i].Type {
			t.Errorf("%s: %s with the floor, %s without", want.Tensors[i].Name, got.Tensors[i].Type, want.Tensors[i].Type)
		}
	}
	if q := want.Types()["blk.0.attn_q.weight"]; q == tensor.F32 {
		t.Errorf("the plan keeps attn_q in F32: the test needs it quantized")
	}
}

// TestLosses: losses that follow the 4^−bits law come back less their
// floor; a coarser type measured at or below the floor (noise) gets the
// weights' part the law fitted to all of the row gives it, so it no
// longer costs nothing; unmeasured types stay −1; and the allocator then
// keeps the source's type rather than take a "free" coarser one.
func TestLosses(t *testing.T) {
	types := []tensor.DType{tensor.Q8_0, tensor.Q5_K, tensor.Q4_K, tensor.Q3_K, tensor.Q2_K}
	x := func(typ tensor.DType) float64 { return math.Pow(4, -typ.BitsPerWeight()) }
	law := make([]float64, len(types))
	for j, typ := range types {
		law[j] = 9e-4 + 0.05*x(typ)
	}
	// The suite-large probe of a Q6_K source's attn_q: level, Q4_K below Q8_0's.
	noisy := []float64{0.00094, 0.00093, 0.00086, 0.00092, 0.00107}
	s := Sensitivity{Tensors: []string{"a", "b"}, Types: types, Loss: [][]float64{law, noisy}}
	got := s.Losses()
	for j, typ := range types {
		if want := 0.05 * x(typ); math.Abs(got[0][j]-want) > 1e-12 {
			t.Errorf("law, %s: %g, want %g", typ, got[0][j], want)
		}
	}
	for j := 1; j < len(types); j++ {
		if !(got[1][j] > 0) || noisy[j] > noisy[0] && got[1][j] != noisy[j]-noisy[0] {
			t.Errorf("noisy row: %s's loss %g (measured %g, floor %g)", types[j], got[1][j], noisy[j], noisy[0])
		}
	}
	if !(got[1][2] < got[1][3]) {
		t.Errorf("noisy row: Q4_K's loss %g not below Q3_K's %g", got[1][2], got[1][3])
	}
	s.Loss[1] = []float64{-1, 0.00093, -1, 0.00092, 0.00107}
	if got := s.Losses()[1]; got[0] != -1 || got[2] != -1 || !(got[3] > got[1]) {
		t.Errorf("unmeasured types: %v", got)
	}

	// A plan at exactly the source's size keeps every matrix in the
	// source's type (the costs' rounding up notwithstanding).
	src := openGGUF(t, tinyModel(t, false))
	var names [][]float64
	s = Sensitivity{Types: types}
	var all int64
	for _, ti := range src.Tensors {
		all += ti.Size
		if Quantizable(ti) {
			s.Tensors = append(s.Tensors, ti.Name)
			names = append(names, noisy)
		}
	}
	s.Loss = names
	plan, err := Allocate(src, testSource, s, all)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range plan.Tensors {
		if ti, _ := src.Tensor(c.Name); c.Type != ti.Type {
			t.Errorf("%s: %s at the source's size, want its own %s", c.Name, c.Type, ti.Type)
		}
	}
}

func indexOf(s []string, x string) int {
	for i, v := range s {
		if v == x {
			return i
		}
	}
	return -1
}

// TestBudgetForBPW: bits per weight count all tensors, as llama.cpp's
// figure does.
func TestBudgetForBPW(t *testing.T) {
	src := openGGUF(t, tinyModel(t, false))
	var n int64
	for _, ti := range src.Tensors {
		n += ti.Elements()
	}
	b, err := BudgetForBPW(src, 4.5)
	if err != nil || b != int64(4.5*float64(n)/8) {
		t.Errorf("4.5 bpw: %d, %v; want %d", b, err, int64(4.5*float64(n)/8))
	}
	for _, bad := range []float64{0, -1, 33, math.NaN()} {
		if _, err := BudgetForBPW(src, bad); err == nil {
			t.Errorf("%g bpw: no error", bad)
		}
	}
}

// TestPlanFile: a plan reads back as written; an edited one is refused;
// a plan for another model or with types that do not fit is refused.
func TestPlanFile(t *testing.T) {
	src := openGGUF(t, tinyModel(t, false))
	s := Sensitivity{Tensors: []string{"blk.0.attn_q.weight", "blk.1.ffn_down.weight"}, Types: []tensor.DType{tensor.Q4_K, tensor.Q2_K}, Loss: [][]float64{{0.01, 0.05}, {0.02, -1}}}
	var budget int64
	for _, ti := range src.Tensors {
		budget += ti.Size
	}
	plan, err := Allocate(src, testSource, s, budget-200000)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := plan.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := ReadPlan(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got.Tensors) != fmt.Sprint(plan.Tensors) || got.Predicted != plan.Predicted || got.Budget != plan.Budget || fmt.Sprint(*got.Sensitivity) != fmt.Sprint(s) {
		t.Errorf("read back %+v, wrote %+v", got, plan)
	}
	if err := got.Check(src, testSource); err != nil {
		t.Error(err)
	}
	if err := got.Check(src, strings.Repeat("1", 64)); err == nil {
		t.Error("another model's plan: no error")
	}
	edited := strings.Replace(buf.String(), `"type": "Q4_K"`, `"type": "Q2_K"`, 1)
	if edited == buf.String() {
		t.Fatal("nothing to edit")
	}
	if _, err := ReadPlan(strings.NewReader(edited)); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("edited plan: %v", err)
	}
	misfit := *got
	misfit.Tensors = append([]Choice(nil), got.Tensors...)
	for i, c := range misfit.Tensors {
		if c.Name == "output_norm.weight" {
			misfit.Tensors[i].Type = tensor.Q4_K
		}
	}
	if err := misfit.Check(src, testSource); err == nil {
		t.Error("a K-quant for a 256-element norm: no error")
	}
	if d := plan.Describe(); !strings.Contains(d, "blk.0.attn_q.weight") || !strings.Contains(d, "bits per weight") {
		t.Errorf("Describe: %s", d)
	}
}

// FuzzReadPlan: any bytes give a plan or an error, never a panic.
func FuzzReadPlan(f *testing.F) {
	plan := &Plan{Source: testSource, Budget: 100, Tensors: []Choice{{Name: "a.weight", Type: tensor.Q4_K, Elements: 256, Bytes: 144, Loss: 0.1}},
		Sensitivity: &Sensitivity{Tensors: []string{"a.weight"}, Types: []tensor.DType{tensor.Q4_K}, Loss: [][]float64{{0.1}}}}
	var buf bytes.Buffer
	plan.WriteTo(&buf)
	f.Add(buf.Bytes())
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ReadPlan(bytes.NewReader(b))
		if err != nil {
			return
		}
		p.Describe()
		p.BPW()
	})
}

// recipeFile writes a GGUF file with the tensor names and shapes of a
// llama model of the given layers (one row per matrix: the recipes look
// at names and row lengths only) and returns it opened.
func recipeFile(t *testing.T, layers int, untied bool, rowLen int64) *gguf.File {
	t.Helper()
	b := gguf.NewBuilder()
	b.Set("general.architecture", "llama")
	b.Set("llama.block_count", uint32(layers))
	add := func(name string, shape ...int64) {
		n := int64(4)
		for _, d := range shape {
			n *= d
		}
		if err := b.AddTensor(name, tensor.F32, shape, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	add("token_embd.weight", rowLen, 2)
	add("output_norm.weight", rowLen)
	if untied {
		add("output.weight", rowLen, 2)
	}
	for l := range layers {
		for _, n := range []string{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"} {
			add(fmt.Sprintf("blk.%d.%s.weight", l, n), rowLen, 1)
		}
		add(fmt.Sprintf("blk.%d.attn_norm.weight", l), rowLen)
	}
	path := filepath.Join(t.TempDir(), "r.gguf")
	if err := b.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	return openGGUF(t, path)
}

// TestRecipeRules checks the recipes on 6- and 32-layer models against
// llama.cpp's rules worked out by hand: use_more_bits(i, n) holds for
// i < n/8, i ≥ 7n/8 and (i − n/8) mod 3 = 2, i.e. layers {2, 5} of 6 and
// {0–3, 6, 9, …, 27, 28–31} of 32.
func TestRecipeRules(t *testing.T) {
	more32 := map[int]bool{}
	for _, i := range []int{0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31} {
		more32[i] = true
	}
	for _, tt := range []struct {
		recipe string
		layers int
		untied bool
		rowLen int64
		want   func(name string, layer int) tensor.DType
	}{
		{"Q4_K_M", 6, false, 256, func(n string, l int) tensor.DType {
			switch {
			case n == "token_embd.weight":
				return tensor.Q6_K
			case (strings.Contains(n, "attn_v") || strings.Contains(n, "ffn_down")) && (l == 2 || l == 5):
				return tensor.Q6_K
			}
			return tensor.Q4_K
		}},
		{"Q4_K_M", 32, true, 512, func(n string, l int) tensor.DType {
			switch {
			case n == "output.weight":
				return tensor.Q6_K
			case (strings.Contains(n, "attn_v") || strings.Contains(n, "ffn_down")) && more32[l]:
				return tensor.Q6_K
			}
			return tensor.Q4_K
		}},
		{"Q5_K_M", 32, true, 512, func(n string, l int) tensor.DType {
			switch {
			case n == "output.weight":
				return tensor.Q6_K
			case (strings.Contains(n, "attn_v") || strings.Contains(n, "ffn_down")) && more32[l]:
				return tensor.Q6_K
			}
			return tensor.Q5_K
		}},
		{"Q3_K_M", 32, true, 512, func(n string, l int) tensor.DType {
			switch {
			case n == "output.weight":
				return tensor.Q6_K
			case (strings.Contains(n, "attn_v") || strings.Contains(n, "ffn_down")) && l < 2:
				return tensor.Q5_K
			case strings.Contains(n, "attn_v") || strings.Contains(n, "ffn_down") || strings.Contains(n, "attn_output"):
				return tensor.Q4_K
			}
			return tensor.Q3_K
		}},
		// The ternary recipes: output (and tied embeddings) Q6_K, untied
		// embeddings Q4_K, the rest ternary; rows of 96 fall back to Q8_0
		// (output), Q5_0 (Q4_K's fallback) and Q4_0 (the ternary types').
		{"TQ2_0", 6, false, 256, func(n string, _ int) tensor.DType {
			if n == "token_embd.weight" {
				return tensor.Q6_K
			}
			return tensor.TQ2_0
		}},
		{"TQ1_0", 32, true, 512, func(n string, _ int) tensor.DType {
			switch n {
			case "output.weight":
				return tensor.Q6_K
			case "token_embd.weight":
				return tensor.Q4_K
			}
			return tensor.TQ1_0
		}},
		{"TQ2_0", 6, true, 96, func(n string, _ int) tensor.DType {
			switch n {
			case "output.weight":
				return tensor.Q8_0
			case "token_embd.weight":
				return tensor.Q5_0
			}
			return tensor.Q4_0
		}},
		// The plain recipes: every weight matrix in one type.
		{"Q8_0", 6, false, 256, func(string, int) tensor.DType { return tensor.Q8_0 }},
		{"F16", 32, true, 96, func(string, int) tensor.DType { return tensor.F16 }},
		// Rows of 96 elements hold no K-quant block: llama.cpp falls back
		// (Q4_K → Q5_0, Q6_K → Q8_0 for the rest; output Q8_0).
		{"Q4_K_M", 6, false, 96, func(n string, l int) tensor.DType {
			switch {
			case n == "token_embd.weight":
				return tensor.Q8_0
			case (strings.Contains(n, "attn_v") || strings.Contains(n, "ffn_down")) && (l == 2 || l == 5):
				return tensor.Q8_0
			}
			return tensor.Q5_0
		}},
	} {
		src := recipeFile(t, tt.layers, tt.untied, tt.rowLen)
		plan, err := Recipe(src, testSource, tt.recipe)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range plan.Tensors {
			ti, _ := src.Tensor(c.Name)
			want := ti.Type
			if Quantizable(ti) {
				want = tt.want(c.Name, layerOf(c.Name))
			}
			if c.Type != want {
				t.Errorf("%s, %d layers: %s is %s, want %s", tt.recipe, tt.layers, c.Name, c.Type, want)
			}
		}
	}
	if _, err := Recipe(recipeFile(t, 2, false, 256), testSource, "Q4_K_S"); err == nil {
		t.Error("unknown recipe: no error")
	}
}

// TestAllocateTernary: with TQ1_0 or TQ2_0 (1.6875, 2.0625 bits per
// weight) among the types, a budget below what Q2_K alone reaches is met, with some
// matrices (the embeddings among the candidates) in the ternary type; the file
// written from that plan has those types, its manifest's plan reads back,
// and it loads and runs as a model.
func TestAllocateTernary(t *testing.T) {
	for _, tern := range []tensor.DType{tensor.TQ1_0, tensor.TQ2_0} {
		t.Run(tern.String(), func(t *testing.T) { testAllocateTernary(t, tern) })
	}
}

func testAllocateTernary(t *testing.T, tern tensor.DType) {
	srcPath := tinyModel(t, false)
	src := openGGUF(t, srcPath)
	var names []string
	for _, ti := range src.Tensors {
		if Quantizable(ti) {
			names = append(names, ti.Name)
		}
	}
	sens := func(types ...tensor.DType) Sensitivity {
		s := Sensitivity{Tensors: names, Types: types}
		for i := range names {
			row := make([]float64, len(types))
			for j, typ := range types {
				// Coarser types cost more; the matrices differ.
				row[j] = float64(1+i%3) * math.Pow(4, -typ.BitsPerWeight())
			}
			s.Loss = append(s.Loss, row)
		}
		return s
	}
	var fixed, leastQ2 int64
	for _, ti := range src.Tensors {
		if !Quantizable(ti) {
			fixed += ti.Size
			continue
		}
		c, _ := choice(ti, tensor.Q2_K, 0)
		leastQ2 += min(c.Bytes, ti.Size)
	}
	budget := fixed + leastQ2 - 1
	if _, err := Allocate(src, testSource, sens(tensor.Q4_K, tensor.Q2_K), budget); err == nil || !strings.Contains(err.Error(), "below the smallest choice") {
		t.Fatalf("budget below Q2_K's least without a ternary type: %v", err)
	}
	plan, err := Allocate(src, testSource, sens(tensor.Q4_K, tensor.Q2_K, tern), budget)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Bytes() > budget {
		t.Errorf("plan has %d bytes, budget %d", plan.Bytes(), budget)
	}
	ternary := 0
	for _, c := range plan.Tensors {
		if c.Type == tern {
			ternary++
		}
	}
	if ternary == 0 {
		t.Fatalf("no matrix in %s:\n%s", tern, plan.Describe())
	}
	out := filepath.Join(t.TempDir(), "tq.gguf")
	if err := NewQuantizer(src, nil, 2).Write(context.Background(), out, plan, WriteOptions{Tool: "turbomem test", SourceSHA256: testSource}); err != nil {
		t.Fatal(err)
	}
	f := openGGUF(t, out)
	m, err := ReadManifest(f)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ReadPlan(strings.NewReader(m.Plan))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range back.Tensors {
		if ti, ok := f.Tensor(c.Name); !ok || ti.Type != c.Type || ti.Size != c.Bytes {
			t.Errorf("%s: %s of %d bytes in the file, %s of %d in the plan", c.Name, ti.Type, ti.Size, c.Type, c.Bytes)
		}
	}
	mod, err := model.Open(out, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close()
	s, _ := mod.NewSession(nil, 0)
	logits, err := s.Forward([]int32{5, 6, 7, 8}, false)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range logits {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatalf("logit %d is %g", i, v)
		}
	}
	t.Logf("%d of %d matrices in %s, %.3f bits per weight", ternary, len(names), tern, plan.BPW())
}
