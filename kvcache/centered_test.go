package kvcache

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// rotatingKeys returns n tokens of keys k_t = R_t·(μ + r_t) per KV head,
// r_t ~ N(0, I) and a fixed μ per head with ‖μ‖² = ratio·d (ratio times
// E‖r‖²), as real keys look before and after RoPE (centered.go), and
// Gaussian values.
func rotatingKeys(r *rand.Rand, s Shape, rope *Rope, n int, ratio float64) (ks, vs [][]float32) {
	d := s.HeadDim
	mus := make([][]float64, s.KVHeads)
	for h := range mus {
		mu := make([]float64, d)
		var e float64
		for i := range mu {
			mu[i] = r.NormFloat64()
			if i%5 == 0 { // uneven channels, as real keys have
				mu[i] *= 4
			}
			e += mu[i] * mu[i]
		}
		for i := range mu {
			mu[i] *= math.Sqrt(ratio * float64(d) / e)
		}
		mus[h] = mu
	}
	x := make([]float64, d)
	for t := range n {
		k := make([]float32, s.KVHeads*d)
		v := make([]float32, s.KVHeads*d)
		for h, mu := range mus {
			for i := range x {
				x[i] = mu[i] + r.NormFloat64()
			}
			rope.Rotate(x, x, t)
			for i, xv := range x {
				k[h*d+i] = float32(xv)
				v[h*d+i] = float32(r.NormFloat64())
			}
		}
		ks, vs = append(ks, k), append(vs, v)
	}
	return ks, vs
}

// TestCenteredKeys: on keys whose pre-RoPE mean holds 90% of their energy
// (‖μ‖² = 9·E‖r‖²), a turbo3 cache whose Shape has the rope scores its compressed
// keys with the error that TurboQuant_mse at 3 bits makes on the residual
// r alone: E[(⟨q,k⟩ − score)²] ≈ D·E‖r‖²·‖q‖²/d, D = 0.034 (the rotation
// makes the error's direction uniform, so a query sees 1/d of it;
// ALGORITHMS.md §3, d = 128). The bound, 1.3·D, leaves room for the norm
// correction's scale and the mean estimated from the first 31 tokens
// (about 1/31 more residual energy). Quantizing k itself would make 10
// times the error (D·E‖k‖²), and centring on the unturned mean (no rope
// in the Shape) leaves the turning part in: both fail the bound.
func TestCenteredKeys(t *testing.T) {
	s := Shape{QHeads: 4, KVHeads: 2, HeadDim: 128}
	rope := testRope(t, s.HeadDim, s.HeadDim, false)
	const n, D = 400, 0.034
	relErr := func(useRope bool) float64 {
		r := rand.New(rand.NewPCG(11, 12))
		spec := specFor(t, "turbo3", 16)
		spec.V, _ = ParseFormat("f16")
		sh := s
		if useRope {
			sh.Rope = rope
		}
		c, err := spec.NewCache(0, sh)
		if err != nil {
			t.Fatal(err)
		}
		ks, vs := rotatingKeys(r, s, rope, n, 9)
		for i := range ks {
			if err := c.Append(ks[i], vs[i]); err != nil {
				t.Fatal(err)
			}
		}
		cc := c.(*Compressed)
		d, nc := s.HeadDim, cc.nc
		var num, den float64
		for hi, h := range cc.heads {
			if _, ok := h.keys.(*centeredKeys); !ok {
				t.Fatalf("keys stored as %T, want centred", h.keys)
			}
			qs := make([][]float32, s.Group())
			dst := make([][]float32, s.Group())
			for j := range qs {
				qs[j] = randQuery(r, Shape{QHeads: 1, KVHeads: 1, HeadDim: d})
				dst[j] = make([]float32, nc)
			}
			h.keys.score(dst, qs, 0)
			for j, q := range qs {
				var qq float64
				for _, v := range q {
					qq += float64(v) * float64(v)
				}
				for tok := range nc {
					var exact float64
					for i, v := range ks[tok][hi*d : (hi+1)*d] {
						exact += float64(q[i]) * float64(v)
					}
					e := float64(dst[j][tok]) - exact
					num += e * e
					den += qq // E‖r‖² = d, so D·E‖r‖²·‖q‖²/d = D·‖q‖²
				}
			}
		}
		return num / den
	}
	got := relErr(true)
	t.Logf("score error / (‖q‖²·E‖r‖²/d): %.4f with the rope, %.4f without", got, relErr(false))
	if got > 1.3*D {
		t.Errorf("centred turbo3 score error %.4f, want ≤ %.4f (TurboQuant_mse at 3 bits on the residual)", got, 1.3*D)
	}
	if without := relErr(false); without < 3*got {
		t.Errorf("without the rope the error is %.4f, want well above %.4f: the turning mean is left in the keys", without, got)
	}
}

// BenchmarkCenteredScore: scoring 16k compressed turbo3.5 keys for a group
// of 2 and of 4 query heads, without and with the mean's share added back
// (Rope.meanScores), the cost centring adds to each decode step.
// cpu-ns/op is the thread's CPU time.
func BenchmarkCenteredScore(b *testing.B) {
	rope := testRope(b, 128, 128, false)
	s := Shape{QHeads: 4, KVHeads: 1, HeadDim: 128, Rope: rope}
	r := rand.New(rand.NewPCG(1, 1))
	c, err := specFor(b, "turbo3.5", 16).NewCache(0, s)
	if err != nil {
		b.Fatal(err)
	}
	ks, vs := rotatingKeys(r, s, rope, 16384, 4)
	for i := range ks {
		if err := c.Append(ks[i], vs[i]); err != nil {
			b.Fatal(err)
		}
	}
	ck := c.(*Compressed).heads[0].keys.(*centeredKeys)
	n := c.(*Compressed).nc
	qs := make([][]float32, 4)
	dst := make([][]float32, 4)
	for j := range qs {
		qs[j] = randQuery(r, Shape{QHeads: 1, KVHeads: 1, HeadDim: 128})
		dst[j] = make([]float32, n)
	}
	for _, g := range []int{2, 4} {
		b.Run(fmt.Sprintf("g=%d/codes", g), func(b *testing.B) {
			loopCPU(b, func() { ck.inner.score(dst[:g], qs[:g], 0) })
		})
		b.Run(fmt.Sprintf("g=%d/codes+mean", g), func(b *testing.B) {
			loopCPU(b, func() { ck.score(dst[:g], qs[:g], 0) })
		})
		b.Run(fmt.Sprintf("g=%d/mean", g), func(b *testing.B) {
			loopCPU(b, func() { rope.meanScores(dst[:g], qs[:g], ck.mu, 0) })
		})
	}
}
