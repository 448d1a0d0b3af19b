package kvcache

import "github.com/turbomem/turbomem/quant"

// tierScreen is a screening cache (not a format) for codes re-made at a
// lower rate as tokens age: a token that leaves the fp16 window is
// coded at rates[0] (a tcq design from the covariances), one that
// reaches age bands[i] re-coded at rates[i+1] from its decoded vector,
// as a cache holding only codes would. It keeps the decoded vectors in
// float32 and attends them directly, which is what attention on the
// codes computes.
type tierScreen struct {
	sh     Shape
	window int
	bands  []int
	qk, qv [][]*quant.KLT // [tier][head]
	mu     [][]float64    // per head: the keys' pre-RoPE mean
	k, v   []float32
	n      int
	// once: tier 0 is the one rate of the keys (onceKeys) or values, the
	// other part's tiers follow
	once, onceKeys bool
}

// TierMaker makes tierScreen caches (screening only); once, if not 0,
// codes the keys (onceKeys) or the values once at that rate instead, the
// other part alone tiered.
func TierMaker(cov *Covariances, window int, rates []float64, bands []int, once float64, onceKeys bool) NewCacheFunc {
	return func(layer int, sh Shape) (Cache, error) {
		c := &tierScreen{sh: sh, window: window, bands: bands, once: once != 0, onceKeys: onceKeys}
		d := sh.HeadDim
		tiers := rates
		if once != 0 {
			tiers = append([]float64{once}, rates...) // tier 0: the part coded once
		}
		for _, r := range tiers {
			var ks, vs []*quant.KLT
			for h := range sh.KVHeads {
				bits := 8 * (quant.KLTBytes(d, r) - 1)
				k, err := cov.klt(layer, h, true, bits, tcqStates, uint64(layer*131+h)^1)
				if err != nil {
					return nil, err
				}
				v, err := cov.klt(layer, h, false, bits, tcqStates, uint64(layer*131+h)^2)
				if err != nil {
					return nil, err
				}
				ks, vs = append(ks, k), append(vs, v)
			}
			c.qk, c.qv = append(c.qk, ks), append(c.qv, vs)
		}
		for h := range sh.KVHeads {
			mu := make([]float64, d)
			for i, x := range cov.Layers[layer][h].RopeMean {
				mu[i] = float64(x)
			}
			c.mu = append(c.mu, mu)
		}
		return c, nil
	}
}

func (c *tierScreen) Len() int   { return c.n }
func (c *tierScreen) Bytes() int { return 0 }

func (c *tierScreen) Append(k, v []float32) error {
	c.k, c.v = append(c.k, k...), append(c.v, v...)
	c.n++
	first, keys, values := 0, true, true // the tiered parts
	if c.once {
		first, keys, values = 1, !c.onceKeys, c.onceKeys
	}
	if t := c.n - 1 - c.window; t >= 0 {
		if c.once {
			if err := c.code(t, 0, c.onceKeys, !c.onceKeys); err != nil {
				return err
			}
		}
		if err := c.code(t, first, keys, values); err != nil {
			return err
		}
	}
	for i, b := range c.bands {
		if t := c.n - 1 - b; t >= 0 {
			if err := c.code(t, first+i+1, keys, values); err != nil {
				return err
			}
		}
	}
	return nil
}

// code replaces token t's key (keys) and value (values) by their tier's
// decoded codes.
func (c *tierScreen) code(t, tier int, keys, values bool) error {
	d := c.sh.HeadDim
	turned := make([]float64, d)
	x := make([]float32, d)
	for h := range c.sh.KVHeads {
		off := (t*c.sh.KVHeads + h) * d
		c.sh.Rope.Rotate(turned, c.mu[h], t)
		k := c.k[off : off+d]
		for i := range x {
			x[i] = k[i] - float32(turned[i])
		}
		for _, s := range []struct {
			q   *quant.KLT
			row []float32
			key bool
		}{{c.qk[tier][h], k, true}, {c.qv[tier][h], c.v[off : off+d], false}} {
			if s.key && !keys || !s.key && !values {
				continue
			}
			src := s.row
			if s.key {
				src = x
			}
			code := make([]byte, s.q.Bytes())
			if err := s.q.Encode(code, src); err != nil {
				return err
			}
			if err := s.q.Decode(s.row, code); err != nil {
				return err
			}
			if s.key {
				for i := range s.row {
					s.row[i] += float32(turned[i])
				}
			}
		}
	}
	return nil
}

// Attend is naiveAttention over the vectors as they are now coded.
func (c *tierScreen) Attend(out, q []float32, scale float32) {
	w := c.sh.KVHeads * c.sh.HeadDim
	ks, vs := make([][]float32, c.n), make([][]float32, c.n)
	for t := range c.n {
		ks[t], vs[t] = c.k[t*w:(t+1)*w], c.v[t*w:(t+1)*w]
	}
	for i, x := range naiveAttention(c.sh, ks, vs, q, float64(scale)) {
		out[i] = float32(x)
	}
}
