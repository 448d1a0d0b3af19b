package half

import (
	"math"
	"testing"
)

// Reference bit patterns are from the IEEE 754 binary16 definition
// (worked by hand; the same values NumPy's float16 gives).
func TestF32ToF16(t *testing.T) {
	tests := []struct {
		in   float32
		want F16
	}{
		{0, 0x0000},
		{float32(math.Copysign(0, -1)), 0x8000},
		{1, 0x3c00},
		{-2, 0xc000},
		{0.5, 0x3800},
		{65504, 0x7bff},                  // largest finite
		{65520, 0x7c00},                  // rounds up to Inf (tie to even)
		{65519, 0x7bff},                  // just below the tie
		{float32(math.Inf(1)), 0x7c00},   // +Inf
		{float32(math.Inf(-1)), 0xfc00},  // -Inf
		{6.103515625e-05, 0x0400},        // smallest normal 2^-14
		{5.960464477539063e-08, 0x0001},  // smallest subnormal 2^-24
		{2.9802322387695312e-08, 0x0000}, // 2^-25: tie, rounds to even (0)
		{4.470348358154297e-08, 0x0001},  // 1.5*2^-25 rounds up to 2^-24
		{1.0009765625, 0x3c01},           // 1 + 2^-10 exact
		{1.00048828125, 0x3c00},          // 1 + 2^-11: tie, to even
		{1.00146484375, 0x3c02},          // 1 + 3*2^-11: tie, to even (up)
		{0.333333343, 0x3555},
		{-3.140625, 0xc248},
		{6.097555160522461e-05, 0x03ff}, // largest subnormal
	}
	for _, tt := range tests {
		if got := F32ToF16(tt.in); got != tt.want {
			t.Errorf("F32ToF16(%g) = %#04x, want %#04x", tt.in, got, tt.want)
		}
	}
	if h := F32ToF16(float32(math.NaN())); h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
		t.Errorf("F32ToF16(NaN) = %#04x, not a NaN", h)
	}
}

func TestF16RoundTripAll(t *testing.T) {
	// Every finite binary16 value must survive F16 -> F32 -> F16 exactly.
	for i := range 1 << 16 {
		h := F16(i)
		if h&0x7c00 == 0x7c00 && h&0x3ff != 0 {
			if f := F16ToF32(h); !math.IsNaN(float64(f)) {
				t.Fatalf("F16ToF32(%#04x) = %g, want NaN", h, f)
			}
			continue
		}
		if got := F32ToF16(F16ToF32(h)); got != h {
			t.Fatalf("round trip %#04x -> %g -> %#04x", h, F16ToF32(h), got)
		}
	}
}

func TestF16ToF32(t *testing.T) {
	tests := []struct {
		in   F16
		want float32
	}{
		{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, 5.960464477539063e-08},
		{0x03ff, 6.097555160522461e-05}, {0x3555, 0.333251953125},
	}
	for _, tt := range tests {
		if got := F16ToF32(tt.in); got != tt.want {
			t.Errorf("F16ToF32(%#04x) = %g, want %g", tt.in, got, tt.want)
		}
	}
}

func TestBF16(t *testing.T) {
	tests := []struct {
		in   float32
		want BF16
	}{
		{1, 0x3f80}, {-2, 0xc000}, {3.140625, 0x4049},
		{1.00390625, 0x3f80}, // 1 + 2^-8: tie, to even
		{1.01171875, 0x3f82}, // 1 + 3*2^-8: tie, to even (up)
		{1.0078125, 0x3f81},  // exact
		{float32(math.Inf(1)), 0x7f80},
	}
	for _, tt := range tests {
		if got := F32ToBF16(tt.in); got != tt.want {
			t.Errorf("F32ToBF16(%g) = %#04x, want %#04x", tt.in, got, tt.want)
		}
		if tt.in == float32(int(tt.in)) && BF16ToF32(tt.want) != tt.in {
			t.Errorf("BF16ToF32(%#04x) = %g, want %g", tt.want, BF16ToF32(tt.want), tt.in)
		}
	}
	if !math.IsNaN(float64(BF16ToF32(F32ToBF16(float32(math.NaN()))))) {
		t.Error("BF16 NaN not preserved")
	}
}
