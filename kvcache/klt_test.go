package kvcache

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/quant"
	"github.com/turbomem/turbomem/tensor"
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
	for _, hs := range cov.Layers {
		for h := range hs {
			hs[h].Attn = testProfile(h, len(ks))
		}
	}
	spec.Cov = cov
	return spec
}

// testProfile is an attention profile of n ages for KV head h (the trace
// has no queries to measure one from): 1/(1 + a·(h+1)²/32), slower to
// fall the lower the head, so that tiered formats give the heads
// different shares.
func testProfile(h, n int) []float32 {
	p := make([]float32, n)
	for a := range p {
		p[a] = float32(1 / (1 + float64(a*(h+1)*(h+1))/32))
	}
	return p
}

// TestKLTCacheImportOtherCovariances: codes exported from a klt (or tcq) cache do
// not import into a cache made with other covariances (the transforms
// that read them differ).
func TestKLTCacheImportOtherCovariances(t *testing.T) {
	for _, name := range []string{"klt3.5", "tcq3.5"} {
		t.Run(name, func(t *testing.T) { testImportOtherCovariances(t, name) })
	}
}

func testImportOtherCovariances(t *testing.T, name string) {
	sh := exportShape(t)
	spec := specFor(t, name, 0)
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

// TestQuerySecondMoment: EstimateCovariances' Q of each KV head is
// E[q·qᵀ] over the queries of its group's heads (heads 2h and 2h+1 of 4
// here) at every recorded position but the first of each window (in
// float64 here), whether every position's query is recorded or only some
// (QPos); the keys' KLT is designed with it, and a Q of another size is
// refused.
func TestQuerySecondMoment(t *testing.T) {
	sh := Shape{QHeads: 4, KVHeads: 2, HeadDim: 16}
	d, g := sh.HeadDim, sh.Group()
	r := rand.New(rand.NewPCG(8, 8))
	var windows [][]*Trace
	for w := range 2 {
		ks, vs := kvData(r, sh, 40, true)
		tr := &Trace{Shape: sh}
		for i := range ks {
			tr.K = append(tr.K, ks[i]...)
			tr.V = append(tr.V, vs[i]...)
		}
		n := len(ks)
		if w == 1 { // only some positions' queries, position 0 not among them
			tr.QPos = []int{3, 5, 6, 30}
			n = len(tr.QPos)
		}
		for range n {
			q := randQuery(r, sh)
			for i := range q {
				q[i] += float32(i%3) - 1 // a mean, which the second moment keeps
			}
			tr.Q = append(tr.Q, q...)
		}
		windows = append(windows, []*Trace{tr})
	}
	cov, err := EstimateCovariances(windows)
	if err != nil {
		t.Fatal(err)
	}
	for h := range sh.KVHeads {
		want := make([]float64, d*d)
		n := 0
		for w, win := range windows {
			tr := win[0]
			for i := range tr.Queries() {
				if w == 0 && i == 0 { // position 0
					continue
				}
				for j := h * g; j < (h+1)*g; j++ {
					q := tr.Q[(i*sh.QHeads+j)*d : (i*sh.QHeads+j+1)*d]
					for a := range d {
						for b := range d {
							want[a*d+b] += float64(q[a]) * float64(q[b])
						}
					}
					n++
				}
			}
		}
		got := cov.Layers[0][h].Q
		if len(got) != d*d {
			t.Fatalf("head %d: Q of %d values, want %d", h, len(got), d*d)
		}
		for i := range want {
			// float32 moments of sums of about 100 terms: 1e-5 of the scale
			if w := want[i] / float64(n); math.Abs(float64(got[i])-w) > 1e-5*(1+math.Abs(w)) {
				t.Fatalf("head %d: Q[%d] = %g, want %g", h, i, got[i], w)
			}
		}
	}
	spec := specFor(t, "klt3.5", 0)
	spec.Cov = cov
	if _, err := spec.NewCache(0, sh); err != nil {
		t.Fatal(err)
	}
	cov.Layers[0][1].Q = cov.Layers[0][1].Q[1:]
	if _, err := spec.NewCache(0, sh); err == nil || !strings.Contains(err.Error(), "head 1") {
		t.Errorf("a Q of %d values: error %v", d*d-1, err)
	}
}

// TestKLTAttendIsTheMath: a klt cache's Attend (the grouped scorer and
// accumulator, on the lane kernels where the CPU has them) equals float64
// attention over the cache's own reconstructions (decoded: the quantizer's
// Decode, independent of the attention path), for both rates, klt keys or
// values alone, groups of 1, 3 and 4 query heads, with the default
// window and none, at odd lengths, on the caller and on a pool with the
// positions cut into slices; and for tiered formats, each token decoded
// at the rate it now holds. Tolerance as TestCompressedAttendIsTheMath's.
// The lane kernels are the AVX-512 ones where quant.SIMDLevel() says
// avx512 (TestKLTAttendIsTheMathAVX2 runs the AVX2 ones there too).
func TestKLTAttendIsTheMath(t *testing.T) {
	t.Logf("kernels: %s", quant.SIMDLevel())
	pool := tensor.NewPool(3)
	defer pool.Close()
	for _, sh := range []Shape{{QHeads: 8, KVHeads: 2, HeadDim: 128}, {QHeads: 6, KVHeads: 2, HeadDim: 64}, {QHeads: 2, KVHeads: 2, HeadDim: 64}} {
		sh.Rope = testRope(t, sh.HeadDim, sh.HeadDim, false)
		// The tiered pairs re-code from 150 or 200 tokens on: at 517 and
		// 1100 tokens the slices cut across the tiers' boundary.
		for _, kv := range [][2]string{{"klt3.5", "klt3.5"}, {"klt2.5", "klt2.5"}, {"klt3.5", "f16"}, {"q8_0", "klt2.5"}, {"tcq3.5", "tcq2.5"}, {"klt2.5", "tcq3.5"},
			{"tcq3.5>2@200", "tcq3.5>2@200"}, {"tcq3.5>2@200", "tcq3.5"}, {"tcq3", "klt2.5>2@150"}, {"klt3.5>2.5@150", "f16"}, {"tcq3.5>2~2.5", "tcq3.5>2~2.5"}} {
			for _, window := range []int{0, -1} {
				name := fmt.Sprintf("%d-%d-%d/%s:%s/window%d", sh.QHeads, sh.KVHeads, sh.HeadDim, kv[0], kv[1], window)
				t.Run(name, func(t *testing.T) {
					spec, err := ParseSpec(kv[0], kv[1])
					if err != nil {
						t.Fatal(err)
					}
					spec.Window = window
					r := rand.New(rand.NewPCG(uint64(sh.QHeads), uint64(sh.HeadDim)))
					ks, vs := rotatingKeys(r, sh, sh.Rope, 1100, 4)
					// KV head 0's values fall off fast across channels: its
					// coder leaves more components without bits than head 1's
					// (whose value sums must still fit in the length head
					// 0's accumulator gives).
					d := sh.HeadDim
					for _, v := range vs {
						for i := range d {
							v[i] *= float32(math.Exp(-float64(i) / 6))
						}
					}
					c, err := withCovFrom(t, spec, sh, ks[:400], vs[:400]).NewCache(0, sh)
					if err != nil {
						t.Fatal(err)
					}
					cc := c.(*Compressed)
					if kv[1] != "f16" && codedComponents(t, cc.heads[0].values) == codedComponents(t, cc.heads[1].values) {
						t.Fatalf("the KV heads' value coders have %d coded components each", codedComponents(t, cc.heads[0].values))
					}
					n := 0
					for _, at := range []int{1, 33, 131, 517, 1100} {
						appendAll(t, c, ks[n:at], vs[n:at])
						n = at
						checkAttendDecoded(t, cc, r, pool, 128) // up to 6 slices per KV head
					}
				})
			}
		}
	}
}

// checkAttendDecoded checks the attention of a random query on cc
// against exact attention over its decoded tokens (decoded), to 2e-3 of
// the output's rms: on the caller, and on pool's slices of at least
// shortest positions (split 12).
func checkAttendDecoded(t *testing.T, cc *Compressed, r *rand.Rand, pool *tensor.Pool, shortest int) {
	t.Helper()
	dk, dv := decoded(t, cc)
	q := randQuery(r, cc.shape)
	want := naiveAttention(cc.shape, dk, dv, q, 0.088)
	var rms float64
	for _, w := range want {
		rms += w * w
	}
	rms = math.Sqrt(rms / float64(len(want)))
	for _, p := range []*tensor.Pool{nil, pool} {
		UsePool(cc, p)
		cc.split, cc.shortest = 0, compressedMinSlice
		if p != nil {
			cc.split, cc.shortest = 12, shortest
		}
		got := make([]float32, len(q))
		cc.Attend(got, q, 0.088)
		for i := range got {
			if math.Abs(float64(got[i])-want[i]) > 2e-3*rms {
				t.Fatalf("n=%d pool %d: out[%d] = %g, want %g (rms %g)", cc.n, p.Threads(), i, got[i], want[i], rms)
			}
		}
	}
}

// TestKLTAttendIsTheMathAVX2: on a CPU with AVX-512, TestKLTAttendIsTheMath
// again in a test binary that GODEBUG=cpu.avx512f=off keeps to the AVX2
// kernels (golang.org/x/sys/cpu honours it).
func TestKLTAttendIsTheMathAVX2(t *testing.T) {
	if quant.SIMDLevel() != "avx512" {
		t.Skipf("kernels %s: TestKLTAttendIsTheMath runs them", quant.SIMDLevel())
	}
	if testing.Short() {
		t.Skip("short")
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestKLTAttendIsTheMath$", "-test.v", "-test.count", "1")
	cmd.Env = append(os.Environ(), "GODEBUG=cpu.avx512f=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("TestKLTAttendIsTheMath on AVX2: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "kernels: avx2") || !strings.Contains(string(out), "--- PASS: TestKLTAttendIsTheMath ") {
		t.Fatalf("TestKLTAttendIsTheMath with GODEBUG=cpu.avx512f=off did not run on the AVX2 kernels:\n%s", out)
	}
}

// codedComponents returns how many components a klt value store's coder
// gives bits.
func codedComponents(t *testing.T, v valueStore) int {
	t.Helper()
	if tv, ok := v.(*tieredValues); ok {
		v = tv.hv // the high rate's
	}
	cv, ok := v.(*codeValues)
	if !ok {
		t.Fatalf("value store %T", v)
	}
	k, ok := cv.q.(*quant.KLT)
	if !ok {
		t.Fatalf("value coder %T", cv.q)
	}
	n := 0
	for _, b := range k.Params().Bits {
		if b > 0 {
			n++
		}
	}
	return n
}
