package kvcache

import (
	"fmt"
	"strings"

	"github.com/turbomem/turbomem/quant"
)

// Format names how a cache stores keys or values, as llama.cpp's
// --cache-type-k/-v do (f32, f16, q8_0, q4_0) plus ours. The zero Format
// is invalid; ParseFormat returns the others. Bits per coordinate at
// head dimension 128, everything in a code counted (Bits):
//
//	f32 32, f16 16        uncompressed
//	q8_0 8.5, q4_0 4.5    llama.cpp blocks of 32 with an fp16 scale
//	q4_0h 4.5             q4_0 after llama.cpp's fixed Walsh–Hadamard
//	                      rotation of quantized caches (a baseline)
//	kivi2 3               KIVI 2-bit: keys per channel over blocks of 32
//	                      tokens, values per token in groups of 32
//	                      channels, fp16 scale and min per group
//	turbo2.5 2.5          TurboQuant_mse with the norm correction, d/4
//	turbo3.5 3.5          outlier channels at 3 (4) bits, the rest at 2
//	                      (3), an fp16 scale per part
//	turbo2 2.125          TurboQuant_mse with the norm correction, one
//	turbo3 3.125          fp16 scale (turbo2 and turbo5: the steps
//	turbo4 4.125          below turbo2.5 and between turbo4 and q8_0
//	turbo5 5.125          that per-layer plans choose from)
//	turbo3.5p 3.75        TurboQuant_prod parts (MSE at 2/3 bits + d/4
//	                      and 3d/4 QJL sign bits with their norms)
//	polar 3.875           PolarQuant [4,2,2,2] with fp16 block radii
//	qjl 2.125             QJL, m = 2d sign bits and an fp16 norm (keys
//	                      only)
//	klt2 2, klt2.5 2.5,   a transform coder calibrated per layer and KV
//	klt3 3, klt3.5 3.5,   head on calibration text (Spec.Cov): KLT basis,
//	klt4 4, klt4.5 4.5,   reverse water-filling of integer bits, one scale
//	klt5 5, klt6 6        byte per vector (format_klt.go); the rates
//	                      besides 2.5 and 3.5 are steps for per-layer plans
//	tcq2 … tcq6           klt's design and bits, the components coded by
//	(as klt)              8-state trellis-coded quantization (a Viterbi
//	                      pass per token to encode; --kv auto's default
//	                      candidates)
//	tcq3.5>2~2.5 2.5      tiered (format_tier.go): the newest of each
//	                      head's compressed tokens tcq3.5 (its share
//	                      from the calibration, a third on average),
//	                      older ones re-coded tcq2; HIGH>LOW~BITS for
//	                      other rates,
//	                      HIGH>LOW@AGE to re-code at a fixed age
//
// The turbo formats store keys centred on their mean before RoPE
// (centered.go), which the cache holds besides the codes (4·d bytes per
// KV head, like the outlier channel lists).
type Format struct {
	name string
	c    *codec
	// lo and age or share make a tiered format (format_tier.go): a token
	// is re-coded with lo once it is age tokens old, or once it is not
	// among the newest share of the compressed tokens; nil and 0
	// otherwise.
	lo    *codec
	age   int
	share float64 // the share of compressed tokens held high, instead of an age
}

// codec is what a format does: how big its codes are, how it encodes
// them and where a cache keeps them. Each format has its own file
// (format_dense.go, format_ggml.go, format_kivi.go, format_turbo.go,
// format_polar.go, format_qjl.go), with its quantizer in package quant;
// the formats table registers it under its name.
type codec struct {
	// multiple is what the head dimension must be a multiple of.
	multiple int
	// keysOnly marks a format that cannot reconstruct values (QJL).
	keysOnly bool
	// elem is the bytes of one coordinate of an uncompressed format (f32
	// 4, f16 2); 0 for a quantized one.
	elem int
	// keyBlock is the number of tokens its key store encodes at once
	// (KIVI's per-channel blocks); 0 means one.
	keyBlock int
	// split marks the formats that keep d/4 outlier channels per head,
	// chosen from the first tokens, at one bit more than the rest.
	split bool
	// center marks the formats that store keys centred on their mean
	// before RoPE, estimated from the first tokens (centered.go).
	center bool
	// rate, if not 0, marks a format calibrated per layer and KV head
	// (klt): its bits per coordinate all in; its stores come from
	// Spec.Cov (format_klt.go).
	rate float64
	// trellis, if not 0, is the number of trellis states with which a
	// calibrated format codes its components (tcq; quant.KLTParams.Trellis).
	trellis int
	// slice is the fewest positions worth a slice of an attention step
	// of their own (0: compressedMinSlice): less for the formats whose
	// slices share the step's set-up of the queries and start their lane
	// kernels at once (turbo, klt, tcq).
	slice int
	// research marks the formats kept as baselines to measure against:
	// they lost to the turbo formats on every model measured
	// (BENCHMARKS.md, the model suite).
	research bool
	// tokenBytes returns the bytes of one token of one head of dimension
	// d in the compressed store, as keys (key true) or values: the
	// quantizer's closed form, nothing built.
	tokenBytes func(d int, key bool) int
	// quantizer returns the quantizer of dimension d for keys (key true)
	// or values (outliers: a split format's outlier channels); nil for an
	// uncompressed format.
	quantizer func(d int, key bool, outliers []int, o quant.Options) (quant.Quantizer, error)
	// keys returns a head's key store over q; nil: quantizer codes back to
	// back (codeKeys).
	keys func(q quant.Quantizer, d int) keyStore
	// values returns a head's value store over q; nil: quantizer codes
	// summed by a quant.Accumulator (codeValues).
	values func(q quant.Quantizer, d int) valueStore
}

// formats is the table of every format, in the order error messages and
// FormatNames show them. Bits per coordinate at head dimension 128 are in
// Format's comment.
var formats = []Format{
	{name: "f32", c: f32Codec},
	{name: "f16", c: f16Codec},
	{name: "q8_0", c: q8_0Codec},
	{name: "q4_0", c: q4_0Codec},
	{name: "q4_0h", c: q4_0hCodec},
	{name: "kivi2", c: kivi2Codec},
	{name: "turbo2", c: turboMSE(2)},
	{name: "turbo2.5", c: turboSplit(2, false)},
	{name: "turbo3", c: turboMSE(3)},
	{name: "turbo3.5", c: turboSplit(3, false)},
	{name: "turbo4", c: turboMSE(4)},
	{name: "turbo5", c: turboMSE(5)},
	{name: "turbo3.5p", c: turboSplit(3, true)},
	{name: "klt2", c: kltFormat(2)},
	{name: "klt2.5", c: kltFormat(2.5)},
	{name: "klt3", c: kltFormat(3)},
	{name: "klt3.5", c: kltFormat(3.5)},
	{name: "klt4", c: kltFormat(4)},
	{name: "klt4.5", c: kltFormat(4.5)},
	{name: "klt5", c: kltFormat(5)},
	{name: "klt6", c: kltFormat(6)},
	{name: "tcq2", c: tcqFormat(2)},
	{name: "tcq2.5", c: tcqFormat(2.5)},
	{name: "tcq3", c: tcqFormat(3)},
	{name: "tcq3.5", c: tcqFormat(3.5)},
	{name: "tcq4", c: tcqFormat(4)},
	{name: "tcq4.5", c: tcqFormat(4.5)},
	{name: "tcq5", c: tcqFormat(5)},
	{name: "tcq6", c: tcqFormat(6)},
	{name: "polar", c: polarCodec},
	{name: "qjl", c: qjlCodec},
}

// FormatNames returns the known format names.
func FormatNames() []string {
	names := make([]string, len(formats))
	for i, f := range formats {
		names[i] = f.name
	}
	return names
}

// ParseFormat returns the format called name (see FormatNames).
func ParseFormat(name string) (Format, error) {
	for _, f := range formats {
		if f.name == name {
			return f, nil
		}
	}
	if strings.Contains(name, ">") {
		return parseTiered(name)
	}
	return Format{}, fmt.Errorf("kvcache: unknown KV format %q; known formats: %s", name, strings.Join(FormatNames(), ", "))
}

// String returns the format's name.
func (f Format) String() string { return f.name }

// Valid reports whether f is a format ParseFormat returns.
func (f Format) Valid() bool { return f.c != nil }

// compressed reports whether the format stores tokens in a quantized
// form (everything but f32 and f16).
func (f Format) compressed() bool { return f.c.elem == 0 }

// split reports whether the format splits outlier channels off.
func (f Format) split() bool { return f.c.split }

// Research reports whether the format is a research one: a baseline kept
// to measure against, measured to lose to the turbo formats on every
// model (BENCHMARKS.md).
func (f Format) Research() bool { return f.c.research }

// center reports whether the format centres keys (centered.go).
func (f Format) center() bool { return f.c.center }

// keyBlock returns the number of tokens the format's key store encodes
// at once.
func (f Format) keyBlock() int { return max(f.c.keyBlock, 1) }

// quantizer returns the format's quantizer for head dimension d, for keys
// (key true) or values (outliers:
// the outlier channels of a split format), drawn from seed.
func (f Format) quantizer(d int, key bool, outliers []int, seed uint64, corr quant.Correction) (quant.Quantizer, error) {
	return f.c.quantizer(d, key, outliers, quant.Options{Seed: seed, Correction: corr})
}

// minSlice returns the fewest positions worth an attention slice of
// their own (codec.slice).
func (f Format) minSlice() int {
	if f.c.slice > 0 {
		return f.c.slice
	}
	return compressedMinSlice
}

// keyStore returns a head's key store over q (nil for f32 and f16).
func (f Format) keyStore(q quant.Quantizer, d int) keyStore {
	if f.c.keys != nil {
		return f.c.keys(q, d)
	}
	return &codeKeys{q: q}
}

// valueStore returns a head's value store over q (nil for f32 and f16).
func (f Format) valueStore(q quant.Quantizer, d int) valueStore {
	if f.c.values != nil {
		return f.c.values(q, d)
	}
	return &codeValues{q: q, acc: quant.NewAccumulator(q)}
}

// Check reports whether the format can store vectors of head dimension d,
// as keys (key true) or values.
func (f Format) Check(d int, key bool) error {
	if !f.Valid() {
		return fmt.Errorf("kvcache: no KV format given; known formats: %s", strings.Join(FormatNames(), ", "))
	}
	if m := f.c.multiple; d < m || d%m != 0 {
		return fmt.Errorf("kvcache: format %s needs a head dimension that is a multiple of %d; this model's is %d", f.name, m, d)
	}
	if f.c.keysOnly && !key {
		return fmt.Errorf("kvcache: format %s is for keys only (it estimates inner products and cannot reconstruct values); choose another value format", f.name)
	}
	return nil
}

// DefaultWindow is the number of most recent tokens a compressed cache
// keeps in fp16 when Spec.Window is 0. Measured (TestWindowError): the
// window removes the quantization error of the tokens that attention
// weights most in decoding, and 64 tokens keep the window's cost at 16k
// tokens under 2.2% of the compressed bytes for every format down to
// turbo2.5 (64·16 bits against 16320·2.5), inside the 3% that the issue's
// target allows; 128 would exceed it at turbo2.5.
const DefaultWindow = 64

// DefaultSeed is the seed of the rotations and sketches of a Spec whose
// Seed is 0.
const DefaultSeed = 0x7475726b76 // "turkv"

// Spec configures the caches of a model: the key and value formats, the
// recent window, and the seed of every rotation and sketch (stored with
// the cache, so that a cache can be rebuilt bit for bit).
type Spec struct {
	K, V Format
	// Window is the number of most recent tokens kept in fp16 (0:
	// DefaultWindow; negative: none). Formats that need tokens before
	// they can encode them (KIVI keys: blocks of 32; split formats: the
	// tokens the outlier channels are chosen from) hold more as needed.
	Window int
	Seed   uint64
	// Cov holds the calibration the klt formats are designed from (nil
	// for every other format; Config.WithCovariances sets it).
	Cov *Covariances
	// corr, if not 0, overrides turboCorrection with corr−1 (tests
	// measure the choice with it).
	corr quant.Correction
}

// ParseSpec returns the Spec for a key format and a value format name; an
// empty v means the same as k.
func ParseSpec(k, v string) (Spec, error) {
	if v == "" {
		v = k
	}
	kf, err := ParseFormat(k)
	if err != nil {
		return Spec{}, err
	}
	vf, err := ParseFormat(v)
	if err != nil {
		return Spec{}, err
	}
	return Spec{K: kf, V: vf}, nil
}

// String returns "K" when keys and values share the format, else "K/V".
func (s Spec) String() string {
	if s.K == s.V {
		return s.K.name
	}
	return s.K.name + "/" + s.V.name
}

// window returns the effective recent-window length.
func (s Spec) window() int {
	switch {
	case s.Window == 0:
		return DefaultWindow
	case s.Window < 0:
		return 0
	}
	return s.Window
}

func (s Spec) seed() uint64 {
	if s.Seed == 0 {
		return DefaultSeed
	}
	return s.Seed
}

// Check reports whether the spec can serve layers of shape sh, before any
// cache is made.
func (s Spec) Check(sh Shape) error {
	if err := s.checkFormats(sh); err != nil {
		return err
	}
	if s.NeedsCovariances() {
		return s.Cov.check(-1, sh)
	}
	return nil
}

// checkFormats is Check without the covariances of calibrated formats,
// which a saved plan gets after it is read (Config.WithCovariances).
func (s Spec) checkFormats(sh Shape) error {
	if err := sh.Validate(); err != nil {
		return err
	}
	return s.checkDim(sh.HeadDim)
}

// checkDim is checkFormats for head dimension d, with no shape to check.
func (s Spec) checkDim(d int) error {
	if err := checkWindow(s.Window); err != nil {
		return err
	}
	for _, f := range []Format{s.K, s.V} {
		if err := f.checkTier(s.window()); err != nil {
			return err
		}
	}
	if err := s.K.Check(d, true); err != nil {
		return fmt.Errorf("%w (keys)", err)
	}
	if err := s.V.Check(d, false); err != nil {
		return fmt.Errorf("%w (values)", err)
	}
	return nil
}

// NeedsCovariances reports whether a format of s is calibrated (klt) and
// s has no covariances yet.
func (s Spec) NeedsCovariances() bool {
	return (s.K.Valid() && s.K.calibrated() || s.V.Valid() && s.V.calibrated()) && s.Cov == nil
}

// NewCache returns the cache of one layer; its signature is that of
// model.NewCache. f32/f32 and f16/f16 give a Dense cache; everything else
// a Compressed one.
func (s Spec) NewCache(layer int, sh Shape) (Cache, error) {
	if err := s.Check(sh); err != nil {
		return nil, err
	}
	if s.K == s.V && !s.K.compressed() {
		return newDense(sh, s.K.name)
	}
	return newCompressed(s, layer, sh)
}

// Bits returns the format's bits per coordinate at head dimension d,
// everything in a token's code counted (indices, scales, norms; for
// kivi2 keys, the per-channel parameters of a 32-token block shared out),
// as the compressed part of a cache stores it: the closed form, no
// quantizer built. A tiered format's bits depend on the cache's length
// (Config.BitsAt): Bits refuses it.
func (f Format) Bits(d int) (float64, error) {
	if err := f.Check(d, true); err != nil {
		return 0, err
	}
	if f.tiered() {
		return 0, fmt.Errorf("kvcache: format %s holds a mix of rates that depends on the cache's length; count its bits at a length", f)
	}
	return float64(8*f.c.tokenBytes(d, true)) / float64(d), nil
}
