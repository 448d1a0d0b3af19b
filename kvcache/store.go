package kvcache

import (
	"fmt"
	"slices"
	"sync"

	"github.com/turbomem/turbomem/quant"
	"github.com/turbomem/turbomem/tensor"
)

// The compressed part of one KV head's keys or values. Tokens arrive in
// order, in batches (one token, or a KIVI block of 32).

// keyStore scores queries against the stored keys.
type keyStore interface {
	// add encodes the tokens of xs (a multiple of d values).
	add(xs []float32) error
	// score sets dst[j][i] = <qs[j], k_{t0+i}> for i < len(dst[0]) and
	// every query j; the queries of a group share each pass over the
	// keys. t0 is a multiple of 32 (a KIVI key block).
	score(dst, qs [][]float32, t0 int)
	bytes() int
}

// valueStore sums weighted stored values in an internal basis.
type valueStore interface {
	add(xs []float32) error
	accLen() int
	// newAccumulator returns the scratch that accumulate and finish need
	// (nil if none); each goroutine uses its own.
	newAccumulator() quant.Accumulator
	// accumulate adds Σ_i ws[j][i]·v_{t0+i} (internal basis) to accs[j],
	// with a from newAccumulator, for queries that see nc compressed
	// positions (a tiered store's rates depend on it).
	accumulate(a quant.Accumulator, accs, ws [][]float32, t0, nc int)
	// finish writes an internal-basis sum to dst in the original basis
	// (acc may be overwritten), with a from newAccumulator: query heads
	// finish on several goroutines at once.
	finish(a quant.Accumulator, dst, acc []float32)
	bytes() int
}

// preparedKeys is a keyStore whose per-query set-up (rotating the
// queries, the centring term's weights) can be made once per attention
// step and shared by every slice of positions scored with it.
type preparedKeys interface {
	// begin sizes p for the queries p.qs, before any prepare.
	begin(p *queryPrep)
	// prepare sets query j of p.qs up; calls for different j may run at
	// once. A set-up that does not split by query is made whole for j =
	// 0 (and nothing for j > 0).
	prepare(p *queryPrep, j int)
	// scoreWith is score with the queries prepare set up; slices of one
	// step call it at once.
	scoreWith(dst [][]float32, p *queryPrep, t0 int)
}

// prepareKeys sets p up for k's scoring of the queries p.qs, where k
// has a set-up to share.
func prepareKeys(k keyStore, p *queryPrep) {
	beginKeys(k, p)
	for j := range p.qs {
		prepareQuery(k, p, j)
	}
}

// beginKeys is preparedKeys.begin, where k has a set-up to share.
func beginKeys(k keyStore, p *queryPrep) {
	if pk, ok := k.(preparedKeys); ok {
		pk.begin(p)
	}
}

// prepareQuery is preparedKeys.prepare, where k has a set-up to share.
func prepareQuery(k keyStore, p *queryPrep, j int) {
	if pk, ok := k.(preparedKeys); ok {
		pk.prepare(p, j)
	}
}

// scorePrepared scores the queries of p (set up by prepareKeys) against
// k's keys from t0, as k.score does.
func scorePrepared(k keyStore, dst [][]float32, p *queryPrep, t0 int) {
	if pk, ok := k.(preparedKeys); ok {
		pk.scoreWith(dst, p, t0)
		return
	}
	k.score(dst, p.qs, t0)
}

// scoreChunk is the number of tokens a group of queries scores before
// moving on, so that the group's passes over the keys hit cache: 256
// codes of 56 bytes (turbo3.5) are 14 KiB.
const scoreChunk = 256

// codeKeys holds keys as quantizer codes back to back.
type codeKeys struct {
	q     quant.Quantizer
	codes []byte
}

func (s *codeKeys) add(xs []float32) error { return appendCodes(s.q, &s.codes, xs) }

// codeSlack is the room stores keep after their last code: the klt lane
// kernels read a dword past a block of codes, and take the last block of
// a slice of codes (its end) on their slower row path unless the slice
// reaches that far (withSlack).
const codeSlack = 4

// withSlack returns codes[from:] reaching over the room after the last
// code (its contents unread by any result; see codeSlack).
func withSlack(codes []byte, from int) []byte {
	return codes[from:min(len(codes)+codeSlack, cap(codes))]
}

// appendCodes encodes the vectors of xs at the end of *codes.
func appendCodes(q quant.Quantizer, codes *[]byte, xs []float32) error {
	n := len(*codes)
	*codes = slices.Grow(*codes, len(xs)/q.Dim()*q.Bytes()+codeSlack)[:n+len(xs)/q.Dim()*q.Bytes()]
	if err := q.EncodeBatch((*codes)[n:], xs); err != nil {
		*codes = (*codes)[:n]
		return err
	}
	return nil
}

// appendF16 appends xs to rows as fp16 (tensor.ToF16: F16C where the
// CPU has it; every decode step of a compressed cache's window).
func appendF16(rows *[]uint16, xs []float32) {
	n := len(*rows)
	*rows = slices.Grow(*rows, len(xs))[:n+len(xs)]
	tensor.ToF16((*rows)[n:], xs)
}

func (s *codeKeys) bytes() int { return len(s.codes) }

// score uses quant.PrepareGroup where it has a kernel for several
// queries at once (the turbo formats and QJL: four query heads per pass
// over the codes), else each query's own scorer over chunks of
// codes that stay in cache for the whole group.
func (s *codeKeys) score(dst, qs [][]float32, t0 int) {
	codes := s.codes[t0*s.q.Bytes():]
	if len(qs) >= 4 && s.turbo() {
		g, err := quant.PrepareGroup(s.q, qs)
		if err != nil {
			panic(err) // lengths are the cache's own: a failure is a bug
		}
		g.Score(dst, codes)
		return
	}
	n := len(dst[0])
	scorers := make([]quant.Scorer, len(qs))
	for j, q := range qs {
		sc, err := s.q.Prepare(q)
		if err != nil {
			panic(err)
		}
		scorers[j] = sc
	}
	b := s.q.Bytes()
	for t := 0; t < n; t += scoreChunk {
		m := min(scoreChunk, n-t)
		for j, sc := range scorers {
			sc.Score(dst[j][t:t+m], codes[t*b:(t+m)*b])
		}
	}
}

// turbo reports whether the keys are made of scaled-code segments, which
// quant.PrepareGroup scores four queries at a time (TurboMSE, QJL, and
// TurboProd and outlier splits of them).
func (s *codeKeys) turbo() bool {
	switch s.q.(type) {
	case *quant.TurboMSE, *quant.Split, *quant.QJL, *quant.TurboProd:
		return true
	}
	return false
}

// laneKeys holds the turbo formats' keys 16 tokens to a block, scored
// with the tokens in SIMD lanes (quant.Lanes: no horizontal sums, four
// query heads per pass).
type laneKeys struct{ l *quant.Lanes }

func (s *laneKeys) add(xs []float32) error { return s.l.Append(xs) }
func (s *laneKeys) bytes() int             { return s.l.Bytes() }

func (s *laneKeys) score(dst, qs [][]float32, t0 int) {
	if err := s.l.Score(dst, qs, t0); err != nil {
		panic(err) // positions and lengths are the cache's own: a bug
	}
}

func (s *laneKeys) begin(p *queryPrep) { s.l.BeginQueries(&p.lanes, len(p.qs)) }

func (s *laneKeys) prepare(p *queryPrep, j int) {
	if err := s.l.PrepareQuery(&p.lanes, j, p.qs[j]); err != nil {
		panic(err) // lengths are the cache's own: a bug
	}
}

func (s *laneKeys) scoreWith(dst [][]float32, p *queryPrep, t0 int) {
	if err := s.l.ScorePrepared(dst, &p.lanes, t0); err != nil {
		panic(err)
	}
}

// groupKeys holds keys as quantizer codes scored with quant.PrepareGroup:
// each chunk of codes is expanded once into the internal basis and dotted
// with every query of the group. For PolarQuant, whose own scorer does
// scalar table lookups per code and query.
type groupKeys struct {
	q     quant.Quantizer
	codes []byte
}

func (s *groupKeys) add(xs []float32) error { return appendCodes(s.q, &s.codes, xs) }
func (s *groupKeys) bytes() int             { return len(s.codes) }

func (s *groupKeys) score(dst, qs [][]float32, t0 int) {
	g, err := quant.PrepareGroup(s.q, qs)
	if err != nil {
		panic(err) // lengths are the cache's own: a failure is a bug
	}
	g.Score(dst, s.codes[t0*s.q.Bytes():])
}

// blockKeys holds q8_0 or q4_0 keys. Scoring dequantizes a chunk of
// tokens once (tensor's llama.cpp decoder) into a small fp32 block and
// runs the fp32 row kernel over it for each query head of the group:
// cheaper than each head's fused scalar dequantize-dot.
type blockKeys struct {
	q     quant.Quantizer
	typ   tensor.DType
	codes []byte
	rows  sync.Pool // *[]float32: a chunk of dequantized keys, per slice at once
}

// blockChunk is the number of tokens dequantized at once (32 KiB at
// d = 128).
const blockChunk = 64

func (s *blockKeys) add(xs []float32) error { return appendCodes(s.q, &s.codes, xs) }
func (s *blockKeys) bytes() int             { return len(s.codes) }

func (s *blockKeys) score(dst, qs [][]float32, t0 int) {
	n, d, b := len(dst[0]), s.q.Dim(), s.q.Bytes()
	codes := s.codes[t0*b:]
	buf, _ := s.rows.Get().(*[]float32)
	if buf == nil {
		buf = new([]float32)
		*buf = make([]float32, blockChunk*d)
	}
	defer s.rows.Put(buf)
	rows := *buf
	for t := 0; t < n; t += blockChunk {
		m := min(blockChunk, n-t)
		if err := tensor.Dequantize(s.typ, rows[:m*d], codes[t*b:(t+m)*b]); err != nil {
			panic(err) // sizes are the cache's own
		}
		for j, q := range qs {
			tensor.DotRowsF32(dst[j][t:t+m], q, rows[:m*d])
		}
	}
}

// f16Keys holds keys as fp16 rows (a compressed value format with fp16
// keys).
type f16Keys struct {
	d    int
	rows []uint16
}

func (s *f16Keys) add(xs []float32) error { appendF16(&s.rows, xs); return nil }

func (s *f16Keys) bytes() int { return 2 * len(s.rows) }

func (s *f16Keys) score(dst, qs [][]float32, t0 int) {
	n := len(dst[0])
	rows := s.rows[t0*s.d:]
	for t := 0; t < n; t += scoreChunk {
		m := min(scoreChunk, n-t)
		for j, q := range qs {
			tensor.DotRowsF16(dst[j][t:t+m], q, rows[t*s.d:(t+m)*s.d])
		}
	}
}

// f32Keys holds keys as float32 rows.
type f32Keys struct {
	d    int
	rows []float32
}

func (s *f32Keys) add(xs []float32) error { s.rows = append(s.rows, xs...); return nil }
func (s *f32Keys) bytes() int             { return 4 * len(s.rows) }

func (s *f32Keys) score(dst, qs [][]float32, t0 int) {
	n := len(dst[0])
	rows := s.rows[t0*s.d:]
	for t := 0; t < n; t += scoreChunk {
		m := min(scoreChunk, n-t)
		for j, q := range qs {
			tensor.DotRowsF32(dst[j][t:t+m], q, rows[t*s.d:(t+m)*s.d])
		}
	}
}

// kiviKeys holds keys quantized per channel over blocks of kiviBlock
// tokens (KIVI): add takes whole blocks.
type kiviKeys struct {
	k      *quant.KIVI
	blocks []byte
}

// kiviBlock is the number of tokens that share one per-channel scale and
// zero point (KIVI's group size for keys).
const kiviBlock = 32

func (s *kiviKeys) add(xs []float32) error {
	d := s.k.Dim()
	if len(xs) != kiviBlock*d {
		return fmt.Errorf("kvcache: kivi keys: block of %d values, want %d", len(xs), kiviBlock*d)
	}
	n := len(s.blocks)
	s.blocks = append(s.blocks, make([]byte, s.k.ChannelBytes(kiviBlock))...)
	if err := s.k.EncodeChannels(s.blocks[n:], xs, kiviBlock); err != nil {
		s.blocks = s.blocks[:n]
		return err
	}
	return nil
}

func (s *kiviKeys) bytes() int { return len(s.blocks) }

// score scores the blocks for the whole group of queries at once
// (quant.KIVI.ScoreChannels: each block's indices expanded once), from
// block t0/kiviBlock on.
func (s *kiviKeys) score(dst, qs [][]float32, t0 int) {
	s.k.ScoreChannels(dst, qs, s.blocks[t0/kiviBlock*s.k.ChannelBytes(kiviBlock):], kiviBlock)
}

// codeValues holds values as quantizer codes, summed by a quant
// Accumulator (in the rotated basis for the rotation-based formats).
type codeValues struct {
	q     quant.Quantizer
	acc   quant.Accumulator
	codes []byte
}

func (s *codeValues) add(xs []float32) error { return appendCodes(s.q, &s.codes, xs) }

func (s *codeValues) bytes() int  { return len(s.codes) }
func (s *codeValues) accLen() int { return s.acc.AccLen() }

func (s *codeValues) newAccumulator() quant.Accumulator { return quant.NewAccumulator(s.q) }

func (s *codeValues) accumulate(a quant.Accumulator, accs, ws [][]float32, t0, _ int) {
	if len(ws[0]) > 0 {
		a.Accumulate(accs, ws, withSlack(s.codes, t0*s.q.Bytes()))
	}
}

func (s *codeValues) finish(a quant.Accumulator, dst, acc []float32) { a.Finish(dst, acc) }

// laneValues holds the turbo formats' values 16 tokens to a block and
// sums them with the tokens in SIMD lanes (quant.Lanes.Accumulate: four
// query heads per pass), in the quantizer's internal basis; acc brings a
// sum back (Finish; on each goroutine its own, from newAccumulator).
type laneValues struct {
	l   *quant.Lanes
	acc quant.Accumulator
}

func (s *laneValues) add(xs []float32) error            { return s.l.Append(xs) }
func (s *laneValues) bytes() int                        { return s.l.Bytes() }
func (s *laneValues) accLen() int                       { return s.acc.AccLen() }
func (s *laneValues) newAccumulator() quant.Accumulator { return quant.NewAccumulator(s.l.Quantizer()) }

func (s *laneValues) finish(a quant.Accumulator, dst, acc []float32) { a.Finish(dst, acc) }

func (s *laneValues) accumulate(_ quant.Accumulator, accs, ws [][]float32, t0, _ int) {
	if err := s.l.Accumulate(accs, ws, t0); err != nil {
		panic(err) // positions and lengths are the cache's own: a bug
	}
}

// f16Values holds values as fp16 rows.
type f16Values struct {
	d    int
	rows []uint16
}

func (s *f16Values) add(xs []float32) error { appendF16(&s.rows, xs); return nil }
func (s *f16Values) bytes() int             { return 2 * len(s.rows) }
func (s *f16Values) accLen() int            { return s.d }
func (s *f16Values) finish(_ quant.Accumulator, dst, acc []float32) {
	copy(dst, acc[:s.d])
}

func (s *f16Values) newAccumulator() quant.Accumulator { return nil }

func (s *f16Values) accumulate(_ quant.Accumulator, accs, ws [][]float32, t0, _ int) {
	if n := len(ws[0]); n > 0 {
		for j, acc := range accs {
			tensor.WeightedSumF16(acc, ws[j], s.rows[t0*s.d:(t0+n)*s.d])
		}
	}
}

// f32Values holds values as float32 rows.
type f32Values struct {
	d    int
	rows []float32
}

func (s *f32Values) add(xs []float32) error { s.rows = append(s.rows, xs...); return nil }
func (s *f32Values) bytes() int             { return 4 * len(s.rows) }
func (s *f32Values) accLen() int            { return s.d }
func (s *f32Values) finish(_ quant.Accumulator, dst, acc []float32) {
	copy(dst, acc[:s.d])
}

func (s *f32Values) newAccumulator() quant.Accumulator { return nil }

func (s *f32Values) accumulate(_ quant.Accumulator, accs, ws [][]float32, t0, _ int) {
	if n := len(ws[0]); n > 0 {
		for j, acc := range accs {
			tensor.WeightedSumF32(acc, ws[j], s.rows[t0*s.d:(t0+n)*s.d])
		}
	}
}
