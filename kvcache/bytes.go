package kvcache

import (
	"fmt"

	"github.com/turbomem/turbomem/quant"
)

// step returns the number of tokens a compressed cache moves out of its
// window at once: a KIVI key block, else one.
func (s Spec) step() int {
	if s.K.kind == kindKIVI {
		return kiviBlock
	}
	return 1
}

// calib returns the number of tokens a compressed cache must hold before
// it can compress the first (the outlier channels are chosen from them),
// or 0 when no format splits outliers off.
func (s Spec) calib() int {
	if s.K.split() || s.V.split() {
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

// bytesAt returns what Bytes of one layer's cache of shape sh returns
// after n tokens, without making the cache (Config.BytesAt counts every
// layer).
func (s Spec) bytesAt(n int, sh Shape) (int64, error) {
	if err := s.Check(sh); err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, fmt.Errorf("kvcache: %d tokens", n)
	}
	d, heads := int64(sh.HeadDim), int64(sh.KVHeads)
	if s.K == s.V && !s.K.compressed() {
		elem := int64(2)
		if s.K.kind == kindF32 {
			elem = 4
		}
		return 2 * int64(n) * heads * d * elem, nil
	}
	nc := int64(s.compressedAt(n))
	kb, err := s.K.tokenBytes(sh.HeadDim, nc, true)
	if err != nil {
		return 0, err
	}
	vb, err := s.V.tokenBytes(sh.HeadDim, nc, false)
	if err != nil {
		return 0, err
	}
	perHead := kb + vb + 4*d*(int64(n)-nc)
	if nc > 0 {
		for _, f := range []Format{s.K, s.V} {
			if f.split() {
				perHead += 2 * d / 4 // the outlier channel list
			}
		}
	}
	return heads * perHead, nil
}

// tokenBytes returns the bytes of nc tokens of one head in the format's
// compressed store, as keys (key true) or values.
func (f Format) tokenBytes(d int, nc int64, key bool) (int64, error) {
	switch f.kind {
	case kindF32:
		return 4 * int64(d) * nc, nil
	case kindF16:
		return 2 * int64(d) * nc, nil
	}
	var q quant.Quantizer
	var err error
	if f.split() {
		out := make([]int, d/4)
		for i := range out {
			out[i] = i
		}
		q, err = f.splitQuantizer(d, out, 1, turboCorrection)
	} else {
		q, err = f.quantizer(d, 1, turboCorrection)
	}
	if err != nil {
		return 0, err
	}
	if k, ok := q.(*quant.KIVI); ok && key {
		// KIVI keys are stored per channel, a block of tokens at a time
		// (nc is a whole number of blocks); values per token.
		return int64(k.ChannelBytes(kiviBlock)) * (nc / kiviBlock), nil
	}
	return int64(q.Bytes()) * nc, nil
}

// BytesAt returns the bytes of all the plan's layers (of shape sh) after
// n tokens: the memory plan of a context of n tokens.
func (p *Plan) BytesAt(n int, sh Shape) (int64, error) {
	var total int64
	for i := range p.Layers {
		b, err := p.Spec(i).bytesAt(n, sh)
		if err != nil {
			return 0, fmt.Errorf("layer %d: %w", i, err)
		}
		total += b
	}
	return total, nil
}
