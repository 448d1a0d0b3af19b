package kvcache

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/turbomem/turbomem/quant"
	"github.com/turbomem/turbomem/tensor"
)

// Compressed is a cache whose keys and values are stored in a Spec's
// formats, with the most recent tokens in an fp16 window.
//
// Layout per KV head: the compressed store (tokens [0, nc)), then the
// window (tokens [nc, n)), fp16 rows of keys and values. After each
// Append, tokens leave the window oldest first, one at a time (a KIVI key
// block of 32 at a time), while more than the window's R tokens would
// remain.
//
// Outlier channels (turbo2.5, turbo3.5, turbo3.5p): per KV head, and for
// keys and values separately, the d/4 channels with the largest energy
// Σ_t x_t[c]² over the tokens in the window when the first token is due
// for compression (the first R+1 tokens; at least 32, which the window
// then holds until they have arrived). They are fixed from then on, and
// held with the cache (2 bytes per channel, counted in Bytes); each
// head's split quantizer is drawn from the layer's seed.
//
// Centred keys (every turbo format): per KV head, the mean of the keys
// before RoPE is estimated from the same first tokens, and the keys are
// stored with it, turned to their position, taken out; scoring adds its
// share back exactly (centered.go). The mean is held with the cache (4·d
// bytes per head, counted in Bytes); the model's rotary embedding comes
// with the Shape.
//
// Attend works on the compressed form, KV heads and slices of positions
// in parallel: per KV head, the group's queries are prepared once per
// step (rotated and interleaved for the lane kernel, and the centring
// term's weights, for the turbo formats) and shared by the head's
// slices; the compressed keys are scored for the whole
// query-head group in one pass where a kernel allows (TurboMSE and its
// splits: four queries per unpacked index, AVX-512; q8_0, q4_0, KIVI and
// PolarQuant: a chunk of keys expanded once into fp32 and scored with the
// row kernel for every query), else with each query's batched scorer over
// chunks that stay in cache; the window's keys with tensor.DotRowsF16;
// one softmax (AVX2) over both; the values are summed in the quantizer's
// internal basis by a quant.Accumulator (a chunk of codes expanded once,
// AVX-512 for the turbo formats, then the fp32 row kernel for each query
// head), rotated back once per query head, and the window's fp16 values
// added. Nothing larger than a chunk (32–256 tokens) is ever held in
// fp32.
type Compressed struct {
	spec     Spec
	shape    Shape
	layer    int
	seed     uint64 // this layer's
	window   int    // R
	step     int    // tokens moved at once: kiviBlock for KIVI keys, else 1
	calib    int    // tokens needed before outliers can be chosen (0: none)
	corr     quant.Correction
	n, nc    int
	heads    []*head
	scratch  []float32   // f16 → f32 conversion when moving tokens, per task
	moveErrs []error     // per task of compress
	moveOf   *Compressed // the Compressed that moveFunc is of
	moveFunc func(task, worker int)
	preps    []queryPrep    // per KV head: Attend's queries set up for its keys
	call     compressedStep // Attend's call
	ahead    aheadCodes     // the next token to leave the window, encoded by Attend
	attention
}

// head is one KV head's state.
type head struct {
	keys   keyStore
	values valueStore
	// window rows (fp16), tokens [nc, n) at offset off (in tokens)
	wk, wv []uint16
	off    int
	// outlier channels of split formats, nil until chosen or if unused
	kOut, vOut []int
	// the keys' mean, when the key format centres them (nil until chosen)
	kMean []float32
	// the tiers of tiered key and value stores (nil where untiered)
	tk, tv *tiers
}

// turboCorrection is the scale the turbo formats store instead of ‖x‖
// (docs/ALGORITHMS.md §3). Measured (TestCorrectionChoice, 8/2/128 heads, 512
// tokens, relative error of the attention output against exact): norm
// correction beats projection at every rate, with and without outlier
// channels (turbo2.5 0.514/0.487 vs 0.609/0.512; turbo3 0.297/0.417 vs
// 0.319/0.433; turbo3.5 0.274/0.268 vs 0.286/0.275; turbo4 0.177/0.264
// vs 0.181/0.271).
const turboCorrection = quant.CorrectNorm

func newCompressed(s Spec, layer int, sh Shape) (*Compressed, error) {
	c := &Compressed{
		spec: s, shape: sh, layer: layer, window: s.window(), step: s.step(), calib: s.calib(),
		corr: turboCorrection,
		seed: s.seed() ^ uint64(layer+1)*0x9e3779b97f4a7c15,
	}
	c.shortest = max(s.K.minSlice(), s.V.minSlice())
	if s.corr != 0 {
		c.corr = s.corr - 1
	}
	d := sh.HeadDim
	// Quantizers shared by every head (the non-split formats); the split
	// ones are made per head once the outliers are chosen, and centred
	// keys' stores once their mean is.
	var kq, vq quant.Quantizer
	var err error
	if !s.K.split() && !s.K.calibrated() {
		if kq, err = s.K.quantizer(d, true, nil, c.seed^1, c.corr); err != nil {
			return nil, err
		}
	}
	if !s.V.split() && !s.V.calibrated() {
		if vq, err = s.V.quantizer(d, false, nil, c.seed^2, c.corr); err != nil {
			return nil, err
		}
	}
	if s.K.calibrated() || s.V.calibrated() {
		if err := s.Cov.check(layer, sh); err != nil {
			return nil, err
		}
		c.seed ^= s.Cov.Fingerprint()
	}
	for i := range sh.KVHeads {
		h := &head{}
		if !s.K.split() && !s.K.center() && !s.K.calibrated() {
			h.keys = s.K.keyStore(kq, d)
		}
		if !s.V.split() && !s.V.calibrated() {
			h.values = s.V.valueStore(vq, d)
		}
		if err := c.kltStores(i, h); err != nil {
			return nil, err
		}
		c.heads = append(c.heads, h)
	}
	return c, nil
}

// Spec returns the configuration the cache was made with.
func (c *Compressed) Spec() Spec { return c.spec }

// Len returns the number of tokens held.
func (c *Compressed) Len() int { return c.n }

// Window returns the number of tokens held in the fp16 window now.
func (c *Compressed) Window() int { return c.n - c.nc }

// Outliers returns the outlier channels chosen for KV head h's keys and
// values (nil where the format has none or they are not chosen yet).
func (c *Compressed) Outliers(h int) (k, v []int) {
	return slices.Clone(c.heads[h].kOut), slices.Clone(c.heads[h].vOut)
}

// Bytes returns the bytes held: the compressed keys and values, the fp16
// window (4·d bytes per token and KV head), 2 bytes per outlier channel
// index, and 4·d per head for centred keys' mean.
func (c *Compressed) Bytes() int {
	total := 0
	for _, h := range c.heads {
		total += c.headBytes(h) + 2*(len(h.kOut)+len(h.vOut)) + 4*len(h.kMean)
	}
	return total + 4*(c.n-c.nc)*c.shape.KVHeads*c.shape.HeadDim
}

func (c *Compressed) headBytes(h *head) int {
	b := 0
	if h.keys != nil {
		b += h.keys.bytes()
	}
	if h.values != nil {
		b += h.values.bytes()
	}
	return b
}

// BitsPerValue returns the bits per coordinate of the compressed tokens,
// keys and values averaged, everything in their codes counted (indices,
// scales, norms; not the window, not the outlier lists); 0 while none is
// compressed.
func (c *Compressed) BitsPerValue() float64 {
	if c.nc == 0 {
		return 0
	}
	b := 0
	for _, h := range c.heads {
		b += c.headBytes(h)
	}
	return float64(8*b) / float64(2*c.nc*c.shape.KVHeads*c.shape.HeadDim)
}

// Append adds one token's keys and values. Values that are not finite
// or beyond the fp16 range (which the window cannot hold) are refused
// before anything is stored. A token that a format still cannot encode
// (a vector norm beyond its fp16 scale) gives an error when it leaves the
// window.
func (c *Compressed) Append(k, v []float32) error {
	d := c.shape.HeadDim
	w := c.shape.KVHeads * d
	if len(k) != w || len(v) != w {
		return fmt.Errorf("kvcache: %s: append of %d keys and %d values, want %d each", c.spec, len(k), len(v), w)
	}
	if err := c.checkRows(k, v); err != nil {
		return err
	}
	for i, h := range c.heads {
		appendF16(&h.wk, k[i*d:(i+1)*d])
		appendF16(&h.wv, v[i*d:(i+1)*d])
	}
	c.n++
	for c.n-c.nc-c.step >= c.window {
		if c.calib > 0 && !c.heads[0].ready() && c.n-c.nc < c.calib {
			break
		}
		if err := c.compress(); err != nil {
			return err
		}
	}
	return nil
}

// checkRows refuses tokens (rows of KVHeads·HeadDim keys k and values
// v, the first of them the cache's next) with a value that is not finite
// or beyond the fp16 range, which the window cannot hold.
func (c *Compressed) checkRows(k, v []float32) error {
	w := c.shape.KVHeads * c.shape.HeadDim
	for i := range k {
		if !(math.Abs(float64(k[i])) <= 65504) || !(math.Abs(float64(v[i])) <= 65504) {
			return fmt.Errorf("kvcache: %s: token %d: key %g or value %g at %d is not finite or beyond the fp16 range", c.spec, c.n+i/w, k[i], v[i], i%w)
		}
	}
	return nil
}

// ready reports whether the head's stores exist (split formats make them
// when the outliers are chosen, centred keys when their mean is).
func (h *head) ready() bool { return h.keys != nil && h.values != nil }

// compress moves the oldest step tokens of every head from the window to
// the compressed stores, choosing outliers first where still needed.
// Where Attend runs on the pool (stepPool: enough positions), each head's
// keys and its values are encoded as tasks of their own (moveTask) on
// its goroutines, which would otherwise wait for this step's attention;
// where the pool is busy (a task of it appending) they run on the
// caller, as they do for short caches (a region's cost, an allocation,
// would outweigh them: a batch step of short sequences then makes no more
// regions). The stores are the same either way: each task writes its
// own.
func (c *Compressed) compress() error {
	d := c.shape.HeadDim
	m := c.step * d
	for i, h := range c.heads {
		if !h.ready() {
			if err := c.prime(i, h, c.n-c.nc); err != nil {
				return err
			}
		}
	}
	if c.putAhead() {
		return nil
	}
	tasks := 2 * len(c.heads)
	if len(c.scratch) < tasks*m {
		c.scratch = make([]float32, tasks*m)
	}
	if len(c.moveErrs) < tasks {
		c.moveErrs = make([]error, tasks)
	}
	if c.moveOf != c { // made once: an Append makes no closure
		c.moveOf, c.moveFunc = c, c.moveTask
	}
	c.stepPool(c.shape, c.n, c.slices(c.shape, c.n)).TryRun(tasks, c.moveFunc)
	// The first error in the order of the tasks: head by head, the key
	// before the value, as a serial move would meet them.
	for t, err := range c.moveErrs[:tasks] {
		if err != nil {
			clear(c.moveErrs)
			return fmt.Errorf("kvcache: layer %d head %d: %s of token %d: %w", c.layer, t/2, [2]string{"key", "value"}[t%2], c.nc, err)
		}
	}
	for _, h := range c.heads {
		h.off += c.step
		h.dropMoved(d)
	}
	c.nc += c.step
	return nil
}

// tier returns the tiers of stream i (keys for i even, values for i
// odd), nil where its store is not tiered.
func (h *head) tier(i int) *tiers {
	if i%2 == 1 {
		return h.tv
	}
	return h.tk
}

// dropMoved drops the window's rows of tokens moved to the stores once
// they are half its buffer, and tiered stores' high-rate codes of tokens
// re-coded: amortised O(1) copying per token.
func (h *head) dropMoved(d int) {
	for _, t := range []*tiers{h.tk, h.tv} {
		if t != nil {
			t.trim()
		}
	}
	if live := len(h.wk)/d - h.off; h.off >= live {
		h.wk = append(h.wk[:0], h.wk[h.off*d:]...)
		h.wv = append(h.wv[:0], h.wv[h.off*d:]...)
		h.off = 0
	}
}

// moveTask is compress's task t: the oldest step keys (t even) or values
// (t odd) of head t/2 into its store, in scratch of its own.
func (c *Compressed) moveTask(t, _ int) {
	d := c.shape.HeadDim
	m := c.step * d
	h := c.heads[t/2]
	x := c.scratch[t*m : (t+1)*m]
	toF32(x, h.stream(t)[h.off*d:h.off*d+m])
	if t%2 == 0 {
		c.moveErrs[t] = h.keys.add(x)
	} else {
		c.moveErrs[t] = h.values.add(x)
	}
}

// prime makes head i's stores that depend on the sequence's first tokens
// (the first held rows of its window, tokens [nc, nc+held)): the keys'
// mean of a centring format, then the outlier channels of split formats
// (of the centred keys).
func (c *Compressed) prime(i int, h *head, held int) error {
	d := c.shape.HeadDim
	wk := h.wk[h.off*d : (h.off+held)*d]
	wv := h.wv[h.off*d : (h.off+held)*d]
	var cal calibration
	var ck *centeredKeys
	if c.spec.K.center() || c.spec.K.split() {
		rows := make([]float32, len(wk))
		toF32(rows, wk)
		if c.spec.K.center() {
			ck = newCenteredKeys(nil, c.shape.Rope, wk, d)
			cal.kMean = ck.mu
			for t := 0; t < len(rows)/d; t++ {
				ck.center(rows[t*d:(t+1)*d], rows[t*d:(t+1)*d], c.nc+t)
			}
		}
		if c.spec.K.split() {
			cal.kOut = topChannels(rows, d, d/4)
		}
	}
	if c.spec.V.split() {
		rows := make([]float32, len(wv))
		toF32(rows, wv)
		cal.vOut = topChannels(rows, d, d/4)
	}
	return c.calibrate(i, h, cal, ck)
}

// calibration is what a compressed cache estimates per KV head from the
// sequence's first tokens: the outlier channels of split formats and the
// keys' pre-RoPE mean of centring ones (nil where unused).
type calibration struct {
	kOut, vOut []int
	kMean      []float32
}

// calibrate makes head i's stores from its calibration; ck, if not nil,
// is the centred-key store of cal.kMean (prime has it already).
func (c *Compressed) calibrate(i int, h *head, cal calibration, ck *centeredKeys) error {
	d := c.shape.HeadDim
	seed := c.seed ^ uint64(i+1)*0xbf58476d1ce4e5b9
	if c.spec.K.center() || c.spec.K.split() {
		var q quant.Quantizer
		var err error
		if c.spec.K.split() {
			q, err = c.spec.K.quantizer(d, true, cal.kOut, seed^1, c.corr)
		} else {
			q, err = c.spec.K.quantizer(d, true, nil, c.seed^1, c.corr)
		}
		if err != nil {
			return err
		}
		h.keys, h.kOut = c.spec.K.keyStore(q, d), cal.kOut
		if c.spec.K.center() {
			if ck == nil {
				ck = centeredOn(c.shape.Rope, cal.kMean)
			}
			ck.inner, ck.n = h.keys, c.nc
			h.keys, h.kMean = ck, ck.mu
		}
	}
	if c.spec.V.split() {
		q, err := c.spec.V.quantizer(d, false, cal.vOut, seed^2, c.corr)
		if err != nil {
			return err
		}
		h.values, h.vOut = c.spec.V.valueStore(q, d), cal.vOut
	}
	return nil
}

// topChannels returns, sorted, the k channels of the rows (d values
// each) with the largest Σ x², ties to the lower channel.
func topChannels(rows []float32, d, k int) []int {
	energy := make([]float64, d)
	for t := 0; t+d <= len(rows); t += d {
		for j, v := range rows[t : t+d] {
			energy[j] += float64(v) * float64(v)
		}
	}
	idx := make([]int, d)
	for j := range idx {
		idx[j] = j
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(energy[b], energy[a]) })
	out := idx[:k]
	slices.Sort(out)
	return slices.Clip(out)
}

// toF32 converts fp16 rows to float32 (F16C where the CPU has it):
// every compression step converts a token's keys and values, and the
// first one the window's rows.
func toF32(dst []float32, src []uint16) { tensor.FromF16(dst[:len(src)], src) }

// Attend computes attention of every query head over all tokens, on
// the compressed keys and values and the fp16 window (see Compressed).
// With a pool (SetPool), the KV heads and slices of the positions run on
// its goroutines: each slice sums its compressed values in the
// quantizer's basis and its window values in the original one, side by
// side in one Partial (accLen + HeadDim values), and the merged sum is
// brought back to the original basis once per query head.
func (c *Compressed) Attend(out, q []float32, scale float32) {
	d, n, nc := c.shape.HeadDim, c.n, c.nc
	if n == 0 {
		clear(out[:c.shape.QHeads*d])
		return
	}
	al := 0 // the compressed values' sum comes first
	if nc > 0 {
		al = c.heads[0].values.accLen()
	}
	if len(c.preps) < len(c.heads) {
		c.preps = make([]queryPrep, len(c.heads))
	}
	c.call = compressedStep{c: c, out: out, q: q, scale: scale, al: al, nc: nc}
	c.earlyN = c.planAhead()
	c.run(c.shape, n, al+d, &c.call, nc > 0)
	c.call, c.earlyN = compressedStep{}, 0
}

// compressedStep is the attendStep of a Compressed's Attend call: al
// values of the compressed values' sum come first in a Partial; the
// positions before nc are read from the compressed stores, the others
// from the window's rows (AppendAttend's queries see the boundary each
// had when it came).
type compressedStep struct {
	c      *Compressed
	out, q []float32
	scale  float32
	al, nc int
}

func (s *compressedStep) begin(hi int) {
	c := s.c
	p := &c.preps[hi]
	p.setQueries(s.q, hi, c.shape.Group(), c.shape.HeadDim)
	p.nc = s.nc
	beginKeys(c.heads[hi].keys, p)
}

func (s *compressedStep) prep(hi, j int) {
	prepareQuery(s.c.heads[hi].keys, &s.c.preps[hi], j)
}

func (s *compressedStep) task(ws *workspace, hi, t0, t1 int, parts []Partial) {
	s.c.span(ws, &s.c.preps[hi], s.q, hi, t0, t1, s.nc, s.al, parts, s.scale)
}

// span fills the Partials of KV head hi's query group (queries from q,
// set up in p for its key store where the span reaches before nc) with
// positions [t0, t1): those before nc from the compressed stores, the
// rest from the window's rows, the compressed values' sum in the first al
// values of each Partial.
func (c *Compressed) span(ws *workspace, p *queryPrep, q []float32, hi, t0, t1, nc, al int, parts []Partial, scale float32) {
	d, g := c.shape.HeadDim, c.shape.Group()
	h := c.heads[hi]
	mc := max(0, min(t1, nc)-t0) // compressed positions in the slice
	ws.group(q, hi, g, d, t1-t0, mc, al, parts)
	if mc > 0 {
		scorePrepared(h.keys, ws.cs, p, t0)
	}
	// the slice's window rows (fp16), if it reaches the window: token t
	// is row h.off + t − c.nc of the buffer
	w0, w1 := h.off+max(t0, nc)-c.nc, h.off+max(t1, nc)-c.nc
	wk, wv := h.wk[w0*d:w1*d], h.wv[w0*d:w1*d]
	m, nw := t1-t0, w1-w0
	for j := 0; j < g && nw > 0; j++ { // four query heads per pass where there are four
		if j%4 == 0 && j+4 <= g {
			tensor.DotRowsF16x4(ws.scores[j*m+mc:], m, nw, q[(hi*g+j)*d:(hi*g+j+4)*d], wk)
			j += 3
			continue
		}
		tensor.DotRowsF16(ws.sc[j][mc:], ws.qs[j], wk)
	}
	for j := range g {
		c.biasScores(ws.sc[j], hi, t0, scale)
		parts[j].Weigh(ws.sc[j], scale)
	}
	if mc > 0 {
		h.values.accumulate(ws.accumulator(hi, len(c.heads), h.values), ws.ca, ws.cs, t0, nc)
	}
	for j := 0; j < g && nw > 0; j++ {
		if j%4 == 0 && j+4 <= g {
			var accs [4][]float32
			for i := range accs {
				accs[i] = ws.accs[j+i][al:]
			}
			tensor.WeightedSumF16x4(&accs, ws.scores[j*m+mc:], m, nw, wv)
			j += 3
			continue
		}
		tensor.WeightedSumF16(ws.accs[j][al:], ws.sc[j][mc:], wv)
	}
}

func (s *compressedStep) finish(ws *workspace, hi, j int, p *Partial) {
	c := s.c
	d, g := c.shape.HeadDim, c.shape.Group()
	c.finishOut(ws, hi, s.al, p, s.out[(hi*g+j)*d:(hi*g+j+1)*d])
}

// finishOut writes to o the output of a query head of KV head hi from its
// merged Partial p, whose first al values are the compressed values' sum.
func (c *Compressed) finishOut(ws *workspace, hi, al int, p *Partial, o []float32) {
	if al > 0 {
		h := c.heads[hi]
		h.values.finish(ws.accumulator(hi, len(c.heads), h.values), o, p.Acc[:al])
		tensor.AxpyF32(o, 1, p.Acc[al:])
	} else {
		copy(o, p.Acc[al:])
	}
	if p.Sum > 0 {
		scaleVec(o, 1/p.Sum)
	}
}
