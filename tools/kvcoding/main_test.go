package main

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/turbomem/turbomem/quant"
)

// TestLloyd: trained on unit Gaussian samples from a poor start, the
// 2-bit codebook is the Gaussian's Lloyd–Max one (±0.4528, ±1.5104, Max
// 1960).
func TestLloyd(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	zs := make([]float64, 200000)
	for i := range zs {
		zs[i] = r.NormFloat64()
	}
	got := lloyd(zs, []float64{-3, -0.1, 0.1, 3})
	for i, want := range []float64{-1.5104, -0.4528, 0.4528, 1.5104} {
		if math.Abs(got[i]-want) > 0.01 {
			t.Errorf("centroid %d: %.4f, want %.4f", i, got[i], want)
		}
	}
}

func TestNearest(t *testing.T) {
	cb := []float64{-1, 0, 2}
	for _, tt := range []struct {
		v    float64
		want int
	}{{-5, 0}, {-0.6, 0}, {-0.4, 1}, {0.9, 1}, {1.1, 2}, {9, 2}} {
		if got := nearest(cb, tt.v); got != tt.want {
			t.Errorf("nearest(%v) = %d, want %d", tt.v, got, tt.want)
		}
	}
}

// TestPredictionGain: on AR(1) coefficients yₜ = a·yₜ₋₁ + eₜ the saving is
// ½·log₂(1/(1 − a²)) per component, and about 0 on independent ones.
func TestPredictionGain(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	series := func(a float64, n int) []coded {
		out := make([]coded, n)
		prev := [2]float64{}
		for i := range out {
			y := make([]float64, 2)
			y[0] = a*prev[0] + math.Sqrt(1-a*a)*r.NormFloat64()
			y[1] = r.NormFloat64()
			prev = [2]float64{y[0], y[1]}
			out[i] = coded{y: y, rho: 1}
		}
		return out
	}
	p := quant.KLTParams{Sigma: []float32{1, 1}, Bits: []uint8{3, 0}}
	if got, want := predictionGain(series(0.6, 20000), series(0.6, 20000), p), 0.5*math.Log2(1/(1-0.36)); math.Abs(got-want) > 0.02 {
		t.Errorf("AR(1) a = 0.6: %.3f bits, want %.3f", got, want)
	}
	p.Bits = []uint8{0, 3}
	if got := predictionGain(series(0.6, 20000), series(0.6, 20000), p); math.Abs(got) > 0.01 {
		t.Errorf("independent component: %.3f bits, want 0", got)
	}
}

// TestECSQRate: a uniform quantizer of small step Δ on unit Gaussians
// has error Δ²/12 and entropy h − log₂Δ, h = ½·log₂(2πe) the Gaussian's
// differential entropy; asked for the error of Δ = 0.25, the rate is
// that entropy.
func TestECSQRate(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	gen := func(n int) []coded {
		out := make([]coded, n)
		for i := range out {
			out[i] = coded{y: []float64{r.NormFloat64()}, rho: 1}
		}
		return out
	}
	p := quant.KLTParams{Sigma: []float32{1}, Bits: []uint8{4}}
	sq := func(dy []float64) float64 { return dy[0] * dy[0] }
	step := 0.25
	got := ecsqRate(gen(100000), gen(100000), p, sq, step*step/12)
	want := 0.5*math.Log2(2*math.Pi*math.E) - math.Log2(step)
	if math.Abs(got-want) > 0.03 {
		t.Errorf("rate %.3f bits, want %.3f", got, want)
	}
}

// TestRun: the tool runs on the embedded model (its simulation of the
// klt coder agreeing with the coder, which it checks) and refuses bad
// flags.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the embedded model")
	}
	if err := run("", 512, "2.5", "8"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		n     int
		rates string
	}{{256, "x"}, {256, "0.5"}, {100, "2.5"}, {1 << 20, "2.5"}} {
		if err := run("", tt.n, tt.rates, "8"); err == nil {
			t.Errorf("run(-ctx %d, -bpc %s): no error", tt.n, tt.rates)
		}
	}
}
