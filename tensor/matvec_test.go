package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
)

// encodeRows stores the rows×cols matrix m in type t.
func encodeRows(t DType, m []float32) ([]byte, error) { return Encode(t, m) }

// dequantActivation returns the values the integer kernels actually
// multiply by: x itself for the float types, d·q for the quantized forms.
func dequantActivation(k actKind, a *activation, n int) []float64 {
	y := make([]float64, n)
	for i := range y {
		switch k {
		case actF32:
			y[i] = float64(a.f32[i])
		case actQ8_0, actQ8_1:
			y[i] = float64(a.d[i/qk0]) * float64(a.qs[i])
		case actQ8_K:
			y[i] = float64(a.d[i/QK_K]) * float64(a.qs[i])
		}
	}
	return y
}

var matVecTypes = []DType{F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, TQ1_0, TQ2_0}

// TestMatVecReference compares MatVec with a float64 dot product of the
// dequantized weights, two ways:
//
//   - against the activation as the kernel quantized it: the kernels sum
//     each block exactly in integers and round only the per-block scale
//     products and the running float32 sum, so the error is a few ulps per
//     block; 1e-5·Σ|w·x| covers that (512 columns: at most 16 blocks of
//     32, or 2 of 256, and for the float types 4 float32 accumulators of
//     128 terms, ≤ 128·2^-24 ≈ 7.6e-6) while one wrong element shows up at
//     about 1/512 of Σ|w·x|.
//   - against x itself: the activation rounding adds at most |d|/2 per
//     element (d = max|x|/127 over its block), weighted by |w|.
func TestMatVecReference(t *testing.T) {
	const rows, cols = 9, 512
	r := rand.New(rand.NewPCG(3, 4))
	m := randomVector(r, rows*cols)
	x := randomVector(r, cols)
	x[7] = 0
	x[100] = 6 // an outlier coarsens one activation block
	pool := NewPool(4)
	defer pool.Close()
	for _, ty := range matVecTypes {
		t.Run(ty.String(), func(t *testing.T) {
			w, err := encodeRows(ty, m)
			if err != nil {
				t.Fatal(err)
			}
			out := make([]float32, rows)
			if err := matMulShared([]Product{{out, w, ty, rows}}, cols, x, 1, Options{Pool: pool}, 1); err != nil {
				t.Fatal(err)
			}
			k := rowKernels[ty]
			a := newActivation(k.act, cols)
			a.set(k.act, x)
			xq := dequantActivation(k.act, a, cols)
			rowBytes := len(w) / rows
			deq := make([]float32, cols)
			for i := range rows {
				if err := Dequantize(ty, deq, w[i*rowBytes:(i+1)*rowBytes]); err != nil {
					t.Fatal(err)
				}
				var refQ, refX, absQ, bound float64
				for j, wv := range deq {
					refQ += float64(wv) * xq[j]
					refX += float64(wv) * float64(x[j])
					absQ += math.Abs(float64(wv) * xq[j])
					if k.act != actF32 {
						bs := qk0
						if k.act == actQ8_K {
							bs = QK_K
						}
						bound += math.Abs(float64(wv)) * math.Abs(float64(a.d[j/bs])) / 2
					}
				}
				got := float64(out[i])
				if tol := 1e-5 * absQ; math.Abs(got-refQ) > tol {
					t.Errorf("row %d: %g, want %g (quantized x) ± %g", i, got, refQ, tol)
				}
				if tol := bound*1.0001 + 1e-5*absQ; math.Abs(got-refX) > tol {
					t.Errorf("row %d: %g, want %g (exact x) ± %g", i, got, refX, tol)
				}
			}
		})
	}
}

// TestMatMulMatchesMatVec checks that the batched product gives each
// vector what MatVec gives it, with and without threads; n = 9 exercises
// the four-activation kernels (two groups) and the remainder. The
// four-activation kernels sum blocks in another order: equal within
// float32 rounding of the block sums (1e-5 relative).
func TestMatMulMatchesMatVec(t *testing.T) {
	const rows, cols, n = 13, 256, 9
	r := rand.New(rand.NewPCG(5, 6))
	m := randomVector(r, rows*cols)
	x := randomVector(r, n*cols)
	pool := NewPool(3)
	defer pool.Close()
	for _, ty := range matVecTypes {
		w, err := encodeRows(ty, m)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]float32, n*rows)
		if err := matMulShared([]Product{{out, w, ty, rows}}, cols, x, n, Options{Pool: pool, Scratch: &Scratch{}}, 1); err != nil {
			t.Fatal(err)
		}
		one := make([]float32, rows)
		for v := range n {
			if err := MatVec(one, w, ty, rows, cols, x[v*cols:(v+1)*cols], Options{}); err != nil {
				t.Fatal(err)
			}
			for i := range rows {
				if d := math.Abs(float64(out[v*rows+i] - one[i])); d > 1e-5*(1+math.Abs(float64(one[i]))) {
					t.Errorf("%s: vector %d row %d: MatMul %g, MatVec %g", ty, v, i, out[v*rows+i], one[i])
				}
			}
		}
	}
}

func TestMatVecErrors(t *testing.T) {
	w := make([]byte, 2*34)
	x := make([]float32, 32)
	tests := []struct {
		name    string
		err     error
		wantSub string
	}{
		{"short weights", MatVec(make([]float32, 2), w[:67], Q8_0, 2, 32, x, Options{}), "need 68 bytes, have 67"},
		{"short x", MatVec(make([]float32, 2), w, Q8_0, 2, 32, x[:31], Options{}), "x has 31"},
		{"short out", MatVec(make([]float32, 1), w, Q8_0, 2, 32, x, Options{}), "out has 1"},
		{"partial block", MatVec(make([]float32, 2), w, Q8_0, 2, 31, x[:31], Options{}), "not a multiple"},
		{"no kernel", MatVec(make([]float32, 2), w, IQ2_XXS, 2, 32, x, Options{}), "no kernel"},
		{"negative", MatMul(nil, nil, F32, -1, 4, nil, 1, Options{}), "negative"},
		{"out for n", MatMul(make([]float32, 2), w, Q8_0, 2, 32, make([]float32, 64), 2, Options{}), "out has 2"},
	}
	for _, tt := range tests {
		if tt.err == nil || !strings.Contains(tt.err.Error(), tt.wantSub) {
			t.Errorf("%s: %v, want error containing %q", tt.name, tt.err, tt.wantSub)
		}
	}
	if err := MatMul(nil, nil, Q4_K, 0, 256, nil, 0, Options{}); err != nil {
		t.Errorf("empty product: %v", err)
	}
}

// benchWeights builds a rows×cols matrix of type t from a few quantized
// random rows repeated, so setup stays fast while every row has its own
// memory.
func benchWeights(b *testing.B, t DType, rows, cols int) []byte {
	const distinct = 8
	r := rand.New(rand.NewPCG(1, 1))
	seed, err := encodeRows(t, randomVector(r, distinct*cols))
	if err != nil {
		b.Fatal(err)
	}
	w := make([]byte, 0, len(seed)*rows/distinct)
	for len(w) < cap(w) {
		w = append(w, seed...)
	}
	return w
}

// BenchmarkMatVec measures W·x at 2048×2048 per weight type; the bytes per
// second are weight bytes read.
func BenchmarkMatVec(b *testing.B) {
	const rows, cols = 2048, 2048
	for _, ty := range matVecTypes {
		b.Run(ty.String(), func(b *testing.B) {
			w := benchWeights(b, ty, rows, cols)
			x := randomVector(rand.New(rand.NewPCG(2, 2)), cols)
			out := make([]float32, rows)
			b.SetBytes(int64(len(w)))
			for b.Loop() {
				if err := MatVec(out, w, ty, rows, cols, x, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMatMul measures prefill of 8 vectors at 2048×2048; bytes per
// second count the weights once.
func BenchmarkMatMul(b *testing.B) {
	const rows, cols, n = 2048, 2048, 8
	for _, ty := range []DType{F16, Q8_0, Q4_0, Q4_K, Q6_K} {
		b.Run(fmt.Sprintf("%s/n=%d", ty, n), func(b *testing.B) {
			w := benchWeights(b, ty, rows, cols)
			x := randomVector(rand.New(rand.NewPCG(2, 2)), n*cols)
			out := make([]float32, n*rows)
			b.SetBytes(int64(len(w)))
			for b.Loop() {
				if err := MatMul(out, w, ty, rows, cols, x, n, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRowDot compares, on one thread and one 4096-element row, the
// fused integer block dot that MatVec uses with the alternative of
// dequantizing the row to float32 and taking a float dot product.
func BenchmarkRowDot(b *testing.B) {
	const cols = 4096
	for _, ty := range []DType{Q4_0, Q8_0, Q4_K, Q5_K, Q6_K} {
		rows := benchWeights(b, ty, 8, cols)
		w := rows[:len(rows)/8]
		x := randomVector(rand.New(rand.NewPCG(2, 2)), cols)
		k := rowKernels[ty]
		b.Run(ty.String()+"/fused", func(b *testing.B) {
			b.SetBytes(int64(len(w)))
			a := newActivation(k.act, cols)
			a.set(k.act, x)
			var s float32
			for b.Loop() {
				s += k.dot(w, a)
			}
			_ = s
		})
		b.Run(ty.String()+"/dequant", func(b *testing.B) {
			b.SetBytes(int64(len(w)))
			tmp := make([]float32, cols)
			var s float32
			for b.Loop() {
				if err := Dequantize(ty, tmp, w); err != nil {
					b.Fatal(err)
				}
				s += dotF32(tmp, x)
			}
			_ = s
		})
	}
}

// TestMatMulSharedMatchesSeparate: products sharing an input, of different
// types and row counts, spread over goroutines across product boundaries,
// give exactly what separate MatMul calls give.
func TestMatMulSharedMatchesSeparate(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	const cols, n = 256, 3
	x := make([]float32, n*cols)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	var ps []Product
	var want [][]float32
	for _, spec := range []struct {
		t    DType
		rows int
	}{{Q8_0, 7}, {F16, 5}, {Q4_K, 9}, {Q8_0, 1}} {
		src := make([]float32, spec.rows*cols)
		for i := range src {
			src[i] = float32(r.NormFloat64())
		}
		w, err := encodeRows(spec.t, src)
		if err != nil {
			t.Fatal(err)
		}
		sep := make([]float32, n*spec.rows)
		if err := MatMul(sep, w, spec.t, spec.rows, cols, x, n, Options{}); err != nil {
			t.Fatal(err)
		}
		want = append(want, sep)
		ps = append(ps, Product{Out: make([]float32, n*spec.rows), W: w, Type: spec.t, Rows: spec.rows})
	}
	for _, workers := range []int{1, 2, 3, 5} {
		pool := NewPool(workers)
		err := matMulShared(ps, cols, x, n, Options{Pool: pool}, 1)
		pool.Close()
		if err != nil {
			t.Fatal(err)
		}
		for i := range ps {
			for j := range want[i] {
				if ps[i].Out[j] != want[i][j] {
					t.Fatalf("workers %d product %d [%d]: %g, separate %g", workers, i, j, ps[i].Out[j], want[i][j])
				}
			}
		}
	}
	bad := []Product{{Out: make([]float32, 2), W: make([]byte, 3), Type: Q8_0, Rows: 1}}
	if err := MatMulShared(bad, cols, x, n, Options{}); err == nil {
		t.Error("wrong weight size: no error")
	}
}

// BenchmarkMatVecSmall measures W·x at 512×512 Q8_0 on one goroutine: a
// layer of the embedded model, where each row is 16 blocks and the cost
// of each kernel call shows.
func BenchmarkMatVecSmall(b *testing.B) {
	const rows, cols = 512, 512
	w := benchWeights(b, Q8_0, rows, cols)
	x := randomVector(rand.New(rand.NewPCG(2, 2)), cols)
	out := make([]float32, rows)
	b.SetBytes(int64(len(w)))
	scr := &Scratch{}
	for b.Loop() {
		if err := MatVec(out, w, Q8_0, rows, cols, x, Options{Scratch: scr}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestVectorsShares: a product's phases, their items dealt in shares
// among the region's goroutines, run every item exactly once and the
// second phase's only after all of the first's, for item counts below,
// at and above the goroutines' (odd ones among them), more and fewer
// tasks than goroutines, and pools of one to sixteen goroutines (more
// than GOMAXPROCS among them).
func TestVectorsShares(t *testing.T) {
	for _, threads := range []int{1, 2, 3, 16} {
		pool := NewPool(threads)
		for _, tasks := range []int{1, 2, threads, 4 * threads} {
			for _, n := range []int{0, 1, 3, 16, 17, 41} {
				for _, m := range []int{0, 1, 4, 10} {
					var v vectors
					first := make([]atomic.Int32, n)
					second := make([]atomic.Int32, m)
					var early atomic.Int32
					var then func(i int)
					if m > 0 {
						then = func(i int) {
							for j := range first {
								if first[j].Load() != 1 {
									early.Add(1)
								}
							}
							second[i].Add(1)
						}
					}
					v.start(nil, threads, tasks, n, func(i int) { first[i].Add(1) }, m, then)
					pool.Run(tasks, func(_, w int) { v.ready(w) })
					for i := range first {
						if c := first[i].Load(); c != 1 {
							t.Fatalf("threads %d tasks %d n %d m %d: item %d of the first phase ran %d times", threads, tasks, n, m, i, c)
						}
					}
					for i := range second {
						if c := second[i].Load(); c != 1 {
							t.Fatalf("threads %d tasks %d n %d m %d: item %d of the second phase ran %d times", threads, tasks, n, m, i, c)
						}
					}
					if early.Load() != 0 {
						t.Fatalf("threads %d tasks %d n %d m %d: the second phase began before the first ended", threads, tasks, n, m)
					}
				}
			}
		}
		pool.Close()
	}
}

// TestQuantizesActivations: the float types take MatVec's input as it is,
// the quantized ones round it to 8 bits, a type without kernels neither.
func TestQuantizesActivations(t *testing.T) {
	for _, tt := range []struct {
		t    DType
		want bool
	}{{F32, false}, {F16, false}, {BF16, false}, {Q8_0, true}, {Q4_0, true}, {Q4_1, true}, {Q4_K, true}, {Q6_K, true}, {TQ2_0, true}, {IQ2_XXS, false}} {
		if got := QuantizesActivations(tt.t); got != tt.want {
			t.Errorf("QuantizesActivations(%s) = %v, want %v", tt.t, got, tt.want)
		}
	}
}
