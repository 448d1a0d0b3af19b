package compact

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkCompactHead compacts one KV head of a 4096-token context with
// 2048 reference queries at head dimension 128 (the default model's
// shape) by 20x and 50x.
func BenchmarkCompactHead(b *testing.B) {
	r := rand.New(rand.NewPCG(9, 10))
	const T, d, n = 4096, 128, 2048
	blk := Block{Dim: d, Keys: gaussian(r, T*d, 1), Values: gaussian(r, T*d, 1), Queries: gaussian(r, n*d, 1.5), Scale: 0.0884}
	for _, ratio := range []int{20, 50} {
		for _, f := range []Fit{AM(T / ratio), AMOMP(T / ratio)} {
			b.Run(fmt.Sprintf("%s/%dx", f.Select, ratio), func(b *testing.B) {
				for b.Loop() {
					if _, err := CompactHead(blk, f); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
