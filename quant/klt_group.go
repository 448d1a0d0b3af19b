package quant

import (
	"encoding/binary"
	"fmt"

	"github.com/turbomem/turbomem/tensor"
)

// The KLT's fast attention path. A code's coded components lie back to
// back in runs of equal bits (DesignKLT sorts them by bits, and the
// components of a run share σ): each run is unpacked a 64-bit word at a
// time through one 256-entry table of its levels σ·c[idx], into a row of
// the coded components (m = len(fields) values, the uncoded ones and the
// offset left out). A chunk of such rows, expanded once, serves every
// query head of a group:
//
//	score_j(v) = ⟨q'_j, off⟩ + ρ̂_v·⟨q'_j[coded], row_v⟩   (tensor's SIMD row kernel)
//	Σ_v w_v·x̃_v = Tᵀ·(off·Σ_v w_v + scatter(Σ_v (w_v·ρ̂_v)·row_v))
//
// so a query is turned once per attention step and a value sum once per
// head, and each index is unpacked once per step, not once per query head.
// Kept beside the per-query scorer (Prepare) and the decoding expander
// (kltExp), which the tests compare it with.

// kltRun is a run of n fields of equal bits and levels, from field first
// on, starting at bit pos of a code's index bytes.
type kltRun struct {
	pos, bits, n, first int
	per                 int           // fields read from one 64-bit word
	levels              *[256]float32 // σ·c[idx], zero past 2^bits
}

// kltRuns cuts k's fields into runs.
func kltRuns(k *KLT) []kltRun {
	var runs []kltRun
	pos := 0
	for j := 0; j < len(k.fields); {
		f := k.fields[j]
		b := int(k.bits[f.comp])
		r := kltRun{pos: pos, bits: b, first: j, per: (64 - 7) / b, levels: new([256]float32)}
		copy(r.levels[:], k.levels[f.base:f.base+1<<b])
		for j < len(k.fields) {
			g := k.fields[j]
			if int(k.bits[g.comp]) != b || k.sigma[g.comp] != k.sigma[f.comp] {
				break
			}
			r.n++
			pos += b
			j++
		}
		runs = append(runs, r)
	}
	return runs
}

// load64 returns the little-endian 64-bit word at b[i:], zero past its
// end.
func load64(b []byte, i int) uint64 {
	if i+8 <= len(b) {
		return binary.LittleEndian.Uint64(b[i:])
	}
	var w uint64
	for s, v := range b[i:] {
		w |= uint64(v) << (8 * s)
	}
	return w
}

// expandCoded writes the levels σᵢ·c[idxᵢ] of the coded components of the
// code whose index bytes start idx (bytes of later codes may follow)
// into row, in field order (len(k.fields) values).
func (k *KLT) expandCoded(row []float32, idx []byte) {
	for ri := range k.runs {
		r := &k.runs[ri]
		out := row[r.first : r.first+r.n]
		pos := r.pos
		for len(out) > 0 {
			c := min(r.per, len(out))
			unpackWord(out[:c], r.levels, load64(idx, pos>>3)>>(pos&7), uint(r.bits))
			out = out[c:]
			pos += c * r.bits
		}
	}
}

// unpackWord sets out[i] = levels[field i of w], the fields b bits each
// from bit 0 on (b·len(out) ≤ 64).
func unpackWord(out []float32, levels *[256]float32, w uint64, b uint) {
	mask := uint64(1)<<b - 1
	s := uint(0)
	for i := range out {
		out[i] = levels[uint8(w>>s&mask)]
		s += b
	}
}

// kltChunk is the float32 scratch of one chunk of expanded rows (16 KiB:
// 32 rows at d = 128).
const kltChunk = 4096

// expandChunk expands the n ≤ kltChunk/m codes of codes (back to back,
// more may follow) into rows (n·m values) and their scales into rho.
func (k *KLT) expandChunk(rows, rho []float32, codes []byte, n int) {
	m, b := len(k.fields), k.bytes
	for v := range n {
		rho[v] = k.scales[codes[v*b]]
		k.expandCoded(rows[v*m:(v+1)*m], codes[v*b+1:])
	}
}

// KLTQueries is a group of queries set up for KLT.ScoreQueries once per
// attention step; read-only afterwards, so the goroutines scoring
// slices of the same step share it.
type KLTQueries struct {
	qs   [][]float32 // per query, q' = T·q at the coded components, in field order
	base []float32   // per query, ⟨q', off⟩
	tmp  []float32
}

// PrepareQueries sets p up for scoring the queries qs (each of length
// Dim): each turned once into the transformed basis.
func (k *KLT) PrepareQueries(p *KLTQueries, qs [][]float32) error {
	m := len(k.fields)
	if cap(p.tmp) < k.d {
		p.tmp = make([]float32, k.d)
	}
	t := p.tmp[:k.d]
	for len(p.qs) < len(qs) {
		p.qs = append(p.qs, nil)
	}
	p.qs, p.base = p.qs[:len(qs)], p.base[:0]
	for j, q := range qs {
		if err := checkLen(k.name+" query", len(q), k.d); err != nil {
			return err
		}
		k.apply(t, q)
		if cap(p.qs[j]) < m {
			p.qs[j] = make([]float32, m)
		}
		qc := p.qs[j][:m]
		for f := range k.fields {
			qc[f] = t[k.fields[f].comp]
		}
		p.qs[j] = qc
		p.base = append(p.base, dot(t, k.off))
	}
	return nil
}

// ScoreQueries sets dst[j][v] to query j's score (what its Prepare's
// scorer gives, up to float32 rounding) against code v of codes, for v <
// len(dst[0]), the queries set up by PrepareQueries; each chunk of codes
// is unpacked once for all of them.
func (k *KLT) ScoreQueries(dst [][]float32, p *KLTQueries, codes []byte) error {
	if len(dst) != len(p.qs) {
		return fmt.Errorf("quant: %s: %d score rows for %d queries", k.name, len(dst), len(p.qs))
	}
	if len(dst) == 0 || len(dst[0]) == 0 {
		return nil
	}
	n := len(dst[0])
	if len(codes) < n*k.bytes {
		return fmt.Errorf("quant: %s: %d code bytes for %d codes", k.name, len(codes), n)
	}
	m := len(k.fields)
	var buf [kltChunk]float32
	var rho [kltChunk]float32
	per := max(1, kltChunk/max(m, 1))
	for i := 0; i < n; i += per {
		c := min(per, n-i)
		k.expandChunk(buf[:c*m], rho[:c], codes[i*k.bytes:], c)
		for j, d := range dst {
			out := d[i : i+c]
			if m > 0 {
				tensor.DotRowsF32(out, p.qs[j], buf[:c*m])
			} else {
				clear(out)
			}
			base := p.base[j]
			for v := range out {
				out[v] = base + rho[v]*out[v]
			}
		}
	}
	return nil
}

// kltGroup is the GroupScorer of a KLT (PrepareGroup).
type kltGroup struct {
	k *KLT
	p KLTQueries
}

func (g *kltGroup) Score(dst [][]float32, codes []byte) {
	if err := g.k.ScoreQueries(dst, &g.p, codes); err != nil {
		panic(err) // lengths checked by PrepareGroup; the codes are the caller's
	}
}

// kltAcc is the Accumulator of a KLT: per head, the sum of the weighted
// expanded rows (m values, each row's weights times its scale) and, last,
// the sum of the weights (the offset's share), turned back once by
// Finish.
type kltAcc struct {
	k    *KLT
	rows []float32
	rho  []float32
	w    []float32
	y    []float32
}

func newKLTAcc(k *KLT) *kltAcc { return &kltAcc{k: k} }

func (a *kltAcc) AccLen() int { return len(a.k.fields) + 1 }

func (a *kltAcc) Accumulate(accs, ws [][]float32, codes []byte) {
	if len(accs) == 0 || len(ws[0]) == 0 {
		return
	}
	k := a.k
	m := len(k.fields)
	per := max(1, kltChunk/max(m, 1))
	if a.rows == nil {
		a.rows, a.rho, a.w = make([]float32, kltChunk), make([]float32, per), make([]float32, per)
	}
	total := len(ws[0])
	for i := 0; i < total; i += per {
		c := min(per, total-i)
		k.expandChunk(a.rows[:c*m], a.rho[:c], codes[i*k.bytes:], c)
		for h, acc := range accs {
			w := ws[h][i : i+c]
			var sum float32
			for v, x := range w {
				a.w[v] = x * a.rho[v]
				sum += x
			}
			if m > 0 {
				tensor.WeightedSumF32(acc[:m], a.w[:c], a.rows[:c*m])
			}
			acc[m] += sum
		}
	}
}

func (a *kltAcc) Finish(dst, acc []float32) {
	k := a.k
	if a.y == nil {
		a.y = make([]float32, k.d)
	}
	m := len(k.fields)
	s := acc[m]
	for i, o := range k.off {
		a.y[i] = s * o
	}
	for f := range k.fields {
		a.y[k.fields[f].comp] += acc[f]
	}
	k.invert(dst, a.y)
}
