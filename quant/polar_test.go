package quant

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/turbomem/turbomem/half"
)

func TestPolarLayout(t *testing.T) {
	tests := []struct {
		d     int
		bits  []int
		name  string
		bytes int
	}{
		// 8 blocks × (8·4 + 4·2 + 2·2 + 1·2 = 46 angle bits + 16) = 496
		// bits: 3.875 bits per coordinate (docs/ALGORITHMS.md §5).
		{128, nil, "polar/4222", 62},
		{16, []int{4, 2, 2, 2}, "polar/4222", 2 + 6},         // 46 bits → 6 bytes
		{32, []int{3, 2}, "polar/32", 16 + 8},                // 16·3 + 8·2 = 64 bits
		{24, []int{3, 3, 2}, "polar/332", 6 + 8},             // 36 + 18 + 6 = 60 bits
		{64, []int{8}, "polar/8", 64 + 32},                   // 32 pairs of 8 bits
		{256, []int{4, 3, 2, 2, 2}, "polar/43222", 16 + 102}, // 8·(64+24+8+4+2) = 816 bits
	}
	for _, tt := range tests {
		p, err := NewPolar(tt.d, tt.bits, Options{Seed: 1})
		if err != nil {
			t.Fatalf("d=%d %v: %v", tt.d, tt.bits, err)
		}
		if p.Name() != tt.name || p.Bytes() != tt.bytes || p.Dim() != tt.d {
			t.Errorf("d=%d %v: name %q bytes %d dim %d, want %q %d %d", tt.d, tt.bits, p.Name(), p.Bytes(), p.Dim(), tt.name, tt.bytes, tt.d)
		}
	}
	p, _ := NewPolar(128, nil, Options{})
	if got := BitsPerCoord(p); got != 3.875 {
		t.Errorf("polar/4222 at d=128: %g bits per coordinate, want 3.875", got)
	}
}

func TestPolarErrors(t *testing.T) {
	for _, tt := range []struct {
		d    int
		bits []int
	}{
		{100, nil},            // not a multiple of 16
		{8, nil},              // smaller than one block
		{16, []int{}},         // no levels
		{16, []int{4, 0}},     // 0 bits
		{16, []int{9}},        // more than 8 bits
		{512, make([]int, 9)}, // 9 levels
		{0, []int{2}},         // empty
	} {
		if _, err := NewPolar(tt.d, tt.bits, Options{}); err == nil {
			t.Errorf("NewPolar(%d, %v): no error", tt.d, tt.bits)
		}
	}
	p, err := NewPolar(32, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	code := make([]byte, p.Bytes())
	if err := p.Encode(code, make([]float32, 31)); err == nil {
		t.Error("short input: no error")
	}
	if err := p.Encode(code[1:], make([]float32, 32)); err == nil {
		t.Error("short code: no error")
	}
	if err := p.EncodeBatch(make([]byte, 3*p.Bytes()), make([]float32, 2*32)); err == nil {
		t.Error("batch size mismatch: no error")
	}
	x := make([]float32, 32)
	x[5] = float32(math.Inf(1))
	if err := p.Encode(code, x); err == nil {
		t.Error("Inf input: no error")
	}
	x[5] = 1e5 // block radius beyond fp16
	if err := p.Encode(code, x); err == nil {
		t.Error("radius beyond fp16: no error")
	}
	if err := p.Decode(make([]float32, 32), code[:len(code)-1]); err == nil {
		t.Error("short code: no error")
	}
	if err := p.Decode(make([]float32, 33), code); err == nil {
		t.Error("long output: no error")
	}
	if _, err := p.Prepare(make([]float32, 16)); err == nil {
		t.Error("short query: no error")
	}
	for _, bad := range []uint16{0x7c00, 0xfc00, 0x7e00, 0xbc00} { // +Inf, −Inf, NaN, −1
		clear(code)
		binary16(code[2:], bad) // second block's radius
		err := p.Decode(make([]float32, 32), code)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("radius %#04x: error %v, want ErrCorrupt", bad, err)
		}
	}
}

func binary16(b []byte, v uint16) { b[0], b[1] = byte(v), byte(v>>8) }

// polarRef is an independent float64 PolarQuant of one rotated block:
// the recursive polar transform, nearest-centroid rounding by brute
// force over each level's centroids (circular distance at level 1), and
// the reconstruction with math.Cos/Sin. It returns the reconstruction
// and whether some angle lies within tieTol of a cell boundary, where
// float32 and float64 rounding may legitimately pick different cells.
func polarRef(y []float64, books []*Codebook) (rec []float64, ambiguous bool) {
	const tieTol = 1e-6
	var quant func(v []float64) (r float64, out func(r float64) []float64)
	quant = func(v []float64) (float64, func(float64) []float64) {
		level := 0
		for 2<<level < len(v) {
			level++
		}
		var psi, r float64
		var sub1, sub2 func(float64) []float64
		if level == 0 {
			psi = math.Atan2(v[1], v[0])
			if psi < 0 {
				psi += 2 * math.Pi
			}
			r = math.Hypot(v[0], v[1])
		} else {
			var r1, r2 float64
			r1, sub1 = quant(v[:len(v)/2])
			r2, sub2 = quant(v[len(v)/2:])
			psi = math.Atan2(r2, r1)
			r = math.Hypot(r1, r2)
		}
		cb := books[level]
		best, bestDist, second := 0, math.Inf(1), math.Inf(1)
		for k, c := range cb.Centroids {
			dist := math.Abs(psi - float64(c))
			if level == 0 {
				dist = math.Min(dist, 2*math.Pi-dist)
			}
			if dist < bestDist {
				best, second, bestDist = k, bestDist, dist
			} else if dist < second {
				second = dist
			}
		}
		// Equidistant from two centroids (up to tieTol): on a boundary.
		if second-bestDist < 2*tieTol {
			ambiguous = true
		}
		c := float64(cb.Centroids[best])
		return r, func(r float64) []float64 {
			if level == 0 {
				return []float64{r * math.Cos(c), r * math.Sin(c)}
			}
			return append(sub1(r*math.Cos(c)), sub2(r*math.Sin(c))...)
		}
	}
	r, out := quant(y)
	return out(float64(half.Round16(float32(r)))), ambiguous
}

// TestPolarMatchesReference compares Decode(Encode(x)) with polarRef on
// random vectors of mixed scale, for configurations whose levels are and
// are not byte-aligned in the stream.
func TestPolarMatchesReference(t *testing.T) {
	for _, tt := range []struct {
		d    int
		bits []int
		rot  RotationKind
	}{
		{128, nil, RotateHadamard},
		{64, []int{4, 2, 2, 2}, RotateHaar},
		{24, []int{3, 3, 2}, RotateHadamard},
		{32, []int{5, 3}, RotateHadamard},
		{16, []int{1, 1, 1, 1}, RotateHaar},
		{32, []int{2, 5}, RotateHadamard}, // level 2 by binary search
	} {
		p, err := NewPolar(tt.d, tt.bits, Options{Seed: 3, Rotation: tt.rot})
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(4, uint64(tt.d)))
		const n = 300
		xs := randomVectors(r, n, tt.d, 1)
		for i := range n { // scales from 1e-3 to 1e3
			s := float32(math.Pow(10, 6*r.Float64()-3))
			for j := range tt.d {
				xs[i*tt.d+j] *= s
			}
		}
		codes := make([]byte, n*p.Bytes())
		if err := p.EncodeBatch(codes, xs); err != nil {
			t.Fatal(err)
		}
		block := 1 << len(p.bits)
		y := make([]float32, tt.d)
		dec := make([]float32, tt.d)
		want := make([]float32, tt.d)
		skipped := 0
		for i := range n {
			x := xs[i*tt.d : (i+1)*tt.d]
			p.rot.Apply(y, x)
			ref := make([]float64, 0, tt.d)
			amb := false
			for b := 0; b < tt.d; b += block {
				yb := make([]float64, block)
				for j := range yb {
					yb[j] = float64(y[b+j])
				}
				rec, a := polarRef(yb, p.books)
				ref = append(ref, rec...)
				amb = amb || a
			}
			if amb {
				skipped++
				continue
			}
			for j, v := range ref {
				y[j] = float32(v)
			}
			p.rot.Invert(want, y)
			if err := p.Decode(dec, codes[i*p.Bytes():(i+1)*p.Bytes()]); err != nil {
				t.Fatal(err)
			}
			// float32 trig tables and products: a few ulps per level of
			// the block radius, which is at most ‖x‖.
			tol := 1e-6 * norm2(x)
			for j := range dec {
				if math.Abs(float64(dec[j]-want[j])) > tol {
					t.Fatalf("%s d=%d vector %d coordinate %d: decoded %g, reference %g", p.Name(), tt.d, i, j, dec[j], want[j])
				}
			}
		}
		// A tie needs an angle within 1e-6 of a boundary: about
		// 1e-6·(cells/range) per angle, well under 1% of vectors.
		if skipped > n/100 {
			t.Errorf("%s d=%d: %d of %d vectors skipped as ties", p.Name(), tt.d, skipped, n)
		}
	}
}

// simpson integrates f over [a, b] with the composite Simpson rule on m
// (even) intervals: error O(h⁴), far below the tolerances used here for
// the smooth integrands of these tests.
func simpson(f func(float64) float64, a, b float64, m int) float64 {
	h := (b - a) / float64(m)
	s := f(a) + f(b)
	for i := 1; i < m; i++ {
		w := 2.0
		if i%2 == 1 {
			w = 4
		}
		s += w * f(a+float64(i)*h)
	}
	return s * h / 3
}

// lloydRef solves Lloyd–Max from scratch for a density on [0, π/2] given
// its cumulative mass and first moment, and returns the centroids and
// the design MSE (from the second moment, by Simpson).
func lloydRef(bits int, f, mass, moment func(float64) float64) ([]float64, float64) {
	n := 1 << bits
	lo, hi := 0.0, math.Pi/2
	c := make([]float64, n)
	for i := range c { // start from equal cells
		c[i] = lo + (float64(i)+0.5)*(hi-lo)/float64(n)
	}
	t := make([]float64, n+1)
	t[0], t[n] = lo, hi
	for iter := 0; iter < 20000; iter++ {
		for i := 1; i < n; i++ {
			t[i] = (c[i-1] + c[i]) / 2
		}
		var delta float64
		for i := range n {
			nc := (moment(t[i+1]) - moment(t[i])) / (mass(t[i+1]) - mass(t[i]))
			delta = math.Max(delta, math.Abs(nc-c[i]))
			c[i] = nc
		}
		if delta < 1e-13 {
			break
		}
	}
	var mse float64
	total := mass(hi) - mass(lo)
	for i := range n {
		ci := c[i]
		mse += simpson(func(x float64) float64 { return (x - ci) * (x - ci) * f(x) }, t[i], t[i+1], 2000)
	}
	return c, mse / total
}

// TestPolarCodebooks checks every level's codebook against an
// independent solution: level 1 is the uniform quantizer on [0, 2π)
// exactly; level 2 (density sin 2ψ, CDF sin²ψ, first moment
// sin(2ψ)/4 − ψ·cos(2ψ)/2, both closed forms) and levels 3, 4 (densities
// sin³ and sin⁷ of 2ψ, moments by Simpson's rule) are solved by Lloyd's
// iteration here, not with the package's tabulated moments.
func TestPolarCodebooks(t *testing.T) {
	p, err := NewPolar(128, []int{4, 2, 3, 2}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	books := p.Codebooks()
	for k, c := range books[0].Centroids {
		if want := (float64(k) + 0.5) * math.Pi / 8; math.Abs(float64(c)-want) > 1e-6 {
			t.Errorf("level 1 centroid %d = %g, want %g", k, c, want)
		}
	}
	if want := math.Pow(math.Pi/8, 2) / 12; math.Abs(books[0].MSE-want) > 1e-12 {
		t.Errorf("level 1 MSE = %g, want Δ²/12 = %g", books[0].MSE, want)
	}
	numeric := func(e float64) (f, mass, moment func(float64) float64) {
		f = func(x float64) float64 { return math.Pow(math.Sin(2*x), e) }
		mass = func(x float64) float64 { return simpson(f, 0, x, 600) }
		moment = func(x float64) float64 {
			return simpson(func(u float64) float64 { return u * f(u) }, 0, x, 600)
		}
		return
	}
	f3, m3, mom3 := numeric(3)
	f7, m7, mom7 := numeric(7)
	for _, tt := range []struct {
		level, bits int
		f           func(float64) float64
		mass, mom   func(float64) float64
	}{
		{2, 2, func(x float64) float64 { return math.Sin(2 * x) },
			func(x float64) float64 { return math.Pow(math.Sin(x), 2) },
			func(x float64) float64 { return math.Sin(2*x)/4 - x*math.Cos(2*x)/2 }},
		{3, 3, f3, m3, mom3},
		{4, 2, f7, m7, mom7},
	} {
		want, wantMSE := lloydRef(tt.bits, tt.f, tt.mass, tt.mom)
		cb := books[tt.level-1]
		// The package integrates on 2^18 trapezoids (error ~1e-11) and
		// stores float32 centroids (half-ulp 5e-8 near 1): 1e-6 leaves
		// room for both and still catches any wrong density or exponent,
		// which moves centroids by ≥ 1e-2.
		for k, c := range cb.Centroids {
			if math.Abs(float64(c)-want[k]) > 1e-6 {
				t.Errorf("level %d centroid %d = %.8f, want %.8f", tt.level, k, c, want[k])
			}
		}
		if math.Abs(cb.MSE-wantMSE) > 1e-6*wantMSE+1e-12 {
			t.Errorf("level %d design MSE = %.9g, want %.9g", tt.level, cb.MSE, wantMSE)
		}
		// By symmetry about π/4 the centroids pair up: c_k + c_{n−1−k} = π/2.
		n := len(cb.Centroids)
		for k := range n / 2 {
			if s := float64(cb.Centroids[k] + cb.Centroids[n-1-k]); math.Abs(s-math.Pi/2) > 1e-6 {
				t.Errorf("level %d centroids %d, %d sum to %g, want π/2", tt.level, k, n-1-k, s)
			}
		}
	}
	t.Logf("level-2 2-bit centroids: %v", books[1].Centroids)
}

// polarExpectedMSE is E‖x − x̃‖² for a unit x uniform on the sphere,
// ignoring the fp16 rounding of radii. Within a block every angle of the
// polar tree and the radius are independent, and (induction over levels)
// E<u, ũ> = Π_ℓ E cos(ψ_ℓ − ψ̃_ℓ) for the block's unit direction u and its
// reconstruction ũ: at a node, <u, ũ> = cos ψ cos ψ̃·<u₁, ũ₁> +
// sin ψ sin ψ̃·<u₂, ũ₂> and both children have the same expectation. With
// ‖u‖ = ‖ũ‖ = 1 and Σ blocks E r² = 1 this gives 2·(1 − Π_ℓ E cos δ_ℓ).
// E cos δ is integrated here over each codebook's cells: exactly for the
// uniform level 1 (sin(Δ/2)/(Δ/2)), by Simpson's rule for the others.
func polarExpectedMSE(p *Polar) float64 {
	prod := 1.0
	for l, cb := range p.books {
		if l == 0 {
			h := math.Pi / float64(len(cb.Centroids))
			prod *= math.Sin(h) / h
			continue
		}
		e := float64(int(1)<<l - 1)
		f := func(x float64) float64 { return math.Pow(math.Sin(2*x), e) }
		var num, den float64
		for k, c := range cb.Centroids {
			lo, hi := 0.0, math.Pi/2
			if k > 0 {
				lo = float64(cb.Bounds[k-1])
			}
			if k < len(cb.Bounds) {
				hi = float64(cb.Bounds[k])
			}
			cc := float64(c)
			num += simpson(func(x float64) float64 { return math.Cos(x-cc) * f(x) }, lo, hi, 2000)
			den += simpson(f, lo, hi, 2000)
		}
		prod *= num / den
	}
	return 2 * (1 - prod)
}

func TestPolarDistortion(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 3000
	}
	for _, tt := range []struct {
		d    int
		bits []int
		rot  RotationKind
	}{
		{128, nil, RotateHadamard},
		{128, nil, RotateHaar},
		{64, []int{3, 2}, RotateHadamard},
	} {
		p, err := NewPolar(tt.d, tt.bits, Options{Seed: 11, Rotation: tt.rot})
		if err != nil {
			t.Fatal(err)
		}
		got, err := Measure(p, n, 17)
		if err != nil {
			t.Fatal(err)
		}
		want := polarExpectedMSE(p)
		// Measure draws vectors uniform on the sphere, so any fixed
		// rotation (Hadamard included) leaves them uniform and want is
		// exact. The squared error of one vector has a relative spread of
		// about 0.25 (an average over 8+ blocks of ~0.5–1); 4 standard
		// errors at n vectors is 1/√n; the floor covers short runs.
		tol := math.Max(4*0.25/math.Sqrt(float64(n)), 0.01)
		if rel := math.Abs(got.MSE-want) / want; rel > tol {
			t.Errorf("%s d=%d rot=%d: MSE %.5f, expected %.5f (off %.2f%%, tolerance %.2f%%)", p.Name(), tt.d, tt.rot, got.MSE, want, 100*rel, 100*tol)
		}
		t.Logf("%s d=%d rot=%d: MSE %.5f (expected %.5f), %.4g bits, %.2f× Shannon bound, IP distortion·d %.4f, bias %.4f±%.4f",
			p.Name(), tt.d, tt.rot, got.MSE, want, got.Bits, got.BoundRatio, got.IPDistortionD, got.Bias, got.BiasSE)
		if tt.bits == nil {
			// Between the Shannon bound at 3.875 bits and TurboMSE at
			// 3 bits (+16/d), the rate PolarQuant is compared with.
			if lo, hi := math.Pow(4, -3.875), refMSE[128][2]; got.MSE <= lo || got.MSE >= hi {
				t.Errorf("%s: MSE %.5f outside (%.5f, %.5f)", p.Name(), got.MSE, lo, hi)
			}
		}
	}
}

func TestPolarScorerMatchesDecode(t *testing.T) {
	for _, tt := range []struct {
		d    int
		bits []int
		rot  RotationKind
	}{
		{128, nil, RotateHadamard},
		{128, nil, RotateHaar},
		{24, []int{3, 3, 2}, RotateHadamard},
		{64, []int{8, 1}, RotateHadamard},
		{128, []int{8, 2}, RotateHadamard}, // level-1/2 table too big: plain path
		{2, []int{4}, RotateHadamard},
	} {
		p, err := NewPolar(tt.d, tt.bits, Options{Seed: 5, Rotation: tt.rot})
		if err != nil {
			t.Fatal(err)
		}
		checkScorer(t, p, 50, 3)
	}
}

func TestPolarDeterministic(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	xs := randomVectors(r, 4, 64, 1)
	var prev []byte
	for range 2 {
		p, err := NewPolar(64, nil, Options{Seed: 42})
		if err != nil {
			t.Fatal(err)
		}
		batch := make([]byte, 4*p.Bytes())
		if err := p.EncodeBatch(batch, xs); err != nil {
			t.Fatal(err)
		}
		for i := range 4 {
			one := make([]byte, p.Bytes())
			if err := p.Encode(one, xs[i*64:(i+1)*64]); err != nil {
				t.Fatal(err)
			}
			if string(one) != string(batch[i*p.Bytes():(i+1)*p.Bytes()]) {
				t.Fatalf("vector %d: Encode and EncodeBatch differ", i)
			}
		}
		if prev != nil && string(prev) != string(batch) {
			t.Fatal("same seed, different codes")
		}
		prev = batch
	}
}

func BenchmarkPolar(b *testing.B) {
	const d, n = 128, 4096
	r := rand.New(rand.NewPCG(1, 1))
	xs := randomVectors(r, n, d, 1/math.Sqrt(d))
	q := randomVectors(r, 1, d, 1)
	p, err := NewPolar(d, nil, Options{Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	benchQuantizer(b, p, xs, q)
}

// benchQuantizer times EncodeBatch and Score of qz on the vectors xs.
func benchQuantizer(b *testing.B, qz Quantizer, xs, q []float32) {
	n := len(xs) / qz.Dim()
	codes := make([]byte, n*qz.Bytes())
	b.Run(qz.Name()+"/encode", func(b *testing.B) {
		for b.Loop() {
			if err := qz.EncodeBatch(codes, xs); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/vec")
	})
	sc, err := qz.Prepare(q)
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]float32, n)
	b.Run(qz.Name()+"/score", func(b *testing.B) {
		b.SetBytes(int64(len(codes)))
		for b.Loop() {
			sc.Score(dst, codes)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/key")
	})
}
