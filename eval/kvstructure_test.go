package eval

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/turbomem/turbomem/kvcache"
)

// TestKVStructure builds a trace whose structure is known in closed form
// and checks every column against it:
//   - head 0: every query is s·e₀ and only token 0's key has a component
//     along e₀ (1), so at position p token 0 gets e^s/(e^s + p) of the
//     attention and every other token 1/(e^s + p);
//   - head 1: keys R_t·(μ + r_t) with μ = 3·e₀ and r_t ∈ {±1}^d (so
//     E‖k‖² = 9 + d exactly, and the pre-RoPE mean share is 9/(9+d) up
//     to the sample mean of r), values with channel 2 three times the
//     others (top channel 9·d/(d+8)).
func TestKVStructure(t *testing.T) {
	const n, d, s = 200, 8, 4.0
	rope, err := kvcache.NewRope(d, []float64{1, 0.1, 0.01, 0.001}, false)
	if err != nil {
		t.Fatal(err)
	}
	sh := kvcache.Shape{QHeads: 2, KVHeads: 2, HeadDim: d, Rope: rope}
	r := rand.New(rand.NewPCG(1, 2))
	tr := &KVTrace{Shape: sh, Scale: 1}
	x := make([]float64, d)
	for tok := range n {
		k := make([]float32, 2*d)
		v := make([]float32, 2*d)
		q := make([]float32, 2*d)
		// head 0
		q[0] = s
		if tok == 0 {
			k[0] = 1
		}
		for i := 1; i < d; i++ {
			k[i] = float32(r.NormFloat64())
		}
		// head 1
		for i := range x {
			x[i] = float64(2*r.IntN(2) - 1)
		}
		x[0] += 3
		rope.Rotate(x, x, tok)
		for i, xv := range x {
			k[d+i] = float32(xv)
			v[d+i] = float32(r.NormFloat64())
			if i == 2 {
				v[d+i] *= 3
			}
		}
		tr.K, tr.V, tr.Q = append(tr.K, k...), append(tr.V, v...), append(tr.Q, q...)
	}
	rows, err := KVStructure([]*KVTrace{tr}, 10, 7, 16)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("%d rows, want 2", len(rows))
	}
	var sink, first, recent float64
	count := 0
	for p := 10; p < n; p += 7 {
		z := math.Exp(s) + float64(p)
		sink += math.Exp(s) / z
		first += 3 / z
		recent += float64(min(16, p-3)) / z
		count++
	}
	c := float64(count)
	h0, h1 := rows[0], rows[1]
	for _, chk := range []struct {
		name      string
		got, want float64
		tol       float64
	}{
		{"sink", h0.Sink, sink / c, 1e-9},
		{"first", h0.First, first / c, 1e-9},
		{"recent", h0.Recent, recent / c, 1e-9},
		{"pre-RoPE mean share", h1.PreMeanShare, 9.0 / (9 + d), 0.02},
		{"value top channel", h1.ValueTop, 9.0 * d / (d + 8), 0.15 * 9 * d / (d + 8)},
	} {
		if math.Abs(chk.got-chk.want) > chk.tol {
			t.Errorf("%s: %g, want %g ± %g", chk.name, chk.got, chk.want, chk.tol)
		}
	}
	// After RoPE the mean of the fast-turning pairs averages out: the
	// cached keys' mean share is well below the pre-RoPE one.
	if h1.MeanShare > 0.5*h1.PreMeanShare {
		t.Errorf("post-RoPE mean share %g, want well below the pre-RoPE %g", h1.MeanShare, h1.PreMeanShare)
	}
	// Taking the turning mean out leaves ±1 channels: top channel ≈ 1.
	if h1.CenteredTop > 1.2 || h1.TopChannel < 2 {
		t.Errorf("key top channel %g before, %g after centring; want ≥ 2 and ≈ 1", h1.TopChannel, h1.CenteredTop)
	}
	if _, err := KVStructure([]*KVTrace{tr}, 0, 0, 16); err == nil {
		t.Error("every 0: no error")
	}
}
