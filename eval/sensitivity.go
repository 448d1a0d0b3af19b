package eval

import (
	"context"
	"fmt"
	"slices"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// SensitivityOptions configures KVSensitivity.
type SensitivityOptions struct {
	// Ctx and MaxChunks are the windows scored, as in PPLOptions.
	Ctx, MaxChunks int
	// Window and Seed are those of the compressed parts' Spec.
	Window int
	Seed   uint64
	// Progress, if set, is called after each measurement.
	Progress func(done, total int)
}

// KVSensitivity measures how much compressing each part of the KV cache
// on its own costs: for every layer's keys and every layer's values, and
// every candidate format, the mean KL divergence of the next-token
// distributions from those with the f16 cache, when only that part is
// stored in that format and all others stay f16. The windows and scored
// positions are those of Perplexity (top-64 reference distributions), and
// the numbers equal what Perplexity with such a cache and Ref gives. The
// layers before the compressed one compute what the f16 run computed, so
// each measurement starts from the hidden states the f16 run recorded at
// its layer's input: on average about half a forward pass. Formats that
// cannot serve a part (qjl for values) get loss −1; f16 gets 0 without
// measuring.
func KVSensitivity(ctx context.Context, m *model.Model, ids []int32, bos int32, formats []kvcache.Format, o SensitivityOptions) (kvcache.Sensitivity, error) {
	sh := m.CacheShape()
	layers, vocab := m.Config.Layers, m.Config.Vocab
	s := kvcache.Sensitivity{Formats: formats, Loss: make([][]float64, 2*layers)}
	for p := range s.Loss {
		s.Loss[p] = make([]float64, len(formats))
	}
	if o.Ctx < 4 || o.Ctx > m.Config.Context {
		return s, fmt.Errorf("eval: window of %d tokens: want 4 to the model's context %d", o.Ctx, m.Config.Context)
	}
	chunks := len(ids) / o.Ctx
	if o.MaxChunks > 0 {
		chunks = min(chunks, o.MaxChunks)
	}
	if chunks == 0 {
		return s, fmt.Errorf("eval: %d tokens make no window of %d", len(ids), o.Ctx)
	}
	f16, _ := kvcache.ParseFormat("f16")
	for _, f := range formats {
		if err := f.Check(sh.HeadDim, true); err != nil {
			return s, err
		}
	}
	// What each part costs in each format is measured iff it can serve.
	measured := func(p, j int) bool {
		return formats[j] != f16 && formats[j].Check(sh.HeadDim, p%2 == 0) == nil
	}
	accs := make([][]agreementAcc, 2*layers)
	for p := range accs {
		accs[p] = make([]agreementAcc, len(formats))
	}
	total, done := 0, 0
	for p := range s.Loss {
		for j := range formats {
			if measured(p, j) {
				total++
			}
		}
	}
	total *= chunks
	for _, window := range windows(ids, bos, o.Ctx, chunks) {
		// The f16 run: its distributions, and every layer's input.
		ref, err := m.NewSession(nil, o.Ctx)
		if err != nil {
			return s, err
		}
		hidden := make([][]float32, layers)
		ref.SetCapture(func(l int, x []float32) { hidden[l] = append(hidden[l], x...) })
		logits, err := ref.Forward(window[:o.Ctx-1], true)
		if err != nil {
			return s, err
		}
		refD := &Dists{K: 64, Vocab: vocab}
		scored(logits, window, vocab, func(lp []float64, target int32) error {
			refD.add(lp, target, refD.K)
			return nil
		})
		for p := range s.Loss {
			layer, key := p/2, p%2 == 0
			for j, f := range formats {
				if !measured(p, j) {
					continue
				}
				if err := ctx.Err(); err != nil {
					return s, err
				}
				// Every layer f16 but this part, in f.
				only := &kvcache.Plan{Window: o.Window, Seed: o.Seed, Layers: slices.Repeat([]kvcache.LayerFormats{{K: f16, V: f16}}, layers)}
				if key {
					only.Layers[layer].K = f
				} else {
					only.Layers[layer].V = f
				}
				sess, err := m.NewSession(only, o.Ctx)
				if err != nil {
					return s, err
				}
				logits, err := sess.ForwardFrom(layer, hidden[layer], true)
				if err != nil {
					return s, fmt.Errorf("eval: sensitivity of layer %d %s at %s: %w", layer, partName(key), f, err)
				}
				pos := 0
				scored(logits, window, vocab, func(lp []float64, _ int32) error {
					accs[p][j].add(refD, pos, lp)
					pos++
					return nil
				})
				done++
				if o.Progress != nil {
					o.Progress(done, total)
				}
			}
		}
	}
	for p := range s.Loss {
		for j := range formats {
			switch {
			case !measured(p, j) && formats[j] != f16:
				s.Loss[p][j] = -1
			case measured(p, j):
				// The top-K bound can round below 0 when nothing changed.
				s.Loss[p][j] = max(accs[p][j].result().KLMean, 0)
			}
		}
	}
	return s, nil
}

func partName(key bool) string {
	if key {
		return "keys"
	}
	return "values"
}
