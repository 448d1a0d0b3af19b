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
// Q6_K's scales change every 16 elements, so its products (a call whose
// products are all Q6_K) take one integer sum per 16-element sub-block:
// the same kernel under a tile shape of 16-byte A rows and 4-row B tiles
// (amxConfigK16), tile A the panel's quants less 32 (signed bytes,
// unpacked once per panel for its 16 vectors), dw = d·scale of the
// sub-block, and the activations quantized by llama.cpp's Q8_K rule (one
// scale per 256 elements, the one-vector kernels' form), whose dx the
// operand repeats for each sub-block:
//
//	out[m][t] = Σ_j d[m]·scale[j][m]·dx[j/16][t]·Σ_k (q[m][16j+k]−32)·x[t][16j+k]
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
	// k is the elements of a block: amxBlock, or 16 for Q6_K's
	// sub-blocks (whose B tiles take the first 4 of a block's 8 rows).
	k int
}

// size makes room for n vectors of cols elements in blocks of k.
func (g *amxActs) size(n, cols, k int) {
	g.groups, g.blocks, g.k = (n+amxCols-1)/amxCols, cols/k, k
	g.xb = growI8(g.xb, g.groups*g.blocks*amxBStep)
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
	xb := g.xb[i*amxBStep : (i+1)*amxBStep]
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
// b are the k bytes (32, or 16 for Q6_K) at a[m·stride + b·step], signed
// or not; mw is nil for a type without mins.
type amxOperand struct {
	a               []byte
	stride, step, k int
	signed          bool
	dw, mw          []float32
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
// products ps (amxServes said yes): Q8_K in 16-element sub-blocks for
// Q6_K, else Q8_0 in 32-element blocks.
func amxForm(ps []Product) (actKind, int) {
	if ps[0].Type == Q6_K {
		return actQ8_K, 16
	}
	return actQ8_0, amxBlock
}

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
	kind actKind // the call's activation form (amxForm)
}

// amxJob is one panel of a call: product p's rows from r0.
type amxJob struct{ p, r0 int }

// amxMatMul is matMulShared on the AMX kernel (amxServes said yes;
// the shapes are checked, preps holds the row sizes).
func (s *Scratch) amxMatMul(ps []Product, preps []prepared, cols int, x []float32, n int, opts Options) {
	threads := opts.Pool.Threads()
	a := &s.amx
	kind, k := amxForm(ps)
	a.kind = kind
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
	per := amxPackBlocks * amxBlock / k
	s.vecs.start(opts.Pool, threads, tasks, n, s.vector, (g.groups*g.blocks+per-1)/per, a.pck)
	s.call = matCall{ps: ps, preps: preps, x: x, cols: cols, n: n, prepare: opts.Prepare, tasks: tasks}
	s.call.need[kind], s.call.acts[kind] = true, acts
	opts.Pool.RunDealt(tasks, a.task)
	s.call = matCall{}
}

// amxPack packs item i of the AMX call's tile operand: amxPackBlocks
// blocks of 32 elements (twice as many of 16) from the item's first,
// counting the blocks of each group after the last group's (block k is
// block k%blocks of group k/blocks).
func (s *Scratch) amxPack(i int) {
	c, g := &s.call, &s.amx.acts
	acts := c.acts[s.amx.kind]
	per := amxPackBlocks * amxBlock / g.k
	for k := i * per; k < min((i+1)*per, g.groups*g.blocks); k++ {
		gi := k / g.blocks
		g.packBlock(gi, k%g.blocks, acts[gi*amxCols:min(c.n, (gi+1)*amxCols)])
	}
}

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
	if p.Type == Q6_K {
		blocks = cols / 16
	}
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
		return amxOperand{a: w[2:], stride: rowBytes, step: q8_0Bytes, k: amxBlock, signed: true, dw: pan.dw}
	case Q6_K:
		pan.q = grown(pan.q, amxRows*cols)
		if rows < amxRows {
			clear(pan.q)
		}
		for m := range rows {
			unpackQ6_K(pan, m, w[m*rowBytes:(m+1)*rowBytes], cols)
		}
		return amxOperand{a: pan.q, stride: cols, step: 16, k: 16, signed: true, dw: pan.dw}
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
		return amxOperand{a: pan.q, stride: cols, step: amxBlock, k: amxBlock, dw: pan.dw, mw: pan.mw}
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

// unpackQ6_K writes row m of a Q6_K panel: its quants less 32, one
// signed byte each in element order, and d·scale per 16-element
// sub-block.
func unpackQ6_K(pan *amxPanel, m int, row []byte, cols int) {
	q := pan.q[m*cols : (m+1)*cols]
	unpackQ6_KQuants(q, row, cols/QK_K)
	for b := range cols / QK_K {
		blk := row[b*q6_KBytes : (b+1)*q6_KBytes]
		d := f16Scale(blk[208:])
		for j := range QK_K / 16 {
			pan.dw[(b*16+j)*amxRows+m] = d * float32(int8(blk[192+j]))
		}
	}
}

// unpackQ6_KQuantsGo is unpackQ6_KQuants' pure-Go twin: the quants of
// blocks Q6_K blocks of src, less 32, to q in element order (llama.cpp's
// layout: per 128 elements, 64 bytes of low nibbles and 32 of high bit
// pairs).
func unpackQ6_KQuantsGo(q []byte, src []byte, blocks int) {
	for b := range blocks {
		blk := src[b*q6_KBytes:]
		out := q[b*QK_K:]
		for h := range 2 {
			ql, qh, o := blk[64*h:], blk[128+32*h:], out[128*h:]
			for l := range 32 {
				o[l] = byte(int8(ql[l]&0xf|(qh[l]&3)<<4) - 32)
				o[l+32] = byte(int8(ql[l+32]&0xf|(qh[l]>>2&3)<<4) - 32)
				o[l+64] = byte(int8(ql[l]>>4|(qh[l]>>4&3)<<4) - 32)
				o[l+96] = byte(int8(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32)
			}
		}
	}
}

// amxDotGo is the kernel's pure-Go twin, in its order of operations:
// pan.out[g][m][t] for every group g of acts against op, per block the
// integer sum converted, times dx, times dw added (then mw·xs).
func amxDotGo(op *amxOperand, g *amxActs, pan *amxPanel) {
	for gi := range g.groups {
		var acc [amxRows][amxCols]float32
		for b := range g.blocks {
			i := gi*g.blocks + b
			xb := g.xb[i*amxBStep : (i+1)*amxBStep]
			dx, xs := g.dx[i*amxCols:], g.xs[i*amxCols:]
			for m := range amxRows {
				w := op.a[m*op.stride+b*op.step:][:op.k]
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
