package compact

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/mat"

	"github.com/turbomem/turbomem/tensor"
)

// fp16Max is the largest finite fp16 value: fitted values beyond it
// cannot be stored by a cache (whose windows and f16 formats hold fp16).
const fp16Max = 65504

// fallbackRidge is the ridge, relative to ‖A‖₂², that a least-squares
// fit retries with when the plain fit fails (rank-deficient or not
// finite): small enough not to bias a well-posed fit, large enough to
// make the normal matrix well conditioned in float64.
const fallbackRidge = 1e-6

// underflowed is the largest exp-score that counts as zero in the fits:
// the softmax kernels' exponential gives 2⁻¹²⁶ for every exponent below
// −87.3, a weight that underflowed.
const underflowed = 0x1p-125

// columnsT returns the transpose of x (n rows of t kept keys'
// exp-scores, from keptScores), each column multiplied by w[k] (nil: 1)
// and each row divided by rowScale[i] (nil: 1; a row whose scale is not
// positive and finite is left out: zeros): row k holds key k's column, n
// values. Exp-scores that underflowed are zero. Blocks of rows over the
// pool, each writing a stretch of every output row.
func columnsT(x []float32, n, t int, w, rowScale []float64, pool *tensor.Pool) []float64 {
	out := make([]float64, t*n)
	pool.Run((n+attnRows-1)/attnRows, func(blk, _ int) {
		i0, i1 := blk*attnRows, min(n, (blk+1)*attnRows)
		var inv [attnRows]float64
		for i := i0; i < i1; i++ {
			inv[i-i0] = 1
			if rowScale != nil {
				inv[i-i0] = 0
				if rowScale[i] > 0 && !math.IsInf(rowScale[i], 0) {
					inv[i-i0] = 1 / rowScale[i]
				}
			}
		}
		for k := range t {
			wk := 1.0
			if w != nil {
				wk = w[k]
			}
			dst := out[k*n+i0 : k*n+i1]
			for i := range dst {
				v := float64(x[(i0+i)*t+k])
				if v <= underflowed || inv[i] == 0 {
					continue
				}
				if w != nil {
					v *= wk
				}
				dst[i] = v * inv[i]
			}
		}
	})
	return out
}

// normal is the least-squares problem min ‖X·C − Y‖² + λ‖C‖² in the
// form of its normal equations: the Gram matrix G = XᵀX (t×t) and XᵀY
// (t×c), float64 products of X's float32 exp-scores (exact products,
// float64 sums: G is as accurate as the data, and its squared condition
// number costs nothing a QR of X in float64 would not), with X kept (as
// Xᵀ, t rows of n) for a QR fallback.
type normal struct {
	t, n, c int
	xt, y   []float64
	g, xty  []float64
	pool    *tensor.Pool
}

// newNormal forms the normal equations of X (given as xt, t×n) and Y
// (n×c, row stride c).
func newNormal(xt []float64, t, n int, y []float64, c int, pool *tensor.Pool) *normal {
	p := &normal{t: t, n: n, c: c, xt: xt, y: y, pool: pool}
	p.g = p.gram()
	var b tensor.Panels[float64]
	b.Pack(y, n, c, c)
	p.xty = p.product(&b)
	return p
}

// gramBlock is the side of the square blocks of G that gram computes a
// task at a time: four tiles of the product by three panels.
const gramBlock = 48

// gram returns G = XᵀX, the blocks on and above the diagonal as products
// of Xᵀ's rows with X's packed columns over the pool and those below
// copied from them: half the products of the whole, and the same matrix
// bit for bit (entry (i, j) and (j, i) are the same products summed in
// the same order).
func (p *normal) gram() []float64 {
	t, n := p.t, p.n
	g := make([]float64, t*t)
	cols, pairs := upperBlocks(p.xt, t, n, p.pool)
	p.pool.Run(len(pairs), func(k, _ int) {
		i, j := pairs[k][0], pairs[k][1]
		i0, i1 := i*gramBlock, min(t, (i+1)*gramBlock)
		cols[j].Mul(g[i0*t+j*gramBlock:], t, p.xt[i0*n:], i1-i0, n)
	})
	for i := range t {
		for j := range i {
			g[i*t+j] = g[j*t+i]
		}
	}
	return g
}

// upperBlocks prepares the products W_i·W_jᵀ of the blocks of gramBlock
// rows of w (m rows of k values) on and above the diagonal: each block
// packed as the panel of a product's columns (over the pool), and the
// pairs (i, j), i ≤ j, to compute.
func upperBlocks(w []float64, m, k int, pool *tensor.Pool) ([]tensor.Panels[float64], [][2]int) {
	blocks := (m + gramBlock - 1) / gramBlock
	cols := make([]tensor.Panels[float64], blocks)
	pool.Run(blocks, func(j, _ int) {
		j0, j1 := j*gramBlock, min(m, (j+1)*gramBlock)
		cols[j].PackT(w[j0*k:], j1-j0, k, k)
	})
	pairs := make([][2]int, 0, blocks*(blocks+1)/2)
	for i := range blocks {
		for j := i; j < blocks; j++ {
			pairs = append(pairs, [2]int{i, j})
		}
	}
	return cols, pairs
}

// product returns Xᵀ·B (t rows of B's columns), rows of Xᵀ in tiles
// over the pool.
func (p *normal) product(b *tensor.Panels[float64]) []float64 {
	cols := b.N
	out := make([]float64, p.t*cols)
	const rows = 24 // two tiles of the product
	p.pool.Run((p.t+rows-1)/rows, func(blk, _ int) {
		i0, i1 := blk*rows, min(p.t, (blk+1)*rows)
		b.Mul(out[i0*cols:], cols, p.xt[i0*p.n:], i1-i0, p.n)
	})
	return out
}

// sigmaMax2 returns ‖X‖₂², the largest eigenvalue of G.
func (p *normal) sigmaMax2() float64 { return largestEigen(p.g, p.t, p.pool) }

// solve returns C minimising ‖X·C − Y‖² + λ‖C‖² (t×c, row-major): by a
// Cholesky factorisation of G + λI, and where that fails (G is singular
// or too ill-conditioned for its float32 products) or gives numbers that
// are not finite or beyond bound, by QR of X (solveLS, with its ridge
// fallback). nil where every fit fails; the string is a warning.
func (p *normal) solve(lambda, bound float64) ([]float64, string) {
	if c := choleskySolve(p.g, p.xty, p.t, p.c, lambda, bound, p.pool); c != nil {
		return c, ""
	}
	x := mat.NewDense(p.n, p.t, nil)
	for k := range p.t {
		for i, v := range p.xt[k*p.n : (k+1)*p.n] {
			x.Set(i, k, v)
		}
	}
	c, warn := solveLS(x, mat.NewDense(p.n, p.c, p.y), lambda, bound)
	if c == nil {
		return nil, warn
	}
	return c.RawMatrix().Data, warn
}

// maxGramCond is the largest condition number of G + λI that the normal
// equations are solved with: G = XᵀX squares X's, so this is X's 10⁵,
// where float64 solves of G still give the solution to about 10⁻⁶;
// beyond, QR of X takes over (and rank-deficient X gets its ridge).
const maxGramCond = 1e10

// choleskySolve returns the solution of (G + λI)·C = B for G t×t
// symmetric and B t×c, or nil where G + λI is not positive definite,
// conditioned beyond maxGramCond, or an entry of C is not finite or
// beyond bound: by factorCholesky and its solve, over the pool, the
// condition estimate (serial: 2-7 ms for 758 keys on the 2-core AMD EPYC
// box, a tenth of the fit) on a goroutine of its own beside the solve.
func choleskySolve(g, b []float64, t, c int, lambda, bound float64, pool *tensor.Pool) []float64 {
	a := make([]float64, t*t)
	for i := range t {
		for j := i; j < t; j++ {
			a[i*t+j] = (g[i*t+j] + g[j*t+i]) / 2
		}
		a[i*t+i] = g[i*t+i] + lambda
	}
	ch, ok := factorCholesky(a, t, pool)
	if !ok {
		return nil
	}
	cond := make(chan float64, 1)
	go func() { cond <- ch.cond() }()
	out := append([]float64(nil), b...)
	ch.solve(out, c)
	if !(<-cond <= maxGramCond) {
		return nil
	}
	for _, v := range out {
		if !(math.Abs(v) <= bound) {
			return nil
		}
	}
	return out
}

// fitMass returns the weights B of t kept keys that fit the mass
// equations M·B ≈ mass in least squares (M = x, the kept keys'
// exp-scores from keptScores),
// clamped to [e^lo, e^hi], followed by iters projected-gradient steps of
// size 1/‖M‖₂² (the paper's code: least squares, clamp, and optionally a
// few steps of projected gradient descent on the box-constrained
// problem). A least-squares failure is retried with a small ridge; the
// warning says so.
func (a *attention) fitMass(x []float32, t int, lo, hi float64, iters int) ([]float64, string) {
	p := newNormal(columnsT(x, a.n, t, nil, nil, a.pool), t, a.n, a.mass, 1, a.pool)
	sol, warn := p.solve(0, math.Inf(1))
	if sol == nil {
		return nil, warn
	}
	bl, bh := math.Exp(lo), math.Exp(hi)
	b := make([]float64, t)
	for k := range b {
		b[k] = clamp(sol[k], bl, bh)
	}
	if iters == 0 {
		return b, warn
	}
	// The gradient of ½‖M·B − mass‖² is G·B − Mᵀ·mass.
	step := 1 / p.sigmaMax2()
	grad := make([]float64, t)
	for range iters {
		for k := range t {
			s := -p.xty[k]
			for j, bj := range b {
				s += p.g[k*t+j] * bj
			}
			grad[k] = s
		}
		for k := range b {
			b[k] = clamp(b[k]-step*grad[k], bl, bh)
		}
	}
	return b, warn
}

// fitValues returns the values C₂ (t rows of d) of t kept keys (x: their
// exp-scores from keptScores; w: their weights B) that make the compacted
// attention reproduce the reference outputs in least squares:
// X·C₂ ≈ Y, X = softmax(s·Q·C₁ᵀ + β) (row i: e_ij·B_j normalised over
// the kept keys j), Y the original outputs, with λ = ridge·‖X‖₂². Rows
// whose kept keys all underflowed to zero carry no information and are
// left out. It returns nil and a warning where no fit is finite and
// storable (beyond fp16).
func (a *attention) fitValues(x []float32, t int, w []float64, ridge float64) ([]float32, string) {
	d := a.b.Dim
	// Each row's sum over the kept keys and its outputs in float64, rows
	// in blocks over the pool.
	sums := make([]float64, a.n)
	y := make([]float64, len(a.y))
	a.pool.Run((a.n+attnRows-1)/attnRows, func(blk, _ int) {
		for i := blk * attnRows; i < min(a.n, (blk+1)*attnRows); i++ {
			var sum float64
			for k, v := range x[i*t : (i+1)*t] {
				if v := float64(v); v > underflowed {
					sum += v * w[k]
				}
			}
			if sum > 0 && !math.IsInf(sum, 0) {
				sums[i] = sum
			}
			for c, v := range a.y[i*d : (i+1)*d] {
				y[i*d+c] = float64(v)
			}
		}
	})
	if !slices.ContainsFunc(sums, func(s float64) bool { return s > 0 }) {
		return nil, "no reference query attends to the kept keys: original values kept"
	}
	p := newNormal(columnsT(x, a.n, t, w, sums, a.pool), t, a.n, y, d, a.pool)
	lambda := 0.0
	if ridge > 0 {
		lambda = ridge * p.sigmaMax2()
	}
	c, warn := p.solve(lambda, fp16Max)
	if c == nil {
		return nil, warn + ": original values kept"
	}
	out := make([]float32, t*d)
	for i, v := range c {
		out[i] = float32(v)
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

var (
	errOutOfRange     = errors.New("solution is not finite or out of range")
	errIllConditioned = errors.New("ill-conditioned for float32 data")
)

// maxDataCond is the largest condition number of a fit's matrix (of
// float32 exp-scores, about seven significant digits; its columns scaled
// to unit norm) that least squares solves without a ridge: beyond it the smallest directions are the
// scores' rounding (two equal keys whose scores came out of kernels that
// round differently), and the plain fit would follow them with weights
// at their bounds.
const maxDataCond = 1e6

// lstsq returns X minimising ‖A·X − B‖² + λ‖X‖²: for λ = 0 by QR of A
// (LQ and the minimum-norm solution when A is wide), else by QR of A
// stacked on √λ·I (which never squares A's condition number, as the
// normal equations would). It fails where A is rank-deficient or
// conditioned beyond maxDataCond (λ = 0), or an entry of X is not finite
// or larger than bound in magnitude.
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
	if lambda == 0 && m >= k {
		if err := solveScaled(x, a, b); err != nil {
			return nil, err
		}
	} else if err := x.Solve(a, b); err != nil {
		return nil, err
	}
	for _, v := range x.RawMatrix().Data {
		if !(math.Abs(v) <= bound) {
			return nil, errOutOfRange
		}
	}
	return x, nil
}

// solveScaled sets x to the least-squares solution of A·x ≈ B (A tall)
// by QR of A with its columns scaled to unit norm, and fails where that
// scaled matrix is conditioned beyond maxDataCond: A's columns are
// float32 data, so directions below maxDataCond of the largest are
// rounding (two keys whose columns differ by a rounding), and a fit along
// them is noise. The scaling keeps a column that is merely small (a key
// the queries attend little) from counting as such a direction. A zero or
// non-finite column fails too.
func solveScaled(x, a, b *mat.Dense) error {
	m, k := a.Dims()
	as := mat.NewDense(m, k, nil)
	norms := make([]float64, k)
	col := make([]float64, m)
	for j := range k {
		mat.Col(col, j, a)
		n := floats.Norm(col, 2)
		if !(n > 0) || math.IsInf(n, 0) {
			return fmt.Errorf("column %d has norm %g: %w", j, n, errIllConditioned)
		}
		norms[j] = n
		floats.Scale(1/n, col)
		as.SetCol(j, col)
	}
	var qr mat.QR
	qr.Factorize(as)
	if c := qr.Cond(); !(c <= maxDataCond) {
		return fmt.Errorf("condition number %.3g (columns scaled) beyond %.0g: %w", c, maxDataCond, errIllConditioned)
	}
	if err := qr.SolveTo(x, false, b); err != nil {
		return err
	}
	for j, n := range norms {
		floats.Scale(1/n, x.RawRowView(j))
	}
	return nil
}

// sigmaMax2 returns ‖A‖₂², the largest eigenvalue of AᵀA.
func sigmaMax2(a *mat.Dense) float64 {
	_, k := a.Dims()
	var g mat.Dense
	g.Mul(a.T(), a)
	return largestEigen(g.RawMatrix().Data, k, nil)
}

// largestEigen returns the largest eigenvalue of the k×k symmetric
// positive semi-definite g by power iteration from the all-ones vector
// (the Gram matrices here are of non-negative matrices, so their Perron
// vector is non-negative too and the start is never orthogonal to it),
// to a relative change below 10⁻¹², each product's rows in blocks over
// pool (nil: the caller's goroutine).
func largestEigen(g []float64, k int, pool *tensor.Pool) float64 {
	if k == 0 {
		return 0
	}
	v, w := make([]float64, k), make([]float64, k)
	for i := range v {
		v[i] = 1 / math.Sqrt(float64(k))
	}
	const rows = 64
	lam := 0.0
	for range 500 {
		pool.Run((k+rows-1)/rows, func(blk, _ int) {
			for i := blk * rows; i < min(k, (blk+1)*rows); i++ {
				var s float64
				for j, x := range v {
					s += g[i*k+j] * x
				}
				w[i] = s
			}
		})
		nw := floats.Norm(w, 2)
		if nw == 0 {
			return 0
		}
		for i := range v {
			v[i] = w[i] / nw
		}
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
