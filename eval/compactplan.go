package eval

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/turbomem/turbomem/alloc"
	"github.com/turbomem/turbomem/compact"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tokenizer"
)

// CompactPlanOptions configures CompactShares.
type CompactPlanOptions struct {
	// Method, Ratio, Window, Queries and Extra are the compaction's, as
	// for compact.Options and compact.QueryOptions; KV the caches'.
	Method          compact.Method
	Ratio           float64
	Window, Queries int
	Extra           compact.QueryOptions
	KV              kvcache.Config
	// Length is the calibration context's length (0: 2048); Tokens the
	// held-out tokens after it whose distributions are compared (0: 128).
	Length, Tokens int
	// Levels are the budgets measured per head, as multiples of the
	// uniform budget (nil: DefaultCompactLevels); no head keeps more
	// than MaxShare of the tokens before the window (0: 0.75, the cap of
	// the attention-matching paper's budgets).
	Levels   []float64
	MaxShare float64
	Seed     uint64
}

// DefaultCompactLevels are the budgets CompactShares measures per head,
// as multiples of the uniform budget.
var DefaultCompactLevels = []float64{0.25, 0.5, 1, 2, 4}

// CompactPlan is what CompactShares chose and measured.
type CompactPlan struct {
	// Shares holds every head's share of the kept tokens ([layer][head],
	// for compact.Options.Share).
	Shares [][]float64 `json:"shares"`
	// Budgets are the tokens measured per head; Loss[layer·heads+head][i]
	// the mean KL divergence (nats) with that head alone at Budgets[i].
	Budgets []int       `json:"budgets"`
	Loss    [][]float64 `json:"loss"`
	// Predicted and Uniform are the summed losses of the choice and of
	// the uniform budget.
	Predicted float64 `json:"predicted"`
	Uniform   float64 `json:"uniform"`
}

// CompactShares chooses non-uniform compaction budgets from measured
// loss: on a calibration context of held-out text it measures, for every
// layer and KV head and every level, the mean KL divergence of the
// model's distributions over the held-out continuation from the
// uncompacted f16 cache's when only that head's context is compacted to
// that budget (every other head kept whole), then chooses one level per
// head so that the summed loss is least while the total stays within the
// uniform budget's (alloc.Choose, exact: the allocator behind --kv auto).
func CompactShares(ctx context.Context, m *model.Model, tok *tokenizer.Tokenizer, heldout []int32, o CompactPlanOptions) (*CompactPlan, error) {
	if o.Length == 0 {
		o.Length = 2048
	}
	if o.Tokens == 0 {
		o.Tokens = 128
	}
	if o.Levels == nil {
		o.Levels = DefaultCompactLevels
	}
	if o.MaxShare == 0 {
		o.MaxShare = 0.75
	}
	if o.Tokens < 2 || o.Length+o.Tokens > m.Config.Context || !(o.MaxShare > 0 && o.MaxShare <= 1) || len(o.Levels) == 0 || len(o.Levels) > alloc.MaxOptions {
		return nil, fmt.Errorf("eval: compaction budgets: a context of %d tokens and %d after it (model context %d), %d levels, cap %g: out of range", o.Length, o.Tokens, m.Config.Context, len(o.Levels), o.MaxShare)
	}
	var prefix []int32
	if b := tok.BOS(); b >= 0 {
		prefix = []int32{b}
	}
	fill := o.Length - len(prefix)
	if len(heldout) < fill+o.Tokens {
		return nil, fmt.Errorf("eval: compaction budgets: %d held-out tokens, %d needed", len(heldout), fill+o.Tokens)
	}
	// The calibration window: the end of the held-out text (the needle
	// and fact contexts draw from anywhere, as eval kv's calibration).
	w := heldout[len(heldout)-fill-o.Tokens:]
	ids, cont := slices.Concat(prefix, w[:fill]), w[fill:]
	refLogits, err := continuation(m, kvcache.F16(), ids, cont)
	if err != nil {
		return nil, err
	}
	ref := continuationDists(refLogits, cont)
	_, c, _, err := compact.Prefill(m, o.KV, ids, len(ids))
	if err != nil {
		return nil, err
	}
	q := o.Extra
	q.Repeat = q.Repeat || o.Method == compact.KVzip
	extra, err := compact.CollectQueries(ctx, m, tok, c, ids, q, 0)
	if err != nil {
		return nil, err
	}
	c.Extra = extra.For(o.Method)
	base := compact.Options{Method: o.Method, Window: o.Window, Queries: o.Queries, Seed: o.Seed}
	n := len(ids)
	block := n - o.Window
	if !(o.Ratio >= 1) {
		return nil, fmt.Errorf("eval: compaction budgets: ratio %g below 1", o.Ratio)
	}
	t0 := int(float64(n)/o.Ratio) - o.Window // the uniform budget, as compact.Options
	if t0 < 1 {
		return nil, fmt.Errorf("eval: compaction budgets: ratio %g leaves no tokens before the window of %d", o.Ratio, o.Window)
	}
	whole, err := compact.Compact(ctx, c, compact.Options{Method: compact.Truncate, Keep: n, Window: o.Window})
	if err != nil {
		return nil, err
	}
	sh := m.CacheShape()
	layers := m.Config.Layers
	items := make([][]alloc.Option, layers*sh.KVHeads)
	plan := &CompactPlan{}
	for _, lv := range o.Levels {
		t := min(max(int(math.Round(lv*float64(t0))), 1), int(o.MaxShare*float64(block)))
		if !slices.Contains(plan.Budgets, t) {
			plan.Budgets = append(plan.Budgets, t)
		}
	}
	if !slices.Contains(plan.Budgets, t0) {
		return nil, fmt.Errorf("eval: compaction budgets: the levels %v do not hold the uniform budget 1", o.Levels)
	}
	for _, t := range plan.Budgets {
		lo := base
		lo.Keep = t + o.Window
		comp, err := compact.Compact(ctx, c, lo)
		if err != nil {
			return nil, err
		}
		for l := range layers {
			for h := range sh.KVHeads {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				probe := *whole
				probe.Heads = make([][]compact.Result, layers)
				for i := range layers {
					probe.Heads[i] = slices.Clone(whole.Heads[i])
				}
				probe.Heads[l][h] = comp.Heads[l][h]
				s, err := compact.Resume(m, &probe, o.KV, n+len(cont))
				if err != nil {
					return nil, err
				}
				logits, err := s.Forward(cont[:len(cont)-1], true)
				if err != nil {
					return nil, err
				}
				var a agreementAcc
				a.addLogits(ref, logits)
				items[l*sh.KVHeads+h] = append(items[l*sh.KVHeads+h], alloc.Option{Cost: t, Loss: a.result().KLMean})
			}
		}
	}
	picks, loss, err := alloc.Choose(items, layers*sh.KVHeads*t0)
	if err != nil {
		return nil, fmt.Errorf("eval: compaction budgets: %w", err)
	}
	plan.Predicted = loss
	u := slices.Index(plan.Budgets, t0)
	total := 0
	for i, p := range picks {
		total += items[i][p].Cost
		plan.Uniform += items[i][u].Loss
		row := make([]float64, len(items[i]))
		for j, x := range items[i] {
			row[j] = x.Loss
		}
		plan.Loss = append(plan.Loss, row)
	}
	plan.Shares = make([][]float64, layers)
	for l := range plan.Shares {
		plan.Shares[l] = make([]float64, sh.KVHeads)
		for h := range plan.Shares[l] {
			it := items[l*sh.KVHeads+h]
			plan.Shares[l][h] = float64(it[picks[l*sh.KVHeads+h]].Cost) / float64(total)
		}
	}
	return plan, nil
}
