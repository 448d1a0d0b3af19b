package compact

import (
	"fmt"
	"slices"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// Install returns the caches of every layer holding the compacted
// context: a kvcache.Compacted per layer whose compacted part holds, per
// KV head, the kept keys with their biases and values and then the
// window's tokens as they were (β = 0), all stored in kv's formats
// (compaction composes with quantization; the whole context is held in
// the format, none of it in a recent fp16 window), and whose appended
// tokens start after them.
func Install(c *Compacted, kv kvcache.Config) ([]kvcache.Cache, error) {
	d := c.Shape.HeadDim
	out := make([]kvcache.Cache, len(c.Heads))
	for l, heads := range c.Heads {
		var keys, bias, values [][]float32
		for h, r := range heads {
			keys = append(keys, slices.Concat(r.Keys, headRows(c.WindowK[l], c.Shape.KVHeads, d, h, 0, c.Window)))
			values = append(values, slices.Concat(r.Values, headRows(c.WindowV[l], c.Shape.KVHeads, d, h, 0, c.Window)))
			bias = append(bias, slices.Concat(r.Bias, make([]float32, c.Window)))
		}
		cc, err := kv.NewCompacted(l, c.Shape, keys, bias, values)
		if err != nil {
			return nil, fmt.Errorf("compact: layer %d: %w", l, err)
		}
		out[l] = cc
	}
	return out, nil
}

// Resume returns a session of m that continues after the compacted
// context (its tokens' positions as before compaction), its caches made
// by Install; maxTokens bounds the positions as model.NewSession's does.
func Resume(m *model.Model, c *Compacted, kv kvcache.Config, maxTokens int) (*model.Session, error) {
	caches, err := Install(c, kv)
	if err != nil {
		return nil, err
	}
	return m.Resume(caches, c.Tokens, maxTokens)
}
