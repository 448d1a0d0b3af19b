//go:build amd64 && !purego

package quant

import "unsafe"

//go:noescape
func laneScore4AVX512(out *[4]*float32, nq int, blocks int, q *float32, parts *lanePart, nparts int, data *byte, block int)

//go:noescape
func laneScore2AVX2(out *[2]*float32, blocks int, q *float32, parts *lanePart, nparts int, data *byte, block int)

// laneScore4 scores blocks of Lanes codes against four queries (see
// laneScore4Go), on the best kernel the CPU has.
func laneScore4(out *[4][]float32, nq, blocks int, qi []float32, parts []lanePart, data []byte, block int) {
	laneScore4At(bestLevel(), out, nq, blocks, qi, parts, data, block)
}

// laneScore4At is laneScore4 on the kernel of the given level: AVX-512
// for four queries at once, AVX2 for two (twice for three or four).
func laneScore4At(level kernelLevel, out *[4][]float32, nq, blocks int, qi []float32, parts []lanePart, data []byte, block int) {
	if level == levelGo || blocks == 0 {
		laneScore4Go(out, nq, blocks, qi, parts, data, block)
		return
	}
	_ = data[blocks*block+laneSlack-1]
	last := parts[len(parts)-1]
	_ = qi[last.qoff/4+4*last.dim-1]
	if level == levelAVX512 {
		var p [4]*float32
		for j := range nq {
			p[j] = &out[j][:blocks*laneBlock][0]
		}
		laneScore4AVX512(&p, nq, blocks, &qi[0], &parts[0], len(parts), &data[0], block)
		return
	}
	for j := 0; j < nq; j += 2 {
		var p [2]*float32
		for i := range min(2, nq-j) {
			p[i] = &out[j+i][:blocks*laneBlock][0]
		}
		laneScore2AVX2(&p, blocks, &qi[j], &parts[0], len(parts), &data[0], block)
	}
}

//go:noescape
func laneAcc4AVX512(acc *[4]*float32, nq int, w *[4]*float32, wbuf *float32, nb int, part *lanePart, data *byte, block int)

//go:noescape
func laneAcc2AVX2(acc *[2]*float32, w *[2]*float32, wbuf *float32, nb int, part *lanePart, data *byte, block int)

// laneAcc4 adds four heads' weighted sums of the nb blocks' values of one
// part (see laneAcc4Go), on the best kernel the CPU has.
func laneAcc4(acc *[4][]float32, nq int, w *[4][]float32, wbuf []float32, nb int, p *lanePart, data []byte, block int) {
	laneAcc4At(bestLevel(), acc, nq, w, wbuf, nb, p, data, block)
}

// laneAcc4At is laneAcc4 on the kernel of the given level: AVX-512 for
// four heads at once, AVX2 for two (twice for three or four; wbuf then
// holds the last pair's weighted scales, in the AVX2 kernel's layout).
func laneAcc4At(level kernelLevel, acc *[4][]float32, nq int, w *[4][]float32, wbuf []float32, nb int, p *lanePart, data []byte, block int) {
	if level == levelGo || nb == 0 {
		laneAcc4Go(acc, nq, w, wbuf, nb, p, data, block)
		return
	}
	_ = data[nb*block+laneSlack-1]
	_ = wbuf[4*nb*laneBlock-1]
	var pw [4]*float32
	for j := range 4 {
		pw[j] = &w[j][:nb*laneBlock][0]
	}
	if level == levelAVX512 {
		var pa [4]*float32
		for j := range nq {
			pa[j] = &acc[j][:p.dim][0]
		}
		laneAcc4AVX512(&pa, nq, &pw, &wbuf[0], nb, p, &data[0], block)
		return
	}
	for j := 0; j < nq; j += 2 {
		var pa [2]*float32
		for i := range min(2, nq-j) {
			pa[i] = &acc[j+i][:p.dim][0]
		}
		laneAcc2AVX2(&pa, &[2]*float32{pw[j], pw[j+1]}, &wbuf[0], nb, p, &data[0], block)
	}
}

// The kernels read lanePart's fields at fixed offsets.
var _ = [1]struct{}{}[unsafe.Offsetof(lanePart{}.table)-48]
var _ = [1]struct{}{}[unsafe.Offsetof(lanePart{}.ctrl)-112]
var _ = [1]struct{}{}[unsafe.Sizeof(lanePart{})-200]
