package kvcache

import (
	"fmt"

	"github.com/turbomem/turbomem/tensor"
)

// rows is one KV head's keys or values, token after token, in some
// uncompressed element type.
type rows interface {
	appendRow(x []float32)
	// scores sets dst[i] = <q, row t0+i> for i < len(dst).
	scores(dst, q []float32, t0 int)
	// weightedSum adds Σ_i w[i]·(row t0+i) to acc for i < len(w).
	weightedSum(acc, w []float32, t0 int)
	// rowsF32 writes the first t rows to dst as float32.
	rowsF32(dst []float32, t int)
	bytesPerElem() int
}

// Dense is an uncompressed cache: the reference that compressed formats
// are measured against. Its element type is F32 or F16.
type Dense struct {
	shape  Shape
	n      int
	keys   []rows // per KV head
	values []rows
	elem   int
	name   string
	call   denseStep // Attend's call
	attention
}

// NewF32 returns a cache that stores keys and values as float32.
func NewF32(s Shape) (*Dense, error) { return newDense(s, "f32") }

// NewF16 returns a cache that stores keys and values as IEEE fp16, the
// usual full-precision KV cache of llama.cpp.
func NewF16(s Shape) (*Dense, error) { return newDense(s, "f16") }

func newDense(s Shape, kind string) (*Dense, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	c := &Dense{shape: s, name: kind}
	for range s.KVHeads {
		switch kind {
		case "f32":
			c.keys = append(c.keys, &f32Rows{d: s.HeadDim})
			c.values = append(c.values, &f32Rows{d: s.HeadDim})
		default:
			c.keys = append(c.keys, &f16Rows{d: s.HeadDim})
			c.values = append(c.values, &f16Rows{d: s.HeadDim})
		}
	}
	c.elem = c.keys[0].bytesPerElem()
	return c, nil
}

// Format returns "f32" or "f16".
func (c *Dense) Format() string { return c.name }

// Len returns the number of tokens held.
func (c *Dense) Len() int { return c.n }

// Bytes returns 2·n·KVHeads·HeadDim·(bytes per element).
func (c *Dense) Bytes() int { return 2 * c.n * c.shape.KVHeads * c.shape.HeadDim * c.elem }

// Append adds one token's keys and values.
func (c *Dense) Append(k, v []float32) error {
	w := c.shape.KVHeads * c.shape.HeadDim
	if len(k) != w || len(v) != w {
		return fmt.Errorf("kvcache: %s: append of %d keys and %d values, want %d each", c.name, len(k), len(v), w)
	}
	d := c.shape.HeadDim
	for h := range c.shape.KVHeads {
		c.keys[h].appendRow(k[h*d : (h+1)*d])
		c.values[h].appendRow(v[h*d : (h+1)*d])
	}
	c.n++
	return nil
}

// Attend computes attention of every query head over all tokens. Each
// KV head's keys and values are read once for all query heads of its
// group; with a pool (SetPool), the heads and slices of the positions run
// on its goroutines and merge (Partial).
func (c *Dense) Attend(out, q []float32, scale float32) {
	d, n := c.shape.HeadDim, c.n
	if n == 0 {
		clear(out[:c.shape.QHeads*d])
		return
	}
	c.call = denseStep{c: c, out: out, q: q, scale: scale}
	c.run(c.shape, n, d, &c.call, false)
	c.call = denseStep{}
}

// denseStep is the attendStep of a Dense's Attend call.
type denseStep struct {
	c      *Dense
	out, q []float32
	scale  float32
}

func (s *denseStep) begin(int)     {}
func (s *denseStep) prep(int, int) {}

func (s *denseStep) task(ws *workspace, hi, t0, t1 int, parts []Partial) {
	s.c.span(ws, s.q, hi, t0, t1, parts, s.scale)
}

func (s *denseStep) finish(_ *workspace, hi, j int, p *Partial) {
	d, g := s.c.shape.HeadDim, s.c.shape.Group()
	p.Result(s.out[(hi*g+j)*d : (hi*g+j+1)*d])
}

// AttendLast computes, for each of the last n tokens appended, attention
// of its queries (q holds n rows of QHeads·HeadDim) over the tokens up to
// and including it, into the n rows of out: what Attend after each Append
// gives, for a whole prefill chunk at once, the (token, KV head) pairs
// spread over the pool.
func (c *Dense) AttendLast(out, q []float32, n int, scale float32) {
	d, g, qd := c.shape.HeadDim, c.shape.Group(), c.shape.QHeads*c.shape.HeadDim
	first := c.n - n
	c.runRows(c.shape, n, func(int) int { return d }, func(i int) int { return first + i + 1 }, func(ws *workspace, i, hi, t0, t1 int, parts []Partial) {
		c.span(ws, q[i*qd:(i+1)*qd], hi, t0, t1, parts, scale)
	}, func(_ *workspace, i, hi, j int, p *Partial) {
		p.Result(out[i*qd+(hi*g+j)*d : i*qd+(hi*g+j+1)*d])
	})
}

// span fills the Partials of KV head hi's query group (queries from q)
// with positions [t0, t1).
func (c *Dense) span(ws *workspace, q []float32, hi, t0, t1 int, parts []Partial, scale float32) {
	g, d, m := c.shape.Group(), c.shape.HeadDim, t1-t0
	ws.group(q, hi, g, d, m, 0, 0, parts)
	j := 0
	if k, ok := c.keys[hi].(*f16Rows); ok {
		// four query heads per pass over the fp16 keys and values
		v := c.values[hi].(*f16Rows)
		for ; j+4 <= g; j += 4 {
			tensor.DotRowsF16x4(ws.scores[j*m:], m, m, q[(hi*g+j)*d:(hi*g+j+4)*d], k.data[t0*d:])
			for i := j; i < j+4; i++ {
				c.biasScores(ws.sc[i], hi, t0, scale)
				parts[i].Weigh(ws.sc[i], scale)
			}
			tensor.WeightedSumF16x4((*[4][]float32)(ws.accs[j:j+4]), ws.scores[j*m:], m, m, v.data[t0*d:])
		}
	}
	for ; j < g; j++ {
		c.keys[hi].scores(ws.sc[j], ws.qs[j], t0)
		c.biasScores(ws.sc[j], hi, t0, scale)
		parts[j].Weigh(ws.sc[j], scale)
		c.values[hi].weightedSum(ws.accs[j], ws.sc[j], t0)
	}
}

type f32Rows struct {
	d    int
	data []float32
}

func (r *f32Rows) appendRow(x []float32) { r.data = append(r.data, x...) }
func (r *f32Rows) bytesPerElem() int     { return 4 }
func (r *f32Rows) scores(dst, q []float32, t0 int) {
	tensor.DotRowsF32(dst, q, r.data[t0*r.d:])
}
func (r *f32Rows) weightedSum(acc, w []float32, t0 int) {
	tensor.WeightedSumF32(acc, w, r.data[t0*r.d:])
}
func (r *f32Rows) rowsF32(dst []float32, t int) { copy(dst, r.data[:t*r.d]) }

// f16Rows holds IEEE fp16 bit patterns.
type f16Rows struct {
	d    int
	data []uint16
}

func (r *f16Rows) appendRow(x []float32) { appendF16(&r.data, x) }
func (r *f16Rows) bytesPerElem() int     { return 2 }
func (r *f16Rows) scores(dst, q []float32, t0 int) {
	tensor.DotRowsF16(dst, q, r.data[t0*r.d:])
}
func (r *f16Rows) weightedSum(acc, w []float32, t0 int) {
	tensor.WeightedSumF16(acc, w, r.data[t0*r.d:])
}
func (r *f16Rows) rowsF32(dst []float32, t int) { tensor.FromF16(dst[:t*r.d], r.data[:t*r.d]) }
