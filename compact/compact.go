// Package compact shrinks a context's keys and values to a few fitted ones
// per layer and KV head (attention matching, docs/ALGORITHMS.md §12), and holds
// the eviction baselines it is measured against in the same harness.
//
// Attention matching (Zweiger, Fu, Guo, Kim, "Attention Matching", 2026)
// replaces one KV head's T keys K and values V by t ≪ T keys C₁, per-key
// logit biases β and values C₂ such that, for a set of reference queries
// q (n of them, the query heads of a group pooled):
//
//	mass:   Σᵢ exp(s·q·kᵢ) ≈ Σⱼ exp(s·q·c₁ⱼ + βⱼ)
//	output: softmax(s·q·Kᵀ)·V ≈ softmax(s·q·C₁ᵀ + β)·C₂
//
// with s the attention scale. Matching the mass is what lets tokens
// appended later get their right share of attention next to the compacted
// block. CompactHead does it in three steps: choose C₁ among the original
// keys (highest attention, or orthogonal matching pursuit on the mass),
// fit B = exp(β) ≥ 0 by least squares on the mass equations, clamped to
// bounds, then fit C₂ by (ridge) least squares on the outputs.
package compact

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/turbomem/turbomem/tensor"
)

// Block is one KV head's keys and values to compact, and the reference
// queries whose attention the compacted block must reproduce.
type Block struct {
	// Dim is the head dimension d.
	Dim int
	// Keys and Values hold T rows of Dim values each, token after token;
	// keys after RoPE, as a cache holds them.
	Keys, Values []float32
	// Queries holds n rows of Dim values (after RoPE): the reference
	// queries, the query heads of a group pooled.
	Queries []float32
	// Scale is the attention scale s (1/√d).
	Scale float32
}

// Len returns the number of tokens T in the block.
func (b Block) Len() int {
	if b.Dim <= 0 {
		return 0
	}
	return len(b.Keys) / b.Dim
}

// validate checks the block's shape, then that every number in it is
// finite (in chunks over pool; nil: the caller's goroutine).
func (b Block) validate(pool *tensor.Pool) error {
	if err := b.validateShape(); err != nil {
		return err
	}
	return b.validateFinite(pool)
}

// validateShape checks the block's parameters and lengths (cheap: it
// reads no keys, values or queries).
func (b Block) validateShape() error {
	if b.Dim <= 0 || b.Dim > 1<<14 {
		return fmt.Errorf("compact: Block.Dim %d: want a head dimension in [1, %d]", b.Dim, 1<<14)
	}
	if !(b.Scale > 0) || math.IsInf(float64(b.Scale), 0) {
		return fmt.Errorf("compact: Block.Scale %g: want a positive, finite attention scale", b.Scale)
	}
	if len(b.Keys) == 0 || len(b.Keys)%b.Dim != 0 || len(b.Values) != len(b.Keys) {
		return fmt.Errorf("compact: Block.Keys and Block.Values hold %d and %d values: want the same whole number of rows of %d (Block.Dim)", len(b.Keys), len(b.Values), b.Dim)
	}
	if len(b.Queries) == 0 || len(b.Queries)%b.Dim != 0 {
		return fmt.Errorf("compact: Block.Queries holds %d values: want a positive whole number of rows of %d (Block.Dim)", len(b.Queries), b.Dim)
	}
	return nil
}

// validateFinite checks that every number of a block of valid shape is
// finite, the values in chunks over pool (nil: the caller's goroutine).
func (b Block) validateFinite(pool *tensor.Pool) error {
	parts := []struct {
		name string
		x    []float32
	}{{"Block.Keys", b.Keys}, {"Block.Values", b.Values}, {"Block.Queries", b.Queries}}
	// Each chunk's first value that is not finite (−1: none); the first
	// of all is reported.
	const chunk = 1 << 16
	var starts []int // the first chunk of each part
	chunks := 0
	for _, p := range parts {
		starts = append(starts, chunks)
		chunks += (len(p.x) + chunk - 1) / chunk
	}
	first := make([]int, chunks)
	pool.Run(chunks, func(c, _ int) {
		part := rangeOf(starts, c)
		x := parts[part].x
		i0 := (c - starts[part]) * chunk
		first[c] = -1
		for i, v := range x[i0:min(len(x), i0+chunk)] {
			if math.Float32bits(v)&0x7f800000 == 0x7f800000 { // NaN or ±Inf
				first[c] = i0 + i
				break
			}
		}
	})
	for c, i := range first {
		if i < 0 {
			continue
		}
		p := parts[rangeOf(starts, c)]
		return fmt.Errorf("compact: %s row %d, coordinate %d is %g", p.name, i/b.Dim, i%b.Dim, p.x[i])
	}
	return nil
}

// Selection says how CompactHead chooses the kept keys among the
// original ones.
type Selection uint8

const (
	// ByRMS keeps the keys with the largest root-mean-square attention
	// weight over the reference queries (the paper's highest-attention
	// selection).
	ByRMS Selection = iota + 1
	// ByMax keeps the keys with the largest attention weight from any
	// reference query.
	ByMax
	// ByMean keeps the keys with the largest mean attention weight.
	ByMean
	// ByOMP grows the kept set greedily: each step adds the keys whose
	// exp-score columns correlate most with what the kept keys' fitted
	// mass still misses (orthogonal matching pursuit on the mass).
	ByOMP
	// Given keeps the keys listed in Fit.Index.
	Given
	// ByMaxRMS keeps half the keys (rounded up) by ByMax, the rest by
	// ByRMS among the others: the keys some query attends to most (what
	// retrieval asks for) and those attended to broadly.
	ByMaxRMS
)

var selectionNames = map[Selection]string{ByRMS: "rms", ByMax: "max", ByMean: "mean", ByOMP: "omp", Given: "given", ByMaxRMS: "max+rms"}

// ParseSelection returns the highest-attention key selection called name:
// "rms", "max", "mean" or "max+rms" (OMP and given keys are chosen
// otherwise: by method and by index).
func ParseSelection(name string) (Selection, error) {
	for _, s := range []Selection{ByRMS, ByMax, ByMean, ByMaxRMS} {
		if selectionNames[s] == name {
			return s, nil
		}
	}
	return 0, fmt.Errorf("compact: unknown key selection %q; known: rms, max, mean, max+rms", name)
}

// String returns the selection's name.
func (s Selection) String() string {
	if n, ok := selectionNames[s]; ok {
		return n
	}
	return fmt.Sprintf("Selection(%d)", uint8(s))
}

// Step is one stage of OMP's progressive schedule: while fewer than Until
// keys are kept (0: from there on), add PerStep keys per step and refit
// the mass weights every Refit steps.
type Step struct {
	Until, PerStep, Refit int
}

// DefaultSchedule is the progressive schedule of the paper's code: one key
// per step up to 300 keys, then two per step refitting every second step
// up to 1500, then four per step refitting every second step.
var DefaultSchedule = []Step{{300, 1, 1}, {1500, 2, 2}, {0, 4, 2}}

// Fit configures CompactHead. The zero Fit is not usable: Keys and Select
// are required; AM and AMOMP return the paper's settings.
type Fit struct {
	// Keys is the number t of keys to keep, 1 ≤ t ≤ T.
	Keys int
	// Select says how the keys are chosen; Index lists them for Given
	// (distinct positions in [0, T)).
	Select Selection
	Index  []int
	// BiasMin and BiasMax bound β = log B (natural-log units added to the
	// scaled scores). The least-squares weights are clamped to
	// [e^BiasMin, e^BiasMax].
	BiasMin, BiasMax float64
	// PGDIters is the number of projected-gradient steps (step 1/‖M‖₂²)
	// that follow the clamped least-squares weights (0: none).
	PGDIters int
	// Schedule is OMP's progressive schedule (nil: DefaultSchedule).
	Schedule []Step
	// DropBelow, for OMP when negative, replaces kept keys whose fitted β
	// falls below it by new ones (at most three rounds); 0 keeps every
	// key chosen.
	DropBelow float64
	// NoBias keeps β = 0 (eviction); DirectValues keeps the original
	// values of the kept keys instead of fitting them (eviction).
	NoBias, DirectValues bool
	// Ridge regularises the value fit: λ = Ridge·‖X‖₂², X the compacted
	// attention weights (0: plain least squares).
	Ridge float64
	// Threads is the number of goroutines the head's products and passes
	// use (0 or 1: the caller's alone), on a pool CompactHead starts for
	// the call; Pool, if not nil, runs them instead (Threads unused). A
	// task of Pool must not call CompactHead with it (a Pool runs one
	// region at a time): Compact gives each of its head workers a Pool
	// of its own.
	Threads int
	Pool    *tensor.Pool
}

// AM returns the paper's highest-attention fit ("AM-HighestAttnKeys"):
// keys by RMS attention, β clamped to [−3, 3] after least squares and two
// projected-gradient steps, values by least squares.
func AM(t int) Fit {
	return Fit{Keys: t, Select: ByRMS, BiasMin: -3, BiasMax: 3, PGDIters: 2}
}

// AMOMP returns the paper's OMP fit ("AM-OMP"): keys by OMP with the
// progressive schedule, B clamped to [10⁻¹², e⁷], keys with β < −7
// replaced, values by least squares.
func AMOMP(t int) Fit {
	return Fit{Keys: t, Select: ByOMP, BiasMin: math.Log(1e-12), BiasMax: 7, DropBelow: -7}
}

// validate checks the fit against a block of n tokens: its parameters
// (validateParams), then its budget and given keys.
func (f Fit) validate(n int) error {
	if err := f.validateParams(); err != nil {
		return err
	}
	if f.Keys > n {
		return fmt.Errorf("compact: Fit.Keys %d is larger than the block's %d tokens", f.Keys, n)
	}
	if f.Select == Given {
		if len(f.Index) != f.Keys {
			return fmt.Errorf("compact: Fit.Index holds %d keys for Fit.Keys %d", len(f.Index), f.Keys)
		}
		seen := make(map[int]bool, len(f.Index))
		for _, i := range f.Index {
			if i < 0 || i >= n || seen[i] {
				return fmt.Errorf("compact: Fit.Index: key %d is outside [0, %d) or repeated", i, n)
			}
			seen[i] = true
		}
	}
	return nil
}

// validateParams checks what of the fit does not depend on a block.
func (f Fit) validateParams() error {
	if f.Keys < 1 {
		return fmt.Errorf("compact: Fit.Keys %d: want a budget of at least 1 key", f.Keys)
	}
	if _, ok := selectionNames[f.Select]; !ok {
		return fmt.Errorf("compact: Fit.Select %d: unknown key selection", f.Select)
	}
	if !f.NoBias {
		if math.IsNaN(f.BiasMin) || math.IsNaN(f.BiasMax) || f.BiasMin > f.BiasMax || f.BiasMin < -60 || f.BiasMax > 60 {
			return fmt.Errorf("compact: Fit.BiasMin, Fit.BiasMax: β bounds [%g, %g]: want −60 ≤ min ≤ max ≤ 60", f.BiasMin, f.BiasMax)
		}
	}
	if !(f.DropBelow <= 0) {
		return fmt.Errorf("compact: Fit.DropBelow %g: want a negative cutoff, or 0 for none", f.DropBelow)
	}
	if f.PGDIters < 0 || f.PGDIters > 10000 {
		return fmt.Errorf("compact: Fit.PGDIters %d: want projected-gradient steps in [0, 10000]", f.PGDIters)
	}
	if f.Threads < 0 || f.Threads > 1<<12 {
		return fmt.Errorf("compact: Fit.Threads %d: want threads in [0, 4096]", f.Threads)
	}
	if !(f.Ridge >= 0) || math.IsInf(f.Ridge, 0) {
		return fmt.Errorf("compact: Fit.Ridge %g: want a finite λ ≥ 0", f.Ridge)
	}
	for i, s := range f.Schedule {
		if s.PerStep < 1 || s.Refit < 1 || s.Until < 0 || (s.Until == 0 && i != len(f.Schedule)-1) {
			return fmt.Errorf("compact: Fit.Schedule[%d] %+v: want PerStep, Refit ≥ 1 and Until 0 only last", i, s)
		}
	}
	return nil
}

// Result is one KV head's compacted block: t keys (original keys, in
// position order), their biases β and their values.
type Result struct {
	// Index holds the original positions of the kept keys, ascending.
	Index []int
	// Keys and Values hold t rows of d values; Bias t values β.
	Keys, Bias, Values []float32
	// Warnings says where a fit failed and a fallback took its place
	// (non-finite or unstorable numbers): β = 0, or the original values.
	Warnings []string
}

// Len returns the number of kept keys t.
func (r Result) Len() int { return len(r.Index) }

// CompactHead compacts one KV head's block as f says: it chooses the
// keys, fits β on the attention mass and the values on the attention
// outputs of the block's reference queries. A fit that gives numbers that
// are not finite (or values beyond what fp16 holds) is replaced by a
// fallback (β = 0; the original values) and reported in Warnings; the
// result never holds NaN or Inf.
func CompactHead(b Block, f Fit) (Result, error) {
	return CompactHeadContext(context.Background(), b, f)
}

// CompactHeadContext is CompactHead that stops once ctx is done: its
// reference attention between blocks of queries, OMP between steps and
// the fits between stages, returning an error that wraps ctx's.
func CompactHeadContext(ctx context.Context, b Block, f Fit) (Result, error) {
	pool := f.Pool
	if pool == nil && f.Threads > 1 && f.Threads <= 1<<12 {
		pool = tensor.NewPool(f.Threads)
		defer pool.Close()
	}
	if err := check(b, f, pool); err != nil {
		return Result{}, err
	}
	a, err := newAttention(ctx, b, pool, f.Select == ByOMP, statsFor(f.Select)...)
	if err != nil {
		return Result{}, err
	}
	return a.compact(f)
}

// check returns the error CompactHead gives for b and f before any work:
// the cheap checks of what the caller chose first (the block's shape,
// then the fit against it), then the scan of the block's numbers (on
// pool), which a bad parameter need not wait for.
func check(b Block, f Fit, pool *tensor.Pool) error {
	if err := b.validateShape(); err != nil {
		return err
	}
	if err := f.validate(b.Len()); err != nil {
		return err
	}
	return b.validateFinite(pool)
}

// compact is CompactHead after the reference attention a (computed with
// the statistics f.Select reads and, for OMP, every exp-score): it
// chooses the keys and fits β and the values on a.pool, and stops with
// an error that wraps a.ctx's once that is done (looked at between the
// stages and OMP's steps).
func (a *attention) compact(f Fit) (Result, error) {
	b := a.b
	var res Result
	var weights []float64 // B = exp(β)
	switch f.Select {
	case ByOMP:
		res.Index, weights = a.omp(f)
		sortByIndex(res.Index, weights)
	case Given:
		res.Index = slices.Sorted(slices.Values(f.Index))
	case ByMaxRMS:
		res.Index = a.maxThenRMS(f.Keys)
	default:
		res.Index = topK(a.stats[0], f.Keys)
	}
	if err := a.cancelled(); err != nil {
		return Result{}, err
	}
	// The kept keys' exp-scores, for the fits.
	var x []float32
	if (weights == nil && !f.NoBias) || !f.DirectValues {
		x = a.keptScores(res.Index)
	}
	if err := a.cancelled(); err != nil {
		return Result{}, err
	}
	if weights == nil && !f.NoBias {
		var warn string
		weights, warn = a.fitMass(x, len(res.Index), f.BiasMin, f.BiasMax, f.PGDIters)
		if warn != "" {
			res.Warnings = append(res.Warnings, "mass fit: "+warn)
		}
		if weights == nil {
			res.Warnings = append(res.Warnings, "mass fit failed: β = 0")
		}
	}
	if weights == nil || f.NoBias {
		weights = ones(len(res.Index))
	}
	if !allFinite(weights) {
		res.Warnings = append(res.Warnings, "mass fit is not finite: β = 0")
		weights = ones(len(res.Index))
	}
	d, t := b.Dim, len(res.Index)
	res.Keys = make([]float32, t*d)
	res.Bias = make([]float32, t)
	res.Values = make([]float32, t*d)
	for j, i := range res.Index {
		copy(res.Keys[j*d:(j+1)*d], b.Keys[i*d:(i+1)*d])
		copy(res.Values[j*d:(j+1)*d], b.Values[i*d:(i+1)*d])
		res.Bias[j] = float32(math.Log(weights[j]))
	}
	if err := a.cancelled(); err != nil {
		return Result{}, err
	}
	if !f.DirectValues {
		v, warn := a.fitValues(x, len(res.Index), weights, f.Ridge)
		if warn != "" {
			res.Warnings = append(res.Warnings, "value fit: "+warn)
		}
		if v != nil {
			res.Values = v
		}
	}
	return res, nil
}

// cancelled returns an error that wraps a.ctx's once that is done.
func (a *attention) cancelled() error {
	if err := a.ctx.Err(); err != nil {
		return fmt.Errorf("compact: fit: %w", err)
	}
	return nil
}

func ones(n int) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = 1
	}
	return x
}

func allFinite(x []float64) bool {
	for _, v := range x {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
	}
	return true
}
