package compact

import (
	"math"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/lapack"
	"gonum.org/v1/gonum/lapack/lapack64"

	"github.com/turbomem/turbomem/tensor"
)

// cholBlock is the side of the diagonal blocks of the blocked Cholesky
// factorisation and of its solves: each block is factored (or solved)
// serially, with its right-hand sides or the rows of U to its right in
// column groups over the pool, and the rest of the matrix is updated by
// float64 panel products over the pool (the tiles of the Gram matrix).
const cholBlock = gramBlock

// solveCols is the number of right-hand-side columns (or columns of U)
// that a task of a triangular solve within a block takes.
const solveCols = 32

// cholesky is the factorisation A = UᵀU of a t×t symmetric positive
// definite matrix, U upper triangular (row-major, the lower triangle
// unused), and A's 1-norm for the condition estimate.
type cholesky struct {
	t    int
	u    []float64
	norm float64
	pool *tensor.Pool
}

// factorCholesky factors the t×t symmetric matrix a (its upper triangle
// read; a is overwritten with U) by a blocked right-looking Cholesky:
// for each diagonal block in turn, the block serially, the rows of U to
// its right by a triangular solve in column groups over the pool, and
// the trailing matrix less their products, tiles over the pool. Every
// entry's operations are in a fixed order whatever the pool's threads:
// the same bits on any. ok is false where a is not positive definite (a
// pivot not positive or not finite).
func factorCholesky(a []float64, t int, pool *tensor.Pool) (ch *cholesky, ok bool) {
	sym := blas64.Symmetric{Uplo: blas.Upper, N: t, Stride: max(t, 1), Data: a}
	ch = &cholesky{t: t, u: a, pool: pool, norm: lapack64.Lansy(lapack.MaxColumnSum, sym, make([]float64, t))}
	buf := make([][]float64, pool.Threads())
	for k0 := 0; k0 < t; k0 += cholBlock {
		k1 := min(t, k0+cholBlock)
		nb := k1 - k0
		// The diagonal block.
		for p := k0; p < k1; p++ {
			d := a[p*t+p]
			if !(d > 0) || math.IsInf(d, 0) {
				return nil, false
			}
			r := math.Sqrt(d)
			a[p*t+p] = r
			row := a[p*t+p+1 : p*t+k1]
			for j := range row {
				row[j] /= r
			}
			for i := p + 1; i < k1; i++ {
				f := a[p*t+i]
				dst := a[i*t+i : i*t+k1]
				for j, v := range row[i-p-1:] {
					dst[j] -= f * v
				}
			}
		}
		m := t - k1
		if m == 0 {
			break
		}
		// The rows of U to its right: U₁₁ᵀ·U₁₂ = A₁₂.
		pool.Run((m+solveCols-1)/solveCols, func(g, _ int) {
			c0 := k1 + g*solveCols
			ch.forward(k0, k1, a, t, c0, min(t, c0+solveCols))
		})
		// The trailing matrix less U₁₂ᵀ·U₁₂, its blocks on and above the
		// diagonal (those below are never read).
		w := make([]float64, m*nb) // U₁₂ᵀ
		for p := k0; p < k1; p++ {
			for i, v := range a[p*t+k1 : p*t+t] {
				w[i*nb+p-k0] = v
			}
		}
		cols, pairs := upperBlocks(w, m, nb, pool)
		pool.Run(len(pairs), func(q, worker int) {
			i, j := pairs[q][0], pairs[q][1]
			i0, i1 := i*cholBlock, min(m, (i+1)*cholBlock)
			j0, j1 := j*cholBlock, min(m, (j+1)*cholBlock)
			if buf[worker] == nil {
				buf[worker] = make([]float64, cholBlock*cholBlock)
			}
			c := buf[worker]
			cols[j].Mul(c, j1-j0, w[i0*nb:], i1-i0, nb)
			for r := range i1 - i0 {
				dst := a[(k1+i0+r)*t+k1+j0 : (k1+i0+r)*t+k1+j1]
				for s, v := range c[r*(j1-j0) : (r+1)*(j1-j0)] {
					dst[s] -= v
				}
			}
		})
	}
	return ch, true
}

// cond returns the factored matrix's condition number estimate in the
// 1-norm: LAPACK's (dpocon, as gonum's mat.Cholesky.Cond), serial.
func (ch *cholesky) cond() float64 {
	t := ch.t
	sym := blas64.Symmetric{Uplo: blas.Upper, N: t, Stride: max(t, 1), Data: ch.u}
	return 1 / lapack64.Pocon(sym, ch.norm, make([]float64, 3*t), make([]int, t))
}

// forward solves U[k0:k1, k0:k1]ᵀ·X = B in place for B the rows k0:k1,
// columns c0:c1 of b (row stride ldb): forward substitution, row by row.
func (ch *cholesky) forward(k0, k1 int, b []float64, ldb, c0, c1 int) {
	u, t := ch.u, ch.t
	for p := k0; p < k1; p++ {
		src := b[p*ldb+c0 : p*ldb+c1]
		r := u[p*t+p]
		for j := range src {
			src[j] /= r
		}
		for i := p + 1; i < k1; i++ {
			f := u[p*t+i]
			dst := b[i*ldb+c0 : i*ldb+c1]
			for j, v := range src {
				dst[j] -= f * v
			}
		}
	}
}

// backward solves U[k0:k1, k0:k1]·X = B in place for B the rows k0:k1,
// columns c0:c1 of b (row stride ldb): back substitution, row by row.
func (ch *cholesky) backward(k0, k1 int, b []float64, ldb, c0, c1 int) {
	u, t := ch.u, ch.t
	for p := k1 - 1; p >= k0; p-- {
		src := b[p*ldb+c0 : p*ldb+c1]
		r := u[p*t+p]
		for j := range src {
			src[j] /= r
		}
		for i := k0; i < p; i++ {
			f := u[i*t+p]
			dst := b[i*ldb+c0 : i*ldb+c1]
			for j, v := range src {
				dst[j] -= f * v
			}
		}
	}
}

// solve overwrites b (t×c, row-major) with the solution X of UᵀU·X = B:
// UᵀY = B block by block downwards, then U·X = Y upwards, each block's
// rows solved in column groups over the pool and the rows beyond it
// updated by a panel product, tiles of rows over the pool; the same bits
// on any number of threads.
func (ch *cholesky) solve(b []float64, c int) {
	t, pool := ch.t, ch.pool
	if t == 0 || c == 0 {
		return
	}
	lt := make([]float64, t*t) // Uᵀ, row-major: the forward updates' rows
	for i := range t {
		for j := i; j < t; j++ {
			lt[j*t+i] = ch.u[i*t+j]
		}
	}
	buf := make([][]float64, pool.Threads())
	var y tensor.Panels[float64]
	const rows = 2 * 12 // two tiles of the product
	// update sets b[r0:r1] −= a[r0:r1, k0:k1]·b[k0:k1] (a row stride t).
	update := func(a []float64, r0, r1, k0, k1 int) {
		y.Pack(b[k0*c:], k1-k0, c, c)
		pool.Run((r1-r0+rows-1)/rows, func(blk, worker int) {
			i0, i1 := r0+blk*rows, min(r1, r0+(blk+1)*rows)
			if buf[worker] == nil {
				buf[worker] = make([]float64, rows*c)
			}
			out := buf[worker]
			y.Mul(out, c, a[i0*t+k0:], i1-i0, t)
			for r := range i1 - i0 {
				dst := b[(i0+r)*c : (i0+r+1)*c]
				for s, v := range out[r*c : (r+1)*c] {
					dst[s] -= v
				}
			}
		})
	}
	groups := (c + solveCols - 1) / solveCols
	for k0 := 0; k0 < t; k0 += cholBlock {
		k1 := min(t, k0+cholBlock)
		pool.Run(groups, func(g, _ int) {
			ch.forward(k0, k1, b, c, g*solveCols, min(c, (g+1)*solveCols))
		})
		if k1 < t {
			update(lt, k1, t, k0, k1)
		}
	}
	for k0 := (t - 1) / cholBlock * cholBlock; k0 >= 0; k0 -= cholBlock {
		k1 := min(t, k0+cholBlock)
		pool.Run(groups, func(g, _ int) {
			ch.backward(k0, k1, b, c, g*solveCols, min(c, (g+1)*solveCols))
		})
		if k0 > 0 {
			update(ch.u, 0, k0, k0, k1)
		}
	}
}
