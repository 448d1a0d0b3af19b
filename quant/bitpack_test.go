package quant

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func TestPackLayout(t *testing.T) {
	// Hand-worked bit layouts, least significant bit first.
	tests := []struct {
		b    int
		idx  []uint8
		want []byte
	}{
		{1, []uint8{1, 0, 1, 1, 0, 0, 0, 1, 1}, []byte{0b10001101, 0b1}},
		{2, []uint8{3, 0, 2, 1, 1}, []byte{0b01100011, 0b01}},
		{3, []uint8{1, 2, 3, 4, 5, 6, 7, 0}, []byte{0b11010001, 0b01011000, 0b00011111}},
		{4, []uint8{0xa, 0x3, 0xf}, []byte{0x3a, 0x0f}},
		{5, []uint8{31, 1}, []byte{0b00111111, 0b00}},
		{8, []uint8{200, 7}, []byte{200, 7}},
	}
	for _, tt := range tests {
		got := make([]byte, packedLen(len(tt.idx), tt.b))
		pack(got, tt.idx, tt.b)
		if !bytes.Equal(got, tt.want) {
			t.Errorf("b=%d pack(%v) = %08b, want %08b", tt.b, tt.idx, got, tt.want)
		}
		back := make([]uint8, len(tt.idx))
		unpack(back, got, tt.b)
		if !bytes.Equal(back, tt.idx) {
			t.Errorf("b=%d unpack = %v, want %v", tt.b, back, tt.idx)
		}
	}
}

func TestPackRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for b := 1; b <= 8; b++ {
		for _, n := range []int{1, 7, 8, 33, 128} {
			idx := make([]uint8, n)
			for i := range idx {
				idx[i] = uint8(r.IntN(1 << b))
			}
			buf := make([]byte, packedLen(n, b))
			pack(buf, idx, b)
			back := make([]uint8, n)
			unpack(back, buf, b)
			if !bytes.Equal(back, idx) {
				t.Fatalf("b=%d n=%d: round trip differs", b, n)
			}
		}
	}
}
