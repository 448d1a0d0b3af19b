package tensor

import (
	"encoding/binary"
	"fmt"
	"math"
)

// The product of a batched decode step: a few activation vectors (the
// rows of a Batch, one per sequence) against Q8_0 weight rows read as
// they are stored, with no repacking. Each pair of weight blocks (64
// elements) is loaded once, its quants offset to unsigned (w+128) and its
// two scales widened, and dotted with every vector of the pass: VPDPBUSD
// sums four unsigned-weight × signed-activation byte products per int32
// lane, starting from the lane's −128·Σ₄xq so that the sum is Σ₄ w·xq
// exactly; the lane is converted, scaled by dw·dx and accumulated per
// vector. At the end each vector's 16 lanes are summed. The weights are
// read once per step for all the vectors, where the tiled kernel (gemm.go)
// would first rewrite every weight panel, at a cost that rivals the
// product's when there are few vectors.
const (
	multiRows     = 16 // most vectors per pass (one accumulator register each)
	multiStep     = 64 // elements per step: two Q8_0 blocks
	multiVecBytes = multiStep + 16*4 + 16*4
	// multiMax is the most vectors a Q8_0 product takes this way: beyond
	// it the tiled kernel's repacking pays for itself (not so for the
	// K-quants' kernels, which take any number: useMulti).
	multiMax = 3 * multiRows
)

// multiPack is up to multiRows activations in a multi-row kernel's
// layout, by steps (a step's vectors one after another). Q8_0's (kind
// actQ8_0): per step of 64 elements and per vector, multiVecBytes bytes:
// the 64 quants, 16 int32 lane offsets −128·Σ₄xq, and 16 float32 lane
// scales (lanes 0–7 the first block's dx, 8–15 the second's). Q8_K's
// (actQ8_K, for the K-quants): per block of 256 elements and per
// vector, multiKVecBytes (multirow_k.go).
type multiPack struct {
	b     []byte
	kind  actKind
	n     int // vectors
	steps int
	// odd holds the vectors' activations when the row has an odd last
	// block, which the Go code adds (the kernel reads whole pairs).
	odd []*activation
}

// set packs acts (at most multiRows, of kind k: actQ8_0 over cols
// elements a multiple of 32, or actQ8_K over a multiple of 256).
func (p *multiPack) set(k actKind, acts []*activation, cols int) {
	p.reset(k, acts, cols)
	for v, a := range acts {
		p.setVector(v, a)
	}
}

// reset sizes p for acts of kind k over cols elements; setVector then
// packs each (once it holds its quants).
func (p *multiPack) reset(k actKind, acts []*activation, cols int) {
	p.kind, p.n = k, len(acts)
	p.odd = p.odd[:0]
	if k == actQ8_K {
		p.steps = cols / QK_K
		p.b = grown(p.b, p.steps*p.n*multiKVecBytes)
		return
	}
	p.steps = cols / multiStep
	p.b = grown(p.b, p.steps*p.n*multiVecBytes)
	if cols%multiStep != 0 {
		p.odd = append(p.odd, acts...)
	}
}

// multiPasses returns how many passes of at most multiRows vectors serve
// n vectors, and pass j's first vector (j = passes gives n): passes of
// near-equal size.
func multiPasses(n int) int { return (n + multiRows - 1) / multiRows }

func passStart(j, passes, n int) int { return n * j / passes }

// setVector packs activation a as vector v.
func (p *multiPack) setVector(v int, a *activation) {
	if p.steps == 0 {
		return
	}
	if p.kind == actQ8_K {
		p.setVectorK(v, a)
		return
	}
	_ = a.qs[p.steps*multiStep-1]
	_ = a.d[2*p.steps-1]
	_ = p.b[((p.steps-1)*p.n+v+1)*multiVecBytes-1]
	multiPackKernel(p, v, a)
}

// setVectorGo is setVector in Go: the twin of the assembly.
func (p *multiPack) setVectorGo(v int, a *activation) {
	for s := range p.steps {
		o := (s*p.n + v) * multiVecBytes
		dst := p.b[o : o+multiVecBytes]
		xq := a.qs[s*multiStep : (s+1)*multiStep]
		for i, x := range xq {
			dst[i] = byte(x)
		}
		for l := range 16 {
			sum := int32(xq[4*l]) + int32(xq[4*l+1]) + int32(xq[4*l+2]) + int32(xq[4*l+3])
			binary.LittleEndian.PutUint32(dst[multiStep+4*l:], uint32(-128*sum))
			binary.LittleEndian.PutUint32(dst[multiStep+64+4*l:], math.Float32bits(a.d[2*s+l/8]))
		}
	}
}

// dotQ8_0Rows sets out[v·stride + r] to weight row r of w (rows rows of
// rowBytes) dotted with vector v of p, for every row and vector.
func dotQ8_0Rows(w []byte, rowBytes, rows int, p *multiPack, out []float32, stride int) {
	if multiRowBounds(w, rowBytes, rows, p, out, stride, 2*q8_0Bytes) {
		dotQ8_0RowsKernel(w, rowBytes, rows, p, out, stride)
		p.addOdd(w, rowBytes, rows, out, stride)
	}
}

// multiRowBounds checks a multi-row product of rows rows of rowBytes in
// w against pack p (p.steps steps of stepBytes of each row) into out,
// and reports whether there is anything to compute. The kernels read
// p.steps steps of each row and keep one accumulator per vector, so rows
// shorter than the pack's steps, or more than multiRows vectors, would
// read past w or drop vectors where the pure-Go twins panic: they panic
// here, as a slice out of bounds does.
func multiRowBounds(w []byte, rowBytes, rows int, p *multiPack, out []float32, stride, stepBytes int) bool {
	if rows == 0 || p.n == 0 {
		return false
	}
	if p.n > multiRows {
		panic(fmt.Sprintf("tensor: multi-row product of %d vectors, at most %d", p.n, multiRows))
	}
	if p.steps*stepBytes > rowBytes {
		panic(fmt.Sprintf("tensor: multi-row product: rows of %d bytes, %d steps of %d bytes", rowBytes, p.steps, stepBytes))
	}
	_ = w[rows*rowBytes-1]
	_ = out[(p.n-1)*stride+rows-1]
	if p.steps > 0 { // none where a Q8_0 row is one odd block
		vecBytes := multiVecBytes
		if p.kind == actQ8_K {
			vecBytes = multiKVecBytes
		}
		_ = p.b[p.steps*p.n*vecBytes-1]
	}
	return true
}

// addOdd adds the odd last block of each row, if the rows have one, to
// what the kernel gave for the whole pairs.
func (p *multiPack) addOdd(w []byte, rowBytes, rows int, out []float32, stride int) {
	if len(p.odd) == 0 {
		return
	}
	last := p.steps * 2 // the odd block
	for r := range rows {
		blk := w[r*rowBytes+last*q8_0Bytes : (r+1)*rowBytes]
		for v, a := range p.odd {
			out[v*stride+r] += dotRowQ8_0Go(blk, &activation{qs: a.qs[last*qk0:], d: a.d[last:]})
		}
	}
}

// dotQ8_0RowsGo is the pure-Go twin of the assembly kernel, in its order
// of operations: per step and vector, the integer lane sums (exact),
// converted, times dw·dx, accumulated per lane; the lanes summed by
// halves last.
func dotQ8_0RowsGo(w []byte, rowBytes, rows int, p *multiPack, out []float32, stride int) {
	for r := range rows {
		row := w[r*rowBytes : (r+1)*rowBytes]
		var acc [multiRows][16]float32
		for s := range p.steps {
			pair := row[s*2*q8_0Bytes : (s+1)*2*q8_0Bytes]
			dw := [2]float32{f16Scale(pair), f16Scale(pair[q8_0Bytes:])}
			for v := range p.n {
				o := (s*p.n + v) * multiVecBytes
				x := p.b[o : o+multiVecBytes]
				for l := range 16 {
					q := pair[2+4*l:]
					if l >= 8 {
						q = pair[q8_0Bytes+2+4*(l-8):]
					}
					var d int32
					for k := range 4 {
						d += int32(int8(q[k])) * int32(int8(x[4*l+k]))
					}
					sc := dw[l/8] * math.Float32frombits(binary.LittleEndian.Uint32(x[multiStep+64+4*l:]))
					acc[v][l] += sc * float32(d)
				}
			}
		}
		for v := range p.n {
			out[v*stride+r] = sumLanes(&acc[v])
		}
	}
}

// sumLanes adds 16 lanes as the kernel does: halves, quarters, pairs.
func sumLanes(a *[16]float32) float32 {
	var h [8]float32
	for i := range h {
		h[i] = a[i] + a[i+8]
	}
	var q [4]float32
	for i := range q {
		q[i] = h[i] + h[i+4]
	}
	return (q[0] + q[2]) + (q[1] + q[3])
}
