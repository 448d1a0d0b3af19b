package kvcache

import (
	"fmt"

	"github.com/turbomem/turbomem/quant"
)

// tokenEncoder is a store whose tokens can be encoded apart from being
// stored: encode may run for different tokens on several goroutines at
// once, each with its own encScratch, and putCodes then stores the codes
// in order. A prompt's chunk encodes the tokens that leave the window so
// (Compressed.AppendAttend). Stores without it (KIVI keys, rows kept in
// fp16 or float32) add their tokens on one goroutine.
type tokenEncoder interface {
	codeStore
	// codeBytes returns the bytes of one token's code (0: the store
	// cannot encode apart after all; a centred store over one that
	// cannot).
	codeBytes() int
	// encode writes to dst the codes of the tokens xs (a multiple of d
	// values), the first of them at position t of the store.
	encode(dst []byte, xs []float32, t int, sc *encScratch) error
}

// encScratch is one goroutine's working memory for tokenEncoder.encode.
type encScratch struct {
	q     quant.Scratch
	x, c  []float32  // the tokens in float32; centred keys
	m     []float64  // the mean turned to a position
	turns meanTurns  // the turned means of the store turnsOf
	of    *meanTurns // the centred store's turns that turns copies
}

// encoderOf returns s as a tokenEncoder, or nil where it cannot encode
// apart.
func encoderOf(s any) tokenEncoder {
	if e, ok := s.(tokenEncoder); ok && e.codeBytes() > 0 {
		return e
	}
	return nil
}

func (s *codeKeys) codeBytes() int   { return s.q.Bytes() }
func (s *groupKeys) codeBytes() int  { return s.q.Bytes() }
func (s *blockKeys) codeBytes() int  { return s.q.Bytes() }
func (s *codeValues) codeBytes() int { return s.q.Bytes() }
func (s *laneKeys) codeBytes() int   { return s.l.Quantizer().Bytes() }
func (s *laneValues) codeBytes() int { return s.l.Quantizer().Bytes() }

func (s *codeKeys) encode(dst []byte, xs []float32, _ int, sc *encScratch) error {
	return quant.EncodeBatchScratch(s.q, dst, xs, &sc.q)
}
func (s *groupKeys) encode(dst []byte, xs []float32, _ int, sc *encScratch) error {
	return quant.EncodeBatchScratch(s.q, dst, xs, &sc.q)
}
func (s *blockKeys) encode(dst []byte, xs []float32, _ int, sc *encScratch) error {
	return quant.EncodeBatchScratch(s.q, dst, xs, &sc.q)
}
func (s *codeValues) encode(dst []byte, xs []float32, _ int, sc *encScratch) error {
	return quant.EncodeBatchScratch(s.q, dst, xs, &sc.q)
}
func (s *laneKeys) encode(dst []byte, xs []float32, _ int, sc *encScratch) error {
	return quant.EncodeBatchScratch(s.l.Quantizer(), dst, xs, &sc.q)
}
func (s *laneValues) encode(dst []byte, xs []float32, _ int, sc *encScratch) error {
	return quant.EncodeBatchScratch(s.l.Quantizer(), dst, xs, &sc.q)
}

func (s *centeredKeys) codeBytes() int {
	if e := encoderOf(s.inner); e != nil {
		return e.codeBytes()
	}
	return 0
}

// encode centres each key on the mean turned to its position, as add
// does, with turns of sc's own (the same node vectors: they depend on
// the position's chunk alone), then encodes them with the inner store.
func (s *centeredKeys) encode(dst []byte, xs []float32, t int, sc *encScratch) error {
	d := len(s.mu)
	if sc.of != s.turns {
		sc.turns, sc.of = *newMeanTurns(s.turns.r, s.turns.mu), s.turns
		sc.m = make([]float64, d)
	}
	sc.c = grown(sc.c, len(xs))
	for i := 0; i < len(xs)/d; i++ {
		centerOn(&sc.turns, sc.m, sc.c[i*d:(i+1)*d], xs[i*d:(i+1)*d], t+i)
	}
	return encoderOf(s.inner).encode(dst, sc.c, t, sc)
}

// ChunkAttender is implemented by caches that append a prompt's chunk of
// tokens and attend its queries in one call, faster than token by token
// (Compressed). AppendAttend(out, q, k, v, n, scale) appends the n
// tokens' keys and values (k, v: n rows of KVHeads·HeadDim) and writes,
// for each token, the attention of its queries (q: n rows of
// QHeads·HeadDim) over the tokens up to and including it to its row of
// out: what Append and then Attend for each token in turn give, up to
// the order of the sums.
type ChunkAttender interface {
	AppendAttend(out, q, k, v []float32, n int, scale float32) error
}

// encodeRun is the number of tokens of a key or value stream that one
// task of AppendAttend's encoding region encodes.
const encodeRun = 16

// AppendAttend appends n tokens and attends their queries
// (ChunkAttender): the same tokens leave the window at the same points as
// with n Appends, and each query sees the compressed and fp16 tokens it
// would have seen after its own Append (the moved tokens' fp16 rows are
// kept until every query is done). The tokens that leave the window are
// encoded side by side on the pool (per KV head, keys and values, runs of
// encodeRun tokens each a task), and the queries attended together: one
// task per token and KV head where the chunk has enough of them to keep
// the pool busy, else each token in turn over the pool's slices. On an
// error the cache holds none of the chunk's tokens; the stores of a head
// calibrated on the chunk's first tokens (outliers, centred keys' mean)
// stay made, as after a failed Append. (Stores that cannot encode apart,
// KIVI keys and fp16 or float32 rows, add their tokens once every other
// code is made; their adds cannot fail on tokens checkRows passed, and
// one that did would leave the cache unusable.)
func (c *Compressed) AppendAttend(out, q, k, v []float32, n int, scale float32) error {
	d := c.shape.HeadDim
	w, qd := c.shape.KVHeads*d, c.shape.QHeads*d
	if n < 0 || len(k) < n*w || len(v) < n*w || len(q) < n*qd || len(out) < n*qd {
		return fmt.Errorf("kvcache: %s: append and attend %d tokens with %d keys, %d values, %d queries and %d outputs", c.spec, n, len(k), len(v), len(q), len(out))
	}
	if err := c.checkRows(k[:n*w], v[:n*w]); err != nil {
		return err
	}
	c.ahead.at = 0 // the chunk moves its tokens itself
	n0, nc0 := c.n, c.nc
	held := make([][2]int, len(c.heads))
	for i, h := range c.heads {
		held[i] = [2]int{len(h.wk), len(h.wv)}
		for t := range n {
			appendF16(&h.wk, k[t*w+i*d:t*w+(i+1)*d])
			appendF16(&h.wv, v[t*w+i*d:t*w+(i+1)*d])
		}
	}
	undo := func(err error) error {
		c.n, c.nc = n0, nc0
		for i, h := range c.heads {
			h.wk, h.wv = h.wk[:held[i][0]], h.wv[:held[i][1]]
		}
		return err
	}
	// The window's boundary after each token's Append, as Append moves
	// tokens: the first move calibrates the heads on the tokens then held.
	ncs := make([]int, n)
	for t := range n {
		c.n++
		for c.n-c.nc-c.step >= c.window {
			if !c.heads[0].ready() {
				if c.calib > 0 && c.n-c.nc < c.calib {
					break
				}
				for i, h := range c.heads {
					if err := c.prime(i, h, c.n-c.nc); err != nil {
						return undo(err)
					}
				}
			}
			c.nc += c.step
		}
		ncs[t] = c.nc
	}
	if err := c.encodeMoved(nc0, c.nc-nc0); err != nil {
		return undo(err)
	}
	for _, h := range c.heads {
		h.off += c.nc - nc0
	}
	c.attendChunk(out, q, n, n0, ncs, scale)
	for _, h := range c.heads {
		h.dropMoved(d)
	}
	return nil
}

// moveStream is one KV head's keys or values of the tokens a chunk moves
// out of the window: its encoder (nil: added whole on one goroutine), the
// codes or float32 rows made for it, and the first error.
type moveStream struct {
	enc   tokenEncoder
	codes []byte
	rows  []float32
	err   error
}

// encodeMoved moves the m tokens from nc0 on (the oldest in each head's
// window, at its offset) to the compressed stores: encoded on the pool
// first, stored only when every code is made.
func (c *Compressed) encodeMoved(nc0, m int) error {
	if m == 0 {
		return nil
	}
	d := c.shape.HeadDim
	streams := make([]moveStream, 2*len(c.heads))
	runs := (m + encodeRun - 1) / encodeRun
	var tasks []int // per task: its stream, and its run where the stream encodes apart
	for si := range streams {
		st := &streams[si]
		st.enc = encoderOf(c.heads[si/2].store(si))
		if st.enc == nil {
			st.rows = make([]float32, m*d)
			tasks = append(tasks, si*runs)
			continue
		}
		st.codes = make([]byte, m*st.enc.codeBytes())
		for r := range runs {
			tasks = append(tasks, si*runs+r)
		}
	}
	errs := make([]error, len(tasks))
	scratch := c.encodeOnPool(len(tasks), nil, func(ti int, sc *encScratch) {
		si, r := tasks[ti]/runs, tasks[ti]%runs
		st, h := &streams[si], c.heads[si/2]
		rows := h.stream(si)
		at := h.off // the buffer row of token nc0
		if st.enc == nil {
			toF32(st.rows, rows[at*d:(at+m)*d])
			return
		}
		t0, t1 := r*encodeRun, min(m, (r+1)*encodeRun)
		sc.x = grown(sc.x, (t1-t0)*d)
		toF32(sc.x, rows[(at+t0)*d:(at+t1)*d])
		b := st.enc.codeBytes()
		if err := st.enc.encode(st.codes[t0*b:t1*b], sc.x, nc0+t0, sc); err != nil {
			errs[ti] = c.moveError(si, nc0+t0, nc0+t1, err)
		}
	})
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	c.recodeMoved(streams, m, scratch)
	// The stores take their codes, appends alone: a tiered store's
	// re-codings are made (recodeMoved).
	for si := range streams {
		st, h := &streams[si], c.heads[si/2]
		var err error
		switch {
		case st.enc != nil:
			err = st.enc.putCodes(st.codes, m)
		case si%2 == 0:
			err = addSteps(h.keys.add, st.rows, c.step*d)
		default:
			err = addSteps(h.values.add, st.rows, c.step*d)
		}
		if err != nil {
			return c.moveError(si, nc0, nc0+m, err)
		}
	}
	return nil
}

// encodeOnPool runs n encoding tasks on the cache's pool (on the caller
// where there is one), task(i, sc) with the scratch of the goroutine
// that runs it, and returns scratch grown to the pool's goroutines, for
// a later region to use again.
func (c *Compressed) encodeOnPool(n int, scratch []encScratch, task func(i int, sc *encScratch)) []encScratch {
	pool := c.pool
	if n <= 1 {
		pool = nil
	}
	for len(scratch) < pool.Threads() {
		scratch = append(scratch, encScratch{})
	}
	pool.TryRun(n, func(i, wk int) { task(i, &scratch[wk]) })
	return scratch
}

// recodeMoved re-codes at the low rate, side by side on the pool in runs
// of encodeRun tokens, the tokens that the tiered streams' puts of m
// codes will re-code, from their high-rate codes (held, or the streams'
// new ones), and leaves them to the puts (tiers.pend): a prompt's chunk
// re-codes hundreds of tokens a stream, which one task a stream would
// run one after another. A run that fails leaves its stream's
// re-coding to the put, which reports the error. scratch is the
// encoding region's (encodeOnPool).
func (c *Compressed) recodeMoved(streams []moveStream, m int, scratch []encScratch) {
	type run struct{ si, p0, p1 int }
	var runs []run
	for si := range streams {
		t := c.heads[si/2].tier(si)
		if t == nil || streams[si].enc == nil {
			continue
		}
		p0, p1 := t.recodeChunk(m)
		if p1 <= p0 {
			continue
		}
		t.pend, t.pendAt = grown(t.pend, (p1-p0)*t.lq.Bytes()), p0
		for a := p0; a < p1; a += encodeRun {
			runs = append(runs, run{si, a, min(p1, a+encodeRun)})
		}
	}
	if len(runs) == 0 {
		return
	}
	failed := make([]bool, len(runs))
	c.encodeOnPool(len(runs), scratch, func(ri int, sc *encScratch) {
		r := runs[ri]
		t := c.heads[r.si/2].tier(r.si)
		lb := t.lq.Bytes()
		dst := t.pend[(r.p0-t.pendAt)*lb : (r.p1-t.pendAt)*lb]
		failed[ri] = t.preRecode(dst, r.p0, r.p1, streams[r.si].codes, sc) != nil
	})
	for ri, f := range failed {
		if f {
			c.heads[runs[ri].si/2].tier(runs[ri].si).pendAt = -1
		}
	}
}

// store returns the store of stream i (KV head i/2's keys for i even,
// its values for i odd).
func (h *head) store(i int) any {
	if i%2 == 1 {
		return h.values
	}
	return h.keys
}

// stream returns the window's fp16 rows of stream i (KV head i/2's keys
// for i even, its values for i odd).
func (h *head) stream(i int) []uint16 {
	if i%2 == 1 {
		return h.wv
	}
	return h.wk
}

// moveError is the error of moving tokens [t0, t1) of stream si (KV
// head si/2's keys or values) to its store.
func (c *Compressed) moveError(si, t0, t1 int, err error) error {
	return fmt.Errorf("kvcache: layer %d head %d: %s of tokens %d to %d: %w", c.layer, si/2, [2]string{"key", "value"}[si%2], t0, t1-1, err)
}

// addSteps adds rows to a store step values at a time (a KIVI key block
// per call).
func addSteps(add func([]float32) error, rows []float32, step int) error {
	for i := 0; i < len(rows); i += step {
		if err := add(rows[i : i+step]); err != nil {
			return err
		}
	}
	return nil
}

// attendChunk writes the attention of the chunk's n queries, token i at
// position n0+i seeing the compressed positions before ncs[i] and the
// window's rows after them, to the rows of out.
func (c *Compressed) attendChunk(out, q []float32, n, n0 int, ncs []int, scale float32) {
	d, g := c.shape.HeadDim, c.shape.Group()
	qd := c.shape.QHeads * d
	al := func(i int) int { // the compressed values' sum comes first
		if ncs[i] > 0 {
			return c.heads[0].values.accLen()
		}
		return 0
	}
	if len(c.preps) < len(c.heads) {
		c.preps = make([]queryPrep, len(c.heads))
	}
	if threads := c.pool.Threads(); threads > 1 && n*c.shape.KVHeads < 2*threads {
		// Too few (token, KV head) pairs to share the pool: each token
		// over the pool's slices.
		for i := range n {
			c.call = compressedStep{c: c, out: out[i*qd : (i+1)*qd], q: q[i*qd : (i+1)*qd], scale: scale, al: al(i), nc: ncs[i]}
			c.run(c.shape, n0+i+1, al(i)+d, &c.call, ncs[i] > 0)
		}
		c.call = compressedStep{}
		return
	}
	c.runRows(c.shape, n, func(i int) int { return al(i) + d }, func(i int) int { return n0 + i + 1 }, func(ws *workspace, i, hi, t0, t1 int, parts []Partial) {
		qi := q[i*qd : (i+1)*qd]
		if ncs[i] > 0 {
			ws.prep.setQueries(qi, hi, g, d)
			ws.prep.nc = ncs[i]
			prepareKeys(c.heads[hi].keys, &ws.prep)
		}
		c.span(ws, &ws.prep, qi, hi, t0, t1, ncs[i], al(i), parts, scale)
	}, func(ws *workspace, i, hi, j int, p *Partial) {
		o := out[i*qd+(hi*g+j)*d : i*qd+(hi*g+j+1)*d]
		c.finishOut(ws, hi, al(i), p, o)
	})
}

// aheadCodes holds the codes of the token due to leave a compressed
// cache's window at its next Append, made by the attention step before
// it: a decode step's encoding runs beside the step's slices on the
// pool's idle goroutines, instead of in a region of its own at the
// Append (compress takes the codes made; they are the ones it would
// make).
type aheadCodes struct {
	at    int            // the token whose codes are held, plus one (0: none)
	codes [][]byte       // per stream (KV head i's keys 2i, values 2i+1)
	errs  []error        // per stream: its encoding's error (then not used)
	scr   []encScratch   // per task (planAhead)
	enc   []tokenEncoder // per stream
	of    *Compressed    // the cache aheadFunc is of
	f     func(i, worker int)
}

// planAhead returns how many tasks an attention step on the pool adds to
// encode the token due to leave the window at the next Append (one per
// stream; a tiered store's re-coding of the token that Append ages, a
// task of its own beside it), and sets them up; 0 where it would not run
// on the pool, where that token is not known to leave (the window not
// full, stores still to calibrate, KIVI's blocks) or a store cannot
// encode apart, or where its codes are made already.
func (c *Compressed) planAhead() int {
	a := &c.ahead
	if c.step != 1 || c.n-c.nc < c.window || a.at == c.nc+1 || c.stepPool(c.shape, c.n, c.slices(c.shape, c.n)) == nil {
		return 0
	}
	streams := 2 * len(c.heads)
	tasks := streams
	if c.spec.tiered() {
		tasks = 2 * streams
	}
	if len(a.enc) < streams || len(a.scr) < tasks {
		a.codes, a.errs = make([][]byte, streams), make([]error, streams)
		a.scr, a.enc = make([]encScratch, tasks), make([]tokenEncoder, streams)
	}
	for i, h := range c.heads {
		if !h.ready() {
			return 0
		}
		a.enc[2*i], a.enc[2*i+1] = encoderOf(h.keys), encoderOf(h.values)
		if a.enc[2*i] == nil || a.enc[2*i+1] == nil {
			return 0
		}
	}
	if a.of != c { // made once: a step makes no closure
		a.of, a.f = c, c.encodeAhead
	}
	c.early = a.f
	a.at = c.nc + 1
	return tasks
}

// encodeAhead is early task i of an attention step: stream i's codes of
// token c.nc, or for i past the streams, the re-coding ahead of stream
// i − 2·KVHeads's tiered store (planAhead).
func (c *Compressed) encodeAhead(i, _ int) {
	a := &c.ahead
	if streams := 2 * len(c.heads); i >= streams {
		if tr := c.heads[(i-streams)/2].tier(i - streams); tr != nil {
			tr.recodeAhead(&a.scr[i])
		}
		return
	}
	d := c.shape.HeadDim
	h := c.heads[i/2]
	rows := h.stream(i)
	sc := &a.scr[i]
	sc.x = grown(sc.x, d)
	toF32(sc.x, rows[h.off*d:(h.off+1)*d])
	e := a.enc[i]
	if b := e.codeBytes(); len(a.codes[i]) != b {
		a.codes[i] = make([]byte, b)
	}
	a.errs[i] = e.encode(a.codes[i], sc.x, c.nc, sc)
}

// putAhead stores the codes an attention step made of token c.nc, the
// one compress moves now, and reports whether it did; where they are not
// made (or an encoding failed: compress's own then reports it) it stores
// nothing.
func (c *Compressed) putAhead() bool {
	a := &c.ahead
	if a.at != c.nc+1 || c.step != 1 {
		a.at = 0
		return false
	}
	a.at = 0
	for _, err := range a.errs[:2*len(c.heads)] {
		if err != nil {
			return false
		}
	}
	for i := range 2 * len(c.heads) {
		if err := a.enc[i].putCodes(a.codes[i], 1); err != nil {
			panic(err) // one code of the store's own size: a bug
		}
	}
	for _, h := range c.heads {
		h.off++
		h.dropMoved(c.shape.HeadDim)
	}
	c.nc++
	return true
}
