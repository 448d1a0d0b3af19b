package eval

import (
	"context"
	"fmt"

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
// stored in that format and all others stay f16. The windows are those
// of Perplexity. Formats that cannot serve a part (qjl for values) get
// loss −1; f16 gets 0 without measuring.
func KVSensitivity(ctx context.Context, m *model.Model, ids []int32, bos int32, formats []kvcache.Format, o SensitivityOptions) (kvcache.Sensitivity, error) {
	sh := m.CacheShape()
	layers := m.Config.Layers
	s := kvcache.Sensitivity{Formats: formats, Loss: make([][]float64, 2*layers)}
	for p := range s.Loss {
		s.Loss[p] = make([]float64, len(formats))
	}
	f16, _ := kvcache.ParseFormat("f16")
	for _, f := range formats {
		if err := f.Check(sh.HeadDim, true); err != nil {
			return s, err
		}
	}
	popts := PPLOptions{Ctx: o.Ctx, MaxChunks: o.MaxChunks}
	ref, err := Perplexity(ctx, m, ids, bos, popts)
	if err != nil {
		return s, err
	}
	popts.Ref = ref.Dists
	total := 2 * layers * len(formats)
	done := 0
	for p := range s.Loss {
		layer, key := p/2, p%2 == 0
		for j, f := range formats {
			done++
			if f == f16 {
				continue
			}
			if err := f.Check(sh.HeadDim, key); err != nil {
				s.Loss[p][j] = -1
				continue
			}
			spec := kvcache.Spec{K: f16, V: f, Window: o.Window, Seed: o.Seed}
			if key {
				spec.K, spec.V = f, f16
			}
			popts.NewCache = func(l int, sh kvcache.Shape) (kvcache.Cache, error) {
				if l == layer {
					return spec.NewCache(l, sh)
				}
				return kvcache.NewF16(sh)
			}
			res, err := Perplexity(ctx, m, ids, bos, popts)
			if err != nil {
				return s, fmt.Errorf("eval: sensitivity of layer %d %s at %s: %w", layer, partName(key), f, err)
			}
			// The top-K bound can round below 0 when nothing changed.
			s.Loss[p][j] = max(res.Agreement.KLMean, 0)
			if o.Progress != nil {
				o.Progress(done, total)
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
