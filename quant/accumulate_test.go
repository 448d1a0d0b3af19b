package quant

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestAccumulatorMatchesDecode: for every kind of quantizer, the weighted
// sum from codes equals Σ wᵢ·Decode(codeᵢ), for several heads at once.
func TestAccumulatorMatchesDecode(t *testing.T) {
	const d, n = 128, 40
	split, err := NewTurboSplit(d, firstChannels(32), 4, 3, false, Options{Seed: 2, Correction: CorrectNorm})
	if err != nil {
		t.Fatal(err)
	}
	turbo, _ := NewTurboMSE(d, 3, Options{Seed: 3, Correction: CorrectNorm})
	haar, _ := NewTurboMSE(d, 2, Options{Seed: 4, Rotation: RotateHaar})
	q8, _ := NewQ8_0(d)
	polar, _ := NewPolar(d, nil, Options{Seed: 5})
	prod, err := NewTurboSplit(d, firstChannels(32), 4, 3, true, Options{Seed: 6})
	if err != nil {
		t.Fatal(err)
	}
	q4, _ := NewQ4_0(d)
	kivi, _ := NewKIVI(d, 2, 32)
	qjl, _ := NewQJL(d, 2*d, 7)
	turbo5, _ := NewTurboMSE(d, 5, Options{Seed: 8})
	q4h, _ := NewQ4_0H(d, false)
	r := rand.New(rand.NewPCG(1, 2))
	cov, mean := correlated(r, d, -3, 0)
	klt := kltFor(t, cov, mean, d, 3.5)
	for _, q := range []Quantizer{split, turbo, haar, q8, polar, prod, q4, kivi, qjl, turbo5, q4h, klt} {
		xs := randomVectors(r, n, d, 0.3)
		codes := make([]byte, n*q.Bytes())
		if err := q.EncodeBatch(codes, xs); err != nil {
			t.Fatal(err)
		}
		// five heads: four through the four-head kernel where there is
		// one, the fifth on its own
		ws := make([][]float32, 5)
		for h := range ws {
			ws[h] = make([]float32, n)
			for i := range ws[h] {
				ws[h][i] = float32(r.Float64())
			}
		}
		acc := NewAccumulator(q)
		accs := make([][]float32, len(ws))
		for h := range accs {
			accs[h] = make([]float32, acc.AccLen())
		}
		acc.Accumulate(accs, ws, codes)
		dec := make([]float32, d)
		for h := range ws {
			want := make([]float64, d)
			for i := range n {
				if err := q.Decode(dec, codes[i*q.Bytes():(i+1)*q.Bytes()]); err != nil {
					t.Fatal(err)
				}
				for j := range d {
					want[j] += float64(ws[h][i]) * float64(dec[j])
				}
			}
			got := make([]float32, d)
			acc.Finish(got, accs[h])
			for j := range d {
				// float32 sums of n terms and a rotation: 1e-4 relative to
				// the sum of magnitudes.
				if math.Abs(float64(got[j])-want[j]) > 1e-4*(1+math.Abs(want[j]))*float64(n)/10 {
					t.Fatalf("%s head %d coord %d: %g, want %g", q.Name(), h, j, got[j], want[j])
				}
			}
		}
	}
}

// TestExpandCodesKernel: the SIMD expansion equals its pure-Go twin
// exactly (both compute scale·table[idx] in float32).
func TestExpandCodesKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, b := range []int{1, 2, 3, 4} {
		for _, d := range []int{32, 96, 128} {
			tq, err := NewTurboMSE(d, b, Options{Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			const n = 37
			xs := randomVectors(r, n, d, 1)
			stride := tq.Bytes() + 3 // codes inside a wider record, as in a split
			codes := make([]byte, n*stride)
			for i := range n {
				if err := tq.Encode(codes[i*stride+3:i*stride+3+tq.Bytes()], xs[i*d:(i+1)*d]); err != nil {
					t.Fatal(err)
				}
			}
			rowLen := d + 5
			want := make([]float32, n*rowLen)
			got := make([]float32, n*rowLen)
			expandCodesGo(want, rowLen, 2, d, &tq.table, codes, n, stride, 3, b)
			expandCodesFast(got, rowLen, 2, d, &tq.table, codes, n, stride, 3, b)
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("b=%d d=%d: element %d = %g, want %g", b, d, i, got[i], want[i])
				}
			}
		}
	}
}

// TestAccCodes4Kernel: the four-head value kernel against its pure-Go
// twin, for every index width, one and two groups at several group
// offsets, codes inside wider records, and sums that start non-zero.
// Tolerance 1e-6 of the sum of |terms| (fused multiply-adds round once).
func TestAccCodes4Kernel(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for _, b := range []int{1, 2, 3, 4} {
		const d, n, pre = 96, 45, 3
		tq, err := NewTurboMSE(d, b, Options{Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		xs := randomVectors(r, n, d, 1)
		stride := tq.Bytes() + pre + 1
		codes := make([]byte, n*stride)
		for i := range n {
			if err := tq.Encode(codes[i*stride+pre:i*stride+pre+tq.Bytes()], xs[i*d:(i+1)*d]); err != nil {
				t.Fatal(err)
			}
		}
		rows := make([]float32, n*d) // scale·table[idx], the terms' second factors
		expandCodesGo(rows, d, 0, d, &tq.table, codes, n, stride, pre, b)
		var w [4][]float32
		for j := range w {
			w[j] = make([]float32, n)
			for i := range w[j] {
				w[j][i] = float32(r.NormFloat64())
			}
		}
		for _, groups := range []int{1, 2} {
			for g := 0; g+groups <= d/16; g += 2 {
				var got, want [4][]float32
				for j := range got {
					got[j] = make([]float32, 16*groups)
					for k := range got[j] {
						got[j][k] = float32(k)
					}
					want[j] = append([]float32(nil), got[j]...)
				}
				accCodes4(&got, &w, &tq.table, codes, n, stride, pre, g, b)
				accCodes4Go(&want, &w, &tq.table, codes, n, stride, pre, g, b)
				for j := range got {
					for k := range got[j] {
						abs := float64(k)
						for i := range n {
							abs += math.Abs(float64(w[j][i]) * float64(rows[i*d+16*g+k]))
						}
						if math.Abs(float64(got[j][k]-want[j][k])) > 1e-6*abs {
							t.Fatalf("b=%d groups=%d g=%d head %d value %d: %g, twin %g", b, groups, g, j, k, got[j][k], want[j][k])
						}
					}
				}
			}
		}
	}
}

// TestGroupScorerMatchesScorer: PrepareGroup's scores equal each query's
// own Scorer (the same estimate computed in another order: float32
// rounding, 1e-4 of the score scale).
func TestGroupScorerMatchesScorer(t *testing.T) {
	const d, n = 128, 70
	split, _ := NewTurboSplit(d, firstChannels(32), 4, 3, false, Options{Seed: 2, Correction: CorrectNorm})
	prod, _ := NewTurboSplit(d, firstChannels(32), 4, 3, true, Options{Seed: 6})
	turbo, _ := NewTurboMSE(d, 3, Options{Seed: 3})
	polar, _ := NewPolar(d, nil, Options{Seed: 5})
	q8, _ := NewQ8_0(d)
	q4, _ := NewQ4_0(d)
	kivi, _ := NewKIVI(d, 2, 32)
	qjl, _ := NewQJL(d, 2*d, 7)
	q4h, _ := NewQ4_0H(d, true)
	r := rand.New(rand.NewPCG(8, 9))
	cov, mean := correlated(r, d, -3, 0)
	klt := kltFor(t, cov, mean, d, 3.5)
	for _, q := range []Quantizer{split, prod, turbo, polar, q8, q4, kivi, qjl, q4h, klt} {
		xs := randomVectors(r, n, d, 1)
		codes := make([]byte, n*q.Bytes())
		if err := q.EncodeBatch(codes, xs); err != nil {
			t.Fatal(err)
		}
		for _, nq := range []int{3, 4, 6, 8} { // below, at and above the four-query kernel
			qs := make([][]float32, nq)
			got := make([][]float32, nq)
			for j := range qs {
				qs[j] = randomVectors(r, 1, d, 1)
				got[j] = make([]float32, n)
			}
			g, err := PrepareGroup(q, qs)
			if err != nil {
				t.Fatal(err)
			}
			g.Score(got, codes)
			for j, qq := range qs {
				sc, err := q.Prepare(qq)
				if err != nil {
					t.Fatal(err)
				}
				want := make([]float32, n)
				sc.Score(want, codes)
				for i := range want {
					if math.Abs(float64(got[j][i]-want[i])) > 1e-4 {
						t.Fatalf("%s query %d of %d, code %d: %g, want %g", q.Name(), j, nq, i, got[j][i], want[i])
					}
				}
			}
		}
	}
}

// TestDotCodesGroup4: the four-query kernel against its Go twin, and the
// twin against four single-query scores (float32 sums in another order:
// 1e-5 relative to the score scale).
func TestDotCodesGroup4(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	for _, b := range []int{1, 2, 3, 4} {
		for _, d := range []int{16, 32, 96, 128} {
			tq, err := NewTurboMSE(d, b, Options{Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			const n = 41
			xs := randomVectors(r, n, d, 1)
			stride := tq.Bytes() + 3
			codes := make([]byte, n*stride)
			for i := range n {
				if err := tq.Encode(codes[i*stride+3:i*stride+3+tq.Bytes()], xs[i*d:(i+1)*d]); err != nil {
					t.Fatal(err)
				}
			}
			var four [4][]float32
			for j := range four {
				four[j] = randomVectors(r, 1, d, 1)
			}
			qi := make([]float32, 4*d)
			interleave4(qi, four, d)
			for _, add := range []bool{false, true} {
				want := make([]float32, 4*n)
				got := make([]float32, 4*n)
				for i := range want {
					want[i] = float32(i)
					got[i] = float32(i)
				}
				dotCodesGroup4Go(want, qi, d, &tq.table, codes, n, stride, 3, b, add)
				dotCodesGroup4(got, qi, d, &tq.table, codes, n, stride, 3, b, add)
				single := make([]float32, n)
				for j := range 4 {
					dotCodesGo(single, four[j], &tq.table, codes, stride, 3, b, false)
					for i := range n {
						base := float32(0)
						if add {
							base = float32(4*i + j)
						}
						if math.Abs(float64(want[4*i+j]-base-single[i])) > 1e-5*(1+math.Abs(float64(single[i]))) {
							t.Fatalf("b=%d d=%d: twin %g, single-query %g", b, d, want[4*i+j]-base, single[i])
						}
					}
				}
				for i := range got {
					if math.Abs(float64(got[i]-want[i])) > 1e-5*(1+math.Abs(float64(want[i]))) {
						t.Fatalf("b=%d d=%d add=%v: element %d = %g, want %g", b, d, add, i, got[i], want[i])
					}
				}
			}
		}
	}
}

// BenchmarkAccumulate times the value sum of 4 heads over 4096 codes, per
// quantizer (the attention value path of one KV head).
func BenchmarkAccumulate(b *testing.B) {
	const d, n = 128, 4096
	split, _ := NewTurboSplit(d, firstChannels(32), 4, 3, false, Options{Seed: 2, Correction: CorrectNorm})
	polar, _ := NewPolar(d, nil, Options{Seed: 5})
	q8, _ := NewQ8_0(d)
	kivi, _ := NewKIVI(d, 2, 32)
	r := rand.New(rand.NewPCG(1, 2))
	for _, q := range []Quantizer{split, polar, q8, kivi} {
		xs := randomVectors(r, n, d, 1)
		codes := make([]byte, n*q.Bytes())
		if err := q.EncodeBatch(codes, xs); err != nil {
			b.Fatal(err)
		}
		ws := make([][]float32, 4)
		accs := make([][]float32, 4)
		acc := NewAccumulator(q)
		for h := range ws {
			ws[h] = make([]float32, n)
			for i := range ws[h] {
				ws[h][i] = float32(r.Float64())
			}
			accs[h] = make([]float32, acc.AccLen())
		}
		b.Run(q.Name(), func(b *testing.B) {
			for b.Loop() {
				acc.Accumulate(accs, ws, codes)
			}
		})
	}
}
