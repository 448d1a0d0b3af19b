package main

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// trellis is a rate-1/2 feed-forward convolutional code of memory nu
// that labels TCQ's branches with one of four subsets (Marcellin and
// Fischer 1990, after Ungerboeck's trellis-coded modulation). The path
// bits v₀, v₁, … are what a code stores; the window wₙ = (vₙ₋ᵥ … vₙ), bit
// k of wₙ being vₙ₋ₖ, gives the subset of component n:
//
//	z₁ = parity(wₙ & h0), z₀ = parity(wₙ & h1), subset = z₀ + 2·z₁
//
// The code is Ungerboeck's one-dimensional code of parity-check
// polynomials (h0, h1) written in generator form, z₁ = h0(D)·v and
// z₀ = h1(D)·v, which satisfies h0·z₀ + h1·z₁ = 0: the same label
// sequences as the systematic feedback encoder, so the same distortion.
// Since h1 has no D⁰ or Dᵛ term, the two branches that leave a state
// share z₀ (both in D0 ∪ D2 or both in D1 ∪ D3) and so do the two that
// enter one; the state is the last nu path bits, so each component's
// subset is a function of a window of nu+1 stored bits (no recursion
// over the whole path; cyclic over a sequence, which is tail-biting).
type trellis struct {
	nu     int
	h0, h1 uint32 // bit k: coefficient of Dᵏ
}

// ungerboeck are the codes by number of states (Ungerboeck 1987, table
// of codes for one-dimensional amplitude modulation; octal, Dᵏ in bit k).
var ungerboeck = map[int]trellis{
	4:   {2, 0o5, 0o2},
	8:   {3, 0o13, 0o04},
	16:  {4, 0o23, 0o04},
	32:  {5, 0o45, 0o10},
	64:  {6, 0o103, 0o024},
	128: {7, 0o235, 0o126},
	256: {8, 0o515, 0o362},
}

// newTrellis returns Ungerboeck's code of the given number of states.
func newTrellis(states int) (trellis, error) {
	t, ok := ungerboeck[states]
	if !ok {
		return trellis{}, fmt.Errorf("tcq: no %d-state trellis (4, 8, 16, 32, 64, 128 or 256)", states)
	}
	return t, nil
}

func (t trellis) states() int { return 1 << t.nu }

// subset returns the subset (0 to 3) of the branch that leaves state s
// (the last nu path bits, bit k−1 = vₙ₋ₖ) with path bit v.
func (t trellis) subset(s, v int) int {
	w := uint32(s<<1 | v)
	return bits.OnesCount32(w&t.h1)&1 | (bits.OnesCount32(w&t.h0)&1)<<1
}

// next returns the state after the branch from s with path bit v.
func (t trellis) next(s, v int) int { return (s<<1 | v) & (1<<t.nu - 1) }

// tcq is a trellis-coded quantizer at b bits per component: a union
// codebook of 2^(b+1) ascending levels, level ℓ in subset ℓ mod 4, each
// subset of 2^(b−1) levels; a component costs its path bit and b−1 bits
// of index in its subset, exactly b bits. The encoder (Viterbi) picks the
// path of least weighted squared error over a sequence, starting in
// state 0.
type tcq struct {
	tr   trellis
	b    int
	book []float64    // union codebook, ascending, 2^(b+1) levels
	sub  [4][]float64 // sub[j][i] = book[4i+j]
	// lbl[s*2+v] is the subset of the branch from s with path bit v.
	lbl []int
	// tailBiting makes a path end in the state it starts in (see
	// encode); otherwise it starts in state 0, as in Marcellin and
	// Fischer's long sequences.
	tailBiting bool
	// steps, when set, are the subsets of each step of a sequence (of
	// as many steps), for sequences whose components differ in width
	// and so in codebook (one trellis path through them all); nil: sub
	// at every step.
	steps []*[4][]float64
	// Viterbi scratch.
	cost, next []float64
	back       []uint8 // per step and state: which predecessor (0, 1)
	pick       []int32 // per step and state: index in the subset
}

// newTCQ returns the b-bit TCQ of trellis tr with the union codebook book
// (2^(b+1) ascending levels).
func newTCQ(tr trellis, b int, book []float64) (*tcq, error) {
	if b < 1 || len(book) != 1<<(b+1) {
		return nil, fmt.Errorf("tcq: %d levels for %d bits, want %d", len(book), b, 1<<(b+1))
	}
	if !slices.IsSorted(book) {
		return nil, fmt.Errorf("tcq: codebook not ascending")
	}
	q := &tcq{tr: tr, b: b, book: slices.Clone(book)}
	q.setBook(book)
	n := tr.states()
	q.lbl = make([]int, 2*n)
	for s := range n {
		for v := range 2 {
			q.lbl[s*2+v] = tr.subset(s, v)
		}
	}
	q.cost, q.next = make([]float64, n), make([]float64, n)
	return q, nil
}

func (q *tcq) setBook(book []float64) {
	copy(q.book, book)
	for j := range 4 {
		q.sub[j] = q.sub[j][:0]
		for l := j; l < len(book); l += 4 {
			q.sub[j] = append(q.sub[j], book[l])
		}
	}
}

// tailBitingSearch is how many start states the tail-biting encoder of
// a trellis of more than 32 states tries: the end states of the best
// paths from any start read cyclically, and state 0 (smaller trellises try every state;
// a larger one may then miss the best path, never by much).
const tailBitingSearch = 8

// encode codes x (weights w, nil: all 1) and writes each component's path
// bit to v and index in its subset to idx; it returns the weighted
// squared error Σ wₙ·(xₙ − x̂ₙ)². With tailBiting the path starts in the
// state it ends in, its last nu path bits, so that no component sees
// half a codebook (a path from state 0 starts in D0 ∪ D2, lopsided) and
// no bit is spent on the start; the decoder reads the window cyclically.
// Otherwise the path starts in state 0 and ends anywhere.
func (q *tcq) encode(x, w []float64, v, idx []int) float64 {
	ns := q.tr.states()
	if !q.tailBiting {
		q.viterbi(x, w, 0)
		end := 0
		for s := range ns {
			if q.cost[s] < q.cost[end] {
				end = s
			}
		}
		c := q.cost[end]
		q.traceback(len(x), end, v, idx)
		return c
	}
	var starts []int
	if ns <= 32 {
		starts = make([]int, ns)
		for s := range starts {
			starts[s] = s
		}
	} else {
		q.viterbi(x, w, -1)
		order := make([]int, ns)
		for s := range order {
			order[s] = s
		}
		slices.SortFunc(order, func(a, b int) int { return cmpFloat(q.cost[a], q.cost[b]) })
		// The cyclic state of each of the best free paths (its end
		// state, or for a path shorter than nu its bits repeated), and
		// state 0, which always has a tail-biting path (all zeros).
		starts = []int{0}
		for _, e := range order[:tailBitingSearch] {
			q.traceback(len(x), e, v, idx)
			if s0 := q.state(v, 0); !slices.Contains(starts, s0) {
				starts = append(starts, s0)
			}
		}
	}
	best, bestCost := -1, math.Inf(1)
	for _, s0 := range starts {
		q.viterbi(x, w, s0)
		if c := q.cost[s0]; c < bestCost {
			best, bestCost = s0, c
		}
	}
	q.viterbi(x, w, best)
	q.traceback(len(x), best, v, idx)
	return q.cost[best]
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// viterbi runs the add–compare–select over x from state start (−1: from
// every state at no cost), leaving the path costs by end state in q.cost
// and the decisions in q.back and q.pick.
func (q *tcq) viterbi(x, w []float64, start int) {
	n, ns := len(x), q.tr.states()
	if cap(q.back) < n*ns {
		q.back, q.pick = make([]uint8, n*ns), make([]int32, n*ns)
	}
	back, pick := q.back[:n*ns], q.pick[:n*ns]
	for s := range q.cost {
		q.cost[s] = 0
		if start >= 0 && s != start {
			q.cost[s] = math.Inf(1)
		}
	}
	half := ns >> 1
	for t, xt := range x {
		// The nearest level of each subset: four scalar quantizations a step.
		var dist [4]float64
		var at [4]int32
		wt := 1.0
		if w != nil {
			wt = w[t]
		}
		sub := q.subsAt(t)
		for j := range 4 {
			i := nearest(sub[j], xt)
			e := xt - sub[j][i]
			dist[j], at[j] = wt*e*e, int32(i)
		}
		// State s' is entered from s'>>1 and s'>>1 | 1<<(nu−1), with
		// path bit s'&1.
		for s2 := range ns {
			p0, vb := s2>>1, s2&1
			p1 := p0 | half
			j0, j1 := q.lbl[p0*2+vb], q.lbl[p1*2+vb]
			c0, c1 := q.cost[p0]+dist[j0], q.cost[p1]+dist[j1]
			if c1 < c0 {
				q.next[s2], back[t*ns+s2], pick[t*ns+s2] = c1, 1, at[j1]
			} else {
				q.next[s2], back[t*ns+s2], pick[t*ns+s2] = c0, 0, at[j0]
			}
		}
		q.cost, q.next = q.next, q.cost
	}
}

// traceback writes the path of n steps that ends in state end.
func (q *tcq) traceback(n, end int, v, idx []int) {
	ns := q.tr.states()
	half := ns >> 1
	for t, s := n-1, end; t >= 0; t-- {
		v[t], idx[t] = s&1, int(q.pick[t*ns+s])
		s = s>>1 | int(q.back[t*ns+s])*half
	}
}

// state returns the state before component t of path v: the path bits
// t−1 … t−nu, read cyclically (tail-biting) or zero before the start.
func (q *tcq) state(v []int, t int) int {
	s, n := 0, len(v)
	for k := 1; k <= q.tr.nu; k++ {
		if q.tailBiting {
			s |= v[((t-k)%n+n)%n] << (k - 1)
		} else if t-k >= 0 {
			s |= v[t-k] << (k - 1)
		}
	}
	return s
}

// subsAt returns the subsets of step t.
func (q *tcq) subsAt(t int) *[4][]float64 {
	if q.steps != nil {
		return q.steps[t]
	}
	return &q.sub
}

// decode writes the reconstruction of the path bits v and subset indices
// idx to out. Each component is read on its own from the window of
// nu+1 path bits that ends at it, as a scorer would read it.
func (q *tcq) decode(out []float64, v, idx []int) {
	for t := range out {
		out[t] = q.subsAt(t)[q.lbl[q.state(v, t)*2+v[t]]][idx[t]]
	}
}

// pack writes the code of path bits v and indices idx, b bits a
// component (the path bit, then b−1 index bits), to a new byte slice of
// ⌈n·b/8⌉ bytes; unpack reads it back.
func (q *tcq) pack(v, idx []int) []byte {
	out := make([]byte, (len(v)*q.b+7)/8)
	pos := 0
	put := func(x, n int) {
		for k := range n {
			if x>>k&1 == 1 {
				out[pos/8] |= 1 << (pos % 8)
			}
			pos++
		}
	}
	for t := range v {
		put(v[t], 1)
		put(idx[t], q.b-1)
	}
	return out
}

func (q *tcq) unpack(code []byte, v, idx []int) {
	pos := 0
	get := func(n int) int {
		x := 0
		for k := range n {
			x |= int(code[pos/8]>>(pos%8)&1) << k
			pos++
		}
		return x
	}
	for t := range v {
		v[t] = get(1)
		idx[t] = get(q.b - 1)
	}
}

// train runs the generalized Lloyd iteration of TCQ on the sequences seqs
// (weights ws, nil for all 1), iters times: encode every sequence, move
// each level to the weighted mean of the values coded by it, keep the
// levels ascending. It returns the mean weighted error per component of
// the last encoding.
func (q *tcq) train(seqs, ws [][]float64, iters int) float64 {
	sum, num := make([]float64, len(q.book)), make([]float64, len(q.book))
	var v, idx []int
	out := make([]float64, 0)
	var mse float64
	for range iters {
		clear(sum)
		clear(num)
		var e, cnt float64
		for k, x := range seqs {
			var w []float64
			if ws != nil {
				w = ws[k]
			}
			v, idx, out = resize(v, len(x)), resize(idx, len(x)), resize(out, len(x))
			e += q.encode(x, w, v, idx)
			cnt += float64(len(x))
			for t := range x {
				l := 4*idx[t] + q.lbl[q.state(v, t)*2+v[t]]
				wt := 1.0
				if w != nil {
					wt = w[t]
				}
				sum[l] += wt * x[t]
				num[l] += wt
			}
		}
		mse = e / cnt
		book := slices.Clone(q.book)
		for l := range book {
			if num[l] > 0 {
				book[l] = sum[l] / num[l]
			}
		}
		slices.Sort(book)
		q.setBook(book)
	}
	return mse
}

func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
