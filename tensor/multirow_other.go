//go:build !amd64 || purego

package tensor

// hasMultiRow is true without assembly: the pure-Go multi-row product
// costs no more than the pure-Go row kernels it replaces.
const hasMultiRow = true

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
