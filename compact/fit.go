package compact

import (
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
)

// fp16Max is the largest finite fp16 value: fitted values beyond it
// cannot be stored by a cache (whose windows and f16 formats hold fp16).
const fp16Max = 65504

// fallbackRidge is the ridge, relative to ‖A‖₂², that a least-squares
// fit retries with when the plain fit fails (rank-deficient or not
// finite): small enough not to bias a well-posed fit, large enough to
// make the normal matrix well conditioned in float64.
const fallbackRidge = 1e-6

// columns returns the n×len(idx) matrix of the chosen keys' exp-scores.
func (a *attention) columns(idx []int) *mat.Dense {
	m := mat.NewDense(a.n, len(idx), nil)
	for i := range a.n {
		row := a.e[i*a.t : (i+1)*a.t]
		for k, j := range idx {
			m.Set(i, k, float64(row[j]))
		}
	}
	return m
}

// fitMass returns the weights B of the kept keys idx that fit the mass
// equations M·B ≈ mass in least squares (M the kept keys' exp-scores),
// clamped to [e^lo, e^hi], followed by iters projected-gradient steps of
// size 1/‖M‖₂² (the paper's code: least squares, clamp, and optionally a
// few steps of projected gradient descent on the box-constrained
// problem). A least-squares failure is retried with a small ridge; the
// warning says so.
func (a *attention) fitMass(idx []int, lo, hi float64, iters int) ([]float64, string) {
	m := a.columns(idx)
	y := mat.NewDense(a.n, 1, append([]float64(nil), a.mass...))
	x, warn := solveLS(m, y, 0, math.Inf(1))
	if x == nil {
		return nil, warn
	}
	bl, bh := math.Exp(lo), math.Exp(hi)
	b := make([]float64, len(idx))
	for k := range b {
		b[k] = clamp(x.At(k, 0), bl, bh)
	}
	if iters == 0 {
		return b, warn
	}
	step := 1 / sigmaMax2(m)
	bv := mat.NewVecDense(len(b), b)
	r := mat.NewVecDense(a.n, nil)
	g := mat.NewVecDense(len(b), nil)
	yv := mat.NewVecDense(a.n, a.mass)
	for range iters {
		r.MulVec(m, bv)
		r.SubVec(r, yv)
		g.MulVec(m.T(), r)
		for k := range b {
			b[k] = clamp(b[k]-step*g.AtVec(k), bl, bh)
		}
	}
	return b, warn
}

// fitValues returns the values C₂ (t rows of d) that make the compacted
// attention reproduce the reference outputs in least squares:
// X·C₂ ≈ Y, X = softmax(s·Q·C₁ᵀ + β) (row i: e_ij·B_j normalised over
// the kept keys j), Y the original outputs, with λ = ridge·‖X‖₂². Rows
// whose kept keys all underflowed to zero carry no information and are
// left out. It returns nil and a warning where no fit is finite and
// storable (beyond fp16).
func (a *attention) fitValues(idx []int, w []float64, ridge float64) ([]float32, string) {
	d, t := a.b.Dim, len(idx)
	var xs, ys []float64
	rows := 0
	for i := range a.n {
		row := a.e[i*a.t : (i+1)*a.t]
		var sum float64
		for k, j := range idx {
			sum += float64(row[j]) * w[k]
		}
		if !(sum > 0) || math.IsInf(sum, 0) {
			continue
		}
		for k, j := range idx {
			xs = append(xs, float64(row[j])*w[k]/sum)
		}
		for _, v := range a.y[i*d : (i+1)*d] {
			ys = append(ys, float64(v))
		}
		rows++
	}
	if rows == 0 {
		return nil, "no reference query attends to the kept keys: original values kept"
	}
	x := mat.NewDense(rows, t, xs)
	y := mat.NewDense(rows, d, ys)
	lambda := 0.0
	if ridge > 0 {
		lambda = ridge * sigmaMax2(x)
	}
	c, warn := solveLS(x, y, lambda, fp16Max)
	if c == nil {
		return nil, warn + ": original values kept"
	}
	out := make([]float32, t*d)
	for k := range t {
		for j := range d {
			out[k*d+j] = float32(c.At(k, j))
		}
	}
	return out, warn
}

// solveLS returns X minimising ‖A·X − B‖² + λ‖X‖², retrying with
// λ = fallbackRidge·‖A‖₂² where the fit fails or gives numbers that are
// not finite or larger than bound in magnitude; nil where that fails too.
// The string is a warning, empty where the first fit served.
func solveLS(a, b *mat.Dense, lambda, bound float64) (*mat.Dense, string) {
	x, err := lstsq(a, b, lambda, bound)
	if err == nil {
		return x, ""
	}
	fb := max(lambda, fallbackRidge*sigmaMax2(a))
	if fb == 0 {
		return nil, fmt.Sprintf("least squares: %v (the matrix is zero)", err)
	}
	x, err2 := lstsq(a, b, fb, bound)
	if err2 == nil {
		return x, fmt.Sprintf("least squares %v: refit with ridge %.3g", err, fb)
	}
	return nil, fmt.Sprintf("least squares %v; with ridge %.3g: %v", err, fb, err2)
}

var errOutOfRange = errors.New("solution is not finite or out of range")

// lstsq returns X minimising ‖A·X − B‖² + λ‖X‖²: for λ = 0 by QR of A
// (LQ and the minimum-norm solution when A is wide), else by QR of A
// stacked on √λ·I (which never squares A's condition number, as the
// normal equations would). It fails where A is rank-deficient (λ = 0) or
// an entry of X is not finite or larger than bound in magnitude.
func lstsq(a, b *mat.Dense, lambda, bound float64) (x *mat.Dense, err error) {
	defer func() {
		// gonum panics on degenerate shapes; report them as failures.
		if p := recover(); p != nil {
			x, err = nil, fmt.Errorf("solver: %v", p)
		}
	}()
	m, k := a.Dims()
	_, c := b.Dims()
	if lambda > 0 {
		aa := mat.NewDense(m+k, k, nil)
		aa.Slice(0, m, 0, k).(*mat.Dense).Copy(a)
		s := math.Sqrt(lambda)
		for i := range k {
			aa.Set(m+i, i, s)
		}
		bb := mat.NewDense(m+k, c, nil)
		bb.Slice(0, m, 0, c).(*mat.Dense).Copy(b)
		a, b = aa, bb
	}
	x = new(mat.Dense)
	if err := x.Solve(a, b); err != nil {
		return nil, err
	}
	for _, v := range x.RawMatrix().Data {
		if !(math.Abs(v) <= bound) {
			return nil, errOutOfRange
		}
	}
	return x, nil
}

// sigmaMax2 returns ‖A‖₂², the largest eigenvalue of AᵀA, by power
// iteration from the all-ones vector (the exp-score and attention
// matrices are non-negative, so their Perron vector is too and the start
// is never orthogonal to it), to a relative change below 10⁻¹².
func sigmaMax2(a *mat.Dense) float64 {
	m, k := a.Dims()
	if m == 0 || k == 0 {
		return 0
	}
	v := mat.NewVecDense(k, nil)
	for i := range k {
		v.SetVec(i, 1/math.Sqrt(float64(k)))
	}
	t := mat.NewVecDense(m, nil)
	w := mat.NewVecDense(k, nil)
	lam := 0.0
	for range 500 {
		t.MulVec(a, v)
		w.MulVec(a.T(), t)
		nw := mat.Norm(w, 2)
		if nw == 0 {
			return 0
		}
		v.ScaleVec(1/nw, w)
		if math.Abs(nw-lam) <= 1e-12*nw {
			return nw
		}
		lam = nw
	}
	return lam
}

func clamp(x, lo, hi float64) float64 {
	if math.IsNaN(x) {
		return x
	}
	return min(max(x, lo), hi)
}
