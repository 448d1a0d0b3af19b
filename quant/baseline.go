package quant

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/turbomem/turbomem/half"
	"github.com/turbomem/turbomem/tensor"
)

// The llama.cpp baselines of docs/ALGORITHMS.md §7 as Quantizers: q8_0 and
// q4_0 split a vector into blocks of 32 coordinates, each with its own
// fp16 scale. Codes are the llama.cpp blocks themselves (package tensor
// writes them byte-identical to quantize_row_q8_0_ref / q4_0_ref and
// decodes them like dequantize_row_*), so a d-dimensional code is d/32
// blocks back to back. No rotation: these are the formats a KV cache
// stores when it does not use ours.

const ggmlBlock = 32 // coordinates per q8_0 / q4_0 block

// Q8_0 is llama.cpp's q8_0: per block, d = max|x|/127 (fp16) and 32 int8
// q = round(x/d); x̃ = q·d. 34 bytes per 32 coordinates, 8.5 bits each.
type Q8_0 struct{ d int }

// NewQ8_0 returns the q8_0 quantizer for R^d; d must be a positive
// multiple of 32.
func NewQ8_0(d int) (*Q8_0, error) {
	if err := checkBlockDim("q8_0", d); err != nil {
		return nil, err
	}
	return &Q8_0{d: d}, nil
}

// Q4_0 is llama.cpp's q4_0: per block, d = m/−8 (fp16) where m is the
// element of largest magnitude, sign included, and 32 nibbles
// q = min(15, trunc(x/d + 8.5)); x̃ = (q − 8)·d, so m itself is exact.
// Byte j of a block's quants holds element j in its low nibble and j+16
// in its high nibble. 18 bytes per 32 coordinates, 4.5 bits each.
type Q4_0 struct{ d int }

// NewQ4_0 returns the q4_0 quantizer for R^d; d must be a positive
// multiple of 32.
func NewQ4_0(d int) (*Q4_0, error) {
	if err := checkBlockDim("q4_0", d); err != nil {
		return nil, err
	}
	return &Q4_0{d: d}, nil
}

func checkBlockDim(name string, d int) error {
	if d < ggmlBlock || d%ggmlBlock != 0 || d > 1<<20 {
		return fmt.Errorf("quant: %s: dimension %d is not a positive multiple of %d (at most 2^20)", name, d, ggmlBlock)
	}
	return nil
}

// Name returns "q8_0".
func (q *Q8_0) Name() string { return "q8_0" }

// Name returns "q4_0".
func (q *Q4_0) Name() string { return "q4_0" }

// Dim returns the vector dimension.
func (q *Q8_0) Dim() int { return q.d }

// Dim returns the vector dimension.
func (q *Q4_0) Dim() int { return q.d }

// Bytes returns Q8_0Bytes(d).
func (q *Q8_0) Bytes() int { return Q8_0Bytes(q.d) }

// Bytes returns Q4_0Bytes(d).
func (q *Q4_0) Bytes() int { return Q4_0Bytes(q.d) }

// Q8_0Bytes returns the code size of a q8_0 vector of dimension d (a
// multiple of 32), 34·d/32, without making the quantizer.
func Q8_0Bytes(d int) int { return d / ggmlBlock * tensor.Q8_0.BlockBytes() }

// Q4_0Bytes returns the code size of a q4_0 vector of dimension d (a
// multiple of 32), 18·d/32.
func Q4_0Bytes(d int) int { return d / ggmlBlock * tensor.Q4_0.BlockBytes() }

// checkBlockScales rejects input that llama.cpp would quantize to
// garbage: non-finite values, or a block whose scale (scale(block)) does
// not fit in fp16.
func checkBlockScales(name string, xs []float32, scale func(block []float32) float32) error {
	for b := 0; b < len(xs); b += ggmlBlock {
		blk := xs[b : b+ggmlBlock]
		for _, v := range blk {
			if v != v || math.IsInf(float64(v), 0) {
				return fmt.Errorf("quant: %s: input is not finite", name)
			}
		}
		if s := scale(blk); half.F32ToF16(s)&0x7c00 == 0x7c00 {
			return fmt.Errorf("quant: %s: block at %d has scale %g beyond the fp16 range", name, b, s)
		}
	}
	return nil
}

// absMaxOver returns the block scale rule max|x|/div (q8_0: 127; q4_0: 8,
// in magnitude).
func absMaxOver(div float32) func(blk []float32) float32 {
	return func(blk []float32) float32 {
		var amax float32
		for _, v := range blk {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		return amax / div
	}
}

// Encode writes the q8_0 blocks of x into dst.
func (q *Q8_0) Encode(dst []byte, x []float32) error { return q.EncodeBatch(dst, x) }

// EncodeBatch encodes each vector of xs into consecutive codes of dst:
// the q8_0 blocks of xs as one row.
func (q *Q8_0) EncodeBatch(dst []byte, xs []float32) error {
	if _, err := batchLen(q, dst, xs); err != nil {
		return err
	}
	if err := checkBlockScales("q8_0", xs, absMaxOver(127)); err != nil {
		return err
	}
	return tensor.QuantizeQ8_0(dst, xs)
}

// Encode writes the q4_0 blocks of x into dst.
func (q *Q4_0) Encode(dst []byte, x []float32) error { return q.EncodeBatch(dst, x) }

// EncodeBatch encodes each vector of xs into consecutive codes of dst:
// the q4_0 blocks of xs as one row.
func (q *Q4_0) EncodeBatch(dst []byte, xs []float32) error {
	if _, err := batchLen(q, dst, xs); err != nil {
		return err
	}
	if err := checkBlockScales("q4_0", xs, absMaxOver(8)); err != nil {
		return err
	}
	return tensor.QuantizeQ4_0(dst, xs)
}

// Decode reconstructs x̃ = q·d per block. A negative or non-finite scale
// (never written by the quantizer) is ErrCorrupt.
func (q *Q8_0) Decode(dst []float32, code []byte) error {
	if err := checkLen("q8_0 output", len(dst), q.d); err != nil {
		return err
	}
	if err := q.Check(code); err != nil {
		return err
	}
	return tensor.Dequantize(tensor.Q8_0, dst, code)
}

// Check checks the code's length and every block's scale.
func (q *Q8_0) Check(code []byte) error {
	if err := checkLen("q8_0 code", len(code), q.Bytes()); err != nil {
		return err
	}
	bb := tensor.Q8_0.BlockBytes()
	for b := 0; b < len(code); b += bb {
		if _, err := readScale(code[b:]); err != nil {
			return fmt.Errorf("q8_0: block %d: %w", b/bb, err)
		}
	}
	return nil
}

// Decode reconstructs x̃ = (q − 8)·d per block. A non-finite scale is
// ErrCorrupt; a negative one is what the quantizer writes when the
// largest-magnitude element is positive.
func (q *Q4_0) Decode(dst []float32, code []byte) error {
	if err := checkLen("q4_0 output", len(dst), q.d); err != nil {
		return err
	}
	if err := q.Check(code); err != nil {
		return err
	}
	return tensor.Dequantize(tensor.Q4_0, dst, code)
}

// Check checks the code's length and every block's scale (finite; its
// sign is the quantizer's).
func (q *Q4_0) Check(code []byte) error {
	if err := checkLen("q4_0 code", len(code), q.Bytes()); err != nil {
		return err
	}
	bb := tensor.Q4_0.BlockBytes()
	for b := 0; b < len(code); b += bb {
		if h := half.F16(binary.LittleEndian.Uint16(code[b:])); h&0x7c00 == 0x7c00 {
			return fmt.Errorf("q4_0: block %d: %w: scale %g", b/bb, ErrCorrupt, half.F16ToF32(h))
		}
	}
	return nil
}

// Prepare keeps a copy of q: the blocks are scored in the original basis.
func (q *Q8_0) Prepare(v []float32) (Scorer, error) {
	if err := checkLen("q8_0 query", len(v), q.d); err != nil {
		return nil, err
	}
	return &q8Scorer{d: q.d, q: append([]float32(nil), v...)}, nil
}

// Prepare keeps a copy of q: the blocks are scored in the original basis.
func (q *Q4_0) Prepare(v []float32) (Scorer, error) {
	if err := checkLen("q4_0 query", len(v), q.d); err != nil {
		return nil, err
	}
	return &q4Scorer{d: q.d, q: append([]float32(nil), v...)}, nil
}

type q8Scorer struct {
	d int
	q []float32
}

// Score computes, per code, Σ_blocks d·Σ_j q_j·int8_j: dequantization
// fused into the dot product, one fp16 scale per block.
func (s *q8Scorer) Score(dst []float32, codes []byte) {
	const bb = 2 + ggmlBlock
	stride := s.d / ggmlBlock * bb
	for i := range dst {
		code := codes[i*stride : (i+1)*stride]
		var res float32
		for b := range s.d / ggmlBlock {
			blk := (*[bb]byte)(code[b*bb:])
			qq := (*[ggmlBlock]float32)(s.q[b*ggmlBlock:])
			var a0, a1, a2, a3 float32
			for j := 0; j < ggmlBlock; j += 4 {
				a0 += qq[j] * float32(int8(blk[2+j]))
				a1 += qq[j+1] * float32(int8(blk[3+j]))
				a2 += qq[j+2] * float32(int8(blk[4+j]))
				a3 += qq[j+3] * float32(int8(blk[5+j]))
			}
			res += half.F16ToF32(half.F16(binary.LittleEndian.Uint16(blk[:]))) * ((a0 + a1) + (a2 + a3))
		}
		dst[i] = res
	}
}

type q4Scorer struct {
	d int
	q []float32
}

// Score computes, per code, Σ_blocks d·Σ_j q_j·(nibble_j − 8).
func (s *q4Scorer) Score(dst []float32, codes []byte) {
	const bb = 2 + ggmlBlock/2
	stride := s.d / ggmlBlock * bb
	for i := range dst {
		code := codes[i*stride : (i+1)*stride]
		var res float32
		for b := range s.d / ggmlBlock {
			blk := (*[bb]byte)(code[b*bb:])
			qq := (*[ggmlBlock]float32)(s.q[b*ggmlBlock:])
			var a0, a1 float32
			for j := range ggmlBlock / 2 {
				v := blk[2+j]
				a0 += qq[j] * float32(int32(v&15)-8)
				a1 += qq[j+16] * float32(int32(v>>4)-8)
			}
			res += half.F16ToF32(half.F16(binary.LittleEndian.Uint16(blk[:]))) * (a0 + a1)
		}
		dst[i] = res
	}
}
