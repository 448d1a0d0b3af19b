package tensor

import "encoding/binary"

// Block layouts of the 32-element GGML formats (ggml-common.h). Each block
// starts with its fp16 scale d; Q4_1 and Q5_1 follow it with an fp16 min m;
// Q5_0 and Q5_1 then hold the fifth bits (qh, one little-endian uint32);
// last come the packed quants, element j in the low nibble of byte j and
// element j+16 in its high nibble.
const (
	qk0 = 32 // elements in a Q4_0 … Q8_0 block

	q4_0Bytes = 18
	q4_1Bytes = 20
	q5_0Bytes = 22
	q5_1Bytes = 24
	q8_0Bytes = 34
)

// dequantQ4_0: x = (q-8)·d.
func dequantQ4_0(dst []float32, src []byte) {
	for b := range len(src) / q4_0Bytes {
		blk := (*[q4_0Bytes]byte)(src[b*q4_0Bytes:])
		y := (*[qk0]float32)(dst[b*qk0:])
		d := f16At(blk[0:])
		for j := range 16 {
			q := blk[2+j]
			y[j] = float32(int32(q&0xf)-8) * d
			y[j+16] = float32(int32(q>>4)-8) * d
		}
	}
}

// dequantQ4_1: x = q·d + m.
func dequantQ4_1(dst []float32, src []byte) {
	for b := range len(src) / q4_1Bytes {
		blk := (*[q4_1Bytes]byte)(src[b*q4_1Bytes:])
		y := (*[qk0]float32)(dst[b*qk0:])
		d, m := f16At(blk[0:]), f16At(blk[2:])
		for j := range 16 {
			q := blk[4+j]
			y[j] = float32(float32(q&0xf)*d) + m
			y[j+16] = float32(float32(q>>4)*d) + m
		}
	}
}

// dequantQ5_0: x = (q-16)·d, q = nibble | fifth bit << 4.
func dequantQ5_0(dst []float32, src []byte) {
	for b := range len(src) / q5_0Bytes {
		blk := (*[q5_0Bytes]byte)(src[b*q5_0Bytes:])
		y := (*[qk0]float32)(dst[b*qk0:])
		d := f16At(blk[0:])
		qh := binary.LittleEndian.Uint32(blk[2:])
		for j := range 16 {
			q := blk[6+j]
			lo := int32(q&0xf) | int32(qh>>j&1)<<4
			hi := int32(q>>4) | int32(qh>>(j+16)&1)<<4
			y[j] = float32(lo-16) * d
			y[j+16] = float32(hi-16) * d
		}
	}
}

// dequantQ5_1: x = q·d + m, q = nibble | fifth bit << 4.
func dequantQ5_1(dst []float32, src []byte) {
	for b := range len(src) / q5_1Bytes {
		blk := (*[q5_1Bytes]byte)(src[b*q5_1Bytes:])
		y := (*[qk0]float32)(dst[b*qk0:])
		d, m := f16At(blk[0:]), f16At(blk[2:])
		qh := binary.LittleEndian.Uint32(blk[4:])
		for j := range 16 {
			q := blk[8+j]
			lo := uint32(q&0xf) | (qh>>j&1)<<4
			hi := uint32(q>>4) | (qh>>(j+16)&1)<<4
			y[j] = float32(float32(lo)*d) + m
			y[j+16] = float32(float32(hi)*d) + m
		}
	}
}

// dequantQ8_0: x = q·d.
func dequantQ8_0(dst []float32, src []byte) {
	for b := range len(src) / q8_0Bytes {
		blk := (*[q8_0Bytes]byte)(src[b*q8_0Bytes:])
		y := (*[qk0]float32)(dst[b*qk0:])
		d := f16At(blk[0:])
		for j := range qk0 {
			y[j] = float32(int8(blk[2+j])) * d
		}
	}
}
