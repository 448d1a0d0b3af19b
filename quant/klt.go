package quant

import (
	"container/heap"
	"fmt"
	"math"
	"sort"
	"sync"

	"gonum.org/v1/gonum/mat"
)

// KLT is a transform coder calibrated on real data: a fixed orthogonal
// transform T (the Karhunen–Loève basis of the calibration vectors, its
// components of equal bits turned by a random rotation among themselves),
// integer bits per component chosen by reverse water-filling (0 allowed),
// and per component the Lloyd–Max codebook of a unit Gaussian scaled by
// the component's calibrated standard deviation. A code is one byte of
// per-vector scale and the packed indices:
//
//	y = T·x − off                 (off = T·mean)
//	ρ = √(mean over coded i of yᵢ²/σᵢ²)   e₀ = round(8·log₂ρ) + 128, 1..255
//	idxᵢ = nearest centroid of yᵢ/(ρ̂·σᵢ) in the bᵢ-bit codebook
//	x̃ = Tᵀ·(off + ρ̂·σ∘c[idx])     ρ̂ = 2^((e−128)/8); e = 0: x̃ = mean
//
// The scale, a step of 1/8 octave, follows how far a vector is from the
// calibration's spread (tokens differ in norm far more than Gaussian
// vectors do); it costs 8 bits per vector. Its search starts from e₀,
// measured on the coded components (bᵢ > 0) alone: the others are not
// stored, and a direction the calibration barely saw (σᵢ tiny) must not
// decide the scale of the rest. The stored byte and indices are then
// the pair of least error found around e₀, the byte fitted to the
// indices by least squares (fitScale). A query is turned once,
// q' = T·q, and a score is ⟨q', off⟩ + ρ̂·Σᵢ q'ᵢσᵢ·c[idxᵢ]; values are summed
// in the transformed basis and turned back once (docs/ALGORITHMS.md §1).
type KLT struct {
	d     int
	t     []float32 // d×d row-major: row i is the i-th basis vector
	off   []float32
	sigma []float32
	bits  []uint8
	books [9][]float32 // unit-Gaussian centroids by bits (nil for 0)
	bytes int
	name  string
	// fields locate each coded component's index in a code (after the
	// scale byte), in component order; scales[e] is ρ̂ of scale byte e;
	// levels[fields[j].base+idx] is σᵢ·c[idx], the component's levels.
	fields []kltField
	scales [256]float32
	levels []float32
	// runs are the fields cut into runs of equal bits and levels, which
	// the grouped scorer and the accumulator unpack a word at a time
	// (klt_group.go).
	runs []kltRun
	segs []kltSeg
	// tcq, if set, is the trellis-coded option (KLTParams.Trellis;
	// klt_tcq.go): fields hold path bits and subset indices, levels
	// hold each TCQ component's union codebook, and attention takes the
	// lane kernels up to 8 states (kltSeg's modes), else the Go row path.
	tcq    *kltTCQ
	weight []float32
}

// kltField is where component comp's index lies in a code's index bytes:
// bits [shift, shift+bits) of the little-endian 16-bit word at byte off
// (one byte when the field ends the code); base is its first entry in a
// per-component table (KLT.levels, a scorer's table).
type kltField struct {
	off, base   int
	comp        int
	shift, mask uint16
	one         bool
	// trellis marks a trellis-coded field (klt_tcq.go): path bit and
	// subset index.
	trellis bool
}

// index reads the field's index from idx, a code's index bytes.
func (f *kltField) index(idx []byte) int {
	w := uint16(idx[f.off])
	if !f.one {
		w |= uint16(idx[f.off+1]) << 8
	}
	return int(w >> f.shift & f.mask)
}

// KLTParams are a KLT's calibrated parameters.
type KLTParams struct {
	// Transform is the d×d orthogonal matrix T, row-major: y = T·x.
	Transform []float32
	// Offset is T·mean, the calibration mean in the transformed basis.
	Offset []float32
	// Sigma is each component's calibrated standard deviation (> 0).
	Sigma []float32
	// Bits is each component's index width, 0 to 8.
	Bits []uint8
	// Trellis, if not 0, is the number of states of the trellis
	// (NewTrellis; 8 is what the tcq formats use) with which the
	// components of 1 to TCQMaxBits bits are coded instead of the
	// scalar codebooks: trellis-coded quantization along the whole
	// vector at the same bits (klt_tcq.go).
	Trellis int
	// Weight, if set, is each component's weight in the error the
	// trellis encoder minimises (DesignWeightedKLT: uᵢᵀ·W·uᵢ, mean 1);
	// nil: all 1. The scalar code reads it only for the scale byte
	// (fitScale): its nearest level is the best for any weight.
	Weight []float32
}

// kltScaleBias is the scale exponent byte of ρ = 1; kltScaleSteps the
// steps per octave.
const (
	kltScaleBias  = 128
	kltScaleSteps = 8
	kltMaxBits    = 8
	kltMaxDim     = 1024
)

// KLTBytes returns the code size of a KLT at bpc bits per coordinate all
// in (scale byte and indices) for dimension d: ⌊bpc·d/8⌋ bytes, of which
// all but one hold indices.
func KLTBytes(d int, bpc float64) int { return int(math.Floor(bpc * float64(d) / 8)) }

// NewKLT returns the coder of p; its code is 1 + ⌈Σ bits/8⌉ bytes.
func NewKLT(p KLTParams) (*KLT, error) {
	d := len(p.Sigma)
	if d < 1 || d > kltMaxDim {
		return nil, fmt.Errorf("quant: klt: dimension %d out of range [1, %d]", d, kltMaxDim)
	}
	if len(p.Transform) != d*d || len(p.Offset) != d || len(p.Bits) != d {
		return nil, fmt.Errorf("quant: klt: transform %d, offset %d, bits %d values for dimension %d", len(p.Transform), len(p.Offset), len(p.Bits), d)
	}
	k := &KLT{d: d, t: append([]float32(nil), p.Transform...), off: append([]float32(nil), p.Offset...),
		sigma: append([]float32(nil), p.Sigma...), bits: append([]uint8(nil), p.Bits...)}
	total := 0
	for i := range d {
		s, o := float64(k.sigma[i]), float64(k.off[i])
		if !(s > 0) || math.IsInf(s, 0) || math.IsNaN(o) || math.IsInf(o, 0) {
			return nil, fmt.Errorf("quant: klt: component %d: sigma %g, offset %g", i, s, o)
		}
		b := int(k.bits[i])
		if b > kltMaxBits {
			return nil, fmt.Errorf("quant: klt: component %d has %d bits, at most %d", i, b, kltMaxBits)
		}
		total += b
	}
	books, err := unitGaussianBooks()
	if err != nil {
		return nil, err
	}
	for b := 1; b <= kltMaxBits; b++ {
		k.books[b] = books[b].Centroids
	}
	// T must be orthogonal: TᵀT = I within float32 rounding.
	for i := range d {
		for j := i; j < d; j++ {
			var s float64
			for r := range d {
				s += float64(k.t[r*d+i]) * float64(k.t[r*d+j])
			}
			if i == j {
				s--
			}
			if math.Abs(s) > 1e-4 || math.IsNaN(s) {
				return nil, fmt.Errorf("quant: klt: transform is not orthogonal (column %d·%d off by %.3g)", i, j, s)
			}
		}
	}
	if err := checkWeight(p.Weight, d); err != nil {
		return nil, err
	}
	if p.Weight != nil {
		k.weight = append([]float32(nil), p.Weight...)
	}
	k.bytes = 1 + (total+7)/8
	k.name = fmt.Sprintf("klt/%d", total)
	if p.Trellis != 0 {
		k.name = fmt.Sprintf("klt-tcq%d/%d", p.Trellis, total)
	}
	for e := range k.scales {
		k.scales[e] = float32(kltScale(byte(e)))
	}
	pos, base := 0, 0
	for i, b := range k.bits {
		if b == 0 {
			continue
		}
		f := kltField{off: pos / 8, base: base, comp: i, shift: uint16(pos % 8), mask: 1<<b - 1}
		if p.Trellis != 0 && b <= TCQMaxBits {
			f.trellis = true
			base += 2 << b // the union codebook: 2^(b+1) levels
		} else {
			base += 1 << b
		}
		f.one = f.off+1 >= k.bytes-1
		k.fields = append(k.fields, f)
		pos += int(b)
	}
	if p.Trellis != 0 {
		if k.tcq, err = newKLTTCQ(k, p.Trellis, p.Weight); err != nil {
			return nil, err
		}
	}
	for _, f := range k.fields {
		b := int(k.bits[f.comp])
		if k.tcq != nil && b <= TCQMaxBits {
			for _, c := range k.tcq.levels(b) {
				k.levels = append(k.levels, k.sigma[f.comp]*float32(c))
			}
			continue
		}
		for _, c := range k.books[b] {
			k.levels = append(k.levels, k.sigma[f.comp]*c)
		}
	}
	if k.tcq == nil || k.tcq.tr.States() <= 8 { // the lane kernels' (kltSeg; the word unpacker's, scalar only)
		k.runs = kltRuns(k)
		k.segs = kltSegs(k)
	}
	return k, nil
}

// Name returns "klt/B", B the index bits per vector.
func (k *KLT) Name() string { return k.name }

// Dim returns the vector dimension.
func (k *KLT) Dim() int { return k.d }

// Bytes returns the code size: one scale byte and the packed indices.
func (k *KLT) Bytes() int { return k.bytes }

// Params returns a copy of the coder's parameters.
func (k *KLT) Params() KLTParams {
	p := KLTParams{Transform: append([]float32(nil), k.t...), Offset: append([]float32(nil), k.off...),
		Sigma: append([]float32(nil), k.sigma...), Bits: append([]uint8(nil), k.bits...)}
	if k.tcq != nil {
		p.Trellis = k.tcq.tr.States()
	}
	if k.weight != nil {
		p.Weight = append([]float32(nil), k.weight...)
	}
	return p
}

// apply sets y = T·x.
func (k *KLT) apply(y, x []float32) {
	d := k.d
	for i := range d {
		y[i] = dot(k.t[i*d:(i+1)*d], x)
	}
}

// invert sets x = Tᵀ·y.
func (k *KLT) invert(x, y []float32) {
	clear(x)
	for i, v := range y {
		if v != 0 {
			axpy(x, v, k.t[i*k.d:(i+1)*k.d])
		}
	}
}

// Encode writes the code of x into dst.
func (k *KLT) Encode(dst []byte, x []float32) error { return k.EncodeBatch(dst, x) }

// EncodeBatch encodes the vectors of xs into consecutive codes of dst.
func (k *KLT) EncodeBatch(dst []byte, xs []float32) error {
	n, err := batchLen(k, dst, xs)
	if err != nil {
		return err
	}
	y := make([]float32, k.d)
	sc := k.newScaleScratch()
	for v := range n {
		x := xs[v*k.d : (v+1)*k.d]
		for _, f := range x {
			if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
				return fmt.Errorf("quant: %s: vector %d is not finite", k.name, v)
			}
		}
		k.encode(dst[v*k.bytes:(v+1)*k.bytes], x, y, sc)
	}
	return nil
}

func (k *KLT) encode(code []byte, x, y []float32, sc *kltScaleScratch) {
	k.apply(y, x)
	for i := range y {
		y[i] -= k.off[i]
	}
	clear(code)
	e, ok := k.rmsByte(y)
	if !ok {
		return
	}
	k.encodeAt(code, y, e)
	k.fitScale(code, y, sc)
}

// rmsByte returns the scale byte of ρ, the RMS of yᵢ/σᵢ over the coded
// components of y (turned and centred), where the encoder's search
// starts (fitScale); false if ρ is 0 (the code of all zero bytes, which
// decodes to the offset).
func (k *KLT) rmsByte(y []float32) (byte, bool) {
	var m float64
	coded := 0
	for i, b := range k.bits {
		if b > 0 {
			z := float64(y[i]) / float64(k.sigma[i])
			m += z * z
			coded++
		}
	}
	rho := math.Sqrt(m / float64(max(coded, 1)))
	if !(rho > 0) {
		return 0, false
	}
	return clampByte(math.Round(kltScaleSteps*math.Log2(rho)) + kltScaleBias), true
}

// encodeAt writes the code of y (turned and centred) with the scale byte
// e: e and the indices of y/ρ̂(e).
func (k *KLT) encodeAt(code []byte, y []float32, e byte) {
	code[0] = e
	inv := 1 / kltScale(e)
	if k.tcq != nil {
		k.encodeTCQ(code[1:], y, inv)
		return
	}
	w := bitWriter{buf: code[1:]}
	for i, b := range k.bits {
		if b == 0 {
			continue
		}
		w.write(uint8(nearest(k.books[b], float32(float64(y[i])*inv/float64(k.sigma[i])))), int(b))
	}
	w.flush()
}

// kltScale returns ρ̂ of the scale byte e (0 for e = 0).
func kltScale(e byte) float64 {
	if e == 0 {
		return 0
	}
	return math.Exp2(float64(int(e)-kltScaleBias) / kltScaleSteps)
}

// nearest returns the index of the centroid of c (ascending) nearest v.
func nearest[T float32 | float64](c []T, v T) int {
	lo, hi := 0, len(c)-1
	for lo < hi { // first centroid whose upper boundary is ≥ v
		mid := (lo + hi) / 2
		if v <= (c[mid]+c[mid+1])/2 {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// internal writes off + ρ̂·σ∘c[idx], the code in the transformed basis,
// into y.
func (k *KLT) internal(y []float32, code []byte) {
	if k.tcq != nil {
		k.internalTCQ(y, code)
		return
	}
	rho := k.scales[code[0]]
	idx := code[1:]
	copy(y, k.off)
	for j := range k.fields {
		f := &k.fields[j]
		y[f.comp] += rho * k.levels[f.base+f.index(idx)]
	}
}

// Check returns the error Decode would give for code: only a wrong
// length, since every scale byte and index decodes to a finite vector.
func (k *KLT) Check(code []byte) error { return checkLen(k.name+" code", len(code), k.bytes) }

// Decode reconstructs the vector of code into dst.
func (k *KLT) Decode(dst []float32, code []byte) error {
	if err := checkLen(k.name+" output", len(dst), k.d); err != nil {
		return err
	}
	if err := k.Check(code); err != nil {
		return err
	}
	y := make([]float32, k.d)
	k.internal(y, code)
	k.invert(dst, y)
	return nil
}

// Prepare turns q once and tabulates q'ᵢσᵢ·c[j] per component.
func (k *KLT) Prepare(q []float32) (Scorer, error) {
	if err := checkLen(k.name+" query", len(q), k.d); err != nil {
		return nil, err
	}
	qt := make([]float32, k.d)
	k.apply(qt, q)
	s := &kltScorer{k: k, base: dot(qt, k.off), table: make([]float32, len(k.levels))}
	for _, f := range k.fields {
		n := 1 << k.bits[f.comp]
		if k.tcq != nil && k.bits[f.comp] <= TCQMaxBits {
			n *= 2
		}
		for j, l := range k.levels[f.base : f.base+n] {
			s.table[f.base+j] = qt[f.comp] * l
		}
	}
	return s, nil
}

type kltScorer struct {
	k     *KLT
	base  float32
	table []float32 // q'ᵢσᵢ·c[j], laid out as KLT.levels
}

func (s *kltScorer) Score(dst []float32, codes []byte) {
	k := s.k
	if k.tcq != nil {
		s.scoreTCQ(dst, codes)
		return
	}
	fields, table := k.fields, s.table
	for v := range dst {
		code := codes[v*k.bytes : (v+1)*k.bytes]
		idx := code[1:]
		// Four sums: one would wait on each addition's latency.
		var a0, a1, a2, a3 float32
		j := 0
		for ; j+4 <= len(fields); j += 4 {
			f := fields[j : j+4 : j+4]
			a0 += table[f[0].base+f[0].index(idx)]
			a1 += table[f[1].base+f[1].index(idx)]
			a2 += table[f[2].base+f[2].index(idx)]
			a3 += table[f[3].base+f[3].index(idx)]
		}
		for ; j < len(fields); j++ {
			a0 += table[fields[j].base+fields[j].index(idx)]
		}
		dst[v] = s.base + k.scales[code[0]]*((a0+a1)+(a2+a3))
	}
}

// kltExp expands KLT codes in the transformed basis.
type kltExp struct{ k *KLT }

func (e kltExp) internalLen() int { return e.k.d }

func (e kltExp) expand(dst []float32, rowLen, col int, codes []byte, n, stride, off int) {
	for v := range n {
		e.k.internal(dst[v*rowLen+col:v*rowLen+col+e.k.d], codes[v*stride+off:v*stride+off+e.k.bytes])
	}
}

func (e kltExp) finish(dst, acc []float32) { e.k.invert(dst, acc) }

func (e kltExp) query(dst, q []float32) { e.k.apply(dst, q) }

// bitReader reads fields of up to 8 bits from an LSB-first bit stream
// (what polar.go's bitWriter writes).
type bitReader struct {
	buf []byte
	pos int
}

func (r *bitReader) read(n int) uint32 {
	i, sh := r.pos>>3, r.pos&7
	w := uint32(r.buf[i])
	if i+1 < len(r.buf) {
		w |= uint32(r.buf[i+1]) << 8
	}
	r.pos += n
	return w >> sh & (1<<n - 1)
}

// DesignKLT returns the parameters of a KLT for vectors of dimension d
// with the calibration covariance cov (d×d, row-major) and mean, spending
// codeBits index bits per vector: the eigenvectors of cov, by decreasing
// eigenvalue λ; bits by reverse water-filling in integer steps (each bit
// goes to the component whose expected squared error λᵢ·D(bᵢ) it lowers
// most, D(b) the unit Gaussian Lloyd–Max error, D(0) = 1: optimal for
// the convex D); then the components of equal bits turned among
// themselves by a Haar rotation drawn from seed, which makes real
// components, often far from Gaussian, closer to it (sums of several),
// with σ² the mean of their eigenvalues. Eigenvalues below 1e-9 of the
// largest are raised to it.
func DesignKLT(cov, mean []float64, d, codeBits int, seed uint64) (KLTParams, error) {
	return DesignWeightedKLT(cov, nil, mean, d, codeBits, seed)
}

// DesignWeightedKLT is DesignKLT for an error measured through weight
// (d×d, symmetric positive semi-definite, row-major; nil: the identity):
// E[(x − x̃)ᵀ·W·(x − x̃)] rather than E‖x − x̃‖². For keys W is the
// queries' second moment E[q·qᵀ], and the error E[(qᵀ(k − k̃))²] is what
// moves the attention logits. The basis stays the covariance's
// eigenvectors uᵢ; the bits go by reverse water-filling on wᵢ·λᵢ, wᵢ =
// uᵢᵀ·W·uᵢ (normalised to mean 1): a component's error λᵢ·D(bᵢ) costs
// wᵢ times as much, the errors of the components being uncorrelated.
// The final rows' weights tᵢᵀ·W·tᵢ go to KLTParams.Weight, for the
// trellis option's encoder.
func DesignWeightedKLT(cov, weight, mean []float64, d, codeBits int, seed uint64) (KLTParams, error) {
	if d < 1 || d > kltMaxDim || len(cov) != d*d || len(mean) != d {
		return KLTParams{}, fmt.Errorf("quant: klt design: covariance %d and mean %d values for dimension %d", len(cov), len(mean), d)
	}
	if codeBits < 0 || codeBits > kltMaxBits*d {
		return KLTParams{}, fmt.Errorf("quant: klt design: %d bits for dimension %d, want 0 to %d", codeBits, d, kltMaxBits*d)
	}
	for i, v := range cov {
		if math.IsNaN(v) || math.IsInf(v, 0) || v != cov[(i%d)*d+i/d] {
			return KLTParams{}, fmt.Errorf("quant: klt design: covariance is not finite and symmetric at %d", i)
		}
	}
	var es mat.EigenSym
	if !es.Factorize(mat.NewSymDense(d, append([]float64(nil), cov...)), true) {
		return KLTParams{}, fmt.Errorf("quant: klt design: eigen-decomposition did not converge")
	}
	vals := es.Values(nil) // ascending
	var vecs mat.Dense
	es.VectorsTo(&vecs)
	lam := make([]float64, d)
	u := make([][]float64, d) // u[i]: eigenvector of the i-th largest
	for i := range d {
		j := d - 1 - i
		lam[i] = vals[j]
		u[i] = mat.Col(nil, j, &vecs)
	}
	floor := 1e-9 * math.Max(lam[0], 0)
	if !(floor > 0) {
		return KLTParams{}, fmt.Errorf("quant: klt design: covariance has no positive eigenvalue")
	}
	for i := range lam {
		lam[i] = math.Max(lam[i], floor)
	}
	alloc := lam
	if weight != nil {
		if len(weight) != d*d {
			return KLTParams{}, fmt.Errorf("quant: klt design: weight %d values for dimension %d", len(weight), d)
		}
		w := make([]float64, d)
		var sum float64
		for i, ui := range u {
			w[i] = quadForm(weight, ui)
			if math.IsNaN(w[i]) || math.IsInf(w[i], 0) || w[i] < -1e-9*math.Abs(sum+w[i]) {
				return KLTParams{}, fmt.Errorf("quant: klt design: weight is not positive semi-definite and finite (component %d: %g)", i, w[i])
			}
			w[i] = math.Max(w[i], 0)
			sum += w[i]
		}
		if !(sum > 0) {
			return KLTParams{}, fmt.Errorf("quant: klt design: weight is zero")
		}
		alloc = make([]float64, d)
		for i := range lam {
			alloc[i] = lam[i] * w[i] * float64(d) / sum
		}
		// By decreasing weighted variance, so that the bits decrease
		// along the components and equal ones are neighbours.
		order := make([]int, d)
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(a, b int) bool { return alloc[order[a]] > alloc[order[b]] })
		l2, u2, a2 := make([]float64, d), make([][]float64, d), make([]float64, d)
		for i, j := range order {
			l2[i], u2[i], a2[i] = lam[j], u[j], alloc[j]
		}
		lam, u, alloc = l2, u2, a2
	}
	bits, err := AllocateBits(alloc, codeBits)
	if err != nil {
		return KLTParams{}, err
	}
	p := KLTParams{Transform: make([]float32, d*d), Offset: make([]float32, d), Sigma: make([]float32, d), Bits: make([]uint8, d)}
	t := make([][]float64, d)
	for lo := 0; lo < d; {
		hi := lo + 1
		for hi < d && bits[hi] == bits[lo] {
			hi++
		}
		n := hi - lo
		var s float64
		for i := lo; i < hi; i++ {
			s += lam[i]
		}
		sigma := math.Sqrt(s / float64(n))
		var rot *Dense
		if n > 1 {
			if rot, err = NewDense(n, seed^uint64(lo)<<32^uint64(bits[lo])); err != nil {
				return KLTParams{}, err
			}
		}
		for i := lo; i < hi; i++ {
			row := make([]float64, d)
			if rot == nil {
				copy(row, u[i])
			} else {
				for j := lo; j < hi; j++ {
					w := float64(rot.m[(i-lo)*n+(j-lo)])
					for c := range d {
						row[c] += w * u[j][c]
					}
				}
			}
			t[i] = row
			p.Sigma[i] = float32(sigma)
			p.Bits[i] = uint8(bits[i])
		}
		lo = hi
	}
	for i, row := range t {
		var o float64
		for c, v := range row {
			p.Transform[i*d+c] = float32(v)
			o += v * mean[c]
		}
		p.Offset[i] = float32(o)
	}
	if weight != nil {
		// Each final row's weight tᵢᵀ·W·tᵢ (mean 1), for the trellis
		// encoder (KLTParams.Weight): the rotation within a run of equal
		// bits mixes the eigenvectors' weights.
		p.Weight = make([]float32, d)
		ws := make([]float64, d)
		var sum float64
		for i, row := range t {
			ws[i] = math.Max(quadForm(weight, row), 0)
			sum += ws[i]
		}
		for i := range ws {
			p.Weight[i] = float32(ws[i] * float64(d) / sum)
		}
	}
	return p, nil
}

// quadForm returns uᵀ·W·u for W (len(u)² values, row-major).
func quadForm(w, u []float64) float64 {
	d := len(u)
	var q float64
	for r := range d {
		var s float64
		for c := range d {
			s += w[r*d+c] * u[c]
		}
		q += u[r] * s
	}
	return q
}

// AllocateBits returns integer bits per component, 0 to 8, summing to
// total, for components of variance lam: reverse water-filling in steps
// of one bit, each to the component whose expected error λᵢ·D(bᵢ) it
// lowers most (ties to the lower index), D the unit Gaussian Lloyd–Max
// error.
func AllocateBits(lam []float64, total int) ([]int, error) {
	if total < 0 || total > kltMaxBits*len(lam) {
		return nil, fmt.Errorf("quant: klt: %d bits for %d components", total, len(lam))
	}
	books, err := unitGaussianBooks()
	if err != nil {
		return nil, err
	}
	var dist [kltMaxBits + 1]float64
	dist[0] = 1
	for b := 1; b <= kltMaxBits; b++ {
		dist[b] = books[b].MSE
	}
	bits := make([]int, len(lam))
	h := make(gainHeap, len(lam))
	for i, l := range lam {
		if math.IsNaN(l) || l < 0 {
			return nil, fmt.Errorf("quant: klt: component %d has variance %g", i, l)
		}
		h[i] = gain{l * (dist[0] - dist[1]), i}
	}
	heap.Init(&h)
	for range total {
		g := heap.Pop(&h).(gain)
		bits[g.i]++
		if b := bits[g.i]; b < kltMaxBits {
			heap.Push(&h, gain{lam[g.i] * (dist[b] - dist[b+1]), g.i})
		}
	}
	return bits, nil
}

// unitGaussianBooks memoises LloydMaxGaussian(b, 1) for b = 1..8, which
// every KLT design and coder reads (the 8-bit one takes seconds to solve,
// and a model's cache designs one KLT per layer, KV head and rate): a pure
// function's results, not configuration. The coders only read them.
var unitGaussianBooks = sync.OnceValues(func() (books [kltMaxBits + 1]*Codebook, err error) {
	for b := 1; b <= kltMaxBits; b++ {
		if books[b], err = LloydMaxGaussian(b, 1); err != nil {
			return books, err
		}
	}
	return books, nil
})

type gain struct {
	v float64
	i int
}

type gainHeap []gain

func (h gainHeap) Len() int { return len(h) }
func (h gainHeap) Less(a, b int) bool {
	if h[a].v != h[b].v {
		return h[a].v > h[b].v
	}
	return h[a].i < h[b].i
}
func (h gainHeap) Swap(a, b int) { h[a], h[b] = h[b], h[a] }
func (h *gainHeap) Push(x any)   { *h = append(*h, x.(gain)) }
func (h *gainHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
