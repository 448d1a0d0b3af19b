package quant

import (
	"fmt"
	"math"
	"sort"
)

// Codebook is an optimal scalar quantizer (Lloyd–Max) for one density:
// 2^Bits centroids in ascending order and the cell boundaries between
// them (docs/ALGORITHMS.md §2).
type Codebook struct {
	Bits      int
	Centroids []float32 // ascending, len 2^Bits
	Bounds    []float32 // Bounds[i] = (Centroids[i]+Centroids[i+1])/2
	// MSE is the expected squared error per coordinate under the density
	// the codebook was designed for.
	MSE float64

	// A uniform grid over [Bounds[0], Bounds[last]] fine enough that each
	// grid cell holds at most one boundary: grid[i] is the centroid index
	// at the cell's start (the boundaries the lookup puts in earlier
	// cells: gridCell), so Index needs one lookup and one comparison
	// (with a +Inf sentinel in sentinel). Nil when the cells are too
	// uneven for a small grid; Index then searches.
	grid     []uint8
	gridLo   float32
	gridInv  float32
	sentinel []float32 // Bounds followed by +Inf
}

// maxGrid bounds the lookup grid of a codebook.
const maxGrid = 1 << 15

func (c *Codebook) buildGrid() {
	nb := len(c.Bounds)
	if nb == 0 || len(c.Centroids) > 256 {
		return
	}
	// The narrowest cell decides the grid step; the grid reaches one such
	// width beyond the outer boundaries, so that values past them land in
	// the clamped end cells, which hold no boundary and need no step.
	gap := float64(c.Centroids[nb] - c.Centroids[0])
	for i := 1; i < nb; i++ {
		gap = math.Min(gap, float64(c.Bounds[i]-c.Bounds[i-1]))
	}
	if !(gap > 0) {
		return
	}
	lo, hi := float64(c.Bounds[0])-gap, float64(c.Bounds[nb-1])+gap
	// 32 cells per narrowest gap: few values land in a cell holding a
	// boundary, so the comparison in Index is nearly always predicted.
	cells := int(math.Ceil(32*(hi-lo)/gap)) + 1
	if cells > maxGrid {
		return
	}
	h := (hi - lo) / float64(cells)
	c.grid = make([]uint8, cells+1)
	c.gridLo, c.gridInv = float32(lo), float32(1/h)
	// A cell's count is of the boundaries in earlier cells as the lookup
	// itself places them (in float32, monotone in v), not by the cells'
	// exact starts: a boundary just below a start can land in the later
	// cell, and a value below it with it, past a count that holds it.
	k := 0
	for i := range c.grid {
		for k < nb && gridCell(len(c.grid), c.gridLo, c.gridInv, c.Bounds[k]) < i {
			k++
		}
		c.grid[i] = uint8(k)
	}
	c.sentinel = append(append([]float32(nil), c.Bounds...), float32(math.Inf(1)))
}

// Index returns the index of the centroid nearest to v (v not NaN).
func (c *Codebook) Index(v float32) int {
	// Beyond the last boundary (+Inf, or far enough that the grid's cell
	// number overflows an int) the search answers.
	if c.grid != nil && !(v > c.Bounds[len(c.Bounds)-1]) {
		return gridIndex(c.grid, c.sentinel, c.gridLo, c.gridInv, v)
	}
	// Binary search over the sorted boundaries.
	b := c.Bounds
	lo, n := 0, len(b)
	for n > 0 {
		half := n >> 1
		if v > b[lo+half] {
			lo += half + 1
			n -= half + 1
		} else {
			n = half
		}
	}
	return lo
}

// scaleIndex scales y by inv in place and writes each scaled value's
// centroid index (Index) into idx: an encoder's inner loop, with Index's
// grid lookup in the loop rather than a call per value.
func (c *Codebook) scaleIndex(idx []uint8, y []float32, inv float32) {
	idx = idx[:len(y)]
	if c.grid == nil {
		for j := range y {
			v := float32(y[j] * inv)
			y[j] = v
			idx[j] = uint8(c.Index(v))
		}
		return
	}
	grid, sent, lo, ginv := c.grid, c.sentinel, c.gridLo, c.gridInv
	for j := range y {
		v := float32(y[j] * inv)
		y[j] = v
		idx[j] = uint8(gridIndex(grid, sent, lo, ginv, v))
	}
}

// gridIndex is Index by the grid (grid, sentinel, gridLo and gridInv of
// a codebook that has one), as a function of them alone so that
// scaleIndex's loop keeps them in registers instead of reloading them
// from the codebook per value.
func gridIndex(grid []uint8, sentinel []float32, lo, inv, v float32) int {
	g := int(grid[gridCell(len(grid), lo, inv, v)])
	// The cell holds at most one boundary, sentinel[g] (grid counts the
	// boundaries by this lookup's own cells); step at most twice.
	if v > sentinel[g] {
		g++
		if v > sentinel[g] {
			g++
		}
	}
	return g
}

// gridCell returns the cell of a grid of n cells (from lo, inv cells per
// unit) that v falls in, as gridIndex looks it up. Out-of-range cells
// clamp in integers (CMOV, no branch); v is finite and |v| ≤ 1 for
// rotated unit vectors, so the conversion cannot overflow (Index leaves
// values past the last boundary to its search).
func gridCell(n int, lo, inv, v float32) int {
	return min(max(int(float32(v-lo)*inv), 0), n-1)
}

// moments gives the cumulative integrals of a density over (-inf, t]:
// mass ∫f, first moment ∫t·f and second moment ∫t²·f.
type moments func(t float64) (m0, m1, m2 float64)

// lloydMax solves for the 2^bits-level Lloyd–Max quantizer of the density
// described by mom on [lo, hi]. quantile gives a starting point: the
// inverse of the cumulative mass. Where pdf (the density itself) is
// given, Newton's method first brings the centroids to the fixed point
// (newtonLloyd), and Lloyd's iteration then only confirms it: for 256
// levels Lloyd's iteration alone takes seconds.
func lloydMax(bits int, lo, hi float64, mom moments, pdf func(float64) float64, quantile func(p float64) float64) *Codebook {
	n := 1 << bits
	c := make([]float64, n)
	for i := range c {
		c[i] = quantile((float64(i) + 0.5) / float64(n))
	}
	t := make([]float64, n+1)
	t[0], t[n] = lo, hi
	if pdf != nil {
		newtonLloyd(c, t, mom, pdf)
	}
	const maxIter = 200000
	for iter := 0; iter < maxIter; iter++ {
		if delta, _ := lloydStep(c, c, t, mom); delta < 1e-12*(c[n-1]-c[0]) {
			break
		}
	}
	for i := 1; i < n; i++ {
		t[i] = (c[i-1] + c[i]) / 2
	}
	cb := &Codebook{Bits: bits, Centroids: make([]float32, n), Bounds: make([]float32, n-1)}
	pm0, pm1, pm2 := mom(t[0])
	for i := range n {
		m0, m1, m2 := mom(t[i+1])
		// ∫(x−c)²f over the cell = M2 − 2c·M1 + c²·M0.
		cb.MSE += (m2 - pm2) - 2*c[i]*(m1-pm1) + c[i]*c[i]*(m0-pm0)
		pm0, pm1, pm2 = m0, m1, m2
		cb.Centroids[i] = float32(c[i])
		if i > 0 {
			cb.Bounds[i-1] = float32(t[i])
		}
	}
	cb.buildGrid()
	return cb
}

// lloydStep is Lloyd's map: it sets the bounds t[1:n] midway between
// the centroids x and writes to dst (which may be x) each cell's mean, x's
// centroid where a cell has no mass (empty then reports it). It returns
// the largest move, max |dst − x|.
func lloydStep(dst, x, t []float64, mom moments) (delta float64, empty bool) {
	n := len(x)
	for i := 1; i < n; i++ {
		t[i] = (x[i-1] + x[i]) / 2
	}
	pm0, pm1, _ := mom(t[0])
	for i := range n {
		m0, m1, _ := mom(t[i+1])
		nc := x[i]
		if mass := m0 - pm0; mass > 0 {
			nc = (m1 - pm1) / mass
		} else {
			empty = true
		}
		delta = math.Max(delta, math.Abs(nc-x[i]))
		dst[i] = nc
		pm0, pm1 = m0, m1
	}
	return delta, empty
}

// newtonLloyd moves the centroids c (ascending) towards the fixed point
// of Lloyd's map L (each centroid the mean of its cell, the cells' bounds
// t[1:n] midway between centroids; t[0] and t[n] fixed) by Newton steps on
// c − L(c) = 0, whose Jacobian is tridiagonal: with mᵢ a cell's mass,
// ∂Lᵢ/∂tᵢ = f(tᵢ)·(Lᵢ − tᵢ)/mᵢ and ∂Lᵢ/∂tᵢ₊₁ = f(tᵢ₊₁)·(tᵢ₊₁ − Lᵢ)/mᵢ,
// each bound half of each neighbouring centroid. A step is kept only
// where it shrinks the largest |L(c) − c| and leaves c ascending; it
// stops when that is below 1e-14 of the centroids' range or stalls,
// leaving the rest to Lloyd's iteration.
func newtonLloyd(c, t []float64, mom moments, pdf func(float64) float64) {
	n := len(c)
	lc := make([]float64, n)
	lower, diag, upper, rhs := make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
	next := make([]float64, n)
	// residual sets t from x, writes L(x) to lc and returns max |L(x) − x|,
	// or +Inf where a cell is empty.
	residual := func(x []float64) float64 {
		if r, empty := lloydStep(lc, x, t, mom); !empty {
			return r
		}
		return math.Inf(1)
	}
	r := residual(c)
	for range 100 {
		if !(r > 1e-14*(c[n-1]-c[0])) {
			return
		}
		// (I − J)·δ = L(c) − c, J's rows from the cells at c (t and lc as
		// residual(c) left them).
		pm0, _, _ := mom(t[0])
		for i := range n {
			m0, _, _ := mom(t[i+1])
			mass := m0 - pm0
			pm0 = m0
			var a, b float64
			if i > 0 {
				a = pdf(t[i]) * (lc[i] - t[i]) / mass
			}
			if i < n-1 {
				b = pdf(t[i+1]) * (t[i+1] - lc[i]) / mass
			}
			lower[i], diag[i], upper[i] = -a/2, 1-(a+b)/2, -b/2
			rhs[i] = lc[i] - c[i]
		}
		// Thomas's algorithm.
		for i := 1; i < n; i++ {
			w := lower[i] / diag[i-1]
			diag[i] -= w * upper[i-1]
			rhs[i] -= w * rhs[i-1]
		}
		next[n-1] = rhs[n-1] / diag[n-1]
		for i := n - 2; i >= 0; i-- {
			next[i] = (rhs[i] - upper[i]*next[i+1]) / diag[i]
		}
		for i := range n {
			next[i] += c[i]
		}
		for i := 1; i < n; i++ {
			if !(next[i] > next[i-1]) {
				return
			}
		}
		nr := residual(next)
		if !(nr < r) {
			residual(c) // t and lc back at c
			return
		}
		copy(c, next)
		r = nr
	}
}

// LloydMaxGaussian returns the b-bit Lloyd–Max codebook for N(0, sigma²),
// computed from the closed-form moments of the normal distribution.
func LloydMaxGaussian(bits int, sigma float64) (*Codebook, error) {
	if bits < 1 || bits > 8 {
		return nil, fmt.Errorf("quant: codebook bits %d out of range [1, 8]", bits)
	}
	if !(sigma > 0) || math.IsInf(sigma, 0) {
		return nil, fmt.Errorf("quant: Gaussian codebook sigma %g is not positive and finite", sigma)
	}
	phi := func(z float64) float64 { return math.Exp(-z*z/2) / math.Sqrt(2*math.Pi) }
	mom := func(t float64) (float64, float64, float64) {
		z := t / sigma
		if math.IsInf(z, 0) {
			if z < 0 {
				return 0, 0, 0
			}
			return 1, 0, sigma * sigma
		}
		f, cdf := phi(z), 0.5*math.Erfc(-z/math.Sqrt2)
		return cdf, -sigma * f, sigma * sigma * (cdf - z*f)
	}
	pdf := func(t float64) float64 { return phi(t/sigma) / sigma }
	quantile := func(p float64) float64 { return sigma * math.Sqrt2 * math.Erfinv(2*p-1) }
	return lloydMax(bits, math.Inf(-1), math.Inf(1), mom, pdf, quantile), nil
}

// LloydMax returns the b-bit Lloyd–Max codebook for one coordinate of a
// vector uniform on the unit sphere in R^d, whose density is
// f(t) ∝ (1 − t²)^((d−3)/2) on [−1, 1] (docs/ALGORITHMS.md §2). This is the
// exact distribution of a coordinate of Πx for a unit vector x and a
// random rotation Π; as d grows it tends to N(0, 1/d).
func LloydMax(bits, d int) (*Codebook, error) {
	if bits < 1 || bits > 8 {
		return nil, fmt.Errorf("quant: codebook bits %d out of range [1, 8]", bits)
	}
	if d < 3 || d > 1<<20 {
		return nil, fmt.Errorf("quant: sphere codebook dimension %d out of range [3, 2^20]", d)
	}
	e := float64(d-3) / 2
	return tabulated(bits, -1, 1, func(t float64) float64 {
		if e == 0 {
			return 1
		}
		if t <= -1 || t >= 1 {
			return 0
		}
		return math.Exp(e * math.Log1p(-t*t))
	}), nil
}

// tabulated solves Lloyd–Max for an unnormalised density f on [lo, hi] by
// numerical integration: cumulative moments are tabulated with the
// trapezoid rule on a fine grid and interpolated linearly.
func tabulated(bits int, lo, hi float64, f func(float64) float64) *Codebook {
	const n = 1 << 18
	h := (hi - lo) / n
	m0 := make([]float64, n+1)
	m1 := make([]float64, n+1)
	m2 := make([]float64, n+1)
	prev := f(lo)
	for i := 1; i <= n; i++ {
		a, b := lo+float64(i-1)*h, lo+float64(i)*h
		cur := f(b)
		// Trapezoid on f, t·f and t²·f over [a, b].
		m0[i] = m0[i-1] + h*(prev+cur)/2
		m1[i] = m1[i-1] + h*(a*prev+b*cur)/2
		m2[i] = m2[i-1] + h*(a*a*prev+b*b*cur)/2
		prev = cur
	}
	total := m0[n]
	for i := range m0 {
		m0[i] /= total
		m1[i] /= total
		m2[i] /= total
	}
	interp := func(tab []float64, t float64) float64 {
		x := (t - lo) / h
		if x <= 0 {
			return tab[0]
		}
		if x >= n {
			return tab[n]
		}
		i := int(x)
		fr := x - float64(i)
		return tab[i] + fr*(tab[i+1]-tab[i])
	}
	mom := func(t float64) (float64, float64, float64) {
		return interp(m0, t), interp(m1, t), interp(m2, t)
	}
	quantile := func(p float64) float64 {
		i := sort.SearchFloat64s(m0, p)
		return lo + float64(i)*h
	}
	return lloydMax(bits, lo, hi, mom, nil, quantile)
}
