package tensor

import (
	"bytes"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/half"
)

// TestQuantizeHandBlocks checks the reference quantizers on blocks whose
// bytes were worked out by hand from the rules in ggml-quants.c.
func TestQuantizeHandBlocks(t *testing.T) {
	tests := []struct {
		name string
		t    DType
		x    map[int]float32 // the rest are 0
		want []byte          // nil entries of a full block are filled by fill
		fill byte
	}{
		// max|x| = 127 → d = 1 (fp16 0x3c00); round halves away from zero:
		// -63.5 → -64, 0.5 → 1, -0.5 → -1, 2.49 → 2.
		{"Q8_0 unit scale", Q8_0,
			map[int]float32{0: 127, 1: -63.5, 2: 0.5, 3: 1.5, 4: -0.5, 5: 2.49},
			[]byte{0x00, 0x3c, 0x7f, 0xc0, 0x01, 0x02, 0xff, 0x02}, 0},
		// max|x| = 254 → d = 2 (0x4000), 1/d = 0.5: 3 → 1.5 → 2, -1 → -1,
		// 1 → 1, -254 → -127.
		{"Q8_0 scale 2", Q8_0,
			map[int]float32{0: -254, 1: 3, 2: -1, 3: 1},
			[]byte{0x00, 0x40, 0x81, 0x02, 0xff, 0x01}, 0},
		// All zero: d = 0 and every quant 0.
		{"Q8_0 zero", Q8_0, nil, []byte{0, 0}, 0},
		// The largest magnitude is -8 (the first of ±8), so d = -8/-8 = 1
		// (0x3c00) and q = min(15, trunc(x + 8.5)): -8→0, 7→15, 8→15
		// (clamped), 0→8, 0.5→9, -0.5→8, -1.51→6, 1.49→9. Byte j holds
		// element j (low) and j+16 (high); zeros give 0x88.
		{"Q4_0 unit scale", Q4_0,
			map[int]float32{0: -8, 16: 7, 1: 8, 17: 0, 2: 0.5, 18: -0.5, 3: -1.51, 19: 1.49},
			[]byte{0x00, 0x3c, 0xf0, 0x8f, 0x89, 0x96}, 0x88},
		// Largest magnitude +16 → d = -2 (0xc000), 1/d = -0.5: 16 → 0,
		// -14 → 15.5 → 15, 3 → 7.
		{"Q4_0 negative scale", Q4_0,
			map[int]float32{0: 16, 16: -14, 1: 3},
			[]byte{0x00, 0xc0, 0xf0, 0x87}, 0x88},
		// min = -1, max = 14 → d = 1 (0x3c00), m = -1 (0xbc00); q = trunc(x+1+0.5):
		// -1→0, 14→15, 0→1 (the zeros), 0.4→1, 0.6→2.
		{"Q4_1", Q4_1,
			map[int]float32{0: -1, 16: 14, 1: 0.4, 17: 0.6},
			[]byte{0x00, 0x3c, 0x00, 0xbc, 0xf0, 0x21}, 0x11},
		// Largest magnitude -16 → d = 1; q = min(31, trunc(x+16.5)):
		// -16→0, 15→31 (fifth bit at qh bit 16), 0→16 (fifth bit set
		// everywhere else).
		{"Q5_0", Q5_0,
			map[int]float32{0: -16, 16: 15},
			[]byte{0x00, 0x3c, 0xfe, 0xff, 0xff, 0xff, 0xf0}, 0x00},
		// min = 0 (the zeros), max = 31 → d = 1, m = 0: 31 → 31, 17 → 17.
		{"Q5_1", Q5_1,
			map[int]float32{0: 31, 16: 17},
			[]byte{0x00, 0x3c, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x1f}, 0x00},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := make([]float32, tt.t.BlockSize())
			for i, v := range tt.x {
				x[i] = v
			}
			want := bytes.Repeat([]byte{tt.fill}, tt.t.BlockBytes())
			copy(want, tt.want)
			// Fields before the quants are part of tt.want; fill covers
			// the rest of the quant bytes.
			got := make([]byte, tt.t.BlockBytes())
			if err := Quantize(tt.t, got, x); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("got  % x\nwant % x", got, want)
			}
		})
	}
}

// TestQuantizeQ8_KHand checks Q8_K on a block whose largest magnitude is
// -127: d = 1 (float32), quants round ties to even, bsums add 16 quants.
func TestQuantizeQ8_KHand(t *testing.T) {
	x := make([]float32, QK_K)
	x[0], x[1], x[2], x[17] = -127, 2.5, -3.5, 1
	got := make([]byte, q8_KBytes)
	if err := Quantize(Q8_K, got, x); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, q8_KBytes)
	copy(want, []byte{0x00, 0x00, 0x80, 0x3f, 0x81, 0x02, 0xfc})
	want[4+17] = 1
	sum0 := -127 + 2 - 4
	want[260], want[261] = byte(sum0), byte(sum0>>8)
	want[262] = 1
	if !bytes.Equal(got, want) {
		t.Errorf("got  % x\nwant % x", got, want)
	}
}

// TestQuantizeQ8_0Q4_0Exported checks the two entry points that the quant
// package uses give the same bytes as Quantize.
func TestQuantizeQ8_0Q4_0Exported(t *testing.T) {
	x := randomVector(rand.New(rand.NewPCG(7, 7)), 96)
	for _, c := range []struct {
		t  DType
		fn func([]byte, []float32) error
	}{{Q8_0, QuantizeQ8_0}, {Q4_0, QuantizeQ4_0}} {
		a := make([]byte, 3*c.t.BlockBytes())
		b := make([]byte, len(a))
		if err := c.fn(a, x); err != nil {
			t.Fatal(err)
		}
		if err := Quantize(c.t, b, x); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s: exported quantizer differs from Quantize", c.t)
		}
		if err := c.fn(a[:len(a)-1], x); err == nil {
			t.Errorf("%s: short dst accepted", c.t)
		}
		if err := c.fn(a, x[:95]); err == nil {
			t.Errorf("%s: partial block accepted", c.t)
		}
	}
}

func TestQuantizeErrors(t *testing.T) {
	tests := []struct {
		t        DType
		dst, src int
		wantSub  string
	}{
		{Q8_0, 33, 32, "need 34 bytes, have 33"},
		{Q4_0, 18, 31, "not a multiple"},
		{Q6_K, 210, 128, "not a multiple"},
		{F16, 2, 1, "not supported"},
		{IQ4_NL, 18, 32, "not supported"},
	}
	for _, tt := range tests {
		err := Quantize(tt.t, make([]byte, tt.dst), make([]float32, tt.src))
		if err == nil || !strings.Contains(err.Error(), tt.wantSub) {
			t.Errorf("Quantize(%s, %d, %d) = %v, want error containing %q", tt.t, tt.dst, tt.src, err, tt.wantSub)
		}
	}
}

func randomVector(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

// TestQuantizeRoundTrip bounds the error of quantize-then-dequantize on
// Gaussian data, per format. The per-element bounds follow from each
// format's rounding step; the RMS bounds are ~1.3× what the formats
// reach on N(0,1) (llama.cpp's test-quantize-fns uses similar RMS limits),
// so a wrong scale or level in any sub-block shows up.
func TestQuantizeRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	x := randomVector(r, 4*QK_K)
	x[5] = 0 // exact zeros and outliers are part of real weights
	x[300] = 9
	tests := []struct {
		t       DType
		maxRMS  float64
		elemErr func(blockAmax float64) float64 // nil: RMS only
	}{
		// Q8_0: |x - d̂·q| ≤ d/2 + 127·|d - d̂| ≤ d·(1/2 + 127·2^-11).
		{Q8_0, 0.007, func(a float64) float64 { return a / 127 * (0.5 + 127.0/2048) }},
		// Q4_0: step d = amax/8; rounding error ≤ d/2 except at the clamped
		// +8 end, which is off by at most d; plus fp16 rounding of d.
		{Q4_0, 0.11, func(a float64) float64 { return a / 8 * (1 + 8.0/2048) }},
		{Q4_1, 0.10, nil},
		{Q5_0, 0.055, func(a float64) float64 { return a / 16 * (1 + 16.0/2048) }},
		{Q5_1, 0.048, nil},
		{Q2_K, 0.39, nil},
		{Q3_K, 0.19, nil},
		{Q4_K, 0.09, nil},
		{Q5_K, 0.047, nil},
		{Q6_K, 0.023, nil},
		{Q8_K, 0.014, nil}, // one 256-block holds the outlier 9
		// TQ2_0's reference scale is max|x|: everything below half of it
		// rounds to 0.
		{TQ1_0, 1.0, nil},
		{TQ2_0, 1.0, nil},
	}
	for _, tt := range tests {
		n, _ := tt.t.RowBytes(int64(len(x)))
		q := make([]byte, n)
		if err := Quantize(tt.t, q, x); err != nil {
			t.Fatal(err)
		}
		y := make([]float32, len(x))
		if err := Dequantize(tt.t, y, q); err != nil {
			t.Fatal(err)
		}
		var se float64
		bs := tt.t.BlockSize()
		for b := 0; b < len(x); b += bs {
			var amax float64
			for _, v := range x[b : b+bs] {
				amax = math.Max(amax, math.Abs(float64(v)))
			}
			for i := b; i < b+bs; i++ {
				e := math.Abs(float64(x[i] - y[i]))
				se += e * e
				if tt.elemErr != nil && e > tt.elemErr(amax) {
					t.Errorf("%s: element %d: %g → %g, error %g > %g", tt.t, i, x[i], y[i], e, tt.elemErr(amax))
				}
			}
		}
		if rms := math.Sqrt(se / float64(len(x))); rms > tt.maxRMS {
			t.Errorf("%s: RMS error %.4f > %.4f", tt.t, rms, tt.maxRMS)
		}
	}
}

// TestQuantizeZeroBlocks checks that all-zero blocks of every format
// decode to exact zeros, whatever the destination held before.
func TestQuantizeZeroBlocks(t *testing.T) {
	for ty := range quantizers {
		x := make([]float32, 2*ty.BlockSize())
		n, _ := ty.RowBytes(int64(len(x)))
		q := make([]byte, n)
		for i := range q {
			q[i] = 0xaa // garbage the quantizer must overwrite
		}
		if err := Quantize(ty, q, x); err != nil {
			t.Fatal(err)
		}
		y := make([]float32, len(x))
		if err := Dequantize(ty, y, q); err != nil {
			t.Fatal(err)
		}
		for i, v := range y {
			if v != 0 {
				t.Errorf("%s: zero input decodes to %g at %d", ty, v, i)
				break
			}
		}
	}
}

// TestQuantizeScaleFP16 checks that the stored Q8_0 scale is the fp16
// rounding of max|x|/127 (round to nearest even), not a truncation.
func TestQuantizeScaleFP16(t *testing.T) {
	x := make([]float32, 32)
	x[0] = 100
	q := make([]byte, 34)
	if err := QuantizeQ8_0(q, x); err != nil {
		t.Fatal(err)
	}
	want := half.F32ToF16(100.0 / 127)
	if got := half.F16(uint16(q[0]) | uint16(q[1])<<8); got != want {
		t.Errorf("scale %#04x, want %#04x", got, want)
	}
}
