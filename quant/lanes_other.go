//go:build !amd64 || purego

package quant

func laneScore4(out *[4][]float32, nq, blocks int, qi []float32, parts []lanePart, data []byte, block int) {
	laneScore4Go(out, nq, blocks, qi, parts, data, block)
}

func laneAcc4(acc *[4][]float32, nq int, w *[4][]float32, wbuf []float32, nb int, p *lanePart, data []byte, block int) {
	laneAcc4Go(acc, nq, w, wbuf, nb, p, data, block)
}

func laneScore4At(_ kernelLevel, out *[4][]float32, nq, blocks int, qi []float32, parts []lanePart, data []byte, block int) {
	laneScore4Go(out, nq, blocks, qi, parts, data, block)
}

func laneAcc4At(_ kernelLevel, acc *[4][]float32, nq int, w *[4][]float32, wbuf []float32, nb int, p *lanePart, data []byte, block int) {
	laneAcc4Go(acc, nq, w, wbuf, nb, p, data, block)
}
