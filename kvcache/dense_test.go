package kvcache

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// naiveAttention is the textbook formula in float64, written without the
// cache's data layout: the independent reference for Attend.
func naiveAttention(s Shape, ks, vs [][]float32, q []float32, scale float64) []float64 {
	d, g := s.HeadDim, s.Group()
	out := make([]float64, s.QHeads*d)
	w := make([]float64, len(ks))
	for h := range s.QHeads {
		kh := h / g
		AttentionWeights(w, q[h*d:(h+1)*d], ks, kh, scale)
		for t := range ks {
			for i := range d {
				out[h*d+i] += w[t] * float64(vs[t][kh*d+i])
			}
		}
	}
	return out
}

// AttentionWeights writes to w[t] the softmax weight, in float64, of the
// query q (one head's) on the key of KV head kh in token row ks[t] (each
// row the KV heads' keys back to back), the scores scaled by scale:
// naiveAttention's weights, which the screening tests read too.
func AttentionWeights(w []float64, q []float32, ks [][]float32, kh int, scale float64) {
	d := len(q)
	for t := range w {
		var dot float64
		for i := range d {
			dot += float64(q[i]) * float64(ks[t][kh*d+i])
		}
		w[t] = dot * scale
	}
	softmax64(w)
}

func TestDenseAttendMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, s := range []Shape{{QHeads: 4, KVHeads: 4, HeadDim: 16}, {QHeads: 8, KVHeads: 2, HeadDim: 32}, {QHeads: 4, KVHeads: 1, HeadDim: 128}} {
		for _, mk := range []struct {
			name string
			new  func(Shape) (*Dense, error)
			tol  float64
		}{
			{"f32", NewF32, 1e-5},
			// fp16 storage: relative rounding 2^-11 on each element.
			{"f16", NewF16, 3e-3},
		} {
			c, err := mk.new(s)
			if err != nil {
				t.Fatal(err)
			}
			var ks, vs [][]float32
			w := s.KVHeads * s.HeadDim
			for n := 1; n <= 40; n++ {
				k := make([]float32, w)
				v := make([]float32, w)
				for i := range k {
					k[i] = float32(r.NormFloat64())
					v[i] = float32(r.NormFloat64())
				}
				if err := c.Append(k, v); err != nil {
					t.Fatal(err)
				}
				ks, vs = append(ks, k), append(vs, v)
				q := make([]float32, s.QHeads*s.HeadDim)
				for i := range q {
					q[i] = float32(r.NormFloat64())
				}
				scale := 1 / math.Sqrt(float64(s.HeadDim))
				got := make([]float32, len(q))
				c.Attend(got, q, float32(scale))
				want := naiveAttention(s, ks, vs, q, scale)
				for i := range got {
					if math.Abs(float64(got[i])-want[i]) > mk.tol*(1+math.Abs(want[i])) {
						t.Fatalf("%s %+v n=%d: out[%d] = %g, want %g", mk.name, s, n, i, got[i], want[i])
					}
				}
			}
			if want := 2 * 40 * w * map[string]int{"f32": 4, "f16": 2}[mk.name]; c.Bytes() != want || c.Len() != 40 {
				t.Errorf("%s: Bytes %d Len %d, want %d, 40", mk.name, c.Bytes(), c.Len(), want)
			}
		}
	}
}

func TestDenseErrors(t *testing.T) {
	for _, s := range []Shape{{QHeads: 0, KVHeads: 1, HeadDim: 8}, {QHeads: 3, KVHeads: 2, HeadDim: 8}, {QHeads: 4, KVHeads: 2, HeadDim: 0}} {
		if _, err := NewF32(s); err == nil {
			t.Errorf("shape %+v: no error", s)
		}
	}
	c, _ := NewF16(Shape{QHeads: 2, KVHeads: 1, HeadDim: 8})
	if err := c.Append(make([]float32, 7), make([]float32, 8)); err == nil {
		t.Error("short key: no error")
	}
}

func TestSoftmaxLargeScores(t *testing.T) {
	s := []float32{1000, 1000, -1000}
	softmax(s, 1)
	if math.Abs(float64(s[0])-0.5) > 1e-6 || s[2] > 1e-37 { // e^-2000 clamps to e^-87.3
		t.Errorf("softmax = %v", s)
	}
}

// TestExpNeg: expNeg against math.Exp over [−87.3, 0]: relative error
// within 4 float32 ulps (2.4e-7; Cephes quotes 2), and below it the
// clamped value e^−87.3; softmax (SIMD where there is one) against the
// Go twin and against float64, and ExpShifted's maximum, weights and sum
// against them.
func TestExpNeg(t *testing.T) {
	for i := range 200001 {
		x := -87.3 * float64(i) / 200000
		got := float64(expNeg(float32(x)))
		want := math.Exp(float64(float32(x)))
		if math.Abs(got-want) > 4.8e-7*want {
			t.Fatalf("expNeg(%g) = %g, want %g", x, got, want)
		}
	}
	if expNeg(-100) > 1.3e-38 || expNeg(0) != 1 {
		t.Errorf("expNeg(-100) = %g, expNeg(0) = %g", expNeg(-100), expNeg(0))
	}
	r := rand.New(rand.NewPCG(1, 1))
	for _, n := range []int{1, 7, 8, 9, 100, 1027} {
		s := make([]float32, n)
		for i := range s {
			s[i] = float32(r.NormFloat64() * 30)
		}
		a := append([]float32(nil), s...)
		b := append([]float32(nil), s...)
		e := append([]float32(nil), s...)
		softmax(a, 0.7)
		softmaxGo(b, 0.7)
		top, esum := ExpShifted(e, 0.7)
		m := math.Inf(-1)
		for _, v := range s {
			m = math.Max(m, 0.7*float64(v))
		}
		var sum float64
		for _, v := range s {
			sum += math.Exp(0.7*float64(v) - m)
		}
		// ExpShifted: the largest score and the weights before their
		// normalisation, and their sum
		if want := slices.Max(s); top != want {
			t.Fatalf("n=%d: ExpShifted's maximum %g, want %g", n, top, want)
		}
		if math.Abs(float64(esum)-sum) > 1e-6*(1+float64(n)/100)*sum {
			t.Fatalf("n=%d: ExpShifted's sum %g, want %g", n, esum, sum)
		}
		for i := range e {
			if math.Abs(float64(e[i]/esum-a[i])) > 1e-6*float64(a[i])+1e-37 {
				t.Fatalf("n=%d: ExpShifted's weight %d over the sum %g, softmax %g", n, i, e[i]/esum, a[i])
			}
		}
		for i := range s {
			want := math.Exp(0.7*float64(s[i])-m) / sum
			// float32 sums of n terms: 1e-6·(1 + n/100) relative; the
			// float32 argument x = scale·(s − m) carries |x|·2^-24 of
			// error into e^x.
			x := math.Abs(0.7*float64(s[i]) - m)
			tol := (1e-6*(1+float64(n)/100)+x*1.2e-7)*want + 1e-37
			if math.Abs(float64(a[i])-want) > tol || math.Abs(float64(b[i])-want) > tol {
				t.Fatalf("n=%d: softmax[%d] = %g (SIMD), %g (Go), want %g", n, i, a[i], b[i], want)
			}
		}
	}
}

// BenchmarkAttend times one decode step's attention of one layer (32 query
// heads, 8 KV heads of 128: a Llama-3-8B layer) at several context
// lengths, for every format (qjl: keys only, values f16), the default
// window included. Compare formats within one run.
func BenchmarkAttend(b *testing.B) {
	s := Shape{QHeads: 32, KVHeads: 8, HeadDim: 128}
	for _, kind := range append(FormatNames(), "tcq3.5>2~2.5") {
		for _, n := range []int{1024, 4096, 16384} {
			// The cache is made inside the sub-benchmark: -bench's filter
			// skips the others' (slow to encode) set-up.
			b.Run(fmt.Sprintf("%s/ctx=%d", kind, n), func(b *testing.B) {
				r := rand.New(rand.NewPCG(1, uint64(n)))
				c, err := withCov(b, specFor(b, kind, 0), s).NewCache(0, s)
				if err != nil {
					b.Fatal(err)
				}
				w := s.KVHeads * s.HeadDim
				k := make([]float32, w)
				v := make([]float32, w)
				for range n {
					for i := range k {
						k[i] = float32(r.NormFloat64())
						v[i] = float32(r.NormFloat64())
					}
					if err := c.Append(k, v); err != nil {
						b.Fatal(err)
					}
				}
				q := make([]float32, s.QHeads*s.HeadDim)
				for i := range q {
					q[i] = float32(r.NormFloat64())
				}
				out := make([]float32, len(q))
				b.SetBytes(int64(c.Bytes()))
				for b.Loop() {
					c.Attend(out, q, 0.088)
				}
			})
		}
	}
}
