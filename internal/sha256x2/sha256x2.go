// Package sha256x2 hashes two byte strings of the same length with
// SHA-256 at once: on x86-64 with the SHA extensions the two streams
// share one loop, each one's rounds running while the other's wait on
// their latency, which on cores where SHA256RNDS2 is latency-bound (the
// common case) nearly doubles the bytes hashed per core. The results
// are crypto/sha256's, bit for bit; elsewhere, and for strings of
// different lengths, each string is hashed by crypto/sha256.
package sha256x2

import (
	"crypto/sha256"
	"encoding/binary"
)

// Size is the size of a SHA-256 checksum in bytes.
const Size = sha256.Size

// Sum2 returns the SHA-256 checksums of a and of b.
func Sum2(a, b []byte) (sa, sb [Size]byte) { return Sum2Every(a, b, 0, nil) }

// Sum2Every is Sum2 done every bytes of each string at a time (rounded
// down to a multiple of 64; 0 or less: at once), calling between after
// each part but the last: the assembly cannot be preempted, so a caller
// that shares its CPU can yield there.
func Sum2Every(a, b []byte, every int, between func()) (sa, sb [Size]byte) {
	longest := max(len(a), len(b))
	every &^= 63
	if every <= 0 || between == nil {
		every = max(longest, 64)
	}
	if !useAsm || len(a) != len(b) {
		ha, hb := sha256.New(), sha256.New()
		for off := 0; off < longest; off += every {
			if off > 0 {
				between()
			}
			ha.Write(a[min(off, len(a)):min(off+every, len(a))])
			hb.Write(b[min(off, len(b)):min(off+every, len(b))])
		}
		ha.Sum(sa[:0])
		hb.Sum(sb[:0])
		return sa, sb
	}
	ha, hb := iv, iv
	n := len(a) &^ 63
	for off := 0; off < n; off += every {
		if off > 0 {
			between()
		}
		blocks2(&ha, &hb, &a[off], &b[off], min(every, n-off))
	}
	// The same padding for both (their lengths are equal): the tail, a
	// one bit, zeros and the length in bits, to a multiple of 64 bytes.
	var pa, pb [128]byte
	tail := len(a) - n
	copy(pa[:], a[n:])
	copy(pb[:], b[n:])
	pa[tail], pb[tail] = 0x80, 0x80
	end := 64
	if tail >= 56 {
		end = 128
	}
	binary.BigEndian.PutUint64(pa[end-8:], uint64(len(a))<<3)
	binary.BigEndian.PutUint64(pb[end-8:], uint64(len(b))<<3)
	blocks2(&ha, &hb, &pa[0], &pb[0], end)
	for i := range 8 {
		binary.BigEndian.PutUint32(sa[4*i:], ha[i])
		binary.BigEndian.PutUint32(sb[4*i:], hb[i])
	}
	return sa, sb
}

// iv is SHA-256's initial state.
var iv = [8]uint32{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}
