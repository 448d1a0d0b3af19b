package kvcache

import (
	"math"
	"strings"
	"testing"
)

// TestTierSharesOf: the shares worked out by hand (bin sums of
// testProfile's heads, made non-increasing, the heaviest over both heads
// taken): with a window of 16, 24 bins a head and a third of 48 taken,
// head 0's first 13 and head 1's first 3 (the 16th heaviest bin 2.069,
// the 17th 2.027); with a window of 64, 21 bins a head, head 0's first 14
// and none of head 1's (its first bin 1.616 against head 0's 14th
// 1.644). A profile that rises is taken as flat from its first bin; one
// too short for a bin past the window, or missing, gives none.
func TestTierSharesOf(t *testing.T) {
	two := [][]HeadCovariance{{{Attn: testProfile(0, 400)}, {Attn: testProfile(1, 400)}}}
	rising := make([]float32, 64+4*tierBin)
	for a := range rising {
		rising[a] = float32(a) // bins after the first count as the first
	}
	for _, tc := range []struct {
		name   string
		layers [][]HeadCovariance
		window int
		share  float64
		want   [][]float64 // nil: none
	}{
		{"window 16", two, 16, 1. / 3, [][]float64{{13. / 24, 3. / 24}}},
		{"window 64", two, 64, 1. / 3, [][]float64{{14. / 21, 0}}},
		{"all", two, 64, 1, [][]float64{{1, 1}}},
		{"rising", [][]HeadCovariance{{{Attn: rising}}, {{Attn: testProfile(1, 128)}}}, 64, 0.5,
			// rising: 4 bins of equal weight (the first's), 8 in all, 4
			// taken: rising's sum 16·64+120 = 1144 per bin beats
			// testProfile(1)'s 2.2 and less
			[][]float64{{1}, {0}}},
		{"short", [][]HeadCovariance{{{Attn: testProfile(0, 64+tierBin-1)}}}, 64, 0.5, nil},
		{"missing", [][]HeadCovariance{{{Attn: testProfile(0, 400)}, {}}}, 16, 0.5, nil},
	} {
		got := tierSharesOf(tc.layers, tc.window, tc.share)
		if (got == nil) != (tc.want == nil) || len(got) != len(tc.want) {
			t.Fatalf("%s: shares %v, want %v", tc.name, got, tc.want)
		}
		for l := range got {
			for h := range got[l] {
				if math.Abs(got[l][h]-tc.want[l][h]) > 1e-12 {
					t.Fatalf("%s: shares %v, want %v", tc.name, got, tc.want)
				}
			}
		}
	}
}

// TestAttentionProfile: on keys that make the attention known in closed
// form, the profile is the sum over the queries it samples (positions
// n/2 … n−1 that are multiples of 4, every query head of the group, every
// window) of the squared weights by age. KV head 0's keys are zero
// (uniform weights 1/(pos+1)); KV head 1's are zero but for token 0's,
// which its group's queries meet with a logit of 60 (all the weight on
// age pos).
func TestAttentionProfile(t *testing.T) {
	sh := Shape{QHeads: 4, KVHeads: 2, HeadDim: 16}
	const n = 40
	tr := &Trace{Shape: sh, K: make([]float32, n*2*16), V: make([]float32, n*2*16), Q: make([]float32, n*4*16), Scale: 1}
	tr.K[16] = 60 // token 0, KV head 1, channel 0
	for pos := range n {
		for j := 2; j < 4; j++ { // KV head 1's group
			tr.Q[(pos*4+j)*16] = 1
		}
	}
	windows := [][]*Trace{{tr}, {tr}}
	for h, want := range [2]func(age int) float64{
		func(age int) float64 {
			var s float64
			for pos := 20; pos < n; pos += 4 {
				if pos >= age {
					s += 2 * 2 / float64((pos+1)*(pos+1)) // 2 windows, 2 query heads
				}
			}
			return s
		},
		func(age int) float64 {
			if age >= 20 && age%4 == 0 {
				return 2 * 2
			}
			return 0
		},
	} {
		got := attentionProfile(windows, 0, h)
		if len(got) != n {
			t.Fatalf("head %d: %d ages, want %d", h, len(got), n)
		}
		for age, g := range got {
			if w := want(age); math.Abs(float64(g)-w) > 1e-5*(1+w) {
				t.Fatalf("head %d: age %d: %g, want %g", h, age, g, w)
			}
		}
	}
	if got := attentionProfile([][]*Trace{{&Trace{Shape: sh, K: tr.K, V: tr.V}}}, 0, 0); got != nil {
		t.Fatalf("a trace without queries gives profile %v", got)
	}
}

// TestTieredShareBytes: a HIGH>LOW~BITS cache whose covariances hold
// attention profiles holds each head's own share at the high rate
// (TestTierSharesOf's 13/24 and 3/24 of the compressed tokens at window
// 16), its bytes are the closed form's at every length, and the bits it
// reports at a length are at most the format's average.
func TestTieredShareBytes(t *testing.T) {
	sh := Shape{QHeads: 4, KVHeads: 2, HeadDim: 64}
	sh.Rope = testRope(t, sh.HeadDim, sh.HeadDim, false)
	spec := withCov(t, specFor(t, "tcq3.5>2~2.5", 16), sh)
	c := newCache(t, spec, sh).(*Compressed)
	ks, vs := exportTokens(sh, 400, 7)
	for i := range ks {
		if err := c.Append(ks[i], vs[i]); err != nil {
			t.Fatal(err)
		}
		n := i + 1
		want, err := spec.bytesAt(n, sh, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := int64(c.Bytes()); got != want {
			t.Fatalf("%d tokens: %d bytes, closed form %d", n, got, want)
		}
		for h, share := range []float64{13. / 24, 3. / 24} {
			hi := int(math.Floor(float64(c.nc)*share + 1e-9))
			for _, tr := range []*tiers{c.heads[h].tk, c.heads[h].tv} {
				if tr.n()-tr.nlo() != hi {
					t.Fatalf("%d tokens, head %d: %d of %d held high, want %d", n, h, tr.n()-tr.nlo(), c.nc, hi)
				}
			}
		}
		if bits, err := Uniform(spec).BitsAt(sh.HeadDim, n); err != nil || bits > 2.5 {
			t.Fatalf("%d tokens: BitsAt %g, %v; want at most 2.5", n, bits, err)
		}
	}
	// The shares are the covariances' (4 layers, withCov's): a model of
	// another depth is refused, not counted with them.
	for _, layers := range []int{3, 5} {
		if _, err := Uniform(spec).BytesAt(100, layers, sh); err == nil || !strings.Contains(err.Error(), "covariances of 4 layers") {
			t.Errorf("BytesAt for %d layers: %v", layers, err)
		}
	}
	if _, err := Uniform(spec).BytesAt(100, 4, sh); err != nil {
		t.Error(err)
	}
}
