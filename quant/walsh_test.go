package quant

import (
	"encoding/binary"
	"math"
	"math/bits"
	"math/rand/v2"
	"testing"

	"github.com/turbomem/turbomem/half"
)

// TestWalshHadamardClosedForm: the transform of each basis vector e_j is
// column j of H_b = [(−1)^popcount(i&j)/√b] inside j's block and zero
// outside it (the closed form, not the fast transform); applying it twice
// gives the vector back (H_b symmetric and orthogonal).
func TestWalshHadamardClosedForm(t *testing.T) {
	for _, c := range []struct{ d, b int }{{128, 128}, {128, 64}, {192, 64}, {64, 64}, {96, 32}} {
		w, err := NewWalshHadamard(c.d, c.b)
		if err != nil {
			t.Fatal(err)
		}
		e := make([]float32, c.d)
		col := make([]float32, c.d)
		inv := float32(1 / math.Sqrt(float64(c.b)))
		for j := range c.d {
			clear(e)
			e[j] = 1
			w.Apply(col, e)
			for i, v := range col {
				want := float32(0)
				if i/c.b == j/c.b {
					want = inv
					if bits.OnesCount(uint(i%c.b&(j%c.b)))%2 == 1 {
						want = -inv
					}
				}
				if math.Abs(float64(v-want)) > 1e-6 {
					t.Fatalf("d=%d b=%d: H[%d][%d] = %g, want %g", c.d, c.b, i, j, v, want)
				}
			}
		}
		r := rand.New(rand.NewPCG(uint64(c.d), uint64(c.b)))
		x := randomVectors(r, 1, c.d, 3)
		y := make([]float32, c.d)
		w.Apply(y, x)
		w.Invert(y, y) // in place
		for i := range x {
			if math.Abs(float64(y[i]-x[i])) > 1e-5 {
				t.Fatalf("d=%d b=%d: H·H·x differs from x at %d: %g vs %g", c.d, c.b, i, y[i], x[i])
			}
		}
	}
}

// TestQ4_0HErrors: shapes llama.cpp does not rotate, and blocks that do
// not tile, are refused.
func TestQ4_0HErrors(t *testing.T) {
	for _, d := range []int{0, 32, 96, 100} {
		if _, err := NewQ4_0H(d, true); err == nil {
			t.Errorf("NewQ4_0H(%d): no error", d)
		}
	}
	for _, c := range []struct{ d, b int }{{96, 64}, {128, 48}, {128, 256}, {128, 0}} {
		if _, err := NewWalshHadamard(c.d, c.b); err == nil {
			t.Errorf("NewWalshHadamard(%d, %d): no error", c.d, c.b)
		}
	}
}

// walshReference is testdata/walsh_reference.json.gz, written by
// tools/quantref/make_walsh.py: the rotation as an explicit dense matrix
// in float64 and llama.cpp's q4_0 rounding rule in NumPy.
type walshReference struct {
	Cases []struct {
		D, Block int
		Key      bool
		X        []float64
		Rotated  []float64
		Nibbles  []int
		Scales   []float64
		Decoded  []float64
	}
}

// TestQ4_0HReference: for every case of the NumPy fixture, the block size
// NewQ4_0H picks, the rotated vector (1e-5 of the norm), the code's fp16
// scales and nibbles (exactly: the fixture keeps every nibble 1e-3 away
// from a rounding boundary) and the decoded vector rotated back.
func TestQ4_0HReference(t *testing.T) {
	var ref walshReference
	readGzipJSON(t, "testdata/walsh_reference.json.gz", &ref)
	if len(ref.Cases) < 12 {
		t.Fatalf("%d cases in the fixture", len(ref.Cases))
	}
	for ci, c := range ref.Cases {
		q, err := NewQ4_0H(c.D, c.Key)
		if err != nil {
			t.Fatal(err)
		}
		if b := q.Rotation().(*WalshHadamard).Block(); b != c.Block {
			t.Fatalf("case %d: block %d, want %d", ci, b, c.Block)
		}
		x := make([]float32, c.D)
		var norm float64
		for i, v := range c.X {
			x[i] = float32(v)
			norm += v * v
		}
		norm = math.Sqrt(norm)
		y := make([]float32, c.D)
		q.Rotation().Apply(y, x)
		for i, v := range c.Rotated {
			if math.Abs(float64(y[i])-v) > 1e-5*norm {
				t.Fatalf("case %d: rotated[%d] = %g, want %g", ci, i, y[i], v)
			}
		}
		code := make([]byte, q.Bytes())
		if err := q.Encode(code, x); err != nil {
			t.Fatal(err)
		}
		for b := range c.D / 32 {
			blk := code[18*b : 18*(b+1)]
			if s := half.F16ToF32(half.F16(binary.LittleEndian.Uint16(blk))); float64(s) != c.Scales[b] {
				t.Fatalf("case %d block %d: scale %g, want %g", ci, b, s, c.Scales[b])
			}
			for j := range 32 {
				nib := int(blk[2+j%16] >> (4 * (j / 16)) & 15)
				if want := c.Nibbles[32*b+j]; nib != want {
					t.Fatalf("case %d block %d: nibble %d = %d, want %d", ci, b, j, nib, want)
				}
			}
		}
		dec := make([]float32, c.D)
		if err := q.Decode(dec, code); err != nil {
			t.Fatal(err)
		}
		for i, v := range c.Decoded {
			if math.Abs(float64(dec[i])-v) > 1e-5*norm {
				t.Fatalf("case %d: decoded[%d] = %g, want %g", ci, i, dec[i], v)
			}
		}
	}
}

// TestQ4_0HScorer: a prepared query's scores are ⟨q, Decode(x)⟩.
func TestQ4_0HScorer(t *testing.T) {
	for _, key := range []bool{true, false} {
		checkScorer(t, mustQ(NewQ4_0H(128, key)), 50, 3)
		checkScorer(t, mustQ(NewQ4_0H(192, key)), 50, 3)
	}
}

// TestQ4_0HSpreadsOutliers: what the rotation is for. q4_0's error in a
// block grows with the block's largest magnitude; a few outlier channels
// (12× the others) make it large in the blocks they fall in, and the
// rotation spreads them over all b coordinates of their Walsh–Hadamard
// block. On such vectors the relative MSE of q4_0h is less than half of
// q4_0's; on Gaussian vectors without outliers, where there is nothing to
// spread, the two are within 25% of each other.
func TestQ4_0HSpreadsOutliers(t *testing.T) {
	const d, n = 128, 200
	plain := mustQ(NewQ4_0(d))
	rot := mustQ(NewQ4_0H(d, true))
	r := rand.New(rand.NewPCG(3, 4))
	for _, outliers := range []bool{true, false} {
		var mse [2]float64
		for range n {
			x := randomVectors(r, 1, d, 1)
			if outliers {
				for range 3 {
					x[r.IntN(d)] *= 12
				}
			}
			for k, q := range []Quantizer{plain, rot} {
				code := make([]byte, q.Bytes())
				dec := make([]float32, d)
				if err := q.Encode(code, x); err != nil {
					t.Fatal(err)
				}
				if err := q.Decode(dec, code); err != nil {
					t.Fatal(err)
				}
				var e, s float64
				for i := range x {
					e += float64(dec[i]-x[i]) * float64(dec[i]-x[i])
					s += float64(x[i]) * float64(x[i])
				}
				mse[k] += e / s / n
			}
		}
		t.Logf("outliers=%v: relative MSE q4_0 %.5f, q4_0h %.5f", outliers, mse[0], mse[1])
		if outliers && mse[1] > mse[0]/2 {
			t.Errorf("with outliers: q4_0h's MSE %.5f not below half of q4_0's %.5f", mse[1], mse[0])
		}
		if !outliers && math.Abs(mse[1]/mse[0]-1) > 0.25 {
			t.Errorf("Gaussian: q4_0h's MSE %.5f not within 25%% of q4_0's %.5f", mse[1], mse[0])
		}
	}
}
