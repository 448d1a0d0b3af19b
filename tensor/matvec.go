package tensor

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
)

// Options configures MatVec and MatMul.
type Options struct {
	// Pool runs the rows on its goroutines; nil runs them all on the
	// caller.
	Pool *Pool
	// Scratch, if set, keeps the quantized activations from call to call,
	// so that a decode step allocates nothing; one Scratch must not serve
	// two calls at once.
	Scratch *Scratch
	// Prepare, if set, writes input vector v (x's row v) before the
	// product reads it: MatMul and MatMulShared call it once for each
	// vector, from the goroutines of the product's parallel region (for
	// different vectors at once), so that the per-row work ahead of a
	// product (a norm, a residual sum) needs no region of its own. Each
	// vector is an item of its own, taken by whichever goroutine is free,
	// so Prepare may be as much work as a row's attention.
	Prepare func(v int)
}

// Scratch holds MatMul's working buffers between calls (Options.Scratch).
// The zero value is ready to use.
type Scratch struct {
	acts    [numActKinds][]actSet
	groups  [numActKinds][]gemmActs  // the activations packed for the tiled kernel
	packs   [numActKinds][]multiPack // the activations packed for the multi-row kernels, per pass
	amx     amxScratch               // the AMX kernel's, where it serves
	workers []workerScratch          // per goroutine of the pool
	preps   []prepared
	vecs    vectors
	// matMulShared's (or amxMatMul's) call, read by its tasks, and the
	// tasks as func values made once for this Scratch (of, bind): a
	// product makes no closures
	call          matCall
	of            *Scratch
	vector, group func(i int)
	productVecs   func(task, worker int)
	one           [1]Product // MatMul's
}

// matCall is what a matMulShared call's tasks read, and an amxMatMul
// call's (which sets ps, preps, x, cols, n, prepare, tasks and the one
// activation form it needs, actQ8_0).
type matCall struct {
	ps               []Product
	preps            []prepared
	x                []float32
	cols, n          int
	prepare          func(v int)
	need, packed     [numActKinds]bool
	acts             [numActKinds][]*activation
	packs            [numActKinds][]multiPack
	passes           int
	tasks, totalRows int
}

// vectors is the per-vector work of a product (Options.Prepare, then
// the quantized forms its kernels read) done inside the product's
// parallel region: every task first takes vectors to prepare until none
// is left, then waits for those other goroutines are still preparing,
// and only then computes its rows. A second phase of items that need
// every vector (packing them together for a kernel) can follow the same
// way. A goroutine waits only once every item of a phase has been taken
// by a goroutine that is running it, so the region cannot stall, and the
// vectors cost no region (and no barrier) of their own.
type vectors struct {
	phases [2]phase
	count  int // phases in use
	// trace is the region's Pool's RegionTrace, nil where none is set:
	// ready then counts each goroutine's time in items and waiting.
	trace *RegionTrace
}

// phase is n items f(0) … f(n−1), dealt in T shares, one for each
// goroutine that may run it, at most one an item (share s is items
// [n·s/T, n·(s+1)/T)): goroutine w takes the items of share w mod T
// first, then those left in the others' shares, and waits for every
// share's items to be done. Each
// share counts its items taken and done on a cache line of its own, so
// that goroutines meet on one line only when they take over another's
// items: with one count of each for all the items, the goroutines of a
// 16-thread region took turns on its two lines for every item.
type phase struct {
	f      func(i int)
	shares []phaseShare
}

// phaseShare is one goroutine's share of a phase: items next … end−1
// are left to take, done of its size are done; 64 bytes.
type phaseShare struct {
	next, done atomic.Int32
	end, size  int32
	_          [48]byte
}

// start makes the n vectors ready to be taken by ready, f preparing one,
// for a region of tasks tasks on threads goroutines of pool; then, if not
// nil, runs over m items that need all of them. The items are counted in
// pool's RegionTrace only where the region runs on its goroutines (a
// product run on the caller alone is no region of the pool's).
func (p *vectors) start(pool *Pool, threads, tasks, n int, f func(v int), m int, then func(i int)) {
	g := min(threads, tasks) // the goroutines that may run the items
	p.trace = nil
	if g > 1 {
		p.trace = pool.regionTrace()
	}
	p.count = 1
	p.phases[0].set(min(g, n), n, f)
	if then != nil {
		p.count = 2
		p.phases[1].set(min(g, m), m, then)
	}
}

// set makes ph the n items f(0) … f(n−1) in t shares.
func (ph *phase) set(t, n int, f func(i int)) {
	ph.f = f
	t = max(t, 1)
	if cap(ph.shares) < t {
		ph.shares = make([]phaseShare, t)
	}
	ph.shares = ph.shares[:t]
	for w := range ph.shares {
		sh := &ph.shares[w]
		lo, hi := n*w/t, n*(w+1)/t
		sh.end, sh.size = int32(hi), int32(hi-lo)
		sh.next.Store(int32(lo))
		sh.done.Store(0)
	}
}

// ready does items of each phase until none is left to take, goroutine w
// starting with its own shares, and returns once all are done; with a
// RegionTrace, it counts w's time taking and doing items and waiting for
// the others' in w's account.
func (p *vectors) ready(w int) {
	if p.trace == nil {
		for i := range p.count {
			p.phases[i].take(w)
			p.phases[i].await(w)
		}
		return
	}
	acct := &p.trace.slots[w]
	for i := range p.count {
		t0 := time.Now()
		p.phases[i].take(w)
		t1 := time.Now()
		p.phases[i].await(w)
		acct.items += t1.Sub(t0)
		acct.wait += time.Since(t1)
	}
}

// take does items of ph until none is left to take, from share w on (a
// share's count read before it is written: once its items are taken,
// a look costs no write).
func (ph *phase) take(w int) {
	t := len(ph.shares)
	w %= t
	for k := range t {
		sh := &ph.shares[(w+k)%t]
		for sh.next.Load() < sh.end {
			i := sh.next.Add(1) - 1
			if i >= sh.end {
				break
			}
			ph.f(int(i))
			sh.done.Add(1)
		}
	}
}

// await waits until every share's items of ph are done, from share w on.
func (ph *phase) await(w int) {
	t := len(ph.shares)
	w %= t
	for k := range t {
		sh := &ph.shares[(w+k)%t]
		for i := 0; sh.done.Load() != sh.size; i++ {
			if i < 1000 {
				spinPause()
			} else {
				runtime.Gosched() // a goroutine doing an item may need this CPU
			}
		}
	}
}

// actSet is the activations of one kind kept for vectors of cols
// elements: a layer's products alternate between a few widths (the
// hidden size, the feed-forward size), each keeps its own.
type actSet struct {
	cols int
	acts []*activation
}

// workerScratch is one goroutine's scratch in a product: the tiled
// kernel's panel, and the results of a four-row kernel call (an array
// that would otherwise escape to the heap on every task).
type workerScratch struct {
	panel gemmPanel
	four  [4]float32
	_     [40]byte // to 128 bytes: no two goroutines write one cache line
}

// activations returns n activations of kind k for vectors of cols
// elements, reusing the buffers of earlier calls.
func (s *Scratch) activations(k actKind, cols, n int) []*activation {
	i := 0
	for i < len(s.acts[k]) && s.acts[k][i].cols != cols {
		i++
	}
	if i == len(s.acts[k]) {
		s.acts[k] = append(s.acts[k], actSet{cols: cols})
	}
	set := &s.acts[k][i]
	for len(set.acts) < n {
		set.acts = append(set.acts, newActivation(k, cols))
	}
	return set.acts[:n]
}

// minTaskBytes is the least weight data (times the number of vectors)
// worth a task of its own: a task costs a fraction of a microsecond to
// hand out, about what 16 KiB of weights take to stream.
const minTaskBytes = 16 << 10

// tasksPerThread splits the rows finer than one share per thread, so that
// a thread slowed by other work on the machine does not hold up the rest.
const tasksPerThread = 4

// rowKernel describes how MatVec runs one weight type: the activation form
// it needs and the dot product of one weight row with it.
type rowKernel struct {
	act actKind
	dot func(w []byte, a *activation) float32
	// rows4, where present, serves four consecutive rows (rowBytes
	// apart) against one activation in one call: decode.
	rows4 func(w []byte, rowBytes int, a *activation, out *[4]float32)
	// dot4, where present, serves four activations in one pass over the
	// row, for prefill.
	dot4 func(w []byte, a *[4]*activation, out *[4]float32)
	// multi, where present, serves rows rows against the (up to
	// multiRows) packed activations of p: a batched decode step's
	// (multirow.go), and for the K-quants every product (multirow_k.go,
	// useMulti).
	multi func(w []byte, rowBytes, rows int, p *multiPack, out []float32, stride int)
}

var rowKernels = map[DType]rowKernel{
	F32:   {act: actF32, dot: dotRowF32},
	F16:   {act: actF32, dot: dotRowF16, rows4: dotRowsF16R4},
	BF16:  {act: actF32, dot: dotRowBF16},
	Q4_0:  {act: actQ8_0, dot: dotRowQ4_0},
	Q4_1:  {act: actQ8_1, dot: dotRowQ4_1},
	Q5_0:  {act: actQ8_0, dot: dotRowQ5_0},
	Q5_1:  {act: actQ8_1, dot: dotRowQ5_1},
	Q8_0:  {act: actQ8_0, dot: dotRowQ8_0, dot4: dotRowQ8_0x4, rows4: dotRowsQ8_0x4, multi: dotQ8_0Rows},
	Q2_K:  {act: actQ8_K, dot: dotRowQ2_K},
	Q3_K:  {act: actQ8_K, dot: dotRowQ3_K},
	Q4_K:  {act: actQ8_K, dot: dotRowQ4_K, multi: dotQ4_KRows},
	Q5_K:  {act: actQ8_K, dot: dotRowQ5_K, multi: dotQ5_KRows},
	Q6_K:  {act: actQ8_K, dot: dotRowQ6_K, multi: dotQ6_KRows},
	Q8_K:  {act: actQ8_K, dot: dotRowQ8_K},
	TQ1_0: {act: actQ8_K, dot: dotRowTQ1_0},
	TQ2_0: {act: actQ8_K, dot: dotRowTQ2_0},
}

// CanMatVec reports whether MatVec and MatMul support weights of type t.
func CanMatVec(t DType) bool { _, ok := rowKernels[t]; return ok }

// QuantizesActivations reports whether MatVec and MatMul quantize their
// input to 8 bits for weights of type t (the quantized types, as
// llama.cpp does), rather than taking it as it is (F32, F16, BF16).
func QuantizesActivations(t DType) bool {
	k, ok := rowKernels[t]
	return ok && k.act != actF32
}

// MatVec computes out = W·x for a row-major weight matrix W of rows×cols
// elements of type t, stored as rows consecutive rows of t.RowBytes(cols)
// bytes each. For the quantized types x is first quantized to 8 bits per
// block (Q8_0-style per 32 elements for Q4_0…Q8_0, Q8_K-style per 256 for
// the K-quants) and each block's dot product is an exact integer sum, as
// in llama.cpp; the float types use x as it is.
func MatVec(out []float32, w []byte, t DType, rows, cols int, x []float32, opts Options) error {
	if len(out) != rows {
		return fmt.Errorf("tensor: MatVec %s: out has %d elements, want %d rows", t, len(out), rows)
	}
	return MatMul(out, w, t, rows, cols, x, 1, opts)
}

// MatMul computes n products at once: out[v*rows+r] = W[r]·x[v*cols:],
// for the n activation vectors held one after another in x. Each weight
// row is read once for all n vectors, which is what makes prefill faster
// than n calls to MatVec.
func MatMul(out []float32, w []byte, t DType, rows, cols int, x []float32, n int, opts Options) error {
	p := Product{Out: out, W: w, Type: t, Rows: rows}
	if opts.Scratch == nil {
		return matMulShared([]Product{p}, cols, x, n, opts, minTaskBytes)
	}
	ps := opts.Scratch.one[:]
	ps[0] = p
	err := matMulShared(ps, cols, x, n, opts, minTaskBytes)
	ps[0] = Product{}
	return err
}

// Product is one matrix of a MatMulShared call: Out (n·Rows values, as
// MatMul writes them) = W·x, W being Rows rows of the shared column count
// in Type.
type Product struct {
	Out  []float32
	W    []byte
	Type DType
	Rows int
}

// MatMulShared computes several products of the same input x (n vectors of
// cols elements), as MatMul would one by one, but quantizes x once per
// activation form and spreads all the matrices' rows over one set of
// goroutines: the Q, K and V projections of a layer, or its gate and up
// projections, cost one parallel region instead of three or two.
func MatMulShared(ps []Product, cols int, x []float32, n int, opts Options) error {
	return matMulShared(ps, cols, x, n, opts, minTaskBytes)
}

// prepared is one Product ready to run: its kernel, row size, activations
// (packed in groups for the tiled kernel, or in passes for the multi-row
// kernel, where one serves) and first row in the numbering of all the
// call's rows.
type prepared struct {
	k       rowKernel
	rowByte int
	acts    []*activation
	groups  []gemmActs
	packs   []multiPack
	start   int
}

// useMulti reports whether a product with kernel k over n vectors takes
// the multi-row kernel: a batched decode step's few vectors; and for the
// K-quants any number: one (their multi-row kernels unpack a block's
// scales in a few vector instructions, where the one-row dots prepare
// them in Go: Q6_K's costs 7 times the kernel's at 1024 columns), and
// as many as prefill has (a task's rows, read again for each pass of 16
// vectors, stay in its core's cache; the tiled kernel took twice as long
// per row and vector at 49 to 64 vectors).
func useMulti(k rowKernel, n int) bool {
	if k.act == actQ8_K {
		return hasMultiRowK && k.multi != nil && n >= 1
	}
	return hasMultiRow && k.multi != nil && n >= 2 && n <= multiMax
}

// gemmMinVectors is the fewest activation vectors for which MatMul uses
// the tiled kernel: repacking a panel costs about what a few groups of
// four vectors take to multiply.
const gemmMinVectors = 16

// matMulShared is MatMulShared with the per-task minimum of weight
// bytes as a parameter, so tests can spread small matrices over several
// goroutines.
func matMulShared(ps []Product, cols int, x []float32, n int, opts Options, minBytes int) error {
	if cols < 0 || n < 0 {
		return fmt.Errorf("tensor: MatMul: negative shape: %d columns, n=%d", cols, n)
	}
	scr := opts.Scratch
	if scr == nil {
		scr = &Scratch{}
	}
	preps := scr.preps[:0]
	totalRows, totalBytes := 0, 0
	for _, p := range ps {
		t, rows := p.Type, p.Rows
		k, ok := rowKernels[t]
		if !ok {
			return fmt.Errorf("tensor: MatMul: no kernel for %s", t)
		}
		if rows < 0 {
			return fmt.Errorf("tensor: MatMul %s: negative row count %d", t, rows)
		}
		rowBytes, err := t.RowBytes(int64(cols))
		if err != nil {
			return err
		}
		if int64(len(p.W)) != rowBytes*int64(rows) {
			return fmt.Errorf("tensor: MatMul %s: %dx%d weights need %d bytes, have %d", t, rows, cols, rowBytes*int64(rows), len(p.W))
		}
		if len(p.Out) != n*rows {
			return fmt.Errorf("tensor: MatMul %s: out has %d elements, want %d×%d", t, len(p.Out), n, rows)
		}
		preps = append(preps, prepared{k: k, rowByte: int(rowBytes), start: totalRows})
		totalRows += rows
		totalBytes += len(p.W)
	}
	scr.preps = preps
	if len(x) != n*cols {
		return fmt.Errorf("tensor: MatMul: x has %d elements, want %d×%d", len(x), n, cols)
	}
	if totalRows == 0 || n == 0 {
		return nil
	}
	if cols == 0 { // empty rows: every product is 0 (and the kernels want a block)
		for _, p := range ps {
			clear(p.Out)
		}
		return nil
	}
	if amxServes(ps, cols, n) {
		scr.amxMatMul(ps, preps, cols, x, n, opts)
		return nil
	}
	// The activation forms the products read, quantized once per vector
	// for all of them; packed by groups of vectors for the tiled kernel
	// where a product takes it, and in passes for the multi-row kernels
	// (one set of passes per activation kind: Q8_0's, Q8_K's).
	tiled := hasGEMM && n >= gemmMinVectors
	var need, packed, multi [numActKinds]bool
	ng := (n + gemmCols - 1) / gemmCols
	passes := multiPasses(n)
	for i, p := range ps {
		k := preps[i].k.act
		need[k] = true
		switch {
		case useMulti(preps[i].k, n):
			multi[k] = true
			if len(scr.packs[k]) < passes {
				scr.packs[k] = append(scr.packs[k], make([]multiPack, passes-len(scr.packs[k]))...)
			}
		case tiled && canGEMM(p.Type, cols) && !packed[k]:
			packed[k] = true
			scr.groups[k] = growGroups(scr.groups[k], ng)
		}
	}
	var acts [numActKinds][]*activation
	for i := range preps {
		k := preps[i].k.act
		if acts[k] == nil {
			acts[k] = scr.activations(k, cols, n)
		}
		preps[i].acts = acts[k]
		switch {
		case useMulti(preps[i].k, n):
			preps[i].packs = scr.packs[k][:passes]
		case packed[k] && canGEMM(ps[i].Type, cols):
			preps[i].groups = scr.groups[k][:ng]
		}
	}
	var packs [numActKinds][]multiPack
	for k, ok := range multi {
		if !ok {
			continue
		}
		packs[k] = scr.packs[k][:passes]
		for j := range packs[k] {
			packs[k][j].reset(actKind(k), acts[k][passStart(j, passes, n):passStart(j+1, passes, n)], cols)
		}
	}
	threads := opts.Pool.Threads()
	if len(scr.workers) < threads {
		scr.workers = append(scr.workers, make([]workerScratch, threads-len(scr.workers))...)
	}
	tasks := min(totalRows, threads*tasksPerThread, max(1, totalBytes*n/minBytes))
	scr.bind()
	scr.call = matCall{ps: ps, preps: preps, x: x, cols: cols, n: n, prepare: opts.Prepare, need: need, packed: packed,
		acts: acts, packs: packs, passes: passes, tasks: tasks, totalRows: totalRows}
	defer func() { scr.call = matCall{} }()
	// The vectors are prepared inside the products' region, one item
	// each (a Prepare may be a row's attention), then packed by groups
	// where a product takes the tiled kernel (a group needs all its
	// vectors).
	var pack func(g int)
	if packed != [numActKinds]bool{} {
		pack = scr.group
	}
	scr.vecs.start(opts.Pool, threads, tasks, n, scr.vector, ng, pack)
	opts.Pool.RunDealt(tasks, scr.productVecs)
	return nil
}

// bind makes scr's tasks as func values, once for this Scratch (of).
func (scr *Scratch) bind() {
	if scr.of != scr {
		scr.of = scr
		scr.vector, scr.productVecs, scr.group = scr.vectorTask, scr.productVecsTask, scr.groupTask
	}
}

// vectorTask prepares vector v of the call: Options.Prepare, then its
// activation forms, and its place in the multi-row kernel's passes.
func (scr *Scratch) vectorTask(v int) {
	c := &scr.call
	if c.prepare != nil {
		c.prepare(v)
	}
	xv := c.x[v*c.cols : (v+1)*c.cols]
	for k, ok := range c.need {
		if !ok {
			continue
		}
		a := c.acts[k][v]
		a.set(actKind(k), xv)
		if c.packs[k] != nil {
			p := passOf(v, c.passes, c.n)
			c.packs[k][p].setVector(v-passStart(p, c.passes, c.n), a)
		}
	}
}

// productTask computes the rows of task of the call on goroutine w.
func (scr *Scratch) productTask(task, w int) {
	c := &scr.call
	rowRange(c.ps, c.preps, taskStart(task, c.tasks, c.totalRows), taskStart(task+1, c.tasks, c.totalRows), c.cols, &scr.workers[w])
}

// productVecsTask is productTask once the vectors are ready (taking some
// to prepare while any is left).
func (scr *Scratch) productVecsTask(task, w int) {
	scr.vecs.ready(w)
	scr.productTask(task, w)
}

// groupTask packs group g of the call's vectors (prepared already) for
// the tiled kernel.
func (scr *Scratch) groupTask(g int) {
	c := &scr.call
	v0, v1 := g*gemmCols, min(c.n, (g+1)*gemmCols)
	for k, ok := range c.packed {
		if ok {
			scr.groups[k][g].set(actKind(k), c.acts[k][v0:v1], c.cols)
		}
	}
}

// passOf returns the multi-row pass that holds vector v of n.
func passOf(v, passes, n int) int {
	p := v * passes / n
	for passStart(p+1, passes, n) <= v {
		p++
	}
	return p
}

// taskStart returns the first row of task t of tasks over rows rows: a
// multiple of sixteen, rows for t = tasks. Sixteen float32 outputs fill a
// cache line, so two tasks on two goroutines write one line only where a
// product's output does not start on one (cutting at multiples of four,
// a decode step's small products had up to four tasks writing each
// line); and where the products' row counts are multiples of four,
// every task's rows go four by four through the four-row kernels.
func taskStart(t, tasks, rows int) int {
	if t == tasks {
		return rows
	}
	return rows * t / tasks &^ 15
}

// growGroups returns gs with at least n groups, reusing their buffers.
func growGroups(gs []gemmActs, n int) []gemmActs {
	if len(gs) < n {
		gs = append(gs, make([]gemmActs, n-len(gs))...)
	}
	return gs
}

// rowRange computes the rows [r0, r1) of all products, numbered one
// product after another; a product on the tiled kernel computes the
// panels that start in the range, ws being the goroutine's scratch.
func rowRange(ps []Product, preps []prepared, r0, r1, cols int, ws *workerScratch) {
	four := &ws.four
	for i := range ps {
		pp := &preps[i]
		lo, hi := max(r0, pp.start), min(r1, pp.start+ps[i].Rows)
		rows := ps[i].Rows
		if pp.packs != nil {
			if lo < hi {
				l0, l1 := lo-pp.start, hi-pp.start
				w := ps[i].W[l0*pp.rowByte : l1*pp.rowByte]
				for j := range pp.packs {
					v0 := passStart(j, len(pp.packs), len(pp.acts))
					pp.k.multi(w, pp.rowByte, l1-l0, &pp.packs[j], ps[i].Out[v0*rows+l0:], rows)
				}
			}
			continue
		}
		if pp.groups != nil {
			// panels start at local rows that are multiples of gemmRows
			first := (lo - pp.start + gemmRows - 1) / gemmRows * gemmRows
			if first < hi-pp.start {
				gemmProduct(&ps[i], pp.rowByte, cols, len(pp.acts), pp.groups, &ws.panel, first, hi-pp.start)
			}
			continue
		}
		r := lo
		if pp.k.rows4 != nil && len(pp.acts) == 1 {
			for ; r+4 <= hi; r += 4 {
				lr := r - pp.start
				pp.k.rows4(ps[i].W[lr*pp.rowByte:(lr+4)*pp.rowByte], pp.rowByte, pp.acts[0], four)
				copy(ps[i].Out[lr:lr+4], four[:])
			}
		}
		for ; r < hi; r++ {
			lr := r - pp.start
			row := ps[i].W[lr*pp.rowByte : (lr+1)*pp.rowByte]
			v := 0
			if pp.k.dot4 != nil {
				for ; v+4 <= len(pp.acts); v += 4 {
					pp.k.dot4(row, (*[4]*activation)(pp.acts[v:v+4]), four)
					for k, f := range four {
						ps[i].Out[(v+k)*rows+lr] = f
					}
				}
			}
			for ; v < len(pp.acts); v++ {
				ps[i].Out[v*rows+lr] = pp.k.dot(row, pp.acts[v])
			}
		}
	}
}
