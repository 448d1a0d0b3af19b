package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
)

var gemmTypes = []DType{Q8_0, Q4_0, Q4_K, Q5_K, Q6_K}

// TestGEMMRepack: each type's shared form sw[e/4]·q[e] − mg[e/16] gives
// the weights Dequantize gives, to float rounding (both multiply the same
// float scales; 1e-6 of the row's largest magnitude).
func TestGEMMRepack(t *testing.T) {
	const cols = 512
	r := rand.New(rand.NewPCG(1, 2))
	for _, ty := range gemmTypes {
		w, err := Encode(ty, randomVector(r, cols))
		if err != nil {
			t.Fatal(err)
		}
		want := make([]float32, cols)
		if err := Dequantize(ty, want, w); err != nil {
			t.Fatal(err)
		}
		var p gemmPanel
		p.fill(gemmRepacks[ty], w, len(w), 0, 1, cols)
		var amax float64
		for _, v := range want {
			amax = math.Max(amax, math.Abs(float64(v)))
		}
		for e := range cols {
			q := p.quants(0, e, 1)[0]
			sw := p.sw[(e/gemmStep*gemmRows)*16+e%gemmStep/4]
			mg := p.mg[(e/gemmSB*gemmRows)*16+e%gemmSB/16]
			got := float64(sw)*float64(q) - float64(mg)
			if math.Abs(got-float64(want[e])) > 1e-6*amax {
				t.Fatalf("%s: element %d: %g, dequantized %g", ty, e, got, want[e])
			}
		}
	}
}

// gemmSetup quantizes rows random weight rows of type ty and n random
// activations in the form the type's kernels read.
func gemmSetup(t testing.TB, r *rand.Rand, ty DType, rows, cols, n int) (w []byte, acts []*activation, x []float32) {
	var err error
	if w, err = Encode(ty, randomVector(r, rows*cols)); err != nil {
		t.Fatal(err)
	}
	x = randomVector(r, n*cols)
	k := rowKernels[ty].act
	for v := range n {
		a := newActivation(k, cols)
		a.set(k, x[v*cols:(v+1)*cols])
		acts = append(acts, a)
	}
	return w, acts, x
}

// TestGEMMKernel: the kernel in use (assembly where the CPU has AVX-512
// VNNI) against its pure-Go twin on the same panel and group, and both
// against the row kernels' dot products (same integer sums; float
// scaling and summation in another order: 2e-5 of Σ|w·x|).
func TestGEMMKernel(t *testing.T) {
	const cols = 768
	r := rand.New(rand.NewPCG(3, 4))
	for _, ty := range gemmTypes {
		t.Run(ty.String(), func(t *testing.T) {
			rows := gemmRows - 1 // a padded panel
			w, acts, x := gemmSetup(t, r, ty, rows, cols, gemmCols-1)
			rowBytes := len(w) / rows
			var p gemmPanel
			p.fill(gemmRepacks[ty], w, rowBytes, 0, rows, cols)
			var g gemmActs
			g.set(rowKernels[ty].act, acts, cols)
			var got, twin [gemmRows * gemmCols]float32
			gemmKernel(&p, &g, cols/gemmStep, &got)
			gemmKernelGo(&p, &g, cols/gemmStep, &twin)
			deq := make([]float32, cols)
			for i := range gemmRows {
				for v := range gemmCols {
					k := i*gemmCols + v
					if i >= rows || v >= len(acts) {
						if got[k] != 0 || twin[k] != 0 {
							t.Errorf("padding (%d,%d): %g, twin %g", i, v, got[k], twin[k])
						}
						continue
					}
					row := w[i*rowBytes : (i+1)*rowBytes]
					want := rowKernels[ty].dot(row, acts[v])
					if err := Dequantize(ty, deq, row); err != nil {
						t.Fatal(err)
					}
					var mag float64
					for j, wv := range deq {
						mag += math.Abs(float64(wv) * float64(x[v*cols+j]))
					}
					if d := math.Abs(float64(got[k] - twin[k])); d > 2e-5*mag {
						t.Errorf("(%d,%d): kernel %g, twin %g", i, v, got[k], twin[k])
					}
					if d := math.Abs(float64(got[k] - want)); d > 2e-5*mag {
						t.Errorf("(%d,%d): kernel %g, row kernel %g", i, v, got[k], want)
					}
				}
			}
		})
	}
}

// BenchmarkGEMMKernel times the kernel on one panel and group at 2048
// columns: multiply-adds per second are 16·2048 per call.
func BenchmarkGEMMKernel(b *testing.B) {
	const cols = 2048
	r := rand.New(rand.NewPCG(5, 6))
	w, acts, _ := gemmSetup(b, r, Q8_0, gemmRows, cols, gemmCols)
	var p gemmPanel
	p.fill(gemmRepacks[Q8_0], w, len(w)/gemmRows, 0, gemmRows, cols)
	var g gemmActs
	g.set(actQ8_0, acts, cols)
	var out [gemmRows * gemmCols]float32
	for _, impl := range []struct {
		name string
		f    func(*gemmPanel, *gemmActs, int, *[gemmRows * gemmCols]float32)
	}{{"kernel", gemmKernel}, {"go", gemmKernelGo}} {
		b.Run(impl.name, func(b *testing.B) {
			for b.Loop() {
				impl.f(&p, &g, cols/gemmStep, &out)
			}
			b.ReportMetric(float64(gemmRows*gemmCols*cols)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GMAC/s")
		})
	}
	for _, ty := range gemmTypes {
		b.Run(fmt.Sprintf("repack/%s", ty), func(b *testing.B) {
			w, _, _ := gemmSetup(b, r, ty, gemmRows, cols, 0)
			for b.Loop() {
				p.fill(gemmRepacks[ty], w, len(w)/gemmRows, 0, gemmRows, cols)
			}
			b.ReportMetric(float64(gemmRows*cols)*float64(b.N)/b.Elapsed().Seconds()/1e9, "Gelem/s")
		})
	}
}

// TestMatMulBatched: MatMulShared with a batched decode step's few vectors
// (the multi-row kernel for Q8_0, in one pass and in several) and with
// enough for the tiled kernel (products of every tiled type and one that
// is neither, a Q4_0 product before the Q8_0 one sharing its activations,
// row counts that are not multiples of the panel, a partial last group,
// tasks that split panels) gives each vector what MatVec gives it, within
// 2e-5 of Σ|w·x| (same integer block sums, float scaling in another
// order).
func TestMatMulBatched(t *testing.T) {
	const cols = 512
	r := rand.New(rand.NewPCG(7, 8))
	types := append([]DType{F16}, gemmTypes...)
	slices.Reverse(types) // Q4_0 before Q8_0
	for _, n := range []int{2, 5, multiRows + 1, 2*gemmMinVectors + 3, multiMax + 3} {
		x := randomVector(r, n*cols)
		var ps []Product
		var mats [][]float32
		for i, ty := range types {
			rows := 5 + 2*i
			m := randomVector(r, rows*cols)
			w, err := Encode(ty, m)
			if err != nil {
				t.Fatal(err)
			}
			ps = append(ps, Product{Out: make([]float32, n*rows), W: w, Type: ty, Rows: rows})
			deq := make([]float32, rows*cols)
			if err := Dequantize(ty, deq, w); err != nil {
				t.Fatal(err)
			}
			mats = append(mats, deq)
		}
		for _, threads := range []int{1, 3} {
			pool := NewPool(threads)
			err := matMulShared(ps, cols, x, n, Options{Pool: pool, Scratch: &Scratch{}}, 1)
			pool.Close()
			if err != nil {
				t.Fatal(err)
			}
			one := make([]float32, 32)
			for i, p := range ps {
				for v := range n {
					if err := MatVec(one[:p.Rows], p.W, p.Type, p.Rows, cols, x[v*cols:(v+1)*cols], Options{}); err != nil {
						t.Fatal(err)
					}
					for row := range p.Rows {
						var mag float64
						for j := range cols {
							mag += math.Abs(float64(mats[i][row*cols+j]) * float64(x[v*cols+j]))
						}
						if d := math.Abs(float64(p.Out[v*p.Rows+row] - one[row])); d > 2e-5*mag {
							t.Fatalf("n %d threads %d %s vector %d row %d: MatMul %g, MatVec %g", n, threads, p.Type, v, row, p.Out[v*p.Rows+row], one[row])
						}
					}
				}
			}
		}
	}
}

// TestMatMulPrepare: a product whose input rows are written by
// Options.Prepare inside its region (x full of NaN until then) calls it
// exactly once per vector and gives, bit for bit, what it gives with the
// rows written beforehand, on every kernel path (one vector, the
// multi-row kernel in one pass and in several, the tiled or AMX kernel,
// a mix of types sharing the activations) and on one goroutine or four.
func TestMatMulPrepare(t *testing.T) {
	const cols = 512
	r := rand.New(rand.NewPCG(9, 10))
	sets := map[string][]DType{"Q8_0": {Q8_0, Q8_0}, "mixed": {Q4_K, Q8_0, F16, Q6_K}}
	for name, types := range sets {
		for _, n := range []int{1, 2, 5, multiRows, multiRows + 1, multiMax + 5} {
			src := randomVector(r, n*cols)
			var want, got []Product
			for i, ty := range types {
				rows := 40 + 8*i
				w, err := Encode(ty, randomVector(r, rows*cols))
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, Product{Out: make([]float32, n*rows), W: w, Type: ty, Rows: rows})
				got = append(got, Product{Out: make([]float32, n*rows), W: w, Type: ty, Rows: rows})
			}
			for _, threads := range []int{1, 4} {
				pool := NewPool(threads)
				if err := matMulShared(want, cols, slices.Clone(src), n, Options{Pool: pool, Scratch: &Scratch{}}, 1); err != nil {
					t.Fatal(err)
				}
				x := make([]float32, n*cols)
				for i := range x {
					x[i] = float32(math.NaN())
				}
				calls := make([]atomic.Int32, n)
				prep := func(v int) {
					calls[v].Add(1)
					copy(x[v*cols:(v+1)*cols], src[v*cols:(v+1)*cols])
				}
				err := matMulShared(got, cols, x, n, Options{Pool: pool, Scratch: &Scratch{}, Prepare: prep}, 1)
				pool.Close()
				if err != nil {
					t.Fatal(err)
				}
				for v := range calls {
					if c := calls[v].Load(); c != 1 {
						t.Fatalf("%s n %d threads %d: Prepare(%d) called %d times", name, n, threads, v, c)
					}
				}
				for i := range want {
					for j, w := range want[i].Out {
						if g := got[i].Out[j]; math.Float32bits(g) != math.Float32bits(w) {
							t.Fatalf("%s n %d threads %d %s out %d: prepared %g, written before %g", name, n, threads, want[i].Type, j, g, w)
						}
					}
				}
			}
		}
	}
}
