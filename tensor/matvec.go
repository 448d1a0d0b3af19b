package tensor

import (
	"fmt"
	"runtime"
	"sync"
)

// Options configures MatVec and MatMul.
type Options struct {
	// Workers is the number of goroutines that share the rows; 0 means
	// runtime.NumCPU(). Small matrices use fewer, so that each has at
	// least minWorkBytes of weights to read.
	Workers int
}

// minWorkBytes is the least weight data worth a goroutine of its own.
const minWorkBytes = 64 << 10

// rowKernel describes how MatVec runs one weight type: the activation form
// it needs and the dot product of one weight row with it.
type rowKernel struct {
	act actKind
	dot func(w []byte, a *activation) float32
	// dot4, where present, serves four activations in one pass over the
	// row, for prefill.
	dot4 func(w []byte, a *[4]*activation, out *[4]float32)
}

var rowKernels = map[DType]rowKernel{
	F32:  {act: actF32, dot: dotRowF32},
	F16:  {act: actF32, dot: dotRowF16},
	BF16: {act: actF32, dot: dotRowBF16},
	Q4_0: {act: actQ8_0, dot: dotRowQ4_0},
	Q4_1: {act: actQ8_1, dot: dotRowQ4_1},
	Q5_0: {act: actQ8_0, dot: dotRowQ5_0},
	Q5_1: {act: actQ8_1, dot: dotRowQ5_1},
	Q8_0: {act: actQ8_0, dot: dotRowQ8_0, dot4: dotRowQ8_0x4},
	Q2_K: {act: actQ8_K, dot: dotRowQ2_K},
	Q3_K: {act: actQ8_K, dot: dotRowQ3_K},
	Q4_K: {act: actQ8_K, dot: dotRowQ4_K},
	Q5_K: {act: actQ8_K, dot: dotRowQ5_K},
	Q6_K: {act: actQ8_K, dot: dotRowQ6_K},
	Q8_K: {act: actQ8_K, dot: dotRowQ8_K},
}

// CanMatVec reports whether MatVec and MatMul support weights of type t.
func CanMatVec(t DType) bool { _, ok := rowKernels[t]; return ok }

// MatVec computes out = W·x for a row-major weight matrix W of rows×cols
// elements of type t, stored as rows consecutive rows of t.RowBytes(cols)
// bytes each. For the quantized types x is first quantized to 8 bits per
// block (Q8_0-style per 32 elements for Q4_0…Q8_0, Q8_K-style per 256 for
// the K-quants) and each block's dot product is an exact integer sum, as
// in llama.cpp; the float types use x as it is.
func MatVec(out []float32, w []byte, t DType, rows, cols int, x []float32, opts Options) error {
	if len(out) != rows {
		return fmt.Errorf("tensor: MatVec %s: out has %d elements, want %d rows", t, len(out), rows)
	}
	return MatMul(out, w, t, rows, cols, x, 1, opts)
}

// MatMul computes n products at once: out[v*rows+r] = W[r]·x[v*cols:],
// for the n activation vectors held one after another in x. Each weight
// row is read once for all n vectors, which is what makes prefill faster
// than n calls to MatVec.
func MatMul(out []float32, w []byte, t DType, rows, cols int, x []float32, n int, opts Options) error {
	return matMulShared([]Product{{Out: out, W: w, Type: t, Rows: rows}}, cols, x, n, opts, minWorkBytes)
}

// Product is one matrix of a MatMulShared call: Out (n·Rows values, as
// MatMul writes them) = W·x, W being Rows rows of the shared column count
// in Type.
type Product struct {
	Out  []float32
	W    []byte
	Type DType
	Rows int
}

// MatMulShared computes several products of the same input x (n vectors of
// cols elements), as MatMul would one by one, but quantizes x once per
// activation form and spreads all the matrices' rows over one set of
// goroutines: the Q, K and V projections of a layer, or its gate and up
// projections, cost one parallel region instead of three or two.
func MatMulShared(ps []Product, cols int, x []float32, n int, opts Options) error {
	return matMulShared(ps, cols, x, n, opts, minWorkBytes)
}

// matMulShared is MatMulShared with the per-goroutine minimum of weight
// bytes as a parameter, so tests can spread small matrices over several
// goroutines.
func matMulShared(ps []Product, cols int, x []float32, n int, opts Options, minBytes int) error {
	if cols < 0 || n < 0 {
		return fmt.Errorf("tensor: MatMul: negative shape: %d columns, n=%d", cols, n)
	}
	type prepared struct {
		k       rowKernel
		rowByte int
		acts    []*activation
		start   int // first global row
	}
	preps := make([]prepared, len(ps))
	actsByKind := map[actKind][]*activation{}
	totalRows, totalBytes := 0, 0
	for i, p := range ps {
		t, rows := p.Type, p.Rows
		k, ok := rowKernels[t]
		if !ok {
			return fmt.Errorf("tensor: MatMul: no kernel for %s", t)
		}
		if rows < 0 {
			return fmt.Errorf("tensor: MatMul %s: negative row count %d", t, rows)
		}
		rowBytes, err := t.RowBytes(int64(cols))
		if err != nil {
			return err
		}
		if int64(len(p.W)) != rowBytes*int64(rows) {
			return fmt.Errorf("tensor: MatMul %s: %dx%d weights need %d bytes, have %d", t, rows, cols, rowBytes*int64(rows), len(p.W))
		}
		if len(p.Out) != n*rows {
			return fmt.Errorf("tensor: MatMul %s: out has %d elements, want %d×%d", t, len(p.Out), n, rows)
		}
		preps[i] = prepared{k: k, rowByte: int(rowBytes), start: totalRows}
		totalRows += rows
		totalBytes += len(p.W)
	}
	if len(x) != n*cols {
		return fmt.Errorf("tensor: MatMul: x has %d elements, want %d×%d", len(x), n, cols)
	}
	for i := range preps {
		k := preps[i].k
		acts, ok := actsByKind[k.act]
		if !ok {
			acts = make([]*activation, n)
			for v := range acts {
				acts[v] = newActivation(k.act, cols)
				acts[v].set(k.act, x[v*cols:(v+1)*cols])
			}
			actsByKind[k.act] = acts
		}
		preps[i].acts = acts
	}
	if totalRows == 0 || n == 0 {
		return nil
	}
	// run computes global rows [r0, r1), which may span several products.
	run := func(r0, r1 int) {
		for i := range ps {
			pp := &preps[i]
			lo, hi := max(r0, pp.start), min(r1, pp.start+ps[i].Rows)
			rows := ps[i].Rows
			for r := lo; r < hi; r++ {
				lr := r - pp.start
				row := ps[i].W[lr*pp.rowByte : (lr+1)*pp.rowByte]
				v := 0
				if pp.k.dot4 != nil {
					var four [4]float32
					for ; v+4 <= len(pp.acts); v += 4 {
						pp.k.dot4(row, (*[4]*activation)(pp.acts[v:v+4]), &four)
						for k, f := range four {
							ps[i].Out[(v+k)*rows+lr] = f
						}
					}
				}
				for ; v < len(pp.acts); v++ {
					ps[i].Out[v*rows+lr] = pp.k.dot(row, pp.acts[v])
				}
			}
		}
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	workers = min(workers, totalRows, max(1, totalBytes*n/minBytes))
	if workers <= 1 {
		run(0, totalRows)
		return nil
	}
	var wg sync.WaitGroup
	for i := range workers - 1 {
		r0, r1 := totalRows*i/workers, totalRows*(i+1)/workers
		wg.Go(func() { run(r0, r1) })
	}
	// The calling goroutine takes the last share instead of waiting idle.
	run(totalRows*(workers-1)/workers, totalRows)
	wg.Wait()
	return nil
}
