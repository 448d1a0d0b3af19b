package tensor

import "encoding/binary"

// The tiled product for prefill (MatMul of many vectors): a panel of
// gemmRows weight rows is repacked once into one integer form shared by
// every supported type, and a register-tiled kernel multiplies it with
// gemmCols activation vectors at a time, so each repacked weight byte is
// used by every vector of the call and each activation byte by all the
// panel's rows.
//
// The shared form of a weight row of K elements: unsigned 8-bit quants q,
// a float scale per lane of four elements sw, and a float "min" per group
// of 16 elements mg, such that
//
//	w[e] = sw[e/4]·q[e] − mg[e/16].
//
// Q8_0 stores q = w+128 (mg = 128·d), Q4_0 its nibble (mg = 8·d), Q4_K and
// Q5_K their 4- and 5-bit quants with sw = d·scale and mg = dmin·min of
// the 32-element sub-block, Q6_K its 6-bit quant with sw = d·scale and
// mg = 32·d·scale of the 16-element sub-block. The activations are
// quantized as for the row kernels (8 bits per 32 elements for Q8_0/Q4_0,
// per 256 for the K-quants), so the integer sums are those of the row
// kernels; with x = dx·xq,
//
//	Σ_e w[e]·x[e] = Σ_lanes sw·dx·(Σ_4 q·xq) − Σ_groups mg·dx·(Σ_16 xq),
//
// the first term an exact integer dot per lane of four (VPDPBUSD: unsigned
// × signed bytes), the second a float dot over the groups, taken once per
// 256 elements.
const (
	gemmRows = 4   // weight rows per panel
	gemmCols = 4   // activation vectors per group
	gemmStep = 64  // elements per kernel step: one 512-bit register of bytes
	gemmSB   = 256 // elements per min-term update (one K-quant super-block)
)

// gemmRepack decodes one weight row into row r of a panel (see
// gemmPanel for the layout).
type gemmRepack func(p *gemmPanel, r int, row []byte)

// gemmRepacks lists the weight types the tiled product serves. MatMul
// gives it Q8_0 and Q4_0 products of many vectors: the K-quants' go to
// their multi-row kernels (multirow_k.go), on the same CPUs and faster,
// so their repacks serve the tests and benchmarks here only.
var gemmRepacks = map[DType]gemmRepack{
	Q8_0: repackQ8_0,
	Q4_0: repackQ4_0,
	Q4_K: repackQ4_K,
	Q5_K: repackQ5_K,
	Q6_K: repackQ6_K,
}

// canGEMM reports whether a product of type t over cols columns can use
// the tiled kernel.
func canGEMM(t DType, cols int) bool {
	_, ok := gemmRepacks[t]
	return ok && cols%gemmSB == 0 && cols > 0
}

// gemmPanel is gemmRows repacked rows, interleaved the way the kernel
// reads them: per step of 64 elements the rows' 64 quants one after
// another (q) and their 16 lane scales (sw); per 256 elements the rows'
// 16 group mins (mg).
type gemmPanel struct {
	q      []byte
	sw, mg []float32
}

// quants returns row r's n ≤ 64 quants from element e on (within one
// step).
func (p *gemmPanel) quants(r, e, n int) []byte {
	o := quantAt(r, e)
	return p.q[o : o+n]
}

// setScale sets row r's lane scales of elements [e, e+n) (within one
// step; multiples of 4) to v.
func (p *gemmPanel) setScale(r, e, n int, v float32) {
	o := scaleAt(r, e)
	for i := range n / 4 {
		p.sw[o+i] = v
	}
}

// setMin sets row r's min of the 16-element group g to v.
func (p *gemmPanel) setMin(r, g int, v float32) {
	p.mg[minAt(r, g)] = v
}

// quantAt, scaleAt and minAt give where in a panel's q, sw and mg row r's
// quant of element e, lane scale of element e and min of 16-element
// group g are: the one statement of the layout, for the setters above and
// for repackers that write in place.
func quantAt(r, e int) int { return (e/gemmStep*gemmRows+r)*gemmStep + e%gemmStep }
func scaleAt(r, e int) int { return (e/gemmStep*gemmRows+r)*16 + e%gemmStep/4 }
func minAt(r, g int) int   { return (g/16*gemmRows+r)*16 + g%16 }

// fill repacks rows [r0, r0+gemmRows) of w (rows beyond nrows become
// zero) with repack.
func (p *gemmPanel) fill(repack gemmRepack, w []byte, rowBytes, r0, nrows, cols int) {
	p.q = grown(p.q, gemmRows*cols)
	p.sw = growF(p.sw, gemmRows*cols/4)
	p.mg = growF(p.mg, gemmRows*cols/16)
	if r0+gemmRows > nrows {
		clear(p.q)
		clear(p.sw)
		clear(p.mg)
	}
	for r := range min(gemmRows, nrows-r0) {
		repack(p, r, w[(r0+r)*rowBytes:(r0+r+1)*rowBytes])
	}
}

// The byte transforms below work on eight bytes at a time.
const (
	lowNibbles = 0x0f0f0f0f0f0f0f0f
	lowBits    = 0x0101010101010101
	lowPairs   = 0x0303030303030303
)

func le64(b []byte) uint64     { return binary.LittleEndian.Uint64(b) }
func put64(b []byte, v uint64) { binary.LittleEndian.PutUint64(b, v) }

// repackQ8_0 writes straight into the panel's slices, a block at a
// time: a batch's decode step repacks every weight once, at a cost that
// rivals the kernel's, so its bounds checks and calls matter.
func repackQ8_0(p *gemmPanel, r int, row []byte) {
	const flip = 0x8080808080808080 // int8 w → w+128
	q, sw, mg := p.q, p.sw, p.mg
	for b := range len(row) / q8_0Bytes {
		blk := (*[q8_0Bytes]byte)(row[b*q8_0Bytes:])
		d := f16Scale(blk[:])
		o := quantAt(r, b*qk0)
		dq := (*[qk0]byte)(q[o : o+qk0])
		binary.LittleEndian.PutUint64(dq[0:], binary.LittleEndian.Uint64(blk[2:])^flip)
		binary.LittleEndian.PutUint64(dq[8:], binary.LittleEndian.Uint64(blk[10:])^flip)
		binary.LittleEndian.PutUint64(dq[16:], binary.LittleEndian.Uint64(blk[18:])^flip)
		binary.LittleEndian.PutUint64(dq[24:], binary.LittleEndian.Uint64(blk[26:])^flip)
		o = scaleAt(r, b*qk0)
		s := (*[qk0 / 4]float32)(sw[o : o+qk0/4])
		s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7] = d, d, d, d, d, d, d, d
		o = minAt(r, 2*b) // the block's two 16-element groups
		m := (*[2]float32)(mg[o : o+2])
		m[0], m[1] = 128*d, 128*d
	}
}

func repackQ4_0(p *gemmPanel, r int, row []byte) {
	for b := range len(row) / q4_0Bytes {
		blk := row[b*q4_0Bytes : (b+1)*q4_0Bytes]
		d := f16Scale(blk)
		q := p.quants(r, b*qk0, qk0)
		for i := 0; i < 16; i += 8 {
			v := le64(blk[2+i:])
			put64(q[i:], v&lowNibbles)
			put64(q[16+i:], v>>4&lowNibbles)
		}
		p.setScale(r, b*qk0, qk0, d)
		p.setMin(r, 2*b, 8*d)
		p.setMin(r, 2*b+1, 8*d)
	}
}

// repackK45 is the scale and min part of Q4_K and Q5_K: sub-block j of
// super-block b has scale d·sc and min dmin·m.
func repackK45(p *gemmPanel, r, b int, blk []byte) {
	d, dmin := f16Scale(blk[0:]), f16Scale(blk[2:])
	scales := (*[12]byte)(blk[4:16])
	for j := range 8 {
		sc, m := scaleMinK4(j, scales)
		p.setScale(r, b*QK_K+32*j, 32, d*float32(sc))
		p.setMin(r, b*16+2*j, dmin*float32(m))
		p.setMin(r, b*16+2*j+1, dmin*float32(m))
	}
}

func repackQ4_K(p *gemmPanel, r int, row []byte) {
	for b := range len(row) / q4_KBytes {
		blk := row[b*q4_KBytes : (b+1)*q4_KBytes]
		repackK45(p, r, b, blk)
		for c := range 4 {
			splitNibbles(p.quants(r, b*QK_K+64*c, 64), blk[16+32*c:48+32*c])
		}
	}
}

// splitNibbles writes Q4_K's 64 elements held in the 32 bytes qs to q:
// the low nibbles, then the high nibbles.
func splitNibbles(q, qs []byte) {
	for i := 0; i < 32; i += 8 {
		v := le64(qs[i:])
		put64(q[i:], v&lowNibbles)
		put64(q[32+i:], v>>4&lowNibbles)
	}
}

func repackQ5_K(p *gemmPanel, r int, row []byte) {
	for b := range len(row) / q5_KBytes {
		blk := row[b*q5_KBytes : (b+1)*q5_KBytes]
		repackK45(p, r, b, blk)
		for c := range 4 {
			q5_KStep(p.quants(r, b*QK_K+64*c, 64), blk, c)
		}
	}
}

// q5_KStep writes the unsigned 5-bit quants of step c (64 elements: 32
// bytes of qs and bits 2c, 2c+1 of qh) of the Q5_K block blk to q in
// element order.
func q5_KStep(q, blk []byte, c int) {
	qh := blk[16:48]
	ql := blk[48+32*c : 80+32*c]
	for i := 0; i < 32; i += 8 {
		v, h := le64(ql[i:]), le64(qh[i:])
		put64(q[i:], v&lowNibbles|(h>>(2*c)&lowBits)<<4)
		put64(q[32+i:], v>>4&lowNibbles|(h>>(2*c+1)&lowBits)<<4)
	}
}

func repackQ6_K(p *gemmPanel, r int, row []byte) {
	for b := range len(row) / q6_KBytes {
		blk := row[b*q6_KBytes : (b+1)*q6_KBytes]
		d := f16Scale(blk[208:])
		for g := range 16 { // 16-element sub-blocks, in element order
			s := d * float32(int8(blk[192+g]))
			p.setScale(r, b*QK_K+16*g, 16, s)
			p.setMin(r, b*16+g, 32*s)
		}
		for n := range 2 {
			q6_KHalf(p.quants(r, b*QK_K+128*n, 64), p.quants(r, b*QK_K+128*n+64, 64), blk, n)
		}
	}
}

// q6_KHalf writes the unsigned 6-bit quants of half n (128 elements: 64
// bytes of ql, 32 of qh) of the Q6_K block blk in element order: the
// first 64 to q0, the next 64 to q1.
func q6_KHalf(q0, q1, blk []byte, n int) {
	ql := blk[64*n : 64*n+64]
	qh := blk[128+32*n : 160+32*n]
	for i := 0; i < 32; i += 8 {
		lo, hi, h := le64(ql[i:]), le64(ql[32+i:]), le64(qh[i:])
		put64(q0[i:], lo&lowNibbles|(h&lowPairs)<<4)
		put64(q0[32+i:], hi&lowNibbles|(h>>2&lowPairs)<<4)
		put64(q1[i:], lo>>4&lowNibbles|(h>>4&lowPairs)<<4)
		put64(q1[32+i:], hi>>4&lowNibbles|(h>>6&lowPairs)<<4)
	}
}

// gemmActs is a group of gemmCols activation vectors in the kernel's
// layout: per step their 64 quants one after another (xq) and their 16
// lane scales dx (sx); per 256 elements their 16 group terms −dx·Σ₁₆xq
// (xg).
type gemmActs struct {
	xq     []int8
	sx, xg []float32
}

// set packs the activations acts (at most gemmCols; missing ones are
// zero) of kind k, over cols elements.
func (g *gemmActs) set(k actKind, acts []*activation, cols int) {
	steps := cols / gemmStep
	g.xq = growI8(g.xq, gemmCols*cols)
	g.sx = growF(g.sx, gemmCols*cols/4)
	g.xg = growF(g.xg, gemmCols*cols/16)
	block := qk0
	if k == actQ8_K {
		block = QK_K
	}
	for v := range gemmCols {
		if v >= len(acts) {
			for s := range steps {
				clear(g.xq[(s*gemmCols+v)*gemmStep : (s*gemmCols+v+1)*gemmStep])
				clear(g.sx[(s*gemmCols+v)*16 : (s*gemmCols+v+1)*16])
			}
			for sb := range cols / gemmSB {
				clear(g.xg[(sb*gemmCols+v)*16 : (sb*gemmCols+v+1)*16])
			}
			continue
		}
		a := acts[v]
		for s := range steps {
			copy(g.xq[(s*gemmCols+v)*gemmStep:], a.qs[s*gemmStep:(s+1)*gemmStep])
			for l := range 16 {
				g.sx[(s*gemmCols+v)*16+l] = a.d[(s*gemmStep+4*l)/block]
			}
		}
		for grp := range cols / 16 {
			var sum int32
			for _, x := range a.qs[grp*16 : grp*16+16] {
				sum += int32(x)
			}
			sb, l := grp/16, grp%16
			g.xg[(sb*gemmCols+v)*16+l] = -a.d[grp*16/block] * float32(sum)
		}
	}
}

func grown(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

func growF(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}

func growI8(b []int8, n int) []int8 {
	if cap(b) < n {
		return make([]int8, n)
	}
	return b[:n]
}

// gemmKernelGo multiplies a panel by a group over steps steps of 64
// elements (a multiple of 4) and writes the gemmRows×gemmCols dot
// products to out[r·gemmCols+v]: the pure-Go twin of the assembly kernel,
// in its order of operations (per lane: integer dot of four, times sw,
// times sx, accumulated; per 256 elements the min term; lanes summed last).
func gemmKernelGo(p *gemmPanel, g *gemmActs, steps int, out *[gemmRows * gemmCols]float32) {
	var acc [gemmRows][gemmCols][16]float32
	for s := range steps {
		for v := range gemmCols {
			x := g.xq[(s*gemmCols+v)*gemmStep:]
			sx := g.sx[(s*gemmCols+v)*16:]
			for r := range gemmRows {
				w := p.q[(s*gemmRows+r)*gemmStep:]
				sw := p.sw[(s*gemmRows+r)*16:]
				for l := range 16 {
					var d int32
					for k := range 4 {
						d += int32(w[4*l+k]) * int32(x[4*l+k])
					}
					acc[r][v][l] += float32(d) * sw[l] * sx[l]
				}
			}
		}
		if s%4 == 3 {
			sb := s / 4
			for v := range gemmCols {
				xg := g.xg[(sb*gemmCols+v)*16:]
				for r := range gemmRows {
					mg := p.mg[(sb*gemmRows+r)*16:]
					for l := range 16 {
						acc[r][v][l] += mg[l] * xg[l]
					}
				}
			}
		}
	}
	for r := range gemmRows {
		for v := range gemmCols {
			var sum float32
			for _, x := range acc[r][v] {
				sum += x
			}
			out[r*gemmCols+v] = sum
		}
	}
}

// gemmProduct computes rows [r0, r1) (whole panels from r0, which is a
// multiple of gemmRows; the last panel may run past r1 up to rows, whose
// extra rows are not written) of one product against every group.
func gemmProduct(p *Product, rowBytes, cols, n int, groups []gemmActs, panel *gemmPanel, r0, r1 int) {
	repack := gemmRepacks[p.Type]
	steps := cols / gemmStep
	var out [gemmRows * gemmCols]float32
	for pr := r0; pr < r1; pr += gemmRows {
		panel.fill(repack, p.W, rowBytes, pr, p.Rows, cols)
		for gi := range groups {
			gemmKernel(panel, &groups[gi], steps, &out)
			for v := range min(gemmCols, n-gi*gemmCols) {
				for r := range min(gemmRows, p.Rows-pr) {
					p.Out[(gi*gemmCols+v)*p.Rows+pr+r] = out[r*gemmCols+v]
				}
			}
		}
	}
}
