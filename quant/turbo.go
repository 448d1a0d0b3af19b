package quant

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"

	"github.com/turbomem/turbomem/half"
)

// Correction chooses the scale that TurboMSE stores in place of the plain
// norm (docs/ALGORITHMS.md §3, "norm correction").
type Correction int

const (
	// CorrectNone stores ‖x‖: the decoded vector is ‖x‖·Πᵀc[idx], which is
	// shrunk towards zero (at b = 1, E<y, x̃> = (2/π)<y, x>).
	CorrectNone Correction = iota
	// CorrectNorm stores the scale that gives the decoded vector the norm
	// of x.
	CorrectNorm
	// CorrectProjection stores the scale that makes <x, x̃> = ‖x‖², so the
	// decoded vector's component along x is exactly x: inner products with
	// queries correlated with x lose their systematic shrinkage.
	CorrectProjection
)

// String returns the name used in reports: "", "norm" or "proj".
func (c Correction) String() string {
	switch c {
	case CorrectNorm:
		return "norm"
	case CorrectProjection:
		return "proj"
	}
	return ""
}

// RotationKind selects the random rotation of a quantizer.
type RotationKind int

const (
	// RotateHadamard is the randomized Hadamard transform, O(d log d).
	RotateHadamard RotationKind = iota
	// RotateHaar is a dense Haar-random orthogonal matrix, O(d²).
	RotateHaar
)

// Options configures the rotation-based quantizers.
type Options struct {
	Seed       uint64
	Rotation   RotationKind
	Correction Correction // TurboMSE only
	// Gaussian selects Lloyd–Max codebooks for N(0, 1/d) instead of the
	// exact sphere-coordinate density at d.
	Gaussian bool
}

func newRotation(d int, o Options, stream uint64) (Rotation, error) {
	seed := o.Seed ^ stream*0x2545f4914f6cdd1d
	if o.Rotation == RotateHaar {
		return NewDense(d, seed)
	}
	return NewHadamard(d, seed)
}

func newCodebook(bits, d int, o Options) (*Codebook, error) {
	if o.Gaussian || d < 3 {
		return LloydMaxGaussian(bits, 1/math.Sqrt(float64(d)))
	}
	// Solving takes tens of milliseconds and depends only on (bits, d): a
	// KV cache makes a split quantizer per layer and head. The quantizers
	// only read their codebook, so one is shared.
	key := [2]int{bits, d}
	if cb, ok := sphereCodebooks.Load(key); ok {
		return cb.(*Codebook), nil
	}
	cb, err := LloydMax(bits, d)
	if err != nil {
		return nil, err
	}
	got, _ := sphereCodebooks.LoadOrStore(key, cb)
	return got.(*Codebook), nil
}

// sphereCodebooks memoises LloydMax for newCodebook: a pure function's
// results, not configuration.
var sphereCodebooks sync.Map

// TurboMSE is TurboQuant_mse (docs/ALGORITHMS.md §3): x is stored as a 16-bit
// scale and the b-bit Lloyd–Max indices of the coordinates of Π(x/‖x‖).
// Code layout: fp16 scale (little endian), then d·b bits of indices.
type TurboMSE struct {
	d, bits int
	rot     Rotation
	cb      *Codebook
	table   [16]float32 // centroids, for the b ≤ 4 scorer
	corr    Correction
}

// NewTurboMSE returns a b-bit TurboQuant_mse quantizer for R^d
// (1 ≤ b ≤ 8).
func NewTurboMSE(d, bits int, o Options) (*TurboMSE, error) {
	if d < 1 || bits < 1 || bits > 8 {
		return nil, fmt.Errorf("quant: turbo-mse: dimension %d or bits %d out of range", d, bits)
	}
	rot, err := newRotation(d, o, 1)
	if err != nil {
		return nil, err
	}
	cb, err := newCodebook(bits, d, o)
	if err != nil {
		return nil, err
	}
	t := &TurboMSE{d: d, bits: bits, rot: rot, cb: cb, corr: o.Correction}
	copy(t.table[:], cb.Centroids)
	return t, nil
}

// Name returns "turbo-mse/B" with the correction appended ("+norm").
func (t *TurboMSE) Name() string {
	if c := t.corr.String(); c != "" {
		return fmt.Sprintf("turbo-mse/%d+%s", t.bits, c)
	}
	return fmt.Sprintf("turbo-mse/%d", t.bits)
}

// Dim returns the vector dimension.
func (t *TurboMSE) Dim() int { return t.d }

// Bytes returns TurboMSEBytes(d, b).
func (t *TurboMSE) Bytes() int { return TurboMSEBytes(t.d, t.bits) }

// TurboMSEBytes returns the code size of a b-bit TurboQuant_mse vector of
// dimension d without making the quantizer: an fp16 scale and ⌈d·b/8⌉
// index bytes, whatever the correction.
func TurboMSEBytes(d, bits int) int { return 2 + packedLen(d, bits) }

// Codebook returns the scalar codebook applied to rotated coordinates.
func (t *TurboMSE) Codebook() *Codebook { return t.cb }

// Encode writes the code of x into dst. It fails if the scale does not fit
// in fp16 (‖x‖ above about 65000) or x is not finite.
func (t *TurboMSE) Encode(dst []byte, x []float32) error { return t.EncodeBatch(dst, x) }

// EncodeBatch encodes the len(xs)/d vectors in xs into consecutive codes
// in dst, with one scratch allocation for the whole batch.
func (t *TurboMSE) EncodeBatch(dst []byte, xs []float32) error { return t.encodeBatch(dst, xs, nil) }

// encodeBatch is EncodeBatch with its scratch taken from sc.
func (t *TurboMSE) encodeBatch(dst []byte, xs []float32, sc *Scratch) error {
	n, err := batchLen(t, dst, xs)
	if err != nil {
		return err
	}
	y := sc.floats(t.d)
	idx := sc.bytes(t.d)
	for i := range n {
		code := dst[i*t.Bytes() : (i+1)*t.Bytes()]
		scale, err := t.encode(code[2:], xs[i*t.d:(i+1)*t.d], y, idx)
		if err != nil {
			return err
		}
		binary.LittleEndian.PutUint16(code, uint16(half.F32ToF16(scale)))
	}
	return nil
}

// encode quantizes x into packed indices (dst) and returns the scale to
// store; y and idx are scratch of length d. On return y holds the rotated
// unit vector Πx/‖x‖ and idx its centroid indices.
func (t *TurboMSE) encode(dst []byte, x, y []float32, idx []uint8) (float32, error) {
	n := norm2(x)
	if math.IsNaN(n) || math.IsInf(n, 0) {
		return 0, fmt.Errorf("quant: %s: input is not finite", t.Name())
	}
	t.rot.Apply(y, x)
	inv := float32(0)
	if n > 0 {
		inv = float32(1 / n)
	}
	idx = idx[:len(y)]
	t.cb.scaleIndex(idx, y, inv)
	pack(dst, idx, t.bits)
	scale := n
	if n > 0 && t.corr != CorrectNone {
		// Four partial sums each: one float64 chain of d additions would
		// cost d·latency.
		var cc, yc [4]float64
		cent := t.cb.Centroids
		for j := 0; j+3 < len(y); j += 4 {
			for l := range 4 {
				c := float64(cent[idx[j+l]])
				cc[l] += c * c
				yc[l] += float64(y[j+l]) * c
			}
		}
		for j := len(y) &^ 3; j < len(y); j++ {
			c := float64(cent[idx[j]])
			cc[0] += c * c
			yc[0] += float64(y[j]) * c
		}
		ccs := (cc[0] + cc[1]) + (cc[2] + cc[3])
		ycs := (yc[0] + yc[1]) + (yc[2] + yc[3])
		switch {
		case t.corr == CorrectNorm:
			scale = n / math.Sqrt(ccs)
		case t.corr == CorrectProjection && ycs > 0:
			scale = n / ycs
		}
	}
	if scale > 65000 {
		return 0, fmt.Errorf("quant: %s: scale %g exceeds the fp16 range", t.Name(), scale)
	}
	return float32(scale), nil
}

// Decode reconstructs x̃ = scale·Πᵀc[idx].
func (t *TurboMSE) Decode(dst []float32, code []byte) error {
	if err := checkLen("turbo-mse output", len(dst), t.d); err != nil {
		return err
	}
	if err := t.Check(code); err != nil {
		return err
	}
	scale, _ := readScale(code)
	t.decodeRotated(dst, code[2:], scale)
	y := make([]float32, t.d)
	copy(y, dst)
	t.rot.Invert(dst, y)
	return nil
}

// Check checks the code's length and scale.
func (t *TurboMSE) Check(code []byte) error {
	if err := checkLen("turbo-mse code", len(code), t.Bytes()); err != nil {
		return err
	}
	if _, err := readScale(code); err != nil {
		return fmt.Errorf("%s: %w", t.Name(), err)
	}
	return nil
}

// decodeRotated writes scale·c[idx] (the vector in the rotated basis).
func (t *TurboMSE) decodeRotated(dst []float32, packed []byte, scale float32) {
	idx := make([]uint8, t.d)
	unpack(idx, packed, t.bits)
	for j, k := range idx {
		dst[j] = scale * t.cb.Centroids[k]
	}
}

// readScale reads the fp16 scale at the start of a code and rejects what
// no encoder writes: negative, infinite or NaN values.
func readScale(code []byte) (float32, error) {
	h := half.F16(binary.LittleEndian.Uint16(code))
	s := half.F16ToF32(h)
	if h&0x7c00 == 0x7c00 || s < 0 {
		return 0, fmt.Errorf("%w: scale %g", ErrCorrupt, s)
	}
	return s, nil
}

// Prepare rotates q once; scoring then reads only codes.
func (t *TurboMSE) Prepare(q []float32) (Scorer, error) {
	if err := checkLen("turbo-mse query", len(q), t.d); err != nil {
		return nil, err
	}
	s := &turboScorer{t: t, q: make([]float32, t.d)}
	t.rot.Apply(s.q, q)
	return s, nil
}

type turboScorer struct {
	t *TurboMSE
	q []float32 // Π·q
}

func (s *turboScorer) Score(dst []float32, codes []byte) {
	s.score(dst, codes, s.t.Bytes(), 0, false)
}

// score computes, for codes at stride with this quantizer's code at
// offset off, scale·<Πq, c[idx]>, set or added into dst.
func (s *turboScorer) score(dst []float32, codes []byte, stride, off int, add bool) {
	t := s.t
	if t.bits <= 4 && t.d%8 == 0 {
		dotCodes(dst, s.q, &t.table, codes, stride, off, t.bits, add)
		return
	}
	idx := make([]uint8, t.d)
	for i := range dst {
		c := codes[i*stride+off : i*stride+off+t.Bytes()]
		unpack(idx, c[2:], t.bits)
		var acc float32
		for j, k := range idx {
			acc += s.q[j] * t.cb.Centroids[k]
		}
		v := half.F16ToF32(half.F16(binary.LittleEndian.Uint16(c))) * acc
		if add {
			dst[i] += v
		} else {
			dst[i] = v
		}
	}
}
