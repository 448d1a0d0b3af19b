package tensor

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// The multi-row product of a batched decode step (multirow.go) for the
// K-quants Q4_K, Q5_K and Q6_K, against Q8_K activations. Each super-block of
// a weight row (256 elements) is read and unpacked once, its quants to
// 256 unsigned bytes in element order and its sub-block scales to int16
// words, and dotted with every vector of the pass, with llama.cpp's
// integer arithmetic (ggml_vec_dot_q6_K_q8_K, …_q4_K_q8_K): per 64
// elements VPMADDUBSW sums pairs of unsigned-weight × signed-activation
// bytes to int16, and VPDPWSSD multiplies two such pairs by their
// sub-block scale and adds them to one int32 lane, so that each lane of
// four elements holds Σ scale·q·xq exactly. The block's constant terms
// come from the activation's 16-element sums bsums: Q6_K's −32 offset
// (−32·scale·bsum per 16 elements) starts the lanes; Q4_K's and Q5_K's mins
// (m·(bsum+bsum) per 32 elements) take lanes of their own, scaled by
// dmin. The lanes are converted and accumulated, times dw·dx (and dmin·dx),
// per vector; at the end each vector's 16 lanes are summed. The integer
// sums are the one-row dot's; only the float scaling and summation run in
// another order (per lane, not per block).
const (
	// multiKVecBytes is one vector's share of a pass's block in the
	// Q8_K pack: the 256 quants, the 16 bsums (int16) and d (float32),
	// padded to five cache lines.
	multiKVecBytes = 320
	multiKBsums    = QK_K      // offset of the bsums
	multiKScale    = QK_K + 32 // offset of d
)

// setVectorK packs Q8_K activation a as vector v: per block its quants,
// bsums and scale.
func (p *multiPack) setVectorK(v int, a *activation) {
	qs := unsafe.Slice((*byte)(unsafe.Pointer(&a.qs[0])), len(a.qs))
	for b := range p.steps {
		o := (b*p.n + v) * multiKVecBytes
		dst := p.b[o : o+multiKVecBytes]
		copy(dst, qs[b*QK_K:(b+1)*QK_K])
		for g, s := range a.bsums[b*16 : (b+1)*16] {
			binary.LittleEndian.PutUint16(dst[multiKBsums+2*g:], uint16(s))
		}
		binary.LittleEndian.PutUint32(dst[multiKScale:], math.Float32bits(a.d[b]))
	}
}

// packedK returns vector v's quants, bsums and scale of block b in p.
func (p *multiPack) packedK(b, v int) (xq *[QK_K]int8, bs [16]int32, dx float32) {
	o := (b*p.n + v) * multiKVecBytes
	x := p.b[o : o+multiKVecBytes]
	xq = (*[QK_K]int8)(unsafe.Pointer(&x[0]))
	for g := range bs {
		bs[g] = int32(int16(binary.LittleEndian.Uint16(x[multiKBsums+2*g:])))
	}
	return xq, bs, math.Float32frombits(binary.LittleEndian.Uint32(x[multiKScale:]))
}

// dotKRows checks the bounds of a K-quant multi-row product of blocks of
// blockBytes (multiRowBounds) and runs kernel on it.
func dotKRows(w []byte, rowBytes, rows int, p *multiPack, out []float32, stride, blockBytes int, kernel func([]byte, int, int, *multiPack, []float32, int)) {
	if multiRowBounds(w, rowBytes, rows, p, out, stride, blockBytes) {
		kernel(w, rowBytes, rows, p, out, stride)
	}
}

// dotQ6_KRows sets out[v·stride + r] to Q6_K weight row r of w (rows
// rows of rowBytes) dotted with vector v of p, for every row and vector.
func dotQ6_KRows(w []byte, rowBytes, rows int, p *multiPack, out []float32, stride int) {
	dotKRows(w, rowBytes, rows, p, out, stride, q6_KBytes, dotQ6_KRowsKernel)
}

// dotQ4_KRows is dotQ6_KRows for Q4_K weights.
func dotQ4_KRows(w []byte, rowBytes, rows int, p *multiPack, out []float32, stride int) {
	dotKRows(w, rowBytes, rows, p, out, stride, q4_KBytes, dotQ4_KRowsKernel)
}

// dotQ5_KRows is dotQ6_KRows for Q5_K weights.
func dotQ5_KRows(w []byte, rowBytes, rows int, p *multiPack, out []float32, stride int) {
	dotKRows(w, rowBytes, rows, p, out, stride, q5_KBytes, dotQ5_KRowsKernel)
}

// laneOf is the int32 lane (of 16) that holds element e of a block: the
// kernel takes 64 elements a step, four a lane.
func laneOf(e int) int { return e % 64 / 4 }

// dotKRowsGo runs the rows and blocks of blockBytes of a pure-Go twin
// of the K-quant kernels: block adds block blk (of index b) of a row to
// the lanes of every vector in acc; each vector's lanes are summed by
// halves last, as the kernels do.
func dotKRowsGo(w []byte, rowBytes, rows int, p *multiPack, out []float32, stride int, blockBytes int, block func(blk []byte, b int, acc *[multiRows][16]float32)) {
	for r := range rows {
		row := w[r*rowBytes : (r+1)*rowBytes]
		var acc [multiRows][16]float32
		for b := range p.steps {
			block(row[b*blockBytes:(b+1)*blockBytes], b, &acc)
		}
		for v := range p.n {
			out[v*stride+r] = sumLanes(&acc[v])
		}
	}
}

// dotQ6_KRowsGo is the pure-Go twin of the Q6_K assembly kernel, in its
// order of operations: per block and vector, the integer lane sums
// (exact), converted, times dw·dx, accumulated per lane.
func dotQ6_KRowsGo(w []byte, rowBytes, rows int, p *multiPack, out []float32, stride int) {
	var q [QK_K]byte
	dotKRowsGo(w, rowBytes, rows, p, out, stride, q6_KBytes, func(blk []byte, b int, acc *[multiRows][16]float32) {
		for n := range 2 {
			q6_KHalf(q[128*n:128*n+64], q[128*n+64:128*(n+1)], blk, n)
		}
		var sc [16]int32
		for g := range sc {
			sc[g] = int32(int8(blk[192+g]))
		}
		dw := f16Scale(blk[208:])
		for v := range p.n {
			xq, bs, dx := p.packedK(b, v)
			var lanes [16]int32
			for l := range 8 { // the −32 offset, by pairs of sub-blocks
				lanes[l] = -32*sc[2*l]*bs[2*l] - 32*sc[2*l+1]*bs[2*l+1]
			}
			for e, qe := range q {
				lanes[laneOf(e)] += sc[e/16] * int32(qe) * int32(xq[e])
			}
			s := dw * dx
			for l, i := range lanes {
				acc[v][l] += float32(i) * s
			}
		}
	})
}

// dotQ4_KRowsGo is the pure-Go twin of the Q4_K assembly kernel.
func dotQ4_KRowsGo(w []byte, rowBytes, rows int, p *multiPack, out []float32, stride int) {
	dotK45RowsGo(w, rowBytes, rows, p, out, stride, q4_KBytes, func(q, blk []byte, c int) {
		splitNibbles(q, blk[16+32*c:48+32*c])
	})
}

// dotQ5_KRowsGo is the pure-Go twin of the Q5_K assembly kernel.
func dotQ5_KRowsGo(w []byte, rowBytes, rows int, p *multiPack, out []float32, stride int) {
	dotK45RowsGo(w, rowBytes, rows, p, out, stride, q5_KBytes, q5_KStep)
}

// dotK45RowsGo is the pure-Go twin of the Q4_K and Q5_K assembly
// kernels, for blocks of blockBytes whose step c of 64 quants step
// writes in element order, in the kernels' order of operations: per
// block and vector, the integer lane sums of scale·q·xq and of the mins
// m·bsum (exact), converted, the first times dw·dx added to the lanes,
// the second times dmin·dx subtracted.
func dotK45RowsGo(w []byte, rowBytes, rows int, p *multiPack, out []float32, stride int, blockBytes int, step func(q, blk []byte, c int)) {
	var q [QK_K]byte
	dotKRowsGo(w, rowBytes, rows, p, out, stride, blockBytes, func(blk []byte, b int, acc *[multiRows][16]float32) {
		for c := range 4 {
			step(q[64*c:64*(c+1)], blk, c)
		}
		sc, m := kScales((*[12]byte)(blk[4:16]))
		dw, dmin := f16Scale(blk[0:]), f16Scale(blk[2:])
		for v := range p.n {
			xq, bs, dx := p.packedK(b, v)
			var lanes, mins [16]int32
			for e, qe := range q {
				lanes[laneOf(e)] += sc[e/32] * int32(qe) * int32(xq[e])
			}
			for j := range 8 {
				mins[j] = m[j]*bs[2*j] + m[j]*bs[2*j+1]
			}
			s, sm := dw*dx, dmin*dx
			for l := range lanes {
				acc[v][l] += float32(lanes[l]) * s
				acc[v][l] -= float32(mins[l]) * sm
			}
		}
	})
}
