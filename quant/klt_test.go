package quant

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"gonum.org/v1/gonum/mat"
)

// kltReference is testdata/klt_reference.json.gz, written by
// tools/quantref/make_klt.py: unit Gaussian Lloyd–Max codebooks by grid
// iteration, the integer reverse water-filling of NumPy's eigenvalues,
// and the coder's scale byte, indices and decoding with an explicit
// transform.
type kltReference struct {
	Books map[string]struct {
		Centroids []float64
		MSE       float64
	}
	Cases []struct {
		D                        int
		BitsTotal                int `json:"bits_total"`
		Cov, Mean, Eigenvalues   []float64
		Eigenvectors             []float64
		Bits                     []int
		Transform, Offset, Sigma []float64
		X                        [][]float64
		Scale                    []int
		Index                    [][]int
		Decoded                  [][]float64
	}
}

func f32s(x []float64) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(v)
	}
	return out
}

// correlated returns a covariance with eigenvalues e^U(lo,hi) in a
// Haar-random basis, and a mean, for dimension d.
func correlated(r *rand.Rand, d int, lo, hi float64) (cov, mean []float64) {
	rot, err := NewDense(d, r.Uint64())
	if err != nil {
		panic(err)
	}
	lam := make([]float64, d)
	for i := range lam {
		lam[i] = math.Exp(lo + (hi-lo)*r.Float64())
	}
	cov = make([]float64, d*d)
	for i := range d {
		for j := range d {
			var s float64
			for k := range d {
				s += float64(rot.m[i*d+k]) * lam[k] * float64(rot.m[j*d+k])
			}
			cov[i*d+j] = s
		}
	}
	for i := range d { // exact symmetry
		for j := range i {
			cov[i*d+j] = cov[j*d+i]
		}
	}
	mean = make([]float64, d)
	for i := range mean {
		mean[i] = r.NormFloat64()
	}
	return cov, mean
}

// drawGaussian returns n vectors of N(mean, cov).
func drawGaussian(r *rand.Rand, cov, mean []float64, n int) []float32 {
	d := len(mean)
	l := cholesky(cov, d)
	xs := make([]float32, n*d)
	z := make([]float64, d)
	for v := range n {
		for i := range z {
			z[i] = r.NormFloat64()
		}
		for i := range d {
			s := mean[i]
			for k := 0; k <= i; k++ {
				s += l[i*d+k] * z[k]
			}
			xs[v*d+i] = float32(s)
		}
	}
	return xs
}

func cholesky(a []float64, d int) []float64 {
	l := make([]float64, d*d)
	for i := range d {
		for j := 0; j <= i; j++ {
			s := a[i*d+j]
			for k := range j {
				s -= l[i*d+k] * l[j*d+k]
			}
			if i == j {
				l[i*d+i] = math.Sqrt(math.Max(s, 0))
			} else {
				l[i*d+j] = s / l[j*d+j]
			}
		}
	}
	return l
}

// TestKLTReference: the codebooks, the bit allocation, the design's
// subspaces and spreads, and the coder's scale byte, indices and decoding
// against the NumPy fixture.
func TestKLTReference(t *testing.T) {
	var ref kltReference
	readGzipJSON(t, "testdata/klt_reference.json.gz", &ref)
	for b := 1; b <= 8; b++ {
		want := ref.Books[string(rune('0'+b))]
		cb, err := LloydMaxGaussian(b, 1)
		if err != nil {
			t.Fatal(err)
		}
		// Lloyd–Max iteration converges slowly (linearly) in the outer
		// cells; the two iterations stop within 1e-5 of each other there
		// (Max 1960 tabulates 2.152 and 2.7326 for the outer 3- and 4-bit
		// centroids); 1e-4 leaves room for the fixture's grid.
		for i, c := range cb.Centroids {
			if math.Abs(float64(c)-want.Centroids[i]) > 1e-4 {
				t.Fatalf("%d bits: centroid %d = %g, want %g", b, i, c, want.Centroids[i])
			}
		}
		if math.Abs(cb.MSE-want.MSE) > 1e-3*want.MSE {
			t.Fatalf("%d bits: MSE %g, want %g", b, cb.MSE, want.MSE)
		}
		// At 7 and 8 bits the high-rate (Panter–Dite) form
		// (√3·π/2)·4^(−b) holds within 2% too.
		if pd := math.Sqrt(3) * math.Pi / 2 * math.Pow(4, -float64(b)); b >= 7 && math.Abs(cb.MSE-pd) > 0.02*pd {
			t.Fatalf("%d bits: MSE %g, Panter–Dite %g", b, cb.MSE, pd)
		}
	}
	if len(ref.Cases) < 5 {
		t.Fatalf("%d cases", len(ref.Cases))
	}
	for ci, c := range ref.Cases {
		d := c.D
		bits, err := AllocateBits(c.Eigenvalues, c.BitsTotal)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(bits, c.Bits) {
			t.Fatalf("case %d: bits %v, want %v", ci, bits, c.Bits)
		}
		p, err := DesignKLT(c.Cov, c.Mean, d, c.BitsTotal, 1)
		if err != nil {
			t.Fatal(err)
		}
		// Per group of equal bits: the same σ and the same subspace (the
		// projector Σ rowᵢ·rowᵢᵀ), whatever rotation turns it.
		for lo := 0; lo < d; {
			hi := lo + 1
			for hi < d && c.Bits[hi] == c.Bits[lo] {
				hi++
			}
			for i := lo; i < hi; i++ {
				if int(p.Bits[i]) != c.Bits[i] || math.Abs(float64(p.Sigma[i])-c.Sigma[i]) > 1e-5*c.Sigma[i] {
					t.Fatalf("case %d comp %d: bits %d sigma %g, want %d %g", ci, i, p.Bits[i], p.Sigma[i], c.Bits[i], c.Sigma[i])
				}
			}
			for a := range d {
				for b := range d {
					var got, want float64
					for i := lo; i < hi; i++ {
						got += float64(p.Transform[i*d+a]) * float64(p.Transform[i*d+b])
						want += c.Eigenvectors[i*d+a] * c.Eigenvectors[i*d+b]
					}
					// float32 storage; eigenvalues at least e^0.05 apart
					if math.Abs(got-want) > 1e-4 {
						t.Fatalf("case %d group [%d,%d): projector[%d][%d] = %g, want %g", ci, lo, hi, a, b, got, want)
					}
				}
			}
			lo = hi
		}
		// Tᵀ·off is the mean.
		for a := range d {
			var s float64
			for i := range d {
				s += float64(p.Transform[i*d+a]) * float64(p.Offset[i])
			}
			if math.Abs(s-c.Mean[a]) > 1e-4*(1+math.Abs(c.Mean[a])) {
				t.Fatalf("case %d: Tᵀoff[%d] = %g, want the mean %g", ci, a, s, c.Mean[a])
			}
		}
		u8 := make([]uint8, d)
		for i, b := range c.Bits {
			u8[i] = uint8(b)
		}
		k, err := NewKLT(KLTParams{Transform: f32s(c.Transform), Offset: f32s(c.Offset), Sigma: f32s(c.Sigma), Bits: u8})
		if err != nil {
			t.Fatal(err)
		}
		if want := 1 + (c.BitsTotal+7)/8; k.Bytes() != want {
			t.Fatalf("case %d: %d bytes, want %d", ci, k.Bytes(), want)
		}
		code := make([]byte, k.Bytes())
		dec := make([]float32, d)
		y := make([]float32, d)
		for v, x := range c.X {
			// The fixture pins the code at the RMS scale byte, where
			// the encoder's search starts (fitScale); the stored code
			// must do at least as well (TestKLTScaleFit checks the rest).
			k.apply(y, f32s(x))
			for i := range y {
				y[i] -= k.off[i]
			}
			e, ok := k.rmsByte(y)
			if !ok {
				t.Fatalf("case %d vector %d: no scale", ci, v)
			}
			k.encodeAt(code, y, e)
			if int(code[0]) != c.Scale[v] {
				t.Fatalf("case %d vector %d: scale byte %d, want %d", ci, v, code[0], c.Scale[v])
			}
			r := bitReader{buf: code[1:]}
			for i, b := range c.Bits {
				if b > 0 {
					if got := int(r.read(b)); got != c.Index[v][i] {
						t.Fatalf("case %d vector %d comp %d: index %d, want %d", ci, v, i, got, c.Index[v][i])
					}
				}
			}
			if err := k.Decode(dec, code); err != nil {
				t.Fatal(err)
			}
			// The two sides' centroids differ by up to 1e-4 (above):
			// ρ̂·σᵢ·1e-4 per component, turned by an orthogonal T: at most
			// 1e-4·ρ̂·‖σ‖ per coordinate, plus float32 rounding.
			var ss float64
			for _, sg := range c.Sigma {
				ss += sg * sg
			}
			tol := 1e-4*math.Exp2(float64(c.Scale[v]-128)/8)*math.Sqrt(ss) + 1e-5
			for i, w := range c.Decoded[v] {
				if math.Abs(float64(dec[i])-w) > tol {
					t.Fatalf("case %d vector %d: decoded[%d] = %g, want %g", ci, v, i, dec[i], w)
				}
			}
			if err := k.Encode(code, f32s(x)); err != nil {
				t.Fatal(err)
			}
			if err := k.Decode(dec, code); err != nil {
				t.Fatal(err)
			}
			var got, ref, energy float64
			for i, w := range c.Decoded[v] {
				got += sq(float64(dec[i]) - x[i])
				ref += sq(w - x[i])
				energy += sq(x[i])
			}
			// float32 decoding (6e-8 of each coordinate) against the
			// fixture's float64: 1e-6 of ‖x‖²
			if got > ref+1e-6*energy {
				t.Fatalf("case %d vector %d: error %g, the fixture's code at the RMS byte %g", ci, v, got, ref)
			}
		}
	}
}

// kltFor designs a KLT of dimension d at bpc bits all in for cov/mean.
func kltFor(t testing.TB, cov, mean []float64, d int, bpc float64) *KLT {
	t.Helper()
	p, err := DesignKLT(cov, mean, d, 8*(KLTBytes(d, bpc)-1), 7)
	if err != nil {
		t.Fatal(err)
	}
	k, err := NewKLT(p)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestKLTBytes: the code is ⌊bpc·d/8⌋ bytes, the closed form the KV
// formats count, for the rates and head dimensions they use.
func TestKLTBytes(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, c := range []struct {
		d    int
		bpc  float64
		want int
	}{{64, 3.5, 28}, {128, 3.5, 56}, {64, 2.5, 20}, {128, 2.5, 40}, {96, 3.5, 42},
		{64, 2, 16}, {64, 3, 24}, {128, 3, 48}, {64, 4, 32}, {64, 4.5, 36}, {128, 4.5, 72}, {16, 4.5, 9}, {64, 5, 40}, {128, 6, 96}} {
		cov, mean := correlated(r, c.d, -4, 1)
		if got := KLTBytes(c.d, c.bpc); got != c.want {
			t.Fatalf("KLTBytes(%d, %g) = %d, want %d", c.d, c.bpc, got, c.want)
		}
		if k := kltFor(t, cov, mean, c.d, c.bpc); k.Bytes() != c.want || BitsPerCoord(k) != c.bpc {
			t.Fatalf("d %d: %d bytes (%g bits), want %d", c.d, k.Bytes(), BitsPerCoord(k), c.want)
		}
	}
}

// kltMSE returns the mean ‖x − x̃‖² of q over xs.
func kltMSE(t *testing.T, q Quantizer, xs []float32) float64 {
	errs, _ := squaredErrors(t, q, xs)
	var s float64
	for _, e := range errs {
		s += e
	}
	return s / float64(len(errs))
}

// TestKLTDistortion: on Gaussian vectors of the calibration's law the
// error is the reverse water-filling prediction Σᵢ σᵢ²·D(bᵢ) (the
// Lloyd–Max error of each component at its bits) within what the
// per-vector scale changes: its rounding to 1/8 octave (±4.4%, an error
// of at most 0.2% of the energy on its own) and the normalisation, which
// makes the components slightly lighter-tailed than Gaussian (measured
// 0.9–1.0 of the prediction). And it sits above Shannon's bound for a
// Gaussian source at that rate, Σ min(λᵢ, θ) by reverse water-filling.
func TestKLTDistortion(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 5))
	for _, c := range []struct {
		d   int
		bpc float64
	}{{64, 3.5}, {64, 2.5}, {128, 3.5}, {64, 2}, {64, 3}, {64, 4.5}, {64, 6}} {
		cov, mean := correlated(r, c.d, -5, 1)
		k := kltFor(t, cov, mean, c.d, c.bpc)
		var pred float64
		for i, b := range k.bits {
			dist := 1.0
			if b > 0 {
				cb, _ := LloydMaxGaussian(int(b), 1)
				dist = cb.MSE
			}
			pred += float64(k.sigma[i]*k.sigma[i]) * dist
		}
		got := kltMSE(t, k, drawGaussian(r, cov, mean, 4000))
		if got > 1.1*pred || got < 0.8*pred {
			t.Fatalf("d %d at %g bits: MSE %g, predicted %g", c.d, c.bpc, got, pred)
		}
		if sb := shannonGaussian(cov, c.d, c.bpc); got < sb {
			t.Fatalf("d %d at %g bits: MSE %g below the Shannon bound %g", c.d, c.bpc, got, sb)
		}
	}
}

// shannonGaussian is the distortion-rate function of N(·, cov) at bpc
// bits per coordinate: reverse water-filling on the eigenvalues.
func shannonGaussian(cov []float64, d int, bpc float64) float64 {
	var es mat.EigenSym
	if !es.Factorize(mat.NewSymDense(d, slices.Clone(cov)), false) {
		panic("eigen")
	}
	lam := es.Values(nil)
	lo, hi := 0.0, slices.Max(lam)
	for range 200 {
		th := (lo + hi) / 2
		var rate float64
		for _, l := range lam {
			if l > th {
				rate += 0.5 * math.Log2(l/th)
			}
		}
		if rate > bpc*float64(d) {
			lo = th
		} else {
			hi = th
		}
	}
	var dist float64
	for _, l := range lam {
		dist += math.Min(l, hi)
	}
	return dist
}

// TestKLTBeatsIdentity: a planted bug — the transform left out (the
// identity, bits by the channels' own variances) — must code correlated
// data worse: the decorrelation is what the format is for.
func TestKLTBeatsIdentity(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	const d = 64
	cov, mean := correlated(r, d, -5, 1)
	k := kltFor(t, cov, mean, d, 3.5)
	diag := make([]float64, d*d)
	for i := range d {
		diag[i*d+i] = cov[i*d+i]
	}
	p, err := DesignKLT(diag, mean, d, 8*(KLTBytes(d, 3.5)-1), 7)
	if err != nil {
		t.Fatal(err)
	}
	id, err := NewKLT(p)
	if err != nil {
		t.Fatal(err)
	}
	xs := drawGaussian(r, cov, mean, 2000)
	good, bad := kltMSE(t, k, xs), kltMSE(t, id, xs)
	// coding gain of this spectrum ≈ 1 bit: 4x in MSE; ask for 2x
	if bad < 2*good {
		t.Fatalf("identity transform MSE %g, KLT %g: want at least 2x worse", bad, good)
	}
}

// TestKLTScorer: scores on the codes equal ⟨q, decode⟩, and the
// accumulator's sums equal the decoded sums (TestAccumulatorMatchesDecode
// covers the accumulator with the other quantizers).
func TestKLTScorer(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 8))
	cov, mean := correlated(r, 64, -3, 0)
	checkScorer(t, kltFor(t, cov, mean, 64, 3.5), 50, 1)
}

// TestKLTErrors: bad parameters and inputs give errors.
func TestKLTErrors(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	cov, mean := correlated(r, 16, -3, 0)
	p, err := DesignKLT(cov, mean, 16, 40, 1)
	if err != nil {
		t.Fatal(err)
	}
	bad := func(f func(*KLTParams)) KLTParams {
		q := KLTParams{Transform: slices.Clone(p.Transform), Offset: slices.Clone(p.Offset), Sigma: slices.Clone(p.Sigma), Bits: slices.Clone(p.Bits)}
		f(&q)
		return q
	}
	for name, q := range map[string]KLTParams{
		"not orthogonal": bad(func(q *KLTParams) { q.Transform[3] += 0.01 }),
		"zero sigma":     bad(func(q *KLTParams) { q.Sigma[2] = 0 }),
		"nan offset":     bad(func(q *KLTParams) { q.Offset[1] = float32(math.NaN()) }),
		"9 bits":         bad(func(q *KLTParams) { q.Bits[0] = 9 }),
		"short bits":     bad(func(q *KLTParams) { q.Bits = q.Bits[1:] }),
	} {
		if _, err := NewKLT(q); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := DesignKLT(cov, mean, 16, 8*16+1, 1); err == nil {
		t.Error("more bits than 8 per component: no error")
	}
	asym := slices.Clone(cov)
	asym[1] += 1
	if _, err := DesignKLT(asym, mean, 16, 40, 1); err == nil {
		t.Error("asymmetric covariance: no error")
	}
	k, err := NewKLT(p)
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, 16)
	x[3] = float32(math.Inf(1))
	if err := k.Encode(make([]byte, k.Bytes()), x); err == nil {
		t.Error("infinite input: no error")
	}
	if err := k.Decode(make([]float32, 16), make([]byte, k.Bytes()-1)); err == nil {
		t.Error("short code: no error")
	}
	// the zero scale byte decodes to the mean
	dec := make([]float32, 16)
	if err := k.Decode(dec, make([]byte, k.Bytes())); err != nil {
		t.Fatal(err)
	}
	for i, v := range dec {
		if math.Abs(float64(v)-mean[i]) > 1e-5 {
			t.Fatalf("zero code decodes to %v, want the mean %v", dec, mean)
		}
	}
}

// weightedErr returns the mean (x − x̃)ᵀ·W·(x − x̃) of q over xs.
func weightedErr(t *testing.T, q Quantizer, xs []float32, w []float64) float64 {
	t.Helper()
	d := q.Dim()
	code := make([]byte, q.Bytes())
	dec := make([]float32, d)
	e := make([]float64, d)
	var sum float64
	n := len(xs) / d
	for v := range n {
		x := xs[v*d : (v+1)*d]
		if err := q.Encode(code, x); err != nil {
			t.Fatal(err)
		}
		if err := q.Decode(dec, code); err != nil {
			t.Fatal(err)
		}
		for i := range e {
			e[i] = float64(x[i]) - float64(dec[i])
		}
		for i := range d {
			for j := range d {
				sum += e[i] * w[i*d+j] * e[j]
			}
		}
	}
	return sum / float64(n)
}

// TestWeightedKLT: with queries whose second moment W = E[q·qᵀ] shares
// the keys' eigenvectors (as after RoPE, where both are nearly diagonal
// in the rotary pairs) but weighs them independently of the keys'
// variances (e^U(−4,2)), the weighted design codes Gaussian keys with an
// error E[(qᵀ·Δk)²] = E[ΔkᵀWΔk] within 0.65–1.1 of its prediction
// Σᵢ (tᵢᵀWtᵢ)·σᵢ²·D(bᵢ) (tᵢ the transform's rows: the components' errors
// are uncorrelated; the upper bound as in TestKLTDistortion; measured
// 0.74–0.88 since the scale byte is fitted to each vector's weighted error,
// fitScale, which pays most where a few heavy weights leave few
// components to average the scale's misfit over), and under 0.85x
// the unweighted design's (measured 0.49–0.81x), which spends its bits on
// directions the queries barely read (a weight left unused fails here). A weight of nil
// is DesignKLT; bad weights are errors.
func TestWeightedKLT(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	for _, c := range []struct {
		d   int
		bpc float64
	}{{64, 3.5}, {64, 2.5}, {128, 3.5}, {64, 2}, {64, 3}, {64, 4.5}, {64, 6}} {
		d := c.d
		cov, mean := correlated(r, d, -3, 1)
		var es mat.EigenSym
		if !es.Factorize(mat.NewSymDense(d, slices.Clone(cov)), true) {
			t.Fatal("eigen")
		}
		var u mat.Dense
		es.VectorsTo(&u)
		w := make([]float64, d*d)
		for k := range d {
			wk := math.Exp(-4 + 6*r.Float64())
			for i := range d {
				for j := range d {
					w[i*d+j] += wk * u.At(i, k) * u.At(j, k)
				}
			}
		}
		for i := range d { // exact symmetry
			for j := range i {
				w[i*d+j] = w[j*d+i]
			}
		}
		bits := 8 * (KLTBytes(d, c.bpc) - 1)
		p, err := DesignWeightedKLT(cov, w, mean, d, bits, 7)
		if err != nil {
			t.Fatal(err)
		}
		weighted, err := NewKLT(p)
		if err != nil {
			t.Fatal(err)
		}
		var pred float64
		for i, b := range weighted.bits {
			row := weighted.t[i*d : (i+1)*d]
			var wi float64
			for a := range d {
				for b := range d {
					wi += float64(row[a]) * w[a*d+b] * float64(row[b])
				}
			}
			dist := 1.0
			if b > 0 {
				cb, _ := LloydMaxGaussian(int(b), 1)
				dist = cb.MSE
			}
			pred += wi * float64(weighted.sigma[i]*weighted.sigma[i]) * dist
		}
		xs := drawGaussian(r, cov, mean, 3000)
		got := weightedErr(t, weighted, xs, w)
		plain := weightedErr(t, kltFor(t, cov, mean, d, c.bpc), xs, w)
		t.Logf("d %d at %g bits: weighted error %.4g (predicted %.4g), unweighted design %.4g", d, c.bpc, got, pred, plain)
		if got > 1.1*pred || got < 0.65*pred {
			t.Errorf("d %d at %g bits: weighted error %g, predicted %g", d, c.bpc, got, pred)
		}
		if got > 0.85*plain {
			t.Errorf("d %d at %g bits: weighted design's error %g, the unweighted one's %g: want under 0.85x", d, c.bpc, got, plain)
		}
		unw, err := DesignWeightedKLT(cov, nil, mean, d, bits, 7)
		if err != nil {
			t.Fatal(err)
		}
		if ref, _ := DesignKLT(cov, mean, d, bits, 7); !slices.Equal(unw.Transform, ref.Transform) || !slices.Equal(unw.Bits, ref.Bits) {
			t.Errorf("d %d: a nil weight designs another KLT than DesignKLT", d)
		}
	}
	cov, mean := correlated(r, 8, -1, 0)
	neg := make([]float64, 64)
	neg[0] = -1
	nan := make([]float64, 64)
	nan[9] = math.NaN()
	for name, w := range map[string][]float64{"short": make([]float64, 63), "zero": make([]float64, 64), "negative": neg, "NaN": nan} {
		if _, err := DesignWeightedKLT(cov, w, mean, 8, 20, 1); err == nil {
			t.Errorf("%s weight: no error", name)
		}
	}
}
