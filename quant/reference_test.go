package quant

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"
)

// turboReference is testdata/turbo_reference.json.gz, written by
// tools/quantref/make_fixture.py: an independent NumPy implementation of
// TurboQuant_mse (its own Lloyd–Max solver, an explicit Sylvester Hadamard
// matrix, Haar rotations from a QR decomposition).
type turboReference struct {
	Codebooks []struct {
		D, Bits   int
		Centroids []float64
		MSE       float64 `json:"mse_per_coord"`
	}
	Cases []struct {
		D     int
		Signs []float64
		X     []float64
		Bits  []struct {
			Bits    int
			Idx     []int
			Scale   map[string]float64
			Decoded map[string][]float64
		}
	}
	Distortion []struct {
		D, Bits    int
		Correction string
		Mean       float64
		Stderr     float64
	}
}

func readTurboReference(t *testing.T) *turboReference {
	var ref turboReference
	readGzipJSON(t, "testdata/turbo_reference.json.gz", &ref)
	return &ref
}

// readGzipJSON decodes the gzipped JSON file at path into v.
func readGzipJSON(t *testing.T, path string, v any) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(z).Decode(v); err != nil {
		t.Fatal(err)
	}
}

var corrections = map[string]Correction{"none": CorrectNone, "norm": CorrectNorm, "proj": CorrectProjection}

// TestCodebooksMatchReference: our Lloyd–Max codebooks for the exact
// sphere-coordinate density equal the NumPy solver's. Both converge to
// the same fixed point; the reference's grid (step ≈ 1e-5/√d) and float32
// storage leave ~1e-6 of σ = 1/√d.
func TestCodebooksMatchReference(t *testing.T) {
	ref := readTurboReference(t)
	for _, cb := range ref.Codebooks {
		got, err := LloydMax(cb.Bits, cb.D)
		if err != nil {
			t.Fatal(err)
		}
		sigma := 1 / math.Sqrt(float64(cb.D))
		for i, want := range cb.Centroids {
			if d := math.Abs(float64(got.Centroids[i]) - want); d > 2e-5*sigma {
				t.Errorf("d=%d b=%d centroid %d = %.8f, reference %.8f", cb.D, cb.Bits, i, got.Centroids[i], want)
			}
		}
		if rel := math.Abs(got.MSE-cb.MSE) / cb.MSE; rel > 1e-4 {
			t.Errorf("d=%d b=%d MSE per coordinate %.6g, reference %.6g", cb.D, cb.Bits, got.MSE, cb.MSE)
		}
	}
}

// withSigns returns a TurboMSE whose rotation is H·D with the given signs
// (one round: d a power of two), so its codes can be compared value by
// value with the reference's.
func withSigns(t *testing.T, d, bits int, corr Correction, signs []float64) *TurboMSE {
	t.Helper()
	q, err := NewTurboMSE(d, bits, Options{Correction: corr})
	if err != nil {
		t.Fatal(err)
	}
	h, ok := q.rot.(*Hadamard)
	if !ok || len(h.signs) != 1 {
		t.Fatalf("d=%d: rotation %T with %d rounds, want one Hadamard round", d, q.rot, len(h.signs))
	}
	s := make([]float32, d)
	for i, v := range signs {
		s[i] = float32(v)
	}
	h.signs[0] = s
	h.scale[0] = h.normalised(s, nil)
	return q
}

// TestTurboMSEMatchesReference: for every bit width and correction mode,
// vectors of random norms (1e-2 to 1e2, some with outlier channels) give
// the reference's centroid indices, stored fp16 scale and decoded vector.
// Tolerances: the indices may differ where a rotated coordinate lies
// within float32 rounding of a cell boundary (allowed: 1 in 500); the
// scale is one fp16 rounding of a value computed in float32 by us and
// float64 by the reference (one fp16 ulp, 2^-10 relative); the decoded
// vector adds float32 rounding of the rotation (1e-5 relative) to that.
// Dropping or swapping the correction changes the scale by 0.3% (b = 4,
// norm) to 57% (b = 1, projection): far outside these.
func TestTurboMSEMatchesReference(t *testing.T) {
	ref := readTurboReference(t)
	for ci, c := range ref.Cases {
		x := make([]float32, c.D)
		for i, v := range c.X {
			x[i] = float32(v)
		}
		var norm float64
		for _, v := range c.X {
			norm += v * v
		}
		norm = math.Sqrt(norm)
		for _, row := range c.Bits {
			for name, corr := range corrections {
				q := withSigns(t, c.D, row.Bits, corr, c.Signs)
				code := make([]byte, q.Bytes())
				if err := q.Encode(code, x); err != nil {
					t.Fatal(err)
				}
				idx := make([]uint8, c.D)
				unpack(idx, code[2:], row.Bits)
				flips := 0
				for i, k := range idx {
					if int(k) != row.Idx[i] {
						flips++
					}
				}
				where := fmt.Sprintf("case %d d=%d b=%d %s", ci, c.D, row.Bits, name)
				if flips*500 > c.D*len(c.Bits) {
					t.Errorf("%s: %d of %d indices differ from the reference", where, flips, c.D)
				}
				scale, err := readScale(code)
				if err != nil {
					t.Fatal(err)
				}
				want := row.Scale[name]
				if math.Abs(float64(scale)-want) > want*math.Exp2(-10) {
					t.Errorf("%s: scale %.6g, reference %.6g (norm %.6g)", where, scale, want, norm)
				}
				if flips > 0 {
					continue
				}
				dec := make([]float32, c.D)
				if err := q.Decode(dec, code); err != nil {
					t.Fatal(err)
				}
				var diff float64
				for i, v := range row.Decoded[name] {
					diff = math.Max(diff, math.Abs(float64(dec[i])-v))
				}
				if diff > (math.Exp2(-10)+1e-5)*norm {
					t.Errorf("%s: decoded vector off by %.3g (norm %.3g)", where, diff, norm)
				}
			}
		}
	}
}

// TestTurboMSEDistortionRandomNorms: E‖x − x̃‖²/‖x‖² for Gaussian vectors
// whose norms span e^±3, per correction mode, against the reference's
// Monte Carlo value (Haar rotations, 20,000 vectors, standard error
// ≤ 0.15%). Our 4,000 vectors add a standard error of ≤ 0.7%: the
// tolerance is 4 combined standard errors. The rotation does not matter
// for isotropic inputs, so this tests the codebook, the scales and the
// fp16 storage over a wide range of norms.
func TestTurboMSEDistortionRandomNorms(t *testing.T) {
	ref := readTurboReference(t)
	const n = 4000
	for _, want := range ref.Distortion {
		corr := corrections[want.Correction]
		q, err := NewTurboMSE(want.D, want.Bits, Options{Seed: 11, Correction: corr})
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(uint64(want.Bits), uint64(corr)))
		xs := make([]float32, n*want.D)
		for i := range n {
			s := math.Exp(6*r.Float64() - 3)
			for j := range want.D {
				xs[i*want.D+j] = float32(r.NormFloat64() * s)
			}
		}
		errs := relativeErrors(t, q, xs)
		mean, se := meanStderr(errs)
		tol := 4 * math.Hypot(se, want.Stderr)
		if math.Abs(mean-want.Mean) > tol {
			t.Errorf("d=%d b=%d %s: relative MSE %.5f ± %.5f, reference %.5f ± %.5f", want.D, want.Bits, want.Correction, mean, se, want.Mean, want.Stderr)
		}
	}
}

// relativeErrors encodes and decodes each vector of xs and returns
// ‖x − x̃‖²/‖x‖² for each.
func relativeErrors(t *testing.T, q Quantizer, xs []float32) []float64 {
	errs, norms := squaredErrors(t, q, xs)
	for i := range errs {
		errs[i] /= norms[i]
	}
	return errs
}

// squaredErrors encodes and decodes each vector of xs and returns
// ‖x − x̃‖² and ‖x‖² for each.
func squaredErrors(t *testing.T, q Quantizer, xs []float32) (errs, norms []float64) {
	t.Helper()
	d := q.Dim()
	n := len(xs) / d
	codes := make([]byte, n*q.Bytes())
	if err := q.EncodeBatch(codes, xs); err != nil {
		t.Fatal(err)
	}
	dec := make([]float32, d)
	errs, norms = make([]float64, n), make([]float64, n)
	for i := range n {
		if err := q.Decode(dec, codes[i*q.Bytes():(i+1)*q.Bytes()]); err != nil {
			t.Fatal(err)
		}
		for j, v := range xs[i*d : (i+1)*d] {
			errs[i] += float64(v-dec[j]) * float64(v-dec[j])
			norms[i] += float64(v) * float64(v)
		}
	}
	return errs, norms
}

func meanStderr(v []float64) (mean, stderr float64) {
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	var ss float64
	for _, x := range v {
		ss += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(ss / float64(len(v)-1) / float64(len(v)))
}

// TestTurboMSEStructuredInputs: the random signs are what make the
// rotation work for every input. A vector equal to a column of the
// Hadamard matrix (a Walsh function: energy spread evenly, as real keys
// are after a fixed rotation) becomes a single spike under H alone, which
// a b-bit codebook for N(0, 1/d) coordinates cannot represent (error
// ≈ 1); under H·D with random signs it is as good as any other input. So
// the relative error of Walsh vectors with random norms must stay below
// the paper's bound for every input, (√3·π/2)·4^(−b) (ALGORITHMS.md §3),
// on average over the d Walsh functions, at every seed tried.
func TestTurboMSEStructuredInputs(t *testing.T) {
	const d = 128
	r := rand.New(rand.NewPCG(5, 6))
	for seed := uint64(1); seed <= 4; seed++ {
		for b := 1; b <= 4; b++ {
			q, err := NewTurboMSE(d, b, Options{Seed: seed, Correction: CorrectNorm})
			if err != nil {
				t.Fatal(err)
			}
			xs := make([]float32, d*d)
			for j := range d { // column j of the Sylvester Hadamard matrix
				s := float32(math.Exp(4*r.Float64() - 2))
				for i := range d {
					v := s
					if bitsOnesParity(i & j) {
						v = -s
					}
					xs[j*d+i] = v
				}
			}
			mean, _ := meanStderr(relativeErrors(t, q, xs))
			if bound := math.Sqrt(3) * math.Pi / 2 * math.Pow(4, -float64(b)); mean > bound {
				t.Errorf("seed %d b=%d: relative MSE of Walsh vectors %.4f > bound %.4f", seed, b, mean, bound)
			}
		}
	}
}

func bitsOnesParity(x int) bool {
	p := false
	for ; x != 0; x &= x - 1 {
		p = !p
	}
	return p
}

// TestRotationSeedsDiffer: different seeds give different rotations, and
// over seeds the rotation behaves as a random one should. For a fixed
// unit vector x and any coordinate j, a randomized Hadamard H·D and a
// Haar matrix both give E[(Πx)_j] = 0 and E[(Πx)_j²] = 1/d, and the
// Haar matrix also E[(Πx)_j⁴] = 3/(d(d+2)) (the sphere's fourth moment).
// x = e_1 is the hardest case for H·D: without random signs every seed
// would give (Πx)_j = ±1/√d, a mean √draws = 45 standard errors away from
// 0. Tolerances: 5 standard errors of each moment. (H·D·e_1 depends on
// one sign only, so "different" is checked on a dense vector g.)
func TestRotationSeedsDiffer(t *testing.T) {
	for _, kind := range []RotationKind{RotateHadamard, RotateHaar} {
		draws := 2000.0
		if kind == RotateHaar { // O(d³) a draw
			draws = 400
		}
		for _, d := range []int{64, 96, 128} {
			if kind == RotateHaar && d != 64 && testing.Short() {
				continue
			}
			x := make([]float32, d)
			x[0] = 1
			g := randomVectors(rand.New(rand.NewPCG(1, uint64(d))), 1, d, 1)
			y, gy, prev := make([]float32, d), make([]float32, d), make([]float32, d)
			var m1, m2, m4 [4]float64 // coordinates 0, 1, d/2, d-1
			coords := [4]int{0, 1, d / 2, d - 1}
			same := 0
			for seed := range uint64(draws) {
				rot, err := newRotation(d, Options{Seed: seed, Rotation: kind}, 1)
				if err != nil {
					t.Fatal(err)
				}
				rot.Apply(y, x)
				rot.Apply(gy, g)
				if seed > 0 && equal32(gy, prev) {
					same++
				}
				copy(prev, gy)
				for i, j := range coords {
					v := float64(y[j])
					m1[i] += v
					m2[i] += v * v
					m4[i] += v * v * v * v
				}
			}
			if same > 0 {
				t.Errorf("kind %d d=%d: %d of %.0f consecutive seeds gave the same rotation", kind, d, same, draws-1)
			}
			fd := float64(d)
			for i, j := range coords {
				mean, v2 := m1[i]/draws, m2[i]/draws
				if math.Abs(mean) > 5*math.Sqrt(1/fd/draws) {
					t.Errorf("kind %d d=%d: E[(Πe1)_%d] = %.4f, want 0", kind, d, j, mean)
				}
				// The variance of y² is at most 2/d² (Gaussian-like
				// coordinates) and 0 for the flat ±1/√d of one
				// Hadamard round.
				if math.Abs(v2-1/fd) > 5*math.Sqrt(2/draws)/fd {
					t.Errorf("kind %d d=%d: E[(Πe1)_%d²]·d = %.4f, want 1", kind, d, j, v2*fd)
				}
				if kind == RotateHaar {
					want4 := 3 / (fd * (fd + 2))
					// Var(y⁴) ≤ E[y⁸] = 105/(d(d+2)(d+4)(d+6)) ≈ 105/d⁴.
					if math.Abs(m4[i]/draws-want4) > 5*math.Sqrt(105/draws)/(fd*fd) {
						t.Errorf("kind %d d=%d: E[(Πe1)_%d⁴] = %.3g, want %.3g", kind, d, j, m4[i]/draws, want4)
					}
				}
			}
		}
	}
}

func equal32(a, b []float32) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
