package tensor

// The AMX product for prefill: Intel's Advanced Matrix Extensions multiply
// tiles of bytes (up to 16 rows of 64) in one instruction. A panel of 16
// weight rows meets a group of 16 activation vectors one 32-element block
// at a time: tile A holds the panel's 16 rows of the block's 32 quants
// (read in place from Q8_0 rows, or from the panel unpacked to bytes for
// Q4_K), tile B the block's quants of the 16 vectors in the layout the
// instruction reads (four consecutive elements of one vector per 32-bit
// word: 8 rows of 16 words), and the 16×16 integer sums C are stored and
// scaled into float accumulators by the weight's and the activation's
// block scales. Both change every 32 elements, which is why one integer
// sum covers 32 elements, not the 64 one instruction could. Q4_K's
// sub-block mins add a second term per block:
//
//	out[m][t] = Σ_b dw[b][m]·dx[b][t]·Σ_k A[m][32b+k]·x[t][32b+k]
//	          + Σ_b mw[b][m]·xs[b][t],    xs[b][t] = −dx[b][t]·Σ_k x[t][32b+k],
//
// A signed (Q8_0 quants) or unsigned (Q4_K's 4-bit quants, with
// mw = dmin·min of the sub-block and dw = d·scale). The activations are
// quantized by the Q8_0 rule (8 bits per 32 elements) for both types.
//
// Q6_K's scales change every 16 elements, too often for one integer sum
// per block, so its products (a call whose products are all Q6_K) take
// the sub-block scales into the weights: w = (q−32)·scale, 13 bits,
// split into two signed bytes w = 64·hi + lo (hi in [−64, 64], lo in
// [0, 63]), unpacked once per panel for its 16 vectors. Tiles of hi and
// of lo meet the same activation tile (llama.cpp's Q8_K quants: one scale
// per 256 elements) 64 elements at a time, and the two integer sums of a
// whole super-block are each row's exact Σ scale·(q−32)·xq, as the
// one-vector kernels and llama.cpp compute it, scaled once per
// super-block (amxDotQ6K):
//
//	out[m][t] = Σ_s d[s][m]·dx[s][t]·(64·Σ_k hi[m][256s+k]·x[t][256s+k] + Σ_k lo[m][256s+k]·x[t][256s+k])
const (
	amxRows  = 16                 // weight rows per panel: tile A's and C's rows
	amxCols  = 16                 // vectors per group: tile B's and C's 32-bit columns
	amxBlock = 32                 // elements per integer sum
	amxBStep = amxBlock * amxCols // bytes of tile B per block
)

// amxActs is the activations of one call in tile B's layout: per group
// of amxCols vectors and per block, 8 rows of amxCols 4-byte words (xb),
// then the vectors' block scales dx and min terms xs.
type amxActs struct {
	xb             []int8
	dx, xs         []float32
	groups, blocks int
	// k is the elements of a block: amxBlock, or amxQ6Chunk for Q6_K
	// (B tiles of 16 rows).
	k int
}

// size makes room for n vectors of cols elements in blocks of k.
func (g *amxActs) size(n, cols, k int) {
	g.groups, g.blocks, g.k = (n+amxCols-1)/amxCols, cols/k, k
	g.xb = growI8(g.xb, g.groups*g.blocks*k*amxCols)
	g.dx = growF(g.dx, g.groups*g.blocks*amxCols)
	g.xs = growF(g.xs, g.groups*g.blocks*amxCols)
}

// pack writes group gi from acts (at most amxCols Q8_0 activations;
// missing vectors are zero).
func (g *amxActs) pack(gi int, acts []*activation) {
	for b := range g.blocks {
		g.packBlock(gi, b, acts)
	}
}

// packBlock writes block b of group gi from acts (as pack).
func (g *amxActs) packBlock(gi, b int, acts []*activation) {
	i := gi*g.blocks + b
	xb := g.xb[i*g.k*amxCols : (i+1)*g.k*amxCols]
	dx := g.dx[i*amxCols : (i+1)*amxCols]
	xs := g.xs[i*amxCols : (i+1)*amxCols]
	for t := range amxCols {
		if t >= len(acts) {
			for k4 := range g.k / 4 {
				clear(xb[k4*4*amxCols+4*t : k4*4*amxCols+4*t+4])
			}
			dx[t], xs[t] = 0, 0
			continue
		}
		a := acts[t]
		q := a.qs[b*g.k : (b+1)*g.k]
		var sum int32
		for k4 := range g.k / 4 {
			// four quants as one word: a call of copy each was the
			// packing's main cost
			w := (*[4]int8)(xb[k4*4*amxCols+4*t:])
			w[0], w[1], w[2], w[3] = q[4*k4], q[4*k4+1], q[4*k4+2], q[4*k4+3]
			sum += int32(w[0]) + int32(w[1]) + int32(w[2]) + int32(w[3])
		}
		dx[t] = a.d[b*g.k/(len(a.qs)/len(a.d))] // Q8_0's block, or Q8_K's that holds the sub-block
		xs[t] = -dx[t] * float32(sum)
	}
}

// amxPanel is one goroutine's working space for a weight panel: the tile
// A operand where it is not read in place, the block scales and mins
// dw, mw ([block][amxRows]), the results ([group][amxRows][amxCols]) and
// the kernel's two stored C tiles.
type amxPanel struct {
	q      []byte
	dw, mw []float32
	out    []float32
	tmp    []int32
}

// amxOperand is a panel as the kernel reads it: row m's quants of block
// b are the 32 bytes at a[m·stride + b·step], signed or not; mw is nil
// for a type without mins. For Q6_K (hilo) a holds per super-block and
// 64-element chunk c a tile of the rows' hi bytes and one of their lo
// bytes (amxQ6Tile), and dw the rows' d per super-block.
type amxOperand struct {
	a            []byte
	stride, step int
	signed, hilo bool
	dw, mw       []float32
}

// amxServes reports whether the AMX kernel runs a MatMulShared call: the
// CPU has it, there are enough vectors to fill tiles, and every product
// is of a type it serves over whole pairs of blocks (the kernel takes two
// blocks per step): Q8_0 and Q4_K, or Q6_K alone (its activations are of
// another form).
func amxServes(ps []Product, cols, n int) bool {
	return hasAMX && amxTakes(ps, cols, n)
}

// amxTakes is amxServes on any CPU: whether the call's shapes and types
// suit the AMX product.
func amxTakes(ps []Product, cols, n int) bool {
	if n < gemmMinVectors || cols <= 0 || cols%(2*amxBlock) != 0 || len(ps) == 0 {
		return false
	}
	q6 := ps[0].Type == Q6_K
	for _, p := range ps {
		switch {
		case q6 && (p.Type != Q6_K || cols%QK_K != 0):
			return false
		case !q6 && p.Type != Q8_0 && p.Type != Q4_K:
			return false
		}
	}
	return true
}

// amxForm returns the activation form and block size of an AMX call of
// products ps (amxServes said yes): Q8_K in 64-element chunks for Q6_K,
// else Q8_0 in 32-element blocks.
func amxForm(ps []Product) (actKind, int) {
	if ps[0].Type == Q6_K {
		return actQ8_K, amxQ6Chunk
	}
	return actQ8_0, amxBlock
}

// The Q6_K panel's layout (amxOperand, hilo): a tile is its 16 rows of
// one 64-element chunk, amxQ6Tile bytes; per chunk c the hi tile at
// 2·amxQ6Tile·c and the lo tile after it; amxQ6Super bytes a super-block.
const (
	amxQ6Chunk = 64                                  // elements of a tile row
	amxQ6Tile  = amxRows * amxQ6Chunk                // bytes of a tile
	amxQ6Super = 2 * amxQ6Tile * (QK_K / amxQ6Chunk) // bytes of a super-block's tiles
)

// amxScratch is Scratch's part for the AMX product.
type amxScratch struct {
	acts    amxActs
	workers []*amxPanel
	panels  []amxJob
	// amxMatMul's packing and panel tasks as func values made once for
	// this Scratch (of), as bind makes Scratch's: a 16-row decode step's
	// 31 products make no closures (three each before). They read
	// Scratch's call; its vectors are prepared by Scratch's vectorTask.
	of   *Scratch
	pck  func(i int)
	task func(task, worker int)
}

// amxJob is one panel of a call: product p's rows from r0.
type amxJob struct{ p, r0 int }

// amxMatMul is matMulShared on the AMX kernel (amxServes said yes;
// the shapes are checked, preps holds the row sizes).
func (s *Scratch) amxMatMul(ps []Product, preps []prepared, cols int, x []float32, n int, opts Options) {
	threads := opts.Pool.Threads()
	a := &s.amx
	kind, k := amxForm(ps)
	acts := s.activations(kind, cols, n)
	g := &a.acts
	g.size(n, cols, k)
	s.bind()
	if a.of != s {
		a.of = s
		a.pck, a.task = s.amxPack, s.amxTask
	}
	jobs := a.panels[:0]
	for i, p := range ps {
		for r0 := 0; r0 < p.Rows; r0 += amxRows {
			jobs = append(jobs, amxJob{i, r0})
		}
	}
	a.panels = jobs
	for len(a.workers) < threads {
		a.workers = append(a.workers, &amxPanel{})
	}
	tasks := min(len(jobs), threads*tasksPerThread)
	// Inside the panels' region (vectors): each vector prepared and
	// quantized (vectorTask, the one form the call needs), then the
	// group's tile operand packed block by block (amxPack: a block's 16
	// vectors are whole cache lines, written by one goroutine).
	per := g.itemBlocks()
	s.vecs.start(opts.Pool, threads, tasks, n, s.vector, (g.groups*g.blocks+per-1)/per, a.pck)
	s.call = matCall{ps: ps, preps: preps, x: x, cols: cols, n: n, prepare: opts.Prepare, tasks: tasks}
	s.call.need[kind], s.call.acts[kind] = true, acts
	opts.Pool.RunDealt(tasks, a.task)
	s.call = matCall{}
}

// amxPack packs item i of the AMX call's tile operand: amxPackBlocks
// blocks of 32 elements (half as many of 64) from the item's first,
// counting the blocks of each group after the last group's (block k is
// block k%blocks of group k/blocks).
func (s *Scratch) amxPack(i int) {
	c, g := &s.call, &s.amx.acts
	kind, _ := amxForm(c.ps)
	acts := c.acts[kind]
	per := g.itemBlocks()
	for k := i * per; k < min((i+1)*per, g.groups*g.blocks); k++ {
		gi := k / g.blocks
		g.packBlock(gi, k%g.blocks, acts[gi*amxCols:min(c.n, (gi+1)*amxCols)])
	}
}

// itemBlocks is the blocks one item of the packing phase packs:
// amxPackBlocks of 32 elements, or as many bytes of larger blocks.
func (g *amxActs) itemBlocks() int { return max(1, amxPackBlocks*amxBlock/g.k) }

// amxPackBlocks is the blocks of the tile operand one item of the AMX
// call's packing phase packs: a block (16 vectors' 32 quants) is less
// work than taking an item costs where 16 goroutines share the item
// counters; four give a 16-vector step's 512-column product 4 items and
// its 1280-column one 10.
const amxPackBlocks = 4

// amxTask computes task's share of the AMX call's panels on goroutine
// w, once the vectors are ready (taking some to prepare while any is
// left).
func (s *Scratch) amxTask(task, w int) {
	s.vecs.ready(w)
	c, jobs := &s.call, s.amx.panels
	pan := s.amx.workers[w]
	for _, j := range jobs[len(jobs)*task/c.tasks : len(jobs)*(task+1)/c.tasks] {
		pan.product(&c.ps[j.p], c.preps[j.p].rowByte, c.cols, j.r0, &s.amx.acts)
	}
}

// product computes rows [r0, r0+amxRows) of p (those that exist) for
// every vector of g.
func (pan *amxPanel) product(p *Product, rowBytes, cols, r0 int, g *amxActs) {
	rows := min(amxRows, p.Rows-r0)
	op := pan.operand(p, rowBytes, cols, r0, rows)
	pan.out = growF(pan.out, g.groups*amxRows*amxCols)
	amxDot(&op, g, pan)
	n := len(p.Out) / p.Rows
	for gi := range g.groups {
		res := (*[amxRows * amxCols]float32)(pan.out[gi*amxRows*amxCols:])
		for t := range min(amxCols, n-gi*amxCols) {
			out := p.Out[(gi*amxCols+t)*p.Rows+r0:][:rows]
			for m := range out {
				out[m] = res[m*amxCols+t]
			}
		}
	}
}

// operand prepares the panel of rows rows from r0 (rows beyond are zero).
func (pan *amxPanel) operand(p *Product, rowBytes, cols, r0, rows int) amxOperand {
	blocks := cols / amxBlock
	pan.dw = growF(pan.dw, blocks*amxRows)
	if rows < amxRows {
		clear(pan.dw)
	}
	w := p.W[r0*rowBytes : (r0+rows)*rowBytes]
	switch p.Type {
	case Q8_0:
		panelScalesQ8_0(pan.dw, w, rowBytes, rows, blocks)
		if rows < amxRows { // copy the rows: the tile reads 16
			pan.q = grown(pan.q, amxRows*rowBytes)
			clear(pan.q[copy(pan.q, w):])
			w = pan.q
		}
		return amxOperand{a: w[2:], stride: rowBytes, step: q8_0Bytes, signed: true, dw: pan.dw}
	case Q6_K:
		pan.q = grown(pan.q, 2*amxRows*cols)
		if rows < amxRows {
			clear(pan.q) // the missing rows' tiles (their results are not kept)
		}
		for m := range rows {
			row := w[m*rowBytes : (m+1)*rowBytes]
			ahead := row // the row a panel on, to prefetch; the row itself where there is none
			if a := (r0 + amxRows + m) * rowBytes; a+rowBytes <= len(p.W) {
				ahead = p.W[a : a+rowBytes]
			}
			unpackQ6_KHiLo(pan.q[m*amxQ6Chunk:], pan.dw[m:], row, ahead, cols/QK_K)
		}
		return amxOperand{a: pan.q, signed: true, hilo: true, dw: pan.dw}
	default: // Q4_K
		pan.mw = growF(pan.mw, blocks*amxRows)
		pan.q = grown(pan.q, amxRows*cols)
		if rows < amxRows {
			clear(pan.mw)
			clear(pan.q)
		}
		for m := range rows {
			unpackQ4_K(pan, m, w[m*rowBytes:(m+1)*rowBytes], cols)
		}
		return amxOperand{a: pan.q, stride: cols, step: amxBlock, dw: pan.dw, mw: pan.mw}
	}
}

// panelScalesQ8_0 writes the block scales of a Q8_0 panel's rows rows
// (rowBytes bytes each, from w) to dw, [block][amxRows] as the kernel
// reads them: the assembly gathers a block's scales of all 16 rows at
// once and converts them with F16C (the Go loop was 12% of a 16-row
// decode step's CPU on the 16-core Xeon).
func panelScalesQ8_0(dw []float32, w []byte, rowBytes, rows, blocks int) {
	if rows == amxRows && blocks > 0 && scalesGather(dw[:blocks*amxRows], w[:amxRows*rowBytes], rowBytes, blocks) {
		return
	}
	panelScalesQ8_0Go(dw, w, rowBytes, rows, blocks)
}

// panelScalesQ8_0Go is panelScalesQ8_0's pure-Go twin, for any row count.
func panelScalesQ8_0Go(dw []float32, w []byte, rowBytes, rows, blocks int) {
	for m := range rows {
		row := w[m*rowBytes:]
		for b := range blocks {
			dw[b*amxRows+m] = f16Scale(row[b*q8_0Bytes:])
		}
	}
}

// unpackQ4_K writes row m of a Q4_K panel: its quants one byte each in
// element order, d·scale and dmin·min per 32-element sub-block.
func unpackQ4_K(pan *amxPanel, m int, row []byte, cols int) {
	q := pan.q[m*cols : (m+1)*cols]
	for b := range cols / QK_K {
		blk := row[b*q4_KBytes : (b+1)*q4_KBytes]
		d, dmin := f16Scale(blk[0:]), f16Scale(blk[2:])
		scales := (*[12]byte)(blk[4:16])
		for j := range QK_K / amxBlock {
			sc, mn := scaleMinK4(j, scales)
			pan.dw[(b*8+j)*amxRows+m] = d * float32(sc)
			pan.mw[(b*8+j)*amxRows+m] = dmin * float32(mn)
		}
		for c := range 4 {
			splitNibbles(q[b*QK_K+64*c:b*QK_K+64*c+64], blk[16+32*c:48+32*c])
		}
	}
}

// unpackQ6_KHiLoGo is unpackQ6_KHiLo's pure-Go twin: row m of a Q6_K
// panel from the supers super-blocks of row, q and dw from the row's
// place (q = panel[64m:], dw = dw[m:]): per super-block and 64-element
// chunk c, w = (q−32)·scale of each element split into hi = w>>6 and
// lo = w&63, the row's 64 bytes of chunk c's hi and lo tiles; d at
// dw[16s].
func unpackQ6_KHiLoGo(q []byte, dw []float32, row []byte, supers int) {
	var qs [QK_K]byte
	for s := range supers {
		blk := row[s*q6_KBytes:]
		dw[s*amxRows] = f16Scale(blk[208:])
		for n := range 2 {
			q6_KHalf(qs[128*n:128*n+64], qs[128*n+64:128*(n+1)], blk, n)
		}
		tiles := q[s*amxQ6Super:]
		for e, v := range qs {
			w := (int32(v) - 32) * int32(int8(blk[192+e/16]))
			hi := 2*amxQ6Tile*(e/amxQ6Chunk) + e%amxQ6Chunk
			tiles[hi] = byte(int8(w >> 6))
			tiles[hi+amxQ6Tile] = byte(w & 63)
		}
	}
}

// amxDotQ6KGo is the Q6_K kernel's pure-Go twin, in its order of
// operations: per super-block the two integer sums combined, converted,
// times dx, times d added.
func amxDotQ6KGo(op *amxOperand, g *amxActs, pan *amxPanel) {
	supers := g.blocks * g.k / QK_K
	for gi := range g.groups {
		var acc [amxRows][amxCols]float32
		for s := range supers {
			tiles := op.a[s*amxQ6Super:]
			for m := range amxRows {
				for t := range amxCols {
					var hi, lo int32
					for c := range QK_K / amxQ6Chunk {
						i := gi*g.blocks + s*4 + c
						xb := g.xb[i*amxQ6Chunk*amxCols:]
						tile := tiles[2*amxQ6Tile*c+amxQ6Chunk*m:]
						for e := range amxQ6Chunk {
							x := int32(xb[e/4*4*amxCols+4*t+e%4])
							hi += int32(int8(tile[e])) * x
							lo += int32(int8(tile[amxQ6Tile+e])) * x
						}
					}
					dx := g.dx[(gi*g.blocks+s*4)*amxCols+t]
					acc[m][t] += float32(64*hi+lo) * dx * op.dw[s*amxRows+m]
				}
			}
		}
		for m := range amxRows {
			copy(pan.out[(gi*amxRows+m)*amxCols:], acc[m][:])
		}
	}
}

// amxDotTwin runs the pure-Go twin of op's kernel.
func amxDotTwin(op *amxOperand, g *amxActs, pan *amxPanel) {
	if op.hilo {
		amxDotQ6KGo(op, g, pan)
		return
	}
	amxDotGo(op, g, pan)
}

// amxDotGo is the kernel's pure-Go twin, in its order of operations:
// pan.out[g][m][t] for every group g of acts against op, per block the
// integer sum converted, times dx, times dw added (then mw·xs).
func amxDotGo(op *amxOperand, g *amxActs, pan *amxPanel) {
	for gi := range g.groups {
		var acc [amxRows][amxCols]float32
		for b := range g.blocks {
			i := gi*g.blocks + b
			xb := g.xb[i*amxBStep : (i+1)*amxBStep] // blocks of amxBlock
			dx, xs := g.dx[i*amxCols:], g.xs[i*amxCols:]
			for m := range amxRows {
				w := op.a[m*op.stride+b*op.step:][:amxBlock]
				dw := op.dw[b*amxRows+m]
				for t := range amxCols {
					var sum int32
					for e, v := range w {
						wv := int32(v)
						if op.signed {
							wv = int32(int8(v))
						}
						sum += wv * int32(xb[e/4*4*amxCols+4*t+e%4])
					}
					acc[m][t] += float32(sum) * dx[t] * dw
					if op.mw != nil {
						acc[m][t] += op.mw[b*amxRows+m] * xs[t]
					}
				}
			}
		}
		for m := range amxRows {
			copy(pan.out[(gi*amxRows+m)*amxCols:], acc[m][:])
		}
	}
}
