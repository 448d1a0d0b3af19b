// Package half converts between float32 and the 16-bit floating-point
// formats used in model files and compressed caches: IEEE 754 binary16
// (F16) and bfloat16 (BF16).
//
// Conversions to 16 bits round to nearest, ties to even, as the F16C
// instructions, NumPy and PyTorch do, so values written here are
// bit-identical to those written by llama.cpp's converters.
package half

import "math"

// F16 is an IEEE 754 binary16 value in its bit representation.
type F16 uint16

// BF16 is a bfloat16 value (the top 16 bits of a float32) in its bit
// representation.
type BF16 uint16

// F16ToF32 returns the float32 value of h. Every binary16 value, subnormals,
// infinities and NaNs included, is exactly representable as float32.
func F16ToF32(h F16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f: // Inf or NaN; keep the payload.
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp != 0: // normal
		return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
	case man == 0: // signed zero
		return math.Float32frombits(sign)
	}
	// Subnormal: value = man * 2^-24; normalise into a float32.
	e := uint32(113)
	for man&0x400 == 0 {
		man <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (man&0x3ff)<<13)
}

// F32ToF16 returns the binary16 value nearest to f (ties to even). Values
// beyond the binary16 range become ±Inf; NaN stays NaN (quiet).
func F32ToF16(f float32) F16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	man := b & 0x7fffff
	if exp == 0xff {
		if man != 0 {
			return F16(sign | 0x7e00 | uint16(man>>13)) // quiet NaN
		}
		return F16(sign | 0x7c00)
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return F16(sign | 0x7c00)
	}
	if e <= 0 {
		// Result is subnormal or zero: shift the full significand
		// (with its implicit bit) right and round to nearest even.
		if e < -10 {
			return F16(sign)
		}
		m := man | 0x800000
		shift := uint32(14 - e)
		half := uint32(1) << (shift - 1)
		rest := m & (half<<1 - 1)
		r := m >> shift
		if rest > half || (rest == half && r&1 == 1) {
			r++
		}
		return F16(sign | uint16(r))
	}
	r := uint32(e)<<10 | man>>13
	rest := man & 0x1fff
	if rest > 0x1000 || (rest == 0x1000 && r&1 == 1) {
		r++ // may carry into the exponent, up to Inf: still correct
	}
	return F16(sign | uint16(r))
}

// BF16ToF32 returns the float32 value of h (exact).
func BF16ToF32(h BF16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// F32ToBF16 returns the bfloat16 value nearest to f (ties to even); NaN
// stays NaN (quiet).
func F32ToBF16(f float32) BF16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return BF16(b>>16 | 0x40)
	}
	b += 0x7fff + (b>>16)&1
	return BF16(b >> 16)
}

// F16sToF32 converts src into dst; the shorter length decides the count.
func F16sToF32(dst []float32, src []F16) {
	n := min(len(dst), len(src))
	for i := range n {
		dst[i] = F16ToF32(src[i])
	}
}

// Round16 returns f rounded to the nearest binary16 value, as a float32:
// the value a reader of a stored fp16 field will see.
func Round16(f float32) float32 { return F16ToF32(F32ToF16(f)) }
