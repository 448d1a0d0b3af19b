package eval

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// randomPairs makes n positions of random reference distributions over
// vocab tokens (kept as top-k Dists) and perturbed run distributions (kept
// in full), with the exact full-vocabulary KL(ref ‖ run) of each position
// computed independently.
func randomPairs(n, vocab, k int, eps float64, seed uint64) (ref *Dists, run [][]float64, exact []float64) {
	r := rand.New(rand.NewPCG(seed, 1))
	ref = &Dists{K: k, Vocab: vocab}
	for range n {
		l1 := make([]float32, vocab)
		l2 := make([]float32, vocab)
		for i := range l1 {
			l1[i] = float32(r.NormFloat64() * 3)
			l2[i] = l1[i] + float32(r.NormFloat64()*eps)
		}
		p, q := LogSoftmax(l1), LogSoftmax(l2)
		ref.add(p, int32(r.IntN(vocab)), k)
		run = append(run, q)
		var kl float64
		for i := range p {
			kl += math.Exp(p[i]) * (p[i] - q[i])
		}
		exact = append(exact, kl)
	}
	return ref, run, exact
}

func agreementOf(ref *Dists, run [][]float64) Agreement {
	var a agreementAcc
	for p, lp := range run {
		a.add(ref, p, lp)
	}
	return a.result()
}

func mean(x []float64) float64 {
	var s float64
	for _, v := range x {
		s += v
	}
	return s / float64(len(x))
}

func TestKLExactWhenKIsVocab(t *testing.T) {
	ref, run, exact := randomPairs(200, 50, 50, 0.3, 1)
	a := agreementOf(ref, run)
	// The reference log-probabilities are stored as float32: ~1e-6
	// absolute error each, against log-ratios of ~0.03, so ~1e-4 relative.
	if want := mean(exact); math.Abs(a.KLMean-want) > 5e-4*want {
		t.Errorf("KL mean %g, exact %g", a.KLMean, want)
	}
}

// TestKLLowerBound: with K < vocabulary the bucketed KL never exceeds the
// exact one (log-sum inequality), position by position.
func TestKLLowerBound(t *testing.T) {
	ref, run, exact := randomPairs(200, 400, 16, 0.5, 2)
	for p, lp := range run {
		got := klBucketed(ref.IDs[p*16:(p+1)*16], ref.LogP[p*16:(p+1)*16], lp)
		if got > exact[p]*(1+1e-5)+1e-12 {
			t.Fatalf("position %d: bucketed %g > exact %g", p, got, exact[p])
		}
	}
	a := agreementOf(ref, run)
	if a.KLP99 < a.KLMean || a.KLMax < a.KLP99 || a.KLMean < 0.3*mean(exact) {
		t.Errorf("agreement %+v vs exact mean %g", a, mean(exact))
	}
}

func TestAgreementSelf(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	ref := &Dists{K: 8, Vocab: 100}
	var run [][]float64
	for range 30 {
		l := make([]float32, 100)
		for i := range l {
			l[i] = float32(r.NormFloat64())
		}
		lp := LogSoftmax(l)
		ref.add(lp, int32(r.IntN(100)), 8)
		run = append(run, lp)
	}
	a := agreementOf(ref, run)
	if a.KLMean > 1e-6 || a.Top1 != 1 || math.Abs(a.DeltaNLL) > 1e-6 {
		t.Errorf("self agreement %+v", a)
	}
}

func TestDistsRoundTripAndCorruption(t *testing.T) {
	ref, _, _ := randomPairs(20, 100, 8, 0.1, 3)
	var buf bytes.Buffer
	if _, err := ref.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := ReadDists(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	for i := range ref.IDs {
		if back.IDs[i] != ref.IDs[i] || back.LogP[i] != ref.LogP[i] {
			t.Fatalf("entry %d differs after round trip", i)
		}
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
}

func FuzzReadDists(f *testing.F) {
	ref, _, _ := randomPairs(3, 20, 4, 0.1, 5)
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
