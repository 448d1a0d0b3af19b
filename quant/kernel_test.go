package quant

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/turbomem/turbomem/tensor"
)

// TestDotCodesMatchesGo compares every kernel generation this CPU runs
// with the pure-Go twin on random codes (random scales included), for
// every width, a range of dimensions, strides and offsets, set and add
// modes, and key counts that exercise the slack handling at the end of
// the buffer.
func TestDotCodesMatchesGo(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, level := range levels() {
		for b := 1; b <= 4; b++ {
			for _, d := range []int{32, 64, 96, 128, 256} {
				for _, extra := range []int{0, 1, 5, 9} {
					for _, n := range []int{1, 2, 7, 64} {
						for _, add := range []bool{false, true} {
							off := extra
							stride := off + 2 + d/8*b + extra
							codes := make([]byte, n*stride)
							for i := range codes {
								codes[i] = byte(r.Uint32())
							}
							for i := range n { // finite fp16 scales in [0.5, 2)
								codes[i*stride+off] = byte(r.Uint32())
								codes[i*stride+off+1] = 0x38 + byte(r.IntN(8))
							}
							q := randomVectors(r, 1, d, 1)
							var table [16]float32
							for i := range table {
								table[i] = float32(r.NormFloat64())
							}
							got := randomVectors(r, 1, n, 1)
							want := append([]float32(nil), got...)
							dotCodesAt(level, got, q, &table, codes, stride, off, b, add)
							dotCodesGo(want, q, &table, codes, stride, off, b, add)
							var mag float64 // bound on Σ|terms| × max scale
							for _, v := range q {
								mag += math.Abs(float64(v)) * 3 * 2
							}
							for i := range got {
								// Summation order differs: a few ulps of Σ|terms|.
								if math.Abs(float64(got[i]-want[i])) > 1e-6*mag {
									t.Fatalf("%v b=%d d=%d stride=%d n=%d add=%v key %d: %g vs Go %g", level, b, d, stride, n, add, i, got[i], want[i])
								}
							}
						}
					}
				}
			}
		}
	}
}

func TestDotRowsMatchesGo(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, level := range levels() {
		for _, d := range []int{32, 96, 128, 100} {
			keys := randomVectors(r, 9, d, 1)
			q := randomVectors(r, 1, d, 1)
			got := make([]float32, 9)
			want := make([]float32, 9)
			dotRowsAt(level, got, q, keys)
			dotRowsGo(want, q, keys)
			for i := range got {
				if math.Abs(float64(got[i]-want[i])) > 1e-4 {
					t.Fatalf("%v d=%d key %d: %g vs %g", level, d, i, got[i], want[i])
				}
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
	for _, level := range levels() {
		// Below AVX-512 the fp32 scan is tensor's row kernel, AVX2 unless
		// built with -tags purego: time it once, under its own name.
		f32Name := level.String()
		if level != levelAVX512 {
			f32Name = tensor.SIMDLevel()
		}
		if level == levelAVX512 || level.String() == f32Name {
			b.Run(f32Name+"/f32", func(b *testing.B) {
				b.SetBytes(int64(benchKeys * d * 4))
				for b.Loop() {
					dotRowsAt(level, dst, q, xs)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchKeys), "ns/key")
			})
		}
		for bits := 1; bits <= 4; bits++ {
			tq, err := NewTurboMSE(d, bits, Options{Seed: 1})
			if err != nil {
				b.Fatal(err)
			}
			benchTurbo(b, level, tq, xs, q)
		}
	}
	s, err := NewTurboSplit(d, firstChannels(32), 4, 3, false, Options{Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	benchScorer(b, s, xs, q)
	cov, mean := correlated(r, d, -4, 1)
	benchScorer(b, kltFor(b, cov, mean, d, 3.5), xs, q)
}

// benchTurbo times one kernel generation on TurboMSE codes.
func benchTurbo(b *testing.B, level kernelLevel, tq *TurboMSE, xs, q []float32) {
	n := len(xs) / tq.Dim()
	codes := make([]byte, n*tq.Bytes())
	if err := tq.EncodeBatch(codes, xs); err != nil {
		b.Fatal(err)
	}
	sc, err := tq.Prepare(q)
	if err != nil {
		b.Fatal(err)
	}
	qr := sc.(*turboScorer).q
	dst := make([]float32, n)
	b.Run(fmt.Sprintf("%v/%s", level, tq.Name()), func(b *testing.B) {
		b.SetBytes(int64(len(codes)))
		for b.Loop() {
			dotCodesAt(level, dst, qr, &tq.table, codes, tq.Bytes(), 0, tq.bits, false)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/key")
	})
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
