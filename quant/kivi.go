package quant

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/turbomem/turbomem/half"
	"github.com/turbomem/turbomem/tensor"
)

// KIVI is the asymmetric (scale and zero point) uniform group quantizer
// of KIVI (docs/ALGORITHMS.md §7). A group of values with range [lo, hi] is
// stored as
//
//	scale = fp16((hi − lo)/(2^b − 1)), min = fp16(lo),
//	q = clamp(round((x − min)/scale), 0, 2^b − 1)   (halves away from zero),
//	x̃ = min + scale·q,
//
// the division done in float32 with the stored (rounded) scale and min,
// and q = 0 for a constant group (scale 0). Hence
// |x − x̃| ≤ scale/2 + |min − lo| + (2^b − 1)·|scale − (hi − lo)/(2^b − 1)|:
// half a step, plus what the fp16 rounding of the two parameters moves
// the grid's ends.
//
// KIVI quantizes values per token (Encode: groups of `group` consecutive
// channels of one vector) and keys per channel (EncodeChannels: one group
// per channel over a block of tokens), because key outliers sit in fixed
// channels. Per-token code layout: for each group, fp16 scale, fp16 min
// (little endian), then the group's b-bit indices packed LSB-first as in
// bitpack.go, ⌈group·b/8⌉ bytes.
type KIVI struct {
	d, bits, group int
	packed         int // index bytes of one group
	levels         float32
	name           string
}

// NewKIVI returns a KIVI quantizer of b bits (1..8) for R^d whose
// per-token groups hold group channels; d must be a multiple of group.
func NewKIVI(d, bits, group int) (*KIVI, error) {
	if bits < 1 || bits > 8 {
		return nil, fmt.Errorf("quant: kivi: %d bits, want 1..8", bits)
	}
	if d < 1 || d > 1<<20 || group < 1 || d%group != 0 {
		return nil, fmt.Errorf("quant: kivi: dimension %d is not a positive multiple of the group size %d (at most 2^20)", d, group)
	}
	return &KIVI{
		d: d, bits: bits, group: group,
		packed: packedLen(group, bits),
		levels: float32(int(1)<<bits - 1),
		name:   fmt.Sprintf("kivi/%dg%d", bits, group),
	}, nil
}

// Name returns "kivi/BgG", e.g. "kivi/2g32".
func (k *KIVI) Name() string { return k.name }

// Dim returns the vector dimension.
func (k *KIVI) Dim() int { return k.d }

// Bytes returns (d/group)·(4 + ⌈group·b/8⌉).
func (k *KIVI) Bytes() int { return KIVIBytes(k.d, k.bits, k.group) }

// KIVIBytes returns the per-token code size of a KIVI quantizer (NewKIVI's
// arguments) without making it: d/group groups of an fp16 scale, an fp16
// min and ⌈group·b/8⌉ index bytes.
func KIVIBytes(d, bits, group int) int { return d / group * (4 + packedLen(group, bits)) }

// groupBytes returns the size of one per-token group.
func (k *KIVI) groupBytes() int { return 4 + k.packed }

// params returns the fp16 scale and min of a group with range [lo, hi],
// both finite. The range is taken in float64 so that it cannot overflow.
func (k *KIVI) params(lo, hi float32) (scale, mn half.F16, err error) {
	s := (float64(hi) - float64(lo)) / float64(k.levels)
	if s > 65504 || math.Abs(float64(lo)) > 65504 {
		return 0, 0, fmt.Errorf("quant: %s: group range [%g, %g] exceeds the fp16 range", k.name, lo, hi)
	}
	scale, mn = half.F32ToF16(float32(s)), half.F32ToF16(lo)
	if scale&0x7c00 == 0x7c00 || mn&0x7c00 == 0x7c00 { // rounded up to ±Inf
		return 0, 0, fmt.Errorf("quant: %s: group range [%g, %g] exceeds the fp16 range", k.name, lo, hi)
	}
	return scale, mn, nil
}

// index returns clamp(round((x − mn)/scale), 0, 2^b − 1).
func (k *KIVI) index(x, scale, mn float32) uint8 {
	if scale == 0 {
		return 0
	}
	v := math.Round(float64((x - mn) / scale))
	return uint8(min(max(v, 0), float64(k.levels)))
}

// rangeOf returns the least and greatest of the n values x[0], x[stride],
// …, or an error if one is not finite.
func (k *KIVI) rangeOf(x []float32, n, stride int) (lo, hi float32, err error) {
	lo, hi = float32(math.Inf(1)), float32(math.Inf(-1))
	for i := range n {
		v := x[i*stride]
		if v != v || math.IsInf(float64(v), 0) {
			return 0, 0, fmt.Errorf("quant: %s: input is not finite", k.name)
		}
		lo, hi = min(lo, v), max(hi, v)
	}
	return lo, hi, nil
}

// Encode writes the per-token code of x into dst.
func (k *KIVI) Encode(dst []byte, x []float32) error { return k.EncodeBatch(dst, x) }

// EncodeBatch encodes each vector of xs into consecutive codes of dst.
func (k *KIVI) EncodeBatch(dst []byte, xs []float32) error {
	n, err := batchLen(k, dst, xs)
	if err != nil {
		return err
	}
	idx := make([]uint8, k.group)
	gb := k.groupBytes()
	for g := range n * k.d / k.group {
		x := xs[g*k.group : (g+1)*k.group]
		out := dst[g*gb : (g+1)*gb]
		lo, hi, err := k.rangeOf(x, k.group, 1)
		if err != nil {
			return err
		}
		s16, m16, err := k.params(lo, hi)
		if err != nil {
			return err
		}
		s, m := half.F16ToF32(s16), half.F16ToF32(m16)
		for j, v := range x {
			idx[j] = k.index(v, s, m)
		}
		binary.LittleEndian.PutUint16(out, uint16(s16))
		binary.LittleEndian.PutUint16(out[2:], uint16(m16))
		pack(out[4:], idx, k.bits)
	}
	return nil
}

// readParams reads an fp16 scale and min pair, rejecting what no encoder
// writes: a negative or non-finite scale, a non-finite min.
func readParams(b []byte) (scale, mn float32, err error) {
	scale, err = readScale(b)
	if err != nil {
		return 0, 0, err
	}
	h := half.F16(binary.LittleEndian.Uint16(b[2:]))
	if h&0x7c00 == 0x7c00 {
		return 0, 0, fmt.Errorf("%w: min %g", ErrCorrupt, half.F16ToF32(h))
	}
	return scale, half.F16ToF32(h), nil
}

// Decode reconstructs x̃ = min + scale·q per group.
func (k *KIVI) Decode(dst []float32, code []byte) error {
	if err := checkLen("kivi output", len(dst), k.d); err != nil {
		return err
	}
	if err := k.Check(code); err != nil {
		return err
	}
	idx := make([]uint8, k.group)
	gb := k.groupBytes()
	for g := range k.d / k.group {
		c := code[g*gb : (g+1)*gb]
		s, m, _ := readParams(c)
		unpack(idx, c[4:], k.bits)
		for j, q := range idx {
			dst[g*k.group+j] = m + float32(s*float32(q))
		}
	}
	return nil
}

// Check checks the code's length and every group's scale and min.
func (k *KIVI) Check(code []byte) error {
	if err := checkLen("kivi code", len(code), k.Bytes()); err != nil {
		return err
	}
	gb := k.groupBytes()
	for g := range k.d / k.group {
		if _, _, err := readParams(code[g*gb:]); err != nil {
			return fmt.Errorf("%s: group %d: %w", k.name, g, err)
		}
	}
	return nil
}

// Prepare precomputes, per group, Σ q over the group (the weight of its
// min) and, where b divides 8 and groups fill whole bytes, a table per
// index byte: tab[p][v] = Σ_i q[c_i]·(i-th b-bit field of v) over the
// channels c_i that byte p holds, so scoring takes one lookup per byte.
func (k *KIVI) Prepare(q []float32) (Scorer, error) {
	if err := checkLen("kivi query", len(q), k.d); err != nil {
		return nil, err
	}
	s := &kiviScorer{k: k, q: append([]float32(nil), q...), qsum: make([]float32, k.d/k.group)}
	for g := range s.qsum {
		var sum float32
		for _, v := range q[g*k.group : (g+1)*k.group] {
			sum += v
		}
		s.qsum[g] = sum
	}
	if k.bits < 8 && 8%k.bits == 0 && k.group*k.bits%8 == 0 {
		per := 8 / k.bits
		mask := 1<<k.bits - 1
		nbytes := k.d * k.bits / 8
		s.tab = make([]float32, nbytes*256)
		for p := range nbytes {
			qq := q[p*per : (p+1)*per] // groups are byte-aligned, so byte p holds channels p·per …
			row := s.tab[p*256 : (p+1)*256]
			for v := range row {
				var acc float32
				for i, w := range qq {
					acc += w * float32(v>>(i*k.bits)&mask)
				}
				row[v] = acc
			}
		}
	}
	return s, nil
}

type kiviScorer struct {
	k    *KIVI
	q    []float32
	qsum []float32 // per group
	tab  []float32 // per index byte, 256 entries; nil: unpack instead
}

// Score computes Σ_groups scale·Σ_j q_j·idx_j + min·Σ_j q_j per code.
func (s *kiviScorer) Score(dst []float32, codes []byte) {
	k := s.k
	gb, ng := k.groupBytes(), k.d/k.group
	var idx []uint8
	if s.tab == nil {
		idx = make([]uint8, k.group)
	}
	for i := range dst {
		code := codes[i*k.Bytes() : (i+1)*k.Bytes()]
		var res float32
		for g := range ng {
			c := code[g*gb : (g+1)*gb]
			scale := half.F16ToF32(half.F16(binary.LittleEndian.Uint16(c)))
			mn := half.F16ToF32(half.F16(binary.LittleEndian.Uint16(c[2:])))
			var acc float32
			if s.tab != nil {
				tab := s.tab[g*k.packed*256 : (g+1)*k.packed*256]
				for p, v := range c[4:] {
					acc += tab[p*256+int(v)]
				}
			} else {
				unpackAt(idx, c[4:], 0, k.bits)
				qq := s.q[g*k.group : (g+1)*k.group]
				for j, v := range idx {
					acc += qq[j] * float32(v)
				}
			}
			res += scale*acc + mn*s.qsum[g]
		}
		dst[i] = res
	}
}

// ChannelBytes returns the size of the per-channel code of a block of
// tokens vectors: d (fp16 scale, fp16 min) pairs, then per token its d
// b-bit indices packed LSB-first, ⌈d·b/8⌉ bytes.
func (k *KIVI) ChannelBytes(tokens int) int { return KIVIChannelBytes(k.d, k.bits, tokens) }

// KIVIChannelBytes returns ChannelBytes of a KIVI quantizer for R^d at b
// bits without making it.
func KIVIChannelBytes(d, bits, tokens int) int { return 4*d + tokens*packedLen(d, bits) }

// EncodeChannels quantizes a block of tokens vectors (token-major: block
// holds tokens×d values, token t at block[t·d:(t+1)·d]) with one scale and
// min per channel over the block's tokens, KIVI's treatment of keys, into
// dst (ChannelBytes(tokens) bytes).
func (k *KIVI) EncodeChannels(dst []byte, block []float32, tokens int) error {
	if tokens < 1 {
		return fmt.Errorf("quant: %s: channel block of %d tokens", k.name, tokens)
	}
	if err := checkLen("kivi channel block", len(block), tokens*k.d); err != nil {
		return err
	}
	if err := checkLen("kivi channel code", len(dst), k.ChannelBytes(tokens)); err != nil {
		return err
	}
	scale := make([]float32, k.d)
	mn := make([]float32, k.d)
	for c := range k.d {
		lo, hi, err := k.rangeOf(block[c:], tokens, k.d)
		if err != nil {
			return err
		}
		s16, m16, err := k.params(lo, hi)
		if err != nil {
			return fmt.Errorf("%w (channel %d)", err, c)
		}
		binary.LittleEndian.PutUint16(dst[4*c:], uint16(s16))
		binary.LittleEndian.PutUint16(dst[4*c+2:], uint16(m16))
		scale[c], mn[c] = half.F16ToF32(s16), half.F16ToF32(m16)
	}
	row := packedLen(k.d, k.bits)
	idx := make([]uint8, k.d)
	for t := range tokens {
		for c, v := range block[t*k.d : (t+1)*k.d] {
			idx[c] = k.index(v, scale[c], mn[c])
		}
		pack(dst[4*k.d+t*row:], idx, k.bits)
	}
	return nil
}

// DecodeChannels reconstructs the tokens×d block of a per-channel code.
func (k *KIVI) DecodeChannels(dst []float32, code []byte, tokens int) error {
	if err := k.CheckChannels(code, tokens); err != nil {
		return err
	}
	if err := checkLen("kivi channel output", len(dst), tokens*k.d); err != nil {
		return err
	}
	scale := make([]float32, k.d)
	mn := make([]float32, k.d)
	for c := range k.d {
		scale[c], mn[c], _ = readParams(code[4*c:])
	}
	row := packedLen(k.d, k.bits)
	idx := make([]uint8, k.d)
	for t := range tokens {
		unpack(idx, code[4*k.d+t*row:], k.bits)
		out := dst[t*k.d : (t+1)*k.d]
		for c, q := range idx {
			out[c] = mn[c] + float32(scale[c]*float32(q))
		}
	}
	return nil
}

// CheckChannels returns the error DecodeChannels would give for code
// without decoding it: a wrong length, or a channel's scale or min that
// EncodeChannels never writes (ErrCorrupt).
func (k *KIVI) CheckChannels(code []byte, tokens int) error {
	if tokens < 1 {
		return fmt.Errorf("quant: %s: channel block of %d tokens", k.name, tokens)
	}
	if err := checkLen("kivi channel code", len(code), k.ChannelBytes(tokens)); err != nil {
		return err
	}
	for c := range k.d {
		if _, _, err := readParams(code[4*c:]); err != nil {
			return fmt.Errorf("%s: channel %d: %w", k.name, c, err)
		}
	}
	return nil
}

// ChannelScorer scores the tokens of per-channel KIVI blocks against one
// query.
type ChannelScorer struct {
	k   *KIVI
	q   []float32
	w   []float32 // per block: q_c·scale_c
	idx []uint8
}

// PrepareChannels returns a scorer of per-channel blocks for the query q.
func (k *KIVI) PrepareChannels(q []float32) (*ChannelScorer, error) {
	if err := checkLen("kivi query", len(q), k.d); err != nil {
		return nil, err
	}
	return &ChannelScorer{k: k, q: append([]float32(nil), q...), w: make([]float32, k.d), idx: make([]uint8, k.d)}, nil
}

// Score writes into dst[t] the estimate of <q, x_t> for the len(dst)
// tokens of one per-channel block code (ChannelBytes(len(dst)) bytes):
//
//	s_t = Σ_c (q_c·scale_c)·idx_{t,c} + Σ_c q_c·min_c,
//
// with the weights q_c·scale_c and the constant computed once per block.
// It panics if block is shorter than that; a ChannelScorer is not safe
// for concurrent use.
func (s *ChannelScorer) Score(dst []float32, block []byte) {
	k := s.k
	block = block[:k.ChannelBytes(len(dst))]
	var base float32
	for c := range k.d {
		scale := half.F16ToF32(half.F16(binary.LittleEndian.Uint16(block[4*c:])))
		mn := half.F16ToF32(half.F16(binary.LittleEndian.Uint16(block[4*c+2:])))
		s.w[c] = s.q[c] * scale
		base += s.q[c] * mn
	}
	row := packedLen(k.d, k.bits)
	for t := range dst {
		unpackAt(s.idx, block[4*k.d+t*row:], 0, k.bits)
		var a0, a1 float32
		i := 0
		for ; i+1 < k.d; i += 2 {
			a0 += s.w[i] * float32(s.idx[i])
			a1 += s.w[i+1] * float32(s.idx[i+1])
		}
		if i < k.d {
			a0 += s.w[i] * float32(s.idx[i])
		}
		dst[t] = (a0 + a1) + base
	}
}

// ScoreChannels writes into dst[j] the estimates of <qs[j], x_t>
// (ChannelScorer's formula) for the tokens of consecutive per-channel
// blocks of tokens tokens each in codes (len(dst[j]) tokens, a whole
// number of blocks), for a group of queries at once: each block's indices
// are expanded once into floats (at 2 bits four fields per byte through a
// table) and dotted with every query's per-block weights q_c·scale_c by
// the fp32 row kernel. It panics if codes is shorter than the blocks.
func (k *KIVI) ScoreChannels(dst, qs [][]float32, codes []byte, tokens int) {
	d := k.d
	bb := k.ChannelBytes(tokens)
	row := packedLen(d, k.bits)
	n := len(dst[0])
	idx := make([]float32, tokens*d)
	u := make([]uint8, d)
	w := make([]float32, len(qs)*d)
	base := make([]float32, len(qs))
	for t := 0; t < n; t += tokens {
		blk := codes[t/tokens*bb : (t/tokens+1)*bb]
		clear(base)
		for c := range d {
			scale := half.F16ToF32(half.F16(binary.LittleEndian.Uint16(blk[4*c:])))
			mn := half.F16ToF32(half.F16(binary.LittleEndian.Uint16(blk[4*c+2:])))
			for j, q := range qs {
				w[j*d+c] = q[c] * scale
				base[j] += q[c] * mn
			}
		}
		packed := blk[4*d:]
		if k.bits == 2 && d%4 == 0 {
			for i, v := range packed[:tokens*row] {
				copy(idx[4*i:4*i+4], kivi2Table[v][:])
			}
		} else {
			for tk := range tokens {
				unpackAt(u, packed[tk*row:], 0, k.bits)
				for c, v := range u {
					idx[tk*d+c] = float32(v)
				}
			}
		}
		for j := range qs {
			out := dst[j][t : t+tokens]
			tensor.DotRowsF32(out, w[j*d:(j+1)*d], idx)
			for i := range out {
				out[i] += base[j]
			}
		}
	}
}
