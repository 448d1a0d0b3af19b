package tensor

import (
	"fmt"
	"unsafe"
)

// A dense float32/float64 matrix product for numeric work outside the
// model step (package compact's reference attention and least-squares
// fits): C = A·B with B packed once into panels of 64 bytes of columns
// (32 float32 or 16 float64; k rows of them, contiguous, zero past B's
// last column), and a register-tiled kernel that computes a tile of
// panelTileRows rows of A by one panel: each element of A is broadcast
// once per panel and each panel row read once per tile, every sum taken
// over p = 0, 1, …, k−1 in order.
const (
	panelBytes    = 128
	panelTileRows = 12
)

// Panels is a k×n matrix B packed for Mul.
type Panels[T float32 | float64] struct {
	K, N int
	data []T
}

// panelCols returns the columns of a panel of T.
func panelCols[T float32 | float64]() int {
	var z T
	return panelBytes / int(unsafe.Sizeof(z))
}

// Pack packs B = b (k×n, row i at b[i·ldb:]) into p, reusing its
// storage.
func (p *Panels[T]) Pack(b []T, k, n, ldb int) {
	p.pack(k, n, func(i, j0, w int, dst []T) { copy(dst[:w], b[i*ldb+j0:i*ldb+j0+w]) })
}

// PackT packs B = bᵀ for b n×k (row j at b[j·ldb:]): B[i][j] =
// b[j·ldb+i]. A product with the keys of attention (A·Kᵀ) packs them so.
func (p *Panels[T]) PackT(b []T, n, k, ldb int) {
	p.pack(k, n, func(i, j0, w int, dst []T) {
		for c := range w {
			dst[c] = b[(j0+c)*ldb+i]
		}
	})
}

// pack sizes p for a k×n matrix and fills each panel row with row(i, j0,
// w, dst): B[i][j0:j0+w] into dst[:w] (the rest of dst zero).
func (p *Panels[T]) pack(k, n int, row func(i, j0, w int, dst []T)) {
	if k < 0 || n < 0 {
		panic(fmt.Sprintf("tensor: Pack of a %d×%d matrix", k, n))
	}
	cols := panelCols[T]()
	panels := (n + cols - 1) / cols
	size := panels * k * cols
	if cap(p.data) < size {
		p.data = make([]T, size)
	}
	p.K, p.N, p.data = k, n, p.data[:size]
	for j0 := 0; j0 < n; j0 += cols {
		w := min(cols, n-j0)
		panel := p.data[j0/cols*k*cols:]
		for i := range k {
			dst := panel[i*cols : (i+1)*cols]
			if w < cols {
				clear(dst[w:])
			}
			row(i, j0, w, dst)
		}
	}
}

// Mul sets C = A·B for A m×K (row i at a[i·lda:]) and C m×N (row i at
// c[i·ldc:]), B the packed matrix.
func (p *Panels[T]) Mul(c []T, ldc int, a []T, m, lda int) {
	k, n := p.K, p.N
	if m == 0 || n == 0 {
		return
	}
	if lda < k || ldc < n || len(a) < (m-1)*lda+k || len(c) < (m-1)*ldc+n {
		panic(fmt.Sprintf("tensor: Mul of %d×%d by %d×%d with strides %d, %d on %d and %d values", m, k, k, n, lda, ldc, len(a), len(c)))
	}
	cols := panelCols[T]()
	var tile [panelTileRows * panelBytes / 4]T
	var pad []T // the last rows of A, padded to a whole tile
	full := m / panelTileRows * panelTileRows
	if full < m {
		pad = make([]T, panelTileRows*max(k, 1))
		for i := full; i < m; i++ {
			copy(pad[(i-full)*k:(i-full+1)*k], a[i*lda:i*lda+k])
		}
	}
	for j0 := 0; j0 < n; j0 += cols {
		w := min(cols, n-j0)
		panel := p.data[j0/cols*k*cols:]
		for i0 := 0; i0 < m; i0 += panelTileRows {
			src, ld := a[i0*lda:], lda
			if i0 >= full {
				src, ld = pad, k
			}
			rows := min(panelTileRows, m-i0)
			if rows == panelTileRows && w == cols {
				panelTile(src, ld, panel, k, c[i0*ldc+j0:], ldc)
				continue
			}
			panelTile(src, ld, panel, k, tile[:], cols)
			for i := range rows {
				copy(c[(i0+i)*ldc+j0:(i0+i)*ldc+j0+w], tile[i*cols:i*cols+w])
			}
		}
	}
}

// panelTile runs the tile kernel of T: c[i·ldc+j] = Σ_p a[i·lda+p]·b[p·cols+j]
// for the 12 rows and the panel's columns.
func panelTile[T float32 | float64](a []T, lda int, b []T, k int, c []T, ldc int) {
	switch a := any(a).(type) {
	case []float32:
		gemmF32Tile(a, lda, any(b).([]float32), k, any(c).([]float32), ldc)
	case []float64:
		gemmF64Tile(a, lda, any(b).([]float64), k, any(c).([]float64), ldc)
	}
}

// panelTileGo is the tile kernels' twin, p in order.
func panelTileGo[T float32 | float64](a []T, lda int, b []T, k int, c []T, ldc int) {
	cols := panelCols[T]()
	var acc [panelTileRows * panelBytes / 4]T
	for p := range k {
		row := b[p*cols : (p+1)*cols]
		for i := range panelTileRows {
			x := a[i*lda+p]
			out := acc[i*cols : (i+1)*cols]
			for j, y := range row {
				out[j] += x * y
			}
		}
	}
	for i := range panelTileRows {
		copy(c[i*ldc:i*ldc+cols], acc[i*cols:(i+1)*cols])
	}
}
