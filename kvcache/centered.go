package kvcache

import "fmt"

// Centered keys. Real keys are far from centred: per KV head, a fixed
// vector μ (before RoPE) carries much of their energy, and after RoPE it
// turns with the position, k_t = R_t·(μ + r_t). A rotation-based
// quantizer spends its bits on ‖k_t‖, so the error on the part that
// differs between tokens, R_t·r_t, grows with the share of the mean.
// Measured on the reference model (eval kvdist-style replay of recorded
// keys, 2026-12-02): μ holds 30–91% of the key energy per layer (14–68%
// after RoPE, where the turning hides part of it); subtracting R_t·μ
// before quantizing lowers the mean KL of turbo3.5 keys alone without a
// recent window from 0.072 to 0.013, and 0.023 for the post-RoPE mean.
//
// The cache estimates μ from the sequence's first tokens (the window's
// rows when the first token is compressed, the first one, usually BOS or
// an attention sink, left out) as the mean of R_t⁻¹·k_t, stores k_t −
// m_t, m_t = R_t·μ (on the slow pairs interpolated within a chunk of
// positions: meanTurns), and adds ⟨q, m_t⟩ back when it scores
// (Rope.meanScores): a few kernel passes over small tables, and exact, so
// the attention never depends on μ being a good estimate — only the error
// does. Without a Rope (a Shape made outside a model) μ is the plain mean.

// centeredKeys holds keys with the turning mean taken out, in an inner
// store.
type centeredKeys struct {
	inner keyStore
	rope  *Rope      // nil: no rotation
	mu    []float32  // the pre-RoPE mean
	turns *meanTurns // the vector subtracted at each position
	n     int        // keys added: the position of the next
	x     []float64  // scratch
	m     []float64
	c     []float32 // add's centred keys
}

// newCenteredKeys returns keys centred on the pre-RoPE mean of the fp16
// rows (the sequence's first tokens, from position 0 on; the first is
// left out when there are others).
func newCenteredKeys(inner keyStore, rope *Rope, rows []uint16, d int) *centeredKeys {
	s := &centeredKeys{inner: inner, rope: rope, mu: make([]float32, d), x: make([]float64, d), m: make([]float64, d)}
	n := len(rows) / d
	first := min(1, n-1)
	sum := make([]float64, d)
	row := make([]float32, d)
	for t := first; t < n; t++ {
		toF32(row, rows[t*d:(t+1)*d])
		for i, v := range row {
			s.x[i] = float64(v)
		}
		rope.Rotate(s.m, s.x, -t)
		for i, v := range s.m {
			sum[i] += v
		}
	}
	mu := make([]float64, d)
	for i, v := range sum {
		s.mu[i] = float32(v / float64(max(n-first, 1)))
		mu[i] = float64(s.mu[i])
	}
	s.turns = newMeanTurns(rope, mu)
	return s
}

// center sets dst = x − m_t, m_t the mean turned to position t
// (meanTurns; dst may alias x).
func (s *centeredKeys) center(dst, x []float32, t int) { centerOn(s.turns, s.m, dst, x, t) }

// centerOn sets dst = x − m_t with the turns of a mean, m (length d) its
// scratch.
func centerOn(turns *meanTurns, m []float64, dst, x []float32, t int) {
	turns.turned(m, t)
	for i, v := range x {
		dst[i] = v - float32(m[i])
	}
}

// add stores each key of xs minus the mean turned to its position.
func (s *centeredKeys) add(xs []float32) error {
	d := len(s.mu)
	if len(xs)%d != 0 {
		return fmt.Errorf("kvcache: centered keys: %d values, not a multiple of %d", len(xs), d)
	}
	if cap(s.c) < len(xs) {
		s.c = make([]float32, len(xs))
	}
	c := s.c[:len(xs)]
	for t := 0; t < len(xs)/d; t++ {
		s.center(c[t*d:(t+1)*d], xs[t*d:(t+1)*d], s.n+t)
	}
	if err := s.inner.add(c); err != nil {
		return err
	}
	s.n += len(xs) / d
	return nil
}

// score scores the centred keys and adds the mean's share back.
func (s *centeredKeys) score(dst, qs [][]float32, t0 int) {
	s.inner.score(dst, qs, t0)
	s.rope.meanScores(dst, qs, s.mu, t0)
}

// begin sizes the inner store's set-up and the mean's share.
func (s *centeredKeys) begin(p *queryPrep) {
	beginKeys(s.inner, p)
	s.rope.beginPlan(&p.mean, len(p.qs))
}

// prepare sets up query j for the inner store and the mean's share.
func (s *centeredKeys) prepare(p *queryPrep, j int) {
	prepareQuery(s.inner, p, j)
	s.rope.planQuery(&p.mean, j, p.qs[j], s.mu)
}

// scoreWith is score with the set-up prepare made.
func (s *centeredKeys) scoreWith(dst [][]float32, p *queryPrep, t0 int) {
	scorePrepared(s.inner, dst, p, t0)
	p.mean.add(dst, t0)
}

// bytes returns the inner store's bytes (the cache counts the mean).
func (s *centeredKeys) bytes() int { return s.inner.bytes() }
