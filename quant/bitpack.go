package quant

// Indices of b bits are packed least-significant bit first into a byte
// stream: index j occupies bits [j·b, (j+1)·b) of the little-endian
// stream. Groups of 8 indices therefore fill exactly b bytes, which the
// SIMD scorers rely on.

// packedLen returns the bytes that n indices of b bits occupy.
func packedLen(n, b int) int { return (n*b + 7) / 8 }

// pack writes the low b bits of each idx into dst (len packedLen).
func pack(dst []byte, idx []uint8, b int) {
	clear(dst[:packedLen(len(idx), b)])
	switch b {
	case 8:
		copy(dst, idx)
		return
	case 4:
		for i := 0; i+1 < len(idx); i += 2 {
			dst[i/2] = idx[i]&15 | idx[i+1]<<4
		}
		if len(idx)%2 == 1 {
			dst[len(idx)/2] = idx[len(idx)-1] & 15
		}
		return
	}
	var acc uint64
	nb, o := 0, 0
	mask := uint64(1)<<b - 1
	for _, v := range idx {
		acc |= (uint64(v) & mask) << nb
		nb += b
		for nb >= 8 {
			dst[o] = byte(acc)
			o++
			acc >>= 8
			nb -= 8
		}
	}
	if nb > 0 {
		dst[o] = byte(acc)
	}
}

// unpack reads n indices of b bits from src into idx[:n].
func unpack(idx []uint8, src []byte, b int) {
	n := len(idx)
	switch b {
	case 8:
		copy(idx, src[:n])
		return
	case 4:
		for i := range n {
			idx[i] = src[i/2] >> (4 * (i & 1)) & 15
		}
		return
	}
	var acc uint64
	nb, o := 0, 0
	mask := uint64(1)<<b - 1
	for i := range n {
		for nb < b {
			acc |= uint64(src[o]) << nb
			o++
			nb += 8
		}
		idx[i] = uint8(acc & mask)
		acc >>= b
		nb -= b
	}
}
