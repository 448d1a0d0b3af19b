package kvcache

import (
	"math"
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
// panels of its keys (transposed) and values, with its biases over the
// attention scale, made once (the part is read only).
type prefixPanels struct {
	once   sync.Once
	ok     bool
	keys   []tensor.Panels[float32]
	values []tensor.Panels[float32]
	bias   [][]float32 // β per position, natural-log units
	work   [][]float32 // attend's scratch per goroutine of the pool
}

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
			var kp, vp tensor.Panels[float32]
			kp.PackT(k, t, d, d)
			vp.Pack(v, t, d, d)
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
// rows of one product with the shared part's keys and values (scores
// with the biases, their softmax weights and sums, the weighted values),
// then each fork's own tokens, then the merge.
func (p *prefixPanels) attend(fs []*Compacted, idx []int, out, q [][]float32, scale float32, pool *tensor.Pool) {
	sh := fs[0].shape
	d, g, heads := sh.HeadDim, sh.Group(), sh.KVHeads
	rows := len(fs) * g // per KV head
	qd := sh.QHeads * d
	// The shared part: outputs po and log-sum-exps pl, [fork][query head].
	po := make([]float32, len(fs)*qd)
	pl := make([]float32, len(fs)*sh.QHeads)
	qs := make([]float32, heads*rows*d)
	for h := range heads {
		for k, i := range idx {
			copy(qs[(h*rows+k*g)*d:(h*rows+(k+1)*g)*d], q[i][h*g*d:(h+1)*g*d])
		}
	}
	per := togetherRows
	for per > 12 && heads*((rows+per-1)/per) < pool.Threads() {
		per -= 12
	}
	blocks := (rows + per - 1) / per
	if len(p.work) < pool.Threads() {
		p.work = make([][]float32, pool.Threads())
	}
	pool.Run(heads*blocks, func(task, w int) {
		h, r0 := task/blocks, task%blocks*per
		r1 := min(rows, r0+per)
		t := p.keys[h].N
		if t == 0 {
			for r := r0; r < r1; r++ {
				k, j := r/g, r%g
				clear(po[k*qd+(h*g+j)*d : k*qd+(h*g+j+1)*d])
				pl[k*sh.QHeads+h*g+j] = float32(math.Inf(-1))
			}
			return
		}
		need := (r1 - r0) * (t + d + 1)
		if cap(p.work[w]) < need {
			p.work[w] = make([]float32, togetherRows*(t+d+1))
		}
		s := p.work[w][:(r1-r0)*t]
		o := p.work[w][(r1-r0)*t : (r1-r0)*(t+d)]
		sums := p.work[w][(r1-r0)*(t+d) : need]
		p.keys[h].Mul(s, t, qs[(h*rows+r0)*d:], r1-r0, d)
		for r := range r1 - r0 {
			row := s[r*t : (r+1)*t]
			if b := p.bias[h]; b != nil {
				for i, x := range b {
					row[i] += x / scale
				}
			}
			m, sum := ExpShifted(row, scale)
			k, j := (r0+r)/g, (r0+r)%g
			pl[k*sh.QHeads+h*g+j] = scale*m + float32(math.Log(float64(sum)))
			sums[r] = sum
		}
		p.values[h].Mul(o, d, s, r1-r0, t)
		for r := range r1 - r0 {
			k, j := (r0+r)/g, (r0+r)%g
			dst := po[k*qd+(h*g+j)*d : k*qd+(h*g+j+1)*d]
			inv := 1 / sums[r]
			for c, x := range o[r*d : (r+1)*d] {
				dst[c] = x * inv
			}
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
