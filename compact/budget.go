package compact

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/tensor"
)

// plan is how many of the block's tokens each layer's KV head keeps, and,
// for methods that choose them across heads at once, which.
type plan struct {
	budgets [][]int   // [layer][head]
	index   [][][]int // [layer][head]: kept positions, or nil
}

// plan returns the budgets o asks for in a context of n tokens (KVzip's
// scores stop once ctx is done).
func (o Options) plan(ctx context.Context, c Context, sh kvcache.Shape, n int) (plan, error) {
	keep, err := o.perHead(n)
	if err != nil {
		return plan{}, err
	}
	block := n - o.Window
	t := keep - o.Window
	if t < 1 {
		return plan{}, fmt.Errorf("compact: keeping %d of %d tokens per head leaves none for the %d before the window of %d: use a smaller ratio or window", keep, n, block, o.Window)
	}
	layers := len(c.Layers)
	switch {
	case o.Method == PyramidKV:
		return plan{budgets: pyramid(layers, sh.KVHeads, t, block)}, nil
	case o.Method == KVzip:
		return o.kvzip(ctx, c, block, t)
	case o.Share != nil:
		if len(o.Share) != layers {
			return plan{}, fmt.Errorf("compact: budget shares for %d layers, the context has %d", len(o.Share), layers)
		}
		b, err := shareBudgets(o.Share, sh.KVHeads, t, block)
		return plan{budgets: b}, err
	}
	b := make([][]int, layers)
	for l := range b {
		b[l] = make([]int, sh.KVHeads)
		for h := range b[l] {
			b[l][h] = t
		}
	}
	return plan{budgets: b}, nil
}

// kvzip chooses the kept tokens of every layer and head at once: each
// head's key with the largest score, then the largest scores of all the
// rest, t per head on average; a key's score is the largest attention
// weight any extra reference query gives it (KVzip's importance).
func (o Options) kvzip(ctx context.Context, c Context, block, t int) (plan, error) {
	if c.Extra == nil {
		return plan{}, fmt.Errorf("compact: %s needs extra reference queries (repeat-prefill)", KVzip)
	}
	sh := c.Layers[0].Shape
	type cand struct {
		l, h, j int
		s       float64
	}
	var all []cand
	p := plan{budgets: make([][]int, len(c.Layers)), index: make([][][]int, len(c.Layers))}
	pool := tensor.NewPool(o.workers())
	defer pool.Close()
	for l := range c.Layers {
		p.budgets[l] = make([]int, sh.KVHeads)
		p.index[l] = make([][]int, sh.KVHeads)
		for h := range sh.KVHeads {
			b := headBlock(c, l, h, block)
			b.Queries = o.referenceQueries(c, l, h, false)
			if len(b.Queries) == 0 {
				return plan{}, fmt.Errorf("compact: %s: layer %d has no extra reference queries", KVzip, l)
			}
			if err := b.validate(pool); err != nil {
				return plan{}, fmt.Errorf("compact: layer %d head %d: %w", l, h, err)
			}
			a, err := newAttention(ctx, b, pool, false, ByMax)
			if err != nil {
				return plan{}, fmt.Errorf("compact: layer %d head %d: %w", l, h, err)
			}
			sc := a.stats[0]
			best := topK(sc, 1)[0]
			p.index[l][h] = []int{best}
			for j, s := range sc {
				if j != best {
					all = append(all, cand{l, h, j, s})
				}
			}
		}
	}
	slices.SortStableFunc(all, func(x, y cand) int { return cmp.Compare(y.s, x.s) })
	extra := len(c.Layers)*sh.KVHeads*t - len(c.Layers)*sh.KVHeads
	for _, x := range all[:min(extra, len(all))] {
		p.index[x.l][x.h] = append(p.index[x.l][x.h], x.j)
	}
	for l := range p.index {
		for h := range p.index[l] {
			slices.Sort(p.index[l][h])
			p.budgets[l][h] = len(p.index[l][h])
		}
	}
	return p, nil
}

// shareBudgets splits t per head on average among the heads by share
// ([layer][head], non-negative, summing to 1): each head gets its share
// of the total, rounded by largest remainders, at least 1 and at most
// the block.
func shareBudgets(share [][]float64, heads, t, block int) ([][]int, error) {
	var sum float64
	count := 0
	for l, row := range share {
		if len(row) != heads {
			return nil, fmt.Errorf("compact: budget shares of layer %d: %d heads, the model has %d", l, len(row), heads)
		}
		for _, s := range row {
			if !(s >= 0) || math.IsInf(s, 0) {
				return nil, fmt.Errorf("compact: budget share %g of layer %d is not a finite share ≥ 0", s, l)
			}
			sum += s
			count++
		}
	}
	if math.Abs(sum-1) > 1e-6 {
		return nil, fmt.Errorf("compact: budget shares sum to %g, want 1", sum)
	}
	total := count * t
	type rem struct {
		l, h int
		r    float64
	}
	var rems []rem
	out := make([][]int, len(share))
	given := 0
	for l, row := range share {
		out[l] = make([]int, heads)
		for h, s := range row {
			x := s * float64(total)
			out[l][h] = int(x)
			given += out[l][h]
			rems = append(rems, rem{l, h, x - math.Floor(x)})
		}
	}
	slices.SortStableFunc(rems, func(a, b rem) int { return cmp.Compare(b.r, a.r) })
	for _, r := range rems[:total-given] {
		out[r.l][r.h]++
	}
	for l := range out {
		for h := range out[l] {
			out[l][h] = min(max(out[l][h], 1), block)
		}
	}
	return out, nil
}
