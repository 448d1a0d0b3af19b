package quant

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/turbomem/turbomem/half"
)

// TestKIVIHandBlocks checks codes worked out by hand from the rule in the
// KIVI doc comment: scale = (hi − lo)/(2^b − 1), min = lo (both fp16),
// q = round((x − min)/scale), packed LSB-first.
func TestKIVIHandBlocks(t *testing.T) {
	tests := []struct {
		name        string
		bits, group int
		x           []float32
		want        []byte
	}{
		{
			// [0,3]: scale 1 (3c00), min 0; q = 0,1,2,3 → 0b11_10_01_00.
			// [−1,0.5]: scale 0.5 (3800), min −1 (bc00); q = 0,1,2,3.
			"exact grid", 2, 4,
			[]float32{0, 1, 2, 3, -1, -0.5, 0, 0.5},
			[]byte{0x00, 0x3c, 0x00, 0x00, 0xe4, 0x00, 0x38, 0x00, 0xbc, 0xe4},
		},
		{
			// scale 1, min 0; 0.5 → 1 (half away from zero), 1.5 → 2,
			// 2.49 → 2, 3 → 3: 0b11_10_10_01 = 0xe9; the second byte's
			// values 0, 0.2, 0.49, 0 all round to 0.
			"rounding", 2, 8,
			[]float32{0.5, 1.5, 2.49, 3, 0, 0.2, 0.49, 0},
			[]byte{0x00, 0x3c, 0x00, 0x00, 0xe9, 0x00},
		},
		{
			// Constant group: scale 0, min 2 (4000), every q = 0.
			"constant", 2, 4,
			[]float32{2, 2, 2, 2},
			[]byte{0x00, 0x00, 0x00, 0x40, 0x00},
		},
		{
			// 1 bit: scale = hi − lo = 1, min 0; 0.3 → 0, 0.7 → 1:
			// bits 0,0,1,1 → 0x0c.
			"1 bit", 1, 4,
			[]float32{0, 0.3, 0.7, 1},
			[]byte{0x00, 0x3c, 0x00, 0x00, 0x0c},
		},
		{
			// [−8, 7]: scale 15/15 = 1 (3c00), min −8 (c800); q = x + 8 →
			// nibbles 0,15 | 8,9.
			"4 bits", 4, 4,
			[]float32{-8, 7, 0, 1},
			[]byte{0x00, 0x3c, 0x00, 0xc8, 0xf0, 0x98},
		},
		{
			// scale = 2/3 → fp16 0x3955 = 0.66650390625, min 0; the
			// division uses the rounded scale: 1/0.6665 = 1.5004 → 2,
			// 2/0.6665 = 3.0007 → 3 (clamped anyway).
			"rounded scale", 2, 4,
			[]float32{0, 1, 2, 0},
			[]byte{0x55, 0x39, 0x00, 0x00, 0b00_11_10_00},
		},
	}
	for _, tt := range tests {
		k, err := NewKIVI(len(tt.x), tt.bits, tt.group)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, k.Bytes())
		if err := k.Encode(got, tt.x); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if !bytes.Equal(got, tt.want) {
			t.Errorf("%s: code % x, want % x", tt.name, got, tt.want)
		}
	}
}

// TestKIVIChannelsHandBlock: two tokens, four channels, 2 bits.
// Channel 0 [0, 3]: scale 1, min 0, q 0,3. Channel 1 constant 1: scale
// 0, min 1 (3c00), q 0,0. Channel 2 [−1, 1]: scale 2/3 → 0x3955, min −1
// (bc00); (1+1)/0.6665 = 3.0007 → q 0,3. Channel 3 constant 5 (4500).
// Rows: token 0 all zero; token 1 q = 3,0,3,0 → 0b00_11_00_11 = 0x33.
func TestKIVIChannelsHandBlock(t *testing.T) {
	k, err := NewKIVI(4, 2, 4)
	if err != nil {
		t.Fatal(err)
	}
	block := []float32{0, 1, -1, 5, 3, 1, 1, 5}
	want := []byte{
		0x00, 0x3c, 0x00, 0x00,
		0x00, 0x00, 0x00, 0x3c,
		0x55, 0x39, 0x00, 0xbc,
		0x00, 0x00, 0x00, 0x45,
		0x00, 0x33,
	}
	got := make([]byte, k.ChannelBytes(2))
	if err := k.EncodeChannels(got, block, 2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("code % x, want % x", got, want)
	}
	dec := make([]float32, 8)
	if err := k.DecodeChannels(dec, got, 2); err != nil {
		t.Fatal(err)
	}
	wantDec := []float32{0, 1, -1, 5, 3, 1, -1 + 3*0.66650390625, 5}
	for i := range dec {
		if dec[i] != wantDec[i] {
			t.Errorf("decoded[%d] = %g, want %g", i, dec[i], wantDec[i])
		}
	}
}

// kiviBound is the error bound of the KIVI doc comment for a group with
// range [lo, hi], plus float32 rounding of the division and the decode
// (a few ulps of the largest magnitude involved).
func kiviBound(k *KIVI, lo, hi float32) float64 {
	s16 := float64(half.Round16(float32((float64(hi) - float64(lo)) / float64(k.levels))))
	m16 := float64(half.Round16(lo))
	exact := (float64(hi) - float64(lo)) / float64(k.levels)
	mag := math.Max(math.Abs(float64(lo)), math.Abs(float64(hi)))
	return s16/2 + math.Abs(m16-float64(lo)) + float64(k.levels)*math.Abs(s16-exact) + 1e-6*(mag+s16*float64(k.levels))
}

func TestKIVIErrorBound(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	for _, tt := range []struct{ d, bits, group int }{
		{128, 2, 32}, {128, 4, 32}, {128, 1, 16}, {96, 3, 32}, {64, 8, 64}, {30, 5, 10},
	} {
		k, err := NewKIVI(tt.d, tt.bits, tt.group)
		if err != nil {
			t.Fatal(err)
		}
		const n = 200
		xs := randomVectors(r, n, tt.d, 1)
		for i := range xs { // offsets and scales across groups: asymmetric ranges
			xs[i] = xs[i]*float32(1+i%7) + float32(i%5) - 1
		}
		codes := make([]byte, n*k.Bytes())
		if err := k.EncodeBatch(codes, xs); err != nil {
			t.Fatal(err)
		}
		dec := make([]float32, tt.d)
		for i := range n {
			if err := k.Decode(dec, codes[i*k.Bytes():(i+1)*k.Bytes()]); err != nil {
				t.Fatal(err)
			}
			for g := 0; g < tt.d; g += tt.group {
				x := xs[i*tt.d+g : i*tt.d+g+tt.group]
				lo, hi := x[0], x[0]
				for _, v := range x {
					lo, hi = min(lo, v), max(hi, v)
				}
				bound := kiviBound(k, lo, hi)
				for j, v := range x {
					if e := math.Abs(float64(v - dec[g+j])); e > bound {
						t.Fatalf("%s: vector %d coord %d: |%g − %g| = %g > bound %g", k.Name(), i, g+j, v, dec[g+j], e, bound)
					}
				}
			}
		}
		// Per channel, over blocks of 32 tokens.
		tokens := 32
		block := xs[:tokens*tt.d]
		code := make([]byte, k.ChannelBytes(tokens))
		if err := k.EncodeChannels(code, block, tokens); err != nil {
			t.Fatal(err)
		}
		out := make([]float32, len(block))
		if err := k.DecodeChannels(out, code, tokens); err != nil {
			t.Fatal(err)
		}
		for c := range tt.d {
			lo, hi := block[c], block[c]
			for tk := range tokens {
				lo, hi = min(lo, block[tk*tt.d+c]), max(hi, block[tk*tt.d+c])
			}
			bound := kiviBound(k, lo, hi)
			for tk := range tokens {
				if e := math.Abs(float64(block[tk*tt.d+c] - out[tk*tt.d+c])); e > bound {
					t.Fatalf("%s channels: token %d channel %d: error %g > bound %g", k.Name(), tk, c, e, bound)
				}
			}
		}
	}
}

func TestKIVIScorerMatchesDecode(t *testing.T) {
	for _, tt := range []struct{ d, bits, group int }{
		{128, 2, 32}, // byte tables
		{128, 4, 32}, // byte tables
		{128, 1, 8},  // byte tables
		{96, 3, 32},  // unpack
		{64, 8, 16},  // unpack
		{30, 2, 3},   // groups not byte-aligned: unpack
	} {
		k, err := NewKIVI(tt.d, tt.bits, tt.group)
		if err != nil {
			t.Fatal(err)
		}
		checkScorer(t, k, 50, 3)

		// Per channel: the block scorer against <q, decoded token>.
		r := rand.New(rand.NewPCG(uint64(tt.d), 7))
		const tokens = 20
		block := randomVectors(r, tokens, tt.d, 1)
		code := make([]byte, k.ChannelBytes(tokens))
		if err := k.EncodeChannels(code, block, tokens); err != nil {
			t.Fatal(err)
		}
		dec := make([]float32, len(block))
		if err := k.DecodeChannels(dec, code, tokens); err != nil {
			t.Fatal(err)
		}
		q := randomVectors(r, 1, tt.d, 1)
		sc, err := k.PrepareChannels(q)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]float32, tokens)
		sc.Score(got, code)
		for tk := range tokens {
			x := dec[tk*tt.d : (tk+1)*tt.d]
			want := float64(dot(q, x))
			var mag float64
			for j := range x {
				mag += math.Abs(float64(q[j] * x[j]))
			}
			// The scorer splits x̃ = min + scale·q into two sums, each
			// of magnitude up to Σ|q_c|·(|min_c| + scale_c·levels).
			if math.Abs(float64(got[tk])-want) > 1e-5*(mag+float64(tt.d))+1e-6 {
				t.Errorf("%s channels: token %d: score %g, <q, decode> %g", k.Name(), tk, got[tk], want)
			}
		}
	}
}

func TestKIVIErrors(t *testing.T) {
	for _, tt := range []struct{ d, bits, group int }{
		{128, 0, 32}, {128, 9, 32}, {100, 2, 32}, {0, 2, 1}, {128, 2, 0},
	} {
		if _, err := NewKIVI(tt.d, tt.bits, tt.group); err == nil {
			t.Errorf("NewKIVI(%d, %d, %d): no error", tt.d, tt.bits, tt.group)
		}
	}
	k, err := NewKIVI(8, 2, 4)
	if err != nil {
		t.Fatal(err)
	}
	if k.Name() != "kivi/2g4" || k.Bytes() != 2*(4+1) {
		t.Errorf("name %q bytes %d", k.Name(), k.Bytes())
	}
	code := make([]byte, k.Bytes())
	x := make([]float32, 8)
	x[2] = float32(math.NaN())
	if err := k.Encode(code, x); err == nil {
		t.Error("NaN input: no error")
	}
	x[2] = 1e6 // range/3 beyond fp16
	if err := k.Encode(code, x); err == nil {
		t.Error("range beyond fp16: no error")
	}
	x[2] = 0
	x[5], x[4], x[6], x[7] = -7e4, -7e4, -7e4, -7e4 // min beyond fp16
	if err := k.Encode(code, x); err == nil {
		t.Error("min beyond fp16: no error")
	}
	if err := k.Encode(code[1:], make([]float32, 8)); err == nil {
		t.Error("short code: no error")
	}
	for _, tt := range []struct {
		off int
		v   uint16
	}{
		{0, 0x7c00}, {0, 0x7e00}, {0, 0x8400}, // scale +Inf, NaN, negative
		{7, 0xfc00}, {7, 0x7d00}, // second group's min −Inf, NaN
	} {
		clear(code)
		binary16(code[tt.off:], tt.v)
		if err := k.Decode(make([]float32, 8), code); !errors.Is(err, ErrCorrupt) {
			t.Errorf("field at %d = %#04x: error %v, want ErrCorrupt", tt.off, tt.v, err)
		}
	}
	clear(code)
	binary16(code[2:], 0xc000) // negative min is legitimate
	if err := k.Decode(make([]float32, 8), code); err != nil {
		t.Errorf("negative min: %v", err)
	}
	if err := k.EncodeChannels(make([]byte, k.ChannelBytes(2)), make([]float32, 15), 2); err == nil {
		t.Error("short channel block: no error")
	}
	if err := k.EncodeChannels(make([]byte, k.ChannelBytes(0)), nil, 0); err == nil {
		t.Error("zero tokens: no error")
	}
	bad := make([]byte, k.ChannelBytes(2))
	binary16(bad[4*3:], 0x7c00)
	if err := k.DecodeChannels(make([]float32, 16), bad, 2); !errors.Is(err, ErrCorrupt) {
		t.Errorf("channel scale Inf: error %v, want ErrCorrupt", err)
	}
	if _, err := k.PrepareChannels(make([]float32, 7)); err == nil {
		t.Error("short query: no error")
	}
}

// TestKIVIDistortion reports kivi/2g32 on the common harness; its MSE on
// unit vectors is checked against the uniform-quantizer estimate
// E[(hi−lo)²]/(12·9) per coordinate, loosely (the estimate ignores the
// zero error at the group's two extremes, which makes it high by ~2/32).
func TestKIVIDistortion(t *testing.T) {
	n := 5000
	if testing.Short() {
		n = 2000
	}
	k, err := NewKIVI(128, 2, 32)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Measure(k, n, 23)
	if err != nil {
		t.Fatal(err)
	}
	// Range of 32 N(0, 1/128) values: E[(hi−lo)²] ≈ (2·2.04)² + var
	// ≈ 17.5/128 (expected range of 32 normals 4.09, sd 0.72).
	est := 17.2 / 128 / 12 / 9 * 128 * (30.0 / 32)
	t.Logf("%s: MSE %.5f (uniform estimate %.5f), %.4g bits, %.2f× bound, IP distortion·d %.4f, bias %.4f±%.4f",
		k.Name(), got.MSE, est, got.Bits, got.BoundRatio, got.IPDistortionD, got.Bias, got.BiasSE)
	if got.Bits != 3 {
		t.Errorf("bits %g, want 3 (2 + 32/32)", got.Bits)
	}
	if rel := math.Abs(got.MSE-est) / est; rel > 0.1 {
		t.Errorf("MSE %.5f, estimate %.5f", got.MSE, est)
	}
}

func BenchmarkKIVI(b *testing.B) {
	const d, n = 128, 4096
	r := rand.New(rand.NewPCG(1, 1))
	xs := randomVectors(r, n, d, 1/math.Sqrt(d))
	q := randomVectors(r, 1, d, 1)
	for _, bits := range []int{2, 3, 4} {
		k, err := NewKIVI(d, bits, 32)
		if err != nil {
			b.Fatal(err)
		}
		benchQuantizer(b, k, xs, q)
	}
	k, _ := NewKIVI(d, 2, 32)
	sc, err := k.PrepareChannels(q)
	if err != nil {
		b.Fatal(err)
	}
	const tokens = 32
	codes := make([]byte, n/tokens*k.ChannelBytes(tokens))
	cb := k.ChannelBytes(tokens)
	for i := range n / tokens {
		if err := k.EncodeChannels(codes[i*cb:(i+1)*cb], xs[i*tokens*d:(i+1)*tokens*d], tokens); err != nil {
			b.Fatal(err)
		}
	}
	dst := make([]float32, tokens)
	b.Run("kivi/2/channels/score", func(b *testing.B) {
		for b.Loop() {
			for i := range n / tokens {
				sc.Score(dst, codes[i*cb:(i+1)*cb])
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/key")
	})
}

// TestKIVIScoreChannels: the group scorer of per-channel blocks gives
// each query's ChannelScorer estimates, block after block, within float32
// rounding of the two summation orders.
func TestKIVIScoreChannels(t *testing.T) {
	for _, tt := range []struct{ d, bits, tokens int }{
		{128, 2, 32}, // the 2-bit table (kvcache's kivi2 keys)
		{96, 3, 8},   // unpack
		{64, 4, 5},
	} {
		k, err := NewKIVI(tt.d, tt.bits, 32)
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(uint64(tt.d), 11))
		const blocks, group = 3, 4
		bb := k.ChannelBytes(tt.tokens)
		codes := make([]byte, blocks*bb)
		for b := range blocks {
			if err := k.EncodeChannels(codes[b*bb:(b+1)*bb], randomVectors(r, tt.tokens, tt.d, 1), tt.tokens); err != nil {
				t.Fatal(err)
			}
		}
		qs := make([][]float32, group)
		dst := make([][]float32, group)
		for j := range qs {
			qs[j] = randomVectors(r, 1, tt.d, 1)
			dst[j] = make([]float32, blocks*tt.tokens)
		}
		k.ScoreChannels(dst, qs, codes, tt.tokens)
		for j, q := range qs {
			sc, err := k.PrepareChannels(q)
			if err != nil {
				t.Fatal(err)
			}
			want := make([]float32, tt.tokens)
			for b := range blocks {
				blk := codes[b*bb : (b+1)*bb]
				sc.Score(want, blk)
				// Both split x̃ = min + scale·idx into two sums of up to
				// d terms, each of magnitude up to Σ|q_c|·(|min_c| +
				// scale_c·levels), added in other orders: d float32
				// roundings of that magnitude (128 × 6e-8 < 1e-5).
				var mag float64
				for c := range tt.d {
					s, m, err := readParams(blk[4*c:])
					if err != nil {
						t.Fatal(err)
					}
					mag += math.Abs(float64(q[c])) * (math.Abs(float64(m)) + float64(s)*float64(k.levels))
				}
				for tk, w := range want {
					if got := dst[j][b*tt.tokens+tk]; math.Abs(float64(got-w)) > 1e-5*mag+1e-7 {
						t.Errorf("%s block %d token %d query %d: %g, ChannelScorer %g", k.Name(), b, tk, j, got, w)
					}
				}
			}
		}
	}
}

// TestCodeSizes: the closed-form code sizes equal the Bytes of the
// quantizers they describe.
func TestCodeSizes(t *testing.T) {
	o := Options{Seed: 1}
	for _, d := range []int{32, 64, 128, 256} {
		for bits := 1; bits <= 4; bits++ {
			mse, err := NewTurboMSE(d, bits, o)
			if err != nil {
				t.Fatal(err)
			}
			prod, err := NewTurboProd(d, bits, o)
			if err != nil {
				t.Fatal(err)
			}
			kivi, err := NewKIVI(d, bits, 32)
			if err != nil {
				t.Fatal(err)
			}
			out := make([]int, d/4)
			for i := range out {
				out[i] = 2 * i
			}
			split, err := NewTurboSplit(d, out, bits+1, bits, bits > 1, o)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				name      string
				got, want int
			}{
				{"turbo-mse", TurboMSEBytes(d, bits), mse.Bytes()},
				{"turbo-prod", TurboProdBytes(d, bits), prod.Bytes()},
				{"kivi", KIVIBytes(d, bits, 32), kivi.Bytes()},
				{"kivi channels", KIVIChannelBytes(d, bits, 32), kivi.ChannelBytes(32)},
				{"split", TurboSplitBytes(d, d/4, bits+1, bits, bits > 1), split.Bytes()},
			} {
				if c.got != c.want {
					t.Errorf("%s d=%d b=%d: closed form %d, quantizer %d", c.name, d, bits, c.got, c.want)
				}
			}
		}
		for _, levels := range [][]int{nil, {3, 3}, {4, 2, 2, 2, 1}} {
			p, err := NewPolar(d, levels, o)
			if err != nil {
				t.Fatal(err)
			}
			if got := PolarBytes(d, levels); got != p.Bytes() {
				t.Errorf("polar%v d=%d: closed form %d, quantizer %d", levels, d, got, p.Bytes())
			}
		}
		q8, _ := NewQ8_0(d)
		q4, _ := NewQ4_0(d)
		qjl, _ := NewQJL(d, 2*d, 1)
		if Q8_0Bytes(d) != q8.Bytes() || Q4_0Bytes(d) != q4.Bytes() || QJLBytes(2*d) != qjl.Bytes() || Q8_0Bytes(d) != 34*d/32 {
			t.Errorf("d=%d: q8_0/q4_0/qjl closed forms disagree", d)
		}
	}
}
