package kvcache

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"

	"github.com/turbomem/turbomem/quant"
)

// Covariances holds what the klt formats design their transforms from,
// measured on calibration text: per layer and KV head, the keys' mean
// before RoPE (the cache takes it out, turned to each position, as for
// the turbo formats: centered.go) and the mean and covariance of the
// centred keys (after RoPE, as the cache stores them), and of the values,
// and the second moment of the queries that read the keys (the keys' bits
// go where the queries look). The KLTs of a rate are designed once
// (quant.DesignWeightedKLT, the seed drawn from the layer and head) and
// shared by every cache made with them.
type Covariances struct {
	// Layers[l][h] is layer l's KV head h.
	Layers [][]HeadCovariance
	// Tokens is the number of tokens per layer the moments were
	// estimated from.
	Tokens int

	mu      sync.Mutex
	designs map[kltKey]*quant.KLT
	shares  map[tierShareKey][][]float64
	sum     uint64 // Fingerprint, once computed (0: not yet)
}

// Fingerprint returns a 64-bit digest (SHA-256's first 8 bytes) of every
// moment, which caches mix into their layer seed: codes exported by a
// cache import only into one made with the same covariances.
func (c *Covariances) Fingerprint() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sum != 0 {
		return c.sum
	}
	h := sha256.New()
	var b [4]byte
	put := func(xs []float32) {
		binary.LittleEndian.PutUint32(b[:], uint32(len(xs)))
		h.Write(b[:])
		for _, x := range xs {
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(x))
			h.Write(b[:])
		}
	}
	for _, l := range c.Layers {
		for _, hc := range l {
			put(hc.RopeMean)
			put(hc.K.Mean)
			put(hc.K.Cov)
			put(hc.V.Mean)
			put(hc.V.Cov)
			put(hc.Q)
			put(hc.Attn)
		}
	}
	c.sum = binary.LittleEndian.Uint64(h.Sum(nil)) | 1
	return c.sum
}

// HeadCovariance is one KV head's calibration.
type HeadCovariance struct {
	// RopeMean is the keys' mean before RoPE.
	RopeMean []float32
	// K and V are the moments of the centred keys and of the values.
	K, V Moments
	// Q is the second moment E[q·qᵀ] (d×d, row-major) of the queries
	// that attend to the head (every query head of its group, after
	// RoPE), which weighs the keys' error (quant.DesignWeightedKLT); nil
	// when no queries were recorded.
	Q []float32
	// Attn is the head's attention profile: Attn[a] is the sum of the
	// squared attention weights on the key of age a (positions back) of
	// the recorded queries from the middle of each calibration window on
	// (attentionProfile), which sizes the head's share of a tiered
	// format's high rate (tierShares); nil when no queries were recorded.
	Attn []float32
}

// Moments are a mean and a covariance (row-major, d×d).
type Moments struct {
	Mean, Cov []float32
}

type kltKey struct {
	layer, head int
	key         bool
	bits        int
	trellis     int
}

// EstimateCovariances returns the moments of the traces: windows[w][l] is
// layer l's trace of calibration window w (every layer of every window
// recorded, from the window's first position, which each trace's Rope
// turns). The first token of each window (BOS, an attention sink whose
// key and value are far from the others) is left out of the moments; the
// codes of such tokens keep their own scale.
func EstimateCovariances(windows [][]*Trace) (*Covariances, error) {
	if len(windows) == 0 || len(windows[0]) == 0 {
		return nil, fmt.Errorf("kvcache: covariances: no calibration traces")
	}
	layers := len(windows[0])
	sh := windows[0][0].Shape
	if err := sh.Validate(); err != nil {
		return nil, err
	}
	d, heads := sh.HeadDim, sh.KVHeads
	c := &Covariances{Layers: make([][]HeadCovariance, layers)}
	for _, w := range windows {
		if len(w) > 0 && w[0] != nil {
			c.Tokens += w[0].Len() - 1
		}
	}
	if c.Tokens < minCovTokens*d {
		return nil, fmt.Errorf("kvcache: covariances: %d calibration tokens (first of each window left out) for head dimension %d; want at least %d", c.Tokens, d, minCovTokens*d)
	}
	for l := range layers {
		for _, w := range windows {
			if len(w) != layers || w[l] == nil || w[l].Shape.HeadDim != d || w[l].Shape.KVHeads != heads || w[l].Len() < 2 {
				return nil, fmt.Errorf("kvcache: covariances: layer %d: traces of differing shapes or under 2 tokens", l)
			}
		}
		c.Layers[l] = make([]HeadCovariance, heads)
		for h := range heads {
			// Pass 1: the keys' mean before RoPE.
			mu := make([]float64, d)
			x, y := make([]float64, d), make([]float64, d)
			n := 0
			for _, w := range windows {
				tr := w[l]
				for t := 1; t < tr.Len(); t++ {
					for i, v := range tr.K[(t*heads+h)*d : (t*heads+h+1)*d] {
						x[i] = float64(v)
					}
					tr.Shape.Rope.Rotate(y, x, -t)
					for i, v := range y {
						mu[i] += v
					}
					n++
				}
			}
			hc := &c.Layers[l][h]
			hc.RopeMean = make([]float32, d)
			for i := range mu {
				hc.RopeMean[i] = float32(mu[i] / float64(n))
			}
			// Pass 2: moments of the keys as the cache centres them, and of
			// the values.
			var km, vm moments
			km.init(d)
			vm.init(d)
			row := make([]float32, d)
			for _, w := range windows {
				tr := w[l]
				ck := centeredOn(tr.Shape.Rope, hc.RopeMean)
				for t := 1; t < tr.Len(); t++ {
					ck.center(row, tr.K[(t*heads+h)*d:(t*heads+h+1)*d], t)
					km.add(row)
					vm.add(tr.V[(t*heads+h)*d : (t*heads+h+1)*d])
				}
			}
			hc.K, hc.V = km.result(), vm.result()
			hc.Q = querySecondMoment(windows, l, h)
		}
	}
	// The attention profiles, the heads side by side: exact attention of
	// the sampled queries, the calibration's largest part.
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for l := range layers {
		for h := range heads {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				c.Layers[l][h].Attn = attentionProfile(windows, l, h)
				<-sem
			}()
		}
	}
	wg.Wait()
	return c, nil
}

// querySecondMoment returns E[q·qᵀ] over the recorded queries of layer
// l's query heads that attend to KV head h (the first position of each
// window left out, as in the moments), or nil if there are none.
func querySecondMoment(windows [][]*Trace, l, h int) []float32 {
	var m moments
	for _, w := range windows {
		tr := w[l]
		sh := tr.Shape
		d, g := sh.HeadDim, sh.Group()
		if m.d == 0 {
			m.init(d)
		}
		for i := range tr.Queries() {
			pos := i
			if tr.QPos != nil {
				pos = tr.QPos[i]
			}
			if pos == 0 {
				continue
			}
			q := tr.Q[i*sh.QHeads*d : (i+1)*sh.QHeads*d]
			for j := h * g; j < (h+1)*g; j++ {
				m.add(q[j*d : (j+1)*d])
			}
		}
	}
	if m.n == 0 {
		return nil
	}
	r := m.result()
	d := m.d
	for i := range d { // the second moment: covariance + mean·meanᵀ
		for j := range d {
			r.Cov[i*d+j] += r.Mean[i] * r.Mean[j]
		}
	}
	return r.Cov
}

// minCovTokens is the fewest calibration tokens per coordinate: below
// 2·d the covariance is rank-deficient, and directions it never saw would
// get no bits however much real tokens hold there.
const minCovTokens = 2

// moments accumulates a mean and covariance in float64.
type moments struct {
	d       int
	n       int
	sum, sq []float64
}

func (m *moments) init(d int) {
	m.d, m.sum, m.sq = d, make([]float64, d), make([]float64, d*d)
}

func (m *moments) add(x []float32) {
	for i, a := range x {
		m.sum[i] += float64(a)
		row := m.sq[i*m.d : (i+1)*m.d]
		for j := i; j < m.d; j++ {
			row[j] += float64(a) * float64(x[j])
		}
	}
	m.n++
}

func (m *moments) result() Moments {
	d, n := m.d, float64(max(m.n, 1))
	out := Moments{Mean: make([]float32, d), Cov: make([]float32, d*d)}
	for i := range d {
		out.Mean[i] = float32(m.sum[i] / n)
	}
	for i := range d {
		for j := i; j < d; j++ {
			v := float32(m.sq[i*d+j]/n - m.sum[i]/n*m.sum[j]/n)
			out.Cov[i*d+j], out.Cov[j*d+i] = v, v
		}
	}
	return out
}

// check reports whether c can serve layer's caches of shape sh.
func (c *Covariances) check(layer int, sh Shape) error {
	if c == nil {
		return fmt.Errorf("kvcache: the klt formats need covariances measured on calibration text (eval measures them; --kv-calib)")
	}
	if layer < 0 || layer >= len(c.Layers) {
		return fmt.Errorf("kvcache: covariances of %d layers, no layer %d", len(c.Layers), layer)
	}
	hs := c.Layers[layer]
	if len(hs) != sh.KVHeads {
		return fmt.Errorf("kvcache: covariances of layer %d have %d KV heads, the model %d", layer, len(hs), sh.KVHeads)
	}
	d := sh.HeadDim
	for h, hc := range hs {
		if len(hc.RopeMean) != d || len(hc.K.Mean) != d || len(hc.V.Mean) != d || len(hc.K.Cov) != d*d || len(hc.V.Cov) != d*d || hc.Q != nil && len(hc.Q) != d*d {
			return fmt.Errorf("kvcache: covariances of layer %d head %d are not of head dimension %d", layer, h, d)
		}
		if len(hc.Attn) > maxProfileAge {
			return fmt.Errorf("kvcache: covariances of layer %d head %d: an attention profile of %d ages, at most %d", layer, h, len(hc.Attn), maxProfileAge)
		}
	}
	return nil
}

// klt returns the KLT of layer's head h for keys or values at bits index
// bits per vector, its components trellis-coded with trellis states if
// not 0 (designed once).
func (c *Covariances) klt(layer, h int, key bool, bits, trellis int, seed uint64) (*quant.KLT, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := kltKey{layer, h, key, bits, trellis}
	if q, ok := c.designs[k]; ok {
		return q, nil
	}
	p, err := c.Layers[layer][h].Design(key, bits, seed)
	if err != nil {
		return nil, fmt.Errorf("kvcache: layer %d head %d: %w", layer, h, err)
	}
	p.Trellis = trellis
	q, err := quant.NewKLT(p)
	if err != nil {
		return nil, fmt.Errorf("kvcache: layer %d head %d: %w", layer, h, err)
	}
	if c.designs == nil {
		c.designs = map[kltKey]*quant.KLT{}
	}
	c.designs[k] = q
	return q, nil
}

// Design returns the KLT design (quant.DesignWeightedKLT) of the head's
// keys (key true) or values for codes of codeBits bits: their moments,
// the keys' error weighed by the queries' second moment where it was
// recorded (the error that moves the logits, E[(qᵀ·Δk)²]). Moments that
// are not finite are an error.
func (hc HeadCovariance) Design(key bool, codeBits int, seed uint64) (quant.KLTParams, error) {
	m := hc.V
	if key {
		m = hc.K
	}
	d := len(m.Mean)
	cov, mean := float64s(m.Cov), float64s(m.Mean)
	for _, v := range cov {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return quant.KLTParams{}, errors.New("covariances are not finite")
		}
	}
	var weight []float64
	if key && hc.Q != nil {
		weight = float64s(hc.Q)
	}
	return quant.DesignWeightedKLT(cov, weight, mean, d, codeBits, seed)
}

// float64s returns xs as float64s.
func float64s(xs []float32) []float64 {
	out := make([]float64, len(xs))
	for i, v := range xs {
		out[i] = float64(v)
	}
	return out
}
