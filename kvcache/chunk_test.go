package kvcache

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/turbomem/turbomem/tensor"
)

// chunkSizes cuts a prompt of 300 tokens as a model's chunks might:
// single tokens, short runs and long ones, across the window's edge and
// the first move (calibration).
var chunkSizes = []int{7, 1, 40, 2, 100, 3, 147}

// TestAppendAttendMatchesTokens: for every compressed format, with and
// without the window, AppendAttend over a prompt cut into chunks gives
// what Append and Attend token by token give, within rounding, and
// leaves the same cache: its bytes, window and later attention, bit for
// bit.
func TestAppendAttendMatchesTokens(t *testing.T) {
	pool := tensor.NewPool(3)
	defer pool.Close()
	sh := Shape{QHeads: 4, KVHeads: 2, HeadDim: 64}
	sh.Rope = testRope(t, sh.HeadDim, sh.HeadDim, false)
	r := rand.New(rand.NewPCG(31, 32))
	ks, vs := kvData(r, sh, 300, true)
	qs := make([][]float32, len(ks)+1)
	for i := range qs {
		qs[i] = randQuery(r, sh)
	}
	w, qd := sh.KVHeads*sh.HeadDim, sh.QHeads*sh.HeadDim
	var tested []string
	for _, ns := range compressedSpecs(t, sh, 16, -1) {
		name, window, spec := ns.name, ns.window, ns.spec
		ref := newCache(t, spec, sh)
		tested = append(tested, ns.String())
		want := make([]float32, len(ks)*qd)
		for i := range ks {
			if err := ref.Append(ks[i], vs[i]); err != nil {
				t.Fatal(err)
			}
			ref.Attend(want[i*qd:(i+1)*qd], qs[i], 0.125)
		}
		for _, p := range []*tensor.Pool{nil, pool} {
			c, err := spec.NewCache(0, sh)
			if err != nil {
				t.Fatal(err)
			}
			UsePool(c, p)
			got := make([]float32, len(ks)*qd)
			at := 0
			for _, n := range chunkSizes {
				k, v := slices.Concat(ks[at:at+n]...), slices.Concat(vs[at:at+n]...)
				q := slices.Concat(qs[at : at+n]...)
				if err := c.(ChunkAttender).AppendAttend(got[at*qd:], q, k, v, n, 0.125); err != nil {
					t.Fatalf("%s window %d: chunk at %d: %v", name, window, at, err)
				}
				at += n
				if c.Len() != at || len(k) != n*w {
					t.Fatalf("%s window %d: Len %d after %d tokens", name, window, c.Len(), at)
				}
			}
			if at != len(ks) {
				t.Fatalf("chunks cover %d of %d tokens", at, len(ks))
			}
			// Within rounding even on the caller alone: a kernel may
			// take a block of codes where the chunk's later tokens
			// already stand, and a scalar tail where they did not.
			tol := 1e-5
			if p != nil {
				tol = 1e-4
			}
			for i, x := range got {
				if math.Abs(float64(x-want[i])) > tol*(1+math.Abs(float64(want[i]))) {
					t.Fatalf("%s window %d, pool %v: token %d: out[%d] = %g, token by token %g", name, window, p != nil, i/qd, i%qd, x, want[i])
				}
			}
			cc, rc := c.(*Compressed), ref.(*Compressed)
			if c.Bytes() != ref.Bytes() || cc.Window() != rc.Window() {
				t.Fatalf("%s window %d: %d bytes, window %d; token by token %d, %d", name, window, c.Bytes(), cc.Window(), ref.Bytes(), rc.Window())
			}
			// The same cache from here on: a decode step's attention.
			UsePool(c, nil)
			a, b := make([]float32, qd), make([]float32, qd)
			c.Attend(a, qs[len(ks)], 0.125)
			ref.Attend(b, qs[len(ks)], 0.125)
			if !slices.Equal(a, b) {
				t.Fatalf("%s window %d, pool %v: the next step's attention differs", name, window, p != nil)
			}
		}
	}
	t.Logf("formats/windows: %v", tested)
	for _, name := range append([]string{"turbo3.5", "klt3.5", "tcq3.5", "q8_0", "q4_0", "kivi2"}, tieredTestFormats...) {
		for _, w := range []string{"16", "-1"} {
			if !slices.Contains(tested, name+"/"+w) {
				t.Errorf("%s/%s not tested", name, w)
			}
		}
	}
}

// TestAppendAttendError: a chunk whose token a format cannot encode (a
// key norm beyond turbo's fp16 scale) leaves the cache as before it, and
// the cache goes on as one that never saw the chunk; so do chunks with a
// non-finite value or wrong lengths.
func TestAppendAttendError(t *testing.T) {
	sh := Shape{QHeads: 4, KVHeads: 2, HeadDim: 64}
	r := rand.New(rand.NewPCG(41, 42))
	ks, vs := kvData(r, sh, 140, false)
	w, qd := sh.KVHeads*sh.HeadDim, sh.QHeads*sh.HeadDim
	spec := specFor(t, "turbo3.5", 16)
	ref, err := spec.NewCache(0, sh)
	if err != nil {
		t.Fatal(err)
	}
	c, err := spec.NewCache(0, sh)
	if err != nil {
		t.Fatal(err)
	}
	ca := c.(ChunkAttender)
	out := make([]float32, 40*qd)
	q := make([]float32, 40*qd)
	if err := ca.AppendAttend(out, q, slices.Concat(ks[:100]...), slices.Concat(vs[:100]...), 100, 0.125); err == nil {
		t.Fatal("100 tokens with room for 40 outputs: no error")
	}
	for i := range 100 {
		if err := ref.Append(ks[i], vs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := ca.AppendAttend(make([]float32, 100*qd), make([]float32, 100*qd), slices.Concat(ks[:100]...), slices.Concat(vs[:100]...), 100, 0.125); err != nil {
		t.Fatal(err)
	}
	bytes := c.Bytes()
	huge := slices.Concat(ks[100:120]...)
	for i := range sh.HeadDim { // token 102's keys of head 1 (it leaves the window): norm 8·60000
		huge[2*w+sh.HeadDim+i] = 60000
	}
	bad := slices.Concat(ks[100:120]...)
	bad[5*w+3] = float32(math.NaN())
	for name, k := range map[string][]float32{"norm beyond fp16": huge, "NaN": bad} {
		err := ca.AppendAttend(make([]float32, 20*qd), make([]float32, 20*qd), k, slices.Concat(vs[100:120]...), 20, 0.125)
		if err == nil {
			t.Fatalf("%s: no error", name)
		}
		if c.Len() != 100 || c.Bytes() != bytes {
			t.Fatalf("%s: after the error %d tokens, %d bytes; before %d, %d", name, c.Len(), c.Bytes(), 100, bytes)
		}
		t.Logf("%s: %v", name, err)
	}
	got, want := make([]float32, 40*qd), make([]float32, qd)
	qs := make([]float32, 40*qd)
	for i := range qs {
		qs[i] = float32(r.NormFloat64())
	}
	if err := ca.AppendAttend(got, qs, slices.Concat(ks[100:]...), slices.Concat(vs[100:]...), 40, 0.125); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		if err := ref.Append(ks[100+i], vs[100+i]); err != nil {
			t.Fatal(err)
		}
		ref.Attend(want, qs[i*qd:(i+1)*qd], 0.125)
		if !slices.Equal(got[i*qd:(i+1)*qd], want) {
			t.Fatalf("token %d after the failed chunks differs from a cache that never saw them", 100+i)
		}
	}
}

// TestAttendEncodesAhead: a decode step on the pool encodes the token
// due to leave the window next beside its slices, and the Append after
// it stores those codes: for every compressed format the stores hold,
// code for code, what a cache that encodes at each Append holds, and the
// step's attention is the same within rounding.
func TestAttendEncodesAhead(t *testing.T) {
	pool := tensor.NewPool(3)
	defer pool.Close()
	sh := Shape{QHeads: 4, KVHeads: 2, HeadDim: 64}
	sh.Rope = testRope(t, sh.HeadDim, sh.HeadDim, false)
	r := rand.New(rand.NewPCG(51, 52))
	ks, vs := kvData(r, sh, 400, true)
	q := randQuery(r, sh)
	qd := sh.QHeads * sh.HeadDim
	ahead, recoded := map[string]int{}, map[string]int{}
	for _, ns := range compressedSpecs(t, sh, 16) {
		name := ns.name
		ref, c := newCache(t, ns.spec, sh), newCache(t, ns.spec, sh)
		rc, cc := ref.(*Compressed), c.(*Compressed)
		UsePool(c, pool)
		a, b := make([]float32, qd), make([]float32, qd)
		for i := range ks {
			if err := ref.Append(ks[i], vs[i]); err != nil {
				t.Fatal(err)
			}
			if err := c.Append(ks[i], vs[i]); err != nil {
				t.Fatal(err)
			}
			c.Attend(a, q, 0.125)
			if cc.ahead.at == cc.nc+1 {
				ahead[name]++
			}
			if tr := cc.heads[0].tk; tr != nil && tr.pendAt >= 0 {
				// the next Append's re-coding made ahead too: of the
				// oldest token still at the high rate
				if tr.pendAt != tr.nlo() {
					t.Fatalf("%s, token %d: re-coded token %d ahead, the next to re-code is %d", name, i, tr.pendAt, tr.nlo())
				}
				recoded[name]++
			}
			if i%50 == 49 {
				ref.Attend(b, q, 0.125)
				for j := range a {
					if math.Abs(float64(a[j]-b[j])) > 1e-4*(1+math.Abs(float64(b[j]))) {
						t.Fatalf("%s, token %d: out[%d] = %g, encoding at each Append %g", name, i, j, a[j], b[j])
					}
				}
			}
		}
		for h := range sh.KVHeads {
			for kv, st := range [2][2]any{{cc.heads[h].keys, rc.heads[h].keys}, {cc.heads[h].values, rc.heads[h].values}} {
				x, y := heldCodes(t, st[0], cc.nc), heldCodes(t, st[1], rc.nc)
				if cc.nc != rc.nc || !slices.Equal(x, y) {
					t.Fatalf("%s head %d %s: the codes differ from those made at each Append", name, h, [2]string{"keys", "values"}[kv])
				}
			}
		}
		if c.Bytes() != ref.Bytes() {
			t.Fatalf("%s: %d bytes, %d encoding at each Append", name, c.Bytes(), ref.Bytes())
		}
	}
	t.Logf("steps that encoded ahead: %v; re-coded ahead: %v", ahead, recoded)
	for _, name := range append([]string{"turbo3.5", "klt3.5", "tcq3.5", "q8_0", "q4_0"}, tieredTestFormats...) {
		if ahead[name] < 100 {
			t.Errorf("%s: %d steps encoded ahead", name, ahead[name])
		}
	}
	for _, name := range tieredTestFormats {
		// ~2.5's head 0 holds 13/24 of its tokens high (TestTierSharesOf):
		// it re-codes at 11 steps of 24
		want := 90
		if name == "tcq3.5>2~2.5" {
			want = 90 * 11 / 24
		}
		if recoded[name] < want {
			t.Errorf("%s: %d steps re-coded ahead, want %d", name, recoded[name], want)
		}
	}
}
