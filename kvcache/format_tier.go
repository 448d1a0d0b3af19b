package kvcache

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/turbomem/turbomem/quant"
)

// Tiered formats. Attention beyond the fp16 window falls off with a
// token's age: measured on the model suite (BENCHMARKS.md, "Codes re-made
// at lower rates as tokens age"), the 320 tokens just past a 64-token
// window carry 83–89% of the squared attention weights beyond it. A
// tiered format spends its bits there. "tcq3.5>2@384" codes a token that
// leaves the window as tcq3.5 and, once 384 newer tokens are held,
// re-codes it as tcq2 from its decoded vector: what a cache
// that holds only codes can do. Both codes are calibrated designs of the
// same family (klt or tcq), the keys centred on the calibration's mean
// like every klt key.
//
// The bits are those of the mix a cache holds, so they depend on its
// length: with the default window, tcq3.5>2@384 holds 2.5 bits per
// coordinate at 1024 tokens, 2.12 at 4096, and tends to 2 (Config.BitsAt
// and BytesAt give the closed form at any length; Format.Bits, which has
// one rate to give, refuses a tiered format).
//
// "tcq3.5>2~2.5" holds a share of each head's compressed tokens, the
// newest, at tcq3.5 and the rest at tcq2: a band that grows with the
// context, sized so that the codes average at most 2.5 bits at every
// length. The shares are the heads' own, from the calibration's attention
// profiles (tier_shares.go), and average a third: a head whose attention
// stays in the window keeps few tokens at the high rate, one that spreads
// it far keeps many. Without profiles (covariances measured before they
// were recorded) every head holds the newest third (at 1024 tokens with
// the default window, tcq3.5>2@384; at 4096 a band of 1344 tokens).
//
// A query sees a token in the tier it was in when the query came: a
// prompt's chunk attends each of its queries on the codes it would have
// had token by token (the high-rate codes of tokens re-coded within the
// chunk are kept until its queries are done). Export and Import carry a
// tiered stream's tokens in their high-rate codes: an importing cache
// re-codes what has aged at its own length, as computing did, so it holds
// the exporter's bytes (ExportRows makes the high-rate codes again from
// the rows where the stores have dropped them).

// maxTierAge bounds the age a tiered format re-codes at.
const maxTierAge = 1 << 20

// parseTiered returns the tiered format called name, HIGH>LOW@AGE or
// HIGH>LOW~BITS: HIGH a calibrated format, LOW a lower rate of its
// family, AGE a token count, BITS an average rate between them.
func parseTiered(name string) (Format, error) {
	bad := func(why string, args ...any) (Format, error) {
		return Format{}, fmt.Errorf("kvcache: tiered KV format %q (HIGH>LOW@AGE or HIGH>LOW~BITS, e.g. tcq3.5>2@384, tcq3.5>2~2.5): %s", name, fmt.Sprintf(why, args...))
	}
	hiName, rest, _ := strings.Cut(name, ">")
	sep := "@"
	if strings.Contains(rest, "~") {
		sep = "~"
	}
	loRate, ageText, ok := strings.Cut(rest, sep)
	if !ok {
		return bad("no @AGE or ~BITS")
	}
	hi, err := ParseFormat(hiName)
	if err != nil || strings.ContainsAny(hiName, ">@") {
		return bad("%q is not a format", hiName)
	}
	if !hi.calibrated() {
		return bad("%s is not a calibrated format (klt or tcq)", hiName)
	}
	family := strings.TrimRight(hiName, "0123456789.")
	rate, err := strconv.ParseFloat(loRate, 64)
	if err != nil {
		return bad("%q is not a rate of the %s family", loRate, family)
	}
	lo, err := ParseFormat(family + strconv.FormatFloat(rate, 'g', -1, 64))
	if err != nil {
		return bad("%s%s is not a format of the %s family", family, loRate, family)
	}
	if lo.c.rate >= hi.c.rate {
		return bad("the later rate %s is not below %s", lo, hi)
	}
	loShort := strings.TrimPrefix(lo.name, family)
	if sep == "~" {
		bits, err := strconv.ParseFloat(ageText, 64)
		if err != nil || !(bits > lo.c.rate && bits < hi.c.rate) {
			return bad("the average rate %q is not between %g and %g", ageText, lo.c.rate, hi.c.rate)
		}
		f := Format{name: fmt.Sprintf("%s>%s~%s", hi, loShort, strconv.FormatFloat(bits, 'g', -1, 64)), c: hi.c, lo: lo.c, share: (bits - lo.c.rate) / (hi.c.rate - lo.c.rate)}
		return canonical(f, name, bad)
	}
	age, err := strconv.Atoi(ageText)
	if err != nil || age < 1 || age > maxTierAge {
		return bad("age %q is not a whole number of tokens from 1 to %d", ageText, maxTierAge)
	}
	return canonical(Format{name: fmt.Sprintf("%s>%s@%d", hi, loShort, age), c: hi.c, lo: lo.c, age: age}, name, bad)
}

// canonical returns f if name is its one spelling, else bad's error
// naming it: a format's name is what its String gives (cache exports,
// plans and metrics label caches by it).
func canonical(f Format, name string, bad func(string, ...any) (Format, error)) (Format, error) {
	if f.name != name {
		return bad("write it %s", f.name)
	}
	return f, nil
}

// tiered reports whether the format re-codes tokens as they age.
func (f Format) tiered() bool { return f.lo != nil }

// tiered reports whether the key or the value format is tiered.
func (s Spec) tiered() bool { return s.K.tiered() || s.V.tiered() }

// checkTier reports whether a tiered format's age lies beyond the fp16
// window (a token must have left it to be re-coded).
func (f Format) checkTier(window int) error {
	if f.tiered() && f.share == 0 && f.age <= window {
		return fmt.Errorf("kvcache: format %s re-codes tokens at age %d, inside the fp16 window of %d: choose an age above it", f, f.age, window)
	}
	return nil
}

// span returns how many of the newest of nc compressed tokens a tiered
// format holds at its high rate, with a window of the given length: its
// share of them (rounded down), or those younger than its age.
func (f Format) span(window, nc int) int {
	if f.share > 0 {
		return int(math.Floor(float64(nc)*f.share + 1e-9))
	}
	return f.age - window
}

// headSpan returns the function that says how many of nc compressed
// tokens layer's KV head h holds at the high rate of f, one of s's
// formats: for a HIGH>LOW~BITS format whose covariances hold attention
// profiles the head's own share of them (tierShares), else f.span.
func (s Spec) headSpan(f Format, layer, h int) func(nc int) int {
	if f.share > 0 && s.Cov != nil {
		if sh := s.Cov.tierShares(s.window(), f.share); layer < len(sh) && h < len(sh[layer]) {
			share := sh[layer][h]
			return func(nc int) int { return int(math.Floor(float64(nc)*share + 1e-9)) }
		}
	}
	window := s.window()
	return func(nc int) int { return f.span(window, nc) }
}

// codeBytes returns the bytes of one head's codes of nc compressed
// tokens (keys when key is true), hi of them at a tiered format's high
// rate: the closed form of the stores' bytes.
func (f Format) codeBytes(d int, key bool, nc, hi int) int64 {
	if !f.tiered() {
		return int64(nc) * int64(f.c.tokenBytes(d, key))
	}
	hi = min(nc, hi)
	return int64(hi)*int64(f.c.tokenBytes(d, key)) + int64(nc-hi)*int64(f.lo.tokenBytes(d, key))
}

// tiers is the part of a tiered key or value store that moves tokens
// from the high rate to the low: tokens [0, nlo) held as low-rate codes
// (*lo), [hiAt, n) as high-rate ones (*hi), hiAt ≤ nlo; the high-rate
// codes of tokens before nlo are dropped by trim.
type tiers struct {
	hq, lq *quant.KLT
	hi, lo *[]byte          // the codes of the two stores
	span   func(nc int) int // of nc tokens, how many are held at the high rate
	hiAt   int
	x      []float32
	sc     quant.Scratch
	// pend holds the low-rate codes of tokens from pendAt on (−1: none),
	// made ahead of the put that re-codes them: by an attention step for
	// the next token (recodeAhead), by a chunk's region for its tokens
	// (Compressed.recodeMoved).
	pend   []byte
	pendAt int
}

// n returns the number of tokens held.
func (t *tiers) n() int { return t.hiAt + len(*t.hi)/t.hq.Bytes() }

// nlo returns the number of tokens held at the low rate.
func (t *tiers) nlo() int { return len(*t.lo) / t.lq.Bytes() }

// settle re-codes at the low rate, from their decoded high-rate codes,
// the tokens that are no longer among the newest span (codes made ahead
// taken as they are).
func (t *tiers) settle() error {
	lb := t.lq.Bytes()
	for p := t.nlo(); p < t.bound(t.n()); p++ {
		k := len(*t.lo)
		*t.lo = slices.Grow(*t.lo, lb+codeSlack)[:k+lb]
		if i := p - t.pendAt; t.pendAt >= 0 && i >= 0 && (i+1)*lb <= len(t.pend) {
			copy((*t.lo)[k:], t.pend[i*lb:])
			continue
		}
		if err := t.recode((*t.lo)[k:], p, &t.x, &t.sc); err != nil {
			*t.lo = (*t.lo)[:k]
			return err
		}
	}
	t.pendAt = -1
	return nil
}

// recode writes to dst the low-rate code of held token p's decoded
// high-rate code, with scratch x and sc.
func (t *tiers) recode(dst []byte, p int, x *[]float32, sc *quant.Scratch) error {
	hb := t.hq.Bytes()
	i := (p - t.hiAt) * hb
	return t.recodeFrom(dst, (*t.hi)[i:i+hb], p, x, sc)
}

// recodeFrom writes to dst the low-rate code of token p, whose
// high-rate code is hi.
func (t *tiers) recodeFrom(dst, hi []byte, p int, x *[]float32, sc *quant.Scratch) error {
	*x = grown(*x, t.hq.Dim())
	if err := t.hq.Decode(*x, hi); err != nil {
		return fmt.Errorf("kvcache: re-coding token %d: %w", p, err)
	}
	if err := quant.EncodeBatchScratch(t.lq, dst, *x, sc); err != nil {
		return fmt.Errorf("kvcache: re-coding token %d: %w", p, err)
	}
	return nil
}

// recodeChunk returns the tokens [p0, p1) that the put of m more
// high-rate codes re-codes: the re-codings a chunk makes ahead, side by
// side (preRecode), before its puts.
func (t *tiers) recodeChunk(m int) (p0, p1 int) {
	return t.nlo(), t.bound(t.n() + m)
}

// preRecode writes to dst the low-rate codes of tokens [p0, p1), each
// from its held high-rate code or, from n() on, from codes, the high-rate
// codes of the tokens to be put.
func (t *tiers) preRecode(dst []byte, p0, p1 int, codes []byte, sc *encScratch) error {
	hb, lb, n := t.hq.Bytes(), t.lq.Bytes(), t.n()
	for p := p0; p < p1; p++ {
		var hi []byte
		if p < n {
			hi = (*t.hi)[(p-t.hiAt)*hb : (p-t.hiAt+1)*hb]
		} else {
			hi = codes[(p-n)*hb : (p-n+1)*hb]
		}
		if err := t.recodeFrom(dst[(p-p0)*lb:(p-p0+1)*lb], hi, p, &sc.x, &sc.q); err != nil {
			return err
		}
	}
	return nil
}

// recodeAhead makes the low-rate code of the token that the put of one
// more token will re-code, if the store holds it, with scratch sc: an
// attention step's early task (Compressed.encodeAhead), beside its
// slices, which read the high-rate codes alone. A failure leaves the
// re-coding to settle, which reports it.
func (t *tiers) recodeAhead(sc *encScratch) {
	t.pendAt = -1
	p := t.bound(t.n()+1) - 1
	if p < t.nlo() || p >= t.n() {
		return
	}
	t.pend = grown(t.pend, t.lq.Bytes())
	if t.recode(t.pend, p, &sc.x, &sc.q) == nil {
		t.pendAt = p
	}
}

// trimSlack is the number of re-coded tokens' high-rate codes a store
// keeps beyond the count of Bytes before it drops them: memory the
// count leaves out stays under 64 codes per store, at the price of
// copying the live high-rate codes once every 64 re-codings (a ~ format
// holds its head's share of a long context's tokens there, a third on
// average).
const trimSlack = 64

// trim drops the high-rate codes of tokens held at the low rate once
// there are trimSlack of them.
func (t *tiers) trim() {
	hb := t.hq.Bytes()
	if dead := t.nlo() - t.hiAt; dead >= trimSlack {
		*t.hi = append((*t.hi)[:0], (*t.hi)[dead*hb:]...)
		t.hiAt += dead
	}
}

// bound returns the first position a query that sees nc compressed
// tokens reads at the high rate.
func (t *tiers) bound(nc int) int { return max(0, nc-t.span(nc)) }

// add encodes the tokens of xs at the high rate and re-codes what has
// aged.
func (t *tiers) add(xs []float32) error {
	return t.added(func() error { return appendCodes(t.hq, t.hi, xs) })
}

// bytes returns the live codes' bytes: each token once, in its tier.
func (t *tiers) bytes() int { return len(*t.lo) + (t.n()-t.nlo())*t.hq.Bytes() }

// added runs add, which appends high-rate codes, and re-codes what has
// aged; if the re-coding fails the new codes go again (tokens re-coded
// before the failure stay: the bound decides which code a query reads,
// and their high-rate codes are still held).
func (t *tiers) added(add func() error) error {
	n0 := len(*t.hi)
	if err := add(); err != nil {
		t.pendAt = -1 // made for tokens that did not come
		return err
	}
	if err := t.settle(); err != nil {
		*t.hi = (*t.hi)[:n0]
		t.pendAt = -1
		return err
	}
	return nil
}

// cut returns the views of rows[j][a:b] for every j, in buf's room.
func cut(buf *[8][]float32, rows [][]float32, a, b int) [][]float32 {
	out := buf[:0]
	for _, r := range rows {
		out = append(out, r[a:b])
	}
	return out
}

// tieredKeys holds a tiered format's (centred) keys: klt keys at each
// rate.
type tieredKeys struct {
	tiers
	hk, lk *kltKeys
}

func newTieredKeys(hq, lq *quant.KLT, span func(int) int) *tieredKeys {
	s := &tieredKeys{hk: &kltKeys{codeKeys: codeKeys{q: hq}, k: hq}, lk: &kltKeys{codeKeys: codeKeys{q: lq}, k: lq}}
	s.tiers = tiers{hq: hq, lq: lq, hi: &s.hk.codes, lo: &s.lk.codes, span: span, pendAt: -1}
	return s
}

// begin sizes the set-up of both rates' queries (the low rate's in
// p.tier).
func (s *tieredKeys) begin(p *queryPrep) {
	if p.tier == nil {
		p.tier = new(queryPrep)
	}
	p.tier.qs = p.qs
	s.hk.begin(p)
	s.lk.begin(p.tier)
}

func (s *tieredKeys) prepare(p *queryPrep, j int) {
	s.hk.prepare(p, j)
	s.lk.prepare(p.tier, j)
}

// scoreWith scores positions before the query's bound (p.nc) on the
// low-rate codes, the rest on the high-rate ones.
func (s *tieredKeys) scoreWith(dst [][]float32, p *queryPrep, t0 int) {
	m := len(dst[0])
	b := min(max(s.bound(p.nc), t0), t0+m) // the first position at the high rate
	var buf [8][]float32
	if b > t0 {
		s.lk.scoreWith(cut(&buf, dst, 0, b-t0), p.tier, t0)
	}
	if b < t0+m {
		s.hk.scoreWith(cut(&buf, dst, b-t0, m), p, b-s.hiAt)
	}
}

// score is scoreWith with queries set up for this call alone, as a query
// after the last token sees them.
func (s *tieredKeys) score(dst, qs [][]float32, t0 int) {
	p := queryPrep{qs: qs, nc: s.n()}
	prepareKeys(s, &p)
	s.scoreWith(dst, &p, t0)
}

// tieredValues holds a tiered format's values: klt values at each rate,
// summed side by side (the low rate's sum first) and brought back by
// each rate's accumulator.
type tieredValues struct {
	tiers
	hv, lv *codeValues
}

func newTieredValues(hq, lq *quant.KLT, span func(int) int) *tieredValues {
	s := &tieredValues{hv: &codeValues{q: hq, acc: quant.NewAccumulator(hq)}, lv: &codeValues{q: lq, acc: quant.NewAccumulator(lq)}}
	s.tiers = tiers{hq: hq, lq: lq, hi: &s.hv.codes, lo: &s.lv.codes, span: span, pendAt: -1}
	return s
}

func (s *tieredValues) accLen() int { return s.lv.accLen() + s.hv.accLen() }

// tierAcc is a tiered value store's accumulator: the high rate's (which
// it is, for quant.Accumulator's sake), the low rate's, and a sum's
// scratch.
type tierAcc struct {
	quant.Accumulator
	lo  quant.Accumulator
	out []float32
}

func (s *tieredValues) newAccumulator() quant.Accumulator {
	return &tierAcc{Accumulator: s.hv.newAccumulator(), lo: s.lv.newAccumulator(), out: make([]float32, s.hq.Dim())}
}

func (s *tieredValues) accumulate(a quant.Accumulator, accs, ws [][]float32, t0, nc int) {
	ta := a.(*tierAcc)
	m := len(ws[0])
	b := min(max(s.bound(nc), t0), t0+m)
	la := s.lv.accLen()
	var wb, ab [8][]float32
	if b > t0 {
		s.lv.accumulate(ta.lo, cut(&ab, accs, 0, la), cut(&wb, ws, 0, b-t0), t0, nc)
	}
	if b < t0+m {
		s.hv.accumulate(ta.Accumulator, cut(&ab, accs, la, len(accs[0])), cut(&wb, ws, b-t0, m), b-s.hiAt, nc)
	}
}

// finish brings both rates' sums back and adds them.
func (s *tieredValues) finish(a quant.Accumulator, dst, acc []float32) {
	ta := a.(*tierAcc)
	la := s.lv.accLen()
	ta.lo.Finish(dst, acc[:la])
	ta.Accumulator.Finish(ta.out, acc[la:])
	for i, v := range ta.out {
		dst[i] += v
	}
}

// Tiered stores (keys and values alike, through tiers) encode apart at
// the high rate (chunk.go), re-code as they put the codes, and export
// the high-rate codes they still hold.

func (t *tiers) codeBytes() int { return t.hq.Bytes() }

func (t *tiers) encode(dst []byte, xs []float32, _ int, sc *encScratch) error {
	return quant.EncodeBatchScratch(t.hq, dst, xs, &sc.q)
}

// putCodes appends n high-rate codes and re-codes what has aged.
func (t *tiers) putCodes(b []byte, n int) error {
	return t.added(func() error { return putSized(t.hi, b, n, t.hq.Bytes()) })
}

func (t *tiers) checkCodes(b []byte, n int) error { return checkEach(t.hq, b, n) }

// exportCodes returns the high-rate codes of tokens [t0, t1), which
// putCodes takes back; those of tokens re-coded at the low rate are held
// only until trim drops them (Compressed.ExportRows encodes them again).
func (t *tiers) exportCodes(t0, t1 int) ([]byte, error) {
	if t0 < t.hiAt {
		return nil, fmt.Errorf("kvcache: the high-rate codes of tokens before %d are dropped (re-coded at the low rate): tokens [%d, %d) export from their rows", t.hiAt, t0, t1)
	}
	return sliceCodes(*t.hi, t.hq.Bytes(), t0-t.hiAt, t1-t.hiAt)
}
