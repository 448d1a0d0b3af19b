package tensor

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestKernelsMatchGoTwins runs each dispatched hot kernel (assembly where
// the CPU has it) against its pure-Go twin on random data, lengths with
// and without a tail, and raw random quant bytes (-128 included). The two
// sum in different orders, so they agree to float32 accumulation error:
// 1e-5·Σ|terms| (lengths ≤ 1000: 1000·2^-24 ≈ 6e-5 is the naive worst
// case; random signs keep real errors far below it, and a wrong lane or
// block would be off by ≥ 1/len of the total).
func TestKernelsMatchGoTwins(t *testing.T) {
	t.Logf("SIMD level: %s", SIMDLevel())
	r := rand.New(rand.NewPCG(9, 9))
	check := func(name string, got, want, scale float32) {
		t.Helper()
		if d := math.Abs(float64(got - want)); d > 1e-5*float64(scale)+1e-30 {
			t.Errorf("%s: %g, Go twin %g (diff %g, scale %g)", name, got, want, d, scale)
		}
	}
	for _, n := range []int{0, 1, 31, 32, 33, 96, 1000} {
		w := randomVector(r, n)
		x := randomVector(r, n)
		var abs float32
		for i := range w {
			abs += float32(math.Abs(float64(w[i] * x[i])))
		}
		check("dotF32", dotF32(w, x), dotF32Go(w, x), abs)
		h, err := encodeRows(F16, w)
		if err != nil {
			t.Fatal(err)
		}
		check("dotF16", dotF16(bytesAsU16(h), x), dotF16Go(bytesAsU16(h), x), abs)
	}
	for _, blocks := range []int{1, 3, 17, 40} {
		// Q8_0 with raw quant bytes (scale bytes kept to a sane fp16).
		n := blocks * qk0
		w := make([]byte, blocks*q8_0Bytes)
		for i := range w {
			w[i] = byte(r.Uint32())
		}
		for b := range blocks {
			w[b*q8_0Bytes], w[b*q8_0Bytes+1] = byte(r.Uint32()), 0x30 // d in [0.125, 0.25)
		}
		x := randomVector(r, n)
		a := newActivation(actQ8_0, n)
		a.set(actQ8_0, x)
		check("dotRowQ8_0", dotRowQ8_0(w, a), dotRowQ8_0Go(w, a), absDot(t, Q8_0, w, actQ8_0, a, n))
		// four rows per call: rows of other blocks, rotated
		four := append(append(append(append([]byte(nil), w...), w[q8_0Bytes:]...), w[:q8_0Bytes]...), w...)
		four = append(four, w...)[:4*len(w)]
		var got, want [4]float32
		dotRowsQ8_0x4(four, len(w), a, &got)
		dotRowsQ8_0x4Go(four, len(w), a, &want)
		for k := range got {
			row := four[k*len(w) : (k+1)*len(w)]
			check("dotRowsQ8_0x4", got[k], want[k], absDot(t, Q8_0, row, actQ8_0, a, n))
			if got[k] != dotRowQ8_0(row, a) { // the same sums in the same order as the one-row kernel
				t.Errorf("dotRowsQ8_0x4 row %d: %g, dotRowQ8_0 %g", k, got[k], dotRowQ8_0(row, a))
			}
			if want[k] != dotRowQ8_0Go(row, a) {
				t.Errorf("dotRowsQ8_0x4Go row %d: %g, dotRowQ8_0Go %g", k, want[k], dotRowQ8_0Go(row, a))
			}
		}

		// The 256-element types: random bytes for codes, high bits and
		// scales, then each float16 scale's high byte set to 0x1c (≈ 2^-8)
		// so that the sums stay sane; 40 blocks cross the kernels' 16-block
		// chunk boundary. TQ2_0's random codes include 3, TQ1_0's every
		// byte decodes to codes 0..2.
		n = blocks * QK_K
		x = randomVector(r, n)
		a = newActivation(actQ8_K, n)
		a.set(actQ8_K, x)
		for _, k := range []struct {
			name      string
			dt        DType
			size      int
			hi        []int // offsets in a block of the scales' high bytes
			dot, twin func([]byte, *activation) float32
		}{
			{"dotRowQ4_K", Q4_K, q4_KBytes, []int{1, 3}, dotRowQ4_K, dotRowQ4_KGo}, // d, dmin
			{"dotRowQ5_K", Q5_K, q5_KBytes, []int{1, 3}, dotRowQ5_K, dotRowQ5_KGo},
			{"dotRowQ6_K", Q6_K, q6_KBytes, []int{209}, dotRowQ6_K, dotRowQ6_KGo},
			{"dotRowQ2_K", Q2_K, q2_KBytes, []int{81, 83}, dotRowQ2_K, dotRowQ2_KGo},
			{"dotRowQ3_K", Q3_K, q3_KBytes, []int{109}, dotRowQ3_K, dotRowQ3_KGo},
			{"dotRowTQ2_0", TQ2_0, tq2_0Bytes, []int{65}, dotRowTQ2_0, dotRowTQ2_0Go},
			{"dotRowTQ1_0", TQ1_0, tq1_0Bytes, []int{53}, dotRowTQ1_0, dotRowTQ1_0Go},
		} {
			w = make([]byte, blocks*k.size)
			for i := range w {
				w[i] = byte(r.Uint32())
			}
			for b := range blocks {
				for _, o := range k.hi {
					w[b*k.size+o] = 0x1c
				}
			}
			check(k.name, k.dot(w, a), k.twin(w, a), absDot(t, k.dt, w, actQ8_K, a, n))
		}

		// Q4_0: random nibbles, sane d.
		n = blocks * qk0
		w = make([]byte, blocks*q4_0Bytes)
		for i := range w {
			w[i] = byte(r.Uint32())
		}
		for b := range blocks {
			w[b*q4_0Bytes+1] = 0x2c
		}
		x = randomVector(r, n)
		a = newActivation(actQ8_0, n)
		a.set(actQ8_0, x)
		check("dotRowQ4_0", dotRowQ4_0(w, a), dotRowQ4_0Go(w, a), absDot(t, Q4_0, w, actQ8_0, a, n))
	}
}

// absDot returns Σ|w_i·x̂_i| for dequantized weights and activation.
func absDot(t *testing.T, ty DType, w []byte, k actKind, a *activation, n int) float32 {
	t.Helper()
	deq := make([]float32, n)
	if err := Dequantize(ty, deq, w); err != nil {
		t.Fatal(err)
	}
	xq := dequantActivation(k, a, n)
	var s float64
	for i := range deq {
		s += math.Abs(float64(deq[i]) * xq[i])
	}
	return float32(s)
}

// TestDequantFastMatchesGo: the dispatched q8_0 and q4_0 dequantizers
// (assembly where the CPU has it) give the pure-Go versions' bits, on
// random blocks (any scale bits, NaN and infinities included).
func TestDequantFastMatchesGo(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, tt := range []struct {
		name       string
		block      int
		fast, slow func([]float32, []byte)
	}{
		{"q8_0", q8_0Bytes, dequantQ8_0Fast, dequantQ8_0},
		{"q4_0", q4_0Bytes, dequantQ4_0Fast, dequantQ4_0},
	} {
		for _, nb := range []int{0, 1, 2, 7, 64} {
			src := make([]byte, nb*tt.block)
			for i := range src {
				src[i] = byte(r.Uint32())
			}
			got, want := make([]float32, nb*qk0), make([]float32, nb*qk0)
			tt.fast(got, src)
			tt.slow(want, src)
			for i := range got {
				g, w := got[i], want[i]
				if math.Float32bits(g) != math.Float32bits(w) && !(g != g && w != w) {
					t.Fatalf("%s, %d blocks: element %d = %g, Go %g", tt.name, nb, i, g, w)
				}
			}
		}
	}
}

// TestQuantActQ8_0Twin: the Q8_0 activation quantization (assembly where
// the CPU has AVX-512) gives the bytes and scales of its Go twin, with
// an all-zero block (scale 0), a block whose largest magnitude is
// negative, and halves that round to even.
func TestQuantActQ8_0Twin(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, blocks := range []int{1, 3, 40} {
		n := blocks * qk0
		x := randomVector(r, n)
		clear(x[:qk0]) // block 0: zeros
		if blocks > 1 {
			x[qk0+7] = -50 // block 1: the largest magnitude negative
			for j := range 8 {
				x[qk0+8+j] = -50 * float32(2*j+1) / 254 // q = ±(j + 1/2) before rounding
			}
		}
		qs, d := make([]int8, n), make([]float32, blocks)
		wq, wd := make([]int8, n), make([]float32, blocks)
		quantActQ8_0(qs, d, x)
		quantActQ8_0Go(wq, wd, x)
		if !slices.Equal(qs, wq) || !slices.Equal(d, wd) {
			t.Fatalf("%d blocks: quants %v scales %v; twin %v %v", blocks, qs[:qk0*min(2, blocks)], d, wq[:qk0*min(2, blocks)], wd)
		}
		if d[0] != 0 || (blocks > 1 && qs[qk0+7] != -127) {
			t.Errorf("%d blocks: zero block scale %g, the negative extreme %d", blocks, d[0], qs[qk0+7])
		}
	}
}

// TestQuantActQ8_KTwin: the Q8_K activation quantization (assembly where
// the CPU has AVX-512) gives the bytes, scales and 16-element sums of its
// Go twin, with an all-zero block, a block whose largest magnitude comes
// first negative then positive (the first one sets the sign of the
// scale), and one whose largest element is in its last register.
func TestQuantActQ8_KTwin(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, blocks := range []int{1, 4, 9} {
		n := blocks * QK_K
		x := randomVector(r, n)
		clear(x[:QK_K])
		if blocks > 1 {
			x[QK_K+40], x[QK_K+200] = -9, 9
		}
		if blocks > 2 {
			x[3*QK_K-1] = 12
		}
		qs, d, bs := make([]int8, n), make([]float32, blocks), make([]int16, n/16)
		wq, wd, wbs := make([]int8, n), make([]float32, blocks), make([]int16, n/16)
		quantActQ8_K(qs, d, bs, x)
		quantActQ8_KGo(wq, wd, wbs, x)
		if !slices.Equal(qs, wq) || !slices.Equal(d, wd) || !slices.Equal(bs, wbs) {
			t.Fatalf("%d blocks: scales %v sums %v; twin %v %v", blocks, d, bs[:32], wd, wbs[:32])
		}
		// the first extreme maps to −127 (iscale = −127/mx), the other to 127
		if d[0] != 0 || (blocks > 1 && (qs[QK_K+40] != -127 || qs[QK_K+200] != 127)) {
			t.Errorf("%d blocks: zero block scale %g; block 1's extremes %d, %d", blocks, d[0], qs[QK_K+40], qs[QK_K+200])
		}
	}
}

// TestDotRowsF16R4: the four-row fp16 kernel gives each row the bits of
// the one-row kernel (the same sums in the same order), with and without
// a tail past the multiple of 32.
func TestDotRowsF16R4(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	for _, n := range []int{32, 69, 512, 1000} {
		w, err := encodeRows(F16, randomVector(r, 4*n))
		if err != nil {
			t.Fatal(err)
		}
		a := newActivation(actF32, n)
		a.set(actF32, randomVector(r, n))
		var got [4]float32
		dotRowsF16R4(w, 2*n, a, &got)
		for k := range got {
			if want := dotRowF16(w[2*n*k:2*n*(k+1)], a); got[k] != want {
				t.Errorf("n=%d row %d: %g, one-row kernel %g", n, k, got[k], want)
			}
		}
	}
}

// TestDotQ8_0x4SameBits: the kernel that serves four activations per
// pass over a Q8_0 row gives each of them the bits of the one-activation
// kernel, for odd and even block counts, so a product's vector does not
// change with the number of vectors beside it (MatMul serves a prefill
// chunk's vectors four at a time and the rest one by one).
func TestDotQ8_0x4SameBits(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for _, nb := range []int{1, 2, 3, 8, 17} {
		cols := nb * qk0
		w, acts, _ := gemmSetup(t, r, Q8_0, 1, cols, 4)
		var four [4]float32
		dotRowQ8_0x4(w, (*[4]*activation)(acts), &four)
		for k, a := range acts {
			if one := dotRowQ8_0(w, a); math.Float32bits(one) != math.Float32bits(four[k]) {
				t.Errorf("%d blocks, activation %d: four at a time %v, alone %v", nb, k, four[k], one)
			}
		}
	}
}
