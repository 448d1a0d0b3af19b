package tensor

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"
)

// blockOf returns n zero bytes with the given bytes set, so a test can
// spell out a block field by field.
func blockOf(n int, set map[int]byte) []byte {
	b := make([]byte, n)
	for i, v := range set {
		b[i] = v
	}
	return b
}

// TestDequantizeHandBlocks decodes one block of each format whose fields
// were written by hand from the ggml-common.h layouts, and checks elements
// whose values were worked out by hand (all exactly representable, so the
// comparison is exact).
func TestDequantizeHandBlocks(t *testing.T) {
	f32le := func(f float32) []byte { return binary.LittleEndian.AppendUint32(nil, math.Float32bits(f)) }
	q8k := blockOf(q8_KBytes, map[int]byte{4 + 3: 0xfb, 4 + 255: 0x7f})
	copy(q8k, f32le(0.25))
	tests := []struct {
		name  string
		t     DType
		src   []byte
		want  map[int]float32 // element -> value
		other *float32        // if set, every element not in want
	}{
		{"F32", F32, append(f32le(1.5), f32le(-2)...), map[int]float32{0: 1.5, 1: -2}, nil},
		{"F16", F16, []byte{0x00, 0x3c, 0x01, 0x00, 0x00, 0xfc}, map[int]float32{0: 1, 1: 0x1p-24, 2: float32(math.Inf(-1))}, nil},
		{"BF16", BF16, []byte{0x80, 0x3f, 0x40, 0xc0}, map[int]float32{0: 1, 1: -3}, nil},
		// d = 0.5; byte 0 = 0x1f: element 0 = (15-8)/2, element 16 = (1-8)/2.
		{"Q4_0", Q4_0, blockOf(18, map[int]byte{1: 0x38, 2: 0x1f}),
			map[int]float32{0: 3.5, 16: -3.5}, ptr(-4)},
		// d = 0.5, m = -1; byte 0 = 0x2a: 10·0.5-1 and 2·0.5-1.
		{"Q4_1", Q4_1, blockOf(20, map[int]byte{1: 0x38, 3: 0xbc, 4: 0x2a}),
			map[int]float32{0: 4, 16: 0}, ptr(-1)},
		// d = 0.25, qh bits 0 and 16, qs[0] = 0x3f: (31-16)/4 and (19-16)/4.
		{"Q5_0", Q5_0, blockOf(22, map[int]byte{1: 0x34, 2: 0x01, 4: 0x01, 6: 0x3f}),
			map[int]float32{0: 3.75, 16: 0.75}, ptr(-4)},
		// d = 1, m = 0.5, qh bit 1, qs[1] = 0x21: 17+0.5 and 2+0.5.
		{"Q5_1", Q5_1, blockOf(24, map[int]byte{1: 0x3c, 3: 0x38, 4: 0x02, 9: 0x21}),
			map[int]float32{1: 17.5, 17: 2.5}, ptr(0.5)},
		// d = 0.125, q0 = -128, q1 = 127.
		{"Q8_0", Q8_0, blockOf(34, map[int]byte{1: 0x30, 2: 0x80, 3: 0x7f}),
			map[int]float32{0: -16, 1: 15.875}, ptr(0)},
		// d = 2, dmin = 0.25; sub-block 0: scale 1, min 2; element 0 has q = 3:
		// 2·1·3 - 0.25·2. Sub-blocks 1.. have scale and min 0.
		{"Q2_K", Q2_K, blockOf(84, map[int]byte{0: 0x21, 16: 0x03, 81: 0x40, 83: 0x34}),
			map[int]float32{0: 5.5, 1: -0.5, 15: -0.5, 16: 0, 32: 0, 255: 0}, nil},
		// d = 1; sub-block 0 scale = (1 | 2<<4) - 32 = 1; element 0: q = 2,
		// no high bit: 2-4; element 1: q = 3 with high bit: 3. Sub-block 1
		// scale = 0-32 and q = 0-4: 128.
		{"Q3_K", Q3_K, blockOf(110, map[int]byte{1: 0x01, 32: 0x02, 33: 0x03, 96: 0x01, 104: 0x02, 109: 0x3c}),
			map[int]float32{0: -2, 1: 3, 2: -4, 16: 128}, nil},
		// d = 1, dmin = 0.5; sub-block 0: scale 2, min 3; sub-block 5: scale
		// 37 (5 in s[9] low, 2 in s[1] top), min 18 (2 in s[9] high, 1 in
		// s[5] top). Element 0: 2·7 - 1.5; element 160 (high nibble of
		// qs[64]): 37·10 - 9.
		{"Q4_K", Q4_K, blockOf(144, map[int]byte{1: 0x3c, 3: 0x38, 4: 0x02, 5: 0x80, 8: 0x03, 9: 0x40, 13: 0x25, 16: 0x07, 16 + 64: 0xa0}),
			map[int]float32{0: 12.5, 1: -1.5, 32: 0, 128: 0, 160: 361, 161: -9}, nil},
		// As Q4_K, plus qh[0] bit 0 (element 0 gains 16) and bit 5
		// (element 160 gains 16).
		{"Q5_K", Q5_K, blockOf(176, map[int]byte{1: 0x3c, 3: 0x38, 4: 0x02, 5: 0x80, 8: 0x03, 9: 0x40, 13: 0x25, 16: 0x21, 48: 0x07, 48 + 64: 0xa0}),
			map[int]float32{0: 44.5, 1: -1.5, 160: 361 + 37*16, 161: -9}, nil},
		// d = 0.5; scales[0] = -2, scales[2] = 3. Element 0: ql 5, qh 2 →
		// 37-32 = 5 → 0.5·-2·5; element 32: ql 15, qh 0 → -17 → 0.5·3·-17.
		{"Q6_K", Q6_K, blockOf(210, map[int]byte{0: 0x05, 32: 0x0f, 128: 0x02, 192: 0xfe, 194: 0x03, 209: 0x38}),
			map[int]float32{0: -5, 1: 32, 32: -25.5, 33: -48, 64: 0}, nil},
		// d = 0.25 (float32); q3 = -5, q255 = 127.
		{"Q8_K", Q8_K, q8k, map[int]float32{3: -1.25, 255: 31.75}, ptr(0)},
		// d = 0.5 (bytes 64-65); byte 0 = 0b10_01_00_10 holds elements 0,
		// 32, 64, 96 (codes 2, 0, 1, 2: d·(q−1)); byte 33 (second half,
		// m = 1) holds element 129 in its low bits: code 3 → 2·d; its
		// other codes, and every other byte's, are 0 → −d.
		{"TQ2_0", TQ2_0, blockOf(66, map[int]byte{0: 0x92, 33: 0x03, 65: 0x38}),
			map[int]float32{0: 0.5, 32: -0.5, 64: 0, 96: 0.5, 129: 1, 161: -0.5}, ptr(-0.5)},
		// d = 0.5 (bytes 52-53). qs[0] = 187: code n is ((187·3ⁿ mod
		// 256)·3) >> 8 = 2, 0, 1, 2, 0 for n = 0…4 (561>>8; 49·3>>8;
		// 147·3>>8; 185·3>>8; 43·3>>8): elements 0, 32, 64, 96, 128.
		// qs[33] = 255 (codes 2, 2, 2, 2, 2): elements 160 + 16n + 1.
		// qh[2] = 255: elements 240 + 4n + 2, n = 0…3. Byte 0 elsewhere:
		// codes 0 → −d.
		{"TQ1_0", TQ1_0, blockOf(54, map[int]byte{0: 187, 33: 255, 50: 255, 53: 0x38}),
			map[int]float32{0: 0.5, 32: -0.5, 64: 0, 96: 0.5, 128: -0.5, 161: 0.5, 177: 0.5, 193: 0.5, 209: 0.5, 225: 0.5,
				242: 0.5, 246: 0.5, 250: 0.5, 254: 0.5}, ptr(-0.5)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := len(tt.src) / tt.t.BlockBytes() * tt.t.BlockSize()
			got := make([]float32, n)
			if err := Dequantize(tt.t, got, tt.src); err != nil {
				t.Fatal(err)
			}
			for i, g := range got {
				want, ok := tt.want[i]
				if !ok {
					if tt.other == nil {
						continue
					}
					want = *tt.other
				}
				if g != want {
					t.Errorf("element %d = %g, want %g", i, g, want)
				}
			}
		})
	}
}

func ptr(f float32) *float32 { return &f }

func TestDequantizeErrors(t *testing.T) {
	tests := []struct {
		t       DType
		dst     int
		src     int
		wantSub string
	}{
		{Q8_0, 32, 33, "need 34 bytes, have 33"},
		{Q8_0, 31, 34, "not a multiple"},
		{Q4_K, 256, 0, "need 144 bytes"},
		{IQ2_XXS, 256, 66, "not supported"},
		{DType(4), 32, 18, "not supported"},
		{F32, 2, 4, "need 8 bytes"},
	}
	for _, tt := range tests {
		err := Dequantize(tt.t, make([]float32, tt.dst), make([]byte, tt.src))
		if err == nil || !strings.Contains(err.Error(), tt.wantSub) || !strings.HasPrefix(err.Error(), "tensor: ") {
			t.Errorf("Dequantize(%s, %d, %d) = %v, want error containing %q", tt.t, tt.dst, tt.src, err, tt.wantSub)
		}
	}
	if err := Dequantize(Q6_K, nil, nil); err != nil {
		t.Errorf("empty Q6_K row: %v", err)
	}
}

// FuzzDequantize checks that any bytes of the right length decode without
// a panic, and that wrong lengths are refused, for every supported type.
func FuzzDequantize(f *testing.F) {
	f.Add(uint8(Q4_K), []byte{1, 2, 3})
	f.Add(uint8(Q8_0), make([]byte, 34))
	f.Add(uint8(Q6_K), make([]byte, 420))
	f.Add(uint8(TQ2_0), make([]byte, 67))
	f.Add(uint8(TQ1_0), make([]byte, 108))
	f.Fuzz(func(t *testing.T, id uint8, data []byte) {
		ty := DType(id)
		if !CanDequantize(ty) {
			return
		}
		blocks := len(data) / ty.BlockBytes()
		dst := make([]float32, blocks*ty.BlockSize())
		if err := Dequantize(ty, dst, data[:blocks*ty.BlockBytes()]); err != nil {
			t.Fatalf("%s: %v", ty, err)
		}
		if len(data)%ty.BlockBytes() != 0 {
			if err := Dequantize(ty, dst, data); err == nil {
				t.Fatalf("%s: %d bytes for %d elements accepted", ty, len(data), len(dst))
			}
		}
	})
}
