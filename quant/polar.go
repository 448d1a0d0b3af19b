package quant

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/turbomem/turbomem/half"
)

// Polar is PolarQuant (docs/ALGORITHMS.md §5). After a random rotation y = Πx,
// each block of 2^L consecutive coordinates is written in recursive polar
// form: level 1 turns each pair (y[2j], y[2j+1]) into an angle
// ψ = atan2(y[2j+1], y[2j]) ∈ [0, 2π) and a radius ρ; level ℓ ≥ 2 pairs
// the radii of two adjacent level-(ℓ−1) nodes (ρ₁ of the first half, ρ₂
// of the second) into ψ = atan(ρ₂/ρ₁) ∈ [0, π/2] and ρ = √(ρ₁² + ρ₂²),
// until one radius per block remains. Each level's angles are quantized
// with that level's Lloyd–Max codebook; the block radius is stored as
// fp16. There is no per-block scale or zero point: the angle densities
// are known in advance (see NewPolar).
//
// Code layout (Bytes = 2·nb + ⌈A/8⌉ for nb = d/2^L blocks and A angle
// bits in all): the nb fp16 block radii (little endian, block order),
// then one LSB-first bit stream (bit k of the stream is bit k%8 of byte
// k/8, as in bitpack.go) holding the level-1 indices of all d/2 pairs in
// coordinate order, directly followed by the d/4 level-2 indices, and so
// on up to the nb level-L indices; only the stream's last byte is padded
// (with zeros). Levels need not start on a byte, so Bytes is the exact bit
// count rounded up once: d = 128 with [4, 2, 2, 2] gives
// 16 + ⌈8·46/8⌉ = 62 bytes, 3.875 bits per coordinate.
type Polar struct {
	d     int
	bits  []int // per level, level 1 first
	nb    int   // blocks
	rot   Rotation
	books []*Codebook
	cos   [][]float32 // per level, cos of each centroid
	sin   [][]float32
	// Encoding compares directions instead of computing angles. Level 1:
	// halfCos/halfSin hold the unit vectors of the cell boundaries kΔ,
	// 0 < kΔ < π. Levels ≥ 2: tanBound[l] holds tan of each boundary, so
	// ψ = atan(ρ₂/ρ₁) > t ⟺ ρ₂ > tan(t)·ρ₁ (ρ₁, ρ₂ ≥ 0).
	halfCos, halfSin []float64
	tanBound         [][]float64
	idxOff           []int // per level, first index in the all-levels index array
	bitOff           []int // per level, first bit in the angle stream
	bytes            int
	name             string
}

// polarStream is the rotation stream of PolarQuant (TurboMSE uses 1), so
// that one seed gives the two methods independent rotations.
const polarStream = 5

// NewPolar returns a PolarQuant quantizer for R^d whose level ℓ angles
// get levelBits[ℓ−1] bits (each 1..8); nil means the common [4, 2, 2, 2].
// With L = len(levelBits) (1..8), d must be a multiple of 2^L. Of o, only
// Seed and Rotation apply.
//
// Codebooks: the level-1 angle of a rotated vector is uniform on [0, 2π),
// whose Lloyd–Max quantizer is the uniform one (2^b equal cells, centroid
// at each cell's midpoint: equal cells with centred centroids satisfy both
// optimality conditions, and on a circle every cell is alike). The level-ℓ
// angle (ℓ ≥ 2) has density ∝ sin^(k−1)(2ψ) on [0, π/2] with k = 2^(ℓ−1):
// the two halves' norms ρ₁, ρ₂ are independent χ_k (Gaussian case; for a
// uniform unit vector the directions of the halves are the same), and the
// change to polar coordinates turns ρ₁^(k−1)ρ₂^(k−1)·e^(−ρ²/2)·ρ into
// cos^(k−1)ψ·sin^(k−1)ψ times a function of ρ. Those codebooks are solved
// numerically (tabulated).
func NewPolar(d int, levelBits []int, o Options) (*Polar, error) {
	if levelBits == nil {
		levelBits = []int{4, 2, 2, 2}
	}
	L := len(levelBits)
	if L < 1 || L > 8 {
		return nil, fmt.Errorf("quant: polar: %d levels, want 1..8", L)
	}
	var name strings.Builder
	name.WriteString("polar/")
	for l, b := range levelBits {
		if b < 1 || b > 8 {
			return nil, fmt.Errorf("quant: polar: level %d has %d bits, want 1..8", l+1, b)
		}
		name.WriteString(strconv.Itoa(b))
	}
	block := 1 << L
	if d < block || d%block != 0 || d > 1<<20 {
		return nil, fmt.Errorf("quant: polar: dimension %d is not a positive multiple of the block size 2^%d = %d (at most 2^20)", d, L, block)
	}
	rot, err := newRotation(d, o, polarStream)
	if err != nil {
		return nil, err
	}
	p := &Polar{d: d, bits: append([]int(nil), levelBits...), nb: d / block, rot: rot, name: name.String()}
	idx, bit := 0, 0
	for l, b := range levelBits {
		var cb *Codebook
		if l == 0 {
			cb = uniformAngleCodebook(b)
		} else {
			// §5: level-ℓ angle density ∝ sin^(2^(ℓ−1)−1)(2ψ) on [0, π/2].
			e := float64(int(1)<<l - 1)
			cb = tabulated(b, 0, math.Pi/2, func(psi float64) float64 {
				return math.Pow(math.Max(math.Sin(2*psi), 0), e)
			})
		}
		p.books = append(p.books, cb)
		if l == 0 {
			for k := 1; 2*k < len(cb.Centroids); k++ {
				a := float64(k) * 2 * math.Pi / float64(len(cb.Centroids))
				p.halfCos = append(p.halfCos, math.Cos(a))
				p.halfSin = append(p.halfSin, math.Sin(a))
			}
			p.tanBound = append(p.tanBound, nil)
		} else {
			tb := make([]float64, len(cb.Bounds))
			for i, b := range cb.Bounds {
				tb[i] = math.Tan(float64(b))
			}
			p.tanBound = append(p.tanBound, tb)
		}
		cs := make([]float32, len(cb.Centroids))
		sn := make([]float32, len(cb.Centroids))
		for k, c := range cb.Centroids {
			cs[k] = float32(math.Cos(float64(c)))
			sn[k] = float32(math.Sin(float64(c)))
		}
		p.cos = append(p.cos, cs)
		p.sin = append(p.sin, sn)
		n := p.angles(l)
		p.idxOff = append(p.idxOff, idx)
		p.bitOff = append(p.bitOff, bit)
		idx += n
		bit += n * b
	}
	p.bytes = 2*p.nb + (bit+7)/8
	return p, nil
}

// uniformAngleCodebook returns the b-bit Lloyd–Max quantizer of the
// uniform density on [0, 2π): cells of width Δ = 2π/2^b, centroids at
// their midpoints, MSE Δ²/12.
func uniformAngleCodebook(b int) *Codebook {
	n := 1 << b
	delta := 2 * math.Pi / float64(n)
	cb := &Codebook{Bits: b, Centroids: make([]float32, n), Bounds: make([]float32, n-1), MSE: delta * delta / 12}
	for k := range n {
		cb.Centroids[k] = float32((float64(k) + 0.5) * delta)
		if k > 0 {
			cb.Bounds[k-1] = float32(float64(k) * delta)
		}
	}
	cb.buildGrid()
	return cb
}

// angles returns the number of level-(l+1) angles in a vector, d/2^(l+1).
func (p *Polar) angles(l int) int { return p.d >> (l + 1) }

// Name returns "polar/" followed by the bits of each level, e.g.
// "polar/4222".
func (p *Polar) Name() string { return p.name }

// Dim returns the vector dimension.
func (p *Polar) Dim() int { return p.d }

// Bytes returns 2·nb + ⌈A/8⌉ (see Polar for the layout).
func (p *Polar) Bytes() int { return p.bytes }

// PolarBytes returns the code size of NewPolar(d, levelBits, …) without
// making the quantizer (which solves codebooks): per block of 2^L
// coordinates an fp16 radius, and Σ_ℓ (d/2^ℓ)·b_ℓ angle bits in all,
// packed into whole bytes; nil levelBits are the default [4, 2, 2, 2].
func PolarBytes(d int, levelBits []int) int {
	if levelBits == nil {
		levelBits = []int{4, 2, 2, 2}
	}
	bits := 0
	for l, b := range levelBits {
		bits += d >> (l + 1) * b
	}
	return 2*(d>>len(levelBits)) + (bits+7)/8
}

// Codebooks returns the angle codebook of each level, level 1 first.
// They are shared: callers must not modify them.
func (p *Polar) Codebooks() []*Codebook { return append([]*Codebook(nil), p.books...) }

// Encode writes the code of x into dst. It fails if x is not finite or a
// block radius exceeds the fp16 range.
func (p *Polar) Encode(dst []byte, x []float32) error { return p.EncodeBatch(dst, x) }

// EncodeBatch encodes the len(xs)/d vectors in xs into consecutive codes
// in dst, with one set of scratch buffers for the whole batch.
func (p *Polar) EncodeBatch(dst []byte, xs []float32) error {
	n, err := batchLen(p, dst, xs)
	if err != nil {
		return err
	}
	y := make([]float32, p.d)
	rho := make([]float64, p.d/2)
	idx := make([]uint8, p.d-p.nb)
	for i := range n {
		if err := p.encode(dst[i*p.bytes:(i+1)*p.bytes], xs[i*p.d:(i+1)*p.d], y, rho, idx); err != nil {
			return err
		}
	}
	return nil
}

// encode writes the code of x; y, rho and idx are scratch.
func (p *Polar) encode(code []byte, x, y []float32, rho []float64, idx []uint8) error {
	if nx := norm2(x); math.IsNaN(nx) || math.IsInf(nx, 0) {
		return fmt.Errorf("quant: %s: input is not finite", p.name)
	}
	p.rot.Apply(y, x)
	// Level 1: the cell k = ⌊ψ/Δ⌋ of ψ = atan2(b, a) ∈ [0, 2π). The lower
	// half-plane (ψ ≥ π, including the negative a axis) is turned by π
	// onto the upper one, n/2 cells further on; there ψ ≥ kΔ exactly when
	// the cross product of the boundary direction with (a, b) is ≥ 0,
	// which is monotone in k.
	turn := (1 << p.bits[0]) / 2
	lvl := idx[:p.angles(0)]
	for j := range lvl {
		a, b := float64(y[2*j]), float64(y[2*j+1])
		rho[j] = math.Sqrt(a*a + b*b)
		k := 0
		if b < 0 || (b == 0 && a < 0) {
			a, b, k = -a, -b, turn
		}
		lvl[j] = uint8(k + countAtLeast(p.halfCos, p.halfSin, a, b))
	}
	// Levels ≥ 2, in place: node j reads its children 2j, 2j+1 ≥ j, and
	// only nodes below j have been overwritten. The cell is the number of
	// boundaries t below ψ: ρ₂ > tan(t)·ρ₁ (ψ on a boundary goes to the
	// lower cell, as in Codebook.Index).
	for l := 1; l < len(p.bits); l++ {
		lvl := idx[p.idxOff[l] : p.idxOff[l]+p.angles(l)]
		tb := p.tanBound[l]
		for j := range lvl {
			a, b := rho[2*j], rho[2*j+1]
			lvl[j] = uint8(countBelow(tb, a, b))
			rho[j] = math.Sqrt(a*a + b*b)
		}
	}
	for j := range p.nb {
		r := rho[j]
		if r > 65504 {
			return fmt.Errorf("quant: %s: block %d radius %g exceeds the fp16 range", p.name, j, r)
		}
		binary.LittleEndian.PutUint16(code[2*j:], uint16(half.F32ToF16(float32(r))))
	}
	stream := code[2*p.nb:]
	clear(stream)
	var w bitWriter
	w.buf = stream
	for l, b := range p.bits {
		for _, k := range idx[p.idxOff[l] : p.idxOff[l]+p.angles(l)] {
			w.write(k, b)
		}
	}
	w.flush()
	return nil
}

// countAtLeast returns the number of boundary directions (cs[k], sn[k]),
// at increasing angles in (0, π), that the direction (a, b) (b ≥ 0, angle
// in [0, π)) is at or beyond: those with b·cs[k] − a·sn[k] ≥ 0.
func countAtLeast(cs, sn []float64, a, b float64) int {
	if len(cs) <= 7 { // up to 4 bits: a branch-free count beats the search
		k := 0
		for m, c := range cs {
			if b*c-a*sn[m] >= 0 {
				k++
			}
		}
		return k
	}
	lo, hi := 0, len(cs)
	for lo < hi { // the predicate holds on a prefix
		m := int(uint(lo+hi) >> 1)
		if b*cs[m]-a*sn[m] >= 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// countBelow returns the number of ascending tangents t with b > t·a, the
// boundaries that ψ = atan2(b, a) ∈ [0, π/2] lies strictly above.
func countBelow(tb []float64, a, b float64) int {
	if len(tb) <= 7 {
		k := 0
		for _, t := range tb {
			if b > t*a {
				k++
			}
		}
		return k
	}
	lo, hi := 0, len(tb)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if b > tb[m]*a {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// bitWriter appends fields of up to 8 bits to an LSB-first bit stream.
type bitWriter struct {
	buf []byte
	acc uint32
	n   int // bits held in acc
	o   int // next byte of buf
}

func (w *bitWriter) write(v uint8, b int) {
	w.acc |= uint32(v) & (1<<b - 1) << w.n
	w.n += b
	for w.n >= 8 {
		w.buf[w.o] = byte(w.acc)
		w.o++
		w.acc >>= 8
		w.n -= 8
	}
}

func (w *bitWriter) flush() {
	if w.n > 0 {
		w.buf[w.o] = byte(w.acc)
		w.o++
		w.acc, w.n = 0, 0
	}
}

// unpackAt reads len(idx) fields of b bits from the LSB-first bit stream
// src, starting at bit off. Byte-aligned runs use unpack's fast paths.
func unpackAt(idx []uint8, src []byte, off, b int) {
	if off%8 == 0 {
		src = src[off/8:]
		if b == 2 { // the common level width; unpack's generic loop is slower
			src = src[:packedLen(len(idx), 2)]
			for i := range idx {
				idx[i] = src[i/4] >> (2 * (i & 3)) & 3
			}
			return
		}
		unpack(idx, src, b)
		return
	}
	mask := uint16(1)<<b - 1
	for i := range idx {
		pos := off + i*b
		w := uint16(src[pos/8])
		if pos%8+b > 8 {
			w |= uint16(src[pos/8+1]) << 8
		}
		idx[i] = uint8(w >> (pos % 8) & mask)
	}
}

// unpackAll reads the angle indices of all levels of one code into idx
// (len d − nb, level by level).
func (p *Polar) unpackAll(idx []uint8, code []byte) {
	stream := code[2*p.nb : p.bytes]
	for l, b := range p.bits {
		unpackAt(idx[p.idxOff[l]:p.idxOff[l]+p.angles(l)], stream, p.bitOff[l], b)
	}
}

// Decode reconstructs x̃ = Πᵀỹ, where each block of ỹ is its radius times,
// per coordinate, the product of the cos or sin of the centroid angles on
// its path from the top level down.
func (p *Polar) Decode(dst []float32, code []byte) error {
	if err := checkLen("polar output", len(dst), p.d); err != nil {
		return err
	}
	if err := p.Check(code); err != nil {
		return err
	}
	rho := make([]float32, p.d/2)
	for j := range p.nb {
		rho[j], _ = readScale(code[2*j:])
	}
	idx := make([]uint8, p.d-p.nb)
	p.unpackAll(idx, code)
	// Top-down, in place: node j writes its children 2j, 2j+1, and going
	// from the last node down no unread node is overwritten.
	for l := len(p.bits) - 1; l >= 1; l-- {
		lvl := idx[p.idxOff[l] : p.idxOff[l]+p.angles(l)]
		cs, sn := p.cos[l], p.sin[l]
		for j := len(lvl) - 1; j >= 0; j-- {
			r := rho[j]
			rho[2*j] = r * cs[lvl[j]]
			rho[2*j+1] = r * sn[lvl[j]]
		}
	}
	y := make([]float32, p.d)
	cs, sn := p.cos[0], p.sin[0]
	for j, k := range idx[:p.angles(0)] {
		y[2*j] = rho[j] * cs[k]
		y[2*j+1] = rho[j] * sn[k]
	}
	p.rot.Invert(dst, y)
	return nil
}

// fusedMax bounds the per-query table that folds level 2 into level 1.
const fusedMax = 1 << 14

// Check checks the code's length and every block's radius.
func (p *Polar) Check(code []byte) error {
	if err := checkLen("polar code", len(code), p.bytes); err != nil {
		return err
	}
	for j := range p.nb {
		if _, err := readScale(code[2*j:]); err != nil {
			return fmt.Errorf("%s: block %d radius: %w", p.name, j, err)
		}
	}
	return nil
}

// Prepare rotates q once (q' = Πq) and tabulates, for every pair j and
// level-1 centroid k, t1[j][k] = q'[2j]·cos c_k + q'[2j+1]·sin c_k: the
// inner product of the pair's part of q' with the unit vector of angle
// c_k. When the table stays small (d/2·2^b₁·2^b₂ ≤ 2^14 entries: 4096
// for d = 128 and [4, 2, …]) it also folds in the parent's level-2 angle
// m: t12[j][m][k] = (cos or sin of c²_m, as j is a first or second
// child)·t1[j][k], so a level-2 node costs two lookups and an add.
func (p *Polar) Prepare(q []float32) (Scorer, error) {
	if err := checkLen("polar query", len(q), p.d); err != nil {
		return nil, err
	}
	qr := make([]float32, p.d)
	p.rot.Apply(qr, q)
	n1 := 1 << p.bits[0]
	t1 := make([]float32, p.d/2*n1)
	cs, sn := p.cos[0], p.sin[0]
	for j := range p.d / 2 {
		a, b := qr[2*j], qr[2*j+1]
		row := t1[j*n1 : (j+1)*n1]
		for k := range row {
			row[k] = a*cs[k] + b*sn[k]
		}
	}
	s := &polarScorer{p: p, t1: t1}
	if len(p.bits) >= 2 && p.d/2<<(p.bits[0]+p.bits[1]) <= fusedMax {
		n2 := 1 << p.bits[1]
		s.t12 = make([]float32, p.d/2*n2*n1)
		for j := range p.d / 2 {
			f := p.cos[1]
			if j%2 == 1 {
				f = p.sin[1]
			}
			for m, c := range f {
				row := s.t12[(j*n2+m)*n1 : (j*n2+m+1)*n1]
				for k, v := range t1[j*n1 : (j+1)*n1] {
					row[k] = c * v
				}
			}
		}
	}
	return s, nil
}

type polarScorer struct {
	p   *Polar
	t1  []float32 // d/2 × 2^b₁
	t12 []float32 // d/2 × 2^b₂ × 2^b₁, or nil
}

// Score computes, per code, Σ_blocks r·v where v is the block's part of
// <Πq, ỹ/r> built bottom-up: level 1 looks up v_j = t1[j][idx], and each
// higher node combines its children as cos ψ·v_first + sin ψ·v_second,
// which is <Πq, ỹ> regrouped (the path products factor out level by
// level).
func (s *polarScorer) Score(dst []float32, codes []byte) {
	p := s.p
	idx := make([]uint8, p.d-p.nb)
	v := make([]float32, p.d/2)
	n1 := 1 << p.bits[0]
	for i := range dst {
		code := codes[i*p.bytes : (i+1)*p.bytes]
		first := 1
		if s.t12 != nil && p.bits[0] == 4 && p.bits[1] == 2 {
			// The default widths, read straight from the stream: byte j
			// of level 1 holds both children of level-2 node j (low
			// nibble first), and level 2 starts at bit 2d, byte-aligned.
			stream := code[2*p.nb:]
			l1 := stream[:p.d/4]
			l2 := stream[p.d/4 : p.d/4+p.d/16]
			for j, c := range l1 {
				m := int(l2[j/4]>>(2*(j&3))) & 3
				a := s.t12[(8*j+m)*16+int(c&15)]
				b := s.t12[(8*j+4+m)*16+int(c>>4)]
				v[j] = a + b
			}
			for l := 2; l < len(p.bits); l++ {
				unpackAt(idx[p.idxOff[l]:p.idxOff[l]+p.angles(l)], stream, p.bitOff[l], p.bits[l])
			}
			first = 2
		} else if s.t12 != nil {
			p.unpackAll(idx, code)
			l1 := idx[:p.angles(0)]
			n2 := 1 << p.bits[1]
			l2 := idx[p.idxOff[1] : p.idxOff[1]+p.angles(1)]
			for j, m := range l2 {
				a := s.t12[((2*j)*n2+int(m))*n1+int(l1[2*j])]
				b := s.t12[((2*j+1)*n2+int(m))*n1+int(l1[2*j+1])]
				v[j] = a + b
			}
			first = 2
		} else {
			p.unpackAll(idx, code)
			for j, k := range idx[:p.angles(0)] {
				v[j] = s.t1[j*n1+int(k)]
			}
		}
		for l := first; l < len(p.bits); l++ {
			lvl := idx[p.idxOff[l] : p.idxOff[l]+p.angles(l)]
			cs, sn := p.cos[l], p.sin[l]
			for j, k := range lvl {
				v[j] = cs[k]*v[2*j] + sn[k]*v[2*j+1]
			}
		}
		var acc float32
		for j := range p.nb {
			acc += half.F16ToF32(half.F16(binary.LittleEndian.Uint16(code[2*j:]))) * v[j]
		}
		dst[i] = acc
	}
}
