package tensor

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/turbomem/turbomem/half"
)

// TestQuantizeTQ2_0Hand checks the reference quantizer on a block whose
// bytes were worked out by hand from quantize_row_tq2_0_ref's rule
// (d = max|x|, q = round(x/d) + 1, halves away from zero) and
// block_tq2_0's layout (byte m of half h: elements 128h + 32l + m in bits
// 2l, 2l+1; the fp16 scale last).
func TestQuantizeTQ2_0Hand(t *testing.T) {
	x := make([]float32, QK_K)
	// d = 2: 2 → 1 (code 2); -1 → -0.5 → -1 (code 0); 0.99 → 0 (code 1);
	// x[32] = 1 → 0.5 → 1 (code 2); x[200] = -2 → code 0; zeros code 1.
	x[0], x[1], x[2], x[32], x[200] = 2, -1, 0.99, 1, -2
	want := bytes.Repeat([]byte{0x55}, tq2_0Bytes)
	want[0] = 2 | 2<<2 | 1<<4 | 1<<6 // elements 0, 32, 64, 96
	want[1] = 0 | 1<<2 | 1<<4 | 1<<6 // elements 1, 33, 65, 97
	// Element 200 = 128 + 2·32 + 8: byte 32 + 8, bits 4-5.
	want[40] = 1 | 1<<2 | 0<<4 | 1<<6
	want[64], want[65] = 0x00, 0x40 // fp16 2
	got := make([]byte, tq2_0Bytes)
	if err := Quantize(TQ2_0, got, x); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("got  % x\nwant % x", got, want)
	}
}

// TestQuantizeTQ1_0Hand: as TQ2_0's, for TQ1_0's base-3 bytes
// (quantize_row_tq1_0_ref: codes c₀…c₄ of a byte, c₀ first, stored as
// ⌈256·Σ cₙ·3^(4−n) / 243⌉; qh's bytes hold four codes and a 0).
func TestQuantizeTQ1_0Hand(t *testing.T) {
	x := make([]float32, QK_K)
	// d = 2. Byte 0 holds elements 0, 32, 64, 96, 128: 2 → 2, -1 → 0,
	// 0.99 → 1, 1 → 2, 0 → 1: q = 162 + 0 + 9 + 6 + 1 = 178 → ⌈187.5⌉.
	x[0], x[32], x[64], x[96] = 2, -1, 0.99, 1
	// Element 255 = 240 + 4·3 + 3: qh[3], code 3: -2 → 0: q = 81 + 27 +
	// 9 = 117 → ⌈123.3⌉.
	x[255] = -2
	want := bytes.Repeat([]byte{128}, tq1_0Bytes) // all codes 1: q = 121 → ⌈127.5⌉
	want[0] = 188
	for j := 48; j < 52; j++ {
		want[j] = 127 // 81 + 27 + 9 + 3 = 120 → ⌈126.4⌉
	}
	want[51] = 124
	want[52], want[53] = 0x00, 0x40 // fp16 2
	got := make([]byte, tq1_0Bytes)
	if err := Quantize(TQ1_0, got, x); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("got  % x\nwant % x", got, want)
	}
}

// ternaryTypes are the ternary formats.
var ternaryTypes = []DType{TQ1_0, TQ2_0}

// gaussianTernaryMSE returns the least mean squared error of a ternary
// quantizer {−a, 0, a} with threshold τ on N(0, 1), in closed form:
// E = 1 − 2a·E[|x|; |x| > τ] + a²·P(|x| > τ), with E[|x|; |x| > τ] =
// 2φ(τ) and P(|x| > τ) = erfc(τ/√2), is least at a = 2φ(τ)/erfc(τ/√2),
// where it is 1 − (2φ(τ))²/erfc(τ/√2); τ is found by golden-section
// search (the function is unimodal on [0, 2]). The known optimum is
// τ ≈ 0.612, a ≈ 1.224, E ≈ 0.190.
func gaussianTernaryMSE() float64 {
	f := func(tau float64) float64 {
		phi := math.Exp(-tau*tau/2) / math.Sqrt(2*math.Pi)
		return 1 - 4*phi*phi/math.Erfc(tau/math.Sqrt2)
	}
	lo, hi := 0.0, 2.0
	g := (math.Sqrt(5) - 1) / 2
	for range 100 {
		a, b := hi-g*(hi-lo), lo+g*(hi-lo)
		if f(a) < f(b) {
			hi = b
		} else {
			lo = a
		}
	}
	return f((lo + hi) / 2)
}

// TestQuantizeWeightedTQ2_0Gaussian: on Gaussian blocks the weighted
// quantizer (plain squared error) reaches the closed-form optimum of
// ternary quantization of a Gaussian, 0.190σ², up to the fit's advantage
// of choosing its scale on the block's own 256 values (measured 0.995 of
// the closed form); the reference quantizer (scale max|x|) is far
// worse.
func TestQuantizeWeightedTQ2_0Gaussian(t *testing.T) {
	opt := gaussianTernaryMSE()
	if math.Abs(opt-0.1902) > 0.0005 {
		t.Fatalf("closed form %.5f, want 0.1902", opt)
	}
	r := rand.New(rand.NewPCG(9, 10))
	const sigma, blocks = 0.02, 512
	x := make([]float32, blocks*QK_K)
	for i := range x {
		x[i] = float32(sigma * r.NormFloat64())
	}
	for _, typ := range ternaryTypes {
		mse := func(b []byte) float64 {
			y := make([]float32, len(x))
			if err := Dequantize(typ, y, b); err != nil {
				t.Fatal(err)
			}
			var se float64
			for i := range x {
				d := float64(x[i]) - float64(y[i])
				se += d * d
			}
			return se / float64(len(x)) / (sigma * sigma)
		}
		b := make([]byte, blocks*typ.BlockBytes())
		if err := QuantizeWeighted(typ, b, x, nil); err != nil {
			t.Fatal(err)
		}
		got := mse(b)
		if got > opt*1.005 || got < opt*0.96 {
			t.Errorf("%s: MSE %.5fσ², want within [0.96, 1.005]× the closed form %.5fσ²", typ, got, opt)
		}
		ref, err := Encode(typ, x)
		if err != nil {
			t.Fatal(err)
		}
		if r := mse(ref); r < 1.5*got {
			t.Errorf("%s: reference quantizer MSE %.5fσ², weighted %.5fσ²: want the reference ≥ 1.5× worse", typ, r, got)
		}
		t.Logf("%s: closed form %.5fσ², weighted %.5fσ² (%.4f×), reference %.5fσ²", typ, opt, got, got/opt, mse(ref))
	}
}

// TestQuantizeWeightedTQ2_0BruteForce compares the weighted quantizer
// with a brute-force search on weight-like blocks (log-normal
// importances): every fp16 scale from max|x|/16 to max|x|, each with its
// levels thresholded at d/2 (optimal for a fixed scale), the error
// computed on the values the dequantizer gives. The quantizer's exact
// search must find the best of them (up to 1e-6).
func TestQuantizeWeightedTQ2_0BruteForce(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for trial := range 12 {
		typ := ternaryTypes[trial%2]
		x, imp := weightLike(r, 1, QK_K)
		if trial%3 == 0 {
			imp = nil
		}
		b := make([]byte, typ.BlockBytes())
		if err := QuantizeWeighted(typ, b, x, imp); err != nil {
			t.Fatal(err)
		}
		w := make([]float32, QK_K)
		for i := range w {
			w[i] = 1
			if imp != nil {
				w[i] = imp[i]
			}
		}
		got, _ := encodedErr(t, typ, x, w, b)
		var amax float64
		for _, v := range x {
			amax = math.Max(amax, math.Abs(float64(v)))
		}
		best := math.Inf(1)
		for bits := range 1 << 15 { // the positive fp16 values
			d := half.F16ToF32(half.F16(bits))
			if float64(d) < amax/16 || float64(d) > amax {
				continue
			}
			var e float64
			for i, v := range x {
				var y float32
				if math.Abs(float64(v)) > float64(d)/2 {
					y = d
					if v < 0 {
						y = -d
					}
				}
				diff := float64(v) - float64(y)
				e += float64(w[i]) * diff * diff
			}
			best = math.Min(best, e)
		}
		if got > best*(1+1e-6) {
			t.Errorf("%s, trial %d: error %.6g, brute force %.6g", typ, trial, got, best)
		}
	}
}

// TestDotTernaryAnyBytes: the kernels on arbitrary blocks (code 3 among
// TQ2_0's, which dequantizes to 2·d) equal the float64 dot product of the
// dequantized row with the activation as the kernel quantized it, within
// float32 rounding of the per-block products.
func TestDotTernaryAnyBytes(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	const cols = 4 * QK_K
	x := randomVector(r, cols)
	a := newActivation(actQ8_K, cols)
	a.set(actQ8_K, x)
	xq := dequantActivation(actQ8_K, a, cols)
	for _, typ := range ternaryTypes {
		bs := typ.BlockBytes()
		w := make([]byte, cols/QK_K*bs)
		for i := range w {
			w[i] = byte(r.Uint32())
		}
		for b := range cols / QK_K {
			putF16(w[(b+1)*bs-2:], float32(r.NormFloat64()))
		}
		deq := make([]float32, cols)
		if err := Dequantize(typ, deq, w); err != nil {
			t.Fatal(err)
		}
		var ref, abs float64
		for i, v := range deq {
			ref += float64(v) * xq[i]
			abs += math.Abs(float64(v) * xq[i])
		}
		if got := float64(rowKernels[typ].dot(w, a)); math.Abs(got-ref) > 1e-5*abs {
			t.Errorf("%s: dot %g, dequantized %g (Σ|w·x| %g)", typ, got, ref, abs)
		}
	}
}

// TestTernaryBadSizes: wrong lengths are errors from every entry point.
func TestTernaryBadSizes(t *testing.T) {
	x := make([]float32, 2*QK_K)
	for _, typ := range ternaryTypes {
		bs := typ.BlockBytes()
		for _, n := range []int{0, bs - 1, bs + 1, 2*bs - 1} {
			if err := Dequantize(typ, x, make([]byte, n)); err == nil {
				t.Errorf("%s: Dequantize: %d bytes for 512 elements accepted", typ, n)
			}
			if err := Quantize(typ, make([]byte, n), x); err == nil {
				t.Errorf("%s: Quantize: %d bytes for 512 elements accepted", typ, n)
			}
			if err := QuantizeWeighted(typ, make([]byte, n), x, nil); err == nil {
				t.Errorf("%s: QuantizeWeighted: %d bytes for 512 elements accepted", typ, n)
			}
			out := make([]float32, 2)
			if err := MatVec(out, make([]byte, n), typ, 2, QK_K, x[:QK_K], Options{}); err == nil {
				t.Errorf("%s: MatVec: %d bytes for 2×256 accepted", typ, n)
			}
		}
		if err := Dequantize(typ, make([]float32, 100), make([]byte, bs)); err == nil {
			t.Errorf("%s: Dequantize: 100 elements accepted", typ)
		}
		if err := QuantizeWeighted(typ, make([]byte, 2*bs), x, make([]float32, 100)); err == nil {
			t.Errorf("%s: QuantizeWeighted: 100 importance weights accepted", typ)
		}
		// Non-finite values encode without a panic, every code a level.
		bad := make([]float32, QK_K)
		bad[3], bad[9], bad[200] = float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))
		for _, weighted := range []bool{false, true} {
			b := make([]byte, bs)
			var err error
			if weighted {
				err = QuantizeWeighted(typ, b, bad, nil)
			} else {
				err = Quantize(typ, b, bad)
			}
			if err != nil {
				t.Fatal(err)
			}
			if typ == TQ2_0 {
				for i, c := range b[:64] {
					if c&0x55&(c>>1) != 0 {
						t.Errorf("%s weighted %v: byte %d (%#x) holds code 3", typ, weighted, i, c)
					}
				}
			}
		}
	}
}

func BenchmarkTernary(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	x, imp := weightLike(r, 16, 1024)
	a := newActivation(actQ8_K, 1024)
	a.set(actQ8_K, randomVector(r, 1024))
	for _, typ := range ternaryTypes {
		q := make([]byte, 16*4*typ.BlockBytes())
		b.Run(typ.String()+"/weighted", func(b *testing.B) {
			b.SetBytes(int64(4 * len(x)))
			for b.Loop() {
				if err := QuantizeWeighted(typ, q, x, imp); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(typ.String()+"/dot", func(b *testing.B) {
			b.SetBytes(int64(len(q) / 16))
			var s float32
			for b.Loop() {
				s += rowKernels[typ].dot(q[:len(q)/16], a)
			}
			_ = s
		})
	}
}

// TestTernaryTypesAgree: TQ1_0 and TQ2_0 hold the same values (d·{−1, 0,
// 1}), and both quantizers (reference and weighted) choose the same
// ones, so the two formats decode a tensor to identical floats: TQ1_0 is
// TQ2_0 in 18% fewer bytes.
func TestTernaryTypesAgree(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	x, imp := weightLike(r, 4, 512)
	decode := func(typ DType, weighted bool) []float32 {
		n, _ := typ.RowBytes(int64(len(x)))
		b := make([]byte, n)
		var err error
		if weighted {
			err = QuantizeWeighted(typ, b, x, imp)
		} else {
			err = Quantize(typ, b, x)
		}
		if err != nil {
			t.Fatal(err)
		}
		y := make([]float32, len(x))
		if err := Dequantize(typ, y, b); err != nil {
			t.Fatal(err)
		}
		return y
	}
	for _, weighted := range []bool{false, true} {
		a, b := decode(TQ1_0, weighted), decode(TQ2_0, weighted)
		for i := range a {
			if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
				t.Fatalf("weighted %v: element %d: TQ1_0 %g, TQ2_0 %g", weighted, i, a[i], b[i])
			}
		}
	}
}
