package kvcache

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/turbomem/turbomem/half"
)

// Token-level mixed precision chosen by the attention a token receives
// while it is in the fp16 window: a screening cache, not a format
// (BENCHMARKS.md, "Token-level mixed precision by attention in the
// window"). Tokens leave the window in blocks of Block; of each block the
// Hi tokens chosen by Select go to a tcq store of HiBytes per vector, the
// others to stores of LoBytes (LoExtra of them LoBytes+1), so that the
// bytes of a block are fixed. Every store encodes every token that leaves
// the window, so that the centred keys' turning mean is taken out at the
// token's own position (centered.go), and a logit bias masks out the
// tokens routed elsewhere; the window is scored exactly, and the parts
// merge by their log-sum-exps. Slow and without exact bytes: it measures
// KL, nothing else.

// SalientOptions configures a salient screening cache.
type SalientOptions struct {
	Window, Block, Hi int
	HiBytes, LoBytes  int
	// LoExtra of each block's other tokens (the first by position) take
	// LoBytes+1.
	LoExtra int
	// Select chooses the Hi tokens of a block: "mass" (the most attention
	// received in the window, summed over the group's query heads, each
	// token over the queries at distances [MinDist, Window−Block]: the
	// same number for every token of the block), "least" (the fewest),
	// "random".
	Select  string
	MinDist int
	Seed    uint64 // of the stores (0: DefaultSeed)
}

// Bits returns the bits per coordinate all in at head dimension d: the
// codes and a route bit per token and KV head, shared by keys and values.
func (o SalientOptions) Bits(d int) float64 {
	b := 8 * (o.Hi*o.HiBytes + (o.Block-o.Hi)*o.LoBytes + o.LoExtra)
	return float64(b+o.Block/2) / float64(o.Block*d)
}

// SalientMaker returns the maker of salient screening caches over cov
// (tcq stores; each KV head a cache of its own over its covariances).
func SalientMaker(cov *Covariances, o SalientOptions) NewCacheFunc {
	perHead := make([]*Covariances, len(cov.Layers[0]))
	for h := range perHead {
		c := &Covariances{Tokens: cov.Tokens}
		for _, l := range cov.Layers {
			c.Layers = append(c.Layers, l[h:h+1])
		}
		perHead[h] = c
	}
	return func(layer int, sh Shape) (Cache, error) {
		c := &salientScreen{o: o, shape: sh, layer: layer}
		one := Shape{QHeads: sh.Group(), KVHeads: 1, HeadDim: sh.HeadDim, Rope: sh.Rope}
		for h := range sh.KVHeads {
			sc := &salientHead{}
			for i, b := range []int{o.HiBytes, o.LoBytes, o.LoBytes + 1} {
				r := float64(8*b) / float64(sh.HeadDim)
				f := Format{name: fmt.Sprintf("tcq%g", r), c: tcqFormat(r)}
				x, err := newCompressed(Spec{K: f, V: f, Window: -1, Cov: perHead[h], Seed: o.Seed}, layer, one)
				if err != nil {
					return nil, fmt.Errorf("salient: layer %d head %d: %w", layer, h, err)
				}
				sc.store[i] = x
			}
			c.heads = append(c.heads, sc)
		}
		return c, nil
	}
}

// salientScreen is the salient screening cache of one layer.
type salientScreen struct {
	o      SalientOptions
	shape  Shape
	layer  int
	n, nc  int // tokens held; tokens that left the window
	heads  []*salientHead
	s      []float32 // the window's scores of one query head
	o3, l3 []float32 // the parts' outputs and log-sum-exps
}

// salientHead is one KV head of a salientScreen.
type salientHead struct {
	store [3]*Compressed // the Hi tokens, the others, the others' LoExtra
	bias  [3][]uint16    // per store: 0 where a token is routed to it, else a mask
	// the window's rows (fp16-rounded) and the attention each received
	// at the distances Select counts (mass) and at distance ≥
	// DefaultWindow (late; SalientCapture)
	wk, wv     [][]float32
	mass, late []float64
	route      []int // the store of each token of the block leaving now
}

func (c *salientScreen) Len() int { return c.n }

// Bytes is the stores' and the window's bytes (every store holds every
// token: not the format's bytes).
func (c *salientScreen) Bytes() int {
	b := 0
	for _, h := range c.heads {
		for _, st := range h.store {
			b += st.Bytes()
		}
		b += 4 * len(h.wk) * c.shape.HeadDim
	}
	return b
}

func (c *salientScreen) Append(k, v []float32) error {
	d := c.shape.HeadDim
	for i, h := range c.heads {
		h.wk = append(h.wk, round16(k[i*d:(i+1)*d]))
		h.wv = append(h.wv, round16(v[i*d:(i+1)*d]))
		h.mass, h.late = append(h.mass, 0), append(h.late, 0)
	}
	c.n++
	mask := uint16(half.F32ToF16(-60000)) // e^−60000: nothing, yet finite
	for c.n-c.nc > c.o.Window {
		for hi, h := range c.heads {
			if c.nc%c.o.Block == 0 {
				h.route = c.choose(hi, h)
			}
			r := h.route[c.nc%c.o.Block]
			for i, st := range h.store {
				if err := st.Append(h.wk[0], h.wv[0]); err != nil {
					return err
				}
				h.bias[i] = append(h.bias[i], mask)
				if i == r {
					h.bias[i][len(h.bias[i])-1] = 0
				}
			}
			h.wk, h.wv, h.mass, h.late = h.wk[1:], h.wv[1:], h.mass[1:], h.late[1:]
		}
		c.nc++
	}
	return nil
}

// choose returns the stores of the block of the window's oldest Block
// tokens.
func (c *salientScreen) choose(hi int, h *salientHead) []int {
	b := c.o.Block
	idx := make([]int, b)
	for i := range idx {
		idx[i] = i
	}
	switch c.o.Select {
	case "mass":
		slices.SortStableFunc(idx, func(x, y int) int { return cmp.Compare(h.mass[y], h.mass[x]) })
	case "least":
		slices.SortStableFunc(idx, func(x, y int) int { return cmp.Compare(h.mass[x], h.mass[y]) })
	case "random":
		r := rand.New(rand.NewPCG(uint64(c.layer)<<32|uint64(hi), uint64(c.nc)))
		r.Shuffle(b, func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
	default:
		panic("salient: selection " + c.o.Select)
	}
	route := make([]int, b)
	for i := range route {
		route[i] = 1
	}
	for _, i := range idx[:c.o.Hi] {
		route[i] = 0
	}
	extra := c.o.LoExtra
	for i := range route {
		if route[i] == 1 && extra > 0 {
			route[i], extra = 2, extra-1
		}
	}
	return route
}

func (c *salientScreen) Attend(out, q []float32, scale float32) {
	d, g := c.shape.HeadDim, c.shape.Group()
	gd := g * d
	c.o3 = growF32(c.o3, 3*gd)
	c.l3 = growF32(c.l3, 4*g)
	exposure := min(c.o.Window, DefaultWindow) - c.o.Block + 1
	for hi, h := range c.heads {
		qh := q[hi*gd : (hi+1)*gd]
		oa, ob, ow := c.o3[:gd], c.o3[gd:2*gd], c.o3[2*gd:]
		la, lb, lw, lt := c.l3[:g], c.l3[g:2*g], c.l3[2*g:3*g], c.l3[3*g:]
		for i, st := range h.store {
			st.setBias([][]uint16{h.bias[i]})
		}
		h.store[0].attendLSE(oa, la, qh, scale)
		for _, st := range h.store[1:] {
			st.attendLSE(ob, lb, qh, scale)
			merge(oa, la, oa, la, ob, lb, d)
		}
		c.s = growF32(c.s, len(h.wk))
		for j := range g {
			lw[j] = c.attendWindow(ow[j*d:(j+1)*d], qh[j*d:(j+1)*d], h, scale)
		}
		merge(out[hi*gd:(hi+1)*gd], lt, oa, la, ow, lw, d)
		// Each window token's share of every query head's attention.
		for t := range h.wk {
			dist := c.n - 1 - (c.nc + t)
			early := dist >= c.o.MinDist && dist < exposure
			if !early && dist < DefaultWindow {
				continue
			}
			for j := range g {
				w := math.Exp(float64(scale*dot(qh[j*d:(j+1)*d], h.wk[t]) - lt[j]))
				if early {
					h.mass[t] += w
				} else {
					h.late[t] += w
				}
			}
		}
	}
}

// attendWindow writes one query's attention over the window's rows to o
// and returns its log-sum-exp.
func (c *salientScreen) attendWindow(o, q []float32, h *salientHead, scale float32) float32 {
	m := float32(math.Inf(-1))
	for t, k := range h.wk {
		c.s[t] = scale * dot(q, k)
		m = max(m, c.s[t])
	}
	var sum float64
	clear(o)
	for t, v := range h.wv {
		w := math.Exp(float64(c.s[t] - m))
		sum += w
		for i, x := range v {
			o[i] += float32(w) * x
		}
	}
	for i := range o {
		o[i] /= float32(sum)
	}
	return m + float32(math.Log(sum))
}

func dot(a, b []float32) float32 {
	var s float32
	for i, x := range b {
		s += a[i] * x
	}
	return s
}

// SalientCapture returns, over the blocks of Block tokens of caches made
// by SalientMaker with a Window beyond the sequence (every token held
// exactly), the share of the attention received at distance ≥
// DefaultWindow that goes to the Hi tokens of each block with the most
// mass, and the share that the best Hi (chosen by that later attention)
// receive.
func SalientCapture(caches []Cache) (chosen, oracle float64) {
	var got, best, all float64
	for _, x := range caches {
		c := x.(*salientScreen)
		b, k := c.o.Block, c.o.Hi
		for _, h := range c.heads {
			for t0 := 0; t0+b <= len(h.late); t0 += b {
				idx := make([]int, b)
				for i := range idx {
					idx[i] = t0 + i
				}
				sum := func(by []float64, k int) float64 {
					slices.SortStableFunc(idx, func(x, y int) int { return cmp.Compare(by[y], by[x]) })
					s := 0.0
					for _, i := range idx[:k] {
						s += h.late[i]
					}
					return s
				}
				got += sum(h.mass, k)
				best += sum(h.late, k)
				all += sum(h.late, b)
			}
		}
	}
	return got / all, best / all
}
