package tensor

import "encoding/binary"

// Row dot products of the 32-element formats against an activation
// quantized to 8 bits per 32 elements: per block an exact int32 sum of
// products, scaled once by d_w·d_x (plus m_w·Σx for the formats with a
// min), as llama.cpp's ggml_vec_dot_q*_q8_0/q8_1 do.

func f16Scale(b []byte) float32 { return f16Table[binary.LittleEndian.Uint16(b)] }

func dotRowQ4_0Go(w []byte, a *activation) float32 {
	var sum float32
	for b := range len(w) / q4_0Bytes {
		blk := (*[q4_0Bytes]byte)(w[b*q4_0Bytes:])
		q8 := (*[qk0]int8)(a.qs[b*qk0:])
		var isum int32
		for j := range 16 {
			q := blk[2+j]
			isum += (int32(q&0xf)-8)*int32(q8[j]) + (int32(q>>4)-8)*int32(q8[j+16])
		}
		sum += f16Scale(blk[0:]) * a.d[b] * float32(isum)
	}
	return sum
}

func dotRowQ4_1(w []byte, a *activation) float32 {
	var sum float32
	for b := range len(w) / q4_1Bytes {
		blk := (*[q4_1Bytes]byte)(w[b*q4_1Bytes:])
		q8 := (*[qk0]int8)(a.qs[b*qk0:])
		var isum int32
		for j := range 16 {
			q := blk[4+j]
			isum += int32(q&0xf)*int32(q8[j]) + int32(q>>4)*int32(q8[j+16])
		}
		sum += f16Scale(blk[0:])*a.d[b]*float32(isum) + f16Scale(blk[2:])*a.s[b]
	}
	return sum
}

func dotRowQ5_0(w []byte, a *activation) float32 {
	var sum float32
	for b := range len(w) / q5_0Bytes {
		blk := (*[q5_0Bytes]byte)(w[b*q5_0Bytes:])
		q8 := (*[qk0]int8)(a.qs[b*qk0:])
		qh := binary.LittleEndian.Uint32(blk[2:])
		var isum int32
		for j := range 16 {
			q := blk[6+j]
			lo := int32(q&0xf) | int32(qh>>j&1)<<4
			hi := int32(q>>4) | int32(qh>>(j+16)&1)<<4
			isum += (lo-16)*int32(q8[j]) + (hi-16)*int32(q8[j+16])
		}
		sum += f16Scale(blk[0:]) * a.d[b] * float32(isum)
	}
	return sum
}

func dotRowQ5_1(w []byte, a *activation) float32 {
	var sum float32
	for b := range len(w) / q5_1Bytes {
		blk := (*[q5_1Bytes]byte)(w[b*q5_1Bytes:])
		q8 := (*[qk0]int8)(a.qs[b*qk0:])
		qh := binary.LittleEndian.Uint32(blk[4:])
		var isum int32
		for j := range 16 {
			q := blk[8+j]
			lo := int32(q&0xf) | int32(qh>>j&1)<<4
			hi := int32(q>>4) | int32(qh>>(j+16)&1)<<4
			isum += lo*int32(q8[j]) + hi*int32(q8[j+16])
		}
		sum += f16Scale(blk[0:])*a.d[b]*float32(isum) + f16Scale(blk[2:])*a.s[b]
	}
	return sum
}

func dotRowQ8_0Go(w []byte, a *activation) float32 {
	var sum float32
	for b := range len(w) / q8_0Bytes {
		blk := (*[q8_0Bytes]byte)(w[b*q8_0Bytes:])
		q8 := (*[qk0]int8)(a.qs[b*qk0:])
		var i0, i1 int32
		for j := 0; j < qk0; j += 2 {
			i0 += int32(int8(blk[2+j])) * int32(q8[j])
			i1 += int32(int8(blk[3+j])) * int32(q8[j+1])
		}
		sum += f16Scale(blk[0:]) * a.d[b] * float32(i0+i1)
	}
	return sum
}

// dotRowQ8_0x4Go is four dotRowQ8_0Go calls: the twin of the assembly that
// serves four activations per pass over the row.
func dotRowQ8_0x4Go(w []byte, a *[4]*activation, out *[4]float32) {
	for k, ak := range a {
		out[k] = dotRowQ8_0Go(w, ak)
	}
}

// dotRowsQ8_0x4Go is dotRowQ8_0Go on each of the four rows of w
// (rowBytes each): the twin of the assembly that serves four rows per
// call in decode.
func dotRowsQ8_0x4Go(w []byte, rowBytes int, a *activation, out *[4]float32) {
	for r := range out {
		out[r] = dotRowQ8_0Go(w[r*rowBytes:(r+1)*rowBytes], a)
	}
}
