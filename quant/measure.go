package quant

import (
	"fmt"
	"math"
	"time"
)

// Distortion is what Measure finds for one quantizer on random unit
// vectors (docs/ALGORITHMS.md §10, quantizer level).
type Distortion struct {
	Method string  `json:"method"`
	Bits   float64 `json:"bits"` // stored bits per coordinate, everything counted
	// MSE is E‖x − x̃‖² for unit x (decoded vectors).
	MSE float64 `json:"mse"`
	// IPDistortionD is d·E[(s − <q,x>)²] for independent unit x, q, with s
	// the scorer's estimate on the compressed form.
	IPDistortionD float64 `json:"ip_distortion_d"`
	// Bias is the relative bias of the scorer, E[s − <q,x>] / E[<q,x>],
	// on correlated pairs (<q,x> ≈ 1/2), and BiasSE its standard error.
	Bias   float64 `json:"bias"`
	BiasSE float64 `json:"bias_se"`
	// BoundRatio is MSE / 4^(−bits): the distance to the Shannon lower
	// bound for any quantizer at this rate.
	BoundRatio float64 `json:"bound_ratio"`
	EncodeNs   float64 `json:"encode_ns"` // per vector
	ScoreNs    float64 `json:"score_ns"`  // per code, batched
}

// Measure encodes n random unit vectors drawn from seed and reports the
// distortion of q's decoder and scorer, and their speed. Vectors are
// Gaussian draws normalised to the unit sphere; for the bias, each query
// is q = (x + z')/‖x + z'‖ with z' an independent unit vector, so that
// <q, x> ≈ 0.7.
func Measure(q Quantizer, n int, seed uint64) (Distortion, error) {
	d := q.Dim()
	if n < 2 {
		return Distortion{}, fmt.Errorf("quant: measure needs at least 2 vectors, got %d", n)
	}
	r := newRand(seed, 99)
	unit := func(v []float32) {
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		s := float32(1 / norm2(v))
		for i := range v {
			v[i] *= s
		}
	}
	xs := make([]float32, n*d)
	for i := range n {
		unit(xs[i*d : (i+1)*d])
	}
	codes := make([]byte, n*q.Bytes())
	start := time.Now()
	if err := q.EncodeBatch(codes, xs); err != nil {
		return Distortion{}, err
	}
	res := Distortion{Method: q.Name(), Bits: BitsPerCoord(q), EncodeNs: float64(time.Since(start).Nanoseconds()) / float64(n)}

	dec := make([]float32, d)
	var sq float64
	for i := range n {
		if err := q.Decode(dec, codes[i*q.Bytes():(i+1)*q.Bytes()]); err != nil {
			return res, err
		}
		for j, v := range xs[i*d : (i+1)*d] {
			e := float64(v - dec[j])
			sq += e * e
		}
	}
	res.MSE = sq / float64(n)
	res.BoundRatio = res.MSE / math.Pow(4, -res.Bits)

	// Inner products: each x_i is scored against its own query, so that
	// every pair is independent; the timing comes from one batched scan.
	qv := make([]float32, d)
	z := make([]float32, d)
	est := make([]float32, 1)
	var e2, biasSum, biasSq, trueSum float64
	for i := range n {
		x := xs[i*d : (i+1)*d]
		code := codes[i*q.Bytes() : (i+1)*q.Bytes()]
		unit(qv)
		sc, err := q.Prepare(qv)
		if err != nil {
			return res, err
		}
		sc.Score(est, code)
		e := float64(est[0]) - float64(dot(qv, x))
		e2 += e * e
		// Correlated pair for the bias.
		unit(z)
		for j := range qv {
			qv[j] = x[j] + z[j]
		}
		s := float32(1 / norm2(qv))
		for j := range qv {
			qv[j] *= s
		}
		if sc, err = q.Prepare(qv); err != nil {
			return res, err
		}
		sc.Score(est, code)
		tv := float64(dot(qv, x))
		b := float64(est[0]) - tv
		biasSum += b
		biasSq += b * b
		trueSum += tv
	}
	res.IPDistortionD = float64(d) * e2 / float64(n)
	meanTrue := trueSum / float64(n)
	meanB := biasSum / float64(n)
	res.Bias = meanB / meanTrue
	res.BiasSE = math.Sqrt((biasSq/float64(n)-meanB*meanB)/float64(n-1)) / meanTrue

	sc, err := q.Prepare(xs[:d])
	if err != nil {
		return res, err
	}
	scores := make([]float32, n)
	start = time.Now()
	reps := 0
	for time.Since(start) < 20*time.Millisecond || reps < 1 {
		sc.Score(scores, codes)
		reps++
	}
	res.ScoreNs = float64(time.Since(start).Nanoseconds()) / float64(reps*n)
	return res, nil
}
