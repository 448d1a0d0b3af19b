//go:build amd64 && !purego

package quant

import "unsafe"

//go:noescape
func laneScore4AVX512(out *[4]*float32, nq int, blocks int, q *float32, parts *lanePart, nparts int, data *byte, block int)

// laneScore4 scores blocks of Lanes codes against four queries (see
// laneScore4Go), on the AVX-512 kernel where the CPU has it.
func laneScore4(out *[4][]float32, nq, blocks int, qi []float32, parts []lanePart, data []byte, block int) {
	if !simd.avx512 || blocks == 0 {
		laneScore4Go(out, nq, blocks, qi, parts, data, block)
		return
	}
	_ = data[blocks*block+laneSlack-1]
	var p [4]*float32
	for j := range nq {
		p[j] = &out[j][:blocks*laneBlock][0]
	}
	last := parts[len(parts)-1]
	_ = qi[last.qoff/4+4*last.dim-1]
	laneScore4AVX512(&p, nq, blocks, &qi[0], &parts[0], len(parts), &data[0], block)
}

//go:noescape
func laneAcc4AVX512(acc *[4]*float32, nq int, w *[4]*float32, wbuf *float32, nb int, part *lanePart, data *byte, block int)

// laneAcc4 adds four heads' weighted sums of the nb blocks' values of one
// part (see laneAcc4Go), on the AVX-512 kernel where the CPU has it.
func laneAcc4(acc *[4][]float32, nq int, w *[4][]float32, wbuf []float32, nb int, p *lanePart, data []byte, block int) {
	if !simd.avx512 || nb == 0 {
		laneAcc4Go(acc, nq, w, wbuf, nb, p, data, block)
		return
	}
	_ = data[nb*block+laneSlack-1]
	_ = wbuf[4*nb*laneBlock-1]
	var pa, pw [4]*float32
	for j := range 4 {
		pw[j] = &w[j][:nb*laneBlock][0]
		if j < nq {
			pa[j] = &acc[j][:p.dim][0]
		}
	}
	laneAcc4AVX512(&pa, nq, &pw, &wbuf[0], nb, p, &data[0], block)
}

// The kernels read lanePart's fields at fixed offsets.
var _ = [1]struct{}{}[unsafe.Offsetof(lanePart{}.table)-48]
var _ = [1]struct{}{}[unsafe.Offsetof(lanePart{}.ctrl)-112]
var _ = [1]struct{}{}[unsafe.Sizeof(lanePart{})-200]
