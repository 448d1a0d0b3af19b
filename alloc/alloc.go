// Package alloc chooses one option for each of a list of items so that the
// summed loss is least while the summed cost stays within a budget: the
// multiple-choice knapsack, solved exactly by dynamic programming over
// whole units of cost. It is the allocator behind per-layer KV plans
// (kvcache.Allocate: one item per layer's keys or values, one option per
// format, costs in 1/64 bit) and serves any budget split of the same kind
// (weight types per tensor, compaction budgets per head), where items may
// differ in size: an item's cost is its size times its option's rate, in
// whatever unit the caller picks (Units rounds real costs onto a grid).
//
// The dynamic program takes O(options × budget) time and O(items ×
// budget) bytes, so the budget in units is bounded (MaxWork).
package alloc

import (
	"errors"
	"fmt"
	"math"
)

// Option is one choice for an item.
type Option struct {
	// Cost is what choosing the option spends of the budget, in whole
	// units (≥ 0).
	Cost int
	// Loss is what choosing it costs in quality (finite; smaller is
	// better).
	Loss float64
}

// MaxOptions bounds the options of one item.
const MaxOptions = 255

// MaxWork bounds items × (budget in units + 1), the bytes the choice
// table takes.
const MaxWork = 1 << 30

// ErrOverBudget is returned by Choose when even the cheapest option of
// every item exceeds the budget.
var ErrOverBudget = errors.New("alloc: the cheapest choice exceeds the budget")

// Choose returns, for every item, the index of the option chosen, and the
// least summed loss, over all choices whose summed cost is at most budget.
// Among choices of equal loss, each item (from the last back) takes the
// cheaper option, so that the result is deterministic. It fails with an
// error wrapping ErrOverBudget when no choice fits.
func Choose(items [][]Option, budget int) (picks []int, loss float64, err error) {
	if len(items) == 0 {
		return nil, 0, errors.New("alloc: no items")
	}
	if budget < 0 {
		return nil, 0, fmt.Errorf("alloc: budget %d below 0", budget)
	}
	minCost, maxCost := 0, 0
	for i, opts := range items {
		if len(opts) == 0 || len(opts) > MaxOptions {
			return nil, 0, fmt.Errorf("alloc: item %d has %d options, want 1 to %d", i, len(opts), MaxOptions)
		}
		lo, hi := math.MaxInt, 0
		for j, o := range opts {
			if o.Cost < 0 || math.IsNaN(o.Loss) || math.IsInf(o.Loss, 0) {
				return nil, 0, fmt.Errorf("alloc: item %d option %d: cost %d, loss %g: want a cost ≥ 0 and a finite loss", i, j, o.Cost, o.Loss)
			}
			lo, hi = min(lo, o.Cost), max(hi, o.Cost)
		}
		if minCost > math.MaxInt/2-lo || maxCost > math.MaxInt/2-hi {
			return nil, 0, fmt.Errorf("alloc: costs overflow")
		}
		minCost, maxCost = minCost+lo, maxCost+hi
	}
	if minCost > budget {
		return nil, 0, fmt.Errorf("%w: the cheapest choice costs %d units, the budget is %d", ErrOverBudget, minCost, budget)
	}
	// Beyond the dearest choice, more budget changes nothing.
	budget = min(budget, maxCost)
	if int64(len(items))*int64(budget+1) > MaxWork {
		return nil, 0, fmt.Errorf("alloc: %d items × a budget of %d units exceeds %d: use coarser units", len(items), budget, MaxWork)
	}
	// best[c]: least loss of items [0, i) within c units; pick[i][c]: the
	// option item i takes in the best choice for items [0, i] within c.
	inf := math.Inf(1)
	best := make([]float64, budget+1)
	next := make([]float64, budget+1)
	pick := make([][]uint8, len(items))
	for i, opts := range items {
		pick[i] = make([]uint8, budget+1)
		for c := range next {
			next[c] = inf
			for j, o := range opts {
				if o.Cost > c || math.IsInf(best[c-o.Cost], 1) {
					continue
				}
				// Ties go to the cheaper option.
				if l := best[c-o.Cost] + o.Loss; l < next[c] || l == next[c] && o.Cost < opts[pick[i][c]].Cost {
					next[c], pick[i][c] = l, uint8(j)
				}
			}
		}
		best, next = next, best
	}
	picks = make([]int, len(items))
	for i, c := len(items)-1, budget; i >= 0; i-- {
		picks[i] = int(pick[i][c])
		c -= items[i][picks[i]].Cost
	}
	return picks, best[budget], nil
}

// Units returns a real cost in whole units of unit, rounded up (a cost
// within 1e-9 of a whole number of units is that number): choosing on
// rounded-up costs never spends more than the real budget, and with a
// unit of budget/steps loses at most one unit per item against the exact
// choice. It fails for a cost or unit that is not finite and positive (a
// cost may be 0) or a result beyond MaxWork.
func Units(cost, unit float64) (int, error) {
	if !(unit > 0) || math.IsInf(unit, 0) || !(cost >= 0) || math.IsInf(cost, 0) {
		return 0, fmt.Errorf("alloc: cost %g in units of %g: want a finite cost ≥ 0 and a finite unit > 0", cost, unit)
	}
	u := cost / unit
	if u > MaxWork {
		return 0, fmt.Errorf("alloc: cost %g is %g units of %g, more than %d: use coarser units", cost, u, unit, MaxWork)
	}
	r := math.Round(u)
	if math.Abs(u-r) <= 1e-9*math.Max(1, u) {
		return int(r), nil
	}
	return int(math.Ceil(u)), nil
}
