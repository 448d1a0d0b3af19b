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
//	kivi2 3               KIVI 2-bit: keys per channel over blocks of 32
//	                      tokens, values per token in groups of 32
//	                      channels, fp16 scale and min per group
//	turbo2.5 2.5          TurboQuant_mse with the norm correction, d/4
//	turbo3.5 3.5          outlier channels at 3 (4) bits, the rest at 2
//	                      (3), an fp16 scale per part
//	turbo3 3.125          TurboQuant_mse with the norm correction, one
//	turbo4 4.125          fp16 scale
//	turbo3.5p 3.75        TurboQuant_prod parts (MSE at 2/3 bits + d/4
//	                      and 3d/4 QJL sign bits with their norms)
//	polar 3.875           PolarQuant [4,2,2,2] with fp16 block radii
//	qjl 2.125             QJL, m = 2d sign bits and an fp16 norm (keys
//	                      only)
type Format struct {
	name string
	kind formatKind
	bits int // TurboMSE bits (turbo3, turbo4); low bits of a split
}

type formatKind uint8

const (
	kindNone      formatKind = iota
	kindF32                  // float32
	kindF16                  // IEEE fp16
	kindQ8_0                 // llama.cpp q8_0, 8.5 bits
	kindQ4_0                 // llama.cpp q4_0, 4.5 bits
	kindKIVI                 // KIVI 2-bit: keys per channel (blocks of 32 tokens), values per token (groups of 32)
	kindTurbo                // TurboQuant_mse, one part
	kindSplit                // TurboQuant_mse, outlier channels at bits+1, the rest at bits
	kindSplitProd            // TurboQuant_prod parts, outliers at bits+1, the rest at bits
	kindPolar                // PolarQuant [4,2,2,2]
	kindQJL                  // QJL sign sketch, m = 2d, keys only
)

// formats lists every known name, in the order error messages show them.
var formats = []Format{
	{name: "f32", kind: kindF32},
	{name: "f16", kind: kindF16},
	{name: "q8_0", kind: kindQ8_0},
	{name: "q4_0", kind: kindQ4_0},
	{name: "kivi2", kind: kindKIVI, bits: 2},
	{name: "turbo2.5", kind: kindSplit, bits: 2},
	{name: "turbo3", kind: kindTurbo, bits: 3},
	{name: "turbo3.5", kind: kindSplit, bits: 3},
	{name: "turbo4", kind: kindTurbo, bits: 4},
	{name: "turbo3.5p", kind: kindSplitProd, bits: 3},
	{name: "polar", kind: kindPolar},
	{name: "qjl", kind: kindQJL},
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
	return Format{}, fmt.Errorf("kvcache: unknown KV format %q; known formats: %s", name, strings.Join(FormatNames(), ", "))
}

// String returns the format's name.
func (f Format) String() string { return f.name }

// Valid reports whether f is a format ParseFormat returns.
func (f Format) Valid() bool { return f.kind != kindNone }

// compressed reports whether the format stores tokens in a quantized
// form (everything but f32 and f16).
func (f Format) compressed() bool { return f.kind > kindF16 }

// splitParts reports whether the format splits outlier channels off.
func (f Format) split() bool { return f.kind == kindSplit || f.kind == kindSplitProd }

// headDimMultiple returns the multiple of which the head dimension must
// be: q8_0, q4_0 and KIVI work in blocks or groups of 32 channels; the
// split formats keep d/4 outlier channels and need both parts a multiple
// of 8 for the packed-index kernels (so d a multiple of 32); TurboMSE
// packs 8 indices into b bytes; PolarQuant needs blocks of 16; QJL's
// m = 2d sign bits fill whole bytes when d is a multiple of 4.
func (f Format) headDimMultiple() int {
	switch f.kind {
	case kindQ8_0, kindQ4_0, kindKIVI, kindSplit, kindSplitProd:
		return 32
	case kindTurbo:
		return 8
	case kindPolar:
		return 16
	case kindQJL:
		return 4
	}
	return 1
}

// Check reports whether the format can store vectors of head dimension d,
// as keys (key true) or values.
func (f Format) Check(d int, key bool) error {
	if !f.Valid() {
		return fmt.Errorf("kvcache: no KV format given; known formats: %s", strings.Join(FormatNames(), ", "))
	}
	if m := f.headDimMultiple(); d < m || d%m != 0 {
		return fmt.Errorf("kvcache: format %s needs a head dimension that is a multiple of %d; this model's is %d", f.name, m, d)
	}
	if f.kind == kindQJL && !key {
		return fmt.Errorf("kvcache: format qjl is for keys only (it estimates inner products and cannot reconstruct values); choose another value format")
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
	if err := sh.Validate(); err != nil {
		return err
	}
	if err := checkWindow(s.Window); err != nil {
		return err
	}
	if err := s.K.Check(sh.HeadDim, true); err != nil {
		return fmt.Errorf("%w (keys)", err)
	}
	if err := s.V.Check(sh.HeadDim, false); err != nil {
		return fmt.Errorf("%w (values)", err)
	}
	return nil
}

// NewCache returns the cache of one layer; its signature is that of
// model.NewCache. f32/f32 and f16/f16 give a Dense cache; everything else
// a Compressed one.
func (s Spec) NewCache(layer int, sh Shape) (Cache, error) {
	if err := s.Check(sh); err != nil {
		return nil, err
	}
	if s.K == s.V && !s.K.compressed() {
		if s.K.kind == kindF32 {
			return NewF32(sh)
		}
		return NewF16(sh)
	}
	return newCompressed(s, layer, sh)
}

// quantizer returns the quantizer of a non-split compressed format for
// head dimension d, drawn from seed.
func (f Format) quantizer(d int, seed uint64, corr quant.Correction) (quant.Quantizer, error) {
	o := quant.Options{Seed: seed, Correction: corr}
	switch f.kind {
	case kindQ8_0:
		return quant.NewQ8_0(d)
	case kindQ4_0:
		return quant.NewQ4_0(d)
	case kindKIVI:
		return quant.NewKIVI(d, f.bits, 32)
	case kindTurbo:
		return quant.NewTurboMSE(d, f.bits, o)
	case kindPolar:
		return quant.NewPolar(d, nil, o)
	case kindQJL:
		return quant.NewQJL(d, 2*d, seed)
	}
	return nil, fmt.Errorf("kvcache: format %s has no single quantizer", f.name)
}

// Bits returns the format's bits per coordinate at head dimension d,
// everything in a token's code counted (indices, scales, norms; for
// kivi2 keys, the per-channel parameters of a 32-token block shared out),
// as the compressed part of a cache stores it.
func (f Format) Bits(d int) (float64, error) {
	if err := f.Check(d, true); err != nil {
		return 0, err
	}
	switch f.kind {
	case kindF32:
		return 32, nil
	case kindF16:
		return 16, nil
	case kindSplit, kindSplitProd:
		out := make([]int, d/4)
		for i := range out {
			out[i] = i
		}
		q, err := f.splitQuantizer(d, out, 1, turboCorrection)
		if err != nil {
			return 0, err
		}
		return quant.BitsPerCoord(q), nil
	}
	q, err := f.quantizer(d, 1, turboCorrection)
	if err != nil {
		return 0, err
	}
	return quant.BitsPerCoord(q), nil
}

// splitQuantizer returns the split quantizer of a split format with the
// given outlier channels.
func (f Format) splitQuantizer(d int, outliers []int, seed uint64, corr quant.Correction) (*quant.Split, error) {
	o := quant.Options{Seed: seed, Correction: corr}
	return quant.NewTurboSplit(d, outliers, f.bits+1, f.bits, f.kind == kindSplitProd, o)
}
