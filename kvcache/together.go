package kvcache

import (
	"math"
	"slices"
	"sync"

	"github.com/turbomem/turbomem/half"
	"github.com/turbomem/turbomem/tensor"
)

// AttendTogether computes caches[i].Attend(out[i], q[i], scale) for every
// i. Caches that continue one compacted context (Compacted.Fork, each
// possibly inside a Recorder, which records its query as Attend would)
// read their shared part as matrix products, all their queries at once
// (a batch of continuations of one long context reads it once per step
// instead of once per continuation), where that part is held uncompressed
// (f16/f32); each then attends its own tokens and the two parts merge by
// their log-sum-exps. Every other cache attends on its own, one after
// another. The work runs on pool.
func AttendTogether(caches []Cache, out, q [][]float32, scale float32, pool *tensor.Pool) {
	groups := map[*prefixPanels][]int{}
	var order []*prefixPanels
	for i, c := range caches {
		cc, rec := unwrapRecorder(c)
		if f, ok := cc.(*Compacted); ok && f.forked && f.panels != nil && f.panels.usable(f) {
			if rec != nil {
				rec.record(q[i], rec.Trace.Len()-1, scale)
			}
			if groups[f.panels] == nil {
				order = append(order, f.panels)
			}
			groups[f.panels] = append(groups[f.panels], i)
			continue
		}
		c.Attend(out[i], q[i], scale)
	}
	for _, p := range order {
		idx := groups[p]
		fs := make([]*Compacted, len(idx))
		for k, i := range idx {
			cc, _ := unwrapRecorder(caches[i])
			fs[k] = cc.(*Compacted)
		}
		p.attend(fs, idx, out, q, scale, pool)
	}
}

// unwrapRecorder returns the cache inside a Recorder (and the Recorder),
// or c itself.
func unwrapRecorder(c Cache) (Cache, *Recorder) {
	switch r := c.(type) {
	case *Recorder:
		return r.Cache, r
	case lastRecorder:
		return r.Cache, r.Recorder
	}
	return c, nil
}

// prefixPanels is a compacted context's part, per KV head, as float32
// panels of its keys (transposed) and values, a pair per chunk of
// togetherKeys positions, with its biases, made once (the part is read
// only).
type prefixPanels struct {
	once   sync.Once
	ok     bool
	keys   [][]tensor.Panels[float32] // [head][chunk]
	values [][]tensor.Panels[float32]
	bias   [][]float32 // β per position, natural-log units
	work   [][]float32 // attend's scratch per goroutine of the pool
	parts  []float32   // attend's chunks' results (the forks attend one after another)
}

// togetherKeys is the number of positions of the shared part that a task
// of prefixPanels.attend reads (the last chunk of a head takes the
// rest): a few forks' queries are then still a task per chunk for each
// thread (the part of a 4k-token context is 16 chunks), and many forks'
// scores stay in cache. It does not depend on the threads, so neither
// do the results.
const togetherKeys = 256

// usable reports whether c's compacted part is held uncompressed, so
// that it can be read as panels (made here on first use).
func (p *prefixPanels) usable(c *Compacted) bool {
	p.once.Do(func() {
		d := c.shape.HeadDim
		for h, part := range c.prefix {
			dense, ok := part.(*Dense)
			if !ok {
				return
			}
			t := c.kept[h]
			k, v := make([]float32, t*d), make([]float32, t*d)
			dense.keys[0].rowsF32(k, t)
			dense.values[0].rowsF32(v, t)
			chunks := (t + togetherKeys - 1) / togetherKeys
			kp, vp := make([]tensor.Panels[float32], chunks), make([]tensor.Panels[float32], chunks)
			for c := range chunks {
				j0, j1 := c*togetherKeys, min(t, (c+1)*togetherKeys)
				kp[c].PackT(k[j0*d:], j1-j0, d, d)
				vp[c].Pack(v[j0*d:], j1-j0, d, d)
			}
			p.keys, p.values = append(p.keys, kp), append(p.values, vp)
			var b []float32
			if dense.bias != nil {
				b = make([]float32, t)
				for i, x := range dense.bias[0][:t] {
					b[i] = half.F16ToF32(half.F16(x))
				}
			}
			p.bias = append(p.bias, b)
		}
		p.ok = true
	})
	return p.ok
}

// PreparePanels makes the float32 panels of c's compacted part, which
// its forks' AttendTogether reads, now instead of on their first
// attention (where the layers of a model step make theirs one after
// another): a caller holding several contexts can make theirs side by
// side. It reports whether the part can be read so (held uncompressed).
func (c *Compacted) PreparePanels() bool { return c.panels != nil && c.panels.usable(c) }

// togetherRows is the most query rows (query heads of the caches of one
// KV head) a task of prefixPanels.attend multiplies at once: four tiles
// of the product; fewer (down to one tile) where that leaves a thread of
// the pool without a task.
const togetherRows = 48

// attend is AttendTogether for the forks fs of one context (fs[k] is
// caches[idx[k]]): per KV head, the queries of every fork's group as the
// rows of products with the shared part's keys and values, a task per
// block of rows and chunk of positions (scores with the biases, their
// largest, their exponentials' sum and the weighted values), the chunks
// merged in order as Partials (as flash-decoding does), then
// each fork's own tokens, then the merge of the two.
func (p *prefixPanels) attend(fs []*Compacted, idx []int, out, q [][]float32, scale float32, pool *tensor.Pool) {
	sh := fs[0].shape
	d, g, heads := sh.HeadDim, sh.Group(), sh.KVHeads
	rows := len(fs) * g // per KV head
	qd := sh.QHeads * d
	qs := make([]float32, heads*rows*d)
	for h := range heads {
		for k, i := range idx {
			copy(qs[(h*rows+k*g)*d:(h*rows+(k+1)*g)*d], q[i][h*g*d:(h+1)*g*d])
		}
	}
	chunks := 0 // the most of any head; a head's chunk c at (h·rows + r)·chunks + c
	tasks := 0
	for h := range heads {
		chunks = max(chunks, len(p.keys[h]))
		tasks += len(p.keys[h])
	}
	per := togetherRows
	for per > 12 && tasks*((rows+per-1)/per) < pool.Threads() {
		per -= 12
	}
	blocks := (rows + per - 1) / per
	// Each chunk's largest score (scaled, with the bias), exponentials'
	// sum and weighted values (unnormalised).
	size := heads * rows * chunks
	p.parts = growF32(p.parts, size*(d+2))
	cm, cl, co := p.parts[:size], p.parts[size:2*size], p.parts[2*size:]
	if len(p.work) < pool.Threads() {
		p.work = make([][]float32, pool.Threads())
	}
	pool.Run(heads*blocks*chunks, func(task, w int) {
		h, rest := task/(blocks*chunks), task%(blocks*chunks)
		r0, c := rest/chunks*per, rest%chunks
		if c >= len(p.keys[h]) {
			return
		}
		r1 := min(rows, r0+per)
		keys, values := &p.keys[h][c], &p.values[h][c]
		n := keys.N
		if cap(p.work[w]) < (r1-r0)*n {
			p.work[w] = make([]float32, togetherRows*togetherKeys)
		}
		s := p.work[w][:(r1-r0)*n]
		keys.Mul(s, n, qs[(h*rows+r0)*d:], r1-r0, d)
		for r := range r1 - r0 {
			row := s[r*n : (r+1)*n]
			if b := p.bias[h]; b != nil {
				for i, x := range b[c*togetherKeys : c*togetherKeys+n] {
					row[i] += x / scale
				}
			}
			m, sum := ExpShifted(row, scale)
			at := (h*rows+r0+r)*chunks + c
			cm[at], cl[at] = scale*m, sum
		}
		values.Mul(co[((h*rows+r0)*chunks+c)*d:], chunks*d, s, r1-r0, n)
	})
	// The shared part: outputs po and log-sum-exps pl, [fork][query head],
	// each row's chunks merged in order.
	po := make([]float32, len(fs)*qd)
	pl := make([]float32, len(fs)*sh.QHeads)
	const mergeRows = 8
	mblocks := (rows + mergeRows - 1) / mergeRows
	pool.Run(heads*mblocks, func(task, _ int) {
		h := task / mblocks
		r0 := task % mblocks * mergeRows
		n := len(p.keys[h])
		for r := r0; r < min(rows, r0+mergeRows); r++ {
			k, j := r/g, r%g
			dst := po[k*qd+(h*g+j)*d : k*qd+(h*g+j+1)*d]
			clear(dst)
			// The chunks as Partials, merged in order into one that
			// starts at their largest score, so that no merge rescales
			// (each chunk weighed once, as a two-pass log-sum-exp does).
			at := (h*rows + r) * chunks
			part := Partial{Max: float32(math.Inf(-1)), Acc: dst}
			if n > 0 {
				part.Max = slices.Max(cm[at : at+n])
			}
			for c := range n {
				part.Merge(&Partial{Max: cm[at+c], Sum: cl[at+c], Acc: co[(at+c)*d : (at+c+1)*d]})
			}
			part.Result(dst)
			pl[k*sh.QHeads+h*g+j] = part.logSumExp()
		}
	})
	// Each fork's own tokens, side by side (their caches are their own).
	io := make([]float32, len(fs)*qd)
	il := make([]float32, len(fs)*sh.QHeads)
	pool.Run(len(fs), func(k, _ int) {
		inner := fs[k].inner
		UsePool(inner, nil)
		inner.(lseAttender).attendLSE(io[k*qd:(k+1)*qd], il[k*sh.QHeads:(k+1)*sh.QHeads], q[idx[k]], scale)
		UsePool(inner, pool)
	})
	for k, i := range idx {
		merge(out[i], nil, po[k*qd:(k+1)*qd], pl[k*sh.QHeads:(k+1)*sh.QHeads], io[k*qd:(k+1)*qd], il[k*sh.QHeads:(k+1)*sh.QHeads], d)
	}
}
