package kvcache

import (
	"fmt"
	"math"

	"github.com/turbomem/turbomem/half"
	"github.com/turbomem/turbomem/tensor"
)

// Compacted is the cache of one layer that holds a compacted context
// followed by the tokens appended after it (package compact makes such
// contexts: attention matching or eviction, docs/ALGORITHMS.md §12). The
// compacted context has, per KV head h, t_h keys, each with an additive
// logit bias β (natural-log units, added to the scaled score), and their
// values; heads may keep different numbers of tokens. Each head's part is
// stored as a cache of one KV head in the layer's formats with no recent
// window (so a compacted context of a quantized configuration is held
// quantized too) and its biases in fp16; appended tokens go to a cache of
// the configuration as usual.
//
// Attend computes one softmax over both parts: each part's attention
// output with its log-sum-exp (the logarithm of Σ e^(scaled score) over
// the part), then the two outputs weighted by their parts' shares of the
// total, as flash-decoding merges Partials.
type Compacted struct {
	shape  Shape
	prefix []Cache // per KV head: one KV head, Group() query heads
	kept   []int
	inner  Cache
	// Attend scratch: the parts' outputs and log-sum-exps
	po, pl, io, il []float32
	// forked is set on a compacted context that has forks, and on them:
	// their shared part's Attend scratch is one (SharesScratch).
	forked bool
	// panels is the compacted part as float32 product panels, shared by
	// the context and its forks and made on first use (AttendTogether).
	panels *prefixPanels
}

// lseAttender is a cache whose Attend can also give each query head's
// log-sum-exp of its scaled scores: the caches a Compacted combines.
type lseAttender interface {
	Cache
	attendLSE(out, lse, q []float32, scale float32)
}

// attendLSE runs c's Attend with its attention recording every query
// head's log-sum-exp into lse (−Inf for a cache without tokens).
func attendLSE(a *attention, c Cache, out, lse, q []float32, scale float32) {
	for i := range lse {
		lse[i] = float32(math.Inf(-1))
	}
	a.lse = lse
	c.Attend(out, q, scale)
	a.lse = nil
}

func (c *Dense) attendLSE(out, lse, q []float32, scale float32) {
	attendLSE(&c.attention, c, out, lse, q, scale)
}

func (c *Compressed) attendLSE(out, lse, q []float32, scale float32) {
	attendLSE(&c.attention, c, out, lse, q, scale)
}

// layerSpec returns the key and value formats of layer layer.
func (c Config) layerSpec(layer int) (Spec, error) {
	switch {
	case c.NeedsPlan():
		return Spec{}, c.errNeedsPlan()
	case c.plan != nil:
		if layer < 0 || layer >= len(c.plan.Layers) {
			return Spec{}, fmt.Errorf("kvcache: layer %d of a plan of %d layers", layer, len(c.plan.Layers))
		}
		return c.plan.Spec(layer), nil
	}
	return c.uniform(), nil
}

// prefixSpec returns the spec and shape of one KV head's compacted part
// in layer layer of a model of shape sh: the layer's formats, no recent
// window.
func (c Config) prefixSpec(layer int, sh Shape) (Spec, Shape, error) {
	s, err := c.layerSpec(layer)
	if err != nil {
		return s, sh, err
	}
	if s.K.calibrated() || s.V.calibrated() {
		// Each head's compacted tokens are a cache of one KV head without
		// positions; a klt transform belongs to one head of one layer.
		return s, sh, fmt.Errorf("kvcache: %s: a compacted context cannot be stored in a klt format; choose another for the compacted layers", s)
	}
	s.Window = -1
	return s, Shape{QHeads: sh.Group(), KVHeads: 1, HeadDim: sh.HeadDim}, nil
}

// NewCompacted returns layer layer's cache (shape sh) holding a compacted
// context: per KV head h, the rows of keys[h] and values[h] (HeadDim
// values each, post-RoPE keys) with the logit biases bias[h] (one per
// row), stored in the layer's formats of c; tokens appended later go to a
// cache of c. Biases are kept in fp16; a key, value or bias that is not
// finite or beyond fp16 is refused.
func (c Config) NewCompacted(layer int, sh Shape, keys, bias, values [][]float32) (*Compacted, error) {
	if err := sh.Validate(); err != nil {
		return nil, err
	}
	if len(keys) != sh.KVHeads || len(bias) != sh.KVHeads || len(values) != sh.KVHeads {
		return nil, fmt.Errorf("kvcache: compacted context of %d, %d and %d heads of keys, biases and values for %d KV heads", len(keys), len(bias), len(values), sh.KVHeads)
	}
	spec, psh, err := c.prefixSpec(layer, sh)
	if err != nil {
		return nil, err
	}
	inner, err := c.NewCache(layer, sh)
	if err != nil {
		return nil, err
	}
	cc := &Compacted{shape: sh, inner: inner, panels: &prefixPanels{}}
	if _, ok := inner.(lseAttender); !ok {
		return nil, fmt.Errorf("kvcache: a %T cannot hold the tokens after a compacted context", inner)
	}
	d := sh.HeadDim
	for h := range sh.KVHeads {
		t := len(bias[h])
		if len(keys[h]) != t*d || len(values[h]) != t*d {
			return nil, fmt.Errorf("kvcache: compacted head %d: %d keys and %d values for %d biases of dimension %d", h, len(keys[h]), len(values[h]), t, d)
		}
		for i := range keys[h] {
			if !(math.Abs(float64(keys[h][i])) <= 65504) || !(math.Abs(float64(values[h][i])) <= 65504) {
				return nil, fmt.Errorf("kvcache: compacted head %d, token %d: key %g or value %g is not finite or beyond fp16", h, i/d, keys[h][i], values[h][i])
			}
		}
		p, err := spec.NewCache(layer, psh)
		if err != nil {
			return nil, err
		}
		for i := range t {
			if err := p.Append(keys[h][i*d:(i+1)*d], values[h][i*d:(i+1)*d]); err != nil {
				return nil, fmt.Errorf("kvcache: compacted head %d, token %d: %w", h, i, err)
			}
		}
		b := make([]uint16, t)
		for i, x := range bias[h] {
			if !(math.Abs(float64(x)) <= 65504) {
				return nil, fmt.Errorf("kvcache: compacted head %d, token %d: bias %g is not finite or beyond fp16", h, i, x)
			}
			b[i] = uint16(half.F32ToF16(x))
		}
		p.(biasHolder).setBias([][]uint16{b})
		cc.prefix = append(cc.prefix, p)
		cc.kept = append(cc.kept, t)
	}
	return cc, nil
}

// Fork returns a cache that continues c's compacted context (shared with
// c, not copied) with its own tokens appended after it in inner, an empty
// cache of c's shape; the tokens appended to c are not part of it. Many
// continuations of one long context cost one copy of it (the reference
// queries of package compact read a context several times over). The
// shared part is read only, but its Attend reuses scratch: c and its
// forks must not attend at the same time. Bytes counts the shared part
// in each.
func (c *Compacted) Fork(inner Cache) (*Compacted, error) {
	if inner == nil || inner.Len() != 0 {
		return nil, fmt.Errorf("kvcache: a compacted context's fork needs an empty cache for its tokens")
	}
	if _, ok := inner.(lseAttender); !ok {
		return nil, fmt.Errorf("kvcache: a %T cannot hold the tokens after a compacted context", inner)
	}
	c.forked = true
	return &Compacted{shape: c.shape, prefix: c.prefix, kept: c.kept, inner: inner, forked: true, panels: c.panels}, nil
}

// SharesScratch reports whether c has forks or is one: then it must not
// attend at the same time as the other caches of its context.
func (c *Compacted) SharesScratch() bool { return c.forked }

// biasHolder is a cache whose positions can carry a logit bias (Dense and
// Compressed, through their attention).
type biasHolder interface{ setBias(b [][]uint16) }

// CompactedBytesAt returns what Bytes of layer layer's Compacted cache
// (shape sh) returns when its compacted context keeps kept[h] tokens of
// KV head h and n tokens were appended after it, without making it.
func (c Config) CompactedBytesAt(layer int, kept []int, n int, sh Shape) (int64, error) {
	if len(kept) != sh.KVHeads {
		return 0, fmt.Errorf("kvcache: %d kept counts for %d KV heads", len(kept), sh.KVHeads)
	}
	spec, psh, err := c.prefixSpec(layer, sh)
	if err != nil {
		return 0, err
	}
	full, err := c.layerSpec(layer)
	if err != nil {
		return 0, err
	}
	total, err := full.bytesAt(n, sh, layer)
	if err != nil {
		return 0, err
	}
	for _, t := range kept {
		if t < 0 {
			return 0, fmt.Errorf("kvcache: %d compacted tokens", t)
		}
		b, err := spec.bytesAt(t, psh, layer)
		if err != nil {
			return 0, err
		}
		total += b + 2*int64(t)
	}
	return total, nil
}

// Kept returns the number of compacted tokens of each KV head.
func (c *Compacted) Kept() []int { return append([]int(nil), c.kept...) }

// Len returns the tokens held: the most any KV head keeps of the
// compacted context, and the tokens appended after it.
func (c *Compacted) Len() int {
	m := 0
	for _, t := range c.kept {
		m = max(m, t)
	}
	return m + c.inner.Len()
}

// Bytes returns the bytes held: every head's compacted part (as its
// cache counts it) and its fp16 biases, and the appended tokens' cache.
func (c *Compacted) Bytes() int {
	b := c.inner.Bytes()
	for h, p := range c.prefix {
		b += p.Bytes() + 2*c.kept[h]
	}
	return b
}

// Append adds a token after the compacted context.
func (c *Compacted) Append(k, v []float32) error { return c.inner.Append(k, v) }

// SetPool makes every part's Attend share the goroutines of p.
func (c *Compacted) SetPool(p *tensor.Pool) {
	UsePool(c.inner, p)
	for _, x := range c.prefix {
		UsePool(x, p)
	}
}

// Attend computes attention of every query head over the compacted
// context (with its biases) and the tokens after it.
func (c *Compacted) Attend(out, q []float32, scale float32) {
	c.attendLSE(out, nil, q, scale)
}

// attendLSE is Attend that also writes each query head's log-sum-exp to
// lse (when not nil).
func (c *Compacted) attendLSE(out, lse, q []float32, scale float32) {
	d, g, qh := c.shape.HeadDim, c.shape.Group(), c.shape.QHeads
	c.po, c.pl = growF32(c.po, qh*d), growF32(c.pl, qh)
	c.io, c.il = growF32(c.io, qh*d), growF32(c.il, qh)
	for h, p := range c.prefix {
		p.(lseAttender).attendLSE(c.po[h*g*d:(h+1)*g*d], c.pl[h*g:(h+1)*g], q[h*g*d:(h+1)*g*d], scale)
	}
	c.inner.(lseAttender).attendLSE(c.io, c.il, q, scale)
	merge(out, lse, c.po, c.pl, c.io, c.il, d)
}

// merge writes to out each query head's attention over two parts of a
// cache from the parts' outputs (pa, pb; d values per head) and
// log-sum-exps (la, lb): the outputs weighted by the parts' shares of the
// total, and the total's log-sum-exp to lse (when not nil).
func merge(out, lse, pa, la, pb, lb []float32, d int) {
	for i := range la {
		a, b := float64(la[i]), float64(lb[i])
		m := math.Max(a, b)
		if math.IsInf(m, -1) {
			clear(out[i*d : (i+1)*d])
			if lse != nil {
				lse[i] = float32(m)
			}
			continue
		}
		wa, wb := math.Exp(a-m), math.Exp(b-m)
		s := wa + wb
		fa, fb := float32(wa/s), float32(wb/s)
		o := out[i*d : (i+1)*d]
		for k := range o {
			o[k] = fa*pa[i*d+k] + fb*pb[i*d+k]
		}
		if lse != nil {
			lse[i] = float32(m + math.Log(s))
		}
	}
}

func growF32(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}
