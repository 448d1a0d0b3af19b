package tensor

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/turbomem/turbomem/half"
)

// dequantizers maps each type that Dequantize supports to its row kernel.
// Every kernel is handed a whole number of blocks (src) and exactly the
// matching number of elements (dst); Dequantize checks both.
var dequantizers = map[DType]func(dst []float32, src []byte){
	F32:   dequantF32,
	F16:   dequantF16,
	BF16:  dequantBF16,
	Q4_0:  dequantQ4_0Fast,
	Q4_1:  dequantQ4_1,
	Q5_0:  dequantQ5_0,
	Q5_1:  dequantQ5_1,
	Q8_0:  dequantQ8_0Fast,
	Q2_K:  dequantQ2_K,
	Q3_K:  dequantQ3_K,
	Q4_K:  dequantQ4_K,
	Q5_K:  dequantQ5_K,
	Q6_K:  dequantQ6_K,
	Q8_K:  dequantQ8_K,
	TQ1_0: dequantTQ1_0,
	TQ2_0: dequantTQ2_0,
}

// CanDequantize reports whether Dequantize supports t.
func CanDequantize(t DType) bool { _, ok := dequantizers[t]; return ok }

// Dequantize decodes len(dst) elements of type t from src into dst. The
// results are bit-identical to llama.cpp's dequantize_row_* (ggml-quants.c):
// every product and sum is rounded to float32 in the same order, with no
// fused multiply-add. len(dst) must be a whole number of blocks of t and
// len(src) exactly t.RowBytes(len(dst)).
func Dequantize(t DType, dst []float32, src []byte) error {
	kernel, ok := dequantizers[t]
	if !ok {
		return fmt.Errorf("tensor: %s: dequantization not supported", t)
	}
	want, err := t.RowBytes(int64(len(dst)))
	if err != nil {
		return err
	}
	if int64(len(src)) != want {
		return fmt.Errorf("tensor: %s: %d elements need %d bytes, have %d", t, len(dst), want, len(src))
	}
	kernel(dst, src)
	return nil
}

// f16At returns the float32 value of the little-endian binary16 at b[0:2].
func f16At(b []byte) float32 { return half.F16ToF32(half.F16(binary.LittleEndian.Uint16(b))) }

func dequantF32(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

func dequantF16(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = f16At(src[2*i:])
	}
}

func dequantBF16(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = half.BF16ToF32(half.BF16(binary.LittleEndian.Uint16(src[2*i:])))
	}
}
