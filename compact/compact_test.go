package compact

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/tensor"
)

// biasedScores returns scale·q·k_j + bias_j for every key (bias nil: 0)
// in float64.
func biasedScores(q, keys, bias []float32, d int, scale float32) []float64 {
	s := make([]float64, len(keys)/d)
	for j := range s {
		var dot float64
		for c := range d {
			dot += float64(q[c]) * float64(keys[j*d+c])
		}
		s[j] = float64(scale) * dot
		if bias != nil {
			s[j] += float64(bias[j])
		}
	}
	return s
}

// attend returns softmax(scale·q·Kᵀ + bias)·V in float64 (bias nil: 0).
func attend(q, keys, bias, values []float32, d int, scale float32) []float64 {
	s := biasedScores(q, keys, bias, d, scale)
	m := slices.Max(s)
	out := make([]float64, d)
	var sum float64
	for j, x := range s {
		e := math.Exp(x - m)
		sum += e
		for c := range d {
			out[c] += e * float64(values[j*d+c])
		}
	}
	for c := range out {
		out[c] /= sum
	}
	return out
}

// logMass returns log Σ_j exp(scale·q·k_j + bias_j).
func logMass(q, keys, bias []float32, d int, scale float32) float64 {
	s := biasedScores(q, keys, bias, d, scale)
	m := slices.Max(s)
	var sum float64
	for _, x := range s {
		sum += math.Exp(x - m)
	}
	return m + math.Log(sum)
}

func gaussian(r *rand.Rand, n int, sigma float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64() * sigma)
	}
	return x
}

// maxOutputErr returns the largest |o − o_ref| over the queries and
// coordinates, and the largest |log mass − log mass_ref|.
func maxOutputErr(b Block, r Result, queries []float32) (outErr, massErr float64) {
	d := b.Dim
	for i := 0; i < len(queries); i += d {
		q := queries[i : i+d]
		ref := attend(q, b.Keys, nil, b.Values, d, b.Scale)
		got := attend(q, r.Keys, r.Bias, r.Values, d, b.Scale)
		for c := range ref {
			outErr = max(outErr, math.Abs(got[c]-ref[c]))
		}
		massErr = max(massErr, math.Abs(logMass(q, r.Keys, r.Bias, d, b.Scale)-logMass(q, b.Keys, nil, d, b.Scale)))
	}
	return outErr, massErr
}

// TestKeepAll: with every key kept (t = T) and more reference queries
// than keys, the mass equations have the exact solution B = 1 (β = 0)
// and the value equations C₂ = V, so every fit must reproduce the block
// exactly, for unseen queries too. Tolerance: scores and outputs are
// float32 (relative 6e-8) and the least-squares solves are conditioned
// around 10³ here, so 1e-4 holds with a wide margin and any mistake in
// the equations (a missing normalisation, a wrong bias sign) is O(1).
func TestKeepAll(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const T, d, n = 24, 8, 64
	b := Block{Dim: d, Keys: gaussian(r, T*d, 1), Values: gaussian(r, T*d, 1), Queries: gaussian(r, n*d, 1), Scale: 1 / float32(math.Sqrt(d))}
	unseen := gaussian(r, 16*d, 1)
	for _, f := range []Fit{AM(T), AMOMP(T), {Keys: T, Select: ByMax, BiasMin: -3, BiasMax: 3}, {Keys: T, Select: ByMean, BiasMin: -3, BiasMax: 3, PGDIters: 5}} {
		t.Run(f.Select.String(), func(t *testing.T) {
			res, err := CompactHead(b, f)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Warnings) > 0 {
				t.Errorf("warnings: %v", res.Warnings)
			}
			if res.Len() != T {
				t.Fatalf("kept %d keys, want %d", res.Len(), T)
			}
			for j, beta := range res.Bias {
				if math.Abs(float64(beta)) > 1e-4 {
					t.Errorf("β[%d] = %g, want 0", j, beta)
				}
			}
			for i, v := range res.Values {
				if math.Abs(float64(v-b.Values[i])) > 1e-4 {
					t.Fatalf("value %d = %g, want %g", i, v, b.Values[i])
				}
			}
			if o, m := maxOutputErr(b, res, unseen); o > 1e-4 || m > 1e-4 {
				t.Errorf("unseen queries: output error %g, log-mass error %g", o, m)
			}
		})
	}
}

// TestDuplicateKey: m copies of one key and r distinct others compact to
// r+1 keys, the copy kept once with β = log m (its m-fold mass) and every
// output exact. Tolerance as in TestKeepAll.
func TestDuplicateKey(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const m, rest, d, n = 5, 9, 8, 48
	dup := gaussian(r, d, 1)
	var keys []float32
	for range m {
		keys = append(keys, dup...)
	}
	keys = append(keys, gaussian(r, rest*d, 1)...)
	values := gaussian(r, (m+rest)*d, 1)
	b := Block{Dim: d, Keys: keys, Values: values, Queries: gaussian(r, n*d, 1), Scale: 0.5}
	// The output of the copies together is their values' mean.
	want := make([]float32, d)
	for i := range m {
		for c := range d {
			want[c] += values[i*d+c] / m
		}
	}
	given := []int{2}
	for i := range rest {
		given = append(given, m+i)
	}
	for name, f := range map[string]Fit{
		"given": {Keys: rest + 1, Select: Given, Index: given, BiasMin: -3, BiasMax: 3},
		"omp":   AMOMP(rest + 1),
	} {
		t.Run(name, func(t *testing.T) {
			res, err := CompactHead(b, f)
			if err != nil {
				t.Fatal(err)
			}
			if res.Len() != rest+1 || res.Index[0] >= m || !slices.Equal(res.Index[1:], given[1:]) {
				t.Fatalf("kept %v, want one copy of 0..%d and %v", res.Index, m-1, given[1:])
			}
			if got := float64(res.Bias[0]); math.Abs(got-math.Log(m)) > 1e-4 {
				t.Errorf("β of the copy = %g, want log %d = %g", got, m, math.Log(m))
			}
			for j := 1; j < res.Len(); j++ {
				if math.Abs(float64(res.Bias[j])) > 1e-4 {
					t.Errorf("β[%d] = %g, want 0", j, res.Bias[j])
				}
			}
			for c := range d {
				if math.Abs(float64(res.Values[c]-want[c])) > 1e-4 {
					t.Fatalf("value of the copy [%d] = %g, want the copies' mean %g", c, res.Values[c], want[c])
				}
			}
			if o, ms := maxOutputErr(b, res, gaussian(r, 8*d, 1)); o > 1e-4 || ms > 1e-4 {
				t.Errorf("unseen queries: output error %g, log-mass error %g", o, ms)
			}
		})
	}
}

type refCase struct {
	Name     string    `json:"name"`
	Select   string    `json:"select"`
	Keys     int       `json:"keys"`
	BiasMin  float64   `json:"bias_min"`
	BiasMax  float64   `json:"bias_max"`
	PGD      int       `json:"pgd"`
	Ridge    float64   `json:"ridge"`
	Schedule [][3]int  `json:"schedule"`
	Drop     float64   `json:"drop"`
	Index    []int     `json:"index"`
	Bias     []float64 `json:"bias"`
	Values   []float64 `json:"values"`
}

// TestNumPyReference compares every fit with an independent float64
// NumPy implementation (tools/compactref/make.py): the kept positions
// exactly, β and the values within 2e-4 (ours scores in float32, relative
// 6e-8, amplified by the least-squares solves' conditioning; the
// fixture's choices are at least 0.1% apart, so no rounding flips one).
func TestNumPyReference(t *testing.T) {
	raw, err := os.ReadFile("testdata/amref.json")
	if err != nil {
		t.Fatal(err)
	}
	var fx struct {
		Dim     int       `json:"dim"`
		Scale   float64   `json:"scale"`
		Keys    []float32 `json:"keys"`
		Values  []float32 `json:"values"`
		Queries []float32 `json:"queries"`
		Cases   []refCase `json:"cases"`
	}
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	b := Block{Dim: fx.Dim, Keys: fx.Keys, Values: fx.Values, Queries: fx.Queries, Scale: float32(fx.Scale)}
	sel := map[string]Selection{"rms": ByRMS, "max": ByMax, "mean": ByMean, "omp": ByOMP}
	for _, c := range fx.Cases {
		t.Run(c.Name, func(t *testing.T) {
			f := Fit{Keys: c.Keys, Select: sel[c.Select], BiasMin: c.BiasMin, BiasMax: c.BiasMax, PGDIters: c.PGD, Ridge: c.Ridge, DropBelow: c.Drop}
			for _, s := range c.Schedule {
				f.Schedule = append(f.Schedule, Step{Until: s[0], PerStep: s[1], Refit: s[2]})
			}
			res, err := CompactHead(b, f)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(res.Index, c.Index) {
				t.Fatalf("kept %v, NumPy %v", res.Index, c.Index)
			}
			for j, want := range c.Bias {
				if math.Abs(float64(res.Bias[j])-want) > 2e-4 {
					t.Errorf("β[%d] = %g, NumPy %g", j, res.Bias[j], want)
				}
			}
			for i, want := range c.Values {
				if math.Abs(float64(res.Values[i])-want) > 2e-4*max(1, math.Abs(want)) {
					t.Fatalf("value %d = %g, NumPy %g", i, res.Values[i], want)
				}
			}
		})
	}
}

// TestFitBeatsEviction: on clustered keys, the fitted β and values
// reproduce attention on unseen queries better than keeping the same keys
// with β = 0 and their own values (eviction), and OMP's error falls as
// more keys are kept. Margins are wide: the fit's output error is 3–17×
// smaller on this data. The highest-attention fit's mass error stays
// large at few keys by design: its β is bounded by 3, and 8 of 256 keys
// need log 32 ≈ 3.5 each.
func TestFitBeatsEviction(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const T, d, n = 256, 16, 512
	centers := gaussian(r, 8*d, 2)
	keys := make([]float32, T*d)
	for i := range T {
		c := r.IntN(8)
		for k := range d {
			keys[i*d+k] = centers[c*d+k] + float32(0.3*r.NormFloat64())
		}
	}
	b := Block{Dim: d, Keys: keys, Values: gaussian(r, T*d, 1), Queries: gaussian(r, n*d, 1), Scale: 0.25}
	unseen := gaussian(r, 64*d, 1)
	prev := math.Inf(1)
	for _, keep := range []int{8, 32, 64} {
		for _, f := range []Fit{AM(keep), AMOMP(keep)} {
			res, err := CompactHead(b, f)
			if err != nil {
				t.Fatal(err)
			}
			ev := f
			ev.Select, ev.Index, ev.NoBias, ev.DirectValues = Given, res.Index, true, true
			evr, err := CompactHead(b, ev)
			if err != nil {
				t.Fatal(err)
			}
			fitErr, fitMass := maxOutputErr(b, res, unseen)
			evErr, evMass := maxOutputErr(b, evr, unseen)
			t.Logf("t=%d %s: output error %.4f (eviction %.4f), log-mass error %.4f (eviction %.4f)", keep, f.Select, fitErr, evErr, fitMass, evMass)
			massLimit := evMass / 2
			if f.Select == ByRMS {
				massLimit = evMass
			}
			if fitErr > evErr/2 || fitMass > massLimit {
				t.Errorf("t=%d %s: fit error %g / mass %g not well below eviction's %g / %g", keep, f.Select, fitErr, fitMass, evErr, evMass)
			}
			if f.Select == ByOMP {
				if fitErr > prev {
					t.Errorf("t=%d: OMP error %g grew from %g", keep, fitErr, prev)
				}
				prev = fitErr
			}
		}
	}
}

// TestDegenerate: bad input is refused with a clear error that names
// the parameter (Block's or Fit's field), the cheap checks of the block's
// shape and the fit before the scan of the block's numbers; a fit that
// cannot be made (every kept key's weight underflows for every query) is
// replaced by a fallback with a warning, and nothing in the result is NaN
// or Inf.
func TestDegenerate(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const T, d = 16, 4
	ok := Block{Dim: d, Keys: gaussian(r, T*d, 1), Values: gaussian(r, T*d, 1), Queries: gaussian(r, 8*d, 1), Scale: 0.5}
	nan := ok
	nan.Values = slices.Clone(ok.Values)
	nan.Values[5] = float32(math.NaN())
	for _, c := range []struct {
		name string
		b    Block
		f    Fit
		want string
	}{
		{"budget above context", ok, AM(T + 1), "Fit.Keys 17 is larger than the block's 16 tokens"},
		{"no budget", ok, AM(0), "Fit.Keys 0: want a budget of at least 1"},
		{"NaN value", nan, AM(4), "Block.Values row 1, coordinate 1 is NaN"},
		{"no queries", Block{Dim: d, Keys: ok.Keys, Values: ok.Values, Scale: 1}, AM(4), "Block.Queries holds 0 values"},
		{"ragged", Block{Dim: d, Keys: ok.Keys[:7], Values: ok.Values[:7], Queries: ok.Queries, Scale: 1}, AM(1), "rows of 4 (Block.Dim)"},
		{"bad dimension", Block{Keys: ok.Keys, Values: ok.Values, Queries: ok.Queries, Scale: 1}, AM(1), "Block.Dim 0"},
		{"bad scale", Block{Dim: d, Keys: ok.Keys, Values: ok.Values, Queries: ok.Queries}, AM(4), "Block.Scale 0"},
		{"bounds", ok, Fit{Keys: 4, Select: ByRMS, BiasMin: 3, BiasMax: -3}, "Fit.BiasMin, Fit.BiasMax: β bounds [3, -3]"},
		{"unknown selection", ok, Fit{Keys: 4, Select: 99}, "Fit.Select 99"},
		{"given too few", ok, Fit{Keys: 2, Select: Given, Index: []int{1}}, "Fit.Index holds 1 keys for Fit.Keys 2"},
		{"given repeated", ok, Fit{Keys: 2, Select: Given, Index: []int{1, 1}}, "Fit.Index: key 1 is outside [0, 16) or repeated"},
		{"drop positive", ok, Fit{Keys: 2, Select: ByOMP, DropBelow: 1}, "Fit.DropBelow 1: want a negative cutoff"},
		{"PGD steps", ok, Fit{Keys: 2, Select: ByRMS, PGDIters: -1}, "Fit.PGDIters -1"},
		{"threads", ok, Fit{Keys: 2, Select: ByRMS, Threads: -1}, "Fit.Threads -1"},
		{"ridge", ok, Fit{Keys: 2, Select: ByRMS, Ridge: math.Inf(1)}, "Fit.Ridge +Inf"},
		{"schedule", ok, Fit{Keys: 2, Select: ByOMP, Schedule: []Step{{0, 1, 1}, {4, 1, 1}}}, "Fit.Schedule[0]"},
		// The cheap checks come first: the block's shape, then the fit,
		// then the scan of the block's numbers.
		{"ragged with no budget", Block{Dim: d, Keys: ok.Keys[:7], Values: ok.Values[:7], Queries: ok.Queries, Scale: 1}, AM(0), "Block.Keys and Block.Values hold 7 and 7 values"},
		{"NaN value with no budget", nan, AM(0), "Fit.Keys 0"},
		{"NaN value with bad bounds", nan, Fit{Keys: 4, Select: ByRMS, BiasMin: 3, BiasMax: -3}, "Fit.BiasMin"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := CompactHead(c.b, c.f)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
	t.Run("underflow", func(t *testing.T) {
		// Key 0 scores 200 below the others for every query: its
		// exp-score underflows, so no query's weight on it can be fitted.
		b := Block{Dim: 1, Keys: []float32{-100, 1, 1.1, 0.9}, Values: []float32{5, 1, 2, 3}, Queries: []float32{2, 2.5, 3}, Scale: 1}
		res, err := CompactHead(b, Fit{Keys: 1, Select: Given, Index: []int{0}, BiasMin: -3, BiasMax: 3})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Warnings) == 0 {
			t.Error("no warning for a fit that cannot be made")
		}
		for _, x := range slices.Concat(res.Keys, res.Bias, res.Values) {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				t.Fatalf("result holds %g: %+v", x, res)
			}
		}
		t.Logf("warnings: %v", res.Warnings)
	})
}

// referenceStatistics returns each key's attention weight over b's
// queries, computed in float64 from the definition: its largest, its
// root mean square and its mean.
func referenceStatistics(b Block) (maxW, rms, mean []float64) {
	d, t, n := b.Dim, b.Len(), len(b.Queries)/b.Dim
	maxW, rms, mean = make([]float64, t), make([]float64, t), make([]float64, t)
	for i := range n {
		s := biasedScores(b.Queries[i*d:(i+1)*d], b.Keys, nil, d, b.Scale)
		m := slices.Max(s)
		var sum float64
		for j := range s {
			s[j] = math.Exp(s[j] - m)
			sum += s[j]
		}
		for j := range s {
			w := s[j] / sum
			maxW[j] = max(maxW[j], w)
			rms[j] += w * w / float64(n)
			mean[j] += w / float64(n)
		}
	}
	for j := range rms {
		rms[j] = math.Sqrt(rms[j])
	}
	return maxW, rms, mean
}

// TestMaxRMSSelection: ByMaxRMS keeps the ⌈t/2⌉ keys with the largest
// weight from any query, then the rest by RMS weight among the others,
// checked against the weights computed here in float64 from the
// definition. The block has sink keys every query attends to and rare
// keys one query attends to sharply (a needle): RMS ranks the sinks
// first, so the two selections must differ for the test to say anything.
func TestMaxRMSSelection(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	const T, d, n, keep = 64, 8, 256, 10
	b := Block{Dim: d, Keys: gaussian(r, T*d, 0.05), Values: gaussian(r, T*d, 1), Queries: gaussian(r, n*d, 0.05), Scale: 1}
	for i := range n { // keys 0–7 are sinks
		b.Queries[i*d] = 3
	}
	for j := range 8 {
		clear(b.Keys[j*d : (j+1)*d])
		b.Keys[j*d] = 1.5 + 0.02*float32(j)
	}
	for j := range 6 { // rare keys 10, 20, …, 60, each the target of one query
		key := (j + 1) * 10
		for c := 1; c < d; c++ { // orthogonal to the sinks' direction
			b.Keys[key*d+c] = float32(r.NormFloat64())
		}
		b.Keys[key*d] = 0
		for c := range d {
			b.Queries[(j*40)*d+c] = 2 * b.Keys[key*d+c]
		}
	}
	maxW, rms, _ := referenceStatistics(b)
	want := topK(maxW, (keep+1)/2)
	for _, j := range want {
		rms[j] = math.Inf(-1)
	}
	want = slices.Sorted(slices.Values(append(want, topK(rms, keep-len(want))...)))
	got, err := CompactHead(b, Fit{Keys: keep, Select: ByMaxRMS, BiasMin: -3, BiasMax: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Index, want) {
		t.Fatalf("kept %v, want %v", got.Index, want)
	}
	byRMS, err := CompactHead(b, AM(keep))
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(byRMS.Index, want) {
		t.Fatalf("RMS alone keeps the same keys %v: the block does not tell the selections apart", want)
	}
	for _, name := range []string{"rms", "max", "mean", "max+rms"} {
		if s, err := ParseSelection(name); err != nil || s.String() != name {
			t.Errorf("ParseSelection(%q) = %v, %v", name, s, err)
		}
	}
	if _, err := ParseSelection("omp"); err == nil {
		t.Error("ParseSelection(omp): no error")
	}
}

// TestRankDeficient: two copies of one key kept side by side make the
// fits' matrices rank-deficient: the normal equations give way to QR,
// whose failure gives way to the ridge fit, with a warning, and the
// result is finite and reproduces the block's attention (the two copies
// together carry the key's weight).
func TestRankDeficient(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	const rest, d, n = 6, 8, 64
	keys := gaussian(r, (rest+1)*d, 1)
	keys = append(keys, keys[:d]...) // token rest+1 copies token 0
	b := Block{Dim: d, Keys: keys, Values: gaussian(r, (rest+2)*d, 1), Queries: gaussian(r, n*d, 1), Scale: 0.5}
	res, err := CompactHead(b, Fit{Keys: rest + 2, Select: Given, Index: []int{0, 1, 2, 3, 4, 5, 6, 7}, BiasMin: -3, BiasMax: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, "ridge") }) {
		t.Errorf("warnings %v: want a refit with ridge", res.Warnings)
	}
	if o, m := maxOutputErr(b, res, gaussian(r, 16*d, 1)); !(o < 1e-2 && m < 1e-2) {
		t.Errorf("output error %g, log-mass error %g", o, m)
	}
}

// TestThreads: a head's fit on several threads gives the same bits as
// on one (each task writes its own part of every result), with budgets
// of one block of the Gram matrix and of several, ridge or not.
func TestThreads(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	const T, d, n = 700, 32, 300
	b := Block{Dim: d, Keys: gaussian(r, T*d, 1), Values: gaussian(r, T*d, 1), Queries: gaussian(r, n*d, 1.5), Scale: 0.18}
	for _, x := range []struct {
		keys  int
		ridge float64
	}{{40, 0}, {150, 0}, {150, 1e-3}} {
		var want Result
		for _, threads := range []int{1, 3, 8} {
			f := AM(x.keys)
			f.Select, f.Threads, f.Ridge = ByMaxRMS, threads, x.ridge
			got, err := CompactHead(b, f)
			if err != nil {
				t.Fatal(err)
			}
			if threads == 1 {
				want = got
				continue
			}
			if !slices.Equal(got.Index, want.Index) || !slices.Equal(got.Bias, want.Bias) || !slices.Equal(got.Values, want.Values) {
				t.Errorf("%d keys, ridge %g, %d threads: another result than one thread's", x.keys, x.ridge, threads)
			}
		}
	}
}

// TestKeyStatistics: each key's attention statistic from newAttention
// (ByRMS, ByMax, ByMean; max+rms's two in one loop) against the weights
// computed here in float64 from the definition, key by key, on blocks of
// queries that do not divide into attnRows, on one thread and on three,
// with the exp-scores kept (OMP) or not. Tolerance: the weights are
// float32 exponentials (within 2 ulp) over a float32 sum, so 1e-5
// relative. max+rms must give each key the same bits as ByMax and ByRMS
// alone (one loop for both, the same operations).
func TestKeyStatistics(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	const T, d, n = 300, 16, 130
	b := Block{Dim: d, Keys: gaussian(r, T*d, 1), Values: gaussian(r, T*d, 1), Queries: gaussian(r, n*d, 1.5), Scale: 0.25}
	for j := range 5 { // keys that one query attends to sharply: the maximum and the RMS rank them apart
		copy(b.Keys[(40*j+3)*d:(40*j+4)*d], b.Queries[(25*j)*d:(25*j+1)*d])
	}
	want := map[Selection][]float64{}
	want[ByMax], want[ByRMS], want[ByMean] = referenceStatistics(b)
	for _, threads := range []int{1, 3} {
		pool := tensor.NewPool(threads)
		for _, keep := range []bool{false, true} {
			alone := map[Selection][]float64{}
			for _, sels := range [][]Selection{{ByRMS}, {ByMax}, {ByMean}, statsFor(ByMaxRMS)} {
				a, err := newAttention(context.Background(), b, pool, keep, sels...)
				if err != nil {
					t.Fatal(err)
				}
				for s, sel := range sels {
					got := a.stats[s]
					if len(got) != T {
						t.Fatalf("%d threads, keep %t, %v: %d statistics of %v, want %d", threads, keep, sels, len(got), sel, T)
					}
					for j, w := range want[sel] {
						if math.Abs(got[j]-w) > 1e-5*w+1e-12 {
							t.Errorf("%d threads, keep %t, %v: key %d's %v %g, want %g", threads, keep, sels, j, sel, got[j], w)
						}
					}
					if len(sels) == 1 {
						alone[sel] = got
					} else if !slices.Equal(got, alone[sel]) {
						t.Errorf("%d threads, keep %t: max+rms's %v differ from %v alone", threads, keep, sel, sel)
					}
				}
			}
		}
		pool.Close()
	}
}
