//go:build !amd64 || purego

package kvcache

// turnKernel names one of turnAdd4's kernels: here only the pure-Go one.
type turnKernel int

const turnGo turnKernel = 0

func turnKernels() []turnKernel { return []turnKernel{turnGo} }

func turnAdd4(out *[4][]float32, w []float32, rows int, table []float32, stride int, set bool) {
	turnAdd4Go(out, w, rows, table, stride, set)
}

func turnAdd4With(_ turnKernel, out *[4][]float32, w []float32, rows int, table []float32, stride int, set bool) {
	turnAdd4Go(out, w, rows, table, stride, set)
}

func meanAdd4(out, ew, nw *[4][]float32, erows int, table []float32, stride int) {
	meanAdd4Go(out, ew, nw, erows, table, stride)
}

func meanAdd4With(_ turnKernel, out, ew, nw *[4][]float32, erows int, table []float32, stride int) {
	meanAdd4Go(out, ew, nw, erows, table, stride)
}

func spanWeights(w, z, turns []float32, pe, nq int) { spanWeightsGo(w, z, turns, pe, nq) }

func meanRun(out *[4][]float32, ew []float32, ewStep, erows int, nw []float32, nwStride int, table []float32, col0, chunks int) {
	meanRunGo(out, ew, ewStep, erows, nw, nwStride, table, col0, chunks)
}

func turnTiles4(out *[4][]float32, w []float32, rows int, tiles []float32) {
	turnTiles4Go(out, w, rows, tiles)
}

func turnTiles4With(_ turnKernel, out *[4][]float32, w []float32, rows int, tiles []float32) {
	turnTiles4Go(out, w, rows, tiles)
}
