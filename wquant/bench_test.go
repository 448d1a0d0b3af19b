package wquant

import (
	"context"
	"crypto/sha256"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/tensor"
)

// sealedRandom writes a sealed file of n tensors of size bytes each
// (random Q8_0 blocks) and returns it opened.
func sealedRandom(b *testing.B, n, size int) *gguf.File {
	b.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	var ts []Tensor
	for i := range n {
		data := make([]byte, size/34*34)
		for j := range data {
			data[j] = byte(r.Uint32())
		}
		ts = append(ts, Tensor{Name: "blk." + string(rune('a'+i)) + ".weight", Type: tensor.Q8_0, Shape: []int64{32, int64(len(data) / 34)}, Data: data})
	}
	path := filepath.Join(b.TempDir(), "r.gguf")
	if err := writeGGUF(path, nil, ts, "bench", "", ""); err != nil {
		b.Fatal(err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// BenchmarkVerify hashes a 256 MiB file (8 tensors of 32 MiB, memory
// mapped and in the page cache) on one worker and on every CPU: bytes per
// second per core is the first, how it scales the second. MB/cpu-s is the
// same per second of CPU time the process used, which a busy machine
// disturbs less.
func BenchmarkVerify(b *testing.B) {
	f := sealedRandom(b, 8, 32<<20)
	for _, w := range []int{1, runtime.NumCPU()} {
		b.Run(map[bool]string{true: "1-worker", false: "all-cpus"}[w == 1], func(b *testing.B) {
			b.SetBytes(8 * 32 << 20)
			cpu0, ok := CPUTime()
			for b.Loop() {
				if _, err := Verify(context.Background(), f, VerifyOptions{Workers: w}); err != nil {
					b.Fatal(err)
				}
			}
			if cpu1, _ := CPUTime(); ok {
				b.ReportMetric(float64(b.N)*(8*32<<20)/(cpu1-cpu0).Seconds()/1e6, "MB/cpu-s")
			}
		})
	}
}

// BenchmarkSHA256 hashes a 1 MiB buffer that stays in cache: the rate of
// Go's crypto/sha256 on one core, the ceiling of Verify's. Run it with
// GODEBUG=cpu.sha=off to see the rate without the SHA extensions.
func BenchmarkSHA256(b *testing.B) {
	buf := make([]byte, HashChunk)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		sha256.Sum256(buf)
	}
}
