package kvcache

import (
	"fmt"
)

// step returns the number of tokens a compressed cache moves out of its
// window at once: a block of the key format (KIVI's 32), else one.
func (s Spec) step() int { return s.K.keyBlock() }

// calib returns the number of tokens a compressed cache must hold before
// it can compress the first (the outlier channels and the keys' mean are
// chosen from them), or 0 when no format needs them.
func (s Spec) calib() int {
	if s.K.split() || s.V.split() || s.K.center() {
		return max(s.window()+1, 32)
	}
	return 0
}

// compressedAt returns how many of n appended tokens a compressed cache
// of this spec holds compressed: Compressed.Append's rule in closed form.
func (s Spec) compressedAt(n int) int {
	w, step := s.window(), s.step()
	if n < w+step || n < s.calib() {
		return 0
	}
	return (n - w) / step * step
}

// bytesAt returns what Bytes of layer's cache of shape sh returns after
// n tokens, without making the cache (Config.BytesAt counts every
// layer).
func (s Spec) bytesAt(n int, sh Shape, layer int) (int64, error) {
	if err := s.Check(sh); err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, fmt.Errorf("kvcache: %d tokens", n)
	}
	d, heads := int64(sh.HeadDim), int64(sh.KVHeads)
	kb, vb := int64(s.K.c.tokenBytes(sh.HeadDim, true)), int64(s.V.c.tokenBytes(sh.HeadDim, false))
	if s.K == s.V && !s.K.compressed() {
		return int64(n) * heads * (kb + vb), nil
	}
	nc := int64(s.compressedAt(n))
	perHead := 4 * d * (int64(n) - nc)
	if nc > 0 {
		for _, f := range []Format{s.K, s.V} {
			if f.split() {
				perHead += 2 * d / 4 // the outlier channel list
			}
		}
		if s.K.center() {
			perHead += 4 * d // the keys' mean
		}
	}
	total := heads * perHead
	for h := range sh.KVHeads {
		total += s.codeBytesAt(sh.HeadDim, int(nc), layer, h)
	}
	return total, nil
}

// codeBytesAt returns the bytes of the codes of nc compressed tokens of
// layer's KV head h, keys and values.
func (s Spec) codeBytesAt(d, nc, layer, h int) int64 {
	return s.K.codeBytes(d, true, nc, s.headSpan(s.K, layer, h)(nc)) + s.V.codeBytes(d, false, nc, s.headSpan(s.V, layer, h)(nc))
}

// BytesAt returns the bytes of all the plan's layers (of shape sh) after
// n tokens: the memory plan of a context of n tokens.
func (p *Plan) BytesAt(n int, sh Shape) (int64, error) {
	var total int64
	for i := range p.Layers {
		b, err := p.Spec(i).bytesAt(n, sh, i)
		if err != nil {
			return 0, fmt.Errorf("layer %d: %w", i, err)
		}
		total += b
	}
	return total, nil
}
