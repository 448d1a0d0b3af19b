package eval

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tokenizer"
)

// KVRow is one configuration's line of the KV format table (KVTable).
type KVRow struct {
	Format        string  `json:"format"`
	Bits          float64 `json:"bits"`            // per coordinate of compressed tokens, K and V averaged
	BytesPerToken float64 `json:"bytes_per_token"` // at Ctx tokens, window included
	Ratio         float64 `json:"ratio"`           // f16 bytes / these bytes
	PPL           float64 `json:"ppl"`
	KLMean        float64 `json:"kl_mean"`
	KLP99         float64 `json:"kl_p99"`
	Top1          float64 `json:"top1"`
	// Needle is the needle score (NaN: not measured).
	Needle float64 `json:"needle"`
	// Predicted is an auto:B row's predicted mean KL (the sum of its
	// parts' measured KL on the calibration windows; NaN for a fixed
	// format).
	Predicted float64 `json:"predicted_kl,omitempty"`
}

// KVTableOptions configures KVTable.
type KVTableOptions struct {
	// Ctx is the window length and Chunks the windows scored per
	// configuration (0: all), as in PPLOptions.
	Ctx, Chunks int
	// NeedleLengths, NeedleDepths and NeedleTrials are the needle test's
	// grid (no lengths: no needle test).
	NeedleLengths              []int
	NeedleDepths, NeedleTrials int
	// Plan configures the measurement of auto:B rows: Candidates, and
	// CalibChunks windows of Ctx tokens from the end of the text, after
	// the scored ones (CalibCtx is Ctx). One measurement serves every
	// budget. Progress and Log report it.
	Plan KVPlanOptions
	// Planned, if set, is called with each auto:B row's plan once made.
	Planned func(*kvcache.Plan)
	// Progress, if set, is called after each row.
	Progress func(done, total int)
}

// KVTableResult is the KV format table: one row per configuration.
type KVTableResult struct {
	Chunks int     `json:"chunks"` // windows scored per configuration
	Rows   []KVRow `json:"rows"`
}

// KVModelTable is one model's KV format table, under the name the model
// was asked for by.
type KVModelTable struct {
	Model string `json:"model"`
	KVTableResult
}

// KVSummaryRow is one format's line of the summary across models
// (SummarizeKV).
type KVSummaryRow struct {
	Format string `json:"format"`
	// Bits and KLMean are the format's bits per coordinate and mean KL on
	// each model, in the order of the tables (NaN where a model's table
	// has no row of that format). Bits differ between models where the
	// head dimension does (a scale per head vector weighs more at 64).
	Bits   []float64 `json:"bits"`
	KLMean []float64 `json:"kl_mean"`
	// VsQ4 is the geometric mean over the models of the format's mean KL
	// divided by q4_0's on the same model: below 1, better than q4_0 on
	// average; NaN when a table lacks the format or q4_0, or q4_0's KL is
	// 0 there.
	VsQ4 float64 `json:"kl_vs_q4_0"`
	// VsQ4H is the same against q4_0h, q4_0 after llama.cpp's
	// Walsh–Hadamard rotation (the strongest q4_0).
	VsQ4H float64 `json:"kl_vs_q4_0h"`
}

// SummarizeKV summarises KV tables of several models: per format (in the
// order each first appears), its bits and mean KL on every model and the
// geometric mean of its KL relative to q4_0's and to q4_0h's. A geometric
// mean, because the models' KLs differ by an order of magnitude and a
// ratio of 2 on one should weigh as much as a ratio of ½ on another.
func SummarizeKV(tables []KVModelTable) []KVSummaryRow {
	var out []KVSummaryRow
	index := map[string]int{}
	for _, t := range tables {
		for _, r := range t.Rows {
			if _, ok := index[r.Format]; !ok {
				index[r.Format] = len(out)
				out = append(out, KVSummaryRow{Format: r.Format})
			}
		}
	}
	for i := range out {
		row := &out[i]
		for _, t := range tables {
			bits, kl := math.NaN(), math.NaN()
			if r, ok := findRow(t.Rows, row.Format); ok {
				bits, kl = r.Bits, r.KLMean
			}
			row.Bits = append(row.Bits, bits)
			row.KLMean = append(row.KLMean, kl)
		}
		row.VsQ4 = klVs(tables, row.KLMean, "q4_0")
		row.VsQ4H = klVs(tables, row.KLMean, "q4_0h")
	}
	return out
}

// findRow returns the row of format f.
func findRow(rows []KVRow, f string) (KVRow, bool) {
	for _, r := range rows {
		if r.Format == f {
			return r, true
		}
	}
	return KVRow{}, false
}

// klVs returns the geometric mean over the tables of kl[i] divided by the
// mean KL of format ref in table i: NaN where a table lacks either, or
// ref's KL is 0 somewhere.
func klVs(tables []KVModelTable, kl []float64, ref string) float64 {
	var logSum float64
	for i, t := range tables {
		r, ok := findRow(t.Rows, ref)
		if !ok {
			return math.NaN()
		}
		logSum += math.Log(kl[i] / r.KLMean) // NaN for a missing row, −Inf for KL 0
	}
	if math.IsInf(logSum, 1) {
		return math.NaN() // ref's KL 0 somewhere
	}
	return math.Exp(logSum / float64(len(tables)))
}

// KVTable measures each cache configuration on text: its bits per
// coordinate, its bytes per token and ratio to f16 after Ctx tokens
// (window included), the perplexity, mean and p99 KL and top-1 agreement
// against the f16 cache on the same windows (an f16 row is that
// reference run itself, not run twice), the needle score, and for
// auto:B configurations (planned here, on calibration windows disjoint
// from the scored ones) the predicted KL. Every fixed configuration is
// checked against the model before any work.
func KVTable(ctx context.Context, m *model.Model, tok *tokenizer.Tokenizer, text string, configs []kvcache.Config, o KVTableOptions) (KVTableResult, error) {
	var res KVTableResult
	for _, c := range configs {
		if !c.NeedsPlan() && !c.NeedsCovariances() {
			if err := checkConfig(m, c); err != nil {
				return res, err
			}
		}
	}
	ids := tok.Encode(text, true)
	scored := len(ids) / max(o.Ctx, 1)
	if o.Chunks > 0 {
		scored = min(scored, o.Chunks)
	}
	calibChunks := o.Plan.CalibChunks
	if calibChunks == 0 {
		calibChunks = 4
	}
	calib := calibChunks * o.Ctx
	autos := slices.ContainsFunc(configs, kvcache.Config.NeedsPlan)
	klts := slices.ContainsFunc(configs, kvcache.Config.NeedsCovariances)
	if klts && (calibChunks < 1 || scored*o.Ctx+calib > len(ids)) {
		return res, fmt.Errorf("%w: klt rows: %d calibration windows of %d tokens after the %d scored ones need %d tokens; the text has %d", ErrKVRequest, calibChunks, o.Ctx, scored, scored*o.Ctx+calib, len(ids))
	}
	cands, err := candidates(o.Plan)
	if err != nil {
		return res, err
	}
	if autos {
		for _, c := range configs {
			if c.NeedsPlan() {
				if err := CheckCalibWindow(o.Ctx, c.Window()); err != nil {
					return res, err
				}
				if err := checkBudget(c.Budget(), cands, m.Config.HeadDim); err != nil {
					return res, err
				}
			}
		}
		if calibChunks < 1 || scored*o.Ctx+calib > len(ids) {
			return res, fmt.Errorf("%w: auto rows: %d calibration windows of %d tokens after the %d scored ones need %d tokens; the text has %d", ErrKVRequest, calibChunks, o.Ctx, scored, scored*o.Ctx+calib, len(ids))
		}
	}
	ref, err := Perplexity(ctx, m, ids, tok.BOS(), PPLOptions{Ctx: o.Ctx, MaxChunks: o.Chunks})
	if err != nil {
		return res, err
	}
	res.Chunks = ref.Chunks
	configs = slices.Clone(configs)
	if autos {
		// One measurement serves every budget (of one window).
		type measured struct {
			s   kvcache.Sensitivity
			cov *kvcache.Covariances
		}
		sens := map[int]measured{}
		for i, c := range configs {
			if !c.NeedsPlan() {
				continue
			}
			s, ok := sens[c.Window()]
			if !ok {
				if s.s, s.cov, err = measureKVSensitivity(ctx, m, ids[len(ids)-calib:], tok.BOS(), c.Window(), o.Ctx, cands, o.Plan); err != nil {
					return res, err
				}
				sens[c.Window()] = s
			}
			p, err := allocateKV(s.s, s.cov, c, m.Config.HeadDim)
			if err != nil {
				return res, err
			}
			configs[i] = kvcache.Planned(p)
			if o.Planned != nil {
				o.Planned(p)
			}
		}
	}
	if klts {
		// One calibration serves every klt row.
		cov, err := covariances(ctx, m, ids[len(ids)-calib:], tok.BOS(), o.Ctx, calibChunks, o.Plan, "the klt formats")
		if err != nil {
			return res, err
		}
		for i, c := range configs {
			if c.NeedsCovariances() {
				configs[i] = c.WithCovariances(cov)
			}
		}
	}
	sh := m.CacheShape()
	f16, err := kvcache.F16().BytesAt(o.Ctx, m.Config.Layers, sh)
	if err != nil {
		return res, err
	}
	for _, c := range configs {
		row := KVRow{Format: c.String(), Predicted: math.NaN(), Needle: math.NaN()}
		if row.Bits, err = c.BitsAt(sh.HeadDim, o.Ctx); err != nil {
			return res, err
		}
		if p := c.Plan(); p != nil {
			row.Predicted = p.Predicted
		}
		b, err := c.BytesAt(o.Ctx, m.Config.Layers, sh)
		if err != nil {
			return res, err
		}
		row.BytesPerToken = float64(b) / float64(o.Ctx)
		row.Ratio = float64(f16) / float64(b)
		r := ref
		if c.String() == kvcache.F16().String() {
			// The reference's own caches: that run, agreeing with itself.
			r.Agreement = &Agreement{Top1: 1}
		} else if r, err = Perplexity(ctx, m, ids, tok.BOS(), PPLOptions{Ctx: o.Ctx, MaxChunks: o.Chunks, KV: c, Ref: ref.Dists}); err != nil {
			return res, fmt.Errorf("%s: %w", c, err)
		}
		row.PPL, row.KLMean, row.KLP99, row.Top1 = r.PPL, r.Agreement.KLMean, r.Agreement.KLP99, r.Agreement.Top1
		if len(o.NeedleLengths) > 0 {
			nr, err := Needle(ctx, m, tok, tok.Encode(text, false), NeedleOptions{Lengths: o.NeedleLengths, Depths: o.NeedleDepths, Trials: o.NeedleTrials, Seed: 1, KV: c})
			if err != nil {
				return res, fmt.Errorf("%s: %w", c, err)
			}
			row.Needle = nr.Overall
		}
		res.Rows = append(res.Rows, row)
		if o.Progress != nil {
			o.Progress(len(res.Rows), len(configs))
		}
	}
	return res, nil
}
