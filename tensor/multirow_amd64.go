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
func unpackQ6_KQuantsVNNI(q *byte, src *byte, blocks int)

// unpackQ6_KQuants writes the quants of blocks Q6_K blocks of src, less
// 32, to q as signed bytes in element order (the AMX panel's operand).
func unpackQ6_KQuants(q []byte, src []byte, blocks int) {
	if !hasVNNI || blocks == 0 {
		unpackQ6_KQuantsGo(q, src, blocks)
		return
	}
	_, _ = q[blocks*QK_K-1], src[blocks*q6_KBytes-1]
	unpackQ6_KQuantsVNNI(&q[0], &src[0], blocks)
}
