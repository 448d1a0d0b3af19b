package alloc

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// bruteForce returns the least summed loss over every choice within
// budget, trying all of them (+Inf when none fits).
func bruteForce(items [][]Option, budget int) float64 {
	best := math.Inf(1)
	var walk func(i, cost int, loss float64)
	walk = func(i, cost int, loss float64) {
		if cost > budget {
			return
		}
		if i == len(items) {
			best = min(best, loss)
			return
		}
		for _, o := range items[i] {
			walk(i+1, cost+o.Cost, loss+o.Loss)
		}
	}
	walk(0, 0, 0)
	return best
}

// randomItems draws items of unequal sizes (1 to 40 elements, as tensors
// or heads of different sizes are): every option is a rate of 1 to 8
// units per element, so an item's cost is its size times the rate, and
// the loss falls with the rate as 4^-rate does, times a random scale per
// item.
func randomItems(r *rand.Rand, n, options int) [][]Option {
	items := make([][]Option, n)
	for i := range items {
		size := 1 + r.IntN(40)
		scale := math.Exp(3 * r.Float64())
		for range options {
			rate := 1 + r.IntN(8)
			items[i] = append(items[i], Option{Cost: size * rate, Loss: scale * math.Pow(4, -float64(rate)) * (0.5 + r.Float64())})
		}
	}
	return items
}

// TestChooseIsOptimal compares the dynamic program with trying every
// choice, on items of unequal size and budgets from the cheapest choice
// to beyond the dearest; the picks keep to the budget and sum to the loss
// returned.
func TestChooseIsOptimal(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 40 {
		items := randomItems(r, 1+r.IntN(6), 1+r.IntN(4))
		lo, hi := 0, 0
		for _, opts := range items {
			c0, c1 := math.MaxInt, 0
			for _, o := range opts {
				c0, c1 = min(c0, o.Cost), max(c1, o.Cost)
			}
			lo, hi = lo+c0, hi+c1
		}
		for _, budget := range []int{lo, lo + 1, (lo + hi) / 2, hi - 1, hi, hi + 50} {
			if budget < lo {
				continue
			}
			picks, loss, err := Choose(items, budget)
			if err != nil {
				t.Fatalf("trial %d budget %d: %v", trial, budget, err)
			}
			want := bruteForce(items, budget)
			// Both sum the same losses, possibly in another order.
			if math.Abs(loss-want) > 1e-12*math.Max(1, want) {
				t.Errorf("trial %d budget %d: loss %g, best possible %g", trial, budget, loss, want)
			}
			cost, sum := 0, 0.0
			for i, j := range picks {
				cost += items[i][j].Cost
				sum += items[i][j].Loss
			}
			if cost > budget || math.Abs(sum-loss) > 1e-12*math.Max(1, loss) {
				t.Errorf("trial %d budget %d: picks cost %d and lose %g, reported %g", trial, budget, cost, sum, loss)
			}
		}
	}
}

// TestChooseTies: of two options with the same loss, the cheaper one is
// taken, whatever the order.
func TestChooseTies(t *testing.T) {
	for _, items := range [][][]Option{
		{{{Cost: 5, Loss: 1}, {Cost: 3, Loss: 1}}},
		{{{Cost: 3, Loss: 1}, {Cost: 5, Loss: 1}}},
	} {
		picks, _, err := Choose(items, 10)
		if err != nil || items[0][picks[0]].Cost != 3 {
			t.Errorf("%v: picked %v, %v", items, picks, err)
		}
	}
}

func TestChooseErrors(t *testing.T) {
	ok := []Option{{Cost: 2, Loss: 1}, {Cost: 4, Loss: 0}}
	for _, tc := range []struct {
		name   string
		items  [][]Option
		budget int
		want   string
	}{
		{"no items", nil, 10, "no items"},
		{"no options", [][]Option{ok, {}}, 10, "item 1 has 0 options"},
		{"negative budget", [][]Option{ok}, -1, "below 0"},
		{"negative cost", [][]Option{{{Cost: -1}}}, 10, "cost -1"},
		{"NaN loss", [][]Option{{{Cost: 1, Loss: math.NaN()}}}, 10, "finite loss"},
		{"infinite loss", [][]Option{{{Cost: 1, Loss: math.Inf(1)}}}, 10, "finite loss"},
		{"over budget", [][]Option{ok, ok}, 3, "cheapest choice costs 4"},
		{"too much work", [][]Option{{{Cost: MaxWork}}, {{Cost: 1}}}, MaxWork + 1, "coarser units"},
		{"overflow", [][]Option{{{Cost: math.MaxInt / 2}}, {{Cost: math.MaxInt / 2}}}, 1, "overflow"},
	} {
		_, _, err := Choose(tc.items, tc.budget)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error ∋ %q", tc.name, err, tc.want)
		}
	}
	if _, _, err := Choose([][]Option{ok}, 1); !errors.Is(err, ErrOverBudget) {
		t.Errorf("over budget: %v is not ErrOverBudget", err)
	}
}

func TestUnits(t *testing.T) {
	for _, tc := range []struct {
		cost, unit float64
		want       int
		err        bool
	}{
		{3.5, 1.0 / 64, 224, false},
		{0, 0.5, 0, false},
		{1.0000000001, 1, 1, false}, // within 1e-9: whole
		{1.001, 1, 2, false},        // rounded up: never over the real budget
		{10, 3, 4, false},
		{1, 0, 0, true},
		{1, math.Inf(1), 0, true},
		{-1, 1, 0, true},
		{math.NaN(), 1, 0, true},
		{1e12, 1, 0, true},
	} {
		got, err := Units(tc.cost, tc.unit)
		if (err != nil) != tc.err || !tc.err && got != tc.want {
			t.Errorf("Units(%g, %g) = %d, %v; want %d (error %v)", tc.cost, tc.unit, got, err, tc.want, tc.err)
		}
	}
}

// TestUnitsOnAGrid: costs of items of very different sizes (a 4096-element
// and a 1e8-element tensor at 2 to 8 bits) rounded up onto a grid of
// budget/steps never let a choice exceed the real budget.
func TestUnitsOnAGrid(t *testing.T) {
	sizes := []float64{4096, 1e8, 3e7}
	rates := []float64{2.5625, 4.5, 8.5}
	budget := 4.0 * (4096 + 1e8 + 3e7)
	unit := budget / 100000
	var items [][]Option
	for i, n := range sizes {
		var opts []Option
		for j, b := range rates {
			c, err := Units(n*b, unit)
			if err != nil {
				t.Fatal(err)
			}
			opts = append(opts, Option{Cost: c, Loss: float64(i+1) * math.Pow(4, -b) * float64(j+1)})
		}
		items = append(items, opts)
	}
	picks, _, err := Choose(items, 100000)
	if err != nil {
		t.Fatal(err)
	}
	var spent float64
	for i, j := range picks {
		spent += sizes[i] * rates[j]
	}
	if spent > budget {
		t.Errorf("picks %v spend %g bits, budget %g", picks, spent, budget)
	}
}
