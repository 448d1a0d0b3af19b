package quant

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestDotCodesMatchesGo compares the dispatching kernel (assembly where
// available) with the pure-Go twin on random codes, for every width, a
// range of dimensions, strides and offsets, and key counts that exercise
// the slack handling at the end of the buffer.
func TestDotCodesMatchesGo(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for b := 1; b <= 4; b++ {
		for _, d := range []int{32, 64, 96, 128, 256} {
			for _, extra := range []int{0, 1, 5} {
				for _, n := range []int{1, 2, 7, 64} {
					groupBytes := d / 8 * b
					off := extra
					stride := off + groupBytes + extra
					codes := make([]byte, n*stride)
					for i := range codes {
						codes[i] = byte(r.Uint32())
					}
					q := randomVectors(r, 1, d, 1)
					var table [16]float32
					for i := range table {
						table[i] = float32(r.NormFloat64())
					}
					got := make([]float32, n)
					want := make([]float32, n)
					dotCodes(got, q, &table, codes, stride, off, b, false)
					dotCodesGo(want, q, &table, codes, stride, off, b, false)
					for i := range got {
						// Summation order differs: a few ulps of Σ|terms|.
						var mag float64
						for _, v := range q {
							mag += math.Abs(float64(v)) * 3
						}
						if math.Abs(float64(got[i]-want[i])) > 1e-6*mag {
							t.Fatalf("b=%d d=%d stride=%d n=%d key %d: %g vs Go %g", b, d, stride, n, i, got[i], want[i])
						}
					}
				}
			}
		}
	}
}

func TestDotRowsMatchesGo(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, d := range []int{32, 128, 100} {
		keys := randomVectors(r, 9, d, 1)
		q := randomVectors(r, 1, d, 1)
		got := make([]float32, 9)
		want := make([]float32, 9)
		dotRows(got, q, keys)
		dotRowsGo(want, q, keys)
		for i := range got {
			if math.Abs(float64(got[i]-want[i])) > 1e-4 {
				t.Fatalf("d=%d key %d: %g vs %g", d, i, got[i], want[i])
			}
		}
	}
}

// scoreBench holds 64k keys at d = 128, the shape the speed
// target names.
const benchKeys = 1 << 16

func BenchmarkScore(b *testing.B) {
	const d = 128
	r := rand.New(rand.NewPCG(1, 1))
	xs := randomVectors(r, benchKeys, d, 1/math.Sqrt(d))
	q := randomVectors(r, 1, d, 1)
	dst := make([]float32, benchKeys)
	b.Run("f32", func(b *testing.B) {
		b.SetBytes(int64(benchKeys * d * 4))
		for b.Loop() {
			dotRows(dst, q, xs)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchKeys), "ns/key")
	})
	for bits := 1; bits <= 4; bits++ {
		tq, err := NewTurboMSE(d, bits, Options{Seed: 1})
		if err != nil {
			b.Fatal(err)
		}
		benchScorer(b, tq, xs, q)
	}
	s, err := NewTurboSplit(d, firstChannels(32), 4, 3, false, Options{Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	benchScorer(b, s, xs, q)
}

func benchScorer(b *testing.B, qz Quantizer, xs, q []float32) {
	n := len(xs) / qz.Dim()
	codes := make([]byte, n*qz.Bytes())
	if err := qz.EncodeBatch(codes, xs); err != nil {
		b.Fatal(err)
	}
	sc, err := qz.Prepare(q)
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]float32, n)
	b.Run(qz.Name(), func(b *testing.B) {
		b.SetBytes(int64(len(codes)))
		for b.Loop() {
			sc.Score(dst, codes)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/key")
	})
}

func BenchmarkEncode(b *testing.B) {
	const d, n = 128, 4096
	r := rand.New(rand.NewPCG(2, 2))
	xs := randomVectors(r, n, d, 1)
	for _, bits := range []int{2, 3, 4} {
		q, err := NewTurboMSE(d, bits, Options{Seed: 1})
		if err != nil {
			b.Fatal(err)
		}
		codes := make([]byte, n*q.Bytes())
		b.Run(fmt.Sprintf("%s/d=%d", q.Name(), d), func(b *testing.B) {
			b.SetBytes(int64(n * d * 4))
			for b.Loop() {
				if err := q.EncodeBatch(codes, xs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/vec")
		})
	}
}
