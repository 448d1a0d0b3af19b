package kvcache

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// tieredTestFormats are the tiered formats the tests that go through
// every format (compressedSpecs) add to FormatNames.
var tieredTestFormats = []string{"tcq3.5>2@100", "klt3.5>2.5@41", "tcq3.5>2~2.5"}

func TestParseTiered(t *testing.T) {
	for _, tc := range []struct {
		name, canon string
		span        int // of 960 compressed tokens, at the default window
		err         string
	}{
		{"tcq3.5>2~2.5", "tcq3.5>2~2.5", 320, ""},
		{"tcq3.5>2.0~2.50", "", 0, "write it tcq3.5>2~2.5"},
		{"klt4>2~3", "klt4>2~3", 480, ""},
		{"tcq3.5>2~3.5", "", 0, "not between"},
		{"tcq3.5>2~2", "", 0, "not between"},
		{"tcq3.5>2~x", "", 0, "not between"},
		{"tcq3.5>2~NaN", "", 0, "not between"},
		{"tcq3.5>2~2.5@9", "", 0, "not between"},
		{"tcq3.5>2@384", "tcq3.5>2@384", 320, ""},
		{"tcq3.5>2.0@0384", "", 0, "write it tcq3.5>2@384"},
		{"klt4>2.5@65", "klt4>2.5@65", 1, ""},
		{"tcq3.5>2@64", "tcq3.5>2@64", 0, "inside the fp16 window"},
		{"tcq3.5>4@384", "", 0, "not below"},
		{"tcq3.5>3.5@384", "", 0, "not below"},
		{"turbo3.5>2@384", "", 0, "not a calibrated format"},
		{"tcq3.5>7@384", "", 0, "not a format of the tcq family"},
		{"tcq3.5>@384", "", 0, "not a rate of the tcq family"},
		{"tcq3.5>2", "", 0, "no @AGE or ~BITS"},
		{"tcq3.5>2@0", "", 0, "age"},
		{"tcq3.5>2@-5", "", 0, "age"},
		{"tcq3.5>2@x", "", 0, "age"},
		{"tcq3.5>2@2000000", "", 0, "age"},
		{"tcq3.5>2.5>2@384", "", 0, "not a rate"},
		{"tcq3.5>2@384@9", "", 0, "age"},
		{">2@384", "", 0, "not a format"},
	} {
		f, err := ParseFormat(tc.name)
		if err == nil {
			err = Spec{K: f, V: f}.checkFormats(Shape{QHeads: 2, KVHeads: 1, HeadDim: 128})
		}
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want one saying %q", tc.name, err, tc.err)
		case tc.err == "" && (f.String() != tc.canon || f.span(DefaultWindow, 960) != tc.span || !f.Calibrated()):
			t.Errorf("%s: %s, span %d, calibrated %v; want %s, %d", tc.name, f, f.span(DefaultWindow, 960), f.Calibrated(), tc.canon, tc.span)
		}
	}
	a, _ := ParseFormat("tcq3.5>2@384")
	if b, _ := ParseFormat("tcq3.5>2@384"); a != b {
		t.Error("two parses of one tiered format are different Formats")
	}
	if _, err := a.Bits(128); err == nil {
		t.Error("Bits of a tiered format: no error")
	}
}

// TestTieredBitsAt: the closed form's bits for tcq3.5>2@384 at head
// dimension 128 with the default window: 56-byte codes for the 320
// newest compressed tokens, 32-byte ones for the rest.
func TestTieredBitsAt(t *testing.T) {
	s, err := ParseSpec("tcq3.5>2@384", "")
	if err != nil {
		t.Fatal(err)
	}
	c := Uniform(s)
	for _, tc := range []struct {
		n    int
		bits float64
	}{
		{10, 3.5}, {65, 3.5}, {384, 3.5},
		{1024, 2.5},                         // (320·3.5 + 640·2) / 960
		{4096, (320*3.5 + 3712*2) / 4032.0}, // 2.119
		{1 << 20, (320*3.5 + (1<<20-384)*2) / float64(1<<20-64)},
	} {
		got, err := c.BitsAt(128, tc.n)
		if err != nil || math.Abs(got-tc.bits) > 1e-9 {
			t.Errorf("BitsAt(128, %d) = %g, %v; want %g", tc.n, got, err, tc.bits)
		}
	}
	s, err = ParseSpec("tcq3.5>2~2.5", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		n    int
		bits float64
	}{
		// 1 or 2 compressed tokens: none in the newest third (rounded
		// down); 3 tokens: one
		{65, 2}, {66, 2}, {67, 2.5}, {68, (3.5 + 3*2) / 4},
		{1000, 2.5}, {1024, 2.5}, {4096, 2.5},
		{1001, (312*3.5 + 625*2) / 937.0},
	} {
		got, err := Uniform(s).BitsAt(128, tc.n)
		if err != nil || math.Abs(got-tc.bits) > 1e-9 {
			t.Errorf("%s: BitsAt(128, %d) = %g, %v; want %g", s, tc.n, got, err, tc.bits)
		}
	}
	plain := Uniform(Spec{K: s.K, V: mustFormat(t, "tcq3.5")})
	if _, err := plain.Bits(128); err == nil {
		t.Error("Bits of a configuration with tiered keys: no error")
	}
	inside, _ := ParseSpec("tcq3.5>2@10", "")
	if _, err := Uniform(inside).BitsAt(128, 1024); err == nil || !strings.Contains(err.Error(), "inside the fp16 window") {
		t.Errorf("BitsAt of an age inside the window: %v", err)
	}
	u, _ := ParseSpec("tcq3.5", "")
	if got, err := Uniform(u).BitsAt(128, 4096); err != nil || got != 3.5 {
		t.Errorf("tcq3.5: BitsAt %g, %v", got, err)
	}
}

// TestTieredCodes: a tiered cache holds, for each token, the code a
// cache of its high rate alone holds while the token is young, and once
// it is age tokens old the low rate's code of that code's decoded vector
// (quant's own Encode and Decode, on the designs the plain caches use).
func TestTieredCodes(t *testing.T) {
	sh := Shape{QHeads: 4, KVHeads: 2, HeadDim: 64}
	sh.Rope = testRope(t, sh.HeadDim, sh.HeadDim, false)
	r := rand.New(rand.NewPCG(5, 6))
	ks, vs := rotatingKeys(r, sh, sh.Rope, 700, 4)
	for _, tw := range []struct {
		format string
		window int
	}{{"tcq3.5>2@100", 0}, {"tcq3.5>2@100", -1}, {"tcq3.5>2@100", 10}, {"tcq3.5>2~2.5", 0}, {"tcq3.5>2~2.5", -1}} {
		format, window, share := tw.format, tw.window, strings.Contains(tw.format, "~")
		tiered := withCovFrom(t, specFor(t, format, window), sh, ks[:300], vs[:300])
		plain := tiered
		plain.K, plain.V = mustFormat(t, "tcq3.5"), mustFormat(t, "tcq3.5")
		tc, pc := newCache(t, tiered, sh).(*Compressed), newCache(t, plain, sh).(*Compressed)
		for i := range ks {
			for _, c := range []*Compressed{tc, pc} {
				if err := c.Append(ks[i], vs[i]); err != nil {
					t.Fatal(err)
				}
			}
			if i%97 != 0 && i != len(ks)-1 {
				continue
			}
			n := i + 1
			for hi := range sh.KVHeads {
				tk := tc.heads[hi].keys.(*centeredKeys).inner.(*tieredKeys)
				tv := tc.heads[hi].values.(*tieredValues)
				pk := pc.heads[hi].keys.(*centeredKeys).inner.(*kltKeys).codes
				pv := pc.heads[hi].values.(*codeValues).codes
				for _, part := range []struct {
					name  string
					tr    *tiers
					plain []byte
				}{{"keys", &tk.tiers, pk}, {"values", &tv.tiers, pv}} {
					tr, hb, lb := part.tr, part.tr.hq.Bytes(), part.tr.lq.Bytes()
					wantLo := max(0, n-100) // older than 100 tokens
					if share {              // all but the head's share (tierShares; its own test)
						wantLo = tc.nc - int(math.Floor(float64(tc.nc)*tiered.Cov.tierShares(tiered.window(), tiered.K.share)[0][hi]+1e-9))
					}
					if tr.n() != tc.nc || tr.nlo() != wantLo {
						t.Fatalf("%s window %d, %d tokens: %s hold %d, %d of them re-coded; want %d, %d", format, window, n, part.name, tr.n(), tr.nlo(), tc.nc, wantLo)
					}
					if dead := tr.nlo() - tr.hiAt; dead < 0 || dead >= trimSlack {
						t.Fatalf("%s window %d, %d tokens: %s keep %d high-rate codes of re-coded tokens", format, window, n, part.name, dead)
					}
					x := make([]float32, sh.HeadDim)
					lo := make([]byte, lb)
					for p := range tr.n() {
						want := part.plain[p*hb : (p+1)*hb]
						if p >= tr.hiAt && !bytes.Equal((*tr.hi)[(p-tr.hiAt)*hb:(p-tr.hiAt+1)*hb], want) {
							t.Fatalf("%s window %d: %s: token %d's high-rate code differs from tcq3.5's", format, window, part.name, p)
						}
						if p >= tr.nlo() {
							continue
						}
						if err := tr.hq.Decode(x, want); err != nil {
							t.Fatal(err)
						}
						if err := tr.lq.Encode(lo, x); err != nil {
							t.Fatal(err)
						}
						if !bytes.Equal((*tr.lo)[p*lb:(p+1)*lb], lo) {
							t.Fatalf("%s window %d: %s: token %d's low-rate code is not tcq2's of its decoded tcq3.5 code", format, window, part.name, p)
						}
					}
				}
			}
		}
	}
}

// heldCodes returns the codes of a store's n tokens as it holds them:
// exportCodes, or for a tiered store its low-rate codes and then the
// live high-rate ones.
func heldCodes(t *testing.T, s any, n int) []byte {
	t.Helper()
	if c, ok := s.(*centeredKeys); ok {
		s = c.inner
	}
	var tr *tiers
	switch st := s.(type) {
	case *tieredKeys:
		tr = &st.tiers
	case *tieredValues:
		tr = &st.tiers
	default:
		b, err := storeCodes(s).exportCodes(0, n)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if tr.n() != n {
		t.Fatalf("a tiered store holds %d tokens, want %d", tr.n(), n)
	}
	return append(slices.Clone(*tr.lo), (*tr.hi)[(tr.nlo()-tr.hiAt)*tr.hq.Bytes():]...)
}
