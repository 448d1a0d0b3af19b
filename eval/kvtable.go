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
	Chunks int // windows scored per configuration
	Rows   []KVRow
}

// KVTable measures each cache configuration on text: its bits per
// coordinate, its bytes per token and ratio to f16 after Ctx tokens
// (window included), the perplexity, mean and p99 KL and top-1 agreement
// against the f16 cache on the same windows, the needle score, and for
// auto:B configurations (planned here, on calibration windows disjoint
// from the scored ones) the predicted KL. Every fixed configuration is
// checked against the model before any work.
func KVTable(ctx context.Context, m *model.Model, tok *tokenizer.Tokenizer, text string, configs []kvcache.Config, o KVTableOptions) (KVTableResult, error) {
	var res KVTableResult
	for _, c := range configs {
		if !c.NeedsPlan() {
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
		sens := map[int]kvcache.Sensitivity{}
		for i, c := range configs {
			if !c.NeedsPlan() {
				continue
			}
			s, ok := sens[c.Window()]
			if !ok {
				if s, err = measureKVSensitivity(ctx, m, ids[len(ids)-calib:], tok.BOS(), c.Window(), o.Ctx, cands, o.Plan); err != nil {
					return res, err
				}
				sens[c.Window()] = s
			}
			p, err := allocateKV(s, c, m.Config.HeadDim)
			if err != nil {
				return res, err
			}
			configs[i] = kvcache.Planned(p)
			if o.Planned != nil {
				o.Planned(p)
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
		if row.Bits, err = c.Bits(sh.HeadDim); err != nil {
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
		r, err := Perplexity(ctx, m, ids, tok.BOS(), PPLOptions{Ctx: o.Ctx, MaxChunks: o.Chunks, KV: c, Ref: ref.Dists})
		if err != nil {
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
