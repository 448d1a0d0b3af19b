package tensor

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkMatMulDecodeK times MatMul of a K-quant matrix against n = 1,
// 4 and 16 activation vectors (a batched decode step's products: the
// large suite model's 1024×1024 attention and 1536×1024 feed-forward
// shapes) on one and two threads, and reports ns per (row·vector): a
// product that reads each weight row once for all n vectors costs less
// per vector the more there are; one that redoes each row's work for
// every vector costs the same at every n. Q8_0, which has the multi-row
// kernel, is the reference.
func BenchmarkMatMulDecodeK(b *testing.B) {
	for _, ty := range []DType{Q8_0, Q4_K, Q6_K} {
		for _, shape := range [][2]int{{1024, 1024}, {1536, 1024}} {
			rows, cols := shape[0], shape[1]
			w := benchWeights(b, ty, rows, cols)
			for _, threads := range []int{1, 2} {
				pool := NewPool(threads)
				b.Cleanup(pool.Close)
				for _, n := range []int{1, 4, 16} {
					name := fmt.Sprintf("%s/%dx%d/threads=%d/n=%d", ty, rows, cols, threads, n)
					b.Run(name, func(b *testing.B) {
						x := randomVector(rand.New(rand.NewPCG(2, 2)), n*cols)
						out := make([]float32, n*rows)
						opts := Options{Pool: pool, Scratch: &Scratch{}}
						for b.Loop() {
							if err := MatMul(out, w, ty, rows, cols, x, n, opts); err != nil {
								b.Fatal(err)
							}
						}
						b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rows*n), "ns/row·vec")
					})
				}
			}
		}
	}
}
