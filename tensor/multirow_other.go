//go:build !amd64 || purego

package tensor

// hasMultiRow is true without assembly: the pure-Go multi-row product
// costs no more than the pure-Go row kernels it replaces.
const hasMultiRow = true

// hasMultiRowK is false without assembly: the pure-Go twins of the
// K-quant multi-row kernels (multirow_k.go) sum per lane, as the
// assembly does, and cost far more than the pure-Go one-row dots.
const hasMultiRowK = false

func dotQ8_0RowsKernel(w []byte, rowBytes, rows int, p *multiPack, out []float32, stride int) {
	dotQ8_0RowsGo(w, rowBytes, rows, p, out, stride)
}

func multiPackKernel(p *multiPack, v int, a *activation) { p.setVectorGo(v, a) }

func dotQ6_KRowsKernel(w []byte, rowBytes, rows int, p *multiPack, out []float32, stride int) {
	dotQ6_KRowsGo(w, rowBytes, rows, p, out, stride)
}

func dotQ4_KRowsKernel(w []byte, rowBytes, rows int, p *multiPack, out []float32, stride int) {
	dotQ4_KRowsGo(w, rowBytes, rows, p, out, stride)
}

func dotQ5_KRowsKernel(w []byte, rowBytes, rows int, p *multiPack, out []float32, stride int) {
	dotQ5_KRowsGo(w, rowBytes, rows, p, out, stride)
}

func unpackQ6_KHiLo(q []byte, dw []float32, row, _ []byte, supers int) {
	unpackQ6_KHiLoGo(q, dw, row, supers)
}
