package kvcache

import (
	"fmt"

	"github.com/turbomem/turbomem/half"
)

// rows is one KV head's keys or values, token after token, in some
// uncompressed element type.
type rows interface {
	appendRow(x []float32)
	// dot returns <q, row t>.
	dot(q []float32, t int) float32
	// axpy adds w·(row t) to acc.
	axpy(acc []float32, w float32, t int)
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
	scores []float32 // scratch: Group() rows of n scores
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
// group.
func (c *Dense) Attend(out, q []float32, scale float32) {
	d, g, n := c.shape.HeadDim, c.shape.Group(), c.n
	if n == 0 {
		clear(out[:c.shape.QHeads*d])
		return
	}
	if cap(c.scores) < g*n {
		c.scores = make([]float32, g*n, 2*g*n)
	}
	sc := c.scores[:g*n]
	for h := range c.shape.KVHeads {
		qh := q[h*g*d : (h+1)*g*d]
		for t := range n {
			for j := range g {
				sc[j*n+t] = scale * c.keys[h].dot(qh[j*d:(j+1)*d], t)
			}
		}
		for j := range g {
			softmax(sc[j*n : (j+1)*n])
		}
		oh := out[h*g*d : (h+1)*g*d]
		clear(oh)
		for t := range n {
			for j := range g {
				c.values[h].axpy(oh[j*d:(j+1)*d], sc[j*n+t], t)
			}
		}
	}
}

type f32Rows struct {
	d    int
	data []float32
}

func (r *f32Rows) appendRow(x []float32) { r.data = append(r.data, x...) }
func (r *f32Rows) bytesPerElem() int     { return 4 }

func (r *f32Rows) dot(q []float32, t int) float32 {
	row := r.data[t*r.d : (t+1)*r.d]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+3 < len(row); i += 4 {
		s0 += q[i] * row[i]
		s1 += q[i+1] * row[i+1]
		s2 += q[i+2] * row[i+2]
		s3 += q[i+3] * row[i+3]
	}
	for ; i < len(row); i++ {
		s0 += q[i] * row[i]
	}
	return (s0 + s1) + (s2 + s3)
}

func (r *f32Rows) axpy(acc []float32, w float32, t int) {
	row := r.data[t*r.d : (t+1)*r.d]
	for i, v := range row {
		acc[i] += w * v
	}
}

type f16Rows struct {
	d    int
	data []half.F16
}

func (r *f16Rows) appendRow(x []float32) {
	for _, v := range x {
		r.data = append(r.data, half.F32ToF16(v))
	}
}
func (r *f16Rows) bytesPerElem() int { return 2 }

func (r *f16Rows) dot(q []float32, t int) float32 {
	row := r.data[t*r.d : (t+1)*r.d]
	var s0, s1 float32
	i := 0
	for ; i+1 < len(row); i += 2 {
		s0 += q[i] * half.F16ToF32(row[i])
		s1 += q[i+1] * half.F16ToF32(row[i+1])
	}
	for ; i < len(row); i++ {
		s0 += q[i] * half.F16ToF32(row[i])
	}
	return s0 + s1
}

func (r *f16Rows) axpy(acc []float32, w float32, t int) {
	row := r.data[t*r.d : (t+1)*r.d]
	for i, v := range row {
		acc[i] += w * half.F16ToF32(v)
	}
}
