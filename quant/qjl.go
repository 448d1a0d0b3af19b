package quant

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/turbomem/turbomem/half"
)

// QJL is the quantized Johnson–Lindenstrauss sketch (docs/ALGORITHMS.md §4): a
// vector k is stored as the m signs of S·k and its norm. A full-precision
// query q is scored by the unbiased estimator
//
//	<q, k> ≈ κ·‖k‖·<S·q, sign(S·k)>.
//
// The paper draws S with i.i.d. N(0,1) entries and κ = √(π/2)/m. Here each
// row of S is a Gaussian row rescaled to norm √d, i.e. √d times a uniform
// unit vector u. Then E[<u,q>·sign<u,k>] = <q, k/‖k‖>·E|u₁| (split q along
// k; the orthogonal part averages out), with E|u₁| = Γ(d/2)/(√π·Γ((d+1)/2)),
// so κ = 1/(m·√d·E|u₁|), which tends to √(π/2)/m as d grows. The fixed
// row norm removes the χ_d fluctuation of Gaussian row norms, which
// otherwise biases every estimate made with one fixed S by O(1/√(dm)).
// The variance stays ≈ (π/(2m))·‖q‖²‖k‖². Code layout: fp16 norm, then m
// sign bits (bit set = positive).
type QJL struct {
	d, m  int
	s     []float32 // m×d, row-major, rows of norm √d
	kappa float32
}

// NewQJL returns an m-bit QJL sketch for R^d; m must be a positive
// multiple of 8.
func NewQJL(d, m int, seed uint64) (*QJL, error) {
	if d < 1 || d > 1<<16 || m < 8 || m%8 != 0 || m > 1<<16 {
		return nil, fmt.Errorf("quant: qjl: dimension %d or sketch size %d out of range (m a multiple of 8)", d, m)
	}
	r := newRand(seed, 3)
	s := make([]float32, m*d)
	row := make([]float64, d)
	for i := range m {
		var n2 float64
		for j := range row {
			row[j] = r.NormFloat64()
			n2 += row[j] * row[j]
		}
		c := math.Sqrt(float64(d) / n2)
		for j, v := range row {
			s[i*d+j] = float32(v * c)
		}
	}
	lg1, _ := math.Lgamma(float64(d) / 2)
	lg2, _ := math.Lgamma(float64(d+1) / 2)
	meanAbs := math.Exp(lg1-lg2) / math.Sqrt(math.Pi) // E|u₁|
	kappa := 1 / (float64(m) * math.Sqrt(float64(d)) * meanAbs)
	return &QJL{d: d, m: m, s: s, kappa: float32(kappa)}, nil
}

// Name returns "qjl/M".
func (j *QJL) Name() string { return fmt.Sprintf("qjl/%d", j.m) }

// Dim returns the vector dimension.
func (j *QJL) Dim() int { return j.d }

// Bytes returns 2 + m/8.
func (j *QJL) Bytes() int { return QJLBytes(j.m) }

// QJLBytes returns the code size of an m-bit QJL sketch without making
// it: an fp16 norm and m/8 sign bytes.
func QJLBytes(m int) int { return 2 + m/8 }

// Encode writes the sketch of x into dst.
func (j *QJL) Encode(dst []byte, x []float32) error { return j.EncodeBatch(dst, x) }

// EncodeBatch sketches each vector of xs into consecutive codes of dst.
func (j *QJL) EncodeBatch(dst []byte, xs []float32) error {
	n, err := batchLen(j, dst, xs)
	if err != nil {
		return err
	}
	for i := range n {
		code := dst[i*j.Bytes() : (i+1)*j.Bytes()]
		x := xs[i*j.d : (i+1)*j.d]
		nx := norm2(x)
		if math.IsNaN(nx) || math.IsInf(nx, 0) || nx > 65000 {
			return fmt.Errorf("quant: %s: input norm %g is not finite or exceeds the fp16 range", j.Name(), nx)
		}
		binary.LittleEndian.PutUint16(code, uint16(half.F32ToF16(float32(nx))))
		j.signs(code[2:], x)
	}
	return nil
}

// signs writes the m sign bits of S·x into dst.
func (j *QJL) signs(dst []byte, x []float32) {
	clear(dst[:j.m/8])
	for i := range j.m {
		if dot(j.s[i*j.d:(i+1)*j.d], x) > 0 {
			dst[i/8] |= 1 << (i % 8)
		}
	}
}

// Decode returns the reconstruction x̃ = κ·‖x‖·Sᵀ·sign(S·x), whose inner product with any q is
// exactly the scorer's estimate.
func (j *QJL) Decode(dst []float32, code []byte) error {
	if err := checkLen("qjl output", len(dst), j.d); err != nil {
		return err
	}
	if err := j.Check(code); err != nil {
		return err
	}
	nx, _ := readScale(code)
	j.unsketch(dst, code[2:], j.kappa*nx)
	return nil
}

// Check checks the code's length and norm.
func (j *QJL) Check(code []byte) error {
	if err := checkLen("qjl code", len(code), j.Bytes()); err != nil {
		return err
	}
	if _, err := readScale(code); err != nil {
		return fmt.Errorf("%s: %w", j.Name(), err)
	}
	return nil
}

// unsketch sets dst = c·Sᵀ·σ for the stored signs σ ∈ {±1}^m.
func (j *QJL) unsketch(dst []float32, bits []byte, c float32) {
	clear(dst)
	for i := range j.m {
		v := -c
		if bits[i/8]>>(i%8)&1 == 1 {
			v = c
		}
		axpy(dst, v, j.s[i*j.d:(i+1)*j.d])
	}
}

// Prepare computes S·q once.
func (j *QJL) Prepare(q []float32) (Scorer, error) {
	if err := checkLen("qjl query", len(q), j.d); err != nil {
		return nil, err
	}
	return j.newScorer(q), nil
}

func (j *QJL) project(q []float32) []float32 {
	sq := make([]float32, j.m)
	for i := range sq {
		sq[i] = dot(j.s[i*j.d:(i+1)*j.d], q)
	}
	return sq
}

type qjlScorer struct {
	j     *QJL
	sq    []float32
	table [16]float32 // sign bit → ∓κ, so the kernel returns the estimate
}

func (j *QJL) newScorer(q []float32) *qjlScorer {
	return &qjlScorer{j: j, sq: j.project(q), table: [16]float32{-j.kappa, j.kappa}}
}

func (s *qjlScorer) Score(dst []float32, codes []byte) {
	s.score(dst, codes, s.j.Bytes(), 0, false)
}

// score sets or adds κ·norm·<Sq, σ> for codes at stride, offset off.
func (s *qjlScorer) score(dst []float32, codes []byte, stride, off int, add bool) {
	dotCodes(dst, s.sq, &s.table, codes, stride, off, 1, add)
}

// TurboProd is TurboQuant_prod (docs/ALGORITHMS.md §4): TurboQuant_mse at b−1
// bits plus a d-bit QJL sketch of the residual r = x − x̃_mse and its norm
// γ. Its inner-product estimate
//
//	<q, x> ≈ <q, x̃_mse> + γ·(√(π/2)/d)·<S·q, sign(S·r)>
//
// is unbiased, with variance ≈ (π/2)·D_mse(b−1)·‖q‖²‖x‖²/d. Code layout:
// the TurboMSE code (absent at b = 1), fp16 γ, d sign bits.
type TurboProd struct {
	bits int
	mse  *TurboMSE // nil at b = 1
	qjl  *QJL
}

// NewTurboProd returns a b-bit TurboQuant_prod quantizer for R^d
// (2 ≤ b ≤ 9; b = 1 is plain QJL with m = d). d must be a multiple of 8.
func NewTurboProd(d, bits int, o Options) (*TurboProd, error) {
	if bits < 1 || bits > 9 || d%8 != 0 {
		return nil, fmt.Errorf("quant: turbo-prod: bits %d out of range [1, 9] or dimension %d not a multiple of 8", bits, d)
	}
	t := &TurboProd{bits: bits}
	if bits > 1 {
		o.Correction = CorrectNone // the residual must be that of the plain MSE decoder
		m, err := NewTurboMSE(d, bits-1, o)
		if err != nil {
			return nil, err
		}
		t.mse = m
	}
	j, err := NewQJL(d, d, o.Seed^0x5bd1e995)
	if err != nil {
		return nil, err
	}
	t.qjl = j
	return t, nil
}

// Name returns "turbo-prod/B".
func (t *TurboProd) Name() string { return fmt.Sprintf("turbo-prod/%d", t.bits) }

// Dim returns the vector dimension.
func (t *TurboProd) Dim() int { return t.qjl.d }

func (t *TurboProd) mseBytes() int {
	if t.mse == nil {
		return 0
	}
	return t.mse.Bytes()
}

// Bytes returns the MSE code, 2 bytes of γ and d/8 sign bytes.
func (t *TurboProd) Bytes() int { return t.mseBytes() + t.qjl.Bytes() }

// TurboProdBytes returns the code size of a b-bit TurboQuant_prod vector
// of dimension d without making the quantizer: the (b−1)-bit MSE code
// (none at b = 1) and a d-bit QJL sketch of the residual.
func TurboProdBytes(d, bits int) int {
	n := QJLBytes(d)
	if bits > 1 {
		n += TurboMSEBytes(d, bits-1)
	}
	return n
}

// Encode writes the code of x into dst.
func (t *TurboProd) Encode(dst []byte, x []float32) error { return t.EncodeBatch(dst, x) }

// EncodeBatch encodes each vector of xs into consecutive codes of dst.
func (t *TurboProd) EncodeBatch(dst []byte, xs []float32) error {
	n, err := batchLen(t, dst, xs)
	if err != nil {
		return err
	}
	d := t.Dim()
	y := make([]float32, d)
	r := make([]float32, d)
	idx := make([]uint8, d)
	for i := range n {
		code := dst[i*t.Bytes() : (i+1)*t.Bytes()]
		x := xs[i*d : (i+1)*d]
		if t.mse == nil {
			if err := t.qjl.Encode(code, x); err != nil {
				return err
			}
			continue
		}
		scale, err := t.mse.encode(code[2:t.mseBytes()], x, y, idx)
		if err != nil {
			return err
		}
		binary.LittleEndian.PutUint16(code, uint16(half.F32ToF16(scale)))
		// The residual is taken against the scale as stored (fp16), so the
		// sketch also corrects the rounding of the norm. encode left
		// y = Πx/‖x‖; hence Πr = Πx − s·c[idx] = ‖x‖·y − s·c[idx].
		s := half.Round16(scale)
		nx := float32(norm2(x))
		for j := range r {
			r[j] = nx*y[j] - s*t.mse.cb.Centroids[idx[j]]
		}
		t.mse.rot.Invert(y, r)
		if err := t.qjl.Encode(code[t.mseBytes():], y); err != nil {
			return err
		}
	}
	return nil
}

// Decode returns x̃_mse plus the QJL reconstruction of the residual; its
// inner product with q is the scorer's estimate.
func (t *TurboProd) Decode(dst []float32, code []byte) error {
	if err := t.Check(code); err != nil {
		return err
	}
	if err := checkLen("turbo-prod output", len(dst), t.Dim()); err != nil {
		return err
	}
	if err := t.qjl.Decode(dst, code[t.mseBytes():]); err != nil {
		return fmt.Errorf("%s: %w", t.Name(), err)
	}
	if t.mse == nil {
		return nil
	}
	m := make([]float32, t.Dim())
	if err := t.mse.Decode(m, code[:t.mseBytes()]); err != nil {
		return err
	}
	for i := range dst {
		dst[i] += m[i]
	}
	return nil
}

// Check checks the code's length and both parts'.
func (t *TurboProd) Check(code []byte) error {
	if err := checkLen("turbo-prod code", len(code), t.Bytes()); err != nil {
		return err
	}
	if err := t.qjl.Check(code[t.mseBytes():]); err != nil {
		return fmt.Errorf("%s: %w", t.Name(), err)
	}
	if t.mse != nil {
		return t.mse.Check(code[:t.mseBytes()])
	}
	return nil
}

// Prepare rotates q for the MSE part and projects it for the QJL part.
func (t *TurboProd) Prepare(q []float32) (Scorer, error) {
	if err := checkLen("turbo-prod query", len(q), t.Dim()); err != nil {
		return nil, err
	}
	s := &prodScorer{t: t, qjl: t.qjl.newScorer(q)}
	if t.mse != nil {
		ms, err := t.mse.Prepare(q)
		if err != nil {
			return nil, err
		}
		s.mse = ms.(*turboScorer)
	}
	return s, nil
}

type prodScorer struct {
	t   *TurboProd
	mse *turboScorer
	qjl *qjlScorer
}

func (s *prodScorer) Score(dst []float32, codes []byte) {
	s.score(dst, codes, s.t.Bytes(), 0, false)
}
