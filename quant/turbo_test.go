package quant

import (
	"math"
	"testing"
)

// refMSE holds E‖x − x̃‖² of TurboQuant_mse for unit vectors from an
// independent NumPy implementation (docs/ALGORITHMS.md §3: Haar rotation,
// exact-density codebooks, ≥ 30,000 vectors, standard error ≤ 0.1%).
var refMSE = map[int][4]float64{
	64:  {0.3586, 0.1145, 0.03337, 0.00913},
	128: {0.3607, 0.1160, 0.03395, 0.00931},
	256: {0.3620, 0.1168, 0.03427, 0.00942},
}

func TestTurboMSEDistortion(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 2000
	}
	for _, rot := range []RotationKind{RotateHadamard, RotateHaar} {
		for _, d := range []int{64, 128, 256} {
			if rot == RotateHaar && d == 256 && testing.Short() {
				continue
			}
			for b := 1; b <= 4; b++ {
				q, err := NewTurboMSE(d, b, Options{Seed: 7, Rotation: rot})
				if err != nil {
					t.Fatal(err)
				}
				got, err := Measure(q, n, uint64(d*10+b))
				if err != nil {
					t.Fatal(err)
				}
				want := refMSE[d][b-1]
				// 1.5% (the bar): the Monte Carlo standard error
				// at n = 10,000 is about 0.3%, the reference's 0.1%.
				if rel := math.Abs(got.MSE-want) / want; rel > 0.015 {
					t.Errorf("rot=%d d=%d b=%d MSE = %.5f, want %.5f (off %.2f%%)", rot, d, b, got.MSE, want, 100*rel)
				}
				// Stored bits: b per coordinate plus one fp16 scale.
				if wantBits := float64(b) + 16/float64(d); got.Bits != wantBits {
					t.Errorf("d=%d b=%d bits = %g, want %g", d, b, got.Bits, wantBits)
				}
			}
		}
	}
}

// TestTurboMSEBias: without correction the MSE quantizer shrinks inner
// products (at b = 1 by exactly 2/π: E<y, x̃> = d·E|y_j|·c = 2/π for
// large d); the projection correction removes the shrinkage.
func TestTurboMSEBias(t *testing.T) {
	n := 20000
	for _, tt := range []struct {
		bits     int
		corr     Correction
		wantBias float64
		tol      float64
	}{
		{1, CorrectNone, 2/math.Pi - 1, 0.01},
		{1, CorrectProjection, 0, 4}, // tol in standard errors
		{3, CorrectProjection, 0, 4},
	} {
		q, err := NewTurboMSE(128, tt.bits, Options{Seed: 3, Correction: tt.corr})
		if err != nil {
			t.Fatal(err)
		}
		got, err := Measure(q, n, 11)
		if err != nil {
			t.Fatal(err)
		}
		if tt.corr == CorrectNone {
			// 2/π holds to O(1/d): E|y_j|·√d at d=128 is 0.2% below √(2/π).
			if math.Abs(got.Bias-tt.wantBias) > tt.tol {
				t.Errorf("b=%d none: bias %.4f, want %.4f", tt.bits, got.Bias, tt.wantBias)
			}
			continue
		}
		if math.Abs(got.Bias) > tt.tol*got.BiasSE+1e-3 {
			t.Errorf("b=%d %v: bias %.5f ± %.5f, want 0", tt.bits, tt.corr, got.Bias, got.BiasSE)
		}
	}
}

// TestTurboScorerMatchesDecode: scoring on the compressed form equals the
// inner product with the decoded vector (up to float32 rounding).
func TestTurboScorerMatchesDecode(t *testing.T) {
	for _, d := range []int{64, 96, 128, 200} {
		for b := 1; b <= 8; b++ {
			q, err := NewTurboMSE(d, b, Options{Seed: 5, Correction: CorrectNorm})
			if err != nil {
				t.Fatal(err)
			}
			checkScorer(t, q, 50, 3)
		}
	}
}

func TestTurboErrors(t *testing.T) {
	q, err := NewTurboMSE(128, 3, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Encode(make([]byte, q.Bytes()), make([]float32, 127)); err == nil {
		t.Error("short input: no error")
	}
	if err := q.Encode(make([]byte, q.Bytes()-1), make([]float32, 128)); err == nil {
		t.Error("short code: no error")
	}
	x := make([]float32, 128)
	x[3] = float32(math.NaN())
	if err := q.Encode(make([]byte, q.Bytes()), x); err == nil {
		t.Error("NaN input: no error")
	}
	x[3] = 1e6
	if err := q.Encode(make([]byte, q.Bytes()), x); err == nil {
		t.Error("norm beyond fp16: no error")
	}
	code := make([]byte, q.Bytes())
	code[0], code[1] = 0x00, 0x7c // +Inf scale
	if err := q.Decode(make([]float32, 128), code); err == nil {
		t.Error("Inf scale: no error")
	}
	if _, err := NewTurboMSE(128, 0, Options{}); err == nil {
		t.Error("0 bits: no error")
	}
}
