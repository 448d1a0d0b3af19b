package kvcache

import (
	"math/rand/v2"
	"testing"
)

// TestBytesAt: the closed form equals what a real cache reports after
// every token count tried, for every format and K/V mixes, windows from
// none to more than the tokens, and counts around the window, the
// outlier calibration and KIVI block edges.
func TestBytesAt(t *testing.T) {
	sh := Shape{QHeads: 4, KVHeads: 2, HeadDim: 128}
	var specs []Spec
	for _, name := range FormatNames() {
		for _, w := range []int{-1, 0, 5, 40} {
			specs = append(specs, specFor(t, name, w))
		}
	}
	for _, name := range tieredTestFormats {
		for _, w := range []int{-1, 5, 40} {
			specs = append(specs, specFor(t, name, w))
		}
	}
	for _, kv := range [][2]string{{"tcq3.5>2@100", "turbo3.5"}, {"f16", "klt4>3@70"}, {"kivi2", "turbo3.5"}, {"f16", "turbo2.5"}, {"turbo3.5p", "q4_0"}, {"f32", "f16"}, {"qjl", "kivi2"}} {
		s, err := ParseSpec(kv[0], kv[1])
		if err != nil {
			t.Fatal(err)
		}
		specs = append(specs, s)
	}
	check := map[int]bool{0: true, 1: true, 5: true, 6: true, 31: true, 32: true, 33: true, 37: true, 40: true, 41: true, 42: true, 60: true, 61: true, 64: true, 65: true, 72: true, 96: true, 97: true, 100: true, 101: true, 130: true, 160: true}
	r := rand.New(rand.NewPCG(2, 3))
	for _, s := range specs {
		s = withCov(t, s, sh)
		c, err := s.NewCache(0, sh)
		if err != nil {
			t.Fatal(err)
		}
		for n := 0; n <= 160; n++ {
			if n > 0 {
				k, v := kvData(r, sh, 1, true)
				if err := c.Append(k[0], v[0]); err != nil {
					t.Fatal(err)
				}
			}
			if !check[n] {
				continue
			}
			got, err := s.bytesAt(n, sh, 0)
			if err != nil {
				t.Fatal(err)
			}
			if want := int64(c.Bytes()); got != want {
				t.Fatalf("%s window %d after %d tokens: BytesAt %d, cache holds %d", s, s.Window, n, got, want)
			}
		}
	}
}
