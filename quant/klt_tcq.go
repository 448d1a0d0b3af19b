package quant

import (
	"fmt"
	"math"
	"sync"
)

// kltTCQ is the trellis-coded option of a KLT (KLTParams.Trellis): the
// components of 1 to TCQMaxBits bits, in field order, are one tail-biting
// trellis path through the whole vector (tools/kvcoding measured it ahead
// of a path per run of equal bits), each step with the unit-Gaussian union
// codebook of its width (GaussianTCQBook) scaled by σᵢ. A field of b bits
// holds the component's path bit (bit 0) and its b−1 bits of index in
// its subset, so the code keeps the scalar layout and size; wider
// components keep the scalar code. A component decodes on its own: its
// subset is a function of its own path bit and the ν before it, cyclically
// (Trellis), so a table per component of 2^(b+1) entries, indexed by
// 4·idx + subset, serves scoring as 2^b entries serve the scalar code.
type kltTCQ struct {
	tr      Trellis
	fields  []int // the TCQ fields' positions in KLT.fields, ascending
	byWidth [TCQMaxBits + 1]*TCQ
	w       []float64 // per TCQ field, the encoder's weight Weightᵢ·σᵢ²
	lbl     []uint8   // lbl[s*2+v]: the subset of the branch from s with path bit v
	pool    sync.Pool // *kltTCQScratch
}

// kltTCQScratch is one encoder's working memory: a driving TCQ with a
// step per TCQ field, and its sequence.
type kltTCQScratch struct {
	q      *TCQ
	x      []float64
	v, idx []int
}

// newKLTTCQ sets up the TCQ of k, whose fields and bits are set, for a
// trellis of the given states and the component weights weight (nil: 1).
func newKLTTCQ(k *KLT, states int, weight []float32) (*kltTCQ, error) {
	tr, err := NewTrellis(states)
	if err != nil {
		return nil, fmt.Errorf("quant: klt: %w", err)
	}
	t := &kltTCQ{tr: tr}
	var steps []*TCQ
	for j, f := range k.fields {
		b := int(k.bits[f.comp])
		if b > TCQMaxBits {
			continue
		}
		if t.byWidth[b] == nil {
			book, err := GaussianTCQBook(tr, b)
			if err != nil {
				return nil, err
			}
			if t.byWidth[b], err = NewTCQ(tr, b, book); err != nil {
				return nil, err
			}
		}
		t.fields = append(t.fields, j)
		steps = append(steps, t.byWidth[b])
		s := float64(k.sigma[f.comp])
		wt := 1.0
		if weight != nil {
			wt = float64(weight[f.comp])
		}
		t.w = append(t.w, wt*s*s)
	}
	for s := range tr.States() {
		for v := range 2 {
			t.lbl = append(t.lbl, uint8(tr.Subset(s, v)))
		}
	}
	n := len(t.fields)
	t.pool.New = func() any {
		if n == 0 {
			return &kltTCQScratch{}
		}
		first := steps[0]
		q, err := NewTCQ(tr, first.b, first.book)
		if err != nil {
			panic(err) // first's own codebook: a bug
		}
		q.TailBiting = true
		if err := q.SetSteps(steps); err != nil {
			panic(err)
		}
		return &kltTCQScratch{q: q, x: make([]float64, n), v: make([]int, n), idx: make([]int, n)}
	}
	return t, nil
}

// levels returns the union codebook of a TCQ field of b bits.
func (t *kltTCQ) levels(b int) []float64 { return t.byWidth[b].book }

// encodeTCQ writes the index bytes of y (turned and centred), scaled by
// inv = 1/ρ̂, into idx: the TCQ fields by one Viterbi pass over the
// vector, the rest by the nearest level.
func (k *KLT) encodeTCQ(idx []byte, y []float32, inv float64) {
	t := k.tcq
	sc := t.pool.Get().(*kltTCQScratch)
	defer t.pool.Put(sc)
	for i, j := range t.fields {
		c := k.fields[j].comp
		sc.x[i] = float64(y[c]) * inv / float64(k.sigma[c])
	}
	if len(t.fields) > 0 {
		sc.q.Encode(sc.x, t.w, sc.v, sc.idx)
	}
	w := bitWriter{buf: idx}
	ti := 0
	for j, f := range k.fields {
		b := k.bits[f.comp]
		if ti < len(t.fields) && t.fields[ti] == j {
			w.write(uint8(sc.v[ti]|sc.idx[ti]<<1), int(b))
			ti++
			continue
		}
		w.write(uint8(nearest(k.books[b], float32(float64(y[f.comp])*inv/float64(k.sigma[f.comp])))), int(b))
	}
	w.flush()
}

// entries sets ent[j] to field j's entry in a per-component table laid
// out as KLT.levels (its base plus the level), for the code whose index
// bytes are idx: the index itself for a scalar field, 4·idx + subset for
// a TCQ one, the subset from the path bits (bit 0 of each TCQ field),
// read cyclically.
func (k *KLT) entries(ent []int32, idx []byte) {
	t := k.tcq
	s, mask := 0, 0
	if n := len(t.fields); n > 0 {
		// The state before the first step: the path bits of the last ν
		// steps (tail-biting), bit b−1 that of step n−b.
		nu := t.tr.nu
		for b := 1; b <= nu; b++ {
			s |= k.fields[t.fields[((-b)%n+n)%n]].index(idx) & 1 << (b - 1)
		}
		mask = 1<<nu - 1
	}
	lbl := t.lbl
	for j := range k.fields {
		f := &k.fields[j]
		u := f.index(idx)
		if f.trellis {
			v := u & 1
			u = u>>1<<2 | int(lbl[s<<1|v])
			s = (s<<1 | v) & mask
		}
		ent[j] = int32(f.base + u)
	}
}

// tcqEntryBuf is room for the entries of one code on the stack, up to
// head dimension 256 (zeroed per call: no larger than the usual code).
type tcqEntryBuf [256]int32

// entryRoom returns room for the entries of a code of k: in buf when it
// fits.
func (k *KLT) entryRoom(buf *tcqEntryBuf) []int32 {
	if m := len(k.fields); m <= len(buf) {
		return buf[:m]
	}
	return make([]int32, len(k.fields))
}

// internalTCQ is internal for a TCQ KLT.
func (k *KLT) internalTCQ(y []float32, code []byte) {
	var buf tcqEntryBuf
	e := k.entryRoom(&buf)
	k.entries(e, code[1:])
	rho := k.scales[code[0]]
	copy(y, k.off)
	for j, f := range k.fields {
		y[f.comp] += rho * k.levels[e[j]]
	}
}

// expandCodedTCQ is expandCoded for a TCQ KLT.
func (k *KLT) expandCodedTCQ(row []float32, idx []byte) {
	var buf tcqEntryBuf
	e := k.entryRoom(&buf)
	k.entries(e, idx)
	for j, x := range e {
		row[j] = k.levels[x]
	}
}

// scoreTCQ is the scorer's Score for a TCQ KLT: per component a lookup
// of q'ᵢσᵢ·c[4·idx + subset].
func (s *kltScorer) scoreTCQ(dst []float32, codes []byte) {
	k := s.k
	var buf tcqEntryBuf
	e := k.entryRoom(&buf)
	for v := range dst {
		code := codes[v*k.bytes : (v+1)*k.bytes]
		k.entries(e, code[1:])
		var a0, a1, a2, a3 float32
		j := 0
		for ; j+4 <= len(e); j += 4 {
			a0 += s.table[e[j]]
			a1 += s.table[e[j+1]]
			a2 += s.table[e[j+2]]
			a3 += s.table[e[j+3]]
		}
		for ; j < len(e); j++ {
			a0 += s.table[e[j]]
		}
		dst[v] = s.base + k.scales[code[0]]*((a0+a1)+(a2+a3))
	}
}

// checkWeight reports whether w (nil or d values) holds finite weights
// ≥ 0.
func checkWeight(w []float32, d int) error {
	if w == nil {
		return nil
	}
	if len(w) != d {
		return fmt.Errorf("quant: klt: %d weights for dimension %d", len(w), d)
	}
	for i, v := range w {
		if !(v >= 0) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("quant: klt: component %d has weight %g", i, v)
		}
	}
	return nil
}
