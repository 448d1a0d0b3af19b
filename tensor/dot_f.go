package tensor

import (
	"math"
	"unsafe"
)

// The float kernels view weight bytes in place as float32 or uint16
// elements: GGUF tensor data is little-endian, as are the hosts this
// package targets (amd64, arm64), and neither needs aligned loads.

func bytesAsF32(b []byte) []float32 {
	if len(b) < 4 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
}

func bytesAsU16(b []byte) []uint16 {
	if len(b) < 2 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), len(b)/2)
}

// dotF32Go is the pure-Go float32 dot product, four independent
// accumulators deep to hide the add latency.
func dotF32Go(w, x []float32) float32 {
	x = x[:len(w)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(w); i += 4 {
		s0 += w[i] * x[i]
		s1 += w[i+1] * x[i+1]
		s2 += w[i+2] * x[i+2]
		s3 += w[i+3] * x[i+3]
	}
	for ; i < len(w); i++ {
		s0 += w[i] * x[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// dotF16Go is the pure-Go fp16·float32 dot product.
func dotF16Go(w []uint16, x []float32) float32 {
	x = x[:len(w)]
	tab := f16Table
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(w); i += 4 {
		s0 += tab[w[i]] * x[i]
		s1 += tab[w[i+1]] * x[i+1]
		s2 += tab[w[i+2]] * x[i+2]
		s3 += tab[w[i+3]] * x[i+3]
	}
	for ; i < len(w); i++ {
		s0 += tab[w[i]] * x[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// dotBF16Go is the bf16·float32 dot product.
func dotBF16Go(w []uint16, x []float32) float32 {
	x = x[:len(w)]
	var s0, s1 float32
	i := 0
	for ; i+2 <= len(w); i += 2 {
		s0 += math.Float32frombits(uint32(w[i])<<16) * x[i]
		s1 += math.Float32frombits(uint32(w[i+1])<<16) * x[i+1]
	}
	for ; i < len(w); i++ {
		s0 += math.Float32frombits(uint32(w[i])<<16) * x[i]
	}
	return s0 + s1
}

func dotRowF32(w []byte, a *activation) float32  { return dotF32(bytesAsF32(w), a.f32) }
func dotRowF16(w []byte, a *activation) float32  { return dotF16(bytesAsU16(w), a.f32) }
func dotRowBF16(w []byte, a *activation) float32 { return dotBF16Go(bytesAsU16(w), a.f32) }

// dotRowsF16R4Go is dotRowF16 for the four rows of w (rowBytes each):
// the twin of the four-row kernel.
func dotRowsF16R4Go(w []byte, rowBytes int, a *activation, out *[4]float32) {
	for r := range out {
		out[r] = dotRowF16(w[r*rowBytes:(r+1)*rowBytes], a)
	}
}
