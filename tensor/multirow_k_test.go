package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
)

// multiKTypes are the K-quants with a multi-row kernel, beside their
// pure-Go twins and one-row dot products.
var multiKTypes = []struct {
	ty           DType
	kernel, twin func([]byte, int, int, *multiPack, []float32, int)
	dot          func([]byte, *activation) float32
}{
	{Q4_K, dotQ4_KRows, dotQ4_KRowsGo, dotRowQ4_KGo},
	{Q5_K, dotQ5_KRows, dotQ5_KRowsGo, dotRowQ5_KGo},
	{Q6_K, dotQ6_KRows, dotQ6_KRowsGo, dotRowQ6_KGo},
}

// TestDotKRows: the K-quant multi-row products (the kernel in use,
// assembly where the CPU has AVX-512 VNNI, and its pure-Go twin) against
// the pure-Go one-row dot of each row and vector, for 1 to 16 vectors,
// rows of one, three and five blocks, an output stride wider than the
// rows, and against a float64 sum over the dequantized weights and the
// activations' own quants times scales. Both compute the same exact
// integer sums and differ only in float rounding: per block the dot
// rounds dw·dx·Σ once, the kernels round each of 16 lane terms and add
// the lanes, so each result is within 2e-6 of Σ|w·x| of the other
// (about 16 roundings of 2⁻²⁴ each, relative to the largest terms) and
// within 2e-5 of the reference, the bound of TestDotQ8_0Rows.
func TestDotKRows(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for _, k := range multiKTypes {
		for _, cols := range []int{256, 768, 1280} {
			for n := 1; n <= multiRows; n++ {
				t.Run(fmt.Sprintf("%s/cols=%d/n=%d", k.ty, cols, n), func(t *testing.T) {
					const rows, stride = 7, 9
					w, acts, _ := gemmSetup(t, r, k.ty, rows, cols, n)
					rowBytes := len(w) / rows
					var p multiPack
					p.set(actQ8_K, acts, cols)
					got := make([]float32, (n-1)*stride+rows)
					twin := make([]float32, len(got))
					k.kernel(w, rowBytes, rows, &p, got, stride)
					k.twin(w, rowBytes, rows, &p, twin, stride)
					deq := make([]float32, cols)
					for i := range rows {
						row := w[i*rowBytes : (i+1)*rowBytes]
						if err := Dequantize(k.ty, deq, row); err != nil {
							t.Fatal(err)
						}
						for v, a := range acts {
							want, mag := quantDotRef(deq, a, QK_K)
							one := float64(k.dot(row, a))
							for _, c := range []struct {
								name string
								v    float32
							}{{"kernel", got[v*stride+i]}, {"twin", twin[v*stride+i]}} {
								if d := math.Abs(float64(c.v) - one); d > 2e-6*mag {
									t.Errorf("row %d vector %d: %s %g, one-row dot %g (%.2g of Σ|w·x|)", i, v, c.name, c.v, one, d/mag)
								}
								if d := math.Abs(float64(c.v) - want); d > 2e-5*mag {
									t.Errorf("row %d vector %d: %s %g, reference %g", i, v, c.name, c.v, want)
								}
							}
						}
					}
				})
			}
		}
	}
}

// TestMatMulKQuants: MatMul of a K-quant matrix, odd row counts, 1 to
// 100 vectors (one pass, several, a prefill's many), on one goroutine
// and on three with tasks cut small, gives each vector what the pure-Go
// one-row dot gives, within TestDotKRows's 2e-6 of Σ|w·x|; and where the
// multi-row kernels serve, each vector's result is the same to the bit
// as its product alone (every vector has its own accumulator, whatever
// its pass). Where AMX serves (Q4_K and Q6_K, 16 vectors or more), the
// AMX product's own bound instead.
func TestMatMulKQuants(t *testing.T) {
	const rows, cols = 37, 768
	r := rand.New(rand.NewPCG(25, 26))
	for _, k := range multiKTypes {
		w, err := Encode(k.ty, randomVector(r, rows*cols))
		if err != nil {
			t.Fatal(err)
		}
		rowBytes := len(w) / rows
		deq := make([]float32, rows*cols)
		if err := Dequantize(k.ty, deq, w); err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{1, 2, 7, multiRows, multiRows + 1, 40, 100} {
			x := randomVector(r, n*cols)
			alone := make([]float32, n*rows)
			for v := range n {
				if err := MatMul(alone[v*rows:(v+1)*rows], w, k.ty, rows, cols, x[v*cols:(v+1)*cols], 1, Options{}); err != nil {
					t.Fatal(err)
				}
			}
			for _, threads := range []int{1, 3} {
				t.Run(fmt.Sprintf("%s/n=%d/threads=%d", k.ty, n, threads), func(t *testing.T) {
					pool := NewPool(threads)
					defer pool.Close()
					out := make([]float32, n*rows)
					ps := []Product{{Out: out, W: w, Type: k.ty, Rows: rows}}
					if err := matMulShared(ps, cols, x, n, Options{Pool: pool, Scratch: &Scratch{}}, 1); err != nil {
						t.Fatal(err)
					}
					// Where the CPU has AMX, MatMul gives Q4_K and Q6_K
					// products of 16 vectors or more to the AMX product
					// (amxServes), on Q8_0 activations (Q4_K) or Q8_K's
					// (Q6_K): its results are checked as TestAMXMatMul
					// checks them, against the float64 sum over those
					// activations within 1e-5 of Σ|w·x|.
					amx := amxServes(ps, cols, n)
					amxAct, amxBlockOf := amxRefForm(ps, amx)
					a := newActivation(actQ8_K, cols)
					a0 := newActivation(actQ8_0, cols)
					for v := range n {
						a.set(actQ8_K, x[v*cols:(v+1)*cols])
						a0.set(actQ8_0, x[v*cols:(v+1)*cols])
						for i := range rows {
							got := out[v*rows+i]
							if amx {
								ref := a0
								if amxAct == actQ8_K {
									ref = a
								}
								want, mag := quantDotRef(deq[i*cols:(i+1)*cols], ref, amxBlockOf)
								if d := math.Abs(float64(got) - want); d > 1e-5*mag {
									t.Errorf("vector %d row %d: MatMul (AMX) %g, reference %g", v, i, got, want)
								}
								continue
							}
							_, mag := quantDotRef(deq[i*cols:(i+1)*cols], a, QK_K)
							one := k.dot(w[i*rowBytes:(i+1)*rowBytes], a)
							if d := math.Abs(float64(got - one)); d > 2e-6*mag {
								t.Errorf("vector %d row %d: MatMul %g, one-row dot %g", v, i, got, one)
							}
							if useMulti(rowKernels[k.ty], n) && got != alone[v*rows+i] {
								t.Errorf("vector %d row %d: %g among %d vectors, %g alone", v, i, got, n, alone[v*rows+i])
							}
						}
					}
				})
			}
		}
	}
}

// TestMatMulNoColumns: rows of no elements give products of 0, on every
// kernel path (one vector, a batch, a prefill), for every weight type.
func TestMatMulNoColumns(t *testing.T) {
	for ty := range rowKernels {
		for _, n := range []int{1, 2, multiRows + 1, multiMax + 1} {
			out := make([]float32, 3*n)
			for i := range out {
				out[i] = float32(math.NaN())
			}
			if err := MatMul(out, nil, ty, 3, 0, nil, n, Options{}); err != nil {
				t.Fatalf("%s n=%d: %v", ty, n, err)
			}
			for i, v := range out {
				if v != 0 {
					t.Fatalf("%s n=%d: out[%d] = %g, want 0", ty, n, i, v)
				}
			}
		}
	}
}

// BenchmarkMatMulDecodeK times MatMul of a K-quant matrix against n = 1,
// 4 and 16 activation vectors (a batched decode step's products: the
// large suite model's 1024×1024 attention and 1536×1024 feed-forward
// shapes, and the output projection's 12288×1024) on one, two and (where
// the machine has them) sixteen threads, and reports ns per
// (row·vector): a product that reads each weight row once for all n
// vectors costs less per vector the more there are; one that redoes each
// row's work for every vector costs the same at every n. Q8_0, whose
// multi-row kernel came first, is the reference.
func BenchmarkMatMulDecodeK(b *testing.B) {
	for _, ty := range []DType{Q8_0, Q4_K, Q5_K, Q6_K} {
		for _, shape := range [][2]int{{1024, 1024}, {1536, 1024}, {12288, 1024}} {
			rows, cols := shape[0], shape[1]
			w := benchWeights(b, ty, rows, cols)
			for _, threads := range []int{1, 2, 16} {
				if threads > 2 && threads > runtime.NumCPU() {
					continue
				}
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

// BenchmarkDotKRows times the K-quant multi-row products of 64 weight
// rows of 1024 columns against 1, 4 and 16 vectors (the kernel in use
// and its pure-Go twin) beside the one-row dot products MatMul used
// before for so few vectors, in ns per (row·vector).
func BenchmarkDotKRows(b *testing.B) {
	const rows, cols = 64, 1024
	r := rand.New(rand.NewPCG(23, 24))
	for _, k := range multiKTypes {
		for _, n := range []int{1, 4, multiRows} {
			w, acts, _ := gemmSetup(b, r, k.ty, rows, cols, n)
			rowBytes := len(w) / rows
			var p multiPack
			p.set(actQ8_K, acts, cols)
			out := make([]float32, n*rows)
			report := func(b *testing.B) {
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rows*n), "ns/row·vec")
			}
			b.Run(fmt.Sprintf("%s/n=%d/kernel", k.ty, n), func(b *testing.B) {
				for b.Loop() {
					k.kernel(w, rowBytes, rows, &p, out, rows)
				}
				report(b)
			})
			b.Run(fmt.Sprintf("%s/n=%d/go", k.ty, n), func(b *testing.B) {
				for b.Loop() {
					k.twin(w, rowBytes, rows, &p, out, rows)
				}
				report(b)
			})
			b.Run(fmt.Sprintf("%s/n=%d/rowdot", k.ty, n), func(b *testing.B) {
				dot := rowKernels[k.ty].dot
				for b.Loop() {
					for i := range rows {
						for v, a := range acts {
							out[v*rows+i] = dot(w[i*rowBytes:(i+1)*rowBytes], a)
						}
					}
				}
				report(b)
			})
		}
	}
}

// TestDotKRowsBounds: a multi-row product whose rows are shorter than
// the pack's blocks, or whose pack holds more vectors than the kernels
// have accumulators, panics, as the pure-Go twins do, where the
// assembly would read past the weights or drop vectors silently.
func TestDotKRowsBounds(t *testing.T) {
	r := rand.New(rand.NewPCG(27, 28))
	for _, k := range multiKTypes {
		blockBytes := k.ty.BlockBytes()
		cases := []struct {
			name             string
			rows, cols, n    int
			rowBytes, wBytes int // w is wBytes of a longer slice
		}{
			// one row of one block against a pack of two: the kernel
			// would read the second block past the end of w.
			{"short rows", 1, 2 * QK_K, 1, blockBytes, blockBytes},
			{"too many vectors", 2, QK_K, multiRows + 1, blockBytes, 2 * blockBytes},
		}
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s/%s", k.ty, c.name), func(t *testing.T) {
				w, acts, _ := gemmSetup(t, r, k.ty, 2, c.cols, c.n)
				var p multiPack
				p.set(actQ8_K, acts, c.cols)
				out := make([]float32, c.n*c.rows)
				defer func() {
					if recover() == nil {
						t.Errorf("rows of %d bytes against %d blocks of %d vectors: no panic", c.rowBytes, p.steps, p.n)
					}
				}()
				k.kernel(w[:c.wBytes], c.rowBytes, c.rows, &p, out, c.rows)
			})
		}
	}
}

// amxRefForm returns the activation form of an AMX call of ps and the
// elements of its scale blocks (32 for Q8_0, 256 for Q8_K); nothing
// where AMX does not serve.
func amxRefForm(ps []Product, amx bool) (actKind, int) {
	if !amx {
		return actQ8_0, qk0
	}
	if k, _ := amxForm(ps); k == actQ8_K {
		return k, QK_K
	}
	return actQ8_0, qk0
}
