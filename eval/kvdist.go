package eval

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// KVDistOptions configures KVDistortion.
type KVDistOptions struct {
	// Ctx is the number of tokens run through the model (0: 1024), at
	// most the model's context and len(ids).
	Ctx int
	// First is the first position whose attention is compared (0:
	// kvcache.DefaultWindow, the first at which a cache with the default
	// window holds a compressed token, KIVI's 32-token key blocks
	// aside); Every is the step between compared positions (0: 8).
	First, Every int
	// Seed draws the random vectors.
	Seed uint64
	// Progress, if set, is called after each layer and format.
	Progress func(done, total int)
}

// KVDistRow is the distortion of one KV format in one layer: the mean,
// over the compared positions, of the relative attention-output error
// ‖o − o_ref‖²/‖o_ref‖² (RelErr, all query heads of the position
// together), o from a cache in the format and o_ref from a float32 cache
// holding the same tokens. Real rows replay the keys, values and queries
// that the model produced on the text; random rows replay i.i.d.
// Gaussian ones of the same root-mean-square norms per layer. The key and
// value parts put only the keys (values) in the format and keep the other
// in float32, which separates what each side costs; they go through the
// same cache, recent fp16 window and outlier channels included.
type KVDistRow struct {
	Layer  int    `json:"layer"`
	Format string `json:"format"`
	// AttnReal and AttnRandom have keys and values in the format.
	AttnReal   float64 `json:"err_real_attn"`
	AttnRandom float64 `json:"err_random_attn"`
	// KeyReal and KeyRandom have only the keys in the format.
	KeyReal   float64 `json:"err_real_k"`
	KeyRandom float64 `json:"err_random_k"`
	// ValueReal and ValueRandom have only the values in the format.
	ValueReal   float64 `json:"err_real_v"`
	ValueRandom float64 `json:"err_random_v"`
}

// KVDistResult is the outcome of KVDistortion.
type KVDistResult struct {
	Tokens    int         `json:"tokens"`    // tokens run through the model
	Positions []int       `json:"positions"` // compared positions (0-based)
	Rows      []KVDistRow `json:"rows"`      // layer-major, formats in the order given
}

// Means returns, per format in the order of Rows, the mean of every error
// over the layers, with Layer −1.
func (r KVDistResult) Means() []KVDistRow {
	var out []KVDistRow
	count := map[string]int{}
	for _, row := range r.Rows {
		i := slices.IndexFunc(out, func(m KVDistRow) bool { return m.Format == row.Format })
		if i < 0 {
			out = append(out, KVDistRow{Layer: -1, Format: row.Format})
			i = len(out) - 1
		}
		m := &out[i]
		m.AttnReal += row.AttnReal
		m.AttnRandom += row.AttnRandom
		m.KeyReal += row.KeyReal
		m.KeyRandom += row.KeyRandom
		m.ValueReal += row.ValueReal
		m.ValueRandom += row.ValueRandom
		count[row.Format]++
	}
	for i := range out {
		n := float64(count[out[i].Format])
		m := &out[i]
		m.AttnReal /= n
		m.AttnRandom /= n
		m.KeyReal /= n
		m.KeyRandom /= n
		m.ValueReal /= n
		m.ValueRandom /= n
	}
	return out
}

// KVDistortion measures how much each KV format distorts attention on
// real keys, values and queries against random ones (docs/ALGORITHMS.md §10,
// quantizer level, on real K/V dumped from the model): it runs the model
// over the first Ctx tokens of ids (which should start with BOS, as
// tokenizer.Encode with bos gives them) on float32 caches that record
// every key, value and query, then, per layer and format, feeds the
// recorded tokens one by one into a cache made by the spec and, at every
// compared position, attends with that position's query over the tokens
// up to it (causal, as in decoding) and compares with a float32 cache fed
// the same tokens. The same is done with random vectors (see KVDistRow).
// The scale is the model's, 1/√head_dim.
func KVDistortion(ctx context.Context, m *model.Model, ids []int32, specs []kvcache.Spec, o KVDistOptions) (KVDistResult, error) {
	sh := m.CacheShape()
	for _, s := range specs {
		if err := s.Check(sh); err != nil {
			return KVDistResult{}, fmt.Errorf("eval: kv distortion: %s: %w", s, err)
		}
	}
	n := o.Ctx
	if n == 0 {
		n = 1024
	}
	n = min(n, len(ids), m.Config.Context)
	first, every := o.First, o.Every
	if first == 0 {
		first = kvcache.DefaultWindow
	}
	if every == 0 {
		every = 8
	}
	if n < 1 || first < 0 || every < 1 {
		return KVDistResult{}, fmt.Errorf("eval: kv distortion: %d tokens, first position %d, every %d: want at least one token, first ≥ 0 and every ≥ 1", n, first, every)
	}
	res := KVDistResult{Tokens: n}
	for p := first; p < n; p += every {
		res.Positions = append(res.Positions, p)
	}
	if len(res.Positions) == 0 {
		return res, fmt.Errorf("eval: kv distortion: %d tokens leave no position from %d to compare", n, first)
	}
	f32, err := kvcache.ParseFormat("f32")
	if err != nil {
		return res, err
	}

	recs, err := RecordKV(m, ids[:n], -1)
	if err != nil {
		return res, err
	}
	total, done := len(recs)*len(specs), 0
	for layer, rec := range recs {
		real := rec
		if real.Len() != n || len(real.Q) != n*sh.QHeads*sh.HeadDim {
			return res, fmt.Errorf("eval: kv distortion: layer %d recorded %d tokens and %d queries, want %d", layer, real.Len(), len(real.Q)/(sh.QHeads*sh.HeadDim), n)
		}
		random := gaussianTrace(real, rand.New(rand.NewPCG(o.Seed, uint64(layer))))
		refs := make([][]float32, 2)
		for i, tr := range []*KVTrace{real, random} {
			if refs[i], err = replay(tr, kvcache.F32(), layer, res.Positions); err != nil {
				return res, fmt.Errorf("eval: kv distortion: layer %d reference: %w", layer, err)
			}
		}
		for _, spec := range specs {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			row := KVDistRow{Layer: layer, Format: spec.String()}
			keys, values := spec, spec
			keys.V, values.K = f32, f32
			for _, c := range []struct {
				spec         kvcache.Spec
				real, random *float64
			}{
				{spec, &row.AttnReal, &row.AttnRandom},
				{keys, &row.KeyReal, &row.KeyRandom},
				{values, &row.ValueReal, &row.ValueRandom},
			} {
				for i, tr := range []*KVTrace{real, random} {
					out, err := replay(tr, c.spec, layer, res.Positions)
					if err != nil {
						return res, fmt.Errorf("eval: kv distortion: layer %d format %s: %w", layer, c.spec, err)
					}
					e := meanRelErr(out, refs[i], len(res.Positions))
					if i == 0 {
						*c.real = e
					} else {
						*c.random = e
					}
				}
			}
			res.Rows = append(res.Rows, row)
			done++
			if o.Progress != nil {
				o.Progress(done, total)
			}
		}
	}
	return res, nil
}

// KVTrace is one layer's keys (after RoPE), values and queries, token
// after token (kvcache.Trace).
type KVTrace = kvcache.Trace

// RecordKV runs the model over ids on float32 caches and returns what
// each layer's cache saw, indexed by layer: every layer's when only is
// negative, else only layer only's (the others nil).
func RecordKV(m *model.Model, ids []int32, only int) ([]*KVTrace, error) {
	if only >= m.Config.Layers {
		return nil, fmt.Errorf("eval: recording K/V of layer %d of %d", only, m.Config.Layers)
	}
	recs := make([]*KVTrace, m.Config.Layers)
	s, err := m.NewSession(kvcache.NewCacheFunc(func(layer int, sh kvcache.Shape) (kvcache.Cache, error) {
		c, err := kvcache.NewF32(sh)
		if err != nil || only >= 0 && layer != only {
			return c, err
		}
		r := kvcache.NewRecorder(c, sh)
		recs[layer] = r.Trace
		return r.Recording(), nil
	}), len(ids))
	if err != nil {
		return nil, fmt.Errorf("eval: recording K/V: %w", err)
	}
	if _, err := s.Forward(ids, false); err != nil {
		return nil, fmt.Errorf("eval: recording K/V: %w", err)
	}
	return recs, nil
}

// replay appends the tokens to a fresh cache from nc and returns the
// attention outputs (QHeads·HeadDim each) of the queries at positions
// (ascending), each over the tokens up to and including its own.
func replay(t *KVTrace, kv kvcache.Maker, layer int, positions []int) ([]float32, error) {
	c, err := kv.NewCache(layer, t.Shape)
	if err != nil {
		return nil, err
	}
	kd, qd := t.Shape.KVHeads*t.Shape.HeadDim, t.Shape.QHeads*t.Shape.HeadDim
	out := make([]float32, len(positions)*qd)
	next := 0
	for i, p := range positions {
		for ; next <= p; next++ {
			if err := c.Append(t.K[next*kd:(next+1)*kd], t.V[next*kd:(next+1)*kd]); err != nil {
				return nil, err
			}
		}
		c.Attend(out[i*qd:(i+1)*qd], t.Q[p*qd:(p+1)*qd], t.Scale)
	}
	return out, nil
}

// gaussianTrace returns a trace of as many tokens with i.i.d. N(0, σ²)
// coordinates, σ² = E‖x‖²/HeadDim of t's keys, values and queries apart
// (per head vector), so that the random vectors have t's root-mean-square
// norms and their attention is about as sharp.
func gaussianTrace(t *KVTrace, r *rand.Rand) *KVTrace {
	draw := func(x []float32) []float32 {
		var sq float64
		for _, v := range x {
			sq += float64(v) * float64(v)
		}
		sigma := math.Sqrt(sq / float64(len(x))) // mean square per coordinate = E‖x‖²/d
		out := make([]float32, len(x))
		for i := range out {
			out[i] = float32(r.NormFloat64() * sigma)
		}
		return out
	}
	return &KVTrace{Shape: t.Shape, K: draw(t.K), V: draw(t.V), Q: draw(t.Q), Scale: t.Scale}
}

// RelErr returns ‖x − ref‖²/‖ref‖², in float64 (0 when both are zero,
// +Inf when only ref is).
func RelErr(x, ref []float32) float64 {
	var num, den float64
	for i, r := range ref {
		e := float64(x[i]) - float64(r)
		num += e * e
		den += float64(r) * float64(r)
	}
	if num == 0 {
		return 0
	}
	return num / den
}

// meanRelErr returns the mean RelErr of the n equal parts of x and ref.
func meanRelErr(x, ref []float32, n int) float64 {
	w := len(ref) / n
	var sum float64
	for i := range n {
		sum += RelErr(x[i*w:(i+1)*w], ref[i*w:(i+1)*w])
	}
	return sum / float64(n)
}
