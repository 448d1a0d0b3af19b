//go:build amd64 && !purego

package kvcache

import "golang.org/x/sys/cpu"

// hasAVX512 selects turnAdd4's kernel (hasAVX2 next); read-only after
// initialisation.
var hasAVX512 = cpu.X86.HasAVX512F

//go:noescape
func turnAdd4AVX512(out *[4]*float32, w *float32, rows int, table *float32, stride int, set int)

//go:noescape
func turnAdd4AVX2(out *[4]*float32, w *float32, rows int, table *float32, stride int, set int)

// turnKernel names one of turnAdd4's kernels.
type turnKernel int

const (
	turnGo turnKernel = iota
	turnAVX2
	turnAVX512
)

// bestTurn is the kernel turnAdd4 uses; read-only after initialisation.
var bestTurn = turnKernels()[len(turnKernels())-1]

// turnKernels returns the kernels the CPU can run, the pure-Go twin
// first and the best last.
func turnKernels() []turnKernel {
	k := []turnKernel{turnGo}
	if hasAVX2 {
		k = append(k, turnAVX2)
	}
	if hasAVX512 {
		k = append(k, turnAVX512)
	}
	return k
}

// turnAdd4 adds (or, with set, writes) to out[q][j] the sum
// Σ_{k<rows} w[q·rows + k]·table[k·stride + j] for four queries q and the
// ropeChunk positions j of a chunk: the rows of the table weighed for
// four queries at once, the sums of 16 positions (AVX-512: all 64) in
// registers while the rows stream by.
func turnAdd4(out *[4][]float32, w []float32, rows int, table []float32, stride int, set bool) {
	turnAdd4With(bestTurn, out, w, rows, table, stride, set)
}

// turnAdd4With is turnAdd4 on kernel k.
func turnAdd4With(k turnKernel, out *[4][]float32, w []float32, rows int, table []float32, stride int, set bool) {
	if k == turnGo || rows == 0 {
		turnAdd4Go(out, w, rows, table, stride, set)
		return
	}
	_ = w[4*rows-1]
	_ = table[(rows-1)*stride+ropeChunk-1]
	var p [4]*float32
	for q := range p {
		p[q] = &out[q][:ropeChunk][0]
	}
	s := 0
	if set {
		s = 1
	}
	if k == turnAVX512 {
		turnAdd4AVX512(&p, &w[0], rows, &table[0], stride, s)
		return
	}
	turnAdd4AVX2(&p, &w[0], rows, &table[0], stride, s)
}

//go:noescape
func meanAdd4AVX512(out, ew *[4]*float32, erows int, nw *[4]*float32, table *float32, stride int)

//go:noescape
func meanAdd4AVX2(out, ew *[4]*float32, erows int, nw *[4]*float32, table *float32, stride int)

// meanAdd4 adds to out[q][j] the sum Σ_{k<erows} ew[q][k]·table[k·stride
// + j] + Σ_{k<ropeNodes} nw[q][k]·table[(erows+k)·stride + j] for four
// slots q and the ropeChunk positions j of a chunk: turnAdd4 with each
// slot's weights in two pieces of its own (a span's exact pairs and a
// chunk's node sums), read where they are.
func meanAdd4(out, ew, nw *[4][]float32, erows int, table []float32, stride int) {
	meanAdd4With(bestTurn, out, ew, nw, erows, table, stride)
}

// meanAdd4With is meanAdd4 on kernel k.
func meanAdd4With(k turnKernel, out, ew, nw *[4][]float32, erows int, table []float32, stride int) {
	if k == turnGo {
		meanAdd4Go(out, ew, nw, erows, table, stride)
		return
	}
	_ = table[(erows+ropeNodes-1)*stride+ropeChunk-1]
	var o, e, n [4]*float32
	for q := range o {
		o[q] = &out[q][:ropeChunk][0]
		n[q] = &nw[q][:ropeNodes][0]
		if erows > 0 {
			e[q] = &ew[q][:erows][0]
		}
	}
	if k == turnAVX512 {
		meanAdd4AVX512(&o, &e, erows, &n, &table[0], stride)
		return
	}
	meanAdd4AVX2(&o, &e, erows, &n, &table[0], stride)
}

//go:noescape
func spanWeightsAVX512(w, z, turns *float32, pe, nq int)

// spanWeights sets, for nq queries, the exact pairs' weights of a span
// from the plan's z (per query Re z of pe pairs, then Im z) and the
// span's turns (cos(s·ω) of each pair, then sin(s·ω)): w = z·e^(i·s·ω),
// per query u = Re w of each pair, then v = −Im w.
func spanWeights(w, z, turns []float32, pe, nq int) {
	if !hasAVX512 || pe == 0 || nq == 0 {
		spanWeightsGo(w, z, turns, pe, nq)
		return
	}
	_, _, _ = w[nq*2*pe-1], z[nq*2*pe-1], turns[2*pe-1]
	spanWeightsAVX512(&w[0], &z[0], &turns[0], pe, nq)
}

//go:noescape
func meanRunAVX512(out *[4]*float32, ew *float32, ewStep, erows int, nw *float32, nwStride int, table *float32, col0, chunks int)

// meanRun is meanAdd4 over a run of chunks for the four queries of a
// group: chunk i adds to out[q][64i:64i+64], at column col0+i of the
// spans from the table's start (the columns of the table taken in turn),
// with the exact weights of span (col0+i)/2, ew[span·ewStep + q·erows:]
// (erows of them), and the node sums nw[q·nwStride + ropeNodes·i:].
func meanRun(out *[4][]float32, ew []float32, ewStep, erows int, nw []float32, nwStride int, table []float32, col0, chunks int) {
	if !hasAVX512 {
		meanRunEach(meanAdd4, out, ew, ewStep, erows, nw, nwStride, table, col0, chunks)
		return
	}
	if chunks <= 0 {
		return
	}
	if col0 < 0 || col0 >= ropeSpan/ropeChunk {
		panic("kvcache: meanRun: column out of range")
	}
	var e *float32
	if erows > 0 {
		spans := (col0 + chunks + 1) / (ropeSpan / ropeChunk)
		_ = ew[(spans-1)*ewStep+4*erows-1]
		e = &ew[0]
	}
	_ = nw[3*nwStride+chunks*ropeNodes-1]
	_ = table[(erows+ropeNodes-1)*ropeSpan+ropeSpan-1]
	var o [4]*float32
	for q := range o {
		o[q] = &out[q][:chunks*ropeChunk][0]
	}
	meanRunAVX512(&o, e, ewStep, erows, &nw[0], nwStride, &table[0], col0, chunks)
}

//go:noescape
func turnTiles4AVX512(out *[4]*float32, w *float32, rows int, tiles *float32)

//go:noescape
func turnTiles4AVX2(out *[4]*float32, w *float32, rows int, tiles *float32)

// turnTiles4 sets out[q][16t + j] = Σ_{k<rows} w[q·rows + k]·tiles[(t·rows
// + k)·nodeTile + j] for four queries q and the nodeTile columns j of two
// tiles t < 2 of a block's node turns: turnAdd4 with set over 32
// columns whose rows lie together, a tile's after another.
func turnTiles4(out *[4][]float32, w []float32, rows int, tiles []float32) {
	turnTiles4With(bestTurn, out, w, rows, tiles)
}

// turnTiles4With is turnTiles4 on kernel k.
func turnTiles4With(k turnKernel, out *[4][]float32, w []float32, rows int, tiles []float32) {
	if k == turnGo || rows == 0 {
		turnTiles4Go(out, w, rows, tiles)
		return
	}
	_ = w[4*rows-1]
	_ = tiles[2*rows*nodeTile-1]
	var p [4]*float32
	for q := range p {
		p[q] = &out[q][:2*nodeTile][0]
	}
	if k == turnAVX512 {
		turnTiles4AVX512(&p, &w[0], rows, &tiles[0])
		return
	}
	turnTiles4AVX2(&p, &w[0], rows, &tiles[0])
}
