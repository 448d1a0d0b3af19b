package quant

import (
	"encoding/binary"

	"github.com/turbomem/turbomem/half"
	"github.com/turbomem/turbomem/tensor"
)

// Accumulator sums weighted vectors straight from their codes: what
// attention needs for values, Σₜ pₜ·x̃ₜ, without decoding every vector to
// the original basis. For rotation-based quantizers the sum stays in the
// rotated basis (each term is scaleₜ·c[idxₜ]) and is rotated back once at
// the end (docs/ALGORITHMS.md §1: sum in the rotated basis, rotate back once).
//
// Codes are expanded in chunks of accChunk vectors into a small fp32
// scratch block in the internal basis (a few KiB, in L1), and each head's
// weighted sum over the block runs on tensor's SIMD row kernel: one
// expansion of a code serves every head of a group (grouped-query
// attention), and no more than one chunk is ever held in fp32. An
// Accumulator keeps that scratch: use one per goroutine.
type Accumulator interface {
	// AccLen returns the length of an accumulator vector.
	AccLen() int
	// Accumulate adds, for each head h, Σᵢ ws[h][i]·x̃ᵢ (in the internal
	// basis) to accs[h], over the len(ws[0]) codes back to back in codes
	// (every ws[h] has that length). Codes are read once for all heads.
	Accumulate(accs, ws [][]float32, codes []byte)
	// Finish writes the accumulated sum acc in the original basis to dst
	// (len Dim); acc may be overwritten.
	Finish(dst, acc []float32)
}

// accChunk is the number of codes expanded at once: 32 vectors of 128
// dimensions are 16 KiB of scratch.
const accChunk = 32

// rowExpander writes n codes (at stride, this part's code at offset off)
// as rows of internal-basis values, rowLen apart in dst, starting at
// column col.
type rowExpander interface {
	expand(dst []float32, rowLen, col int, codes []byte, n, stride, off int)
	internalLen() int
	// finish turns an internal-basis sum into the original basis.
	finish(dst, acc []float32)
	// query writes q in the internal basis (internalLen values), so that
	// its dot product with an expanded row is the quantizer's score.
	query(dst, q []float32)
}

// NewAccumulator returns the accumulator for q's codes: in the rotated
// basis for TurboMSE, TurboProd (whose QJL part is summed in the sketch
// basis and projected back with Sᵀ once), their outlier splits and
// PolarQuant; for a Rotated quantizer (q4_0h) in the basis of its inner
// one, rotated back once; in the original basis, by decoding, otherwise
// (q8_0, q4_0, KIVI per token).
//
// Codes made of scaled-code segments (TurboMSE, QJL, TurboProd and their
// outlier splits) are summed four heads at a time where the CPU has the
// kernel: each group of 16 indices is unpacked once and added, scaled,
// to the four heads' sums (segAcc).
func NewAccumulator(q Quantizer) Accumulator {
	if k, ok := q.(*KLT); ok {
		return newKLTAcc(k, true) // klt_group.go
	}
	e := expanderFor(q)
	c := chunkAcc{e: e, n: e.internalLen(), stride: q.Bytes()}
	if !hasGroup4() {
		return &c
	}
	segs := segments(q, 0, nil)
	if segs == nil {
		return &c
	}
	a := &segAcc{chunkAcc: c}
	at := 0
	for _, sg := range segs {
		p := sg.part
		if p.dim%16 != 0 {
			return &c
		}
		a.parts = append(a.parts, accPart{dim: p.dim, bits: p.bits, off: p.off, at: at, table: p.table})
		at += p.dim
	}
	if at != c.n {
		return &c // segments laid out unlike the expander's internal basis
	}
	return a
}

// segAcc sums codes made of scaled-code segments four heads at a time
// (accCodes4: each group of 16 indices unpacked once, scaled, and added
// with the four heads' weights), the heads past a multiple of four
// through chunkAcc. The codes go by in chunks of segChunk, each
// segment's groups two at a time over the chunk, so that a chunk's codes
// stay in cache for every pass.
type segAcc struct {
	chunkAcc
	parts []accPart
}

// accPart is one scaled-code segment of a code: dim b-bit indices after
// an fp16 scale at byte off, summed at offset at of the internal basis.
type accPart struct {
	dim, bits, off, at int
	table              [16]float32
}

// segChunk is the number of codes segAcc sums before moving on: 256
// turbo3.5 codes are 14 KiB.
const segChunk = 256

func (a *segAcc) Accumulate(accs, ws [][]float32, codes []byte) {
	quads := len(accs) / 4
	if quads == 0 || len(ws[0]) == 0 {
		a.chunkAcc.Accumulate(accs, ws, codes)
		return
	}
	total := len(ws[0])
	for i := 0; i < total; i += segChunk {
		m := min(segChunk, total-i)
		c := codes[i*a.stride:]
		for k := range quads {
			for _, p := range a.parts {
				for g := 0; g < p.dim/16; g += 2 {
					groups := min(2, p.dim/16-g)
					var acc, w [4][]float32
					for j := range 4 {
						acc[j] = accs[4*k+j][p.at+16*g : p.at+16*(g+groups)]
						w[j] = ws[4*k+j][i : i+m]
					}
					accCodes4(&acc, &w, &p.table, c, m, a.stride, p.off, g, p.bits)
				}
			}
		}
	}
	if rest := 4 * quads; rest < len(accs) {
		a.chunkAcc.Accumulate(accs[rest:], ws[rest:], codes)
	}
}

// accCodes4Go is the pure-Go twin of the four-head value kernel: for each
// of the n scaled codes at codes[i·stride+off:] (fp16 scale, then packed
// b-bit indices), the len(acc[0]) values of index groups g, g+1, … (16
// indices each) are added to the four heads' sums, acc[j][k] +=
// w[j][i]·(scale·table[idx]).
func accCodes4Go(acc, w *[4][]float32, table *[16]float32, codes []byte, n, stride, off, g, b int) {
	mask := uint32(1)<<b - 1
	dim := len(acc[0])
	for i := range n {
		code := codes[i*stride+off:]
		scale := half.F16ToF32(half.F16(binary.LittleEndian.Uint16(code)))
		c := code[2:]
		for k := range dim {
			bit := (16*g + k) * b
			x := uint32(c[bit>>3])
			if bit&7+b > 8 {
				x |= uint32(c[bit>>3+1]) << 8
			}
			v := scale * table[x>>(bit&7)&mask]
			for j := range 4 {
				acc[j][k] += w[j][i] * v
			}
		}
	}
}

func expanderFor(q Quantizer) rowExpander {
	var e rowExpander
	switch t := q.(type) {
	case *TurboMSE:
		e = turboExp{t}
	case *TurboProd:
		e = prodExp{t}
	case *QJL:
		e = qjlExp{t}
	case *Split:
		e = &splitExp{s: t, hi: partExpander(t.hi), lo: partExpander(t.lo)}
	case *Polar:
		e = polarExp{t}
	case *KIVI:
		if t.bits == 2 && t.group%4 == 0 {
			e = kiviExp{t}
		} else {
			e = &decodeExp{q: q, tmp: make([]float32, q.Dim())}
		}
	case *Q8_0:
		e = ggmlExp{d: t.d, bytes: t.Bytes(), typ: tensor.Q8_0}
	case *Q4_0:
		e = ggmlExp{d: t.d, bytes: t.Bytes(), typ: tensor.Q4_0}
	case *KLT:
		e = kltExp{t}
	case *Rotated:
		e = &rotatedExp{inner: expanderFor(t.inner), rot: t.rot, tmp: make([]float32, t.Dim())}
	default:
		e = &decodeExp{q: q, tmp: make([]float32, q.Dim())}
	}
	return e
}

// GroupScorer scores several queries against the same codes.
type GroupScorer interface {
	// Score writes into dst[j][i] the estimate of <q_j, x_i> for the
	// len(dst[0]) codes back to back in codes.
	Score(dst [][]float32, codes []byte)
}

// PrepareGroup returns a scorer for the queries qs (each of length Dim)
// that expands each chunk of codes once into the internal basis (as
// Accumulator does) and takes fp32 dot products (tensor's SIMD row
// kernel) with every query brought into that basis once: one pass over
// the codes for a whole group of query heads. It pays where a quantizer's
// own scorer is scalar (PolarQuant: table lookups per code and query);
// it keeps the expansion scratch, so use one per goroutine.
func PrepareGroup(q Quantizer, qs [][]float32) (GroupScorer, error) {
	for _, v := range qs {
		if err := checkLen(q.Name()+" query", len(v), q.Dim()); err != nil {
			return nil, err
		}
	}
	if k, ok := q.(*KLT); ok {
		g := &kltGroup{k: k}
		if err := k.PrepareQueries(&g.p, qs); err != nil {
			return nil, err
		}
		return g, nil
	}
	if s := newTurboGroup(q, qs); s != nil {
		return s, nil
	}
	e := expanderFor(q)
	n := e.internalLen()
	g := &groupScorer{e: e, n: n, stride: q.Bytes(), scratch: make([]float32, accChunk*n)}
	for _, v := range qs {
		r := make([]float32, n)
		e.query(r, v)
		g.qs = append(g.qs, r)
	}
	return g, nil
}

// turboGroup scores codes made of scaled-code segments (TurboMSE, QJL,
// and TurboProd and outlier splits built from them) for a group of
// queries: four at a time with the four-query kernel (each index
// unpacked once for four queries), the rest one by one with the
// quantizer's own scorer.
type turboGroup struct {
	parts  []turboPart
	stride int
	quads  int // groups of four queries
	single []Scorer
	tmp    []float32
}

// turboPart is one scaled-code segment: an fp16 scale and dim packed
// b-bit indices at offset off of each code, scored against the query
// brought into its basis (rotated, or sketched for QJL).
type turboPart struct {
	dim, bits, off int
	table          [16]float32
	qi             [][]float32 // per quad, the transformed queries interleaved
}

// segment is a turboPart in the making: the channels of the query it
// reads (nil: all) and the transform into its basis.
type segment struct {
	part  turboPart
	sel   []int
	apply func(dst, x []float32)
}

// segments lists the scaled-code segments of q, or nil if q is not made
// of them.
func segments(q Quantizer, off int, sel []int) []segment {
	switch t := q.(type) {
	case *TurboMSE:
		if t.bits > 4 {
			return nil
		}
		return []segment{{part: turboPart{dim: t.d, bits: t.bits, off: off, table: t.table}, sel: sel, apply: t.rot.Apply}}
	case *QJL:
		e := qjlExp{t}
		return []segment{{part: turboPart{dim: t.m, bits: 1, off: off, table: [16]float32{-t.kappa, t.kappa}}, sel: sel, apply: e.query}}
	case *TurboProd:
		var out []segment
		if t.mse != nil {
			out = segments(t.mse, off, sel)
			if out == nil {
				return nil
			}
		}
		return append(out, segments(t.qjl, off+t.mseBytes(), sel)...)
	case *Split:
		hi := segments(t.hi, off, t.outliers)
		lo := segments(t.lo, off+t.hi.Bytes(), t.rest)
		if hi == nil || lo == nil || sel != nil {
			return nil
		}
		return append(hi, lo...)
	}
	return nil
}

// newTurboGroup returns a turboGroup for q, or nil where it does not
// apply (other quantizers, no SIMD kernel, fewer than four queries,
// segments whose length is not a multiple of 16).
func newTurboGroup(q Quantizer, qs [][]float32) *turboGroup {
	if !hasGroup4() || len(qs) < 4 {
		return nil
	}
	segs := segments(q, 0, nil)
	if segs == nil {
		return nil
	}
	for _, sg := range segs {
		if sg.part.dim%16 != 0 {
			return nil
		}
	}
	g := &turboGroup{stride: q.Bytes(), quads: len(qs) / 4}
	for _, sg := range segs {
		p := sg.part
		for k := range g.quads {
			var four [4][]float32
			for j := range 4 {
				x := qs[4*k+j]
				if sg.sel != nil {
					y := make([]float32, len(sg.sel))
					gather(y, x, sg.sel)
					x = y
				}
				r := make([]float32, p.dim)
				sg.apply(r, x)
				four[j] = r
			}
			qi := make([]float32, 4*p.dim)
			interleave4(qi, four, p.dim)
			p.qi = append(p.qi, qi)
		}
		g.parts = append(g.parts, p)
	}
	for _, v := range qs[4*g.quads:] {
		sc, err := q.Prepare(v)
		if err != nil {
			return nil
		}
		g.single = append(g.single, sc)
	}
	return g
}

func (g *turboGroup) Score(dst [][]float32, codes []byte) {
	if len(dst) == 0 {
		return
	}
	n := len(dst[0])
	const chunk = 256
	if g.tmp == nil {
		g.tmp = make([]float32, 4*chunk)
	}
	for i := 0; i < n; i += chunk {
		m := min(chunk, n-i)
		c := codes[i*g.stride:]
		for k := range g.quads {
			tmp := g.tmp[:4*m]
			for pi, p := range g.parts {
				dotCodesGroup4(tmp, p.qi[k], p.dim, &p.table, c, m, g.stride, p.off, p.bits, pi > 0)
			}
			d0, d1, d2, d3 := dst[4*k][i:i+m], dst[4*k+1][i:i+m], dst[4*k+2][i:i+m], dst[4*k+3][i:i+m]
			for t := range m {
				d0[t], d1[t], d2[t], d3[t] = tmp[4*t], tmp[4*t+1], tmp[4*t+2], tmp[4*t+3]
			}
		}
		for j, sc := range g.single {
			sc.Score(dst[4*g.quads+j][i:i+m], c[:m*g.stride])
		}
	}
}

type groupScorer struct {
	e         rowExpander
	n, stride int
	qs        [][]float32
	scratch   []float32
}

func (g *groupScorer) Score(dst [][]float32, codes []byte) {
	if len(dst) == 0 {
		return
	}
	total := len(dst[0])
	for i := 0; i < total; i += accChunk {
		m := min(accChunk, total-i)
		rows := g.scratch[:m*g.n]
		g.e.expand(rows, g.n, 0, codes[i*g.stride:], m, g.stride, 0)
		for j, q := range g.qs {
			tensor.DotRowsF32(dst[j][i:i+m], q, rows)
		}
	}
}

func partExpander(q partQuantizer) rowExpander {
	switch t := q.(type) {
	case *TurboMSE:
		return turboExp{t}
	case *TurboProd:
		return prodExp{t}
	}
	panic("quant: split part without an expander")
}

// chunkAcc is the Accumulator over a rowExpander.
type chunkAcc struct {
	e       rowExpander
	n       int // internal length
	stride  int
	scratch []float32
}

func (a *chunkAcc) AccLen() int { return a.n }

func (a *chunkAcc) Accumulate(accs, ws [][]float32, codes []byte) {
	if len(accs) == 0 {
		return
	}
	total := len(ws[0])
	if a.scratch == nil {
		a.scratch = make([]float32, accChunk*a.n)
	}
	for i := 0; i < total; i += accChunk {
		m := min(accChunk, total-i)
		rows := a.scratch[:m*a.n]
		a.e.expand(rows, a.n, 0, codes[i*a.stride:], m, a.stride, 0)
		for h, acc := range accs {
			tensor.WeightedSumF32(acc[:a.n], ws[h][i:i+m], rows)
		}
	}
}

func (a *chunkAcc) Finish(dst, acc []float32) { a.e.finish(dst, acc) }

// turboExp expands TurboMSE codes to scale·c[idx] (rotated basis).
type turboExp struct{ t *TurboMSE }

func (e turboExp) internalLen() int { return e.t.d }

func (e turboExp) expand(dst []float32, rowLen, col int, codes []byte, n, stride, off int) {
	t := e.t
	expandCodes(dst, rowLen, col, t.d, &t.table, t.cb.Centroids, codes, n, stride, off, t.bits)
}

func (e turboExp) finish(dst, acc []float32) { e.t.rot.Invert(dst, acc[:e.t.d]) }
func (e turboExp) query(dst, q []float32)    { e.t.rot.Apply(dst[:e.t.d], q) }

// expandCodes writes, for each of n scaled codes (fp16 scale, then d
// packed b-bit indices) at codes[i·stride+off:], the row scale·cent[idx]
// of d values at dst[i·rowLen+col:]. b ≤ 4 with d a multiple of 32 takes
// the SIMD kernel where there is one.
func expandCodes(dst []float32, rowLen, col, d int, table *[16]float32, cent []float32, codes []byte, n, stride, off, b int) {
	if b <= 4 && d%8 == 0 {
		expandCodesFast(dst, rowLen, col, d, table, codes, n, stride, off, b)
		return
	}
	idx := make([]uint8, d)
	for i := range n {
		c := codes[i*stride+off:]
		scale := half.F16ToF32(half.F16(binary.LittleEndian.Uint16(c)))
		unpack(idx, c[2:], b)
		row := dst[i*rowLen+col : i*rowLen+col+d]
		for j, k := range idx {
			row[j] = scale * cent[k]
		}
	}
}

// expandCodesGo is the pure-Go twin of the SIMD expansion kernel: b ≤ 4,
// d a multiple of 8, 8 indices (b bytes) at a time.
func expandCodesGo(dst []float32, rowLen, col, d int, table *[16]float32, codes []byte, n, stride, off, b int) {
	mask := uint32(1)<<b - 1
	groups := d / 8
	for i := range n {
		code := codes[i*stride+off : i*stride+off+2+groups*b]
		scale := half.F16ToF32(half.F16(binary.LittleEndian.Uint16(code)))
		c := code[2:]
		row := dst[i*rowLen+col : i*rowLen+col+d]
		for g := range groups {
			var w uint32
			switch b {
			case 1:
				w = uint32(c[g])
			case 2:
				w = uint32(binary.LittleEndian.Uint16(c[2*g:]))
			case 3:
				w = uint32(c[3*g]) | uint32(c[3*g+1])<<8 | uint32(c[3*g+2])<<16
			case 4:
				w = binary.LittleEndian.Uint32(c[4*g:])
			}
			r := (*[8]float32)(row[8*g:])
			for l := range 8 {
				r[l] = scale * table[w>>(uint(l)*uint(b))&mask]
			}
		}
	}
}

// interleave4 writes four queries of d values (d a multiple of 16)
// interleaved by 16-coordinate group, the layout dotCodesGroup4 reads:
// for group g, query 0's 16 values, then 1's, 2's, 3's.
func interleave4(dst []float32, qs [4][]float32, d int) {
	for g := range d / 16 {
		for j, q := range qs {
			copy(dst[64*g+16*j:64*g+16*j+16], q[16*g:16*g+16])
		}
	}
}

// dotCodesGroup4Go is the pure-Go twin of the four-query scoring kernel:
// for each of n scaled codes at codes[i·stride+off:] (fp16 scale, then d
// packed b-bit indices, b ≤ 4), dst[4i+j] is set to (or, with add,
// increased by) scale·Σ_k q_j[k]·table[idx_k], for the queries q_j
// interleaved in qi as interleave4 lays them out.
func dotCodesGroup4Go(dst, qi []float32, d int, table *[16]float32, codes []byte, n, stride, off, b int, add bool) {
	mask := uint32(1)<<b - 1
	for i := range n {
		code := codes[i*stride+off : i*stride+off+2+d/8*b]
		scale := half.F16ToF32(half.F16(binary.LittleEndian.Uint16(code)))
		c := code[2:]
		var acc [4]float32
		for k := range d {
			bit := k * b
			w := uint32(c[bit>>3])
			if bit&7+b > 8 {
				w |= uint32(c[bit>>3+1]) << 8
			}
			v := table[w>>(bit&7)&mask]
			g, l := k/16, k%16
			for j := range 4 {
				acc[j] += qi[64*g+16*j+l] * v
			}
		}
		for j := range 4 {
			if add {
				dst[4*i+j] += scale * acc[j]
			} else {
				dst[4*i+j] = scale * acc[j]
			}
		}
	}
}

// prodExp expands TurboProd codes to [scale·c[idx] (rotated, d values);
// κ·γ·σ (sketch basis, m values)]. finish applies Πᵀ to the first part
// and Sᵀ to the second: the QJL reconstruction is κ·γ·Sᵀσ, linear in the
// sketch-basis vector.
type prodExp struct{ t *TurboProd }

func (e prodExp) msLen() int {
	if e.t.mse == nil {
		return 0
	}
	return e.t.mse.d
}

func (e prodExp) internalLen() int { return e.msLen() + e.t.qjl.m }

func (e prodExp) expand(dst []float32, rowLen, col int, codes []byte, n, stride, off int) {
	if m := e.t.mse; m != nil {
		turboExp{m}.expand(dst, rowLen, col, codes, n, stride, off)
	}
	qjlExp{e.t.qjl}.expand(dst, rowLen, col+e.msLen(), codes, n, stride, off+e.t.mseBytes())
}

func (e prodExp) query(dst, q []float32) {
	if m := e.t.mse; m != nil {
		m.rot.Apply(dst[:m.d], q)
	}
	qjlExp{e.t.qjl}.query(dst[e.msLen():], q)
}

func (e prodExp) finish(dst, acc []float32) {
	d := e.t.qjl.d
	k := e.msLen()
	if k > 0 {
		e.t.mse.rot.Invert(dst[:d], acc[:k])
	} else {
		clear(dst[:d])
	}
	j := e.t.qjl
	for i, v := range acc[k : k+j.m] {
		axpy(dst[:d], v, j.s[i*j.d:(i+1)*j.d])
	}
}

// qjlExp expands QJL codes to κ·‖x‖·σ, σ ∈ {±1}^m (sketch basis).
type qjlExp struct{ j *QJL }

func (e qjlExp) internalLen() int { return e.j.m }

func (e qjlExp) expand(dst []float32, rowLen, col int, codes []byte, n, stride, off int) {
	j := e.j
	table := [16]float32{-j.kappa, j.kappa}
	expandCodes(dst, rowLen, col, j.m, &table, table[:2], codes, n, stride, off, 1)
}

func (e qjlExp) query(dst, q []float32) {
	j := e.j
	for i := range j.m {
		dst[i] = dot(j.s[i*j.d:(i+1)*j.d], q)
	}
}

func (e qjlExp) finish(dst, acc []float32) {
	j := e.j
	clear(dst[:j.d])
	for i, v := range acc[:j.m] {
		axpy(dst[:j.d], v, j.s[i*j.d:(i+1)*j.d])
	}
}

// splitExp expands both parts of an outlier split, each in its own basis:
// the row holds the outlier part's internal values, then the rest's.
type splitExp struct {
	s      *Split
	hi, lo rowExpander
	tmp    []float32
}

func (e *splitExp) internalLen() int { return e.hi.internalLen() + e.lo.internalLen() }

func (e *splitExp) expand(dst []float32, rowLen, col int, codes []byte, n, stride, off int) {
	e.hi.expand(dst, rowLen, col, codes, n, stride, off)
	e.lo.expand(dst, rowLen, col+e.hi.internalLen(), codes, n, stride, off+e.s.hi.Bytes())
}

func (e *splitExp) query(dst, q []float32) {
	k := len(e.s.outliers)
	a := make([]float32, e.s.d)
	gather(a[:k], q, e.s.outliers)
	gather(a[k:], q, e.s.rest)
	e.hi.query(dst[:e.hi.internalLen()], a[:k])
	e.lo.query(dst[e.hi.internalLen():], a[k:])
}

func (e *splitExp) finish(dst, acc []float32) {
	k := len(e.s.outliers)
	if e.tmp == nil {
		e.tmp = make([]float32, e.s.d)
	}
	hi, lo := e.tmp[:k], e.tmp[k:]
	e.hi.finish(hi, acc[:e.hi.internalLen()])
	e.lo.finish(lo, acc[e.hi.internalLen():])
	scatter(dst, hi, e.s.outliers)
	scatter(dst, lo, e.s.rest)
}

// polarExp expands PolarQuant codes to the rotated-basis ỹ (Decode
// without its final Πᵀ).
type polarExp struct{ p *Polar }

func (e polarExp) internalLen() int { return e.p.d }

func (e polarExp) expand(dst []float32, rowLen, col int, codes []byte, n, stride, off int) {
	p := e.p
	// Each level's b-bit fields lie inside one byte when b divides 8 and
	// the level starts on a multiple of b (d = 128 with [4,2,2,2]: every
	// level is byte-aligned): then fields are read in place, top-down,
	// without unpacking the code first.
	direct := true
	for l, b := range p.bits {
		if 8%b != 0 || p.bitOff[l]%b != 0 {
			direct = false
		}
	}
	rho := make([]float32, p.d/2)
	var idx []uint8
	if !direct {
		idx = make([]uint8, p.d-p.nb)
	}
	for i := range n {
		code := codes[i*stride+off : i*stride+off+p.bytes]
		stream := code[2*p.nb:]
		for j := range p.nb {
			rho[j] = half.F16ToF32(half.F16(binary.LittleEndian.Uint16(code[2*j:])))
		}
		if !direct {
			p.unpackAll(idx, code)
		}
		// Top-down, in place: node j writes its children 2j, 2j+1, and
		// going from the last node down no unread node is overwritten.
		for l := len(p.bits) - 1; l >= 1; l-- {
			cs, sn := p.cos[l], p.sin[l]
			b, bit0 := uint(p.bits[l]), p.bitOff[l]
			mask := uint8(1)<<b - 1
			for j := p.angles(l) - 1; j >= 0; j-- {
				var k uint8
				if direct {
					bit := bit0 + j*int(b)
					k = stream[bit>>3] >> (bit & 7) & mask
				} else {
					k = idx[p.idxOff[l]+j]
				}
				r := rho[j]
				rho[2*j] = r * cs[k]
				rho[2*j+1] = r * sn[k]
			}
		}
		y := dst[i*rowLen+col : i*rowLen+col+p.d]
		cs, sn := p.cos[0], p.sin[0]
		b := uint(p.bits[0])
		mask := uint8(1)<<b - 1
		for j := range p.angles(0) {
			var k uint8
			if direct {
				bit := j * int(b)
				k = stream[bit>>3] >> (bit & 7) & mask
			} else {
				k = idx[j]
			}
			y[2*j] = rho[j] * cs[k]
			y[2*j+1] = rho[j] * sn[k]
		}
	}
}

func (e polarExp) finish(dst, acc []float32) { e.p.rot.Invert(dst, acc[:e.p.d]) }
func (e polarExp) query(dst, q []float32)    { e.p.rot.Apply(dst[:e.p.d], q) }

// ggmlExp expands q8_0 and q4_0 codes with tensor's llama.cpp decoder, a
// whole chunk of back-to-back codes in one call.
type ggmlExp struct {
	d, bytes int
	typ      tensor.DType
}

func (e ggmlExp) internalLen() int { return e.d }

func (e ggmlExp) expand(dst []float32, rowLen, col int, codes []byte, n, stride, off int) {
	if rowLen == e.d && col == 0 && stride == e.bytes && off == 0 {
		if tensor.Dequantize(e.typ, dst[:n*e.d], codes[:n*e.bytes]) == nil {
			return
		}
	}
	for i := range n {
		row := dst[i*rowLen+col : i*rowLen+col+e.d]
		if tensor.Dequantize(e.typ, row, codes[i*stride+off:i*stride+off+e.bytes]) != nil {
			clear(row)
		}
	}
}

func (e ggmlExp) finish(dst, acc []float32) { copy(dst, acc[:e.d]) }
func (e ggmlExp) query(dst, q []float32)    { copy(dst[:e.d], q) }

// kiviExp expands 2-bit per-token KIVI codes, min + scale·q per group,
// four indices per byte through a table.
type kiviExp struct{ k *KIVI }

// kivi2Table maps an index byte to its four 2-bit fields, low first
// (read-only after initialisation).
var kivi2Table = func() (t [256][4]float32) {
	for v := range t {
		for i := range 4 {
			t[v][i] = float32(v >> (2 * i) & 3)
		}
	}
	return t
}()

func (e kiviExp) internalLen() int { return e.k.d }

func (e kiviExp) expand(dst []float32, rowLen, col int, codes []byte, n, stride, off int) {
	k := e.k
	gb := k.groupBytes()
	for i := range n {
		code := codes[i*stride+off : i*stride+off+k.Bytes()]
		row := dst[i*rowLen+col : i*rowLen+col+k.d]
		for g := range k.d / k.group {
			c := code[g*gb : (g+1)*gb]
			scale := half.F16ToF32(half.F16(binary.LittleEndian.Uint16(c)))
			mn := half.F16ToF32(half.F16(binary.LittleEndian.Uint16(c[2:])))
			out := row[g*k.group : (g+1)*k.group]
			for p, v := range c[4 : 4+k.group/4] {
				t := &kivi2Table[v]
				o := (*[4]float32)(out[4*p:])
				o[0] = mn + scale*t[0]
				o[1] = mn + scale*t[1]
				o[2] = mn + scale*t[2]
				o[3] = mn + scale*t[3]
			}
		}
	}
}

func (e kiviExp) finish(dst, acc []float32) { copy(dst, acc[:e.k.d]) }
func (e kiviExp) query(dst, q []float32)    { copy(dst[:e.k.d], q) }

// decodeExp decodes each code in the original basis (quantizers without
// a rotation: q8_0, q4_0, KIVI per token). A code that does not decode
// adds nothing.
type decodeExp struct {
	q   Quantizer
	tmp []float32
}

func (e *decodeExp) internalLen() int { return e.q.Dim() }

func (e *decodeExp) expand(dst []float32, rowLen, col int, codes []byte, n, stride, off int) {
	d, b := e.q.Dim(), e.q.Bytes()
	for i := range n {
		row := dst[i*rowLen+col : i*rowLen+col+d]
		if err := e.q.Decode(row, codes[i*stride+off:i*stride+off+b]); err != nil {
			clear(row)
		}
	}
}

func (e *decodeExp) finish(dst, acc []float32) { copy(dst, acc[:e.q.Dim()]) }
func (e *decodeExp) query(dst, q []float32)    { copy(dst[:e.q.Dim()], q) }
