package sha256x2

import (
	"crypto/sha256"
	"math/rand/v2"
	"testing"
)

// TestSum2 compares Sum2 and Sum2Every (in parts of 64 bytes to 64 KiB,
// counting the calls between them) with crypto/sha256 on every length up to 300
// bytes (every padding case: the tail short of 56 bytes, from 56 on, and
// none), on 1 MiB (a manifest piece) and on strings of different lengths,
// with random and equal contents.
func TestSum2(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	fill := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	lengths := [][2]int{{1 << 20, 1 << 20}, {1<<20 - 1, 1<<20 - 1}, {64, 65}, {0, 1000}, {4096, 0}}
	for n := range 301 {
		lengths = append(lengths, [2]int{n, n})
	}
	for _, l := range lengths {
		a, b := fill(l[0]), fill(l[1])
		for _, pair := range [][2][]byte{{a, b}, {a, a}} {
			wa, wb := sha256.Sum256(pair[0]), sha256.Sum256(pair[1])
			if sa, sb := Sum2(pair[0], pair[1]); sa != wa || sb != wb {
				t.Fatalf("lengths %d, %d: Sum2 differs from crypto/sha256 (assembly %v)", len(pair[0]), len(pair[1]), useAsm)
			}
			for _, every := range []int{64, 100, 4096, 65536} {
				calls, want := 0, (max(len(pair[0]), len(pair[1]))-1)/(every&^63)
				sa, sb := Sum2Every(pair[0], pair[1], every, func() { calls++ })
				// One call between parts; a tail shorter than 64 bytes may
				// go with the padding, not as a part of its own.
				if sa != wa || sb != wb || calls > max(want, 0) || calls < want-1 {
					t.Fatalf("lengths %d, %d, every %d: Sum2Every differs from crypto/sha256 or called between %d times, want %d", len(pair[0]), len(pair[1]), every, calls, max(want, 0))
				}
			}
		}
	}
	t.Logf("assembly: %v", useAsm)
}

// BenchmarkSum2 hashes two 1 MiB strings with Sum2 and with two calls of
// sha256.Sum256: MB/s counts both strings.
func BenchmarkSum2(b *testing.B) {
	x, y := make([]byte, 1<<20), make([]byte, 1<<20)
	for i := range x {
		x[i], y[i] = byte(i*7), byte(i*13)
	}
	b.Run("sum2", func(b *testing.B) {
		b.SetBytes(2 << 20)
		for b.Loop() {
			Sum2(x, y)
		}
	})
	b.Run("sha256", func(b *testing.B) {
		b.SetBytes(2 << 20)
		for b.Loop() {
			sha256.Sum256(x)
			sha256.Sum256(y)
		}
	})
}
