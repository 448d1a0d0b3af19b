//go:build amd64 && !purego

package tensor

// hasMultiRow selects the multi-row decode product (multirow.go): the
// AVX-512 VNNI kernel; without it the row kernels serve.
var hasMultiRow = hasVNNI

// hasMultiRowK selects the K-quant multi-row products (multirow_k.go),
// with the same kernels.
var hasMultiRowK = hasVNNI

//go:noescape
func dotQ8_0RowsVNNI(w *byte, rowBytes, rows int, x *byte, nv, steps int, out *float32, stride int)

// dotQ8_0RowsKernel is the kernel in use for dotQ8_0Rows's whole pairs
// of blocks (its caller checked the bounds).
func dotQ8_0RowsKernel(w []byte, rowBytes, rows int, p *multiPack, out []float32, stride int) {
	if !hasVNNI || p.steps == 0 {
		dotQ8_0RowsGo(w, rowBytes, rows, p, out, stride)
		return
	}
	dotQ8_0RowsVNNI(&w[0], rowBytes, rows, &p.b[0], p.n, p.steps, &out[0], stride)
}

//go:noescape
func multiPackVNNI(dst *byte, qs *int8, d *float32, steps, stride int)

// multiPackKernel is setVector's packing in use (its caller checked the
// bounds).
func multiPackKernel(p *multiPack, v int, a *activation) {
	if !hasVNNI {
		p.setVectorGo(v, a)
		return
	}
	multiPackVNNI(&p.b[v*multiVecBytes], &a.qs[0], &a.d[0], p.steps, p.n*multiVecBytes)
}

// dotQ6_KRowsKernel is the kernel in use for dotQ6_KRows (its caller
// checked the bounds).
func dotQ6_KRowsKernel(w []byte, rowBytes, rows int, p *multiPack, out []float32, stride int) {
	if !hasVNNI || p.steps == 0 {
		dotQ6_KRowsGo(w, rowBytes, rows, p, out, stride)
		return
	}
	dotQ6_KRowsVNNI(&w[0], rowBytes, rows, &p.b[0], p.n, p.steps, &out[0], stride)
}

// dotQ4_KRowsKernel is the kernel in use for dotQ4_KRows.
func dotQ4_KRowsKernel(w []byte, rowBytes, rows int, p *multiPack, out []float32, stride int) {
	if !hasVNNI || p.steps == 0 {
		dotQ4_KRowsGo(w, rowBytes, rows, p, out, stride)
		return
	}
	dotK45RowsVNNI(&w[0], rowBytes, rows, &p.b[0], p.n, p.steps, &out[0], stride, q4_KBytes)
}

// dotQ5_KRowsKernel is the kernel in use for dotQ5_KRows.
func dotQ5_KRowsKernel(w []byte, rowBytes, rows int, p *multiPack, out []float32, stride int) {
	if !hasVNNI || p.steps == 0 {
		dotQ5_KRowsGo(w, rowBytes, rows, p, out, stride)
		return
	}
	dotK45RowsVNNI(&w[0], rowBytes, rows, &p.b[0], p.n, p.steps, &out[0], stride, q5_KBytes)
}

//go:noescape
func dotQ6_KRowsVNNI(w *byte, rowBytes, rows int, x *byte, nv, steps int, out *float32, stride int)

//go:noescape
func dotK45RowsVNNI(w *byte, rowBytes, rows int, x *byte, nv, steps int, out *float32, stride int, blockBytes int)

//go:noescape
func unpackQ6_KHiLoVNNI(q *byte, dw *float32, src *byte, supers int, ahead *byte)

// unpackQ6_KHiLo writes row m of a Q6_K panel (q and dw from the row's
// place) from the supers super-blocks of row: unpackQ6_KHiLoGo's layout.
// The assembly prefetches ahead (the row a panel on, where there is one:
// the next panel of a task), which must hold as many super-blocks.
func unpackQ6_KHiLo(q []byte, dw []float32, row, ahead []byte, supers int) {
	if !hasVNNI || supers == 0 {
		unpackQ6_KHiLoGo(q, dw, row, supers)
		return
	}
	_, _, _, _ = q[supers*amxQ6Super-amxQ6Tile+amxQ6Chunk-1], dw[(supers-1)*amxRows], row[supers*q6_KBytes-1], ahead[supers*q6_KBytes-1]
	unpackQ6_KHiLoVNNI(&q[0], &dw[0], &row[0], supers, &ahead[0])
}
