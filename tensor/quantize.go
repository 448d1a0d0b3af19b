package tensor

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/turbomem/turbomem/half"
)

// The quantizers in this package reproduce llama.cpp's reference
// quantizers (quantize_row_*_ref in ggml-quants.c) byte for byte: every
// float32 operation is written out in the C order, and where Go could fuse
// a multiply and an add an explicit float32 conversion forces the
// rounding that the C code (built without FMA contraction) performs.

// quantizers maps each type that Quantize supports to its row kernel,
// handed a whole number of blocks.
var quantizers = map[DType]func(dst []byte, src []float32){
	Q4_0:  quantQ4_0,
	Q4_1:  quantQ4_1,
	Q5_0:  quantQ5_0,
	Q5_1:  quantQ5_1,
	Q8_0:  quantQ8_0,
	Q2_K:  quantQ2_K,
	Q3_K:  quantQ3_K,
	Q4_K:  quantQ4_K,
	Q5_K:  quantQ5_K,
	Q6_K:  quantQ6_K,
	Q8_K:  quantQ8_K,
	TQ1_0: quantTQ1_0,
	TQ2_0: quantTQ2_0,
}

// CanQuantize reports whether Quantize supports t.
func CanQuantize(t DType) bool { _, ok := quantizers[t]; return ok }

// Encode stores v in type t: float32 as it is, rounded to F16 or BF16, or
// quantized (Quantize) for the block types. len(v) must be a whole number
// of blocks of t.
func Encode(t DType, v []float32) ([]byte, error) {
	n, err := t.RowBytes(int64(len(v)))
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	switch t {
	case F32:
		for i, x := range v {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
		}
	case F16:
		for i, x := range v {
			binary.LittleEndian.PutUint16(b[2*i:], uint16(half.F32ToF16(x)))
		}
	case BF16:
		for i, x := range v {
			binary.LittleEndian.PutUint16(b[2*i:], uint16(half.F32ToBF16(x)))
		}
	default:
		if err := Quantize(t, b, v); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// Quantize encodes src into dst in type t, as llama.cpp's reference
// quantizer for t does. len(src) must be a whole number of blocks of t and
// len(dst) exactly t.RowBytes(len(src)).
func Quantize(t DType, dst []byte, src []float32) error {
	kernel, ok := quantizers[t]
	if !ok {
		return fmt.Errorf("tensor: %s: quantization not supported", t)
	}
	if err := checkQuantize(t, dst, src); err != nil {
		return err
	}
	kernel(dst, src)
	return nil
}

// QuantizeQ8_0 encodes src into Q8_0 blocks in dst, byte-identical to
// llama.cpp's quantize_row_q8_0_ref: d = max|x|/127 stored as fp16,
// q = round(x/d) (halves away from zero), computed with the unrounded d.
// len(src) must be a multiple of 32 and len(dst) == len(src)/32*34.
func QuantizeQ8_0(dst []byte, src []float32) error {
	if err := checkQuantize(Q8_0, dst, src); err != nil {
		return err
	}
	quantQ8_0(dst, src)
	return nil
}

// QuantizeQ4_0 encodes src into Q4_0 blocks in dst, byte-identical to
// llama.cpp's quantize_row_q4_0_ref: d = m/-8 where m is the element of
// largest magnitude (so m itself maps to q = 0, i.e. -8), stored as fp16;
// q = min(15, trunc(x/d + 8.5)). len(src) must be a multiple of 32 and
// len(dst) == len(src)/32*18.
func QuantizeQ4_0(dst []byte, src []float32) error {
	if err := checkQuantize(Q4_0, dst, src); err != nil {
		return err
	}
	quantQ4_0(dst, src)
	return nil
}

func checkQuantize(t DType, dst []byte, src []float32) error {
	want, err := t.RowBytes(int64(len(src)))
	if err != nil {
		return err
	}
	if int64(len(dst)) != want {
		return fmt.Errorf("tensor: %s: %d elements need %d bytes, have %d", t, len(src), want, len(dst))
	}
	return nil
}

func abs32(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ (1 << 31)) }

// nearestInt rounds f to the nearest integer, ties to even, as ggml's
// nearest_int does (by adding 1.5·2^23); it is exact for |f| < 2^22 and
// garbage, but never a panic, beyond.
func nearestInt(f float32) int32 {
	v := float32(f) + 12582912
	return int32(math.Float32bits(v)&0x7fffff) - 0x400000
}

// roundAway rounds f to the nearest integer, halves away from zero (C's
// roundf).
func roundAway(f float32) float32 { return float32(math.Round(float64(f))) }

func putF16(b []byte, f float32) { binary.LittleEndian.PutUint16(b, uint16(half.F32ToF16(f))) }

// absMaxSigned returns max|x| and the element that attains it first.
func absMaxSigned(x []float32) (amax, max float32) {
	for _, v := range x {
		if a := abs32(v); amax < a {
			amax, max = a, v
		}
	}
	return amax, max
}

// minMax returns the least and greatest elements of x, starting from
// ±MaxFloat32 as the C code does.
func minMax(x []float32) (lo, hi float32) {
	lo, hi = math.MaxFloat32, -math.MaxFloat32
	for _, v := range x {
		if v < lo {
			lo = v
		}
		if v > hi {
			hi = v
		}
	}
	return lo, hi
}

func inverse(d float32) float32 {
	if d == 0 {
		return 0
	}
	return 1 / d
}

func quantQ8_0(dst []byte, src []float32) {
	for b := range len(src) / qk0 {
		x := (*[qk0]float32)(src[b*qk0:])
		blk := (*[q8_0Bytes]byte)(dst[b*q8_0Bytes:])
		var amax float32
		for _, v := range x {
			amax = max(amax, abs32(v))
		}
		d := amax / 127
		id := inverse(d)
		putF16(blk[0:], d)
		for j, v := range x {
			blk[2+j] = byte(int8(roundAway(v * id)))
		}
	}
}

func quantQ4_0(dst []byte, src []float32) {
	for b := range len(src) / qk0 {
		x := (*[qk0]float32)(src[b*qk0:])
		blk := (*[q4_0Bytes]byte)(dst[b*q4_0Bytes:])
		_, m := absMaxSigned(x[:])
		d := m / -8
		id := inverse(d)
		putF16(blk[0:], d)
		for j := range 16 {
			x0 := float32(x[j] * id)
			x1 := float32(x[j+16] * id)
			q0 := min(15, int32(x0+8.5))
			q1 := min(15, int32(x1+8.5))
			blk[2+j] = byte(q0) | byte(q1)<<4
		}
	}
}

func quantQ4_1(dst []byte, src []float32) {
	for b := range len(src) / qk0 {
		x := (*[qk0]float32)(src[b*qk0:])
		blk := (*[q4_1Bytes]byte)(dst[b*q4_1Bytes:])
		lo, hi := minMax(x[:])
		d := (hi - lo) / 15
		id := inverse(d)
		putF16(blk[0:], d)
		putF16(blk[2:], lo)
		for j := range 16 {
			x0 := float32((x[j] - lo) * id)
			x1 := float32((x[j+16] - lo) * id)
			q0 := min(15, int32(x0+0.5))
			q1 := min(15, int32(x1+0.5))
			blk[4+j] = byte(q0) | byte(q1)<<4
		}
	}
}

func quantQ5_0(dst []byte, src []float32) {
	for b := range len(src) / qk0 {
		x := (*[qk0]float32)(src[b*qk0:])
		blk := (*[q5_0Bytes]byte)(dst[b*q5_0Bytes:])
		_, m := absMaxSigned(x[:])
		d := m / -16
		id := inverse(d)
		putF16(blk[0:], d)
		var qh uint32
		for j := range 16 {
			x0 := float32(x[j] * id)
			x1 := float32(x[j+16] * id)
			q0 := uint32(min(31, int32(x0+16.5)))
			q1 := uint32(min(31, int32(x1+16.5)))
			blk[6+j] = byte(q0&0xf | (q1&0xf)<<4)
			qh |= (q0 >> 4 & 1) << j
			qh |= (q1 >> 4 & 1) << (j + 16)
		}
		binary.LittleEndian.PutUint32(blk[2:], qh)
	}
}

func quantQ5_1(dst []byte, src []float32) {
	for b := range len(src) / qk0 {
		x := (*[qk0]float32)(src[b*qk0:])
		blk := (*[q5_1Bytes]byte)(dst[b*q5_1Bytes:])
		lo, hi := minMax(x[:])
		d := (hi - lo) / 31
		id := inverse(d)
		putF16(blk[0:], d)
		putF16(blk[2:], lo)
		var qh uint32
		for j := range 16 {
			x0 := float32((x[j] - lo) * id)
			x1 := float32((x[j+16] - lo) * id)
			q0 := uint32(uint8(int32(x0 + 0.5)))
			q1 := uint32(uint8(int32(x1 + 0.5)))
			blk[8+j] = byte(q0&0xf | (q1&0xf)<<4)
			qh |= (q0 >> 4 & 1) << j
			qh |= (q1 >> 4 & 1) << (j + 16)
		}
		binary.LittleEndian.PutUint32(blk[4:], qh)
	}
}
