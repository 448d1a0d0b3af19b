package kvcache

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/internal/jsonsum"
)

func mustFormats(t testing.TB, names ...string) []Format {
	t.Helper()
	var fs []Format
	for _, n := range names {
		f, err := ParseFormat(n)
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	return fs
}

// randomSensitivity draws losses that fall with bits, as measured ones
// do, with a random scale per part; qjl (keys only) is −1 for values.
func randomSensitivity(t testing.TB, layers int, seed uint64, names ...string) Sensitivity {
	r := rand.New(rand.NewPCG(seed, 1))
	s := Sensitivity{Formats: mustFormats(t, names...)}
	bits := make([]float64, len(names))
	for j, f := range s.Formats {
		bits[j], _ = f.Bits(128)
	}
	for p := range 2 * layers {
		scale := math.Exp(3 * r.Float64())
		row := make([]float64, len(names))
		for j, f := range s.Formats {
			row[j] = scale * math.Pow(4, -bits[j]) * (0.5 + r.Float64())
			if f.c.keysOnly && p%2 == 1 {
				row[j] = -1
			}
		}
		s.Loss = append(s.Loss, row)
	}
	return s
}

// bruteForce returns the least total loss over every assignment within
// the budget, trying all of them.
func bruteForce(t testing.TB, s Sensitivity, budget float64) float64 {
	parts := len(s.Loss)
	best := math.Inf(1)
	choice := make([]int, parts) // −1: f16, else the format's column
	bits := make([]float64, len(s.Formats))
	for j, f := range s.Formats {
		bits[j], _ = f.Bits(128)
	}
	var walk func(p int, total, loss float64)
	walk = func(p int, total, loss float64) {
		if p == parts {
			if total <= budget*float64(parts)+1e-9 {
				best = min(best, loss)
			}
			return
		}
		for j := -1; j < len(s.Formats); j++ {
			if j < 0 {
				choice[p] = j
				walk(p+1, total+16, loss+floorOf(s.Loss[p]))
				continue
			}
			if s.Loss[p][j] < 0 {
				continue
			}
			choice[p] = j
			walk(p+1, total+bits[j], loss+s.Loss[p][j])
		}
	}
	walk(0, 0, 0)
	return best
}

// floorOf is Sensitivity.Floor written out: the least non-negative loss
// of a part, less one part in 10⁹; 0 if there is none.
func floorOf(row []float64) float64 {
	least := -1.0
	for _, l := range row {
		if l >= 0 && (least < 0 || l < least) {
			least = l
		}
	}
	if least < 0 {
		return 0
	}
	return least - least*1e-9
}

// TestAllocateIsOptimal compares the dynamic program with trying every
// assignment, and checks the plan keeps to its budget and sums its loss.
func TestAllocateIsOptimal(t *testing.T) {
	for seed := range uint64(4) {
		s := randomSensitivity(t, 3, seed, "turbo2.5", "turbo3", "turbo3.5", "turbo4", "q8_0", "qjl")
		for _, budget := range []float64{2.32, 2.5, 2.9, 3.0, 3.5, 4.2, 6, 16} {
			p, err := Allocate(s, budget, 128)
			if err != nil {
				t.Fatalf("seed %d budget %g: %v", seed, budget, err)
			}
			want := bruteForce(t, s, budget)
			if math.Abs(p.Predicted-want) > 1e-12*math.Max(1, want) {
				t.Errorf("seed %d budget %g: predicted %g, best possible %g", seed, budget, p.Predicted, want)
			}
			if b := p.Bits(); b > budget+1e-9 {
				t.Errorf("seed %d budget %g: plan uses %g bits", seed, budget, b)
			}
			var sum float64
			for i, l := range p.Layers {
				if l.V.c.keysOnly {
					t.Errorf("seed %d budget %g: layer %d values in qjl", seed, budget, i)
				}
				sum += p.loss(2*i, l.K) + p.loss(2*i+1, l.V)
			}
			if math.Abs(sum-p.Predicted) > 1e-12 {
				t.Errorf("seed %d budget %g: parts sum to %g, predicted %g", seed, budget, sum, p.Predicted)
			}
			if budget == 16 {
				var floors float64
				for _, row := range s.Loss {
					floors += floorOf(row)
				}
				if math.Abs(p.Predicted-floors) > 1e-12 || p.Bits() != 16 {
					t.Errorf("budget 16: want all f16 at the floors' %g, got %s", floors, p.Describe())
				}
			}
		}
	}
}

// TestSensitivityFloor: f16 is charged the least loss measured for the
// part (formats that cannot serve it, −1, left out), a hair less.
func TestSensitivityFloor(t *testing.T) {
	s := Sensitivity{Formats: mustFormats(t, "turbo2.5", "q8_0", "qjl", "f16")}
	for _, tt := range []struct {
		row  []float64
		want float64
	}{
		{[]float64{0.5, 0.25, 2, 0}, 0.25 * (1 - 1e-9)}, // f16's own 0 is not a measurement
		{[]float64{0.5, 0.75, -1, 0}, 0.5 * (1 - 1e-9)},
		{[]float64{0, 0.1, 0.2, 0}, 0},
		{[]float64{-1, -1, -1, 0}, 0},
	} {
		s.Loss = [][]float64{tt.row}
		if got := s.Floor(0); got != tt.want {
			t.Errorf("losses %v: floor %g, want %g", tt.row, got, tt.want)
		}
	}
}

// TestAllocateF16PaysTheFloor: measured losses that all carry a floor
// (what any change to the part costs: layer 0's here) do not buy f16 for
// the part with the floor, as a loss of 0 for f16 would: two parts at
// 10.0625 bits, where f16 + turbo4 fits as well as q8_0 + q8_0.
func TestAllocateF16PaysTheFloor(t *testing.T) {
	s := Sensitivity{Formats: mustFormats(t, "turbo4", "q8_0"), Loss: [][]float64{
		{1.01, 1.001}, // layer 0 keys: floor 1
		{0.5, 0.0001}, // layer 0 values: no floor
	}}
	p, err := Allocate(s, (16+4.125)/2, 128)
	if err != nil {
		t.Fatal(err)
	}
	if k, v := p.Layers[0].K.name, p.Layers[0].V.name; k != "q8_0" || v != "q8_0" {
		t.Errorf("plan %s/%s, want q8_0/q8_0 (f16 for the keys would cost their floor too)", k, v)
	}
	if want := 1.001 + 0.0001; math.Abs(p.Predicted-want) > 1e-12 {
		t.Errorf("predicted %g, want %g", p.Predicted, want)
	}
	// With the budget for f16 on both parts, f16 wins the tie.
	if p, err = Allocate(s, 16, 128); err != nil || p.Bits() != 16 {
		t.Errorf("budget 16: %v, %s", err, p.Describe())
	}
}

func TestAllocateErrors(t *testing.T) {
	good := randomSensitivity(t, 2, 1, "turbo2.5", "turbo3.5")
	tests := []struct {
		name   string
		s      Sensitivity
		budget float64
		want   string
	}{
		{"below the cheapest", good, 2.4, "below the smallest"},
		{"zero budget", good, 0, "out of range"},
		{"NaN budget", good, math.NaN(), "out of range"},
		{"no formats", Sensitivity{Loss: good.Loss}, 3, "candidate formats"},
		{"odd parts", Sensitivity{Formats: good.Formats, Loss: good.Loss[:3]}, 3, "2 per layer"},
		{"short row", Sensitivity{Formats: good.Formats, Loss: [][]float64{{1}, {1, 2}}}, 3, "1 losses for 2"},
		{"NaN loss", Sensitivity{Formats: good.Formats, Loss: [][]float64{{1, math.NaN()}, {1, 2}}}, 3, "not finite"},
		{"qjl values", Sensitivity{Formats: mustFormats(t, "qjl"), Loss: [][]float64{{1}, {1}}}, 3, "keys only"},
	}
	for _, tt := range tests {
		if _, err := Allocate(tt.s, tt.budget, 128); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

const testHash = "4c82c1dfd03e33ad2d556b3367a8a317ce125c3d814e1fa5d8c17db9948f4493"

func testPlan(t testing.TB) *Plan {
	s := randomSensitivity(t, 4, 9, "turbo2.5", "turbo3", "turbo3.5", "turbo4", "q8_0", "qjl")
	p, err := Allocate(s, 3, 128)
	if err != nil {
		t.Fatal(err)
	}
	p.Model, p.Window, p.Seed = testHash, 32, 77
	return p
}

// TestPlanRoundTrip writes a plan and reads it back; the caches it makes
// have each layer's formats.
func TestPlanRoundTrip(t *testing.T) {
	p := testPlan(t)
	var buf bytes.Buffer
	if _, err := p.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	q, err := ReadPlan(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if q.Describe() != p.Describe() || q.Model != p.Model || q.Window != 32 || q.Seed != 77 || q.Budget != 3 || q.HeadDim != 128 {
		t.Fatalf("read back\n%s\nwrote\n%s", q.Describe(), p.Describe())
	}
	sh := Shape{QHeads: 8, KVHeads: 2, HeadDim: 128}
	if err := q.Check(testHash, 4, sh); err != nil {
		t.Fatal(err)
	}
	for i, l := range q.Layers {
		c, err := q.NewCache(i, sh)
		if err != nil {
			t.Fatal(err)
		}
		switch c := c.(type) {
		case *Compressed:
			if s := c.Spec(); s.K != l.K || s.V != l.V || s.Window != 32 || s.Seed != 77 {
				t.Errorf("layer %d: cache spec %s window %d seed %d, plan %s/%s", i, s, s.Window, s.Seed, l.K, l.V)
			}
		case *Dense:
			if l.K.name != "f16" || l.V.name != "f16" {
				t.Errorf("layer %d: dense cache for %s/%s", i, l.K, l.V)
			}
		}
	}
	if _, err := q.NewCache(4, sh); err == nil {
		t.Error("NewCache beyond the plan's layers: no error")
	}
}

func TestPlanCheck(t *testing.T) {
	p := testPlan(t)
	sh := Shape{QHeads: 8, KVHeads: 2, HeadDim: 128}
	other := strings.Repeat("ab", 32)
	if err := p.Check(other, 4, sh); !errors.Is(err, ErrOtherModel) {
		t.Errorf("another model's hash: %v", err)
	}
	if err := p.Check(strings.ToUpper(testHash), 4, sh); err != nil {
		t.Errorf("hash in capitals: %v", err)
	}
	if err := p.Check(testHash, 5, sh); err == nil || !strings.Contains(err.Error(), "4 layers") {
		t.Errorf("layer count: %v", err)
	}
	if err := p.Check(testHash, 4, Shape{QHeads: 8, KVHeads: 2, HeadDim: 64}); err == nil || !strings.Contains(err.Error(), "head dimension") {
		t.Errorf("head dim: %v", err)
	}
}

// TestReadPlanRejects damages a plan file in ways a user or a disk might.
func TestReadPlanRejects(t *testing.T) {
	var buf bytes.Buffer
	if _, err := testPlan(t).WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	good := buf.String()
	// resum recomputes the checksum after an edit, to reach the checks
	// behind it.
	resum := func(edit func(*planFile)) string {
		var f planFile
		if err := json.Unmarshal([]byte(good), &f); err != nil {
			t.Fatal(err)
		}
		edit(&f)
		b, err := jsonsum.Marshal(&f, &f.Checksum)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tests := []struct {
		name, file, want string
	}{
		{"empty", "", "not a plan file"},
		{"not JSON", "hello", "not a plan file"},
		{"truncated", good[:len(good)/2], "not a plan file"},
		{"edited", strings.Replace(good, `"k": "`, `"k": "x`, 1), "checksum mismatch"},
		{"unknown field", strings.Replace(good, "{", `{"extra": 1,`, 1), "not a plan file"},
		{"version", resum(func(f *planFile) { f.Version = 2 }), "version 2"},
		{"model hash", resum(func(f *planFile) { f.Model = "abc" }), "not a SHA-256"},
		{"unknown format", resum(func(f *planFile) { f.Layers[0].K = "turbo9" }), "unknown KV format"},
		{"no layers", resum(func(f *planFile) { f.Layers = nil }), "out of range"},
		{"budget", resum(func(f *planFile) { f.Budget = -1 }), "out of range"},
		{"sensitivity shape", resum(func(f *planFile) { f.Sensitivity.Loss = f.Sensitivity.Loss[:2] }), "sensitivity of 1 layers"},
		{"sensitivity row", resum(func(f *planFile) { f.Sensitivity.Loss[1] = f.Sensitivity.Loss[1][:1] }), "losses for"},
		{"huge", strings.Repeat(" ", maxPlanBytes+1), "larger than"},
	}
	for _, tt := range tests {
		if _, err := ReadPlan(strings.NewReader(tt.file)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

// FuzzReadPlan: any input gives a plan or an error, and a plan read back
// writes out the same plan.
func FuzzReadPlan(f *testing.F) {
	var buf bytes.Buffer
	if _, err := testPlan(f).WriteTo(&buf); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ReadPlan(bytes.NewReader(b))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if _, err := p.WriteTo(&out); err != nil {
			t.Fatal(err)
		}
		q, err := ReadPlan(&out)
		if err != nil || q.Describe() != p.Describe() {
			t.Fatalf("rewritten plan: %v", err)
		}
	})
}
