package compact

import (
	"math"

	"gonum.org/v1/gonum/floats"

	"github.com/turbomem/turbomem/tensor"
)

// maxDropRounds is how often OMP replaces keys whose β fell below the
// cutoff before it keeps what it has (the paper's code: three).
const maxDropRounds = 3

// omp chooses f.Keys keys by orthogonal matching pursuit on the mass
// equations and returns them with their weights B, clamped to
// [e^BiasMin, e^BiasMax]. Each step scores every key not yet kept by the
// correlation Σ_i e_ij·r_i of its exp-scores with the residual
// r = mass − M·B, adds the PerStep best, and refits B by least squares
// every Refit steps (in between, new keys start at the lower bound), as
// the schedule says for the number kept. Once f.Keys are kept, B is
// refitted; with a drop cutoff, keys with log B below it are excluded and
// replaced (at most maxDropRounds times). A key whose exp-scores are a
// linear combination of the kept keys' adds nothing to the fit and is
// excluded; if fewer than f.Keys independent keys exist, fewer are
// returned.
//
// The least-squares fits use a QR factorisation of the kept columns that
// grows by one Gram–Schmidt step (twice, for orthogonality in floating
// point) per key, so a refit costs O(n·t) instead of a new O(n·t²)
// factorisation. Once a.ctx is done it stops at the next step and
// returns nothing.
func (a *attention) omp(f Fit) ([]int, []float64) {
	sched := f.Schedule
	if sched == nil {
		sched = DefaultSchedule
	}
	lo, hi := math.Exp(f.BiasMin), math.Exp(f.BiasMax)
	n, t := a.n, a.t
	kept := make([]bool, t)
	excluded := make([]bool, t)
	var idx []int
	var cols [][]float64 // the kept keys' exp-scores
	var b []float64
	qr := &growingQR{y: a.mass}
	current := make([]float64, n)
	resid := make([]float32, n)
	corr := make([]float32, t)
	refresh := func() {
		clear(current)
		for k, c := range cols {
			floats.AddScaled(current, b[k], c)
		}
	}
	rounds := 0
	exhausted := false // every key is kept or excluded
	for step := 0; ; {
		if a.ctx.Err() != nil {
			return nil, nil // compact reports it
		}
		if len(idx) < f.Keys && !exhausted {
			per, refit := scheduleAt(sched, len(idx))
			for i := range n {
				resid[i] = float32(a.mass[i] - current[i])
			}
			clear(corr)
			// corr = eᵀ·resid, a row of e at a time: one sequential
			// pass over e, corr staying in cache.
			for i, r := range resid {
				tensor.AxpyF32(corr, r, a.e[i*t:(i+1)*t])
			}
			cands := topFree(corr, kept, excluded, min(per, f.Keys-len(idx)))
			if len(cands) == 0 {
				exhausted = true
				continue
			}
			added := 0
			for _, j := range cands {
				c := make([]float64, n)
				a.column(c, j)
				if !qr.add(c) {
					excluded[j] = true
					continue
				}
				kept[j] = true
				idx = append(idx, j)
				cols = append(cols, c)
				added++
			}
			if b == nil || step%refit == 0 {
				b = clampAll(qr.solve(), lo, hi)
			} else {
				for range added {
					b = append(b, lo)
				}
			}
			refresh()
			step++
			continue
		}
		b = clampAll(qr.solve(), lo, hi)
		if f.DropBelow >= 0 || rounds == maxDropRounds || len(idx) == 0 {
			break
		}
		cut := math.Exp(f.DropBelow)
		var keepIdx []int
		var keepCols [][]float64
		for k, j := range idx {
			if b[k] < cut {
				excluded[j], kept[j] = true, false
				continue
			}
			keepIdx = append(keepIdx, j)
			keepCols = append(keepCols, cols[k])
		}
		if len(keepIdx) == len(idx) {
			break
		}
		rounds++
		idx, cols = keepIdx, keepCols
		qr = &growingQR{y: a.mass}
		for _, c := range cols {
			qr.add(c) // independent before, independent now
		}
		b = clampAll(qr.solve(), lo, hi)
		refresh()
	}
	if b == nil {
		b = []float64{}
	}
	return idx, b
}

// scheduleAt returns the keys per step and the refit interval for a
// step that starts with kept keys.
func scheduleAt(s []Step, kept int) (per, refit int) {
	for _, st := range s {
		if st.Until == 0 || kept < st.Until {
			return st.PerStep, st.Refit
		}
	}
	last := s[len(s)-1]
	return last.PerStep, last.Refit
}

// topFree returns up to k keys with the largest correlation among those
// neither kept nor excluded, best first (ties to the lower position).
func topFree(corr []float32, kept, excluded []bool, k int) []int {
	var out []int
	for range k {
		best := -1
		for j, c := range corr {
			if kept[j] || excluded[j] || containsInt(out, j) {
				continue
			}
			if best < 0 || c > corr[best] {
				best = j
			}
		}
		if best < 0 {
			break
		}
		out = append(out, best)
	}
	return out
}

func containsInt(s []int, x int) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

func clampAll(x []float64, lo, hi float64) []float64 {
	for i, v := range x {
		x[i] = clamp(v, lo, hi)
	}
	return x
}

// growingQR is a thin QR factorisation M = Q·R of columns added one at a
// time, with z = Qᵀy kept for the least-squares solve R·B = z.
type growingQR struct {
	y []float64
	q [][]float64 // orthonormal columns
	r [][]float64 // r[j]: column j of R, j+1 entries
	z []float64
}

// dependentTol is the relative norm below which a column's component
// orthogonal to the kept ones counts as zero: the column is (to rounding)
// a combination of them.
const dependentTol = 1e-10

// add appends column c (not retained) and reports whether it was
// independent of the columns before it; a dependent column is not added.
func (f *growingQR) add(c []float64) bool {
	v := append([]float64(nil), c...)
	norm0 := floats.Norm(v, 2)
	if norm0 == 0 || math.IsNaN(norm0) || math.IsInf(norm0, 0) {
		return false
	}
	rj := make([]float64, len(f.q)+1)
	for range 2 { // classical Gram–Schmidt, twice ("twice is enough")
		for k, qk := range f.q {
			p := floats.Dot(qk, v)
			rj[k] += p
			floats.AddScaled(v, -p, qk)
		}
	}
	nv := floats.Norm(v, 2)
	if nv <= dependentTol*norm0 {
		return false
	}
	floats.Scale(1/nv, v)
	rj[len(f.q)] = nv
	f.q = append(f.q, v)
	f.r = append(f.r, rj)
	f.z = append(f.z, floats.Dot(v, f.y))
	return true
}

// solve returns B minimising ‖M·B − y‖: back-substitution in R·B = z.
func (f *growingQR) solve() []float64 {
	k := len(f.q)
	b := make([]float64, k)
	for i := k - 1; i >= 0; i-- {
		s := f.z[i]
		for j := i + 1; j < k; j++ {
			s -= f.r[j][i] * b[j]
		}
		b[i] = s / f.r[i][i]
	}
	return b
}
