package model

import (
	"fmt"
	"math"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/tensor"
)

// Session is one sequence's state: its position and the keys and values
// of every layer. It is not safe for concurrent use.
type Session struct {
	m      *Model
	caches []kvcache.Cache
	pos    int
	limit  int

	// capture, if set, sees each chunk's hidden states at the input of
	// every layer (SetCapture).
	capture func(layer int, x []float32)
	// observe, if set, sees the input of every weight matrix product
	// (SetObserver).
	observe func(tensor string, x []float32, cols int)

	// scratch, grown to the largest batch seen
	x, h, q, k, v, att, o, g, u []float32
	rs                          []float32        // RoPE cos, sin of the chunk's positions
	pool                        *tensor.Pool     // nil: the model's
	mm                          tensor.Scratch   // quantized activations
	prods                       []tensor.Product // of one matmuls call

	// The step's per-row work, done inside the products' parallel
	// regions (tensor.Options.Prepare): the layer being run (ly), whether
	// s.o holds the last layer's output not yet added to s.x (pending),
	// the rows with logits (from lo, or a Batch's rows.logits), and the
	// Prepare functions, made once.
	ly      *layer
	pending bool
	ropeDue bool // s.rs's rows are still to be filled by attnIn
	lo      int
	brows   *batchRows
	rowPrep rowPreps
}

// rowPreps is a session's per-row Prepare functions (bound once: a
// method value made per product would allocate at every step).
type rowPreps struct {
	attnIn, ffnIn, swiglu, outIn func(v int)
}

// NewSession starts an empty sequence whose layers keep their keys and
// values in caches made by kv: a kvcache.Config (nil: f16 keys and
// values), or any kvcache.Maker. maxTokens bounds the sequence length (0:
// the model's training context, or its sliding attention window if
// smaller).
func (m *Model) NewSession(kv kvcache.Maker, maxTokens int) (*Session, error) {
	if kv == nil {
		kv = kvcache.F16()
	}
	limit, err := m.sessionLimit(maxTokens)
	if err != nil {
		return nil, err
	}
	s := &Session{m: m, limit: limit}
	for i := range m.Config.Layers {
		c, err := kv.NewCache(i, m.CacheShape())
		if err != nil {
			return nil, fmt.Errorf("model: cache of layer %d: %w", i, err)
		}
		kvcache.UsePool(c, m.pool)
		s.caches = append(s.caches, c)
	}
	return s, nil
}

// Resume starts a session that continues a sequence of pos tokens whose
// keys and values the given caches hold, one per layer (for instance a
// compacted context's, which hold fewer tokens than pos): the next token
// takes position pos. maxTokens bounds the positions as for NewSession.
func (m *Model) Resume(caches []kvcache.Cache, pos, maxTokens int) (*Session, error) {
	limit, err := m.sessionLimit(maxTokens)
	if err != nil {
		return nil, err
	}
	if len(caches) != m.Config.Layers {
		return nil, fmt.Errorf("model: resuming with %d caches for %d layers", len(caches), m.Config.Layers)
	}
	if pos < 0 || pos > limit {
		return nil, fmt.Errorf("model: resuming at position %d, outside [0, %d]", pos, limit)
	}
	for i, c := range caches {
		if c == nil {
			return nil, fmt.Errorf("model: resuming without a cache for layer %d", i)
		}
	}
	for _, c := range caches {
		kvcache.UsePool(c, m.pool)
	}
	return &Session{m: m, limit: limit, pos: pos, caches: append([]kvcache.Cache(nil), caches...)}, nil
}

// sessionLimit returns the most tokens a session of maxTokens may hold
// (0: the model's training context, or its sliding attention window if
// smaller).
func (m *Model) sessionLimit(maxTokens int) (int, error) {
	if maxTokens <= 0 {
		maxTokens = m.Config.Context
		if w := m.Config.SlidingWindow; w > 0 {
			maxTokens = min(maxTokens, w)
		}
	}
	if w := m.Config.SlidingWindow; w > 0 && maxTokens > w {
		// Attention over the whole sequence equals sliding-window attention
		// only while the sequence fits in the window.
		return 0, fmt.Errorf("%w: a session of %d tokens needs sliding-window attention (window %d); use at most %d tokens", ErrUnsupported, maxTokens, w, w)
	}
	return maxTokens, nil
}

// Limit returns the most tokens the sequence may hold.
func (s *Session) Limit() int { return s.limit }

// Len returns the number of tokens in the sequence.
func (s *Session) Len() int { return s.pos }

// CacheBytes returns the bytes held by all layers' caches.
func (s *Session) CacheBytes() int64 {
	var n int64
	for _, c := range s.caches {
		n += int64(c.Bytes())
	}
	return n
}

// ScratchBytes returns the bytes of the session's working buffers.
func (s *Session) ScratchBytes() int64 {
	var n int
	for _, b := range [][]float32{s.x, s.h, s.q, s.k, s.v, s.att, s.o, s.g, s.u} {
		n += 4 * cap(b)
	}
	return int64(n)
}

func grow(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}

// MaxBatch is the most tokens Forward pushes through the layers at once;
// longer inputs go in chunks, which bounds the scratch memory. The tiled
// matrix kernel repacks each weight panel once per chunk: at 256 tokens
// that costs about a sixth of the chunk's multiply-adds (a tenth of a
// millisecond per MiB of weights), at 64 more than half.
const MaxBatch = 256

// Forward appends tokens to the sequence and returns next-token logits:
// for the last token only (len Vocab), or with all set for every token
// (len(tokens)·Vocab, token after token).
func (s *Session) Forward(tokens []int32, all bool) ([]float32, error) {
	tail := 1
	if all {
		tail = len(tokens)
	}
	return s.ForwardTail(tokens, tail)
}

// ForwardTail is Forward returning the next-token logits of the last tail
// tokens only (tail·Vocab values, token after token; 1 ≤ tail ≤
// len(tokens)): scoring the end of a window spends nothing on the output
// projection of the tokens before it.
func (s *Session) ForwardTail(tokens []int32, tail int) ([]float32, error) {
	if len(tokens) == 0 {
		return nil, fmt.Errorf("model: Forward of no tokens")
	}
	return s.chunks(len(tokens), tail, func(start, n int) error { return s.embed(tokens[start : start+n]) }, 0)
}

// SetCapture makes every later Forward call f with each chunk's hidden
// states at the input of every layer (n tokens × Hidden values, valid
// only during the call), layer after layer and chunk after chunk, in the
// order ForwardFrom takes them back. nil stops it.
func (s *Session) SetCapture(f func(layer int, x []float32)) { s.capture = f }

// SetObserver makes every later Forward call f with the input of each
// weight matrix product before it runs: the matrix's tensor name and its
// n rows of cols values, one row per token (valid only during the call).
// Products that share an input report it once per matrix. nil stops it.
// An importance matrix (the mean of x² per column) is built from it.
func (s *Session) SetObserver(f func(tensor string, x []float32, cols int)) { s.observe = f }

// observed reports x, the input of the products by ws, to the observer.
func (s *Session) observed(x []float32, ws ...*matrix) {
	if s.observe == nil {
		return
	}
	for _, w := range ws {
		s.observe(w.name, x, w.cols)
	}
}

// ForwardFrom appends len(x)/Hidden tokens given by their hidden states at
// the input of layer from (what a capture recorded for the same positions)
// and runs only the layers from there on: the layers before it, and their
// caches, are not touched. It returns the logits of the last tail tokens
// as ForwardTail does. Measuring a change to one layer's cache costs only
// the layers from it on.
func (s *Session) ForwardFrom(from int, x []float32, tail int) ([]float32, error) {
	hid := s.m.Config.Hidden
	if from < 0 || from >= s.m.Config.Layers {
		return nil, fmt.Errorf("model: ForwardFrom layer %d of %d", from, s.m.Config.Layers)
	}
	if len(x) == 0 || len(x)%hid != 0 {
		return nil, fmt.Errorf("model: ForwardFrom of %d values, want a positive multiple of %d", len(x), hid)
	}
	return s.chunks(len(x)/hid, tail, func(start, n int) error {
		s.x = grow(s.x, n*hid)
		copy(s.x, x[start*hid:(start+n)*hid])
		return nil
	}, from)
}

// chunks runs n tokens in chunks of at most MaxBatch: load fills s.x with
// a chunk's hidden states at the input of layer from. It returns the
// logits of the last tail tokens.
func (s *Session) chunks(n, tail int, load func(start, n int) error, from int) ([]float32, error) {
	if tail < 1 || tail > n {
		return nil, fmt.Errorf("model: logits of the last %d of %d tokens", tail, n)
	}
	if s.pos+n > s.limit {
		return nil, fmt.Errorf("model: sequence of %d tokens would exceed the limit of %d", s.pos+n, s.limit)
	}
	first, vocab := n-tail, s.m.Config.Vocab // the first token whose logits are returned
	var out []float32
	if tail > 1 {
		out = make([]float32, tail*vocab)
	}
	for start := 0; start < n; start += MaxBatch {
		k := min(MaxBatch, n-start)
		if err := load(start, k); err != nil {
			return nil, err
		}
		lo := max(first-start, 0) // the chunk's first row with logits
		var dst []float32         // each chunk's logits go straight to their place in out
		if tail > 1 && lo < k {
			dst = out[(start+lo-first)*vocab : (start+k-first)*vocab]
		}
		logits, err := s.forward(k, from, lo, lo < k, dst, nil)
		if err != nil {
			return nil, err
		}
		if tail == 1 && lo < k {
			out = logits
		}
	}
	if err := s.m.settle(); err != nil {
		return nil, err
	}
	return out, nil
}

// use runs w's first-use check (Options.FirstUse) before a product reads
// it, unless the model checks its output instead (Options.Settled) and
// no callback of s sees the step's inner values.
func (s *Session) use(w *matrix) error {
	if s.m.settled != nil && s.capture == nil && s.observe == nil {
		return nil
	}
	return w.use()
}

// embed puts the embeddings of tokens in s.x.
func (s *Session) embed(tokens []int32) error {
	m, c := s.m, &s.m.Config
	for _, t := range tokens {
		if t < 0 || int(t) >= c.Vocab {
			return fmt.Errorf("model: token id %d outside the vocabulary of %d", t, c.Vocab)
		}
	}
	if err := s.use(m.w.embed); err != nil {
		return err
	}
	s.x = grow(s.x, len(tokens)*c.Hidden)
	for i, t := range tokens {
		if err := tensor.Dequantize(m.w.embed.typ, s.x[i*c.Hidden:(i+1)*c.Hidden], m.w.embed.row(int(t))); err != nil {
			return fmt.Errorf("model: embedding of token %d: %w", t, err)
		}
	}
	return nil
}

// forward runs one chunk of n ≤ MaxBatch tokens, whose hidden states at
// the input of layer from are in s.x, through the layers from there on;
// with wantLogits it returns logits for the rows lo … n−1, in dst when it
// is given. With rows set, the tokens belong to
// other sessions (a Batch step, s only lends its buffers): each row
// attends with its own session's caches at its own position, and the
// logits are those of rows.logits.
func (s *Session) forward(n, from, lo int, wantLogits bool, dst []float32, rows *batchRows) ([]float32, error) {
	m, c := s.m, &s.m.Config
	qd, kd := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	s.h = grow(s.h, n*c.Hidden)
	s.q = grow(s.q, n*qd)
	s.k = grow(s.k, n*kd)
	s.v = grow(s.v, n*kd)
	s.att = grow(s.att, n*qd)
	s.o = grow(s.o, n*c.Hidden)
	s.g = grow(s.g, n*c.FFN)
	s.u = grow(s.u, n*c.FFN)

	s.brows = rows
	s.ropeTable(n)
	if s.rowPrep.attnIn == nil {
		s.rowPrep = rowPreps{attnIn: s.attnIn, ffnIn: s.ffnIn, swiglu: s.swigluRow, outIn: s.outIn}
	}
	s.pending = false
	for li := from; li < len(m.w.layers); li++ {
		if err := s.layer(li, n, rows); err != nil {
			return nil, err
		}
	}
	if rows == nil {
		s.pos += n
	}
	if !wantLogits {
		return nil, nil
	}
	nl := n - lo
	s.lo, s.brows = lo, rows
	if rows != nil {
		nl = len(rows.logits) // the rows that end a sequence's tokens
	}
	s.ly = nil
	logits := dst
	if logits == nil {
		logits = make([]float32, nl*c.Vocab)
	}
	prep := s.ahead(nl, c.Hidden, s.rowPrep.outIn, s.h[:nl*c.Hidden], m.w.output)
	s.opts().Pool.Label("output", -1)
	if err := s.matmul(logits, m.w.output, s.h, nl, prep); err != nil {
		return nil, err
	}
	return logits, nil
}

// outIn is the output projection's Prepare: row j of s.h is the final
// norm of the j-th row with logits (s.lo + j, or with a Batch's rows
// that row of rows.logits), the last layer's output added to it first.
func (s *Session) outIn(j int) {
	c := &s.m.Config
	r := s.lo + j
	if rows := s.brows; rows != nil {
		r = rows.logits[j]
	}
	x := s.x[r*c.Hidden : (r+1)*c.Hidden]
	if s.pending {
		add(x, s.o[r*c.Hidden:])
	}
	rmsNorm(s.h[j*c.Hidden:], x, s.m.w.outputNorm, c.RMSEps, 1)
}

// attnIn is the Q, K, V products' Prepare: row v of s.h is the attention
// norm of row v of s.x, the last layer's output added to it first; in
// the chunk's first layer it also fills row v of the RoPE table.
func (s *Session) attnIn(v int) {
	if s.ropeDue {
		s.ropeRow(v)
	}
	s.normIn(v, s.ly.attnNorm)
}

// ffnIn is the gate and up products' Prepare: row v of s.h is the
// feed-forward norm of row v of s.x, the attention's output added first.
func (s *Session) ffnIn(v int) { s.normIn(v, s.ly.ffnNorm) }

func (s *Session) normIn(v int, w []float32) {
	d := s.m.Config.Hidden
	x := s.x[v*d : (v+1)*d]
	if s.pending {
		add(x, s.o[v*d:])
	}
	rmsNorm(s.h[v*d:], x, w, s.m.Config.RMSEps, 1)
}

// swigluRow is the down product's Prepare: row v of s.g becomes
// SwiGLU(gate, up).
func (s *Session) swigluRow(v int) {
	f := s.m.Config.FFN
	tensor.SwiGLU(s.g[v*f:(v+1)*f], s.u[v*f:(v+1)*f])
}

// ahead returns prep as the Prepare of a product whose input is the n
// rows x, or, when an observer must see that input first, runs prep over
// the rows now (width values each), reports x and returns nil.
func (s *Session) ahead(n, width int, prep func(v int), x []float32, ws ...*matrix) func(int) {
	if s.observe == nil {
		return prep
	}
	s.rows(n, width, func(r0, r1 int) {
		for v := r0; v < r1; v++ {
			prep(v)
		}
	})
	s.observed(x, ws...)
	return nil
}

// layer runs layer li on the n tokens whose hidden states are in s.x
// (with s.o still to be added where s.pending says so), in place: the
// session's next tokens, or with rows the rows of a Batch (RoPE from
// ropeTable). The per-row steps (the residual sums, the norms, SwiGLU)
// run inside the products' parallel regions; the layer's own output is
// left in s.o, pending, for the next products to add.
func (s *Session) layer(li, n int, rows *batchRows) error {
	m, c := s.m, &s.m.Config
	qd := c.Heads * c.HeadDim
	ly := &m.w.layers[li]
	s.ly = ly
	pool := s.opts().Pool // its regions labelled for a RegionTrace
	if s.capture != nil {
		if s.pending {
			s.add(s.x, s.o, n, c.Hidden)
			s.pending = false
		}
		s.capture(li, s.x[:n*c.Hidden])
	}
	prep := s.ahead(n, c.Hidden, s.rowPrep.attnIn, s.h[:n*c.Hidden], ly.q, ly.k, ly.v)
	pool.Label("attn_qkv", li)
	if err := s.matmuls(s.h, n, prep, product{s.q, ly.q}, product{s.k, ly.k}, product{s.v, ly.v}); err != nil {
		return err
	}
	s.pending = false // the norm has added it
	s.ropeDue = false // and the RoPE table is filled
	addBias(s.q, ly.qBias, n)
	addBias(s.k, ly.kBias, n)
	addBias(s.v, ly.vBias, n)
	pool.Label("attention", li)
	late, err := s.attend(li, n, rows)
	if err != nil {
		return err
	}
	prep = nil
	if late { // the rows attend inside the output projection's region
		prep = s.ahead(n, qd, rows.late, s.att[:n*qd], ly.o)
		pool.Label("attn_out+attention", li)
	} else {
		s.observed(s.att[:n*qd], ly.o)
		pool.Label("attn_out", li)
	}
	if err := s.matmul(s.o, ly.o, s.att, n, prep); err != nil {
		return err
	}
	s.pending = true
	prep = s.ahead(n, c.Hidden, s.rowPrep.ffnIn, s.h[:n*c.Hidden], ly.gate, ly.up)
	pool.Label("ffn_gate+up", li)
	if err := s.matmuls(s.h, n, prep, product{s.g, ly.gate}, product{s.u, ly.up}); err != nil {
		return err
	}
	s.pending = false
	prep = s.ahead(n, c.FFN, s.rowPrep.swiglu, s.g[:n*c.FFN], ly.down)
	pool.Label("ffn_down", li)
	if err := s.matmul(s.o, ly.down, s.g, n, prep); err != nil {
		return err
	}
	s.pending = true
	return nil
}

// attend rotates the n tokens' queries and keys (s.q, s.k), appends keys
// and values to layer li's cache and writes each token's attention over
// its sequence up to it to s.att: for the whole chunk at once where the
// cache can (kvcache.ChunkAttender, kvcache.LastAttender), else token by
// token. With rows (a
// Batch chunk) attendRows does it, with each row's own session's caches,
// or leaves it, reporting late, to the output projection's Prepare
// (rows.late).
func (s *Session) attend(li, n int, rows *batchRows) (late bool, err error) {
	if rows != nil {
		return s.attendRows(li, n, rows), nil
	}
	c := &s.m.Config
	qd, kd := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	scale := float32(1 / math.Sqrt(float64(c.HeadDim)))
	var last kvcache.LastAttender
	s.ropeRows(0, n)
	cache := s.caches[li]
	if n > 1 {
		if ca, ok := cache.(kvcache.ChunkAttender); ok {
			return false, ca.AppendAttend(s.att[:n*qd], s.q[:n*qd], s.k[:n*kd], s.v[:n*kd], n, scale)
		}
		last, _ = cache.(kvcache.LastAttender)
	}
	for i := range n {
		if err := cache.Append(s.k[i*kd:(i+1)*kd], s.v[i*kd:(i+1)*kd]); err != nil {
			return false, err
		}
		if last == nil {
			cache.Attend(s.att[i*qd:(i+1)*qd], s.q[i*qd:(i+1)*qd], scale)
		}
	}
	if last != nil {
		last.AttendLast(s.att[:n*qd], s.q[:n*qd], n, scale)
	}
	return false, nil
}

// product pairs an output buffer with the matrix that fills it.
type product struct {
	out []float32
	w   *matrix
}

// matmuls computes several products of the same input x (n rows, the
// matrices' shared column count) in one parallel region.
func (s *Session) matmuls(x []float32, n int, prep func(v int), prods ...product) error {
	ps := s.prods[:0]
	cols := prods[0].w.cols
	for _, p := range prods {
		if err := s.use(p.w); err != nil {
			return err
		}
		ps = append(ps, tensor.Product{Out: p.out[:n*p.w.rows], W: p.w.data, Type: p.w.typ, Rows: p.w.rows})
	}
	s.prods = ps
	o := s.opts()
	o.Prepare = prep
	if err := tensor.MatMulShared(ps, cols, x[:n*cols], n, o); err != nil {
		return fmt.Errorf("model: layer products: %w", err)
	}
	return nil
}

// opts returns the options of the session's matrix products.
func (s *Session) opts() tensor.Options {
	p := s.pool
	if p == nil {
		p = s.m.pool
	}
	return tensor.Options{Pool: p, Scratch: &s.mm}
}

// UsePool makes the session's next steps (matrix products and attention)
// run on p instead of the model's pool; nil returns to the model's. A
// benchmark prefills once and decodes at several thread counts this way.
func (s *Session) UsePool(p *tensor.Pool) {
	s.pool = p
	if p == nil {
		p = s.m.pool
	}
	for _, c := range s.caches {
		kvcache.UsePool(c, p)
	}
}

// matmul computes out = w·x for n rows of x, prep (if not nil) writing
// each row of x inside the product's region (tensor.Options.Prepare).
func (s *Session) matmul(out []float32, w *matrix, x []float32, n int, prep func(v int)) error {
	if err := s.use(w); err != nil {
		return err
	}
	o := s.opts()
	o.Prepare = prep
	if err := tensor.MatMul(out[:n*w.rows], w.data, w.typ, w.rows, w.cols, x[:n*w.cols], n, o); err != nil {
		return fmt.Errorf("model: %s: %w", w.name, err)
	}
	return nil
}

// ropeTable makes room in s.rs for cos and sin of every rotated pair's
// angle at the chunk's n positions, computed once per token and used by
// every layer's queries and keys; the first layer's Q, K, V product
// fills its rows (ropeRow) inside its parallel region, as it prepares
// its input rows: a 16-row decode step's 1024 Sincos calls would
// otherwise run on one goroutine while the others wait.
func (s *Session) ropeTable(n int) {
	s.rs = grow(s.rs, n*s.m.Config.RopeDim)
	s.ropeDue = true
}

// ropeRow fills row i of the RoPE table: the chunk's token i, at s.pos+i
// (with Batch rows: that row's position).
func (s *Session) ropeRow(i int) {
	f := s.m.invFreq
	pos := s.pos + i
	if rows := s.brows; rows != nil {
		pos = rows.pos[i]
	}
	cs := s.rs[2*i*len(f) : 2*(i+1)*len(f)]
	for j, fr := range f {
		sin, cos := math.Sincos(float64(pos) * fr)
		cs[2*j], cs[2*j+1] = float32(cos), float32(sin)
	}
}

// ropeRows rotates the queries and keys (s.q, s.k) of the chunk's
// tokens [i0, i1), over the session's pool when there are enough.
func (s *Session) ropeRows(i0, i1 int) {
	c := &s.m.Config
	qd, kd := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	if i1 == i0+1 { // a decode row: on this goroutine, with no closure to allocate
		s.rope(s.q[i0*qd:i1*qd], c.Heads, i0)
		s.rope(s.k[i0*kd:i1*kd], c.KVHeads, i0)
		return
	}
	s.rows(i1-i0, qd+kd, func(r0, r1 int) {
		for i := i0 + r0; i < i0+r1; i++ {
			s.rope(s.q[i*qd:(i+1)*qd], c.Heads, i)
			s.rope(s.k[i*kd:(i+1)*kd], c.KVHeads, i)
		}
	})
}

// rope rotates each head of x (heads·HeadDim values) for the chunk's
// token i (ropeTable).
func (s *Session) rope(x []float32, heads, i int) {
	c := &s.m.Config
	half := c.RopeDim / 2
	cs := s.rs[2*i*half : 2*(i+1)*half]
	for h := range heads {
		base := h * c.HeadDim
		for j := range half {
			cos, sin := cs[2*j], cs[2*j+1]
			a, b := base+j, base+j+half
			if c.RopeStyle == RopeAdjacent {
				a, b = base+2*j, base+2*j+1
			}
			x0, x1 := x[a], x[b]
			x[a] = x0*cos - x1*sin
			x[b] = x0*sin + x1*cos
		}
	}
}

// rows runs f over the n rows of a chunk (width values each), split
// over the session's pool when there is enough work: the element-wise
// steps of a prefill chunk would otherwise hold every other thread up.
func (s *Session) rows(n, width int, f func(r0, r1 int)) {
	p := s.opts().Pool
	tasks := min(n, p.Threads(), max(1, n*width/minRowWork))
	if tasks <= 1 {
		f(0, n)
		return
	}
	p.Run(tasks, func(t, _ int) { f(n*t/tasks, n*(t+1)/tasks) })
}

// minRowWork is the fewest values worth a task of their own in rows.
const minRowWork = 16 << 10

// add adds the n rows of width values of y to x, over the session's pool.
func (s *Session) add(x, y []float32, n, width int) {
	s.rows(n, width, func(r0, r1 int) { add(x[r0*width:r1*width], y[r0*width:]) })
}

// rmsNorm sets dst = x / rms(x) · w for each of n rows of len(w).
func rmsNorm(dst, x, w []float32, eps float32, n int) {
	d := len(w)
	for r := range n {
		row := x[r*d : (r+1)*d]
		var ss float64
		for _, v := range row {
			ss += float64(v) * float64(v)
		}
		inv := float32(1 / math.Sqrt(ss/float64(d)+float64(eps)))
		out := dst[r*d : (r+1)*d]
		for i, v := range row {
			out[i] = v * inv * w[i]
		}
	}
}

func addBias(x, b []float32, n int) {
	if b == nil {
		return
	}
	d := len(b)
	for r := range n {
		row := x[r*d : (r+1)*d]
		for i := range row {
			row[i] += b[i]
		}
	}
}

func add(x, y []float32) {
	y = y[:len(x)]
	for i := range x {
		x[i] += y[i]
	}
}
