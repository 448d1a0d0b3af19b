package kvcache

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"github.com/turbomem/turbomem/tensor"
)

// Rope is the rotary position embedding a model applies to its keys
// before they reach the cache: at position t, coordinate pair i (A(i),
// B(i)) turns by the angle t·Freqs[i], as the complex product
// (x_A + i·x_B)·e^(i·t·Freqs[i]); coordinates past the pairs stay as
// they are. A cache whose Shape has it can tell the part of the keys
// that turns with position from the part that does not (centered keys).
//
// Centred keys subtract from the key at position t the mean μ turned to
// t (meanTurns), and scoring adds its share back (meanScores). Pairs
// that turn fast, ω_i > slowFreq, are turned exactly: R_t·μ. Slow pairs
// are turned to ropeNodes Chebyshev nodes of t's chunk of ropeChunk
// positions and interpolated between them (error below ropeTol of their
// share of μ): their score is then a polynomial in the position within
// the chunk, ropeNodes numbers per chunk and query instead of two per
// pair, which makes the mean's share cost a third to a half of what it
// would otherwise (most pairs are slow: ω_i = base^(−2i/d)).
type Rope struct {
	d      int       // head dimension
	freqs  []float64 // per pair
	halves bool      // pairs (i, i+len(freqs)) instead of (2i, 2i+1)

	exact, slow []int                         // pairs turned exactly and interpolated
	nodes       [ropeNodes]float64            // node offsets within a chunk
	basis       [ropeNodes][ropeChunk]float64 // Lagrange basis ℓ_k(j) at the chunk's positions
	unrotated   bool                          // coordinates past the pairs exist
	rows        int                           // rows of table
	// table holds the rows the chunk kernel weighs (meanAdd4), ropeSpan
	// columns each (positions j of a span): cos(j·ω) of every exact pair,
	// then sin(j·ω), then the ropeNodes rows ℓ_k(j mod ropeChunk). Shared
	// by every layer and head.
	table []float32

	// blocks holds, per block of ropeChunk chunks, the turns that do not
	// depend on the queries or the mean (ropeBlock). Made on first use
	// and kept: they depend on nothing but the position.
	blocks  atomic.Pointer[[]*ropeBlock]
	grow    sync.Mutex
	scratch sync.Pool // *ropeScratch
}

// ropeBlock is what meanPlan.add reads of a block of ropeChunk chunks
// (blockLen positions), besides the Rope's table.
type ropeBlock struct {
	// nodes holds the slow pairs' turns at the chunks' nodes: rows
	// cos(p·ω_s), then sin, at the positions p = c·ropeChunk + x_k
	// (block-relative, plus the block's start) in column ropeNodes·c + k,
	// for the chunks c of the block and their nodes k; in tiles of
	// nodeTile columns, a tile's rows together (a slice's node sums read
	// a few tiles from end to end, not a few columns of every row), and a
	// tile of zeros past the last.
	nodes []float32
	// spans holds, per span of the block, the exact pairs' turns at the
	// span's start s: cos(s·ω) of each, then sin(s·ω) (2·pe a span).
	spans []float32
}

const (
	// ropeChunk is the number of positions whose mean-score terms one
	// kernel call sums (64 floats a row) and the length over which slow
	// pairs are interpolated.
	ropeChunk = 64
	// ropeSpan is the number of positions the exact pairs' rows cover,
	// so that their weights turn once every ropeSpan positions.
	ropeSpan = 2 * ropeChunk
	// ropeNodes is the number of interpolation nodes per chunk.
	ropeNodes = 6
	// nodeCols is the number of columns of a block's node turns
	// (ropeBlock.nodes): a node of each chunk.
	nodeCols = ropeNodes * ropeChunk
	// nodeTile is the number of columns of a tile of a block's node
	// turns (ropeBlock.nodes); the node sums of a slice's chunks are made
	// two tiles at a time, from the tile of its first chunk's first node
	// on.
	nodeTile = 16
	// nodeStride is the length of a query's row of node sums
	// (meanPlan.add's scratch): a block's columns and room for a last
	// pair of tiles that starts at the last tile.
	nodeStride = nodeCols + nodeTile
	// blockLen is the number of positions of a block (ropeBlock).
	blockLen = ropeChunk * ropeChunk
	// ropeTol bounds the interpolation error of a slow pair:
	// |e^(i·j·ω) − Σ_k ℓ_k(j)·e^(i·x_k·ω)| ≤ 2·(ω·(ropeChunk−1)/4)^N/N!
	// for Chebyshev nodes (N = ropeNodes), which is at most ropeTol for
	// ω ≤ slowFreq.
	ropeTol = 0.02
)

// slowFreq is the largest angular frequency a pair can have and still be
// interpolated within ropeTol: the bound above solved for ω.
var slowFreq = func() float64 {
	f := 1.0
	for k := 2; k <= ropeNodes; k++ {
		f *= float64(k)
	}
	return math.Pow(ropeTol*f/2, 1/float64(ropeNodes)) * 4 / (ropeChunk - 1)
}()

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
	r := &Rope{d: d, freqs: append([]float64(nil), freqs...), halves: halves, unrotated: 2*len(freqs) < d}
	for i, f := range freqs {
		if math.Abs(f) > slowFreq {
			r.exact = append(r.exact, i)
		} else {
			r.slow = append(r.slow, i)
		}
	}
	// Chebyshev nodes of [0, ropeChunk−1] and their Lagrange basis.
	const half = (ropeChunk - 1) / 2.0
	for k := range ropeNodes {
		r.nodes[k] = half - half*math.Cos(math.Pi*float64(2*k+1)/(2*ropeNodes))
	}
	for j := range ropeChunk {
		for k := range ropeNodes {
			l := 1.0
			for m, x := range r.nodes {
				if m != k {
					l *= (float64(j) - x) / (r.nodes[k] - x)
				}
			}
			r.basis[k][j] = l
		}
	}
	pe := len(r.exact)
	r.rows = 2*pe + ropeNodes
	r.table = make([]float32, r.rows*ropeSpan)
	for e, i := range r.exact {
		for j := range ropeSpan {
			sn, cs := math.Sincos(float64(j) * freqs[i])
			r.table[e*ropeSpan+j], r.table[(pe+e)*ropeSpan+j] = float32(cs), float32(sn)
		}
	}
	for k := range ropeNodes {
		row := r.table[(2*pe+k)*ropeSpan : (2*pe+k+1)*ropeSpan]
		for j := range row {
			row[j] = float32(r.basis[k][j%ropeChunk])
		}
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

// meanTurns gives the vector centred keys subtract at each position: the
// mean μ (before RoPE) turned to the position, R_t·μ, on the exact pairs
// and the unrotated coordinates; on the slow pairs, μ turned to the nodes
// of the position's chunk and interpolated (Rope). It keeps the node
// vectors of the last chunk asked for: positions come in order.
type meanTurns struct {
	r     *Rope
	mu    []float64
	chunk int                     // chunk start whose nodes are held; −1: none
	at    [ropeNodes][]complex128 // per node, per slow pair: μ̃·e^(i·(chunk+x_k)·ω)
}

func newMeanTurns(r *Rope, mu []float64) *meanTurns {
	m := &meanTurns{r: r, mu: mu, chunk: -1}
	if r != nil {
		for k := range m.at {
			m.at[k] = make([]complex128, len(r.slow))
		}
	}
	return m
}

// turned sets dst (length d) to the vector subtracted at position t ≥ 0.
func (m *meanTurns) turned(dst []float64, t int) {
	copy(dst, m.mu)
	r := m.r
	if r == nil {
		return
	}
	for _, i := range r.exact {
		s, c := math.Sincos(float64(t) * r.freqs[i])
		a, b := r.pair(i)
		x0, x1 := m.mu[a], m.mu[b]
		dst[a] = x0*c - x1*s
		dst[b] = x0*s + x1*c
	}
	if len(r.slow) == 0 {
		return
	}
	c0 := t - t%ropeChunk
	if c0 != m.chunk {
		for k, x := range r.nodes {
			for s, i := range r.slow {
				a, b := r.pair(i)
				sn, cs := math.Sincos((float64(c0) + x) * r.freqs[i])
				m.at[k][s] = complex(m.mu[a], m.mu[b]) * complex(cs, sn)
			}
		}
		m.chunk = c0
	}
	j := t - c0
	for s, i := range r.slow {
		var v complex128
		for k := range ropeNodes {
			v += complex(r.basis[k][j], 0) * m.at[k][s]
		}
		a, b := r.pair(i)
		dst[a], dst[b] = real(v), imag(v)
	}
}

// meanPlan is the part of meanScores that depends on the queries and
// the mean alone, not on the positions: made once per attention step
// (Rope.plan) and shared, read-only, by every slice of positions.
type meanPlan struct {
	r      *Rope
	nq     int       // queries
	groups int       // groups of four queries
	z      []float32 // per query: z = conj(q̃)·μ̃ of each exact pair, Re z of each, then Im z
	y      []float32 // per group and query: the node sums' weights, Re z then −Im z of the slow pairs
	base   []float32 // per query: ⟨q, μ⟩ over the unrotated coordinates (all of them without a Rope)
}

// ropeScratch is one slice's scratch for meanPlan.add (and meanScores'
// plan). The slices of a step write their own at once, so the struct and
// the arrays add writes keep a cache line apart from anything else
// (apart): sharing a line with another goroutine's scratch made these
// few writes a large part of a 16-thread step.
type ropeScratch struct {
	_    [64]byte
	plan meanPlan
	// w holds, for the spans of a block's chunks, per query and exact
	// pair the span's weights u = Re w, then v = −Im w, w = z·e^(i·s·ω).
	w    []float32
	n    []float32 // per group and query: the node sums of a block's chunks (ropeBlock.nodes' columns)
	sums []float32 // the batches' partial chunks
	zero []float32 // the weights of an empty slot
	// per column a chunk can start at in the table (ropeSpan/ropeChunk):
	// the slots waiting for a chunk kernel call
	batch [ropeSpan / ropeChunk]meanBatch
	_     [64]byte
}

// block returns block b's turns (ropeBlock), making the blocks up to b
// on first use.
func (r *Rope) block(b int) *ropeBlock {
	if bs := r.blocks.Load(); bs != nil && b < len(*bs) {
		return (*bs)[b]
	}
	r.grow.Lock()
	defer r.grow.Unlock()
	var bs []*ropeBlock
	if p := r.blocks.Load(); p != nil {
		bs = *p
	}
	if b < len(bs) {
		return bs[b]
	}
	ps, pe := len(r.slow), len(r.exact)
	next := append([]*ropeBlock(nil), bs...)
	for len(next) <= b {
		blk := &ropeBlock{nodes: make([]float32, (nodeCols/nodeTile+1)*2*ps*nodeTile), spans: make([]float32, blockLen/ropeSpan*2*pe)}
		c0 := len(next) * blockLen // first position of the block
		for s, i := range r.slow {
			for c := range ropeChunk {
				for k, x := range r.nodes {
					sn, cs := math.Sincos((float64(c0+c*ropeChunk) + x) * r.freqs[i])
					col := ropeNodes*c + k
					tile := blk.nodes[col/nodeTile*2*ps*nodeTile:]
					tile[s*nodeTile+col%nodeTile], tile[(ps+s)*nodeTile+col%nodeTile] = float32(cs), float32(sn)
				}
			}
		}
		for sp := range blockLen / ropeSpan {
			for e, i := range r.exact {
				sn, cs := math.Sincos(float64(c0+sp*ropeSpan) * r.freqs[i])
				blk.spans[sp*2*pe+e], blk.spans[sp*2*pe+pe+e] = float32(cs), float32(sn)
			}
		}
		next = append(next, blk)
	}
	r.blocks.Store(&next)
	return next[b]
}

// meanScores adds ⟨qs[j], m_t⟩ to dst[j][i] for t = t0+i and every query
// j, where m_t is the vector centred keys subtract at t (meanTurns, from
// the mean mu): the mean's share of each score (plan, then add). A nil
// Rope adds ⟨q, mu⟩.
func (r *Rope) meanScores(dst, qs [][]float32, mu []float32, t0 int) {
	if r == nil {
		var p meanPlan
		r.plan(&p, qs, mu)
		p.add(dst, t0)
		return
	}
	sc, _ := r.scratch.Get().(*ropeScratch)
	if sc == nil {
		sc = &ropeScratch{}
	}
	defer r.scratch.Put(sc)
	r.plan(&sc.plan, qs, mu)
	sc.plan.add(dst, t0)
}

// plan sets p up for the queries qs and the mean mu, reusing p's
// storage: beginPlan, then planQuery for each query.
func (r *Rope) plan(p *meanPlan, qs [][]float32, mu []float32) {
	r.beginPlan(p, len(qs))
	for j, q := range qs {
		r.planQuery(p, j, q, mu)
	}
}

// beginPlan sizes p for nq queries, reusing p's storage. Queries go in
// fours (a short last group padded with zero weights, set here).
func (r *Rope) beginPlan(p *meanPlan, nq int) {
	p.r, p.nq = r, nq
	p.base = grown(p.base, nq)
	if r == nil {
		return
	}
	pe, ps := len(r.exact), len(r.slow)
	p.groups = (nq + 3) / 4
	p.z = grown(p.z, nq*2*pe)
	p.y = grown(p.y, 4*p.groups*2*ps)
	clear(p.y[nq*2*ps:])
}

// planQuery sets query j of p (beginPlan) to q, for the mean mu: per
// pair, z = conj(q̃)·μ̃; the slow pairs' Re z and −Im z, the weights of
// add's node sums; ⟨q, μ⟩ over the unrotated coordinates. Calls for
// different j may run at once.
func (r *Rope) planQuery(p *meanPlan, j int, q, mu []float32) {
	if r == nil {
		p.base[j] = tensor.DotF32(q, mu)
		return
	}
	np, pe, ps := len(r.freqs), len(r.exact), len(r.slow)
	turn := func(i int) complex128 {
		a, b := r.pair(i)
		return complex(float64(q[a]), -float64(q[b])) * complex(float64(mu[a]), float64(mu[b]))
	}
	z := p.z[j*2*pe : (j+1)*2*pe]
	for e, i := range r.exact {
		x := turn(i)
		z[e], z[pe+e] = float32(real(x)), float32(imag(x))
	}
	p.base[j] = 0
	if r.unrotated {
		p.base[j] = tensor.DotF32(q[2*np:], mu[2*np:])
	}
	y := p.y[j*2*ps : (j+1)*2*ps]
	for s, i := range r.slow {
		z := turn(i)
		y[s], y[ps+s] = float32(real(z)), float32(-imag(z))
	}
}

// add adds the mean's share of the scores of p's queries at the
// positions t0, t0+1, … to dst (a row per query). A chunk's terms for
// one query are a slot of a meanAdd4 call over the rows of the table,
// with weights
//   - exact pair: u = Re w, v = −Im w, w = z·e^(i·s·ω) at the span start
//     s (⟨q, R_t·μ⟩ = Σ cos(jω)·u + sin(jω)·v for t = s+j), made for the
//     spans of a block at once from the block's turns at their starts
//     (spanWeights: no sincos, no drift) and read in place;
//   - node k: N_k = Re Σ_slow z·e^(i·(c+x_k)·ω) at the chunk start c,
//     from turnTiles4 calls over the block's node turns, one per two
//     tiles from the tile of the slice's first node on, with the plan's
//     weights Re z, −Im z; plus ⟨q, μ⟩ over the
//     unrotated coordinates, which the basis adds to every position as it
//     is (Σ_k ℓ_k(j) = 1).
//
// For each group of four queries, the chunks the slice covers in whole
// go to meanRun, a group and a block's run of chunks a call. The rest
// (the queries past the last four, the chunks the slice covers in part)
// are slots of meanAdd4 calls, any (query, chunk) pairs whose chunks sit
// at the same columns of the table (meanBatch): with fewer than four
// queries left (GQA groups of one to three, or of six or seven) the
// chunks a span apart fill them, so no slot is spent on a padded query
// but the last few.
//
// Slices of one step call it at once, each with scratch of its own.
func (p *meanPlan) add(dst [][]float32, t0 int) {
	n := len(dst[0])
	if n == 0 {
		return
	}
	r := p.r
	if r == nil {
		for j := range dst {
			c := p.base[j]
			for i := range dst[j] {
				dst[j][i] += c
			}
		}
		return
	}
	pe, nq := len(r.exact), p.nq
	sc, _ := r.scratch.Get().(*ropeScratch)
	if sc == nil {
		sc = &ropeScratch{}
	}
	defer r.scratch.Put(sc)
	sc.w = apart(sc.w, (blockLen/ropeSpan+1)*nq*2*pe) // a block's spans and the next one's first
	sc.n = apart(sc.n, 4*p.groups*nodeStride)
	sc.sums = apart(sc.sums, len(sc.batch)*4*ropeChunk)
	sc.zero = apart(sc.zero, max(2*pe, ropeNodes)) // never written
	for b := range sc.batch {
		sc.batch[b] = meanBatch{sums: sc.sums[b*4*ropeChunk : (b+1)*4*ropeChunk], zero: sc.zero, erows: 2 * pe, table: r.table[b*ropeChunk:]}
	}
	end := t0 + n
	whole := nq / 4 // groups of four queries whose whole chunks go to meanRun
	for c := t0 - t0%ropeChunk; c < end; {
		// the block's chunks in [c, end): their node sums and their
		// spans' weights (the slots waiting read the last block's)
		b := c / blockLen
		blk := r.block(b)
		segEnd := min(end, (b+1)*blockLen)
		last := (segEnd-1)/ropeChunk - b*ropeChunk + 1 // past the last chunk, in the block
		p.nodeSums(sc.n, blk, ropeNodes*(c/ropeChunk%ropeChunk)/nodeTile*nodeTile, ropeNodes*last)
		s0 := c - c%ropeSpan
		sp0 := s0 % blockLen / ropeSpan
		for i := range (segEnd - s0 + ropeSpan - 1) / ropeSpan {
			spanWeights(sc.w[i*nq*2*pe:], p.z, blk.spans[(sp0+i)*2*pe:(sp0+i+1)*2*pe], pe, nq)
		}
		fc := (max(c, t0) + ropeChunk - 1) / ropeChunk * ropeChunk // the whole chunks [fc, lc)
		lc := segEnd / ropeChunk * ropeChunk
		if lc > fc {
			for g := range whole {
				var out [4][]float32
				for q := range out {
					out[q] = dst[4*g+q][fc-t0 : lc-t0]
				}
				meanRun(&out, sc.w[((fc-s0)/ropeSpan*nq+4*g)*2*pe:], nq*2*pe, 2*pe,
					sc.n[4*g*nodeStride+ropeNodes*(fc/ropeChunk%ropeChunk):], nodeStride,
					r.table, fc%ropeSpan/ropeChunk, (lc-fc)/ropeChunk)
			}
		}
		for ; c < segEnd; c += ropeChunk {
			lo, hi := max(c, t0), min(c+ropeChunk, end)
			j0 := 0 // the first query of the chunk not done
			if lo == c && hi == c+ropeChunk {
				j0 = 4 * whole
			}
			bt := &sc.batch[c%ropeSpan/ropeChunk]
			w := sc.w[(c-s0)/ropeSpan*nq*2*pe:]
			col := ropeNodes * (c / ropeChunk % ropeChunk)
			for j := j0; j < nq; j++ {
				k := bt.n
				bt.ew[k] = w[j*2*pe : (j+1)*2*pe]
				bt.nw[k] = sc.n[j*nodeStride+col : j*nodeStride+col+ropeNodes]
				bt.dst[k] = nil
				if lo == c && hi == c+ropeChunk {
					bt.out[k] = dst[j][c-t0 : c-t0+ropeChunk]
				} else {
					// a chunk the slice covers in part: its sums from
					// zero, then the slice's positions added
					bt.out[k] = bt.sums[k*ropeChunk : (k+1)*ropeChunk]
					clear(bt.out[k])
					bt.dst[k], bt.from[k] = dst[j][lo-t0:hi-t0], lo-c
				}
				if bt.n++; bt.n == 4 {
					bt.flush()
				}
			}
		}
		for i := range sc.batch {
			sc.batch[i].flush()
		}
	}
}

// nodeSums sets the node sums of p's queries (with their ⟨q, μ⟩ over the
// unrotated coordinates added) in the columns [from, to) of n (a row of
// nodeStride per query, groups of four), from block blk's node turns;
// from is a multiple of nodeTile. Columns past to may be set too.
func (p *meanPlan) nodeSums(n []float32, blk *ropeBlock, from, to int) {
	r := p.r
	ps := len(r.slow)
	if ps == 0 {
		for j := range p.nq {
			row := n[j*nodeStride+from : j*nodeStride+to]
			for i := range row {
				row[i] = p.base[j]
			}
		}
		return
	}
	for col := from; col < to; col += 2 * nodeTile {
		for g := range p.groups {
			m := n[4*g*nodeStride:]
			out := [4][]float32{m[col:], m[nodeStride+col:], m[2*nodeStride+col:], m[3*nodeStride+col:]}
			turnTiles4(&out, p.y[4*g*2*ps:4*(g+1)*2*ps], 2*ps, blk.nodes[col/nodeTile*2*ps*nodeTile:])
		}
	}
	if r.unrotated {
		for j := range p.nq {
			row := n[j*nodeStride+from : j*nodeStride+to]
			for i := range row {
				row[i] += p.base[j]
			}
		}
	}
}

// meanBatch gathers meanPlan.add's (query, chunk) slots whose chunks
// start at the same column of the table, four to a meanAdd4 call.
type meanBatch struct {
	n     int          // slots filled
	ew    [4][]float32 // per slot: the exact pairs' weights (erows)
	nw    [4][]float32 // per slot: the node sums (ropeNodes)
	out   [4][]float32 // per slot: where the kernel adds
	sums  []float32    // per slot: a partial chunk's sums (ropeChunk each)
	dst   [4][]float32 // per slot of a partial chunk: the positions it adds to
	from  [4]int       // and the first of them within the chunk
	zero  []float32    // the weights of an empty slot
	erows int          // rows of exact pairs
	table []float32    // the table from the batch's column on
}

// flush makes the kernel call for the slots filled (the rest get zero
// weights and sums of their own to add to) and empties the batch.
func (b *meanBatch) flush() {
	if b.n == 0 {
		return
	}
	for k := b.n; k < 4; k++ {
		b.ew[k], b.nw[k] = b.zero[:b.erows], b.zero[:ropeNodes]
		b.out[k], b.dst[k] = b.sums[k*ropeChunk:(k+1)*ropeChunk], nil
	}
	meanAdd4(&b.out, &b.ew, &b.nw, b.erows, b.table, ropeSpan)
	for k := range b.n {
		if d := b.dst[k]; d != nil {
			for i, v := range b.out[k][b.from[k] : b.from[k]+len(d)] {
				d[i] += v
			}
		}
	}
	b.n = 0
}

// grown returns s with length n, reusing its array when it can.
func grown[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// apart is grown for scratch that one goroutine writes while others
// write theirs: a new array has a cache line's worth of room (64
// elements, at least 64 bytes) on either side, so that no other
// allocation shares a cache line with it (false sharing).
func apart[T any](s []T, n int) []T {
	if cap(s) < n {
		const pad = 64
		return make([]T, n+2*pad)[pad : pad+n : pad+n]
	}
	return s[:n]
}

// meanAdd4Go is meanAdd4's pure-Go twin.
func meanAdd4Go(out, ew, nw *[4][]float32, erows int, table []float32, stride int) {
	for q := range 4 {
		o := out[q][:ropeChunk]
		for k, wk := range ew[q][:erows] {
			for j, t := range table[k*stride : k*stride+ropeChunk] {
				o[j] += wk * t
			}
		}
		for k, wk := range nw[q][:ropeNodes] {
			for j, t := range table[(erows+k)*stride : (erows+k)*stride+ropeChunk] {
				o[j] += wk * t
			}
		}
	}
}

// meanRunGo is meanRun's pure-Go twin.
func meanRunGo(out *[4][]float32, ew []float32, ewStep, erows int, nw []float32, nwStride int, table []float32, col0, chunks int) {
	meanRunEach(meanAdd4Go, out, ew, ewStep, erows, nw, nwStride, table, col0, chunks)
}

// meanRunEach is meanRun as one call of add (meanAdd4 or its pure-Go
// twin) per chunk.
func meanRunEach(add func(out, ew, nw *[4][]float32, erows int, table []float32, stride int), out *[4][]float32, ew []float32, ewStep, erows int, nw []float32, nwStride int, table []float32, col0, chunks int) {
	for i := range chunks {
		sp, col := (col0+i)/(ropeSpan/ropeChunk), (col0+i)%(ropeSpan/ropeChunk)
		var o, e, w [4][]float32
		for q := range 4 {
			o[q] = out[q][i*ropeChunk : (i+1)*ropeChunk]
			e[q] = ew[sp*ewStep+q*erows : sp*ewStep+(q+1)*erows]
			w[q] = nw[q*nwStride+i*ropeNodes : q*nwStride+(i+1)*ropeNodes]
		}
		add(&o, &e, &w, erows, table[col*ropeChunk:], ropeSpan)
	}
}

// spanWeightsGo is spanWeights' pure-Go twin. Its products are summed
// in float64: the two terms of each weight can cancel, and in float32
// without the kernel's fused multiply-adds the weights lost enough that
// a model's next-token logits moved by 0.18 between one slice and two
// (TestCompressedPromptChunks under -tags purego).
func spanWeightsGo(w, z, turns []float32, pe, nq int) {
	cs, sn := turns[:pe], turns[pe:2*pe]
	for j := range nq {
		zr, zi := z[j*2*pe:j*2*pe+pe], z[j*2*pe+pe:(j+1)*2*pe]
		u, v := w[j*2*pe:j*2*pe+pe], w[j*2*pe+pe:(j+1)*2*pe]
		for e := range pe {
			u[e] = float32(float64(zr[e])*float64(cs[e]) - float64(zi[e])*float64(sn[e]))
			v[e] = float32(-float64(zr[e])*float64(sn[e]) - float64(zi[e])*float64(cs[e]))
		}
	}
}

// turnTiles4Go is turnTiles4's pure-Go twin.
func turnTiles4Go(out *[4][]float32, w []float32, rows int, tiles []float32) {
	for q := range 4 {
		o := out[q][:2*nodeTile]
		clear(o)
		for k, wk := range w[q*rows : (q+1)*rows] {
			for t := range 2 {
				for j, v := range tiles[(t*rows+k)*nodeTile : (t*rows+k+1)*nodeTile] {
					o[t*nodeTile+j] += wk * v
				}
			}
		}
	}
}

// turnAdd4Go is turnAdd4's pure-Go twin.
func turnAdd4Go(out *[4][]float32, w []float32, rows int, table []float32, stride int, set bool) {
	for q := range 4 {
		o := out[q][:ropeChunk]
		if set {
			clear(o)
		}
		for k, wk := range w[q*rows : (q+1)*rows] {
			for j, t := range table[k*stride : k*stride+ropeChunk] {
				o[j] += wk * t
			}
		}
	}
}
