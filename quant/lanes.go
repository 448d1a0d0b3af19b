package quant

import (
	"encoding/binary"
	"fmt"

	"github.com/turbomem/turbomem/half"
)

// Lanes holds the codes of a quantizer made of scaled-code segments
// (TurboMSE, a Split of two, TurboProd, QJL: an fp16 scale and packed
// b-bit indices each, b ≤ 4) laneBlock tokens to a block, laid out for
// scoring with the tokens in SIMD lanes: per segment, the block's 16
// scales side by side, then per coordinate the 16 tokens' indices packed
// side by side (2b bytes, token s at bits [s·b, (s+1)·b)). A coordinate's
// 16 indices are then one group of the packed layout, which the unpack
// kernel (VPMULTISHIFTQB and VPERMPS) turns into 16 values, one per
// token; four queries' coordinate, broadcast, weighs them into four sums
// whose lanes are the tokens: no horizontal sums, which the
// token-by-token kernels pay for every token and query. Values are summed
// the same way (Accumulate): per coordinate, the 16 tokens' values
// weighed by the four heads' weights (times the tokens' scales) into
// lanes, summed across the lanes once per 256 tokens. The bytes are the
// codes' own, moved.
type Lanes struct {
	q     Quantizer
	parts []lanePart
	segs  []segment // the quantizer's segments, as parts
	code  int       // bytes of one code
	block int       // bytes of one block
	data  []byte    // whole blocks, then laneSlack bytes
	n     int       // tokens held
	tmp   []byte    // codes being added
	sc    Scratch   // the encoder's buffers
}

// lanePart is one segment in a block, as the kernel reads it (176
// bytes).
type lanePart struct {
	scales int // byte offset of the 16 scales in a block
	planes int // byte offset of the first coordinate's 16 indices
	dim    int // coordinates, a multiple of 16
	step   int // bytes per coordinate: 2b
	qoff   int // byte offset of the segment's queries (4 floats a coordinate)
	_      int
	table  [16]float32 // centroid k mod 2^b at entry k
	ctrl   [64]byte    // VPMULTISHIFTQB controls for b-bit indices
	// not read by the kernels
	off, bits int // the segment's byte offset in a code, index bits
	at        int // the segment's offset in the internal basis
}

const (
	// laneBlock is the number of tokens in a block: one 512-bit vector
	// of float32 scores.
	laneBlock = 16
	// laneSlack is the bytes past the last block that a kernel's 8-byte
	// load of the last coordinate's indices may read.
	laneSlack = 8
)

// NewLanes returns an empty Lanes for q's codes, or nil if q is not made
// of scaled-code segments of 16-coordinate multiples that cover its
// codes.
func NewLanes(q Quantizer) *Lanes {
	segs := segments(q, 0, nil)
	if segs == nil {
		return nil
	}
	l := &Lanes{q: q, code: q.Bytes(), segs: segs}
	at, qoff := 0, 0
	for _, sg := range segs {
		p := sg.part
		if p.dim%16 != 0 || p.bits < 1 || p.bits > 4 || p.off != at {
			return nil
		}
		lp := lanePart{scales: laneBlock * at, planes: laneBlock*at + 2*laneBlock, dim: p.dim, step: 2 * p.bits,
			qoff: qoff, off: p.off, bits: p.bits, at: qoff / 16}
		for k := range lp.table {
			lp.table[k] = p.table[k&(1<<p.bits-1)]
		}
		for k := range 8 {
			lp.ctrl[8*k] = byte(2 * k * p.bits)
			lp.ctrl[8*k+4] = byte((2*k + 1) * p.bits)
		}
		l.parts = append(l.parts, lp)
		at += 2 + p.dim*p.bits/8
		qoff += 16 * p.dim
	}
	if at != l.code {
		return nil
	}
	l.block = laneBlock * l.code
	l.data = make([]byte, laneSlack)
	return l
}

// Len returns the number of tokens held.
func (l *Lanes) Len() int { return l.n }

// Quantizer returns the quantizer whose codes l holds.
func (l *Lanes) Quantizer() Quantizer { return l.q }

// Bytes returns the bytes of the tokens' codes (a block's unused slots
// are not counted).
func (l *Lanes) Bytes() int { return l.n * l.code }

// Append encodes the vectors of xs (a multiple of Dim values) after the
// tokens held.
func (l *Lanes) Append(xs []float32) error {
	d := l.q.Dim()
	if len(xs)%d != 0 {
		return fmt.Errorf("quant: lanes: %d values, not a multiple of %d", len(xs), d)
	}
	m := len(xs) / d
	if cap(l.tmp) < m*l.code {
		l.tmp = make([]byte, m*l.code)
	}
	codes := l.tmp[:m*l.code]
	if err := EncodeBatchScratch(l.q, codes, xs, &l.sc); err != nil {
		return err
	}
	return l.AppendCodes(codes)
}

// put writes a code into slot s of a block: each coordinate's b-bit
// index at bits [s·b, (s+1)·b) of its 2b bytes. The code's indices are
// read 16 at a time (2b bytes, one word), and the slot's byte and shift
// are the same for every coordinate (Code is the bit-by-bit inverse that
// the tests compare with).
func (l *Lanes) put(blk []byte, s int, code []byte) {
	for _, p := range l.parts {
		copy(blk[p.scales+2*s:p.scales+2*s+2], code[p.off:p.off+2])
		b, step := p.bits, p.step
		idx := code[p.off+2 : p.off+2+p.dim*b/8]
		at, sh := p.planes+s*b>>3, uint(s*b&7)
		cross := s*b&7+b > 8
		mask := uint64(1)<<b - 1
		for k := 0; k < p.dim; k, idx = k+16, idx[2*b:] {
			w := loadLE(idx[:2*b])
			for i := range 16 {
				x := uint32(w>>(uint(i*b))&mask) << sh
				j := at + (k+i)*step
				blk[j] |= byte(x)
				if cross {
					blk[j+1] |= byte(x >> 8)
				}
			}
		}
	}
}

// loadLE returns the little-endian number in src (at most 8 bytes).
func loadLE(src []byte) uint64 {
	switch len(src) {
	case 8:
		return binary.LittleEndian.Uint64(src)
	case 4:
		return uint64(binary.LittleEndian.Uint32(src))
	}
	var w uint64
	for i, c := range src {
		w |= uint64(c) << (8 * i)
	}
	return w
}

// Code writes the code of token t (its quantizer's layout) into dst.
func (l *Lanes) Code(dst []byte, t int) {
	blk, s := l.data[t/laneBlock*l.block:], t%laneBlock
	for _, p := range l.parts {
		copy(dst[p.off:p.off+2], blk[p.scales+2*s:p.scales+2*s+2])
		idx := dst[p.off+2 : p.off+2+p.dim*p.bits/8]
		clear(idx)
		for k := range p.dim {
			setBits(idx, k*p.bits, p.bits, getBits(blk[p.planes+k*p.step:], s*p.bits, p.bits))
		}
	}
}

// getBits returns the b bits at bit offset bit of the little-endian
// stream src.
func getBits(src []byte, bit, b int) uint32 {
	x := uint32(src[bit>>3])
	if bit&7+b > 8 {
		x |= uint32(src[bit>>3+1]) << 8
	}
	return x >> (bit & 7) & (1<<b - 1)
}

// setBits ors the b bits of v into the little-endian stream dst at bit
// offset bit (the bits there are zero).
func setBits(dst []byte, bit, b int, v uint32) {
	x := v << (bit & 7)
	dst[bit>>3] |= byte(x)
	if bit&7+b > 8 {
		dst[bit>>3+1] |= byte(x >> 8)
	}
}

// LaneQueries holds queries set up for Lanes' scoring kernel: turned into
// each segment's basis and interleaved four to a coordinate, per group of
// four queries (a short last group padded with zeros). PrepareQueries
// fills it once (or BeginQueries, then PrepareQuery for each query,
// several at once if need be); every range of tokens ScorePrepared
// scores with it then shares that work, as the slices of one attention
// step do.
type LaneQueries struct {
	qi   []float32 // per group of four: 4·dim values per segment
	n    int       // queries
	size int       // values per group
	// per query, 2·scratch values: a segment's turned and gathered query
	buf     []float32
	scratch int
}

// Len returns the number of queries lq holds.
func (lq *LaneQueries) Len() int { return lq.n }

// PrepareQueries sets lq to the queries qs (each of the quantizer's
// dimension) in the kernel's layout, reusing lq's storage.
func (l *Lanes) PrepareQueries(lq *LaneQueries, qs [][]float32) error {
	l.BeginQueries(lq, len(qs))
	for j, q := range qs {
		if err := l.PrepareQuery(lq, j, q); err != nil {
			return err
		}
	}
	return nil
}

// BeginQueries sizes lq for n queries, reusing its storage; PrepareQuery
// then sets each of them.
func (l *Lanes) BeginQueries(lq *LaneQueries, n int) {
	size, scratch := 0, l.q.Dim()
	for pi, p := range l.parts {
		size += 4 * p.dim
		scratch = max(scratch, p.dim, len(l.segs[pi].sel))
	}
	groups := (n + 3) / 4
	lq.n, lq.size, lq.scratch = n, size, scratch
	if cap(lq.qi) < groups*size {
		lq.qi = make([]float32, groups*size)
	}
	lq.qi = lq.qi[:groups*size]
	if cap(lq.buf) < 2*n*scratch {
		lq.buf = make([]float32, 2*n*scratch)
	}
	if n%4 != 0 {
		clear(lq.qi[(groups-1)*size:]) // the padded queries' zeros
	}
}

// PrepareQuery sets query j of lq (sized by BeginQueries) to q, of the
// quantizer's dimension. Calls for different j may run at once.
func (l *Lanes) PrepareQuery(lq *LaneQueries, j int, q []float32) error {
	if len(q) != l.q.Dim() { // the name is made only for the error
		return checkLen(l.q.Name()+" query", len(q), l.q.Dim())
	}
	if j < 0 || j >= lq.n {
		return fmt.Errorf("quant: lanes: query %d of %d", j, lq.n)
	}
	buf := lq.buf[2*j*lq.scratch : 2*(j+1)*lq.scratch]
	for pi, p := range l.parts {
		sg := l.segs[pi]
		x, src := buf[:p.dim], q
		if sg.sel != nil {
			src = buf[lq.scratch : lq.scratch+len(sg.sel)]
			gather(src, q, sg.sel)
		}
		sg.apply(x, src)
		qi := lq.qi[j/4*lq.size+p.qoff/4:]
		for k, v := range x {
			qi[4*k+j%4] = v
		}
	}
	return nil
}

// Score sets dst[j][i] to the estimate of ⟨qs[j], x_(t0+i)⟩ for the
// len(dst[0]) tokens from t0 (a multiple of 16), four queries per pass
// over the blocks (a short last group padded with zero queries).
func (l *Lanes) Score(dst, qs [][]float32, t0 int) error {
	var lq LaneQueries
	if err := l.PrepareQueries(&lq, qs); err != nil {
		return err
	}
	return l.ScorePrepared(dst, &lq, t0)
}

// ScorePrepared is Score with the queries set up by PrepareQueries (on
// this Lanes or one of the same quantizer): dst holds one row per query.
func (l *Lanes) ScorePrepared(dst [][]float32, lq *LaneQueries, t0 int) error {
	n := len(dst[0])
	if t0%laneBlock != 0 || t0 < 0 || t0+n > l.n {
		return fmt.Errorf("quant: lanes: scoring tokens [%d, %d) of %d", t0, t0+n, l.n)
	}
	if len(dst) != lq.n || len(lq.qi) != (lq.n+3)/4*lq.size {
		return fmt.Errorf("quant: lanes: %d score rows for %d prepared queries", len(dst), lq.n)
	}
	var tmp [4][laneBlock]float32 // a partial last block's scores
	full := n / laneBlock
	blocks := l.data[t0/laneBlock*l.block:]
	for g := 0; g < lq.n; g += 4 {
		qi := lq.qi[g/4*lq.size : (g/4+1)*lq.size]
		nq := min(4, lq.n-g)
		if full > 0 {
			var o [4][]float32
			for j := range nq {
				o[j] = dst[g+j]
			}
			laneScore4(&o, nq, full, qi, l.parts, blocks, l.block)
		}
		if rest := n - full*laneBlock; rest > 0 {
			var o [4][]float32
			for j := range nq {
				o[j] = tmp[j][:]
			}
			laneScore4(&o, nq, 1, qi, l.parts, blocks[full*l.block:], l.block)
			for j := range nq {
				copy(dst[g+j][full*laneBlock:], tmp[j][:rest])
			}
		}
	}
	return nil
}

// laneScore4Go is the pure-Go twin of the lane kernel: for each of the
// blocks, out[j][16·b + s] = Σ_parts scale_s·Σ_k q_j[k]·table[idx_(s,k)]
// for the first nq queries q_j, interleaved four per coordinate at each
// part's qoff.
func laneScore4Go(out *[4][]float32, nq, blocks int, qi []float32, parts []lanePart, data []byte, block int) {
	for b := range blocks {
		blk := data[b*block:]
		var sum [4][laneBlock]float32
		for _, p := range parts {
			var acc [4][laneBlock]float32
			q := qi[p.qoff/4:]
			for k := range p.dim {
				plane := blk[p.planes+k*p.step:]
				for s := range laneBlock {
					v := p.table[getBits(plane, s*p.bits, p.bits)]
					for j := range nq {
						acc[j][s] += q[4*k+j] * v
					}
				}
			}
			for s := range laneBlock {
				scale := half.F16ToF32(half.F16(binary.LittleEndian.Uint16(blk[p.scales+2*s:])))
				for j := range nq {
					sum[j][s] += scale * acc[j][s]
				}
			}
		}
		for j := range nq {
			copy(out[j][b*laneBlock:(b+1)*laneBlock], sum[j][:])
		}
	}
}

// laneChunk is the number of blocks Accumulate sums into lanes before it
// adds them up across the lanes: 256 tokens.
const laneChunk = 16

// Accumulate adds, for each head j, Σ_i ws[j][i]·x̃_(t0+i) in the
// quantizer's internal basis (as its Accumulator sums: Finish brings it
// back) to accs[j], over the len(ws[0]) tokens from t0 (a multiple of
// 16): four heads per pass over the blocks (a short last group padded
// with zero weights).
func (l *Lanes) Accumulate(accs, ws [][]float32, t0 int) error {
	n := len(ws[0])
	if t0%laneBlock != 0 || t0 < 0 || t0+n > l.n {
		return fmt.Errorf("quant: lanes: summing tokens [%d, %d) of %d", t0, t0+n, l.n)
	}
	last := l.parts[len(l.parts)-1]
	for j, a := range accs {
		if len(a) < last.at+last.dim || len(ws[j]) != n {
			return fmt.Errorf("quant: lanes: sum of %d values and %d weights, want %d and %d", len(a), len(ws[j]), last.at+last.dim, n)
		}
	}
	var wbuf [laneChunk * 4 * laneBlock]float32 // a chunk's weights × scales
	var zero [laneChunk * laneBlock]float32     // a padded head's weights
	var tail [4][laneChunk * laneBlock]float32  // weights of a chunk that ends inside a block
	blocks := l.data[t0/laneBlock*l.block:]
	for g := 0; g < len(accs); g += 4 {
		nq := min(4, len(accs)-g)
		for c := 0; c < n; c += laneChunk * laneBlock {
			m := min(laneChunk*laneBlock, n-c)
			nb := (m + laneBlock - 1) / laneBlock
			var w [4][]float32
			for j := range 4 {
				switch {
				case j >= nq:
					w[j] = zero[:]
				case m%laneBlock != 0:
					k := copy(tail[j][:], ws[g+j][c:c+m])
					clear(tail[j][k:])
					w[j] = tail[j][:]
				default:
					w[j] = ws[g+j][c : c+m]
				}
			}
			for pi := range l.parts {
				p := &l.parts[pi]
				var acc [4][]float32
				for j := range nq {
					acc[j] = accs[g+j][p.at : p.at+p.dim]
				}
				laneAcc4(&acc, nq, &w, wbuf[:], nb, p, blocks[c/laneBlock*l.block:], l.block)
			}
		}
	}
	return nil
}

// laneAcc4Go is the pure-Go twin of the lane value kernel. It first
// writes the weights times the part's scales, wbuf[(4b+j)·16+s] =
// w[j][16b+s]·scale_(b,s), for the nb blocks of data, then adds
// Σ_(b,s) wbuf[(4b+j)·16+s]·table[idx_(b,s,k)] to acc[j][k] for the
// part's coordinates k and the first nq heads.
func laneAcc4Go(acc *[4][]float32, nq int, w *[4][]float32, wbuf []float32, nb int, p *lanePart, data []byte, block int) {
	for b := range nb {
		for s := range laneBlock {
			scale := half.F16ToF32(half.F16(binary.LittleEndian.Uint16(data[b*block+p.scales+2*s:])))
			for j := range 4 {
				wbuf[(4*b+j)*laneBlock+s] = w[j][laneBlock*b+s] * scale
			}
		}
	}
	for k := range p.dim {
		var sum [4]float32
		for b := range nb {
			plane := data[b*block+p.planes+k*p.step:]
			for s := range laneBlock {
				v := p.table[getBits(plane, s*p.bits, p.bits)]
				for j := range nq {
					sum[j] += wbuf[(4*b+j)*laneBlock+s] * v
				}
			}
		}
		for j := range nq {
			acc[j][k] += sum[j]
		}
	}
}
