package kvcache

import (
	"fmt"
	"math"

	"github.com/turbomem/turbomem/tensor"
)

// Rope is the rotary position embedding a model applies to its keys
// before they reach the cache: at position t, coordinate pair i (A(i),
// B(i)) turns by the angle t·Freqs[i], as the complex product
// (x_A + i·x_B)·e^(i·t·Freqs[i]); coordinates past the pairs stay as
// they are. A cache whose Shape has it can tell the part of the keys
// that turns with position from the part that does not (centered keys).
type Rope struct {
	d      int       // head dimension
	freqs  []float64 // per pair
	halves bool      // pairs (i, i+len(freqs)) instead of (2i, 2i+1)
	// table holds, for every pair i, the row [cos(j·ω_i) for j <
	// ropeChunk], then for every pair the row of sin(j·ω_i): the turns of
	// the positions of a chunk, shared by every layer and head
	// (ropeChunk·d floats). Scoring weighs its rows for four queries at
	// once (turnSums4): the chunk's sums stay in registers while the rows
	// stream by.
	table []float32
	step  []complex128 // e^(i·ropeChunk·ω_i), one chunk further on
}

// ropeChunk is the number of positions whose turns Rope tabulates: the
// mean-score term of a chunk of keys is one row kernel call over the
// table (32 KiB at d = 128).
const ropeChunk = 64

// NewRope returns the rotary embedding of head dimension d with the given
// per-pair angular frequencies (radians per position; at most d/2
// pairs), pairing coordinates (i, i+len(freqs)) when halves is set
// (GPT-NeoX style) and (2i, 2i+1) otherwise.
func NewRope(d int, freqs []float64, halves bool) (*Rope, error) {
	if d < 2 || len(freqs) == 0 || 2*len(freqs) > d {
		return nil, fmt.Errorf("kvcache: rope of %d pairs for head dimension %d", len(freqs), d)
	}
	for i, f := range freqs {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("kvcache: rope frequency %d is %g", i, f)
		}
	}
	p := len(freqs)
	r := &Rope{d: d, freqs: append([]float64(nil), freqs...), halves: halves,
		table: make([]float32, ropeChunk*2*p), step: make([]complex128, p)}
	for i, f := range freqs {
		for j := range ropeChunk {
			s, c := math.Sincos(float64(j) * f)
			r.table[i*ropeChunk+j], r.table[(p+i)*ropeChunk+j] = float32(c), float32(s)
		}
	}
	for i, f := range freqs {
		s, c := math.Sincos(ropeChunk * f)
		r.step[i] = complex(c, s)
	}
	return r, nil
}

// pair returns the coordinates of pair i.
func (r *Rope) pair(i int) (a, b int) {
	if r.halves {
		return i, i + len(r.freqs)
	}
	return 2 * i, 2*i + 1
}

// turn returns e^(i·t·ω_i) for every pair, in float64 (exact for any
// position a cache can hold).
func (r *Rope) turn(dst []complex128, t int) {
	for i, f := range r.freqs {
		s, c := math.Sincos(float64(t) * f)
		dst[i] = complex(c, s)
	}
}

// Rotate sets dst = R_t·src, in float64: src turned as the model turns a
// key at position t (t < 0 turns back: R_(−t) = R_t⁻¹). dst and src have
// length d and may alias. A nil Rope is the identity.
func (r *Rope) Rotate(dst, src []float64, t int) {
	copy(dst, src)
	if r == nil {
		return
	}
	for i, f := range r.freqs {
		s, c := math.Sincos(float64(t) * f)
		a, b := r.pair(i)
		x0, x1 := src[a], src[b]
		dst[a] = x0*c - x1*s
		dst[b] = x0*s + x1*c
	}
}

// meanScores adds ⟨qs[j], R_t·mu⟩ to dst[j][i] for t = t0+i, every query
// j: the score of the position-dependent mean that centered keys take out
// of each key. Per chunk of ropeChunk positions, the mean turned to the
// chunk's start, y_i = μ̃_i·e^(i·c0·ω_i), is shared by the group; for each
// query, ⟨q, R_(c0+j)·mu⟩ = Σ_i cos(jω_i)·u_i + sin(jω_i)·v_i with
// u_i = q_A·Re y_i + q_B·Im y_i and v_i = q_B·Re y_i − q_A·Im y_i, which
// is a weighted sum of the turn table's rows, four queries at a time
// (turnSums4). Coordinates past the pairs
// add the constant ⟨q, mu⟩ over them. A nil Rope adds ⟨q, mu⟩.
func (r *Rope) meanScores(dst, qs [][]float32, mu []float32, t0 int) {
	n := len(dst[0])
	if n == 0 {
		return
	}
	if r == nil {
		for j, q := range qs {
			c := tensor.DotF32(q, mu)
			for i := range dst[j] {
				dst[j][i] += c
			}
		}
		return
	}
	p := len(r.freqs)
	// Queries in fours (a short last group padded with zero weights). Per
	// query and pair, w_i = conj(q̃_i)·μ̃_i·e^(i·c₀·ω_i): u_i = Re w_i,
	// v_i = −Im w_i, and w turns by e^(i·ropeChunk·ω_i) from one chunk to
	// the next (float64, so that no drift builds up over a long cache).
	groups := (len(qs) + 3) / 4
	wr := make([]float64, 4*groups*p)
	wi := make([]float64, 4*groups*p)
	base := make([]float32, 4*groups) // the unrotated coordinates [2p, d)
	turn := make([]complex128, p)
	r.turn(turn, t0)
	for j, q := range qs {
		if 2*p < r.d {
			base[j] = tensor.DotF32(q[2*p:], mu[2*p:])
		}
		for i, e := range turn {
			a, b := r.pair(i)
			w := complex(float64(q[a]), -float64(q[b])) * complex(float64(mu[a]), float64(mu[b])) * e
			wr[j*p+i], wi[j*p+i] = real(w), imag(w)
		}
	}
	uv := make([]float32, 4*2*p)
	out := make([]float32, 4*ropeChunk)
	for c0 := 0; c0 < n; c0 += ropeChunk {
		m := min(ropeChunk, n-c0)
		for g := range groups {
			for jj := range 4 {
				j := 4*g + jj
				u, v := uv[jj*2*p:jj*2*p+p], uv[jj*2*p+p:(jj+1)*2*p]
				re, im := wr[j*p:(j+1)*p], wi[j*p:(j+1)*p]
				for i, st := range r.step {
					u[i], v[i] = float32(re[i]), float32(-im[i])
					sr, si := real(st), imag(st)
					re[i], im[i] = re[i]*sr-im[i]*si, re[i]*si+im[i]*sr
				}
			}
			turnSums4(out, uv, 2*p, r.table)
			for jj := range 4 {
				j := 4*g + jj
				if j >= len(qs) {
					break
				}
				d := dst[j][c0 : c0+m]
				for i, v := range out[jj*ropeChunk : jj*ropeChunk+m] {
					d[i] += v + base[j]
				}
			}
		}
	}
}

// turnSums4Go is turnSums4's pure-Go twin.
func turnSums4Go(out, w []float32, rows int, table []float32) {
	for q := range 4 {
		o := out[q*ropeChunk : (q+1)*ropeChunk]
		clear(o)
		for k, wk := range w[q*rows : (q+1)*rows] {
			for j, t := range table[k*ropeChunk : (k+1)*ropeChunk] {
				o[j] += wk * t
			}
		}
	}
}
