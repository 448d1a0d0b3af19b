package quant

import (
	"fmt"
	"math/bits"
)

// WalshHadamard is the plain orthonormal Walsh–Hadamard transform applied
// to each run of b consecutive coordinates (b a power of two dividing d):
// H_b[i][j] = (−1)^popcount(i&j)/√b, Sylvester's order, no random signs
// and no permutation. H_b is symmetric and its own inverse. It is the
// fixed rotation llama.cpp applies to queries, keys and values when a
// KV cache is quantized (docs/ALGORITHMS.md §7), kept here to measure our
// formats against the strongest q4_0; our own formats use the
// randomized Hadamard.
type WalshHadamard struct{ d, b int }

// NewWalshHadamard returns the transform of R^d in blocks of b.
func NewWalshHadamard(d, b int) (*WalshHadamard, error) {
	if b < 1 || b&(b-1) != 0 || d < b || d%b != 0 || d > 1<<20 {
		return nil, fmt.Errorf("quant: Walsh–Hadamard blocks of %d do not tile dimension %d (a power-of-two block dividing d ≤ 2^20)", b, d)
	}
	return &WalshHadamard{d: d, b: b}, nil
}

// Dim returns the dimension of the transform.
func (w *WalshHadamard) Dim() int { return w.d }

// Block returns the block size.
func (w *WalshHadamard) Block() int { return w.b }

// Apply sets dst = H·src; dst may alias src.
func (w *WalshHadamard) Apply(dst, src []float32) {
	dst = dst[:w.d]
	copy(dst, src[:w.d])
	for off := 0; off < w.d; off += w.b {
		fwht(dst[off:off+w.b], true)
	}
}

// Invert sets dst = Hᵀ·src = H·src; dst may alias src.
func (w *WalshHadamard) Invert(dst, src []float32) { w.Apply(dst, src) }

// largestPow2Divisor returns the largest power of two dividing d > 0.
func largestPow2Divisor(d int) int { return 1 << bits.TrailingZeros(uint(d)) }

// Rotated is a quantizer applied after a fixed rotation: x is stored as
// the inner quantizer's code of Π·x, decoded as Πᵀ of the inner decoding,
// and a query is rotated once so that scores read the codes as they are.
// The code is the inner one: same size, nothing added.
type Rotated struct {
	name  string
	inner Quantizer
	rot   Rotation
}

// q4_0hMinBlock is the smallest Walsh–Hadamard block of q4_0h: llama.cpp
// rotates only heads whose dimension is a multiple of 64, values in
// blocks of 64 and keys in the largest power-of-two block dividing the
// head dimension.
const q4_0hMinBlock = 64

// NewQ4_0H returns llama.cpp's q4_0 after the Walsh–Hadamard rotation it
// applies to quantized caches: blocks of the largest power of two
// dividing d for keys (key set), of 64 for values. d must be a multiple of
// 64.
func NewQ4_0H(d int, key bool) (*Rotated, error) {
	if d < q4_0hMinBlock || d%q4_0hMinBlock != 0 {
		return nil, fmt.Errorf("quant: q4_0h: dimension %d is not a positive multiple of %d", d, q4_0hMinBlock)
	}
	inner, err := NewQ4_0(d)
	if err != nil {
		return nil, err
	}
	b := q4_0hMinBlock
	if key {
		b = largestPow2Divisor(d)
	}
	rot, err := NewWalshHadamard(d, b)
	if err != nil {
		return nil, err
	}
	return &Rotated{name: fmt.Sprintf("q4_0h/%d", b), inner: inner, rot: rot}, nil
}

// Name returns the inner quantizer's name and the rotation's block, e.g.
// "q4_0h/128".
func (r *Rotated) Name() string { return r.name }

// Dim returns the vector dimension.
func (r *Rotated) Dim() int { return r.inner.Dim() }

// Bytes returns the inner quantizer's code size.
func (r *Rotated) Bytes() int { return r.inner.Bytes() }

// Rotation returns the rotation applied before the inner quantizer.
func (r *Rotated) Rotation() Rotation { return r.rot }

// Encode writes the code of x into dst.
func (r *Rotated) Encode(dst []byte, x []float32) error { return r.EncodeBatch(dst, x) }

// EncodeBatch rotates each vector of xs and encodes them as one batch.
func (r *Rotated) EncodeBatch(dst []byte, xs []float32) error {
	if _, err := batchLen(r, dst, xs); err != nil {
		return err
	}
	d := r.Dim()
	y := make([]float32, len(xs))
	for i := 0; i < len(xs); i += d {
		r.rot.Apply(y[i:i+d], xs[i:i+d])
	}
	if err := r.inner.EncodeBatch(dst, y); err != nil {
		return fmt.Errorf("%s: %w", r.name, err)
	}
	return nil
}

// Decode reconstructs Πᵀ·x̃, x̃ the inner decoding.
func (r *Rotated) Decode(dst []float32, code []byte) error {
	if err := checkLen(r.name+" output", len(dst), r.Dim()); err != nil {
		return err
	}
	y := make([]float32, r.Dim())
	if err := r.inner.Decode(y, code); err != nil {
		return fmt.Errorf("%s: %w", r.name, err)
	}
	r.rot.Invert(dst, y)
	return nil
}

// Check is the inner quantizer's.
func (r *Rotated) Check(code []byte) error {
	if err := r.inner.Check(code); err != nil {
		return fmt.Errorf("%s: %w", r.name, err)
	}
	return nil
}

// Prepare rotates q once and prepares the inner quantizer's scorer:
// ⟨q, Πᵀy⟩ = ⟨Πq, y⟩.
func (r *Rotated) Prepare(q []float32) (Scorer, error) {
	if err := checkLen(r.name+" query", len(q), r.Dim()); err != nil {
		return nil, err
	}
	y := make([]float32, r.Dim())
	r.rot.Apply(y, q)
	return r.inner.Prepare(y)
}

// rotatedExp expands a Rotated quantizer's codes with the inner
// quantizer's expander: the internal basis is the rotated one, so a sum
// is rotated back once and a query rotated once.
type rotatedExp struct {
	inner rowExpander
	rot   Rotation
	tmp   []float32
}

func (e *rotatedExp) internalLen() int { return e.inner.internalLen() }

func (e *rotatedExp) expand(dst []float32, rowLen, col int, codes []byte, n, stride, off int) {
	e.inner.expand(dst, rowLen, col, codes, n, stride, off)
}

func (e *rotatedExp) finish(dst, acc []float32) {
	e.inner.finish(e.tmp, acc)
	e.rot.Invert(dst, e.tmp)
}

func (e *rotatedExp) query(dst, q []float32) {
	e.rot.Apply(e.tmp, q)
	e.inner.query(dst, e.tmp)
}
