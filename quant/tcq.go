package quant

import (
	"cmp"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"sync"
)

// Trellis is a rate-1/2 feed-forward convolutional code of memory ν that
// labels trellis-coded quantization's branches with one of four subsets
// (Marcellin and Fischer 1990, after Ungerboeck's trellis-coded
// modulation). The path bits v₀, v₁, … are what a code stores; the window
// wₙ = (vₙ₋ᵥ … vₙ), bit k of wₙ being vₙ₋ₖ, gives the subset of step n:
//
//	z₁ = parity(wₙ & h0), z₀ = parity(wₙ & h1), subset = z₀ + 2·z₁
//
// The code is Ungerboeck's one-dimensional code of parity-check
// polynomials (h0, h1) written in generator form, z₁ = h0(D)·v and
// z₀ = h1(D)·v, which satisfies h0·z₀ + h1·z₁ = 0: the same label
// sequences as the systematic feedback encoder, so the same distortion.
// Since h1 has no D⁰ or Dᵛ term, the two branches that leave a state
// share z₀ (both in D0 ∪ D2 or both in D1 ∪ D3) and so do the two that
// enter one. The state is the last ν path bits, so each step's subset is
// a function of a window of ν+1 stored bits, read cyclically over a
// tail-biting path: a decoder reads any component on its own.
type Trellis struct {
	nu     int
	h0, h1 uint32 // bit k: coefficient of Dᵏ
}

// ungerboeck are the codes by number of states (Ungerboeck 1987, table of
// codes for one-dimensional amplitude modulation; octal, Dᵏ in bit k).
var ungerboeck = map[int]Trellis{
	4:   {2, 0o5, 0o2},
	8:   {3, 0o13, 0o04},
	16:  {4, 0o23, 0o04},
	32:  {5, 0o45, 0o10},
	64:  {6, 0o103, 0o024},
	128: {7, 0o235, 0o126},
	256: {8, 0o515, 0o362},
}

// NewTrellis returns Ungerboeck's code of the given number of states: 4,
// 8, 16, 32, 64, 128 or 256.
func NewTrellis(states int) (Trellis, error) {
	t, ok := ungerboeck[states]
	if !ok {
		return Trellis{}, fmt.Errorf("quant: tcq: no %d-state trellis (4, 8, 16, 32, 64, 128 or 256)", states)
	}
	return t, nil
}

// States returns the number of states, 2^ν.
func (t Trellis) States() int { return 1 << t.nu }

// Memory returns ν, the path bits a state holds.
func (t Trellis) Memory() int { return t.nu }

// Subset returns the subset (0 to 3) of the branch that leaves state s
// (the last ν path bits, bit k−1 = vₙ₋ₖ) with path bit v.
func (t Trellis) Subset(s, v int) int {
	w := uint32(s<<1 | v)
	return bits.OnesCount32(w&t.h1)&1 | (bits.OnesCount32(w&t.h0)&1)<<1
}

// Next returns the state after the branch from s with path bit v.
func (t Trellis) Next(s, v int) int { return (s<<1 | v) & (1<<t.nu - 1) }

// TCQ is a trellis-coded quantizer at b bits per component: a union
// codebook of 2^(b+1) ascending levels, level ℓ in subset ℓ mod 4, each
// subset of 2^(b−1) levels. A component costs its path bit and b−1 bits
// of index in its subset, exactly b bits; it reconstructs to level
// 4·idx + subset, the subset given by the trellis from the path bits
// (UnionLevel). The encoder (Viterbi) picks the path of least weighted
// squared error over a sequence. A TCQ holds scratch for Encode: one
// goroutine at a time.
type TCQ struct {
	tr   Trellis
	b    int
	book []float64    // union codebook, ascending, 2^(b+1) levels
	sub  [4][]float64 // sub[j][i] = book[4i+j]
	// mid[j][i] is the decision threshold (sub[j][i]+sub[j][i+1])/2 of
	// subset j: nearest's boundaries, for a branch-free search.
	mid [4][]float64
	// branch[s'] are the two branches that enter state s' (Trellis).
	branch []tcqBranch
	// unrolled: the trellis is Ungerboeck's of 8 states (viterbi8).
	unrolled bool
	// TailBiting makes a path end in the state it starts in (see
	// Encode); otherwise it starts in state 0, as in Marcellin and
	// Fischer's long sequences.
	TailBiting bool
	// steps, when set, are the quantizers of each step of a sequence (of
	// as many steps), for sequences whose components differ in width and
	// so in codebook; nil: q at every step.
	steps   []*TCQ
	scratch tcqScratch
}

// tcqBranch are the two branches that enter a state: from p0 and p1
// (p0 | 2^(ν−1)), of subsets l0 and l1.
type tcqBranch struct{ p0, p1, l0, l1 uint8 }

// tcqScratch is the Viterbi's working memory.
type tcqScratch struct {
	cost, next *[256]float64 // path costs by state (up to 256 states)
	lower      [256]float64  // the free pass's costs by end state: each start's lower bound
	order      [256]int      // start states by lower bound
	dist       []float64     // per step and subset: the weighted error of its nearest level
	at         []int32       // per step and subset: that level's index in the subset
	// back and best hold, per step, a bit per state: set where the
	// state was entered from p1 (words of 64 states).
	back, best []uint64
}

// NewTCQ returns the b-bit TCQ of trellis tr with the union codebook book
// (2^(b+1) ascending levels).
func NewTCQ(tr Trellis, b int, book []float64) (*TCQ, error) {
	if tr.nu < 1 {
		return nil, fmt.Errorf("quant: tcq: trellis not set (NewTrellis)")
	}
	if b < 1 || b > 8 || len(book) != 1<<(b+1) {
		return nil, fmt.Errorf("quant: tcq: %d levels for %d bits, want %d", len(book), b, 1<<(b+1))
	}
	if !slices.IsSorted(book) {
		return nil, fmt.Errorf("quant: tcq: codebook not ascending")
	}
	q := &TCQ{tr: tr, b: b, book: slices.Clone(book)}
	q.SetBook(book)
	n := tr.States()
	half := n >> 1
	for s2 := range n {
		// State s' is entered from s'>>1 and s'>>1 | 2^(ν−1), with path
		// bit s'&1.
		p0, v := s2>>1, s2&1
		q.branch = append(q.branch, tcqBranch{uint8(p0), uint8(p0 | half), uint8(tr.Subset(p0, v)), uint8(tr.Subset(p0|half, v))})
	}
	q.unrolled = n == 8
	for s2, br := range q.branch {
		q.unrolled = q.unrolled && [2]uint8{br.l0, br.l1} == ungerboeck8Labels[s2]
	}
	return q, nil
}

// Bits returns b, the bits per component.
func (q *TCQ) Bits() int { return q.b }

// Trellis returns the quantizer's trellis.
func (q *TCQ) Trellis() Trellis { return q.tr }

// Book returns a copy of the union codebook.
func (q *TCQ) Book() []float64 { return slices.Clone(q.book) }

// SetBook replaces the union codebook by book (as many levels,
// ascending; Train keeps them so).
func (q *TCQ) SetBook(book []float64) {
	copy(q.book, book)
	for j := range 4 {
		q.sub[j] = q.sub[j][:0]
		for l := j; l < len(book); l += 4 {
			q.sub[j] = append(q.sub[j], book[l])
		}
	}
	q.setMids()
}

// setMids sets mid from sub.
func (q *TCQ) setMids() {
	for j, c := range q.sub {
		q.mid[j] = q.mid[j][:0]
		for i := range len(c) - 1 {
			q.mid[j] = append(q.mid[j], (c[i]+c[i+1])/2)
		}
	}
}

// SetSteps makes q code sequences of len(widths) steps, step t with the
// union codebook of widths[t] (one trellis path through components of
// different widths: the trellis only picks subsets); nil restores q's
// own codebook at every step. The quantizers are read, not copied.
func (q *TCQ) SetSteps(widths []*TCQ) error {
	q.steps = q.steps[:0]
	if widths == nil {
		q.steps = nil
		return nil
	}
	for t, w := range widths {
		if w.tr != q.tr {
			return fmt.Errorf("quant: tcq: step %d has another trellis", t)
		}
		q.steps = append(q.steps, w)
	}
	return nil
}

// at returns the quantizer of step t.
func (q *TCQ) at(t int) *TCQ {
	if q.steps != nil {
		return q.steps[t]
	}
	return q
}

// subsAt returns the subsets of step t.
func (q *TCQ) subsAt(t int) *[4][]float64 { return &q.at(t).sub }

// tailBitingSearch is how many start states the tail-biting encoder of a
// trellis of more than 32 states tries: the cyclic states of the best
// free paths, and state 0 (smaller trellises try every state; a larger
// one may then miss the best path, by much on short sequences).
const tailBitingSearch = 8

// Encode codes x (weights w, nil: all 1) and writes each component's path
// bit to v and index in its subset to idx; it returns the weighted squared
// error Σ wₙ·(xₙ − x̂ₙ)². With TailBiting the path starts in the state it
// ends in, its last ν path bits, so that no component sees half a
// codebook (a path from state 0 starts in D0 ∪ D2, lopsided) and no bit
// is spent on the start; the decoder reads the window cyclically. The
// encoder finds the least-error tail-biting path up to 32 states (every
// start state that could beat the best found; see encode). Otherwise the
// path starts in state 0 and ends anywhere.
func (q *TCQ) Encode(x, w []float64, v, idx []int) float64 {
	return q.encode(&q.scratch, x, w, v, idx)
}

// encode is Encode. Up to 32 states, tail-biting, it is a branch and
// bound over the start states: a free pass (every state a start at no
// cost) gives each end state's least cost, a lower bound on the
// tail-biting path through it (the free pass minimises over a superset of
// paths, with the same float additions in the same order, and rounding
// is monotone); the starts are then tried by ascending bound until the
// bound passes the best cost found. The least cost, ties to the lowest
// start state, is the search over every start state's, exactly: a start
// left out costs more than the best.
func (q *TCQ) encode(sc *tcqScratch, x, w []float64, v, idx []int) float64 {
	if q.steps != nil && len(q.steps) != len(x) {
		panic(fmt.Sprintf("quant: tcq: %d values for a sequence of %d steps", len(x), len(q.steps)))
	}
	n, ns := len(x), q.tr.States()
	if n == 0 {
		return 0
	}
	q.nearestLevels(sc, x, w)
	words := (ns + 63) / 64
	sc.back, sc.best = resize(sc.back, n*words), resize(sc.best, n*words)
	if sc.cost == nil {
		sc.cost, sc.next = new([256]float64), new([256]float64)
	}
	if !q.TailBiting {
		q.viterbi(sc, 0)
		end := 0
		for s := range ns {
			if sc.cost[s] < sc.cost[end] {
				end = s
			}
		}
		c := sc.cost[end]
		q.traceback(sc, sc.back, end, v, idx)
		return c
	}
	q.viterbi(sc, -1)
	order := sc.order[:ns]
	lower := sc.lower[:ns]
	copy(lower, sc.cost[:ns])
	for s := range order {
		order[s] = s
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(lower[a], lower[b]) })
	if ns > 32 {
		// The cyclic state of each of the best free paths (its end state,
		// or for a path shorter than ν its bits repeated), and state 0,
		// which always has a tail-biting path (all zeros), tried in that
		// order with no bound, ties to the first.
		starts := []int{0}
		for _, e := range order[:tailBitingSearch] {
			q.traceback(sc, sc.back, e, v, idx)
			if s0 := q.state(v, 0); !slices.Contains(starts, s0) {
				starts = append(starts, s0)
			}
		}
		order = starts
		clear(lower)
	}
	exact := ns <= 32
	best, bestCost := -1, math.Inf(1)
	for _, s0 := range order {
		if best >= 0 && lower[s0] > bestCost {
			break // sorted: no later start can do better either
		}
		q.viterbi(sc, s0)
		if c := sc.cost[s0]; c < bestCost || best < 0 || exact && c == bestCost && s0 < best {
			best, bestCost = s0, c
			sc.back, sc.best = sc.best, sc.back // keep the best start's decisions
		}
	}
	q.traceback(sc, sc.best, best, v, idx)
	return bestCost
}

// nearestLevels finds, for each step of x, each subset's nearest level
// and its weighted error: four scalar quantizations a step, shared by
// every start state's Viterbi pass. Each is nearest's search, branch
// free: the index is the number of thresholds below the value (a subset
// has 2^(b−1) levels), for values that are not NaN.
func (q *TCQ) nearestLevels(sc *tcqScratch, x, w []float64) {
	n := len(x)
	sc.dist, sc.at = resize(sc.dist, 4*n), resize(sc.at, 4*n)
	for t, xt := range x {
		wt := 1.0
		if w != nil {
			wt = w[t]
		}
		st := q.at(t)
		half := len(st.sub[0]) >> 1
		m0, m1, m2, m3 := st.mid[0], st.mid[1], st.mid[2], st.mid[3]
		var i0, i1, i2, i3 int
		for step := half; step > 0; step >>= 1 { // four searches side by side
			i0 += above(m0[i0+step-1], xt, step)
			i1 += above(m1[i1+step-1], xt, step)
			i2 += above(m2[i2+step-1], xt, step)
			i3 += above(m3[i3+step-1], xt, step)
		}
		e0, e1, e2, e3 := xt-st.sub[0][i0], xt-st.sub[1][i1], xt-st.sub[2][i2], xt-st.sub[3][i3]
		*(*[4]float64)(sc.dist[4*t:]) = [4]float64{wt * e0 * e0, wt * e1 * e1, wt * e2 * e2, wt * e3 * e3}
		*(*[4]int32)(sc.at[4*t:]) = [4]int32{int32(i0), int32(i1), int32(i2), int32(i3)}
	}
}

// above returns step if x > mid, else 0, branch free: x > mid is the sign
// of mid − x, exactly for values that are not NaN (a difference of
// finite floats rounds to 0 only when they are equal; the thresholds are
// finite).
func above(mid, x float64, step int) int {
	return step & -int(math.Float64bits(mid-x)>>63)
}

// viterbi runs the add–compare–select from state start (−1: from every
// state at no cost), leaving the path costs by end state in sc.cost and
// the decisions in sc.back. The select is branch free (min; the costs
// are not NaN for values that are not): the decisions are as random as
// the data.
func (q *TCQ) viterbi(sc *tcqScratch, start int) {
	ns := q.tr.States()
	if q.unrolled {
		q.viterbi8(sc, start)
		return
	}
	n := len(sc.dist) / 4
	words := (ns + 63) / 64
	cost, next := sc.cost, sc.next
	for s := range ns {
		cost[s] = 0
		if start >= 0 && s != start {
			cost[s] = math.Inf(1)
		}
	}
	branch := q.branch
	for t := range n {
		dist := (*[4]float64)(sc.dist[4*t:])
		back := sc.back[t*words : (t+1)*words]
		for wi := range back {
			var dec uint64
			for i, br := range branch[64*wi : min(ns, 64*wi+64)] {
				c0, c1 := cost[br.p0]+dist[br.l0&3], cost[br.p1]+dist[br.l1&3]
				var d uint64
				if c1 < c0 {
					d = 1
				}
				next[uint8(64*wi+i)] = min(c0, c1)
				dec |= d << i
			}
			back[wi] = dec
		}
		cost, next = next, cost
	}
	sc.cost, sc.next = cost, next
}

// viterbi8 is viterbi for Ungerboeck's 8-state code (the tcq formats'
// trellis), unrolled: the costs and the step's four errors stay in
// registers; with AVX-512, the eight costs in one (viterbi8AVX512, the
// same float operations). State s' is entered from p0 = s'>>1 and p0 | 4 with path
// bit s'&1, on branches of subsets (z₀ = bit 1 of p0, z₁ = (s'&1) ⊕
// (p0&1)) and that with z₁ flipped: ungerboeck8Labels.
func (q *TCQ) viterbi8(sc *tcqScratch, start int) {
	var c [8]float64
	for s := range c {
		if start >= 0 && s != start {
			c[s] = math.Inf(1)
		}
	}
	back := sc.back[:len(sc.dist)/4]
	if hasViterbi8AVX512() {
		if len(back) > 0 {
			viterbi8AVX512(&sc.dist[0], len(back), &c, &back[0])
		}
		*(*[8]float64)(sc.cost[:8]) = c
		return
	}
	c0, c1, c2, c3, c4, c5, c6, c7 := c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
	for t := range back {
		d := (*[4]float64)(sc.dist[4*t:])
		d0, d1, d2, d3 := d[0], d[1], d[2], d[3]
		n0, k0 := acs(c0+d0, c4+d2)
		n1, k1 := acs(c0+d2, c4+d0)
		n2, k2 := acs(c1+d2, c5+d0)
		n3, k3 := acs(c1+d0, c5+d2)
		n4, k4 := acs(c2+d1, c6+d3)
		n5, k5 := acs(c2+d3, c6+d1)
		n6, k6 := acs(c3+d3, c7+d1)
		n7, k7 := acs(c3+d1, c7+d3)
		back[t] = k0 | k1<<1 | k2<<2 | k3<<3 | k4<<4 | k5<<5 | k6<<6 | k7<<7
		c0, c1, c2, c3, c4, c5, c6, c7 = n0, n1, n2, n3, n4, n5, n6, n7
	}
	*(*[8]float64)(sc.cost[:8]) = [8]float64{c0, c1, c2, c3, c4, c5, c6, c7}
}

// tcqGoOnly keeps the tcq encoder to its Go code on a CPU with AVX-512:
// a switch for the tests and benchmarks that compare the two.
var tcqGoOnly bool

// ungerboeck8Labels are the subsets of the branches into each state of
// Ungerboeck's 8-state code, from p0 then p1, as viterbi8 has them.
var ungerboeck8Labels = [8][2]uint8{{0, 2}, {2, 0}, {2, 0}, {0, 2}, {1, 3}, {3, 1}, {3, 1}, {1, 3}}

// acs is one add–compare–select, branch free: the lesser of the costs
// c0 and c1 and whether it is c1.
func acs(c0, c1 float64) (float64, uint64) {
	var k uint64
	if c1 < c0 {
		k = 1
	}
	return min(c0, c1), k
}

// traceback writes the path that ends in state end, from the decisions
// back.
func (q *TCQ) traceback(sc *tcqScratch, back []uint64, end int, v, idx []int) {
	ns := q.tr.States()
	words := (ns + 63) / 64
	n := len(sc.dist) / 4
	for t, s := n-1, end; t >= 0; t-- {
		br := q.branch[s]
		p, l := br.p0, br.l0
		if back[t*words+s>>6]>>(s&63)&1 != 0 {
			p, l = br.p1, br.l1
		}
		v[t] = s & 1
		idx[t] = int(sc.at[4*t+int(l)])
		s = int(p)
	}
}

// state returns the state before component t of path v: the path bits
// t−1 … t−ν, read cyclically (tail-biting) or zero before the start.
func (q *TCQ) state(v []int, t int) int {
	s, n := 0, len(v)
	for k := 1; k <= q.tr.nu; k++ {
		if q.TailBiting {
			s |= v[((t-k)%n+n)%n] << (k - 1)
		} else if t-k >= 0 {
			s |= v[t-k] << (k - 1)
		}
	}
	return s
}

// UnionLevel returns the union codebook level, 4·idx[t] + subset, that
// component t of the path v with subset indices idx reconstructs to.
func (q *TCQ) UnionLevel(v, idx []int, t int) int {
	return 4*idx[t] + q.tr.Subset(q.state(v, t), v[t])
}

// Decode writes the reconstruction of the path bits v and subset indices
// idx to out. Each component is read on its own from the window of ν+1
// path bits that ends at it, as a scorer reads it.
func (q *TCQ) Decode(out []float64, v, idx []int) {
	for t := range out {
		out[t] = q.subsAt(t)[q.tr.Subset(q.state(v, t), v[t])][idx[t]]
	}
}

// Pack returns the code of path bits v and indices idx, b bits a
// component (the path bit, then b−1 index bits, LSB first), in ⌈n·b/8⌉
// bytes; Unpack reads it back.
func (q *TCQ) Pack(v, idx []int) []byte {
	out := make([]byte, (len(v)*q.b+7)/8)
	w := bitWriter{buf: out}
	for t := range v {
		w.write(uint8(v[t]&1|idx[t]<<1), q.b)
	}
	w.flush()
	return out
}

// Unpack reads a code of len(v) components that Pack wrote.
func (q *TCQ) Unpack(code []byte, v, idx []int) error {
	if want := (len(v)*q.b + 7) / 8; len(code) != want {
		return fmt.Errorf("quant: tcq: code of %d bytes for %d components of %d bits, want %d", len(code), len(v), q.b, want)
	}
	r := bitReader{buf: code}
	for t := range v {
		u := int(r.read(q.b))
		v[t], idx[t] = u&1, u>>1
	}
	return nil
}

// Train runs the generalized Lloyd iteration of TCQ on the sequences seqs
// (weights ws, nil for all 1), iters times: encode every sequence, move
// each level to the weighted mean of the values coded by it, keep the
// levels ascending. It returns the mean weighted error per component of
// the last encoding.
func (q *TCQ) Train(seqs, ws [][]float64, iters int) float64 {
	sum, num := make([]float64, len(q.book)), make([]float64, len(q.book))
	var v, idx []int
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
			v, idx = resize(v, len(x)), resize(idx, len(x))
			e += q.Encode(x, w, v, idx)
			cnt += float64(len(x))
			for t := range x {
				l := q.UnionLevel(v, idx, t)
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
		q.SetBook(book)
	}
	return mse
}

func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// TCQBookStates is the trellis size whose union codebooks are trained
// (TrainedTCQBook): the tcq formats' 8 states.
const TCQBookStates = 8

// TrainedTCQBook returns the b-bit (1 to TCQMaxBits) union codebook of
// tcq_books.go for the TCQBookStates-state trellis tr, made by
// tools/tcqbooks: the TCQ Lloyd iteration run from GaussianTCQBook to
// convergence on unit-Gaussian sequences, symmetric about 0. It has
// 0.003–0.3 dB less squared error than GaussianTCQBook on a Gaussian and
// 2–3% less on the klt components of models' keys and values, but its
// levels sit closer to 0 (up to 19% at 4 bits), and tcq2.5 and tcq3.5
// measured more KL with it on six of the suite's eight model-rates
// (1.09x in geometric mean; auto:3.5's plans 0.93–0.99x; BENCHMARKS.md,
// "Trained TCQ codebooks"): the formats keep GaussianTCQBook.
func TrainedTCQBook(tr Trellis, b int) ([]float64, error) {
	if b < 1 || b > TCQMaxBits {
		return nil, fmt.Errorf("quant: tcq: %d bits, want 1 to %d", b, TCQMaxBits)
	}
	if tr != ungerboeck[TCQBookStates] {
		return nil, fmt.Errorf("quant: tcq: trained books are for the %d-state trellis, not %d states", TCQBookStates, tr.States())
	}
	return slices.Clone(trainedTCQBooks[b]), nil
}

// TCQMaxBits is the widest component a TCQ of GaussianTCQBook codes; a
// KLT codes wider ones (8 bits) with the scalar code: the doubled alphabet
// would start from a 9-bit Lloyd–Max codebook, and such components are
// few and carry little of the error.
const TCQMaxBits = 7

// gaussianTCQSeqLen is the length of the unit-Gaussian sequences
// GaussianTCQBook trains on: about a klt vector's coded components.
const gaussianTCQSeqLen = 64

// GaussianTCQBook returns the b-bit (1 to TCQMaxBits) tail-biting TCQ union
// codebook of trellis tr for a unit Gaussian: Marcellin and Fischer's
// doubled Lloyd–Max alphabet (the (b+1)-bit codebook) refined by ten TCQ
// Lloyd iterations (TCQ.Train) on i.i.d. N(0, 1) sequences of 64 values
// drawn from a seed fixed by the trellis and b. Results are memoised.
func GaussianTCQBook(tr Trellis, b int) ([]float64, error) {
	if b < 1 || b > TCQMaxBits {
		return nil, fmt.Errorf("quant: tcq: %d bits, want 1 to %d", b, TCQMaxBits)
	}
	key := tcqBookKey{tr, b}
	f, _ := gaussianTCQBooks.LoadOrStore(key, sync.OnceValues(func() ([]float64, error) {
		cb, err := LloydMaxGaussian(b+1, 1)
		if err != nil {
			return nil, err
		}
		book := make([]float64, len(cb.Centroids))
		for i, c := range cb.Centroids {
			book[i] = float64(c)
		}
		q, err := NewTCQ(tr, b, book)
		if err != nil {
			return nil, err
		}
		q.TailBiting = true
		r := rand.New(rand.NewPCG(uint64(tr.States()), uint64(b)))
		seqs := make([][]float64, max(600, 4<<(b+1)))
		for i := range seqs {
			seqs[i] = make([]float64, gaussianTCQSeqLen)
			for j := range seqs[i] {
				seqs[i][j] = r.NormFloat64()
			}
		}
		q.Train(seqs, nil, 10)
		return q.book, nil
	}))
	book, err := f.(func() ([]float64, error))()
	return slices.Clone(book), err
}

type tcqBookKey struct {
	tr Trellis
	b  int
}

// gaussianTCQBooks memoises GaussianTCQBook (a pure function's results,
// which every TCQ KLT of a model reads; each takes up to a second).
var gaussianTCQBooks sync.Map
