package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestDotQ8_0Rows: the multi-row product (the kernel in use, assembly
// where the CPU has AVX-512 VNNI, and its pure-Go twin) against a float64
// sum over the dequantized weights and the activations' own quants times
// scales, an independent reference: within 2e-5 of Σ|w·x| (same integer
// block sums, float scaling in another order), for 1, 2, 5 and 16 vectors,
// rows with an even and an odd number of blocks, and an output stride
// wider than the rows.
func TestDotQ8_0Rows(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, cols := range []int{64, 512, 800} {
		for _, n := range []int{1, 2, 5, multiRows} {
			t.Run(fmt.Sprintf("cols=%d/n=%d", cols, n), func(t *testing.T) {
				const rows, stride = 7, 9
				w, acts, _ := gemmSetup(t, r, Q8_0, rows, cols, n)
				rowBytes := len(w) / rows
				var p, twinPack multiPack
				p.set(actQ8_0, acts, cols)
				twinPack.reset(actQ8_0, acts, cols)
				for v, a := range acts {
					twinPack.setVectorGo(v, a)
				}
				if !slices.Equal(p.b, twinPack.b) {
					t.Fatal("packed activations differ from the Go twin's")
				}
				got := make([]float32, (n-1)*stride+rows)
				twin := make([]float32, len(got))
				dotQ8_0Rows(w, rowBytes, rows, &p, got, stride)
				dotQ8_0RowsGo(w, rowBytes, rows, &p, twin, stride)
				p.addOdd(w, rowBytes, rows, twin, stride)
				deq := make([]float32, cols)
				for i := range rows {
					if err := Dequantize(Q8_0, deq, w[i*rowBytes:(i+1)*rowBytes]); err != nil {
						t.Fatal(err)
					}
					for v, a := range acts {
						want, mag := quantDotRef(deq, a, qk0)
						k := v*stride + i
						if d := math.Abs(float64(got[k]) - want); d > 2e-5*mag {
							t.Errorf("row %d vector %d: kernel %g, reference %g", i, v, got[k], want)
						}
						if d := math.Abs(float64(twin[k]) - want); d > 2e-5*mag {
							t.Errorf("row %d vector %d: twin %g, reference %g", i, v, twin[k], want)
						}
					}
				}
			})
		}
	}
}

// quantDotRef returns the float64 dot product of the weights deq with
// activation a's quants times their scales (one per block elements),
// and the sum of its terms' magnitudes Σ|w·x|, the scale of the float
// errors.
func quantDotRef(deq []float32, a *activation, block int) (want, mag float64) {
	for j, wv := range deq {
		x := float64(a.qs[j]) * float64(a.d[j/block])
		want += float64(wv) * x
		mag += math.Abs(float64(wv) * x)
	}
	return want, mag
}

// BenchmarkDotQ8_0Rows times the multi-row product of 64 weight rows of
// 512 columns against 1, 4 and 16 vectors (the kernel in use and its
// pure-Go twin), beside the row kernels MatMul used for so few vectors,
// in multiply-adds per second.
func BenchmarkDotQ8_0Rows(b *testing.B) {
	const rows, cols = 64, 512
	r := rand.New(rand.NewPCG(13, 14))
	for _, n := range []int{1, 4, multiRows} {
		w, acts, _ := gemmSetup(b, r, Q8_0, rows, cols, n)
		rowBytes := len(w) / rows
		var p multiPack
		p.set(actQ8_0, acts, cols)
		out := make([]float32, n*rows)
		report := func(b *testing.B) {
			b.ReportMetric(float64(rows*cols*n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GMAC/s")
		}
		b.Run(fmt.Sprintf("n=%d/kernel", n), func(b *testing.B) {
			for b.Loop() {
				dotQ8_0Rows(w, rowBytes, rows, &p, out, rows)
			}
			report(b)
		})
		b.Run(fmt.Sprintf("n=%d/go", n), func(b *testing.B) {
			for b.Loop() {
				dotQ8_0RowsGo(w, rowBytes, rows, &p, out, rows)
			}
			report(b)
		})
		b.Run(fmt.Sprintf("n=%d/rowkernels", n), func(b *testing.B) {
			var four [4]float32
			for b.Loop() {
				for i := range rows {
					row := w[i*rowBytes : (i+1)*rowBytes]
					v := 0
					for ; v+4 <= n; v += 4 {
						dotRowQ8_0x4(row, (*[4]*activation)(acts[v:v+4]), &four)
					}
					for ; v < n; v++ {
						out[v*rows+i] = dotRowQ8_0(row, acts[v])
					}
				}
			}
			report(b)
		})
	}
}

// TestDotQ8_0RowsBounds: dotQ8_0Rows panics on rows shorter than the
// pack's pairs of blocks, or a pack of more vectors than the kernel has
// accumulators, where the assembly would read past the weights or drop
// vectors silently (as TestDotKRowsBounds).
func TestDotQ8_0RowsBounds(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	for _, c := range []struct {
		name             string
		rows, cols, n    int
		rowBytes, wBytes int
	}{
		{"short rows", 1, 4 * qk0, 1, 2 * q8_0Bytes, 2 * q8_0Bytes},
		{"too many vectors", 2, 2 * qk0, multiRows + 1, 2 * q8_0Bytes, 4 * q8_0Bytes},
	} {
		t.Run(c.name, func(t *testing.T) {
			w, acts, _ := gemmSetup(t, r, Q8_0, 2, c.cols, c.n)
			var p multiPack
			p.set(actQ8_0, acts, c.cols)
			out := make([]float32, c.n*c.rows)
			defer func() {
				if recover() == nil {
					t.Errorf("rows of %d bytes against %d steps of %d vectors: no panic", c.rowBytes, p.steps, p.n)
				}
			}()
			dotQ8_0Rows(w[:c.wBytes], c.rowBytes, c.rows, &p, out, c.rows)
		})
	}
}
