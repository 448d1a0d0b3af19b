package kvcache

import (
	"math/rand/v2"
	"testing"
)

// withCov returns spec with covariances for caches of shape sh (layers 0
// to 3, every one the same) when a format of spec is a klt one: the
// moments of kvData's tokens (its distribution, outlier channels
// included, from another seed), as eval measures them on calibration
// text.
func withCov(t testing.TB, spec Spec, sh Shape) Spec {
	t.Helper()
	if !spec.NeedsCovariances() {
		return spec
	}
	r := rand.New(rand.NewPCG(77, uint64(sh.HeadDim)))
	ks, vs := kvData(r, sh, 400, true)
	return withCovFrom(t, spec, sh, ks, vs)
}

// withCovFrom is withCov with the moments of the tokens ks, vs.
func withCovFrom(t testing.TB, spec Spec, sh Shape, ks, vs [][]float32) Spec {
	t.Helper()
	if !spec.NeedsCovariances() {
		return spec
	}
	tr := &Trace{Shape: sh}
	for i := range ks {
		tr.K = append(tr.K, ks[i]...)
		tr.V = append(tr.V, vs[i]...)
	}
	cov, err := EstimateCovariances([][]*Trace{{tr, tr, tr, tr}})
	if err != nil {
		t.Fatal(err)
	}
	spec.Cov = cov
	return spec
}

// TestKLTCacheImportOtherCovariances: codes exported from a klt cache do
// not import into a cache made with other covariances (the transforms
// that read them differ).
func TestKLTCacheImportOtherCovariances(t *testing.T) {
	sh := exportShape(t)
	spec := specFor(t, "klt3.5", 0)
	a := withCov(t, spec, sh)
	r := rand.New(rand.NewPCG(5, 5))
	ks, vs := kvData(r, sh, 300, true)
	b := withCovFrom(t, spec, sh, ks, vs)
	x, err := newCompressed(a, 3, sh)
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, x, ks[:200], vs[:200])
	data, err := x.Export("m", 0, x.CompressedLen())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		spec Spec
		ok   bool
	}{{a, true}, {b, false}} {
		y, err := newCompressed(c.spec, 3, sh)
		if err != nil {
			t.Fatal(err)
		}
		if err := y.Import("m", data); (err == nil) != c.ok {
			t.Fatalf("import with the same covariances %v: error %v", c.ok, err)
		}
	}
}
