package quant

import (
	"math"
	"math/rand/v2"
	"testing"
)

func randomVectors(r *rand.Rand, n, d int, scale float64) []float32 {
	v := make([]float32, n*d)
	for i := range v {
		v[i] = float32(r.NormFloat64() * scale)
	}
	return v
}

// checkScorer encodes n random vectors (not unit: norm about normScale)
// and checks that the compressed-form scores equal <q, decode(code)>
// within float32 rounding of a d-term sum.
func checkScorer(t *testing.T, q Quantizer, n int, normScale float64) {
	t.Helper()
	d := q.Dim()
	r := rand.New(rand.NewPCG(uint64(d), uint64(q.Bytes())))
	xs := randomVectors(r, n, d, normScale/math.Sqrt(float64(d)))
	codes := make([]byte, n*q.Bytes())
	if err := q.EncodeBatch(codes, xs); err != nil {
		t.Fatalf("%s: %v", q.Name(), err)
	}
	qv := randomVectors(r, 1, d, 1)
	sc, err := q.Prepare(qv)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]float32, n)
	sc.Score(got, codes)
	dec := make([]float32, d)
	for i := range n {
		if err := q.Decode(dec, codes[i*q.Bytes():(i+1)*q.Bytes()]); err != nil {
			t.Fatal(err)
		}
		want := float64(dot(qv, dec))
		var mag float64
		for j := range dec {
			mag += math.Abs(float64(qv[j] * dec[j]))
		}
		// Different summation orders (and a rotation applied to q rather
		// than to x̃) differ by a few ulps of the sum of magnitudes.
		if math.Abs(float64(got[i])-want) > 1e-5*mag+1e-6 {
			t.Fatalf("%s: code %d: score %g, <q, decode> %g", q.Name(), i, got[i], want)
		}
	}
}
