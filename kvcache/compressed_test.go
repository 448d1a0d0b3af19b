package kvcache

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/quant"
	"github.com/turbomem/turbomem/tensor"
)

// codeBytes128 is each format's code size for one 128-dimensional vector
// (keys; values the same except where noted): the Bytes formulas.
var codeBytes128 = map[string]int{
	"f32":       512,
	"f16":       256,
	"q8_0":      4 * 34, // 4 blocks of fp16 scale + 32 int8
	"q4_0":      4 * 18, // 4 blocks of fp16 scale + 16 nibble bytes
	"q4_0h":     4 * 18, // q4_0's blocks of the rotated vector
	"kivi2":     48,     // values: 4 groups of (fp16 scale, fp16 min, 8 bytes); keys: (128·4 + 32·32)/32 per token
	"turbo2":    34,     // 2 + 128·2/8
	"turbo2.5":  40,     // (2 + 32·3/8) + (2 + 96·2/8)
	"turbo3":    50,     // 2 + 128·3/8
	"turbo3.5":  56,     // (2 + 32·4/8) + (2 + 96·3/8)
	"turbo4":    66,     // 2 + 128·4/8
	"turbo5":    82,     // 2 + 128·5/8
	"klt2":      32,     // 1 scale byte + 248 index bits
	"klt2.5":    40,     // 1 scale byte + 312 index bits
	"klt3":      48,     // 1 scale byte + 376 index bits
	"klt3.5":    56,     // 1 scale byte + 440 index bits
	"klt4":      64,     // 1 scale byte + 504 index bits
	"klt4.5":    72,     // 1 scale byte + 568 index bits
	"klt5":      80,     // 1 scale byte + 632 index bits
	"klt6":      96,     // 1 scale byte + 760 index bits
	"tcq2":      32,     // klt2's layout: path bits among the index bits
	"tcq2.5":    40,
	"tcq3":      48,
	"tcq3.5":    56,
	"tcq4":      64,
	"tcq4.5":    72,
	"tcq5":      80,
	"tcq6":      96,
	"turbo3.5p": 60, // prod parts: (2+12 + 2+4) + (2+24 + 2+12)
	"polar":     62, // 8 fp16 radii + 46·8/8 angle bytes
	"qjl":       34, // fp16 norm + 256 sign bits
}

// specFor returns the spec that tests use for format name: the same
// format for keys and values, except qjl (keys only: values in f16).
func specFor(t testing.TB, name string, window int) Spec {
	t.Helper()
	v := name
	if name == "qjl" {
		v = "f16"
	}
	s, err := ParseSpec(name, v)
	if err != nil {
		t.Fatal(err)
	}
	s.Window = window
	return s
}

func TestParseFormat(t *testing.T) {
	for _, name := range FormatNames() {
		f, err := ParseFormat(name)
		if err != nil || f.String() != name || !f.Valid() {
			t.Errorf("ParseFormat(%q) = %v, %v", name, f, err)
		}
	}
	for _, bad := range []string{"", "turbo9", "F16", "q4_1", "polar4 "} {
		_, err := ParseFormat(bad)
		if err == nil || !strings.Contains(err.Error(), "turbo3.5") || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Errorf("ParseFormat(%q): error %v, want one naming it and listing the formats", bad, err)
		}
	}
	if _, err := ParseSpec("turbo3.5", "nope"); err == nil {
		t.Error("ParseSpec with a bad value format: no error")
	}
}

func TestSpecRejects(t *testing.T) {
	for _, tc := range []struct {
		k, v string
		sh   Shape
		want string
	}{
		{"q8_0", "q8_0", Shape{QHeads: 2, KVHeads: 1, HeadDim: 4}, "multiple of 32"},
		{"turbo3.5", "turbo3.5", Shape{QHeads: 2, KVHeads: 1, HeadDim: 48}, "multiple of 32"},
		{"polar", "f16", Shape{QHeads: 2, KVHeads: 1, HeadDim: 40}, "multiple of 16"},
		{"turbo4", "turbo4", Shape{QHeads: 2, KVHeads: 1, HeadDim: 20}, "multiple of 8"},
		{"f16", "qjl", Shape{QHeads: 2, KVHeads: 1, HeadDim: 128}, "keys only"},
		{"f16", "f16", Shape{QHeads: 3, KVHeads: 2, HeadDim: 128}, "multiple of KV heads"},
	} {
		s, err := ParseSpec(tc.k, tc.v)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.NewCache(0, tc.sh)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s/%s %+v: error %v, want %q", tc.k, tc.v, tc.sh, err, tc.want)
		}
	}
	if _, err := (Spec{}).NewCache(0, Shape{QHeads: 2, KVHeads: 1, HeadDim: 128}); err == nil {
		t.Error("zero Spec: no error")
	}
}

// kvData draws n tokens of keys and values for shape s: N(0,1), and with
// outliers set, 4 channels per KV head (the same for every token, as in
// real keys) at 10× that.
func kvData(r *rand.Rand, s Shape, n int, outliers bool) (ks, vs [][]float32) {
	w := s.KVHeads * s.HeadDim
	hot := map[int]bool{}
	if outliers {
		for h := range s.KVHeads {
			for len(hot) < 4*(h+1) {
				hot[h*s.HeadDim+r.IntN(s.HeadDim)] = true
			}
		}
	}
	for range n {
		k := make([]float32, w)
		v := make([]float32, w)
		for i := range k {
			k[i] = float32(r.NormFloat64())
			v[i] = float32(r.NormFloat64())
			if hot[i] {
				k[i] *= 10
				v[i] *= 10
			}
		}
		ks, vs = append(ks, k), append(vs, v)
	}
	return ks, vs
}

func randQuery(r *rand.Rand, s Shape) []float32 {
	q := make([]float32, s.QHeads*s.HeadDim)
	for i := range q {
		q[i] = float32(r.NormFloat64())
	}
	return q
}

// decoded returns the cache's reconstruction of every token it holds: the
// decoded compressed tokens, then the fp16 window. The scorers estimate
// <q, Decode(k)> exactly (quant's contract for these methods), so
// attention on these vectors is the math that Attend must compute.
func decoded(t testing.TB, c *Compressed) (ks, vs [][]float32) {
	t.Helper()
	d := c.shape.HeadDim
	w := c.shape.KVHeads * d
	for range c.n {
		ks, vs = append(ks, make([]float32, w)), append(vs, make([]float32, w))
	}
	for hi, h := range c.heads {
		for tok := range c.nc {
			dk := ks[tok][hi*d : (hi+1)*d]
			dv := vs[tok][hi*d : (hi+1)*d]
			decodeKey(t, h.keys, tok, d, dk)
			vals, at := h.values, tok // the store and the token's place in it
			if st, ok := vals.(*tieredValues); ok {
				if vals = st.lv; tok >= st.bound(st.n()) {
					vals, at = st.hv, tok-st.hiAt
				}
			}
			switch st := vals.(type) {
			case *codeValues:
				b := st.q.Bytes()
				if err := st.q.Decode(dv, st.codes[at*b:(at+1)*b]); err != nil {
					t.Fatal(err)
				}
			case *laneValues:
				q := st.l.Quantizer()
				code := make([]byte, q.Bytes())
				st.l.Code(code, tok)
				if err := q.Decode(dv, code); err != nil {
					t.Fatal(err)
				}
			case *f16Values:
				toF32(dv, st.rows[tok*d:(tok+1)*d])
			case *f32Values:
				copy(dv, st.rows[tok*d:(tok+1)*d])
			}
		}
		for tok := c.nc; tok < c.n; tok++ {
			o := (h.off + tok - c.nc) * d
			toF32(ks[tok][hi*d:(hi+1)*d], h.wk[o:o+d])
			toF32(vs[tok][hi*d:(hi+1)*d], h.wv[o:o+d])
		}
	}
	return ks, vs
}

// decodeKey writes the reconstruction of key tok of a key store into dk.
func decodeKey(t testing.TB, keys keyStore, tok, d int, dk []float32) {
	t.Helper()
	switch st := keys.(type) {
	case *centeredKeys:
		decodeKey(t, st.inner, tok, d, dk)
		mu := make([]float64, d)
		for i, v := range st.mu {
			mu[i] = float64(v)
		}
		m := make([]float64, d)
		newMeanTurns(st.rope, mu).turned(m, tok)
		for i, v := range m {
			dk[i] += float32(v)
		}
	case *laneKeys:
		q := st.l.Quantizer()
		code := make([]byte, q.Bytes())
		st.l.Code(code, tok)
		if err := q.Decode(dk, code); err != nil {
			t.Fatal(err)
		}
	case *groupKeys:
		b := st.q.Bytes()
		if err := st.q.Decode(dk, st.codes[tok*b:(tok+1)*b]); err != nil {
			t.Fatal(err)
		}
	case *blockKeys:
		b := st.q.Bytes()
		if err := st.q.Decode(dk, st.codes[tok*b:(tok+1)*b]); err != nil {
			t.Fatal(err)
		}
	case *kltKeys:
		decodeKey(t, &st.codeKeys, tok, d, dk)
	case *tieredKeys:
		if tok < st.bound(st.n()) {
			decodeKey(t, st.lk, tok, d, dk)
		} else {
			decodeKey(t, st.hk, tok-st.hiAt, d, dk)
		}
	case *codeKeys:
		b := st.q.Bytes()
		if err := st.q.Decode(dk, st.codes[tok*b:(tok+1)*b]); err != nil {
			t.Fatal(err)
		}
	case *kiviKeys:
		blk := make([]float32, kiviBlock*d)
		bb := st.k.ChannelBytes(kiviBlock)
		if err := st.k.DecodeChannels(blk, st.blocks[tok/kiviBlock*bb:(tok/kiviBlock+1)*bb], kiviBlock); err != nil {
			t.Fatal(err)
		}
		copy(dk, blk[tok%kiviBlock*d:])
	case *f16Keys:
		toF32(dk, st.rows[tok*d:(tok+1)*d])
	case *f32Keys:
		copy(dk, st.rows[tok*d:(tok+1)*d])
	default:
		t.Fatalf("no decoder for key store %T", keys)
	}
}

// relErr returns ‖got − want‖/‖want‖ over all query heads.
func relErr(got []float32, want []float64) float64 {
	var num, den float64
	for i := range got {
		e := float64(got[i]) - want[i]
		num += e * e
		den += want[i] * want[i]
	}
	return math.Sqrt(num / den)
}

// relErr32 is relErr against a float32 reference.
func relErr32(got, want []float32) float64 {
	w64 := make([]float64, len(want))
	for j, x := range want {
		w64[j] = float64(x)
	}
	return relErr(got, w64)
}

// TestCompressedAttendIsTheMath: tokens arrive one by one; at several
// lengths (before, at and after the window fills, across KIVI blocks),
// Attend equals float64 attention over the cache's own reconstructions.
// Tolerance 2e-3 relative (max over coordinates, against the output's
// RMS): float32 scores and sums over a few hundred tokens, and fp16
// rounding inside the expansion kernels' scales is the same on both
// sides.
func TestCompressedAttendIsTheMath(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	s := Shape{QHeads: 8, KVHeads: 2, HeadDim: 128}
	checkAt := map[int]bool{1: true, 20: true, 32: true, 33: true, 64: true, 65: true, 97: true, 130: true, 200: true}
	var specs []Spec
	for _, name := range FormatNames() {
		specs = append(specs, specFor(t, name, 32))
	}
	// Mixed key and value formats, and no window.
	for _, kv := range [][2]string{{"q8_0", "turbo3"}, {"f16", "turbo3.5"}, {"turbo4", "f16"}, {"kivi2", "f32"}, {"f32", "polar"}, {"qjl", "turbo2.5"}, {"turbo3.5p", "q4_0"}} {
		sp, err := ParseSpec(kv[0], kv[1])
		if err != nil {
			t.Fatal(err)
		}
		sp.Window = 32
		specs = append(specs, sp)
	}
	none := specFor(t, "turbo3.5", -1)
	specs = append(specs, none)
	// Centred keys with the rope in the Shape (the model's case), on keys that turn.
	rope := testRope(t, s.HeadDim, s.HeadDim, false)
	specs = append(specs, specFor(t, "turbo2.5", 32))
	for i, spec := range specs {
		name := spec.String()
		if spec.Window < 0 {
			name += "/nowindow"
		}
		withRope := i == len(specs)-1
		if withRope {
			name += "/rope"
		}
		t.Run(name, func(t *testing.T) {
			sh := s
			if withRope {
				sh.Rope = rope
			}
			c, err := withCov(t, spec, sh).NewCache(0, sh)
			if err != nil {
				t.Fatal(err)
			}
			ks, vs := kvData(r, s, 200, true)
			if withRope {
				ks, vs = rotatingKeys(r, s, rope, 200, 4)
			}
			for n := 1; n <= len(ks); n++ {
				if err := c.Append(ks[n-1], vs[n-1]); err != nil {
					t.Fatal(err)
				}
				if !checkAt[n] {
					continue
				}
				q := randQuery(r, s)
				got := make([]float32, len(q))
				c.Attend(got, q, 0.088)
				dk, dv := ks[:n], vs[:n]
				if cc, ok := c.(*Compressed); ok {
					dk, dv = decoded(t, cc)
				}
				want := naiveAttention(s, dk, dv, q, 0.088)
				var rms float64
				for _, w := range want {
					rms += w * w
				}
				rms = math.Sqrt(rms / float64(len(want)))
				if c.Len() != n {
					t.Fatalf("Len %d, want %d", c.Len(), n)
				}
				tol := 2e-3 * rms
				for i := range got {
					if name == "f32" || name == "f16" { // Dense: the exact data, fp16 rounding 2^-11 relative
						tol = 3e-3 * (rms + math.Abs(want[i]))
					}
					if math.Abs(float64(got[i])-want[i]) > tol {
						t.Fatalf("n=%d: out[%d] = %g, want %g (rms %g)", n, i, got[i], want[i], rms)
					}
				}
			}
		})
	}
}

// attendError returns the relative L2 error of Attend against exact
// float64 attention on the original keys and values, over queries.
func attendError(t testing.TB, spec Spec, s Shape, n, queries int, outliers bool, seed uint64) float64 {
	r := rand.New(rand.NewPCG(seed, 7))
	ks, vs := kvData(r, s, n, outliers)
	// klt formats calibrated on these very tokens: the coder's error,
	// not that of a calibration drawn with other outlier channels.
	c, err := withCovFrom(t, spec, s, ks, vs).NewCache(0, s)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ks {
		if err := c.Append(ks[i], vs[i]); err != nil {
			t.Fatal(err)
		}
	}
	var sum float64
	for range queries {
		q := randQuery(r, s)
		// Sharper attention than N(0,1)·N(0,1)/√d: real heads attend to
		// few tokens, which is where key errors show.
		scale := 2 / math.Sqrt(float64(s.HeadDim))
		got := make([]float32, len(q))
		c.Attend(got, q, float32(scale))
		e := relErr(got, naiveAttention(s, ks, vs, q, scale))
		sum += e * e
	}
	return math.Sqrt(sum / float64(queries))
}

// TestAttendError: every format's attention output against the exact
// attention on the same keys and values (384 tokens, the default window),
// random data and data with outlier channels, for two GQA shapes. The
// errors are those of the quantizers: an output is a convex combination
// of values, so value errors contribute about their relative RMS √D_v
// (0.18 at 3 bits, 0.1 at 4), and key errors move each score by
// scale·<q, Δk>, whose RMS is √(scale²·‖q‖²·D_k·‖k‖²/d) ≈ 2·√D_k here
// (scale 2/√d, ‖k‖² = d; 2–7× that with the 10× outlier channels). Each
// bound is 1.25× the largest error measured over the four
// configurations (a regression bound; the figures are logged), and the
// rates must order the errors.
func TestAttendError(t *testing.T) {
	bound := map[string]float64{
		"f32": 1e-5, "f16": 2e-3, "q8_0": 0.06, "q4_0": 0.6, "q4_0h": 0.48, "kivi2": 1.25,
		"turbo2": 1.35, "turbo2.5": 0.75, "turbo3": 0.95, "turbo3.5": 0.6, "turbo4": 0.5, "turbo5": 0.21,
		"turbo3.5p": 1.05, "polar": 0.95, "qjl": 1.9,
		// On data without structure a klt format is a Gaussian scalar coder
		// at its rate, like the turbo format of that rate: their bounds
		// (klt4.5 turbo4's; klt6 turbo5's halved, one bit more halving
		// the error's norm).
		"klt2": 1.35, "klt2.5": 0.75, "klt3": 0.95, "klt3.5": 0.6, "klt4": 0.5, "klt4.5": 0.5, "klt5": 0.21, "klt6": 0.105,
		// tcq: klt's bounds (its error is below klt's: the order below).
		"tcq2": 1.35, "tcq2.5": 0.75, "tcq3": 0.95, "tcq3.5": 0.6, "tcq4": 0.5, "tcq4.5": 0.5, "tcq5": 0.21, "tcq6": 0.105,
	}
	mean := map[string]float64{}
	for _, s := range []Shape{{QHeads: 32, KVHeads: 8, HeadDim: 128}, {QHeads: 4, KVHeads: 4, HeadDim: 64}} {
		for _, outliers := range []bool{false, true} {
			var row strings.Builder
			for _, name := range FormatNames() {
				e := attendError(t, specFor(t, name, 0), s, 384, 3, outliers, 11)
				mean[name] += e / 4
				fmt.Fprintf(&row, " %s=%.4f", name, e)
				if e > bound[name] {
					t.Errorf("%s %+v outliers=%v: relative error %.4f above %.4f", name, s, outliers, e, bound[name])
				}
			}
			t.Logf("%+v outliers=%v:%s", s, outliers, row.String())
		}
	}
	for _, order := range [][]string{{"f16", "q8_0", "turbo5", "turbo4", "turbo3.5", "turbo2.5"}, {"turbo3", "turbo2"}, {"q8_0", "q4_0h", "q4_0"}, {"turbo3.5", "turbo3.5p"},
		{"klt6", "klt5", "klt4.5", "klt4", "klt3.5", "klt3", "klt2.5", "klt2"},
		{"tcq6", "tcq5", "tcq4.5", "tcq4", "tcq3.5", "tcq3", "tcq2.5", "tcq2"},
		{"tcq2.5", "klt2.5"}, {"tcq3.5", "klt3.5"}} {
		for i := 1; i < len(order); i++ {
			if mean[order[i-1]] >= mean[order[i]] {
				t.Errorf("mean error of %s (%.4f) not below %s's (%.4f)", order[i-1], mean[order[i-1]], order[i], mean[order[i]])
			}
		}
	}
}

// TestCorrectionChoice measures the attention error of the turbo formats
// with the norm and the projection correction (docs/ALGORITHMS.md §3) and
// checks that turboCorrection is the better of the two.
func TestCorrectionChoice(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement")
	}
	errs := map[quant.Correction]float64{}
	for _, corr := range []quant.Correction{quant.CorrectNorm, quant.CorrectProjection} {
		var row strings.Builder
		for _, name := range []string{"turbo2.5", "turbo3", "turbo3.5", "turbo4"} {
			for _, outliers := range []bool{false, true} {
				spec := specFor(t, name, 0)
				spec.corr = corr + 1
				e := attendError(t, spec, Shape{QHeads: 8, KVHeads: 2, HeadDim: 128}, 512, 8, outliers, 21)
				errs[corr] += e
				fmt.Fprintf(&row, " %s/outliers=%v=%.4f", name, outliers, e)
			}
		}
		t.Logf("correction %s:%s (sum %.4f)", corr, row.String(), errs[corr])
	}
	other := quant.CorrectProjection
	if turboCorrection == quant.CorrectProjection {
		other = quant.CorrectNorm
	}
	if errs[turboCorrection] > errs[other] {
		t.Errorf("turboCorrection %s: summed error %.4f, but %s gives %.4f", turboCorrection, errs[turboCorrection], other, errs[other])
	}
}

// TestBytesFormula: Bytes is nc·KVHeads·(key code + value code) for the
// compressed tokens, plus 4·d bytes per token and KV head in the fp16
// window, plus 2 bytes per outlier channel index; BitsPerValue is the
// compressed codes' bits per coordinate, and the .5 formats meet their
// names at d = 128.
func TestBytesFormula(t *testing.T) {
	s := Shape{QHeads: 4, KVHeads: 2, HeadDim: 128}
	r := rand.New(rand.NewPCG(9, 9))
	ks, vs := kvData(r, s, 200, false)
	const window = 16
	for _, name := range FormatNames() {
		c, err := withCov(t, specFor(t, name, window), s).NewCache(0, s)
		if err != nil {
			t.Fatal(err)
		}
		for i := range ks {
			if err := c.Append(ks[i], vs[i]); err != nil {
				t.Fatal(err)
			}
		}
		kb, vb := codeBytes128[name], codeBytes128[name]
		if name == "qjl" {
			vb = codeBytes128["f16"]
		}
		cc, ok := c.(*Compressed)
		if !ok {
			if want := 200 * s.KVHeads * (kb + vb); c.Bytes() != want {
				t.Errorf("%s: Bytes %d, want %d", name, c.Bytes(), want)
			}
			continue
		}
		win := cc.Window()
		if name == "kivi2" {
			if win < window || win >= window+kiviBlock || (200-win)%kiviBlock != 0 {
				t.Errorf("kivi2: window %d, want whole blocks compressed and %d..%d in the window", win, window, window+kiviBlock-1)
			}
		} else if win != window {
			t.Errorf("%s: window %d, want %d", name, win, window)
		}
		nc := 200 - win
		outliers := 0
		if turboBits[name][0] > 0 || name == "turbo3.5p" { // the split formats
			outliers = 2 * 32 // keys and values, d/4 channels each
		}
		mean := 0 // the keys' mean of centring formats, fp32
		if strings.HasPrefix(name, "turbo") {
			mean = 4 * s.HeadDim
		}
		want := nc*s.KVHeads*(kb+vb) + win*s.KVHeads*4*s.HeadDim + (2*outliers+mean)*s.KVHeads
		if c.Bytes() != want {
			t.Errorf("%s: Bytes %d, want %d", name, c.Bytes(), want)
		}
		bits := cc.BitsPerValue()
		if wantBits := float64(8*(kb+vb)) / (2 * 128); bits != wantBits {
			t.Errorf("%s: BitsPerValue %g, want %g", name, bits, wantBits)
		}
		fk, _ := ParseFormat(name)
		fv, _ := ParseFormat(specFor(t, name, 0).V.String())
		bk, err := fk.Bits(128)
		if err != nil {
			t.Fatal(err)
		}
		bv, _ := fv.Bits(128)
		if bk != float64(8*kb)/128 || bv != float64(8*vb)/128 {
			t.Errorf("%s: Bits %g and %g, want %g and %g", name, bk, bv, float64(8*kb)/128, float64(8*vb)/128)
		}
		if limit := map[string]float64{"turbo2.5": 2.5, "turbo3.5": 3.5}[name]; limit > 0 && bits > limit {
			t.Errorf("%s: %g bits per coordinate, above %g", name, bits, limit)
		}
		t.Logf("%-9s %.4f bits/coordinate (K %d + V %d bytes per token and head)", name, bits, kb, vb)
	}
}

// TestBitsAt16k: at 16k tokens with the default window, everything
// counted (window, outlier lists), turbo2.5 and turbo3.5 stay within 3%
// of their nominal rate (the target).
func TestBitsAt16k(t *testing.T) {
	s := Shape{QHeads: 1, KVHeads: 1, HeadDim: 128}
	r := rand.New(rand.NewPCG(3, 3))
	ks, vs := kvData(r, s, 256, true)
	for _, tc := range []struct {
		name string
		bits float64
	}{{"turbo2.5", 2.5}, {"turbo3.5", 3.5}} {
		c, err := specFor(t, tc.name, 0).NewCache(0, s)
		if err != nil {
			t.Fatal(err)
		}
		const n = 16384
		for i := range n {
			if err := c.Append(ks[i%256], vs[i%256]); err != nil {
				t.Fatal(err)
			}
		}
		total := float64(8*c.Bytes()) / float64(2*n*s.KVHeads*s.HeadDim)
		t.Logf("%s at %d tokens: %.4f bits per coordinate in all (%.2f%% over %g)", tc.name, n, total, 100*(total/tc.bits-1), tc.bits)
		if total > 1.03*tc.bits {
			t.Errorf("%s: %.4f bits per coordinate at %d tokens, more than 3%% above %g", tc.name, total, n, tc.bits)
		}
	}
}

// TestWindowError measures what the fp16 window buys: turbo3.5 attention
// error against exact at several window lengths, for queries that attend
// mostly to recent tokens, as decoding queries do: each query is noise
// plus 3/5 times the sum of its KV head's keys 1, 6, 21, 41 and 91
// tokens back, which gives each of those a score about 6 above the
// typical one, about half the attention mass. Windows of 16, 32, 64 and
// 128 cover 2, 3, 4 and 5 of them exactly. DefaultWindow's cost is
// bounded by TestBitsAt16k; here the error must fall as the window grows.
func TestWindowError(t *testing.T) {
	s := Shape{QHeads: 8, KVHeads: 2, HeadDim: 128}
	r := rand.New(rand.NewPCG(4, 4))
	const n = 1024
	ks, vs := kvData(r, s, n, false)
	d := s.HeadDim
	var row strings.Builder
	prev := math.Inf(1)
	for _, w := range []int{-1, 16, 32, 64, 128} {
		c, err := specFor(t, "turbo3.5", w).NewCache(0, s)
		if err != nil {
			t.Fatal(err)
		}
		for i := range ks {
			if err := c.Append(ks[i], vs[i]); err != nil {
				t.Fatal(err)
			}
		}
		var sum float64
		const queries = 4
		qr := rand.New(rand.NewPCG(5, 5))
		for range queries {
			q := randQuery(qr, s)
			for h := range s.QHeads {
				kh := h / s.Group()
				for i := range d {
					var acc float32
					for _, back := range []int{1, 6, 21, 41, 91} {
						acc += ks[n-back][kh*d+i]
					}
					q[h*d+i] = 0.3*q[h*d+i] + 3*acc/5
				}
			}
			scale := 1 / math.Sqrt(float64(d))
			got := make([]float32, len(q))
			c.Attend(got, q, float32(scale))
			e := relErr(got, naiveAttention(s, ks, vs, q, scale))
			sum += e * e
		}
		e := math.Sqrt(sum / queries)
		fmt.Fprintf(&row, " R=%d: %.4f", max(w, 0), e)
		if e > prev {
			t.Errorf("window %d: error %.4f above the shorter window's %.4f", w, e, prev)
		}
		prev = e
	}
	t.Logf("turbo3.5 attention error by window:%s", row.String())
}

func TestCompressedAppendErrors(t *testing.T) {
	s := Shape{QHeads: 2, KVHeads: 1, HeadDim: 128}
	c, err := specFor(t, "turbo3.5", 0).NewCache(0, s)
	if err != nil {
		t.Fatal(err)
	}
	k := make([]float32, 128)
	if err := c.Append(k[:100], k); err == nil {
		t.Error("short key: no error")
	}
	k[3] = float32(math.Inf(1))
	if err := c.Append(k, make([]float32, 128)); err == nil || c.Len() != 0 {
		t.Errorf("infinite key: error %v, Len %d", err, c.Len())
	}
	k[3] = 1e6
	if err := c.Append(make([]float32, 128), k); err == nil || c.Len() != 0 {
		t.Errorf("value beyond fp16: error %v, Len %d", err, c.Len())
	}
}

// FuzzParseFormat: any name either parses to a format whose String is
// that name, or gives an error that quotes it.
func FuzzParseFormat(f *testing.F) {
	for _, n := range FormatNames() {
		f.Add(n)
	}
	f.Add("turbo3.5 ")
	f.Add("")
	for _, n := range []string{"tcq3.5>2@384", "tcq3.5>2.0@384", "tcq3.5>2~2.5", "klt4>2~3", "tcq3.5>2.5>2@384", "tcq3.5>2~NaN", ">@", "q4_0>2@9"} {
		f.Add(n) // tiered names, and names that are not
	}
	f.Fuzz(func(t *testing.T, name string) {
		fm, err := ParseFormat(name)
		if err != nil {
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", name)) {
				t.Fatalf("error %v does not quote %q", err, name)
			}
			return
		}
		if fm.String() != name || !fm.Valid() {
			t.Fatalf("ParseFormat(%q) = %v", name, fm)
		}
		if fm.tiered() && !(fm.lo.rate < fm.c.rate && (fm.age > 0) != (fm.share > 0) && fm.share < 1) {
			t.Fatalf("%q: tiered with rates %g > %g, age %d, share %g", name, fm.c.rate, fm.lo.rate, fm.age, fm.share)
		}
	})
}

// TestOutlierChoice: with 4 channels per KV head at 10× the others, the
// split formats' outlier channels (d/4 of them, chosen from the first
// window) include those, for keys and values, and stay fixed.
func TestOutlierChoice(t *testing.T) {
	s := Shape{QHeads: 4, KVHeads: 2, HeadDim: 128}
	r := rand.New(rand.NewPCG(12, 12))
	ks, vs := kvData(r, s, 300, true)
	c, err := specFor(t, "turbo3.5", 0).NewCache(0, s)
	if err != nil {
		t.Fatal(err)
	}
	cc := c.(*Compressed)
	for i := range DefaultWindow {
		if err := c.Append(ks[i], vs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if k, v := cc.Outliers(0); k != nil || v != nil {
		t.Fatalf("outliers chosen before the window is full: %v %v", k, v)
	}
	for i := DefaultWindow; i < len(ks); i++ {
		if err := c.Append(ks[i], vs[i]); err != nil {
			t.Fatal(err)
		}
	}
	d := s.HeadDim
	for h := range s.KVHeads {
		k, v := cc.Outliers(h)
		if len(k) != d/4 || len(v) != d/4 {
			t.Fatalf("head %d: %d and %d outlier channels, want %d", h, len(k), len(v), d/4)
		}
		for _, out := range [][]int{k, v} {
			for c := range d {
				// kvData's hot channels are the ones with |x| ~ 10.
				var e float64
				for _, x := range ks[:DefaultWindow+1] {
					e += float64(x[h*d+c]) * float64(x[h*d+c])
				}
				if e/float64(DefaultWindow+1) > 25 && !slices.Contains(out, c) {
					t.Errorf("head %d: hot channel %d not among the outliers %v", h, c, out)
				}
			}
		}
	}
}

// TestResearchFormats: the formats measured to lose to the turbo formats
// on every model (BENCHMARKS.md, the model suite) are the research
// baselines, and only they.
func TestResearchFormats(t *testing.T) {
	want := map[string]bool{"kivi2": true, "turbo3.5p": true, "polar": true, "qjl": true}
	for _, name := range FormatNames() {
		f, err := ParseFormat(name)
		if err != nil {
			t.Fatal(err)
		}
		if f.Research() != want[name] {
			t.Errorf("%s: Research() = %v, want %v", name, f.Research(), want[name])
		}
	}
}

// namedSpec is a compressed format's spec, with its name and window.
type namedSpec struct {
	name   string
	window int
	spec   Spec
}

func (n namedSpec) String() string { return fmt.Sprintf("%s/%d", n.name, n.window) }

// compressedSpecs returns, for each window, the spec of every format
// whose caches of shape sh are Compressed (klt formats with covariances:
// withCov).
func compressedSpecs(t *testing.T, sh Shape, windows ...int) []namedSpec {
	t.Helper()
	var out []namedSpec
	for _, name := range append(FormatNames(), tieredTestFormats...) {
		for _, window := range windows {
			spec := withCov(t, specFor(t, name, window), sh)
			if spec.Check(sh) != nil {
				continue
			}
			if _, ok := newCache(t, spec, sh).(*Compressed); ok {
				out = append(out, namedSpec{name, window, spec})
			}
		}
	}
	return out
}

// newCache returns spec's cache of layer 0 and shape sh.
func newCache(t *testing.T, spec Spec, sh Shape) Cache {
	t.Helper()
	c, err := spec.NewCache(0, sh)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestAppendPoolExact: a cache whose Appends move tokens out of the
// window as tasks on a pool (compress) holds what one appended on the
// caller holds: after every Append, attention on the caller is the same,
// bit for bit, for every compressed format, with a window and without
// one (--kv-window -1), on the caller while the cache is short, on the
// pool from then on, also where the Append runs inside a task of the
// cache's own pool (tensor.Pool.TryRun's fallback: on the caller).
func TestAppendPoolExact(t *testing.T) {
	pool := tensor.NewPool(3)
	defer pool.Close()
	sh := Shape{QHeads: 4, KVHeads: 2, HeadDim: 64}
	sh.Rope = testRope(t, sh.HeadDim, sh.HeadDim, false)
	r := rand.New(rand.NewPCG(21, 22))
	// From 256 tokens on, the caches' steps (so their moves) run on the
	// pool (stepPool).
	ks, vs := kvData(r, sh, 300, true)
	qs := make([][]float32, len(ks))
	for i := range qs {
		qs[i] = randQuery(r, sh)
	}
	var tested []string
	for _, ns := range compressedSpecs(t, sh, 16, -1) {
		name, window := ns.name, ns.window
		var err error
		ref, c := newCache(t, ns.spec, sh), newCache(t, ns.spec, sh)
		UsePool(c, pool)
		if cc := c.(*Compressed); cc.stepPool(sh, len(ks), cc.slices(sh, len(ks))) == nil {
			t.Fatalf("%s: %d tokens do not make a step on the pool", name, len(ks))
		}
		tested = append(tested, ns.String())
		want, got := make([]float32, len(qs[0])), make([]float32, len(qs[0]))
		for i := range ks {
			if err := ref.Append(ks[i], vs[i]); err != nil {
				t.Fatal(err)
			}
			if i%3 == 2 { // inside a region of the cache's pool
				pool.Run(2, func(task, _ int) {
					if task == 0 {
						err = c.Append(ks[i], vs[i])
					}
				})
			} else {
				err = c.Append(ks[i], vs[i])
			}
			if err != nil {
				t.Fatal(err)
			}
			ref.Attend(want, qs[i], 0.125)
			UsePool(c, nil)
			c.Attend(got, qs[i], 0.125)
			UsePool(c, pool)
			for j := range got {
				if got[j] != want[j] {
					t.Fatalf("%s window %d, token %d: out[%d] = %g, appended on the caller %g", name, window, i, j, got[j], want[j])
				}
			}
			if c.Bytes() != ref.Bytes() {
				t.Fatalf("%s window %d, token %d: %d bytes, appended on the caller %d", name, window, i, c.Bytes(), ref.Bytes())
			}
		}
	}
	t.Logf("formats/windows: %v", tested)
	for _, name := range []string{"turbo3.5", "klt3.5", "q8_0", "q4_0"} {
		if !slices.Contains(tested, name+"/-1") {
			t.Errorf("%s not tested", name)
		}
	}
}
