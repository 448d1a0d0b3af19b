package kvcache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"

	"github.com/turbomem/turbomem/quant"
)

// Exported codes. Export writes the compressed codes a Compressed cache
// holds for a range of token positions, with everything a cache needs to
// take them back: the formats, window, seed and correction of the layer
// (which fix every rotation, codebook and sketch), the shape and the
// rotary embedding's frequencies, the caller's tag (a model's identity),
// and, for a range that starts within the tokens the calibration is
// estimated from, each KV head's calibration (outlier channels, the keys'
// mean). Import appends them to a cache of the same configuration that
// holds exactly the tokens before the range: the cache then holds the
// very bytes the exporting cache held, and attends bit for bit as it
// did. The bytes carry a version and a CRC-32C; Import refuses anything
// that does not match (another format, model, shape, seed, range,
// calibration) or does not check, with an error, before it changes the
// cache.
//
// Layout (little-endian): the magic "TMKV", version byte, then the
// header (tag, key and value format names, window, step, layer seed,
// correction, layer, query heads, KV heads, head dimension, rope
// fingerprint, first and end position), a calibration flag and per head
// its outlier lists and mean, then per head the keys' and the values'
// codes (a length, then the bytes), and the CRC-32C of all before it.

// exportVersion is the layout version Export writes and Import reads.
const exportVersion = 1

var (
	exportMagic = []byte("TMKV")
	castagnoli  = crc32.MakeTable(crc32.Castagnoli)
)

// maxExportTag bounds the caller's tag.
const maxExportTag = 255

// codeStore is a key or value store whose codes can be read out for a
// range of tokens and appended back (export.go).
type codeStore interface {
	// exportCodes returns the bytes of tokens [t0, t1) as the store holds them.
	exportCodes(t0, t1 int) ([]byte, error)
	// putCodes appends n tokens' bytes that codes returned.
	putCodes(b []byte, n int) error
	// checkCodes returns an error if b, n tokens' bytes of the right
	// length, holds a code the store's quantizer never writes (a
	// non-finite or negative scale, say: quant's Check), decoding nothing.
	checkCodes(b []byte, n int) error
}

func (s *codeKeys) checkCodes(b []byte, n int) error   { return checkEach(s.q, b, n) }
func (s *groupKeys) checkCodes(b []byte, n int) error  { return checkEach(s.q, b, n) }
func (s *blockKeys) checkCodes(b []byte, n int) error  { return checkEach(s.q, b, n) }
func (s *codeValues) checkCodes(b []byte, n int) error { return checkEach(s.q, b, n) }
func (s *laneKeys) checkCodes(b []byte, n int) error   { return checkEach(s.l.Quantizer(), b, n) }
func (s *laneValues) checkCodes(b []byte, n int) error { return checkEach(s.l.Quantizer(), b, n) }

// Rows of an uncompressed store: finite values (a model's keys and
// values are; NaN would spread through every later attention).
func (s *f16Keys) checkCodes(b []byte, _ int) error   { return finiteF16(b) }
func (s *f16Values) checkCodes(b []byte, _ int) error { return finiteF16(b) }
func (s *f32Keys) checkCodes(b []byte, _ int) error   { return finiteF32(b) }
func (s *f32Values) checkCodes(b []byte, _ int) error { return finiteF32(b) }

func finiteF16(b []byte) error {
	for i := 0; i+2 <= len(b); i += 2 {
		if binary.LittleEndian.Uint16(b[i:])&0x7c00 == 0x7c00 {
			return fmt.Errorf("kvcache: fp16 row value %d is not finite", i/2)
		}
	}
	return nil
}

func finiteF32(b []byte) error {
	for i := 0; i+4 <= len(b); i += 4 {
		if binary.LittleEndian.Uint32(b[i:])&0x7f800000 == 0x7f800000 {
			return fmt.Errorf("kvcache: float32 row value %d is not finite", i/4)
		}
	}
	return nil
}

func (s *kiviKeys) checkCodes(b []byte, n int) error {
	if n%kiviBlock != 0 {
		return fmt.Errorf("kvcache: kivi keys: %d tokens, not whole blocks of %d", n, kiviBlock)
	}
	size := s.k.ChannelBytes(kiviBlock)
	if len(b) != n/kiviBlock*size {
		return fmt.Errorf("kvcache: kivi keys: %d bytes of codes for %d tokens", len(b), n)
	}
	for i := range n / kiviBlock {
		if err := s.k.CheckChannels(b[i*size:(i+1)*size], kiviBlock); err != nil {
			return fmt.Errorf("tokens [%d, %d): %w", i*kiviBlock, (i+1)*kiviBlock, err)
		}
	}
	return nil
}

func (s *centeredKeys) checkCodes(b []byte, n int) error { return storeCodes(s.inner).checkCodes(b, n) }

// checkEach checks n codes of q, back to back in b.
func checkEach(q quant.Quantizer, b []byte, n int) error {
	size := q.Bytes()
	if len(b) != n*size {
		return fmt.Errorf("kvcache: %d bytes of codes for %d tokens of %d bytes", len(b), n, size)
	}
	for t := range n {
		if err := q.Check(b[t*size : (t+1)*size]); err != nil {
			return fmt.Errorf("token %d: %w", t, err)
		}
	}
	return nil
}

func (s *codeKeys) exportCodes(t0, t1 int) ([]byte, error) {
	return sliceCodes(s.codes, s.q.Bytes(), t0, t1)
}
func (s *codeKeys) putCodes(b []byte, n int) error { return putSized(&s.codes, b, n, s.q.Bytes()) }
func (s *groupKeys) exportCodes(t0, t1 int) ([]byte, error) {
	return sliceCodes(s.codes, s.q.Bytes(), t0, t1)
}
func (s *groupKeys) putCodes(b []byte, n int) error { return putSized(&s.codes, b, n, s.q.Bytes()) }
func (s *blockKeys) exportCodes(t0, t1 int) ([]byte, error) {
	return sliceCodes(s.codes, s.q.Bytes(), t0, t1)
}
func (s *blockKeys) putCodes(b []byte, n int) error { return putSized(&s.codes, b, n, s.q.Bytes()) }
func (s *codeValues) exportCodes(t0, t1 int) ([]byte, error) {
	return sliceCodes(s.codes, s.q.Bytes(), t0, t1)
}
func (s *codeValues) putCodes(b []byte, n int) error { return putSized(&s.codes, b, n, s.q.Bytes()) }

func (s *laneKeys) exportCodes(t0, t1 int) ([]byte, error)   { return laneCodes(s.l, t0, t1) }
func (s *laneKeys) putCodes(b []byte, n int) error           { return putLanes(s.l, b, n) }
func (s *laneValues) exportCodes(t0, t1 int) ([]byte, error) { return laneCodes(s.l, t0, t1) }
func (s *laneValues) putCodes(b []byte, n int) error         { return putLanes(s.l, b, n) }

func (s *f16Keys) exportCodes(t0, t1 int) ([]byte, error)   { return f16Bytes(s.rows, s.d, t0, t1) }
func (s *f16Keys) putCodes(b []byte, n int) error           { return putF16(&s.rows, b, n, s.d) }
func (s *f16Values) exportCodes(t0, t1 int) ([]byte, error) { return f16Bytes(s.rows, s.d, t0, t1) }
func (s *f16Values) putCodes(b []byte, n int) error         { return putF16(&s.rows, b, n, s.d) }
func (s *f32Keys) exportCodes(t0, t1 int) ([]byte, error)   { return f32Bytes(s.rows, s.d, t0, t1) }
func (s *f32Keys) putCodes(b []byte, n int) error           { return putF32(&s.rows, b, n, s.d) }
func (s *f32Values) exportCodes(t0, t1 int) ([]byte, error) { return f32Bytes(s.rows, s.d, t0, t1) }
func (s *f32Values) putCodes(b []byte, n int) error         { return putF32(&s.rows, b, n, s.d) }

// codes of KIVI keys: whole blocks of kiviBlock tokens only.
func (s *kiviKeys) exportCodes(t0, t1 int) ([]byte, error) {
	if t0%kiviBlock != 0 || t1%kiviBlock != 0 {
		return nil, fmt.Errorf("kvcache: kivi keys: range [%d, %d) is not whole blocks of %d tokens", t0, t1, kiviBlock)
	}
	return sliceCodes(s.blocks, s.k.ChannelBytes(kiviBlock), t0/kiviBlock, t1/kiviBlock)
}

func (s *kiviKeys) putCodes(b []byte, n int) error {
	if n%kiviBlock != 0 {
		return fmt.Errorf("kvcache: kivi keys: %d tokens, not whole blocks of %d", n, kiviBlock)
	}
	return putSized(&s.blocks, b, n/kiviBlock, s.k.ChannelBytes(kiviBlock))
}

// centred keys: the inner store's codes; the mean travels as calibration.
func (s *centeredKeys) exportCodes(t0, t1 int) ([]byte, error) {
	return storeCodes(s.inner).exportCodes(t0, t1)
}

func (s *centeredKeys) putCodes(b []byte, n int) error {
	if err := storeCodes(s.inner).putCodes(b, n); err != nil {
		return err
	}
	s.n += n
	return nil
}

// storeCodes returns s's codeStore; every store is one (a store added
// without the methods fails here, in the export tests, not silently).
func storeCodes(s any) codeStore {
	cs, ok := s.(codeStore)
	if !ok {
		return brokenStore{fmt.Sprintf("%T", s)}
	}
	return cs
}

type brokenStore struct{ name string }

func (b brokenStore) exportCodes(int, int) ([]byte, error) {
	return nil, fmt.Errorf("kvcache: store %s cannot export its codes", b.name)
}
func (b brokenStore) putCodes([]byte, int) error {
	return fmt.Errorf("kvcache: store %s cannot import codes", b.name)
}
func (b brokenStore) checkCodes([]byte, int) error {
	return fmt.Errorf("kvcache: store %s cannot import codes", b.name)
}

func sliceCodes(all []byte, size, t0, t1 int) ([]byte, error) {
	if t0 < 0 || t1 < t0 || t1*size > len(all) {
		return nil, fmt.Errorf("kvcache: codes [%d, %d) beyond the %d held", t0, t1, len(all)/max(size, 1))
	}
	return slices.Clone(all[t0*size : t1*size]), nil
}

func putSized(dst *[]byte, b []byte, n, size int) error {
	if len(b) != n*size {
		return fmt.Errorf("kvcache: %d bytes of codes for %d units of %d bytes", len(b), n, size)
	}
	*dst = append(slices.Grow(*dst, len(b)+codeSlack), b...)
	return nil
}

func laneCodes(l *quant.Lanes, t0, t1 int) ([]byte, error) {
	size := l.Quantizer().Bytes()
	if t0 < 0 || t1 < t0 || t1 > l.Len() {
		return nil, fmt.Errorf("kvcache: codes [%d, %d) beyond the %d held", t0, t1, l.Len())
	}
	b := make([]byte, (t1-t0)*size)
	for t := t0; t < t1; t++ {
		l.Code(b[(t-t0)*size:(t-t0+1)*size], t)
	}
	return b, nil
}

func putLanes(l *quant.Lanes, b []byte, n int) error {
	if len(b) != n*l.Quantizer().Bytes() {
		return fmt.Errorf("kvcache: %d bytes of codes for %d tokens of %d bytes", len(b), n, l.Quantizer().Bytes())
	}
	return l.AppendCodes(b)
}

func f16Bytes(rows []uint16, d, t0, t1 int) ([]byte, error) {
	if t0 < 0 || t1 < t0 || t1*d > len(rows) {
		return nil, fmt.Errorf("kvcache: rows [%d, %d) beyond the %d held", t0, t1, len(rows)/d)
	}
	b := make([]byte, 0, 2*(t1-t0)*d)
	for _, x := range rows[t0*d : t1*d] {
		b = binary.LittleEndian.AppendUint16(b, x)
	}
	return b, nil
}

func putF16(rows *[]uint16, b []byte, n, d int) error {
	if len(b) != 2*n*d {
		return fmt.Errorf("kvcache: %d bytes for %d fp16 rows of %d", len(b), n, d)
	}
	for i := 0; i < len(b); i += 2 {
		*rows = append(*rows, binary.LittleEndian.Uint16(b[i:]))
	}
	return nil
}

func f32Bytes(rows []float32, d, t0, t1 int) ([]byte, error) {
	if t0 < 0 || t1 < t0 || t1*d > len(rows) {
		return nil, fmt.Errorf("kvcache: rows [%d, %d) beyond the %d held", t0, t1, len(rows)/d)
	}
	b := make([]byte, 0, 4*(t1-t0)*d)
	for _, x := range rows[t0*d : t1*d] {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b, nil
}

func putF32(rows *[]float32, b []byte, n, d int) error {
	if len(b) != 4*n*d {
		return fmt.Errorf("kvcache: %d bytes for %d float32 rows of %d", len(b), n, d)
	}
	for i := 0; i < len(b); i += 4 {
		*rows = append(*rows, math.Float32frombits(binary.LittleEndian.Uint32(b[i:])))
	}
	return nil
}

// centeredOn returns an empty centred-key store for the pre-RoPE mean mu
// (what newCenteredKeys makes once it has estimated mu).
func centeredOn(rope *Rope, mu []float32) *centeredKeys {
	d := len(mu)
	m := make([]float64, d)
	for i, v := range mu {
		m[i] = float64(v)
	}
	return &centeredKeys{rope: rope, mu: mu, turns: newMeanTurns(rope, m), x: make([]float64, d), m: make([]float64, d)}
}

// CompressedLen returns the number of tokens whose codes are final: those
// that have left the fp16 window (Export's range must end at or before
// it).
func (c *Compressed) CompressedLen() int { return c.nc }

// CalibrationTokens returns how many of a sequence's first tokens the
// cache's calibration (outlier channels, the keys' mean) is estimated
// from, 0 when its formats need none: every code depends on them, so
// codes are the same for two sequences only if these tokens are.
func (c *Compressed) CalibrationTokens() int { return c.calib }

// exportHeader is what identifies a layer's cache configuration.
type exportHeader struct {
	tag                      string
	k, v                     string
	window, step             int
	seed                     uint64
	corr                     int
	layer                    int
	qHeads, kvHeads, headDim int
	rope                     uint64
	from, to                 int
}

func (c *Compressed) header(tag string, from, to int) exportHeader {
	return exportHeader{tag: tag, k: c.spec.K.name, v: c.spec.V.name, window: c.window, step: c.step, seed: c.seed,
		corr: int(c.corr), layer: c.layer, qHeads: c.shape.QHeads, kvHeads: c.shape.KVHeads, headDim: c.shape.HeadDim,
		rope: c.shape.Rope.fingerprint(), from: from, to: to}
}

// fingerprint identifies the rotary embedding (0: none): a hash of its
// dimension, pairing and frequencies.
func (r *Rope) fingerprint() uint64 {
	if r == nil {
		return 0
	}
	h := crc32.New(castagnoli)
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(r.d))
	h.Write(b[:])
	if r.halves {
		h.Write([]byte{1})
	}
	for _, f := range r.freqs {
		binary.LittleEndian.PutUint64(b[:], math.Float64bits(f))
		h.Write(b[:])
	}
	return uint64(h.Sum32()) | 1<<32
}

// Export returns the codes of tokens [from, to) and what decoding them
// needs (see the layout above), tagged with tag (at most 255 bytes: a
// model's identity, checked by Import). The tokens must have left the
// fp16 window (to ≤ CompressedLen()); a range that starts before
// CalibrationTokens carries each head's calibration. A tiered format's
// tokens are exported in their high-rate codes, which its stores keep
// only for the newest tokens (ExportRows writes the others).
func (c *Compressed) Export(tag string, from, to int) ([]byte, error) {
	return c.export(tag, from, to, func(_ int, s any) ([]byte, error) { return storeCodes(s).exportCodes(from, to) })
}

// ExportRows is Export for a caller that kept the tokens' fp16 rows (k,
// v: to − from rows of KVHeads·HeadDim values each, as Append took them,
// rounded to fp16 as the window holds them). A tiered store re-codes its
// tokens at the low rate as they age and then drops their high-rate
// codes, which Export writes and Import starts from; ExportRows encodes
// the dropped ones from their rows at the high rate as the cache did
// when they left its window (the keys centred at their own positions),
// side by side on the cache's pool in runs of encodeRun tokens, so that
// its bytes are the ones Export wrote while the codes were held. Codes
// still held, and every stream of other formats, are written as Export
// writes them. Like Append, it uses the cache's pool: not while another
// call on the cache runs.
func (c *Compressed) ExportRows(tag string, from, to int, k, v []uint16) ([]byte, error) {
	d, w := c.shape.HeadDim, c.shape.KVHeads*c.shape.HeadDim
	if err := c.checkExport(tag, from, to); err != nil {
		return nil, err
	}
	if len(k) != (to-from)*w || len(v) != len(k) {
		return nil, fmt.Errorf("kvcache: export of tokens [%d, %d) from rows: %d and %d values, want %d each", from, to, len(k), len(v), (to-from)*w)
	}
	// Per stream, the high-rate codes of the tokens [from, held) that its
	// store has dropped, encoded from the rows.
	type run struct{ si, t0, t1 int }
	var runs []run
	made := make([][]byte, 2*len(c.heads))
	held := make([]int, 2*len(c.heads))
	for si := range made {
		held[si] = from
		tr := c.heads[si/2].tier(si)
		if tr == nil {
			continue
		}
		held[si] = min(max(from, tr.hiAt), to)
		made[si] = make([]byte, (held[si]-from)*tr.hq.Bytes())
		for t := from; t < held[si]; t += encodeRun {
			runs = append(runs, run{si, t, min(held[si], t+encodeRun)})
		}
	}
	errs := make([]error, len(runs))
	c.encodeOnPool(len(runs), nil, func(ri int, sc *encScratch) {
		r := runs[ri]
		rows := k
		if r.si%2 == 1 {
			rows = v
		}
		h := r.si / 2
		sc.x = grown(sc.x, (r.t1-r.t0)*d)
		for t := r.t0; t < r.t1; t++ {
			i := (t - from) * w
			toF32(sc.x[(t-r.t0)*d:(t-r.t0+1)*d], rows[i+h*d:i+(h+1)*d])
		}
		e := encoderOf(c.heads[h].store(r.si))
		b := e.codeBytes()
		errs[ri] = e.encode(made[r.si][(r.t0-from)*b:(r.t1-from)*b], sc.x, r.t0, sc)
	})
	for ri, err := range errs {
		if err != nil {
			return nil, c.moveError(runs[ri].si, runs[ri].t0, runs[ri].t1, err)
		}
	}
	return c.export(tag, from, to, func(i int, s any) ([]byte, error) {
		if held[i] == to {
			return made[i], nil
		}
		rest, err := storeCodes(s).exportCodes(held[i], to)
		if err != nil || len(made[i]) == 0 {
			return rest, err // exportCodes returns a copy
		}
		return append(made[i], rest...), nil
	})
}

// checkExport returns an error if Export cannot write tokens [from, to)
// tagged tag.
func (c *Compressed) checkExport(tag string, from, to int) error {
	if len(tag) > maxExportTag {
		return fmt.Errorf("kvcache: export tag of %d bytes, at most %d", len(tag), maxExportTag)
	}
	if from < 0 || to < from || to > c.nc {
		return fmt.Errorf("kvcache: export of tokens [%d, %d): the cache holds %d compressed (the %d after them are in the fp16 window)", from, to, c.nc, c.n-c.nc)
	}
	if from%c.step != 0 || to%c.step != 0 {
		return fmt.Errorf("kvcache: export of tokens [%d, %d): not whole key blocks of %d", from, to, c.step)
	}
	return nil
}

// export writes Export's bytes for tokens [from, to), codes(i, s) giving
// stream i's (head i/2, keys for i even, values for i odd; s its store).
func (c *Compressed) export(tag string, from, to int, codes func(i int, s any) ([]byte, error)) ([]byte, error) {
	if err := c.checkExport(tag, from, to); err != nil {
		return nil, err
	}
	var w exportWriter
	w.bytes(exportMagic)
	w.u8(exportVersion)
	w.header(c.header(tag, from, to))
	cal := from < c.calib && to > from
	w.bool(cal)
	if cal {
		for _, h := range c.heads {
			w.ints(h.kOut)
			w.ints(h.vOut)
			w.floats(h.kMean)
		}
	}
	for i := range c.heads {
		for j := range 2 {
			var b []byte
			if to > from {
				var err error
				if b, err = codes(2*i+j, c.heads[i].store(2*i+j)); err != nil {
					return nil, fmt.Errorf("kvcache: export layer %d head %d: %w", c.layer, i, err)
				}
			}
			w.u32(uint32(len(b)))
			w.bytes(b)
		}
	}
	w.u32(crc32.Checksum(w.b, castagnoli))
	return w.b, nil
}

// Import appends the tokens of an Export to the cache, which must have
// the exporting cache's configuration and tag and hold exactly the tokens
// before the exported range; tokens still in its fp16 window are
// compressed first, with the calibration the export carries where the
// cache has none yet. Anything that does not match or check gives an
// error and leaves the cache as it was.
func (c *Compressed) Import(tag string, data []byte) error {
	e, err := parseExport(data)
	if err != nil {
		return err
	}
	if want := c.header(tag, e.from, e.to); e.exportHeader != want {
		return fmt.Errorf("kvcache: import into layer %d: %s", c.layer, headerMismatch(e.exportHeader, want))
	}
	if e.from != c.n {
		return fmt.Errorf("kvcache: import of tokens [%d, %d) into a cache holding %d: it must hold exactly the tokens before them", e.from, e.to, c.n)
	}
	if e.to == e.from {
		return nil
	}
	d, kv, n := c.shape.HeadDim, c.shape.KVHeads, e.to-e.from
	if len(e.codes) != 2*kv || (e.cal != nil && len(e.cal) != kv) {
		return fmt.Errorf("kvcache: import: %d code sections for %d KV heads", len(e.codes), kv)
	}
	for i, b := range e.codes {
		f, key := c.spec.K, i%2 == 0
		if !key {
			f = c.spec.V
		}
		if want := n * f.c.tokenBytes(d, key); len(b) != want {
			return fmt.Errorf("kvcache: import: head %d: %d bytes of codes for %d tokens of %s, want %d", i/2, len(b), n, f.name, want)
		}
	}
	if (c.n-c.nc)%c.step != 0 {
		return fmt.Errorf("kvcache: import: the window's %d tokens are not whole key blocks of %d", c.n-c.nc, c.step)
	}
	ready := c.heads[0].ready()
	switch {
	case !ready && e.cal == nil && c.calib > 0:
		return fmt.Errorf("kvcache: import of tokens [%d, %d): the cache is not calibrated yet and the export carries no calibration (export from a position before %d)", e.from, e.to, c.calib)
	case e.cal != nil:
		for i, cal := range e.cal {
			if err := c.checkCalibration(i, cal, ready); err != nil {
				return err
			}
		}
	}
	// The heads as they will be: calibrated by the export where the cache
	// is not yet (copies, kept only if everything checks).
	heads := c.heads
	if !ready {
		heads = make([]*head, len(c.heads))
		for i, h := range c.heads {
			var cal calibration
			if e.cal != nil {
				cal = e.cal[i]
			}
			nh := *h
			if err := c.calibrate(i, &nh, cal, nil); err != nil {
				return err
			}
			heads[i] = &nh
		}
	}
	for i, h := range heads {
		for j, s := range []any{h.keys, h.values} {
			if err := storeCodes(s).checkCodes(e.codes[2*i+j], n); err != nil {
				return fmt.Errorf("kvcache: import of tokens [%d, %d) into layer %d: head %d %s: %w",
					e.from, e.to, c.layer, i, [2]string{"keys", "values"}[j], err)
			}
		}
	}
	// Everything is checked: from here on only a bug can fail.
	for i := range heads {
		*c.heads[i] = *heads[i]
	}
	for c.nc < c.n {
		if err := c.compress(); err != nil {
			return err
		}
	}
	for i, h := range c.heads {
		if err := storeCodes(h.keys).putCodes(e.codes[2*i], n); err != nil {
			return fmt.Errorf("kvcache: import layer %d head %d keys: %w", c.layer, i, err)
		}
		if err := storeCodes(h.values).putCodes(e.codes[2*i+1], n); err != nil {
			return fmt.Errorf("kvcache: import layer %d head %d values: %w", c.layer, i, err)
		}
		h.wk, h.wv, h.off = h.wk[:0], h.wv[:0], 0
	}
	c.n, c.nc, c.ahead.at = e.to, e.to, 0
	return nil
}

// checkCalibration checks head i's imported calibration: the sizes the
// formats need, channels in range and increasing, a finite mean, and,
// when the cache is calibrated already, equal to its own.
func (c *Compressed) checkCalibration(i int, cal calibration, ready bool) error {
	d := c.shape.HeadDim
	wantOut := func(split bool) int {
		if split {
			return d / 4
		}
		return 0
	}
	wantMean := 0
	if c.spec.K.center() {
		wantMean = d
	}
	if len(cal.kOut) != wantOut(c.spec.K.split()) || len(cal.vOut) != wantOut(c.spec.V.split()) || len(cal.kMean) != wantMean {
		return fmt.Errorf("kvcache: import head %d: calibration of %d/%d outlier channels and a mean of %d, want %d/%d and %d", i,
			len(cal.kOut), len(cal.vOut), len(cal.kMean), wantOut(c.spec.K.split()), wantOut(c.spec.V.split()), wantMean)
	}
	for _, out := range [][]int{cal.kOut, cal.vOut} {
		for j, ch := range out {
			if ch < 0 || ch >= d || j > 0 && ch <= out[j-1] {
				return fmt.Errorf("kvcache: import head %d: outlier channels %v are not increasing channels below %d", i, out, d)
			}
		}
	}
	for _, v := range cal.kMean {
		if !(math.Abs(float64(v)) <= math.MaxFloat32) {
			return fmt.Errorf("kvcache: import head %d: the keys' mean holds %g", i, v)
		}
	}
	if ready {
		h := c.heads[i]
		if !slices.Equal(cal.kOut, h.kOut) || !slices.Equal(cal.vOut, h.vOut) || !slices.Equal(cal.kMean, h.kMean) {
			return fmt.Errorf("kvcache: import head %d: the export's calibration differs from the cache's (another sequence's first tokens)", i)
		}
	}
	return nil
}

// headerMismatch says how an export's header differs from the cache's.
func headerMismatch(got, want exportHeader) string {
	switch {
	case got.tag != want.tag:
		return fmt.Sprintf("exported for %q, not %q", got.tag, want.tag)
	case got.k != want.k || got.v != want.v:
		return fmt.Sprintf("exported in format %s/%s, the cache holds %s/%s", got.k, got.v, want.k, want.v)
	case got.qHeads != want.qHeads || got.kvHeads != want.kvHeads || got.headDim != want.headDim:
		return fmt.Sprintf("exported from %d query heads, %d KV heads, head dim %d; the cache has %d, %d, %d",
			got.qHeads, got.kvHeads, got.headDim, want.qHeads, want.kvHeads, want.headDim)
	case got.layer != want.layer:
		return fmt.Sprintf("exported from layer %d", got.layer)
	case got.rope != want.rope:
		return "exported under another rotary embedding (another model)"
	}
	return fmt.Sprintf("exported with window %d, step %d, seed %#x, correction %d; the cache has %d, %d, %#x, %d",
		got.window, got.step, got.seed, got.corr, want.window, want.step, want.seed, want.corr)
}

// export is a parsed Export.
type export struct {
	exportHeader
	cal   []calibration // per head, nil when not carried
	codes [][]byte      // per head: keys, values
}

// maxExportDim bounds the sizes a header may claim (Shape.Validate's).
const maxExportDim = 1 << 14

// parseExport checks data's magic, version and checksum and reads it,
// every length bounded by the bytes there are.
func parseExport(data []byte) (*export, error) {
	if len(data) < len(exportMagic)+1+4 || !bytes.Equal(data[:len(exportMagic)], exportMagic) {
		return nil, errors.New("kvcache: import: not exported KV codes (no TMKV header)")
	}
	if v := data[len(exportMagic)]; v != exportVersion {
		return nil, fmt.Errorf("kvcache: import: export version %d, this build reads %d", v, exportVersion)
	}
	body := data[:len(data)-4]
	if sum := binary.LittleEndian.Uint32(data[len(data)-4:]); sum != crc32.Checksum(body, castagnoli) {
		return nil, errors.New("kvcache: import: checksum mismatch (the exported codes are corrupted)")
	}
	r := &exportReader{b: body[len(exportMagic)+1:]}
	r.fields = fields{r.take}
	e := &export{}
	h := &e.exportHeader
	h.tag = r.str()
	h.k, h.v = r.str(), r.str()
	h.window, h.step = r.int(), r.int()
	h.seed = r.u64()
	h.corr, h.layer = r.int(), r.int()
	h.qHeads, h.kvHeads, h.headDim = r.int(), r.int(), r.int()
	h.rope = r.u64()
	h.from, h.to = r.int(), r.int()
	if r.err == nil && (h.kvHeads > maxExportDim || h.headDim > maxExportDim || h.to < h.from) {
		r.err = fmt.Errorf("%d KV heads of dim %d, tokens [%d, %d)", h.kvHeads, h.headDim, h.from, h.to)
	}
	if r.bool() && r.err == nil {
		e.cal = make([]calibration, 0, min(h.kvHeads, len(r.b)))
		for i := 0; i < h.kvHeads && r.err == nil; i++ {
			e.cal = append(e.cal, calibration{kOut: r.ints(h.headDim), vOut: r.ints(h.headDim), kMean: r.floats(h.headDim)})
		}
	}
	for i := 0; i < 2*h.kvHeads && r.err == nil; i++ {
		e.codes = append(e.codes, r.section())
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d bytes past the codes", len(r.b))
	}
	if r.err != nil {
		return nil, fmt.Errorf("kvcache: import: malformed export: %w", r.err)
	}
	return e, nil
}

// exportWriter appends the layout's fields.
type exportWriter struct{ b []byte }

func (w *exportWriter) bytes(b []byte) { w.b = append(w.b, b...) }
func (w *exportWriter) u8(x byte)      { w.b = append(w.b, x) }
func (w *exportWriter) u32(x uint32)   { w.b = binary.LittleEndian.AppendUint32(w.b, x) }
func (w *exportWriter) u64(x uint64)   { w.b = binary.LittleEndian.AppendUint64(w.b, x) }
func (w *exportWriter) int(x int)      { w.u64(uint64(int64(x))) }
func (w *exportWriter) str(s string)   { w.u8(byte(len(s))); w.b = append(w.b, s...) }

func (w *exportWriter) bool(x bool) {
	if x {
		w.u8(1)
	} else {
		w.u8(0)
	}
}

func (w *exportWriter) ints(xs []int) {
	w.u32(uint32(len(xs)))
	for _, x := range xs {
		w.u32(uint32(x))
	}
}

func (w *exportWriter) floats(xs []float32) {
	w.u32(uint32(len(xs)))
	for _, x := range xs {
		w.u32(math.Float32bits(x))
	}
}

func (w *exportWriter) header(h exportHeader) {
	w.str(h.tag)
	w.str(h.k)
	w.str(h.v)
	for _, x := range []int{h.window, h.step} {
		w.int(x)
	}
	w.u64(h.seed)
	for _, x := range []int{h.corr, h.layer, h.qHeads, h.kvHeads, h.headDim} {
		w.int(x)
	}
	w.u64(h.rope)
	w.int(h.from)
	w.int(h.to)
}

// exportReader reads the layout's fields; the first failure sticks in err
// and every later read returns zero values.
type exportReader struct {
	fields
	b   []byte
	err error
}

// fields reads little-endian fields through take, which returns nil for
// a read that fails and for every read after it (keeping the error).
type fields struct{ take func(n int) []byte }

func (f fields) u8() byte {
	if b := f.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (f fields) u32() uint32 {
	if b := f.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (f fields) u64() uint64 {
	if b := f.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (r *exportReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = fmt.Errorf("a field of %d bytes where %d are left", n, len(r.b))
		return nil
	}
	b := r.b[:n]
	r.b = r.b[n:]
	return b
}

// int reads a field that must lie in [0, 2³¹).
func (r *exportReader) int() int {
	x := int64(r.u64())
	if r.err == nil && (x < 0 || x >= 1<<31) {
		r.err = fmt.Errorf("a size of %d", x)
		return 0
	}
	return int(x)
}

func (r *exportReader) bool() bool {
	x := r.u8()
	if r.err == nil && x > 1 {
		r.err = fmt.Errorf("a flag of %d", x)
	}
	return x == 1
}

func (r *exportReader) str() string { return string(r.take(int(r.u8()))) }

// count reads a length of at most limit items of size bytes.
func (r *exportReader) count(limit, size int) int {
	n := int(r.u32())
	if r.err == nil && (n > limit || n*size > len(r.b)) {
		r.err = fmt.Errorf("a list of %d items (at most %d, %d bytes left)", n, limit, len(r.b))
		return 0
	}
	return n
}

func (r *exportReader) ints(limit int) []int {
	n := r.count(limit, 4)
	if n == 0 {
		return nil
	}
	xs := make([]int, n)
	for i := range xs {
		xs[i] = int(r.u32())
	}
	return xs
}

func (r *exportReader) floats(limit int) []float32 {
	n := r.count(limit, 4)
	if n == 0 {
		return nil
	}
	xs := make([]float32, n)
	for i := range xs {
		xs[i] = math.Float32frombits(r.u32())
	}
	return xs
}

func (r *exportReader) section() []byte {
	n := r.count(math.MaxInt32, 1)
	return r.take(n)
}
