package quant

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// bruteTCQ returns the least weighted squared error of any path of q's
// trellis over x: every one of the 2^n path bit sequences (tail-biting:
// the state before step t is the bits t−1 … t−ν read cyclically; else
// zeros before the start), each step at the nearest level of its subset.
// An independent reference for the Viterbi search: no trellis states, no
// add–compare–select.
func bruteTCQ(q *TCQ, x, w []float64) float64 {
	n, nu := len(x), q.tr.Memory()
	best := math.Inf(1)
	for p := range 1 << n {
		var c float64
		for t := range n {
			s := 0
			for k := 1; k <= nu; k++ {
				if q.TailBiting {
					s |= (p >> (((t-k)%n + n) % n) & 1) << (k - 1)
				} else if t-k >= 0 {
					s |= (p >> (t - k) & 1) << (k - 1)
				}
			}
			sub := q.subsAt(t)[q.tr.Subset(s, p>>t&1)]
			e := math.Inf(1)
			for _, l := range sub {
				e = math.Min(e, (x[t]-l)*(x[t]-l))
			}
			if w != nil {
				e *= w[t]
			}
			c += e
		}
		best = math.Min(best, c)
	}
	return best
}

// TestTCQViterbi: on short sequences the encoder's path is the
// least-error path of all (bruteTCQ), with tail-biting and from state
// 0, weighted and not, for 4 and 8 states (every start state tried) and
// mixed widths; its reported error is that of its own decoding, its code
// is b bits a component and unpacks to the same path.
func TestTCQViterbi(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, states := range []int{4, 8, 32} {
		tr, err := NewTrellis(states)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range []int{1, 2, 3} {
			book, err := GaussianTCQBook(tr, b)
			if err != nil {
				t.Fatal(err)
			}
			for _, tail := range []bool{true, false} {
				for _, mixed := range []bool{false, true} {
					for n := 1; n <= 10; n++ {
						q, err := NewTCQ(tr, b, book)
						if err != nil {
							t.Fatal(err)
						}
						q.TailBiting = tail
						if mixed {
							steps := make([]*TCQ, n)
							for i := range steps {
								bb := 1 + r.IntN(3)
								bk, _ := GaussianTCQBook(tr, bb)
								steps[i], _ = NewTCQ(tr, bb, bk)
							}
							if err := q.SetSteps(steps); err != nil {
								t.Fatal(err)
							}
						}
						x, w := make([]float64, n), make([]float64, n)
						for i := range x {
							x[i], w[i] = 1.5*r.NormFloat64(), 0.1+r.Float64()
						}
						name := fmt.Sprintf("%d states, %d bits, tail-biting %v, mixed %v, n %d", states, b, tail, mixed, n)
						for _, ww := range [][]float64{nil, w} {
							v, idx := make([]int, n), make([]int, n)
							got := q.Encode(x, ww, v, idx)
							want := bruteTCQ(q, x, ww)
							// Both sum the same float64 terms, in the same order up
							// to the path: a relative 1e-12.
							if math.Abs(got-want) > 1e-12*(1+want) {
								t.Fatalf("%s: Viterbi error %g, best path %g", name, got, want)
							}
							dec := make([]float64, n)
							q.Decode(dec, v, idx)
							var e float64
							for i := range x {
								wi := 1.0
								if ww != nil {
									wi = ww[i]
								}
								e += wi * (x[i] - dec[i]) * (x[i] - dec[i])
							}
							if math.Abs(e-got) > 1e-12*(1+got) {
								t.Fatalf("%s: decoded error %g, encoder said %g", name, e, got)
							}
							if mixed {
								continue // Pack is for one width
							}
							code := q.Pack(v, idx)
							if len(code) != (n*b+7)/8 {
								t.Fatalf("%s: %d code bytes", name, len(code))
							}
							v2, idx2 := make([]int, n), make([]int, n)
							if err := q.Unpack(code, v2, idx2); err != nil {
								t.Fatal(err)
							}
							for i := range v {
								if v[i] != v2[i] || idx[i] != idx2[i] {
									t.Fatalf("%s: component %d unpacks to (%d, %d), packed (%d, %d)", name, i, v2[i], idx2[i], v[i], idx[i])
								}
							}
						}
					}
				}
			}
		}
	}
}

// TestTrellisLabels checks Ungerboeck's rules on every trellis: the two
// branches that leave a state are in D0 ∪ D2 or both in D1 ∪ D3, and so
// are the two that enter one (the union codebook's parity halves), and the
// two leaving branches differ in subset.
func TestTrellisLabels(t *testing.T) {
	for _, states := range []int{4, 8, 16, 32, 64, 128, 256} {
		tr, err := NewTrellis(states)
		if err != nil {
			t.Fatal(err)
		}
		for s := range states {
			a, b := tr.Subset(s, 0), tr.Subset(s, 1)
			if a%2 != b%2 || a == b {
				t.Fatalf("%d states: state %d leaves by subsets %d and %d", states, s, a, b)
			}
			p0, p1 := s>>1, s>>1|states/2
			if tr.Next(p0, s&1) != s || tr.Next(p1, s&1) != s {
				t.Fatalf("%d states: state %d not entered from %d and %d", states, s, p0, p1)
			}
			if tr.Subset(p0, s&1)%2 != tr.Subset(p1, s&1)%2 {
				t.Fatalf("%d states: state %d entered by subsets of both halves", states, s)
			}
		}
	}
	if _, err := NewTrellis(6); err == nil {
		t.Fatal("NewTrellis(6): no error")
	}
}

// TestTCQGaussianGain: on i.i.d. unit Gaussian sequences of 64 (tail-biting,
// about a klt vector's coded components) 8-state TCQ with GaussianTCQBook
// has less error than the b-bit Lloyd–Max quantizer by at least the
// granular gain 8-state TCQ is known for, less a margin for low rate:
// about 1.0–1.1 dB at high rate (Marcellin and Fischer 1990; Eyuboğlu and
// Forney's granular gain of the 8-state code, 1.1 dB of the 1.53 dB
// possible), smaller at 1 bit where the granular region is not all that
// matters. Required: 0.3 dB at 1 bit, 0.8 dB at 2 and 3 bits; and the
// error stays above the distortion-rate bound 2^(−2b). (Measured: 0.81,
// 1.38, 1.56 dB; standard error about 0.02 dB on 64·400 samples.)
func TestTCQGaussianGain(t *testing.T) {
	tr, _ := NewTrellis(8)
	r := rand.New(rand.NewPCG(11, 12))
	for _, c := range []struct {
		b       int
		minGain float64 // dB
	}{{1, 0.3}, {2, 0.8}, {3, 0.8}} {
		book, err := GaussianTCQBook(tr, c.b)
		if err != nil {
			t.Fatal(err)
		}
		q, _ := NewTCQ(tr, c.b, book)
		q.TailBiting = true
		lm, _ := LloydMaxGaussian(c.b, 1)
		var e, cnt float64
		x, v, idx := make([]float64, 64), make([]int, 64), make([]int, 64)
		for range 400 {
			for i := range x {
				x[i] = r.NormFloat64()
			}
			e += q.Encode(x, nil, v, idx)
			cnt += float64(len(x))
		}
		mse := e / cnt
		gain := 10 * math.Log10(lm.MSE/mse)
		t.Logf("%d bits: TCQ %.4f (%.2f dB), Lloyd–Max %.4f: gain %.2f dB", c.b, mse, -10*math.Log10(mse), lm.MSE, gain)
		if gain < c.minGain {
			t.Errorf("%d bits: gain %.2f dB over Lloyd–Max, want ≥ %.2f", c.b, gain, c.minGain)
		}
		if bound := math.Exp2(-2 * float64(c.b)); mse < bound {
			t.Errorf("%d bits: MSE %g below the distortion-rate bound %g", c.b, mse, bound)
		}
	}
}

// TestTCQErrors: what NewTCQ, Unpack and GaussianTCQBook refuse.
func TestTCQErrors(t *testing.T) {
	tr, _ := NewTrellis(8)
	if _, err := NewTCQ(tr, 2, []float64{1, 2, 3}); err == nil {
		t.Error("NewTCQ: 3 levels at 2 bits: no error")
	}
	if _, err := NewTCQ(tr, 1, []float64{1, 0, 2, 3}); err == nil {
		t.Error("NewTCQ: levels not ascending: no error")
	}
	if _, err := NewTCQ(Trellis{}, 1, []float64{0, 1, 2, 3}); err == nil {
		t.Error("NewTCQ: zero trellis: no error")
	}
	if _, err := GaussianTCQBook(tr, TCQMaxBits+1); err == nil {
		t.Error("GaussianTCQBook: too many bits: no error")
	}
	q, _ := NewTCQ(tr, 2, []float64{0, 1, 2, 3, 4, 5, 6, 7})
	if err := q.Unpack(make([]byte, 2), make([]int, 9), make([]int, 9)); err == nil {
		t.Error("Unpack: short code: no error")
	}
}

// BenchmarkTCQEncode is the Viterbi pass of a klt vector's coded
// components: 125 of 2 bits, 8 states, tail-biting (every start).
func BenchmarkTCQEncode(b *testing.B) {
	tr, _ := NewTrellis(8)
	book, _ := GaussianTCQBook(tr, 2)
	q, _ := NewTCQ(tr, 2, book)
	q.TailBiting = true
	r := rand.New(rand.NewPCG(1, 2))
	x, v, idx := make([]float64, 125), make([]int, 125), make([]int, 125)
	for i := range x {
		x[i] = r.NormFloat64()
	}
	for b.Loop() {
		q.Encode(x, nil, v, idx)
	}
}

// tcqKLTFor designs the 8-state trellis-coded KLT of N(mean, cov) at bpc
// bits per coordinate all in, the error weighted by weight (nil: ‖·‖²).
func tcqKLTFor(t testing.TB, cov, mean, weight []float64, d int, bpc float64) *KLT {
	t.Helper()
	p, err := DesignWeightedKLT(cov, weight, mean, d, 8*(KLTBytes(d, bpc)-1), 7)
	if err != nil {
		t.Fatal(err)
	}
	p.Trellis = 8
	k, err := NewKLT(p)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestTCQKLTError: the trellis-coded KLT, at the scalar KLT's bits and
// design, has less error on vectors of the calibration's law, white
// (every component at the same bits) and correlated (eigenvalues over
// two orders of magnitude: widths from 0 to 6 bits along one path),
// unweighted and weighted. The bound is from the known gain, not a
// measurement: 8-state TCQ's granular gain is about 1.0–1.1 dB over
// Lloyd–Max at high rate, 0.8 dB or more at 2–3 bits on unit-Gaussian
// sequences (TestTCQGaussianGain), less where components have 0 or 1
// bit (no gain on an uncoded one, 0.3–0.8 dB at 1 bit): at least
// 0.8 dB on the white source at 3 bits, and at least 0.5 dB (ratio
// ≤ 0.89) on the correlated ones. The code is the same size and the
// name says the trellis.
func TestTCQKLTError(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	const d = 64
	white := make([]float64, d*d)
	for i := range d {
		white[i*d+i] = 1
	}
	corr, mean := correlated(r, d, -3, 1.6)
	qw := make([]float64, d*d) // a query second moment, diagonal in a random basis
	qc, _ := correlated(r, d, -2, 2)
	copy(qw, qc)
	for _, c := range []struct {
		name        string
		cov, weight []float64
		bpc, maxRat float64
	}{
		{"white/3", white, nil, 3 + 8.0/d, math.Pow(10, -0.08)},
		{"correlated/2.5", corr, nil, 2.5, math.Pow(10, -0.05)},
		{"correlated/3.5", corr, nil, 3.5, math.Pow(10, -0.05)},
		{"correlated/3.5/weighted", corr, qw, 3.5, math.Pow(10, -0.05)},
	} {
		m := mean
		p, err := DesignWeightedKLT(c.cov, c.weight, m, d, 8*(KLTBytes(d, c.bpc)-1), 7)
		if err != nil {
			t.Fatal(err)
		}
		sk, err := NewKLT(p)
		if err != nil {
			t.Fatal(err)
		}
		p.Trellis = 8
		tk, err := NewKLT(p)
		if err != nil {
			t.Fatal(err)
		}
		if tk.Bytes() != sk.Bytes() || tk.Name() == sk.Name() {
			t.Fatalf("%s: %s %d bytes, scalar %s %d", c.name, tk.Name(), tk.Bytes(), sk.Name(), sk.Bytes())
		}
		xs := drawGaussian(r, c.cov, m, 2000)
		var es, et float64
		if c.weight == nil {
			es, et = kltMSE(t, sk, xs), kltMSE(t, tk, xs)
		} else {
			es, et = weightedErr(t, sk, xs, c.weight), weightedErr(t, tk, xs, c.weight)
		}
		t.Logf("%s: error ratio %.3f (%.2f dB)", c.name, et/es, -10*math.Log10(et/es))
		if et > c.maxRat*es {
			t.Errorf("%s: TCQ error %g, scalar %g: ratio %.3f, want ≤ %.3f", c.name, et, es, et/es, c.maxRat)
		}
	}
}
