package quant

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/turbomem/turbomem/half"
)

// handBlock returns 32 values, zero except those in set.
func handBlock(set map[int]float32) []float32 {
	x := make([]float32, 32)
	for i, v := range set {
		x[i] = v
	}
	return x
}

// TestBaselineHandBlocks checks blocks written by hand from llama.cpp's
// quantize_row_q8_0_ref (d = amax/127, q = roundf(x·(1/d)), halves away
// from zero) and quantize_row_q4_0_ref (d = max/−8 with max the signed
// element of largest magnitude, q = MIN(15, (int8_t)(x·(1/d) + 8.5f)),
// element j in the low nibble of byte j, j+16 in the high nibble).
func TestBaselineHandBlocks(t *testing.T) {
	// q8_0 block 1: amax 127 → d = 1 (3c00); 63.5 → 64 (0x40), −0.5 → −1
	// (0xff), 0.49 → 0, −3 → 0xfd, ±127 → 0x7f, 0x81.
	// q8_0 block 2: amax 2.54 → d = 0.02 → fp16 1.28·2^−6: mantissa
	// 0.28·1024 = 286.7 → 287 = 0x11f, exponent 9: 0x251f; −2.54 → −127,
	// 1 → 50 (0x32), 0.3 → 15.
	q8 := append(
		handBlock(map[int]float32{0: 127, 1: -127, 2: 63.5, 3: -0.5, 4: 0.49, 31: -3}),
		handBlock(map[int]float32{0: -2.54, 1: 1, 2: 0.3})...)
	want8 := make([]byte, 68)
	copy(want8, []byte{0x00, 0x3c, 0x7f, 0x81, 0x40, 0xff, 0x00})
	want8[33] = 0xfd
	copy(want8[34:], []byte{0x1f, 0x25, 0x81, 0x32, 0x0f})

	// q4_0 block 1: max = +8 → d = −1 (bc00), q = trunc(8.5 − x):
	// 8 → 0, −7 → 15, 1 → 7, −0.6 → 9, 0 → 8 | 0.5 → 8, 0.51 → 7,
	// −7.9 → 16 → 15.
	// q4_0 block 2: max = −4 → d = 0.5 (3800), q = trunc(2x + 8.5):
	// 1.2 → 10, −4 → 0, −0.2 → 8 | 3.9 → 16 → 15, −0.3 → 7.
	q4 := append(
		handBlock(map[int]float32{0: 8, 1: -7, 2: 1, 3: -0.6, 16: 0.5, 17: 0.51, 18: -7.9}),
		handBlock(map[int]float32{0: 1.2, 1: -4, 2: -0.2, 16: 3.9, 17: -0.3})...)
	want4 := bytes.Repeat([]byte{0x88}, 36)
	copy(want4, []byte{0x00, 0xbc, 0x80, 0x7f, 0xf7, 0x89})
	copy(want4[18:], []byte{0x00, 0x38, 0xfa, 0x70, 0x88})

	for _, tt := range []struct {
		q    Quantizer
		x    []float32
		want []byte
		dec  []float32 // some decoded values, by index
	}{
		{mustQ(NewQ8_0(64)), q8, want8, []float32{0: 127, 2: 64, 3: -1, 31: -3, 33: 50 * half.Round16(2.54/127)}},
		{mustQ(NewQ4_0(64)), q4, want4, []float32{0: 8, 1: -7, 3: -1, 18: -7, 32: 1, 33: -4, 48: 3.5, 49: -0.5}},
	} {
		got := make([]byte, tt.q.Bytes())
		if err := tt.q.Encode(got, tt.x); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, tt.want) {
			t.Errorf("%s: code\n% x\nwant\n% x", tt.q.Name(), got, tt.want)
		}
		dec := make([]float32, 64)
		if err := tt.q.Decode(dec, tt.want); err != nil {
			t.Fatal(err)
		}
		for i, v := range tt.dec {
			if v != 0 && dec[i] != v {
				t.Errorf("%s: decoded[%d] = %g, want %g", tt.q.Name(), i, dec[i], v)
			}
		}
	}
}

func mustQ[Q Quantizer](q Q, err error) Quantizer {
	if err != nil {
		panic(err)
	}
	return q
}

// TestBaselineErrorBound: q8_0 rounds to the nearest of its grid, so
// |x − x̃| ≤ d/2 plus what the fp16 rounding of d moves the grid (127
// steps of |d − fp16(d)|); q4_0 likewise, except above 7.5 steps on the
// side opposite the block's extreme element, which clamps to 7 steps:
// there the error reaches one step.
func TestBaselineErrorBound(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	const d, n = 128, 200
	xs := randomVectors(r, n, d, 1)
	for i := range xs {
		xs[i] *= float32(1 + i%13)
	}
	for _, q := range []Quantizer{mustQ(NewQ8_0(d)), mustQ(NewQ4_0(d))} {
		codes := make([]byte, n*q.Bytes())
		if err := q.EncodeBatch(codes, xs); err != nil {
			t.Fatal(err)
		}
		dec := make([]float32, n*d)
		for i := range n {
			if err := q.Decode(dec[i*d:(i+1)*d], codes[i*q.Bytes():(i+1)*q.Bytes()]); err != nil {
				t.Fatal(err)
			}
		}
		for b := 0; b < len(xs); b += 32 {
			blk := xs[b : b+32]
			var amax, m float32
			for _, v := range blk {
				if a := float32(math.Abs(float64(v))); a > amax {
					amax, m = a, v
				}
			}
			step, steps := float64(amax)/127, 127.0
			if q.Name() == "q4_0" {
				step, steps = float64(amax)/8, 8
			}
			step16 := float64(half.Round16(float32(step)))
			for j, v := range blk {
				bound := step16/2 + steps*math.Abs(step16-step) + 1e-6*float64(amax)
				if q.Name() == "q4_0" && float64(v)*float64(-m) > 0 && math.Abs(float64(v)) > 7.5*step {
					bound += step16 / 2
				}
				if e := math.Abs(float64(v - dec[b+j])); e > bound {
					t.Fatalf("%s: block %d element %d: |%g − %g| = %g > %g", q.Name(), b/32, j, v, dec[b+j], e, bound)
				}
			}
		}
	}
}

func TestBaselineScorerMatchesDecode(t *testing.T) {
	for _, d := range []int{32, 128, 256} {
		checkScorer(t, mustQ(NewQ8_0(d)), 50, 3)
		checkScorer(t, mustQ(NewQ4_0(d)), 50, 3)
	}
}

func TestBaselineDistortion(t *testing.T) {
	n := 5000
	if testing.Short() {
		n = 1000
	}
	for _, tt := range []struct {
		q    Quantizer
		bits float64
	}{
		{mustQ(NewQ8_0(128)), 8.5},
		{mustQ(NewQ4_0(128)), 4.5},
	} {
		got, err := Measure(tt.q, n, 29)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: MSE %.3g, %.4g bits, %.2f× bound, IP distortion·d %.3g, bias %.5f±%.5f",
			tt.q.Name(), got.MSE, got.Bits, got.BoundRatio, got.IPDistortionD, got.Bias, got.BiasSE)
		if got.Bits != tt.bits {
			t.Errorf("%s: %g bits, want %g", tt.q.Name(), got.Bits, tt.bits)
		}
		// Uniform rounding error: ≈ step²/12 per coordinate with step =
		// amax/127 or amax/8, amax ≈ 2.4/√d for 32 N(0, 1/d) values; a
		// factor-2 window catches a wrong scale or layout, not modelling
		// detail (q4_0's clamped side, the exact elements).
		for _, s := range []float64{127, 8} {
			if (s == 127) != (tt.q.Name() == "q8_0") {
				continue
			}
			est := 128 * (2.4 * 2.4 / 128) / (s * s) / 12
			if got.MSE < est/2 || got.MSE > 2*est {
				t.Errorf("%s: MSE %.3g, estimate %.3g", tt.q.Name(), got.MSE, est)
			}
		}
	}
}

func TestBaselineErrors(t *testing.T) {
	for _, d := range []int{0, 16, 48, 100} {
		if _, err := NewQ8_0(d); err == nil {
			t.Errorf("NewQ8_0(%d): no error", d)
		}
		if _, err := NewQ4_0(d); err == nil {
			t.Errorf("NewQ4_0(%d): no error", d)
		}
	}
	q8, q4 := mustQ(NewQ8_0(64)), mustQ(NewQ4_0(64))
	for _, q := range []Quantizer{q8, q4} {
		code := make([]byte, q.Bytes())
		x := make([]float32, 64)
		x[40] = float32(math.NaN())
		if err := q.Encode(code, x); err == nil {
			t.Errorf("%s: NaN input: no error", q.Name())
		}
		x[40] = 1e7 // q8_0: 1e7/127 ≈ 78740 > 65504; q4_0: 1.25e6
		if err := q.Encode(code, x); err == nil {
			t.Errorf("%s: scale beyond fp16: no error", q.Name())
		}
		if err := q.Encode(code[1:], make([]float32, 64)); err == nil {
			t.Errorf("%s: short code: no error", q.Name())
		}
		if err := q.Decode(make([]float32, 32), code); err == nil {
			t.Errorf("%s: short output: no error", q.Name())
		}
		if _, err := q.Prepare(make([]float32, 63)); err == nil {
			t.Errorf("%s: short query: no error", q.Name())
		}
		for _, bad := range []uint16{0x7c00, 0xfc00, 0x7e01} {
			clear(code)
			binary16(code[q.Bytes()/2:], bad) // second block's scale
			if err := q.Decode(make([]float32, 64), code); !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s: scale %#04x: error %v, want ErrCorrupt", q.Name(), bad, err)
			}
		}
		clear(code)
		binary16(code, 0xbc00) // −1
		err := q.Decode(make([]float32, 64), code)
		if neg := q.Name() == "q4_0"; neg != (err == nil) {
			t.Errorf("%s: negative scale: error %v", q.Name(), err)
		}
	}
}

func BenchmarkBaseline(b *testing.B) {
	const d, n = 128, 4096
	r := rand.New(rand.NewPCG(1, 1))
	xs := randomVectors(r, n, d, 1/math.Sqrt(d))
	q := randomVectors(r, 1, d, 1)
	benchQuantizer(b, mustQ(NewQ8_0(d)), xs, q)
	benchQuantizer(b, mustQ(NewQ4_0(d)), xs, q)
}
