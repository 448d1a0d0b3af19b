package quant

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"

	"github.com/turbomem/turbomem/tensor"
)

// Rotation is a fixed orthogonal transform of R^d.
type Rotation interface {
	// Dim returns d.
	Dim() int
	// Apply sets dst = Π·src. dst and src have length d; whether they may
	// alias depends on the implementation (Hadamard: yes; Dense: no).
	Apply(dst, src []float32)
	// Invert sets dst = Πᵀ·src, with the same aliasing rule as Apply.
	Invert(dst, src []float32)
}

// newRand returns the generator behind every random choice in this
// package, so that a seed fully determines a quantizer.
func newRand(seed uint64, stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, stream^0x9e3779b97f4a7c15))
}

// Hadamard is the randomized Hadamard rotation Π = H·D (docs/ALGORITHMS.md §1):
// a random ±1 diagonal D followed by the normalised Walsh–Hadamard
// transform H, in O(d log d). For d not a power of two, d is split into
// power-of-two blocks (d = 96 → 64 + 32), each transformed on its own, and
// two rounds with a random permutation between them spread energy across
// blocks.
type Hadamard struct {
	d      int
	blocks []int       // power-of-two block sizes, largest first
	signs  [][]float32 // per round, ±1
	// scale holds, per round and coordinate, the sign times the 1/√b
	// normalisation of the block the coordinate lands in, so Apply needs
	// one multiply pass per round; Invert normalises after transforming.
	scale [][]float32
	perm  [][]int32 // per round, nil for the identity
	inv   [][]int32 // inverse permutations
}

// NewHadamard returns a randomized Hadamard rotation of R^d drawn from seed.
func NewHadamard(d int, seed uint64) (*Hadamard, error) {
	if d < 1 || d > 1<<20 {
		return nil, fmt.Errorf("quant: Hadamard dimension %d out of range [1, 2^20]", d)
	}
	h := &Hadamard{d: d}
	for rest := d; rest > 0; {
		b := 1 << (bits.Len(uint(rest)) - 1)
		h.blocks = append(h.blocks, b)
		rest -= b
	}
	rounds := 1
	if len(h.blocks) > 1 {
		rounds = 2
	}
	r := newRand(seed, 1)
	for range rounds {
		s := make([]float32, d)
		for i := range s {
			s[i] = 1
			if r.Uint64()&1 == 1 {
				s[i] = -1
			}
		}
		h.signs = append(h.signs, s)
		if rounds == 1 {
			h.scale = append(h.scale, h.normalised(s, nil))
			h.perm = append(h.perm, nil)
			h.inv = append(h.inv, nil)
			continue
		}
		p := make([]int32, d)
		for i, v := range r.Perm(d) {
			p[i] = int32(v)
		}
		inv := make([]int32, d)
		for i, v := range p {
			inv[v] = int32(i)
		}
		h.perm = append(h.perm, p)
		h.inv = append(h.inv, inv)
		h.scale = append(h.scale, h.normalised(s, p))
	}
	return h, nil
}

// normalised returns s[i]/√b(i) where b(i) is the size of the block that
// coordinate i occupies after the permutation p (nil: identity).
func (h *Hadamard) normalised(s []float32, p []int32) []float32 {
	blockScale := make([]float32, h.d) // by position after permutation
	off := 0
	for _, b := range h.blocks {
		for i := off; i < off+b; i++ {
			blockScale[i] = float32(1 / math.Sqrt(float64(b)))
		}
		off += b
	}
	out := make([]float32, h.d)
	if p == nil {
		for i := range out {
			out[i] = s[i] * blockScale[i]
		}
		return out
	}
	for pos, src := range p { // tmp[pos] = x[src]
		out[src] = s[src] * blockScale[pos]
	}
	return out
}

// stackDim is the largest dimension whose permutation scratch Apply and
// Invert keep on the stack (a head's 64 or 128, say): an encoded key or
// value then allocates nothing here.
const stackDim = 256

// scratch returns d values for a permutation: buf's where they fit.
func (h *Hadamard) scratch(buf *[stackDim]float32) []float32 {
	if h.d <= stackDim {
		return buf[:h.d]
	}
	return make([]float32, h.d)
}

// Dim returns the dimension of the rotation.
func (h *Hadamard) Dim() int { return h.d }

// Apply sets dst = Π·src; dst may alias src.
func (h *Hadamard) Apply(dst, src []float32) {
	dst = dst[:h.d]
	copy(dst, src[:h.d])
	var buf [stackDim]float32
	var tmp []float32
	for r := range h.signs {
		for i, s := range h.scale[r] {
			dst[i] *= s
		}
		if p := h.perm[r]; p != nil {
			if tmp == nil {
				tmp = h.scratch(&buf)
			}
			for i, j := range p {
				tmp[i] = dst[j]
			}
			copy(dst, tmp)
		}
		h.transform(dst, false)
	}
}

// Invert sets dst = Πᵀ·src; dst may alias src.
func (h *Hadamard) Invert(dst, src []float32) {
	dst = dst[:h.d]
	copy(dst, src[:h.d])
	var buf [stackDim]float32
	var tmp []float32
	for r := len(h.signs) - 1; r >= 0; r-- {
		h.transform(dst, true) // normalised H is its own inverse
		if p := h.inv[r]; p != nil {
			if tmp == nil {
				tmp = h.scratch(&buf)
			}
			for i, j := range p {
				tmp[i] = dst[j]
			}
			copy(dst, tmp)
		}
		for i, s := range h.signs[r] {
			dst[i] *= s
		}
	}
}

// transform applies the Walsh–Hadamard transform to each block, normalised
// by 1/√b if normalise is set (Apply folds that factor into its signs).
func (h *Hadamard) transform(x []float32, normalise bool) {
	off := 0
	for _, b := range h.blocks {
		fwht(x[off:off+b], normalise)
		off += b
	}
}

// fwht applies the fast Walsh–Hadamard transform in place, normalised
// (orthogonal) if normalise is set; len(x) must be a power of two. The
// butterflies run on the best kernel the CPU has (fwhtAt).
func fwht(x []float32, normalise bool) {
	fwhtAt(bestLevel(), x)
	if !normalise {
		return
	}
	s := float32(1 / math.Sqrt(float64(len(x))))
	for i := range x {
		x[i] *= s
	}
}

// fwhtGo is the unnormalised transform's pure-Go twin: butterflies of
// stride 1, 2, 4, … in that order (the first two fused).
func fwhtGo(x []float32) {
	n := len(x)
	// First two butterfly stages fused (radix-4) for small strides.
	if n >= 4 {
		for i := 0; i+3 < n; i += 4 {
			a, b, c, d := x[i], x[i+1], x[i+2], x[i+3]
			s0, d0, s1, d1 := a+b, a-b, c+d, c-d
			x[i], x[i+1], x[i+2], x[i+3] = s0+s1, d0+d1, s0-s1, d0-d1
		}
	} else if n == 2 {
		x[0], x[1] = x[0]+x[1], x[0]-x[1]
	}
	for h := 4; h < n; h <<= 1 {
		for i := 0; i < n; i += h << 1 {
			lo := x[i : i+h]
			hi := x[i+h : i+2*h]
			for j := range lo {
				a, b := lo[j], hi[j]
				lo[j], hi[j] = a+b, a-b
			}
		}
	}
}

// Dense is a Haar-random orthogonal rotation stored as a d×d matrix: the Q
// factor of the QR decomposition of a Gaussian matrix with R's diagonal
// made positive (docs/ALGORITHMS.md §1, the reference rotation). O(d²) per
// vector.
type Dense struct {
	d int
	m []float32 // row-major
}

// NewDense returns a Haar-random rotation of R^d drawn from seed.
func NewDense(d int, seed uint64) (*Dense, error) {
	if d < 1 || d > 4096 {
		return nil, fmt.Errorf("quant: dense rotation dimension %d out of range [1, 4096]", d)
	}
	r := newRand(seed, 2)
	// Modified Gram–Schmidt on the columns of a Gaussian matrix, in float64;
	// it yields Q with R's diagonal positive, which makes Q Haar-distributed.
	cols := make([][]float64, d)
	for j := range cols {
		c := make([]float64, d)
		for i := range c {
			c[i] = r.NormFloat64()
		}
		cols[j] = c
	}
	for j := range cols {
		for pass := 0; pass < 2; pass++ { // re-orthogonalise once for accuracy
			for k := 0; k < j; k++ {
				var dot float64
				for i := range cols[j] {
					dot += cols[j][i] * cols[k][i]
				}
				for i := range cols[j] {
					cols[j][i] -= dot * cols[k][i]
				}
			}
		}
		var n float64
		for _, v := range cols[j] {
			n += v * v
		}
		n = math.Sqrt(n)
		for i := range cols[j] {
			cols[j][i] /= n
		}
	}
	m := make([]float32, d*d)
	for i := range d {
		for j := range d {
			m[i*d+j] = float32(cols[j][i])
		}
	}
	return &Dense{d: d, m: m}, nil
}

// Dim returns the dimension of the rotation.
func (r *Dense) Dim() int { return r.d }

// Apply sets dst = Π·src; dst must not alias src.
func (r *Dense) Apply(dst, src []float32) {
	src = src[:r.d]
	for i := range r.d {
		dst[i] = dot(r.m[i*r.d:(i+1)*r.d], src)
	}
}

// Invert sets dst = Πᵀ·src; dst must not alias src.
func (r *Dense) Invert(dst, src []float32) {
	dst = dst[:r.d]
	clear(dst)
	for i, s := range src[:r.d] {
		axpy(dst, s, r.m[i*r.d:(i+1)*r.d])
	}
}

// dot returns Σ a[i]·b[i] over len(a) (tensor's SIMD kernel).
func dot(a, b []float32) float32 { return tensor.DotF32(a, b) }

// axpy sets y += a·x over len(y) (tensor's SIMD kernel).
func axpy(y []float32, a float32, x []float32) { tensor.AxpyF32(y, a, x) }

// norm2 returns the Euclidean norm of x, accumulated in float64 over four
// independent partial sums (one chain of d additions is latency-bound).
func norm2(x []float32) float64 {
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+3 < len(x); i += 4 {
		a, b, c, d := float64(x[i]), float64(x[i+1]), float64(x[i+2]), float64(x[i+3])
		s0 += a * a
		s1 += b * b
		s2 += c * c
		s3 += d * d
	}
	for ; i < len(x); i++ {
		s0 += float64(x[i]) * float64(x[i])
	}
	return math.Sqrt((s0 + s1) + (s2 + s3))
}
