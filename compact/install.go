package compact

import (
	"fmt"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// Install returns the caches of every layer holding the compacted
// context: a kvcache.Compacted per layer, its heads' kept keys, biases
// and values stored in kv's formats (compaction composes with
// quantization), then the window's tokens appended as usual.
func Install(c *Compacted, kv kvcache.Config) ([]kvcache.Cache, error) {
	kd := c.Shape.KVHeads * c.Shape.HeadDim
	out := make([]kvcache.Cache, len(c.Heads))
	for l, heads := range c.Heads {
		var keys, bias, values [][]float32
		for _, h := range heads {
			keys, bias, values = append(keys, h.Keys), append(bias, h.Bias), append(values, h.Values)
		}
		cc, err := kv.NewCompacted(l, c.Shape, keys, bias, values)
		if err != nil {
			return nil, fmt.Errorf("compact: layer %d: %w", l, err)
		}
		for p := range c.Window {
			if err := cc.Append(c.WindowK[l][p*kd:(p+1)*kd], c.WindowV[l][p*kd:(p+1)*kd]); err != nil {
				return nil, fmt.Errorf("compact: layer %d, window token %d: %w", l, p, err)
			}
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
