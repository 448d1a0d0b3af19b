package kvcache

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// NewCacheFunc makes the cache of one layer of shape sh.
type NewCacheFunc func(layer int, sh Shape) (Cache, error)

// NewCache calls f.
func (f NewCacheFunc) NewCache(layer int, sh Shape) (Cache, error) { return f(layer, sh) }

// Maker makes the caches of a model, one layer at a time. Config, Spec and
// *Plan are Makers; NewCacheFunc adapts a function (a cache that records
// or wraps another).
type Maker interface {
	NewCache(layer int, sh Shape) (Cache, error)
}

// Config is the KV cache configuration of a whole model, the one value
// every command and the server pass down: one key/value format pair for
// every layer (a Spec), a per-layer plan, or a plan still to be measured
// for a budget of bits per coordinate ("auto:B", NeedsPlan). The zero
// Config is f16 keys and values, llama.cpp's default.
type Config struct {
	spec   Spec    // the formats of every layer (no plan); Window and Seed also serve auto:B
	plan   *Plan   // per-layer formats, or nil
	budget float64 // > 0: auto:B (with plan nil, still to be measured)
}

// MaxBudget bounds the bits per coordinate of an auto:B configuration: f16
// is the widest format a plan chooses among by default.
const MaxBudget = 16

// Uniform returns the configuration that stores every layer as s does.
func Uniform(s Spec) Config { return Config{spec: s} }

// Planned returns the configuration of a per-layer plan.
func Planned(p *Plan) Config { return Config{plan: p, budget: p.Budget} }

// Auto returns the configuration that asks for a per-layer plan of the
// given average bits per coordinate, to be measured (eval plans it) or
// read from a saved plan; window is the recent window the plan's caches
// keep (Spec.Window).
func Auto(budget float64, window int) (Config, error) {
	if !(budget > 0 && budget <= MaxBudget) {
		return Config{}, fmt.Errorf("kvcache: auto:%g: want a budget of bits per coordinate in (0, %d]", budget, MaxBudget)
	}
	return Config{spec: Spec{Window: window}, budget: budget}, nil
}

// Parse returns the configuration a name gives: a format for keys and
// values ("turbo3.5"), a key and a value format ("q8_0:turbo2.5", or
// "q8_0/turbo2.5" as String writes it), or a plan still to be made for an
// average of B bits per coordinate ("auto:3.5"). See FormatNames.
func Parse(name string) (Config, error) {
	name = strings.TrimSpace(name)
	if b, ok := strings.CutPrefix(name, "auto"); ok {
		if b, ok = strings.CutPrefix(b, ":"); !ok {
			return Config{}, fmt.Errorf("kvcache: %q: a per-layer plan is auto:B, B its average bits per coordinate (e.g. auto:3.5)", name)
		}
		bits, err := strconv.ParseFloat(b, 64)
		if err != nil || math.IsNaN(bits) {
			return Config{}, fmt.Errorf("kvcache: %q: want auto:B with B bits per coordinate in (0, %d]", name, MaxBudget)
		}
		return Auto(bits, 0)
	}
	k, v, ok := strings.Cut(name, ":")
	if !ok {
		k, v, _ = strings.Cut(name, "/")
	}
	if ok && v == "" {
		return Config{}, fmt.Errorf("kvcache: %q: want K:V, a key and a value format", name)
	}
	s, err := ParseSpec(k, v)
	if err != nil {
		return Config{}, err
	}
	return Uniform(s), nil
}

// String returns the configuration's name, which Parse reads back: the
// format ("turbo3.5"), the key and value formats ("q8_0/turbo2.5"), or
// "auto:B" for a plan.
func (c Config) String() string {
	switch {
	case c.plan != nil:
		return c.plan.String()
	case c.budget > 0:
		return fmt.Sprintf("auto:%g", c.budget)
	}
	return c.uniform().String()
}

// NeedsCovariances reports whether the configuration uses a klt format
// (for every layer, or in its plan) and has no covariances for it yet
// (WithCovariances).
func (c Config) NeedsCovariances() bool {
	if c.plan != nil {
		for i := range c.plan.Layers {
			if c.plan.Spec(i).NeedsCovariances() {
				return true
			}
		}
		return false
	}
	return c.budget == 0 && c.uniform().NeedsCovariances()
}

// WithCovariances returns the configuration with cov as the calibration of
// its klt formats (Spec.Cov; a plan's copy gets it too).
func (c Config) WithCovariances(cov *Covariances) Config {
	c.spec.Cov = cov
	if c.plan != nil {
		p := *c.plan
		p.Cov = cov
		c.plan = &p
	}
	return c
}

// NeedsPlan reports whether the configuration is auto:B without a plan
// yet: it makes no caches until one is measured or read (Planned).
func (c Config) NeedsPlan() bool { return c.budget > 0 && c.plan == nil }

// Budget returns the average bits per coordinate an auto:B configuration
// asks for (0 for a Spec).
func (c Config) Budget() float64 { return c.budget }

// Plan returns the per-layer plan, or nil.
func (c Config) Plan() *Plan { return c.plan }

// Spec returns the formats of every layer and true, or false for a plan
// (made or not).
func (c Config) Spec() (Spec, bool) {
	if c.budget > 0 || c.plan != nil {
		return Spec{}, false
	}
	return c.uniform(), true
}

// uniform returns the Spec, f16 where no format is set.
func (c Config) uniform() Spec {
	s := c.spec
	if !s.K.Valid() && !s.V.Valid() {
		f16 := Format{name: "f16", c: f16Codec}
		s.K, s.V = f16, f16
	}
	return s
}

// Window returns the recent window (Spec.Window) of the configuration's
// caches.
func (c Config) Window() int {
	if c.plan != nil {
		return c.plan.Window
	}
	return c.spec.Window
}

// WithWindow returns c with the recent window w (Spec.Window). A plan
// keeps the window it was measured with: asking it for another is an
// error.
func (c Config) WithWindow(w int) (Config, error) {
	if err := checkWindow(w); err != nil {
		return c, err
	}
	if c.plan != nil {
		if w != 0 && w != c.plan.Window {
			return c, fmt.Errorf("kvcache: window %d: the plan was measured with window %d", w, c.plan.Window)
		}
		return c, nil
	}
	c.spec.Window = w
	return c, nil
}

// checkWindow checks a recent-window length (Spec.Window).
func checkWindow(w int) error {
	if w < -1 || w > maxWindow {
		return fmt.Errorf("kvcache: recent window %d out of range [-1, %d]", w, maxWindow)
	}
	return nil
}

// maxWindow bounds the recent window.
const maxWindow = 1 << 16

// errNeedsPlan is the error of a Config that needs a plan and is asked for
// caches or bytes.
func (c Config) errNeedsPlan() error {
	return fmt.Errorf("kvcache: %s is a per-layer plan still to be measured (or read from a saved plan)", c)
}

// Check reports whether the configuration can serve a model of the given
// layers, each of shape sh, before any cache is made.
func (c Config) Check(layers int, sh Shape) error {
	if c.NeedsPlan() {
		return c.errNeedsPlan()
	}
	if c.plan != nil {
		if len(c.plan.Layers) != layers {
			return fmt.Errorf("kvcache: plan has %d layers, the model %d", len(c.plan.Layers), layers)
		}
		for i := range c.plan.Layers {
			if err := c.plan.Spec(i).Check(sh); err != nil {
				return fmt.Errorf("layer %d: %w", i, err)
			}
		}
		return nil
	}
	if layers < 1 {
		return fmt.Errorf("kvcache: a model of %d layers", layers)
	}
	s := c.uniform()
	if err := s.Check(sh); err != nil {
		return err
	}
	if s.Cov != nil && s.tiered() { // the heads' shares (BytesAt, BitsAt) are the covariances'
		if len(s.Cov.Layers) != layers {
			return fmt.Errorf("kvcache: covariances of %d layers, the model %d", len(s.Cov.Layers), layers)
		}
		for l := range layers {
			if err := s.Cov.check(l, sh); err != nil {
				return err
			}
		}
	}
	return nil
}

// NewCache returns the cache of one layer: a Config is a Maker.
func (c Config) NewCache(layer int, sh Shape) (Cache, error) {
	switch {
	case c.NeedsPlan():
		return nil, c.errNeedsPlan()
	case c.plan != nil:
		return c.plan.NewCache(layer, sh)
	}
	return c.uniform().NewCache(layer, sh)
}

// BytesAt returns the bytes the caches of all the model's layers (each of
// shape sh) hold after n tokens, without making them: what Bytes of every
// layer's cache sums to (the memory plan of a context of n tokens).
func (c Config) BytesAt(n, layers int, sh Shape) (int64, error) {
	if err := c.Check(layers, sh); err != nil {
		return 0, err
	}
	if c.plan != nil {
		return c.plan.BytesAt(n, sh)
	}
	s := c.uniform()
	if s.Cov == nil || !s.tiered() { // every layer alike
		b, err := s.bytesAt(n, sh, 0)
		return int64(layers) * b, err
	}
	var total int64 // each head's share its own (tierShares)
	for l := range layers {
		b, err := s.bytesAt(n, sh, l)
		if err != nil {
			return 0, err
		}
		total += b
	}
	return total, nil
}

// F16 returns the configuration of fp16 keys and values: the baseline
// that ratios are taken against.
func F16() Config { return Config{} }

// Recommended returns the KV format pair to use where none is named for a
// model whose caches have shape sh, chosen by measurement on the model
// suite with the default window (BENCHMARKS.md, "The recommended format
// by head dimension"): turbo3.5 where the head dimension is 128 or more
// (3.5 bits all in, less KL than q4_0 there), turbo4 below it (at 64,
// turbo3.5 takes 3.75 bits with its norms and has 1.03–1.42x q4_0's KL,
// turbo4 4.25 bits and 0.45–0.77x), f16 where neither can store the
// head. Neither needs calibration. The window and seed are Spec's
// defaults.
func Recommended(sh Shape) Spec {
	name := "turbo4"
	if sh.HeadDim >= 128 {
		name = "turbo3.5"
	}
	s, err := ParseSpec(name, "")
	if err != nil || s.Check(sh) != nil {
		return F16().uniform()
	}
	return s
}

// Bits returns the average bits per coordinate of the configuration's
// compressed tokens at head dimension d (Format.Bits, keys and values and
// every layer alike).
func (c Config) Bits(d int) (float64, error) {
	switch {
	case c.NeedsPlan():
		return 0, c.errNeedsPlan()
	case c.plan != nil:
		if d != c.plan.HeadDim {
			return 0, fmt.Errorf("kvcache: the plan counts bits at head dimension %d, not %d", c.plan.HeadDim, d)
		}
		return c.plan.Bits(), nil
	}
	s := c.uniform()
	kb, err := s.K.Bits(d)
	if err != nil {
		return 0, err
	}
	vb, err := s.V.Bits(d)
	if err != nil {
		return 0, err
	}
	return (kb + vb) / 2, nil
}

// BitsAt is Bits for caches of n tokens: the bits of a tiered format
// (format_tier.go) depend on how many of its tokens have aged; every other
// format's are Bits. While no token is compressed it counts the first.
// A ~ format's heads hold shares of their own (tier_shares.go): its bits
// are the average over every layer's and head's of the covariances.
func (c Config) BitsAt(d, n int) (float64, error) {
	s := c.uniform()
	if c.plan != nil || c.NeedsPlan() || !s.tiered() {
		return c.Bits(d)
	}
	if err := s.checkDim(d); err != nil {
		return 0, err
	}
	nc := max(s.compressedAt(n), 1)
	var b, heads int64 // each head's share its own (tierShares)
	if s.Cov != nil {
		for l, hs := range s.Cov.Layers {
			for h := range hs {
				b += s.codeBytesAt(d, nc, l, h)
				heads++
			}
		}
	}
	if heads == 0 { // no covariances: every head the format's share
		b, heads = s.codeBytesAt(d, nc, 0, 0), 1
	}
	return float64(8*b) / float64(2*int64(nc)*int64(d)*heads), nil
}

// F32 returns the configuration of float32 keys and values: the exact
// reference.
func F32() Config {
	f32 := Format{name: "f32", c: f32Codec}
	return Uniform(Spec{K: f32, V: f32})
}
