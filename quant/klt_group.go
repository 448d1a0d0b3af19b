package quant

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/turbomem/turbomem/tensor"
)

// The KLT's fast attention path. A code's coded components lie back to
// back in runs of equal bits (DesignKLT sorts them by bits, and the
// components of a run share σ): each run is unpacked a 64-bit word at a
// time through one 256-entry table of its levels σ·c[idx], into a row of
// the coded components (m = len(fields) values, the uncoded ones and the
// offset left out). A chunk of such rows, expanded once, serves every
// query head of a group:
//
//	score_j(v) = ⟨q'_j, off⟩ + ρ̂_v·⟨q'_j[coded], row_v⟩   (tensor's SIMD row kernel)
//	Σ_v w_v·x̃_v = Tᵀ·(off·Σ_v w_v + scatter(Σ_v (w_v·ρ̂_v)·row_v))
//
// so a query is turned once per attention step and a value sum once per
// head, and each index is unpacked once per step, not once per query head.
// Where the CPU has AVX2 (klt_amd64.s), eight codes go through at once,
// sixteen with AVX-512, one in each lane, segment by segment (the fields of a run inside one
// 4-byte window, kltSeg): the window is loaded once from the codes,
// transposed once a pass (32 or 64 bytes a dword of the eight or sixteen codes), then each field is a mask, a shift and a lookup of its level by a
// permute (up to 32 levels) or a gather; scores sum level × query per
// field for four queries, value sums keep eight (AVX2) or sixteen
// (AVX-512) per-lane sums per field in scratch (two blocks of eight codes
// a pass, four with AVX-512), added up into the accumulator at the end of
// each call. Trellis-coded fields (KLTParams.Trellis, up to 8 states) go
// the same way, each field's entry in its table found from the lane's
// trellis state (kltSeg's modes). The
// row path is the kernels' pure-Go twin (the tests compare them) and
// takes the last codes, whose loads would read past the end of the
// codes. The
// per-query scorer (Prepare) and the decoding expander (kltExp) are the
// reference both are tested against.

// kltRun is a run of n fields of equal bits and levels, from field first
// on, starting at bit pos of a code's index bytes.
type kltRun struct {
	pos, bits, n, first int
	per                 int           // fields read from one 64-bit word
	levels              *[256]float32 // σ·c[idx], zero past 2^bits (2^(bits+1) entries trellis-coded)
	trellis             bool          // trellis-coded fields (klt_tcq.go)
}

// kltRuns cuts k's fields into runs.
func kltRuns(k *KLT) []kltRun {
	var runs []kltRun
	pos := 0
	for j := 0; j < len(k.fields); {
		f := k.fields[j]
		b := int(k.bits[f.comp])
		r := kltRun{pos: pos, bits: b, first: j, per: (64 - 7) / b, levels: new([256]float32), trellis: f.trellis}
		entries := 1 << b
		if f.trellis {
			entries = 2 << b // the union codebook
		}
		copy(r.levels[:], k.levels[f.base:f.base+entries])
		for j < len(k.fields) {
			g := k.fields[j]
			if int(k.bits[g.comp]) != b || k.sigma[g.comp] != k.sigma[f.comp] {
				break
			}
			r.n++
			pos += b
			j++
		}
		runs = append(runs, r)
	}
	return runs
}

// kltSeg is a segment of fields as the lane kernels read them: n fields
// of one run lying in one 4-byte window of the code (80 bytes; the
// assembly knows the layout).
type kltSeg struct {
	off   int32     // byte of the code whose 4 bytes are the window, or −1: the last segment's window goes on
	kind  int32     // levels: 0 up to 8 (one permute), 1 16 (two), 2 32 (four), 3 64 (a gather; two permutes with AVX-512), 4 more (a gather)
	bits  uint64    // of each field
	shift uint64    // of the first field in a new window
	n     int64     // fields
	tab   *float32  // the run's levels; with mode kltStart, the subsets X (kltTCQ.xtab)
	mode  int64     // kltScalar, kltTrellis or kltStart
	mask  [8]uint32 // 2^bits − 1, once per lane
}

// The modes of a kltSeg. A trellis-coded field (klt_tcq.go) of b bits u
// = path bit | index<<1 has the entry 4·idx + subset = 2u ⊕ X[s] in its
// run's table of 2^(b+1) levels, s the state before it (its lane's last
// ν path bits, the last in bit 0) and X[s] the subset of the branch from
// s with path bit 0: the two branches that leave a state differ only in
// z₁, bit 1 of the subset, which is the path bit's parity with the
// state's (Trellis: h0 has a D⁰ term, h1 none). The state then moves on
// to 2s | (u&1), of which the kernels' lookup of X reads the low 3 bits
// (4 with AVX-512): X repeats with period the number of states. A pass
// starts each lane's state at 0 and moves it on through the segments of
// mode kltStart, the path bits of the last ν trellis-coded fields, read
// before the others: the state before the first (tail-biting).
const (
	kltScalar  = iota // scalar fields: the entry is the index
	kltTrellis        // trellis-coded fields
	kltStart          // one field, whose path bit only moves the state on
)

// kltSegs cuts k's runs into segments: a new one where a run starts or a
// field does not lie inside the last window; a trellis-coded KLT's first
// segments are those of mode kltStart.
func kltSegs(k *KLT) []kltSeg {
	var segs []kltSeg
	if t := k.tcq; t != nil && len(t.fields) > 0 {
		n := len(t.fields)
		for b := t.tr.nu; b >= 1; b-- {
			f := k.fields[t.fields[((n-b)%n+n)%n]]
			p := 8*f.off + int(f.shift)
			sg := kltSeg{off: int32(1 + p/8), shift: uint64(p % 8), bits: uint64(k.bits[f.comp]), n: 1, tab: (*float32)(unsafe.Pointer(&t.xtab[0])), mode: kltStart}
			for l := range sg.mask {
				sg.mask[l] = 1<<sg.bits - 1
			}
			segs = append(segs, sg)
		}
	}
	win := -1 << 20 // first index bit of the window
	for _, r := range k.runs {
		for i := range r.n {
			p := r.pos + i*r.bits
			fits := p >= win && p+r.bits <= win+32
			if i > 0 && fits {
				segs[len(segs)-1].n++
				continue
			}
			sg := kltSeg{off: -1, bits: uint64(r.bits), n: 1, tab: &r.levels[0]}
			if !fits {
				win = p &^ 7
				sg.off, sg.shift = int32(1+p/8), uint64(p-win)
			}
			tb := r.bits // the table's index bits
			if r.trellis {
				sg.mode, tb = kltTrellis, r.bits+1
			}
			switch {
			case tb <= 3:
				sg.kind = 0
			case tb <= 6:
				sg.kind = int32(tb - 3)
			default:
				sg.kind = 4
			}
			for l := range sg.mask {
				sg.mask[l] = 1<<r.bits - 1
			}
			segs = append(segs, sg)
		}
	}
	return segs
}

// laneBlocks returns how many blocks of eight of the n codes at the start
// of codes (stride bytes each) the lane kernels may read: their loads
// (the AVX2 kernels' transposes) read up to 3 bytes past a block's last code.
func laneBlocks(n, stride, have int) int {
	b := n / 8
	for b > 0 && 8*b*stride+3 > have {
		b--
	}
	return b
}

// kltTrLen returns the bytes of scratch the AVX-512 lane kernels need
// for the transposed codes of groups groups of sixteen codes of stride
// bytes: 64 bytes a dword of the codes, a dword more (a window's next
// dword), and room to align them to 64 bytes.
func kltTrLen(stride, groups int) int {
	return groups*(1024*((stride+63)/64)+64) + 63
}

// kltTrLen2 is kltTrLen for the AVX2 lane kernels, groups of eight
// codes: 32 bytes a dword of the codes (16 bytes of each at a time), a
// dword more, and room to align them to 32 bytes.
func kltTrLen2(stride, groups int) int {
	return groups*(128*((stride+15)/16)+32) + 31
}

// kltAVX2Only keeps the KLT lane kernels to the AVX2 ones on a CPU with
// AVX-512: a switch for the tests and benchmarks that compare the two.
var kltAVX2Only bool

// lanes reports whether the lane kernels take k's codes: the CPU has them
// and the code is scalar or trellis-coded on up to 8 states (kltSeg's
// modes; a larger trellis takes the row path).
func (k *KLT) lanes() bool { return hasKLTLanes() && k.segs != nil }

// laneScales sets rho[v] to the scale of code v of codes (stride bytes
// each), for v < len(rho).
func (k *KLT) laneScales(rho []float32, codes []byte, stride int) {
	for v := range rho {
		rho[v] = k.scales[codes[v*stride]]
	}
}

// load64 returns the little-endian 64-bit word at b[i:], zero past its
// end.
func load64(b []byte, i int) uint64 {
	if i+8 <= len(b) {
		return binary.LittleEndian.Uint64(b[i:])
	}
	var w uint64
	for s, v := range b[i:] {
		w |= uint64(v) << (8 * s)
	}
	return w
}

// expandCoded writes the levels σᵢ·c[idxᵢ] of the coded components of the
// code whose index bytes start idx (bytes of later codes may follow)
// into row, in field order (len(k.fields) values).
func (k *KLT) expandCoded(row []float32, idx []byte) {
	if k.tcq != nil {
		k.expandCodedTCQ(row, idx)
		return
	}
	for ri := range k.runs {
		r := &k.runs[ri]
		out := row[r.first : r.first+r.n]
		pos := r.pos
		for len(out) > 0 {
			c := min(r.per, len(out))
			unpackWord(out[:c], r.levels, load64(idx, pos>>3)>>(pos&7), uint(r.bits))
			out = out[c:]
			pos += c * r.bits
		}
	}
}

// unpackWord sets out[i] = levels[field i of w], the fields b bits each
// from bit 0 on (b·len(out) ≤ 64).
func unpackWord(out []float32, levels *[256]float32, w uint64, b uint) {
	mask := uint64(1)<<b - 1
	s := uint(0)
	for i := range out {
		out[i] = levels[uint8(w>>s&mask)]
		s += b
	}
}

// kltChunk is the float32 scratch of one chunk of expanded rows (16 KiB:
// 32 rows at d = 128).
const kltChunk = 4096

// expandChunk expands the n ≤ kltChunk/m codes of codes (back to back,
// more may follow) into rows (n·m values) and their scales into rho.
func (k *KLT) expandChunk(rows, rho []float32, codes []byte, n int) {
	m, b := len(k.fields), k.bytes
	for v := range n {
		rho[v] = k.scales[codes[v*b]]
		k.expandCoded(rows[v*m:(v+1)*m], codes[v*b+1:])
	}
}

// KLTQueries is a group of queries set up for KLT.ScoreQueries once per
// attention step; read-only afterwards, so the goroutines scoring
// slices of the same step share it.
type KLTQueries struct {
	qs   [][]float32 // per query, q' = T·q at the coded components, in field order
	q4   [][]float32 // per four queries, their qs interleaved per field (zero past the last)
	base []float32   // per query, ⟨q', off⟩
	tmp  []float32
}

// PrepareQueries sets p up for scoring the queries qs (each of length
// Dim): each turned once into the transformed basis.
func (k *KLT) PrepareQueries(p *KLTQueries, qs [][]float32) error {
	m := len(k.fields)
	if cap(p.tmp) < k.d {
		p.tmp = make([]float32, k.d)
	}
	t := p.tmp[:k.d]
	for len(p.qs) < len(qs) {
		p.qs = append(p.qs, nil)
	}
	p.qs, p.base = p.qs[:len(qs)], p.base[:0]
	for j, q := range qs {
		if err := checkLen(k.name+" query", len(q), k.d); err != nil {
			return err
		}
		tensor.DotRowsF32(t, q, k.t) // T·q in one pass of the row kernel
		if cap(p.qs[j]) < m {
			p.qs[j] = make([]float32, m)
		}
		qc := p.qs[j][:m]
		for f := range k.fields {
			qc[f] = t[k.fields[f].comp]
		}
		p.qs[j] = qc
		p.base = append(p.base, dot(t, k.off))
	}
	quads := (len(qs) + 3) / 4
	for len(p.q4) < quads {
		p.q4 = append(p.q4, nil)
	}
	p.q4 = p.q4[:quads]
	for u := range p.q4 {
		if cap(p.q4[u]) < 4*m {
			p.q4[u] = make([]float32, 4*m)
		}
		q4 := p.q4[u][:4*m]
		clear(q4)
		for j := 4 * u; j < min(4*u+4, len(qs)); j++ {
			for f, v := range p.qs[j] {
				q4[4*f+j-4*u] = v
			}
		}
		p.q4[u] = q4
	}
	return nil
}

// ScoreQueries sets dst[j][v] to query j's score (what its Prepare's
// scorer gives, up to float32 rounding) against code v of codes, for v <
// len(dst[0]), the queries set up by PrepareQueries; each chunk of codes
// is unpacked once for all of them.
func (k *KLT) ScoreQueries(dst [][]float32, p *KLTQueries, codes []byte) error {
	if len(dst) != len(p.qs) {
		return fmt.Errorf("quant: %s: %d score rows for %d queries", k.name, len(dst), len(p.qs))
	}
	if len(dst) == 0 || len(dst[0]) == 0 {
		return nil
	}
	n := len(dst[0])
	if len(codes) < n*k.bytes {
		return fmt.Errorf("quant: %s: %d code bytes for %d codes", k.name, len(codes), n)
	}
	k.scoreQueries(true, dst, p, codes)
	return nil
}

// kltLaneChunk is the blocks of eight codes the lane scorer does at once.
const kltLaneChunk = 64

// scoreQueries is ScoreQueries, on the lane kernel if lanes is set and
// the CPU has it, and the row path (its pure-Go twin) for what the
// kernel does not take.
func (k *KLT) scoreQueries(lanes bool, dst [][]float32, p *KLTQueries, codes []byte) {
	n, m, b := len(dst[0]), len(k.fields), k.bytes
	done := 0
	if lanes && k.lanes() && m > 0 {
		blocks := laneBlocks(n, b, len(codes))
		wide := hasKLTLanes512()
		var raw [kltLaneChunk * 32]float32
		var rho, spare [kltLaneChunk * 8]float32
		var trBuf [2*1024 + 128]byte // the kernel's transposed codes
		tr := trBuf[:]
		l := kltTrLen2(b, 2)
		if wide {
			l = kltTrLen(b, 1)
		}
		if l > len(tr) {
			tr = make([]byte, l)
		}
		for c0 := 0; c0 < blocks; c0 += kltLaneChunk {
			c := min(kltLaneChunk, blocks-c0)
			k.laneScales(rho[:8*c], codes[8*c0*b:], b)
			for u, q4 := range p.q4 {
				if wide {
					// The kernel finishes the scores in place; spare
					// takes those of absent queries.
					var rows [4]*float32
					var base [4]float32
					for j := range rows {
						rows[j] = &spare[0]
						if 4*u+j < len(dst) {
							rows[j], base[j] = &dst[4*u+j][8*c0], p.base[4*u+j]
						}
					}
					kltScore4AVX512(&rows, &base, &rho[0], c, &codes[8*c0*b], b, &k.segs[0], len(k.segs), &q4[0], &tr[0])
					continue
				}
				kltScore4AVX2(&raw[0], c, &codes[8*c0*b], b, &k.segs[0], len(k.segs), &q4[0], &tr[0])
				for j := 4 * u; j < min(4*u+4, len(dst)); j++ {
					base, out := p.base[j], dst[j][8*c0:8*(c0+c)]
					for blk := range c {
						o := out[8*blk : 8*blk+8 : 8*blk+8]
						r := raw[32*blk+8*(j-4*u) : 32*blk+8*(j-4*u)+8 : 32*blk+8*(j-4*u)+8]
						s := rho[8*blk : 8*blk+8 : 8*blk+8]
						for i := range o {
							o[i] = base + s[i]*r[i]
						}
					}
				}
			}
		}
		done = 8 * blocks
	}
	if done == n {
		return
	}
	var buf [kltChunk]float32
	var rho [kltChunk]float32
	per := max(1, kltChunk/max(m, 1))
	for i := done; i < n; i += per {
		c := min(per, n-i)
		k.expandChunk(buf[:c*m], rho[:c], codes[i*b:], c)
		for j, d := range dst {
			out := d[i : i+c]
			if m > 0 {
				tensor.DotRowsF32(out, p.qs[j], buf[:c*m])
			} else {
				clear(out)
			}
			base := p.base[j]
			for v := range out {
				out[v] = base + rho[v]*out[v]
			}
		}
	}
}

// kltGroup is the GroupScorer of a KLT (PrepareGroup).
type kltGroup struct {
	k *KLT
	p KLTQueries
}

func (g *kltGroup) Score(dst [][]float32, codes []byte) {
	if err := g.k.ScoreQueries(dst, &g.p, codes); err != nil {
		panic(err) // lengths checked by PrepareGroup; the codes are the caller's
	}
}

// kltAcc is the Accumulator of a KLT: per head, the sums of the weighted
// levels of each coded component (each code's weight times its scale),
// with room for d components whatever the number coded (a cache's KV
// heads share one length), and, last, the sum of the weights (the
// offset's share); Finish turns the sum back once. On the lane kernel the
// sums go by lane into scratch first (8 per component and head, 16 on
// the AVX-512 one), added up at the end of each Accumulate.
type kltAcc struct {
	k     *KLT
	lanes bool
	wide  bool // the AVX-512 lane kernel
	rows  []float32
	rho   []float32
	w     []float32
	y     []float32
	scale []float32    // the scales of a chunk of the lane kernel's codes, then zeros: an absent head's weights on AVX-512
	tr    []byte       // the lane kernel's transposed codes (kltTrLen, kltTrLen2)
	buf   [4][]float32 // the lane kernel's sums, 8 or 16 per coded component, of four heads
}

func newKLTAcc(k *KLT, lanes bool) *kltAcc {
	a := &kltAcc{k: k, lanes: lanes && k.lanes() && len(k.fields) > 0}
	a.wide = a.lanes && hasKLTLanes512()
	return a
}

func (a *kltAcc) AccLen() int { return a.k.d + 1 }

func (a *kltAcc) Accumulate(accs, ws [][]float32, codes []byte) {
	if len(accs) == 0 || len(ws[0]) == 0 {
		return
	}
	k := a.k
	m, b, total := len(k.fields), k.bytes, len(ws[0])
	done := 0
	if a.lanes {
		done = 8 * a.accumulateLanes(accs, ws, codes)
	}
	for h := range accs {
		accs[h][k.d] += sumF32(ws[h])
	}
	if done == total || m == 0 {
		return
	}
	per := max(1, kltChunk/m)
	if a.rows == nil {
		a.rows, a.rho = make([]float32, kltChunk), make([]float32, per)
	}
	if len(a.w) < per {
		a.w = make([]float32, per)
	}
	for i := done; i < total; i += per {
		c := min(per, total-i)
		k.expandChunk(a.rows[:c*m], a.rho[:c], codes[i*b:], c)
		for h, acc := range accs {
			w := a.w[:c]
			for v, x := range ws[h][i : i+c] {
				w[v] = x * a.rho[v]
			}
			tensor.WeightedSumF32(acc[:m], w, a.rows[:c*m])
		}
	}
}

// sumF32 returns the sum of x in eight interleaved partial sums (one
// chain of adds would wait on each add's latency).
func sumF32(x []float32) float32 {
	var s0, s1, s2, s3, s4, s5, s6, s7 float32
	for ; len(x) >= 8; x = x[8:] {
		y := x[:8:8]
		s0, s1, s2, s3 = s0+y[0], s1+y[1], s2+y[2], s3+y[3]
		s4, s5, s6, s7 = s4+y[4], s5+y[5], s6+y[6], s7+y[7]
	}
	s := ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
	for _, v := range x {
		s += v
	}
	return s
}

// accumulateLanes sums the codes of the blocks of eight the lane kernel
// may read, four heads at a time, and returns the number of blocks.
func (a *kltAcc) accumulateLanes(accs, ws [][]float32, codes []byte) int {
	k := a.k
	m, b := len(k.fields), k.bytes
	blocks := laneBlocks(len(ws[0]), b, len(codes))
	if blocks == 0 {
		return 0
	}
	width := 8
	if a.wide {
		width = 16
	}
	if a.buf[0] == nil {
		for j := range a.buf {
			a.buf[j] = make([]float32, width*m)
		}
	}
	if len(a.w) < 32*(kltLaneChunk+1) {
		a.w = make([]float32, 32*(kltLaneChunk+1))
	}
	if a.scale == nil {
		a.scale = make([]float32, 2*8*kltLaneChunk) // and as many zeros, the weights of absent heads
	}
	l := kltTrLen2(b, 2)
	if a.wide {
		l = kltTrLen(b, 2)
	}
	if len(a.tr) < l {
		a.tr = make([]byte, l)
	}
	var ptrs [4]*float32
	for j := range ptrs {
		ptrs[j] = &a.buf[j][0]
	}
	for h0 := 0; h0 < len(accs); h0 += 4 {
		heads := min(4, len(accs)-h0)
		for j := range heads {
			clear(a.buf[j])
		}
		for c0 := 0; c0 < blocks; c0 += kltLaneChunk {
			c := min(kltLaneChunk, blocks-c0)
			w, rho := a.w[:32*c], a.scale[:8*c]
			k.laneScales(rho, codes[8*c0*b:], b)
			if a.wide {
				// The kernel reads the weights and scales as they are,
				// the blocks in fours, none past the last.
				var wp [4]*float32
				for j := range wp {
					wp[j] = &a.scale[8*kltLaneChunk] // zeros
					if j < heads {
						wp[j] = &ws[h0+j][8*c0]
					}
				}
				kltAcc4AVX512(&ptrs, &wp, &rho[0], c, &codes[8*c0*b], b, &k.segs[0], len(k.segs), &a.tr[0])
				continue
			}
			for j := range 4 {
				var src []float32
				if j < heads {
					src = ws[h0+j][8*c0 : 8*(c0+c)]
				}
				for blk := range c {
					o := w[32*blk+8*j : 32*blk+8*j+8 : 32*blk+8*j+8]
					if src == nil {
						clear(o)
						continue
					}
					x, s := src[8*blk:8*blk+8:8*blk+8], rho[8*blk:8*blk+8:8*blk+8]
					for i := range o {
						o[i] = x[i] * s[i]
					}
				}
			}
			// Blocks go in pairs; an odd last one is paired with itself,
			// the second time with zero weights.
			odd := c % 2
			clear(a.w[32*c : 32*(c+odd)])
			kltAcc4AVX2(&ptrs, &w[0], (c+1)/2, &codes[8*c0*b], b, &k.segs[0], len(k.segs), &a.tr[0], odd)
		}
		for j := range heads {
			acc, lanes := accs[h0+j], a.buf[j]
			for f := range m {
				l := lanes[width*f : width*f+8 : width*f+8]
				s := ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
				if a.wide {
					l = lanes[16*f+8 : 16*f+16 : 16*f+16]
					s += ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
				}
				acc[f] += s
			}
		}
	}
	return blocks
}

func (a *kltAcc) Finish(dst, acc []float32) {
	k := a.k
	if a.y == nil {
		a.y = make([]float32, k.d)
	}
	s := acc[k.d]
	for i, o := range k.off {
		a.y[i] = s * o
	}
	for f := range k.fields {
		a.y[k.fields[f].comp] += acc[f]
	}
	clear(dst[:k.d]) // Tᵀ·y in one pass of the row kernel
	tensor.WeightedSumF32(dst[:k.d], a.y, k.t)
}
