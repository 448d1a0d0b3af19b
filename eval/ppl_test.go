package eval

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// randomDists makes n positions of random distributions over vocab
// tokens, the second run a perturbation of the first by noise of scale
// eps, keeping the top k of each; it also returns the exact full-vocabulary
// KL(ref ‖ run) of every position, computed independently.
func randomDists(n, vocab, k int, eps float64, seed uint64) (ref, run *Dists, exact []float64) {
	r := rand.New(rand.NewPCG(seed, 1))
	ref, run = &Dists{K: k, Vocab: vocab}, &Dists{K: k, Vocab: vocab}
	for range n {
		l1 := make([]float32, vocab)
		l2 := make([]float32, vocab)
		for i := range l1 {
			l1[i] = float32(r.NormFloat64() * 3)
			l2[i] = l1[i] + float32(r.NormFloat64()*eps)
		}
		p, q := logSoftmax(l1), logSoftmax(l2)
		target := int32(r.IntN(vocab))
		ref.add(p, target, k)
		run.add(q, target, k)
		var kl float64
		for i := range p {
			kl += math.Exp(p[i]) * (p[i] - q[i])
		}
		exact = append(exact, kl)
	}
	return ref, run, exact
}

func TestCompareExactWhenKIsVocab(t *testing.T) {
	ref, run, exact := randomDists(200, 50, 50, 0.3, 1)
	a, err := Compare(ref, run)
	if err != nil {
		t.Fatal(err)
	}
	var mean float64
	for _, k := range exact {
		mean += k
	}
	mean /= float64(len(exact))
	// float32 storage of log-probabilities: ~1e-7 relative.
	if math.Abs(a.KLMean-mean) > 1e-5*mean {
		t.Errorf("KL mean %g, exact %g", a.KLMean, mean)
	}
	self, _ := Compare(ref, ref)
	if self.KLMean > 1e-9 || self.Top1 != 1 || self.DeltaNLL != 0 {
		t.Errorf("self comparison: %+v", self)
	}
}

// TestCompareLowerBound: with K < vocabulary, the bucketed KL never
// exceeds the exact one (log-sum inequality) and stays close when the top
// K hold most of the mass.
func TestCompareLowerBound(t *testing.T) {
	ref, run, exact := randomDists(200, 400, 64, 0.3, 2)
	a, err := Compare(ref, run)
	if err != nil {
		t.Fatal(err)
	}
	var mean float64
	for _, k := range exact {
		mean += k
	}
	mean /= float64(len(exact))
	if a.KLMean > mean*(1+1e-6) || a.KLMean < 0.5*mean {
		t.Errorf("bucketed KL %g vs exact %g: want a lower bound within 2x", a.KLMean, mean)
	}
	if a.KLP99 < a.KLMean || a.KLMax < a.KLP99 {
		t.Errorf("percentiles out of order: %+v", a)
	}
}

func TestDistsRoundTripAndCorruption(t *testing.T) {
	ref, _, _ := randomDists(20, 100, 8, 0.1, 3)
	var buf bytes.Buffer
	if _, err := ref.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := ReadDists(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if a, err := Compare(ref, back); err != nil || a.KLMean > 1e-12 || a.Top1 != 1 {
		t.Errorf("round trip: %+v, %v", a, err)
	}
	good := buf.Bytes()
	for _, tt := range []struct {
		name string
		mut  func([]byte) []byte
	}{
		{"truncated", func(b []byte) []byte { return b[:len(b)-10] }},
		{"bit flip", func(b []byte) []byte { b[100] ^= 1; return b }},
		{"bad magic", func(b []byte) []byte { b[0] = 'X'; return b }},
		{"huge count", func(b []byte) []byte { b[16], b[17], b[18], b[19] = 0xff, 0xff, 0xff, 0x7f; return b }},
		{"empty", func([]byte) []byte { return nil }},
	} {
		b := tt.mut(append([]byte(nil), good...))
		if _, err := ReadDists(bytes.NewReader(b)); !errors.Is(err, ErrCorruptDump) {
			t.Errorf("%s: err %v, want ErrCorruptDump", tt.name, err)
		}
	}
	_, other, _ := randomDists(21, 100, 8, 0.1, 4)
	if _, err := Compare(ref, other); !errors.Is(err, ErrMismatch) {
		t.Errorf("mismatched runs: %v", err)
	}
}

func FuzzReadDists(f *testing.F) {
	ref, _, _ := randomDists(3, 20, 4, 0.1, 5)
	var buf bytes.Buffer
	ref.WriteTo(&buf)
	f.Add(buf.Bytes())
	f.Add([]byte("TMDISTS1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ReadDists(bytes.NewReader(b))
		if err == nil && d.Len() == 0 {
			t.Fatal("accepted an empty dump")
		}
	})
}

func TestTopIndices(t *testing.T) {
	x := []float64{0.1, 5, 3, 5, -1, 4}
	got := topIndices(x, 3)
	want := []int{1, 3, 5}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("topIndices = %v, want %v", got, want)
		}
	}
}
