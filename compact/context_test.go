package compact

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/kvcache"
)

// synthContext returns a context of n tokens over layers layers of shape
// sh with random keys, values and queries, where the keys at the heavy
// positions point along the queries' common direction (every KV head),
// so that every query attends to them most.
func synthContext(r *rand.Rand, layers, n int, sh kvcache.Shape, heavy []int) Context {
	d := sh.HeadDim
	u := gaussian(r, d, 1)
	var c Context
	for range layers {
		tr := &kvcache.Trace{Shape: sh, Scale: 0.35}
		for p := range n {
			k := gaussian(r, sh.KVHeads*d, 0.5)
			if slices.Contains(heavy, p) {
				for h := range sh.KVHeads {
					for i := range d {
						k[h*d+i] = 3 * u[i]
					}
				}
			}
			q := gaussian(r, sh.QHeads*d, 0.5)
			for h := range sh.QHeads {
				for i := range d {
					q[h*d+i] += u[i]
				}
			}
			tr.K = append(tr.K, k...)
			tr.V = append(tr.V, gaussian(r, sh.KVHeads*d, 1)...)
			tr.Q = append(tr.Q, q...)
		}
		c.Layers = append(c.Layers, tr)
	}
	return c
}

// TestCompactMethods: every method keeps its budget per head (the window
// aside), positions inside the block in order, finite numbers; the
// eviction methods keep original tokens untouched, and the ones that
// score attention keep the heavily attended positions.
func TestCompactMethods(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	sh := kvcache.Shape{QHeads: 4, KVHeads: 2, HeadDim: 8}
	const layers, n, window = 3, 96, 4
	heavy := []int{10, 40}
	c := synthContext(r, layers, n, sh, heavy)
	c.Extra = make([][]float32, layers)
	for l := range c.Extra {
		c.Extra[l] = slices.Clone(c.Layers[l].Q[:20*sh.QHeads*sh.HeadDim])
	}
	block := n - window
	for _, m := range Methods() {
		t.Run(string(m), func(t *testing.T) {
			o := Options{Method: m, Ratio: 8, Window: window, Queries: 256}
			res, err := Compact(context.Background(), c, o)
			if err != nil {
				t.Fatal(err)
			}
			per := n/8 - window
			total := 0
			for l, heads := range res.Heads {
				for h, hr := range heads {
					total += hr.Len()
					if m != PyramidKV && m != KVzip && hr.Len() != per {
						t.Errorf("layer %d head %d keeps %d, want %d", l, h, hr.Len(), per)
					}
					if !slices.IsSorted(hr.Index) || hr.Index[0] < 0 || hr.Index[len(hr.Index)-1] >= block {
						t.Fatalf("layer %d head %d keeps %v: not ascending inside [0, %d)", l, h, hr.Index, block)
					}
					if !m.Fits() {
						d := sh.HeadDim
						tr := c.Layers[l]
						for k, p := range hr.Index {
							if hr.Bias[k] != 0 || !slices.Equal(hr.Values[k*d:(k+1)*d], tr.V[(p*sh.KVHeads+h)*d:(p*sh.KVHeads+h+1)*d]) {
								t.Fatalf("layer %d head %d: eviction changed token %d", l, h, p)
							}
						}
					}
					switch m {
					case SnapKV, PyramidKV, AMOMPMethod:
						// Max-pooling keeps a voted token's neighbours
						// too: a small budget holds one heavy position.
						// The heavy keys are equal: OMP keeps one (its
						// β counts both).
						if !slices.Contains(hr.Index, heavy[0]) && !slices.Contains(hr.Index, heavy[1]) {
							t.Errorf("layer %d head %d keeps %v, no heavy position %v", l, h, hr.Index, heavy)
						}
					case AMHighest, H2O, KVzip:
						for _, p := range heavy {
							if !slices.Contains(hr.Index, p) {
								t.Errorf("layer %d head %d keeps %v, not the heavy position %d", l, h, hr.Index, p)
							}
						}
					}
				}
			}
			if want := layers * sh.KVHeads * per; total != want && m != PyramidKV {
				t.Errorf("%d tokens kept in all, want %d", total, want)
			}
			if got := res.Kept(); got != total+layers*sh.KVHeads*window {
				t.Errorf("Kept() = %d, want %d", got, total+layers*sh.KVHeads*window)
			}
			if len(res.WindowK[0]) != window*sh.KVHeads*sh.HeadDim || !slices.Equal(res.WindowV[1], c.Layers[1].V[block*sh.KVHeads*sh.HeadDim:]) {
				t.Error("window tokens are not the context's last ones")
			}
		})
	}
}

// TestCompactWorkers: Compact on several workers (heads side by side;
// with a worker for every head, their reference attentions first as one
// region, then each head's fits on a pool of its own) gives one worker's
// bits, for both fits.
func TestCompactWorkers(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	sh := kvcache.Shape{QHeads: 4, KVHeads: 2, HeadDim: 16}
	c := synthContext(r, 2, 300, sh, []int{7, 150})
	uneven := [][]float64{{0.1, 0.1}, {0.2, 0.6}} // more threads to the heavy head when every head has a worker
	for _, tc := range []struct {
		m     Method
		share [][]float64
	}{{AMHighest, nil}, {AMOMPMethod, nil}, {AMHighest, uneven}} {
		m := tc.m
		var want *Compacted
		for _, workers := range []int{1, 3, 4, 11} { // 4 heads: fewer, as many and more workers
			got, err := Compact(context.Background(), c, Options{Method: m, Ratio: 10, Window: 4, Queries: 200, Workers: workers, Share: tc.share})
			if err != nil {
				t.Fatal(err)
			}
			if want == nil {
				want = got
				continue
			}
			for l := range got.Heads {
				for h, g := range got.Heads[l] {
					w := want.Heads[l][h]
					if !slices.Equal(g.Index, w.Index) || !slices.Equal(g.Bias, w.Bias) || !slices.Equal(g.Values, w.Values) {
						t.Errorf("%s, %d workers: layer %d head %d differs from one worker's", m, workers, l, h)
					}
				}
			}
		}
	}
}

// TestEvictionClosedForms checks the positions of the methods that do not
// look at attention, and PyramidKV's and share budgets.
func TestEvictionClosedForms(t *testing.T) {
	if got := streaming(100, 10); !slices.Equal(got, []int{0, 1, 2, 3, 94, 95, 96, 97, 98, 99}) {
		t.Errorf("streaming(100, 10) = %v", got)
	}
	if got := streaming(100, 3); !slices.Equal(got, []int{0, 1, 2}) {
		t.Errorf("streaming(100, 3) = %v", got)
	}
	p := pyramid(5, 2, 40, 1000)
	if p[0][0] != 78 || p[4][1] != 2 || p[2][0] != 40 {
		t.Errorf("pyramid budgets %v: want 78 … 40 … 2", p)
	}
	sum := 0
	for _, row := range p {
		sum += row[0]
	}
	if sum != 5*40 {
		t.Errorf("pyramid budgets sum to %d per head, want %d", sum, 5*40)
	}
	b, err := shareBudgets([][]float64{{0.5, 0.25}, {0.125, 0.125}}, 2, 10, 100)
	if err != nil || !slices.Equal(b[0], []int{20, 10}) || !slices.Equal(b[1], []int{5, 5}) {
		t.Errorf("share budgets %v, %v", b, err)
	}
	if _, err := shareBudgets([][]float64{{0.5, 0.25}}, 2, 10, 100); err == nil {
		t.Error("shares summing to 0.75 accepted")
	}
}

// TestCompactErrors: degenerate requests get clear errors.
func TestCompactErrors(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	sh := kvcache.Shape{QHeads: 2, KVHeads: 1, HeadDim: 8}
	c := synthContext(r, 2, 40, sh, nil)
	for _, x := range []struct {
		name string
		o    Options
		want string
	}{
		{"ratio below 1", Options{Method: AMHighest, Ratio: 0.5}, "at least 1"},
		{"no ratio", Options{Method: AMHighest}, "at least 1"},
		{"budget above context", Options{Method: AMHighest, Keep: 41}, "want 1 to the context's 40"},
		{"ratio and keep", Options{Method: AMHighest, Ratio: 2, Keep: 4}, "not both"},
		{"context not longer than window", Options{Method: AMHighest, Ratio: 2, Window: 40}, "not longer than the window"},
		{"window eats the budget", Options{Method: H2O, Ratio: 10, Window: 4}, "leaves none"},
		{"kvzip without repeat queries", Options{Method: KVzip, Ratio: 4}, "repeat-prefill"},
		{"unknown method", Options{Method: "lru", Ratio: 4}, "unknown method"},
		{"shares of too few layers", Options{Method: AMHighest, Ratio: 4, Share: [][]float64{{1}}}, "for 1 layers"},
		{"bad shares", Options{Method: AMHighest, Ratio: 4, Share: [][]float64{{1}, {1}}}, "want 1"},
		{"extra share above 1", Options{Method: AMHighest, Ratio: 4, ExtraShare: 1.5}, "extra query share"},
		{"extra share NaN", Options{Method: AMHighest, Ratio: 4, ExtraShare: math.NaN()}, "extra query share"},
		{"bad selection", Options{Method: AMHighest, Ratio: 4, Select: 99}, "Fit.Select 99"},
		{"bad fit", Options{Method: AMOMPMethod, Ratio: 4, Fit: Fit{Keys: 1, Ridge: -1}}, "Fit.Ridge -1"},
	} {
		t.Run(x.name, func(t *testing.T) {
			_, err := Compact(context.Background(), c, x.o)
			if err == nil || !strings.Contains(err.Error(), x.want) {
				t.Fatalf("error %v, want one containing %q", err, x.want)
			}
		})
	}
	if _, err := Compact(context.Background(), Context{}, Options{Method: AMHighest, Ratio: 2}); err == nil {
		t.Error("an empty context was compacted")
	}
}

// TestReferenceQueryShare: the extra queries take at most ExtraShare of
// the reference queries (rounded up), the context's own the rest; fewer
// extra ones leave more to the own; without own queries (KVzip) the
// extra ones take all; every row is a row of the right KV head's group.
func TestReferenceQueryShare(t *testing.T) {
	sh := kvcache.Shape{QHeads: 4, KVHeads: 2, HeadDim: 2}
	qd := sh.QHeads * sh.HeadDim
	// Row values name their source: own queries 1000+token, extra
	// 2000+token; coordinate 1 is the query head.
	rows := func(tokens int, base float32) []float32 {
		q := make([]float32, 0, tokens*qd)
		for tok := range tokens {
			for h := range sh.QHeads {
				q = append(q, base+float32(tok), float32(h))
			}
		}
		return q
	}
	for _, x := range []struct {
		name             string
		extraTokens      int
		share            float64
		own              bool
		wantExtra, total int
	}{
		{"default share", 50, 0, true, 12, 16},
		{"half", 50, 0.5, true, 8, 16},
		{"all", 50, 1, true, 16, 16},
		{"few extra", 1, 0.75, true, 2, 16},
		{"extra alone", 50, 0.25, false, 16, 16},
	} {
		t.Run(x.name, func(t *testing.T) {
			c := Context{Layers: []*kvcache.Trace{{Shape: sh, Q: rows(40, 1000)}}, Extra: [][]float32{rows(x.extraTokens, 2000)}}
			o := Options{Queries: 16, ExtraShare: x.share, Seed: 3}
			h := 1
			q := o.referenceQueries(c, 0, h, x.own)
			if len(q) != x.total*sh.HeadDim {
				t.Fatalf("%d rows, want %d", len(q)/sh.HeadDim, x.total)
			}
			extra := 0
			for i := 0; i < len(q); i += sh.HeadDim {
				if g := int(q[i+1]); g/sh.Group() != h {
					t.Errorf("row %d is query head %d's, not of KV head %d's group", i/sh.HeadDim, g, h)
				}
				if q[i] >= 2000 {
					extra++
				}
			}
			if extra != x.wantExtra {
				t.Errorf("%d extra rows, want %d", extra, x.wantExtra)
			}
		})
	}
}

// TestThreadShares checks the split of the workers over heads by cost:
// every head gets a thread, the rest go by cost, and the shares add up to
// the workers.
// TestHeadCost: the embedded model's measured budgets at 20x on a
// 4k-token context (4x the uniform budget in the last layer, 0.25x to
// 0.5x elsewhere) give every head at least two of 16 threads (by budget
// alone, [2 2 2 1 1 8]: two heads of the same attention on one thread)
// and the largest the most; uniform budgets, as many to each head.
func TestHeadCost(t *testing.T) {
	const block, d = 3957, 128
	for _, c := range []struct {
		budgets []int
		want    []int
	}{
		{[]int{95, 95, 48, 48, 48, 758}, []int{3, 2, 2, 2, 2, 5}},
		{[]int{182, 182, 182, 182, 182, 182}, []int{3, 3, 3, 3, 2, 2}},
	} {
		costs := make([]int, len(c.budgets))
		for i, b := range c.budgets {
			costs[i] = headCost(block, b, d)
		}
		if got := threadShares(costs, 16); !slices.Equal(got, c.want) {
			t.Errorf("budgets %v: threads %v, want %v", c.budgets, got, c.want)
		}
	}
}

func TestThreadShares(t *testing.T) {
	for _, c := range []struct {
		costs   []int
		workers int
		want    []int
	}{
		{[]int{198, 198, 198, 198, 198, 198}, 16, []int{3, 3, 3, 3, 2, 2}},
		{[]int{100, 100, 100, 100, 100, 400}, 16, []int{2, 2, 2, 2, 2, 6}},
		{[]int{1, 1000}, 16, []int{1, 15}},
		{[]int{5, 5, 5}, 3, []int{1, 1, 1}},
		{[]int{0, 0}, 8, []int{4, 4}},
		{[]int{3}, 1, []int{1}},
	} {
		got := threadShares(c.costs, c.workers)
		if !slices.Equal(got, c.want) {
			t.Errorf("threadShares(%v, %d) = %v, want %v", c.costs, c.workers, got, c.want)
		}
		sum := 0
		for _, n := range got {
			sum += n
		}
		if sum != max(c.workers, len(c.costs)) && slices.Max(c.costs) > 0 {
			t.Errorf("threadShares(%v, %d): %d threads in all", c.costs, c.workers, sum)
		}
	}
}
