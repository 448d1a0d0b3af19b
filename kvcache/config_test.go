package kvcache

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		name, want string // want: String of the result, or "" for an error
		budget     float64
		k, v       string
	}{
		{name: "turbo3.5", want: "turbo3.5", k: "turbo3.5", v: "turbo3.5"},
		{name: " f16 ", want: "f16", k: "f16", v: "f16"},
		{name: "q8_0:turbo2.5", want: "q8_0/turbo2.5", k: "q8_0", v: "turbo2.5"},
		{name: "q8_0/turbo2.5", want: "q8_0/turbo2.5", k: "q8_0", v: "turbo2.5"},
		{name: "qjl:f16", want: "qjl/f16", k: "qjl", v: "f16"},
		{name: "turbo4:turbo4", want: "turbo4", k: "turbo4", v: "turbo4"},
		{name: "auto:3.5", want: "auto:3.5", budget: 3.5},
		{name: "auto:16", want: "auto:16", budget: 16},
		{name: "auto:0.5", want: "auto:0.5", budget: 0.5},
		{name: ""},
		{name: "auto"},
		{name: "auto:"},
		{name: "auto:0"},
		{name: "auto:-1"},
		{name: "auto:17"},
		{name: "auto:NaN"},
		{name: "auto:x"},
		{name: "autox"},
		{name: "turbo9"},
		{name: "q8_0:"},
		{name: ":q8_0"},
		{name: "q8_0:turbo3.5:f16"},
		{name: "q8_0:zz"},
	} {
		c, err := Parse(tc.name)
		if tc.want == "" {
			if err == nil {
				t.Errorf("Parse(%q) = %s, want an error", tc.name, c)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.name, err)
			continue
		}
		if c.String() != tc.want || c.Budget() != tc.budget || c.NeedsPlan() != (tc.budget > 0) {
			t.Errorf("Parse(%q) = %s (budget %g, needs plan %v), want %s (budget %g)", tc.name, c, c.Budget(), c.NeedsPlan(), tc.want, tc.budget)
		}
		s, ok := c.Spec()
		if ok != (tc.budget == 0) || ok && (s.K.String() != tc.k || s.V.String() != tc.v) {
			t.Errorf("Parse(%q).Spec() = %s, %v; want %s/%s", tc.name, s, ok, tc.k, tc.v)
		}
	}
}

// FuzzParseConfig: Parse never panics, and what it accepts it prints as a
// name it reads back to the same configuration.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{"turbo3.5", "q8_0:turbo2.5", "auto:3.5", "f16/f32", "auto:1e-300", "auto:+Inf", "auto:0x1p1", ":", "/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		c, err := Parse(name)
		if err != nil {
			return
		}
		d, err := Parse(c.String())
		if err != nil {
			t.Fatalf("Parse(%q) = %s, which does not parse: %v", name, c, err)
		}
		if d.String() != c.String() || d.Budget() != c.Budget() {
			t.Fatalf("Parse(%q) = %s, read back as %s", name, c, d)
		}
		if c.NeedsPlan() {
			if _, err := c.NewCache(0, Shape{QHeads: 2, KVHeads: 1, HeadDim: 128}); err == nil {
				t.Fatalf("%s made a cache without a plan", c)
			}
		}
	})
}

// TestZeroConfigIsF16: the zero Config and F16 are f16 keys and values.
func TestZeroConfigIsF16(t *testing.T) {
	sh := Shape{QHeads: 4, KVHeads: 2, HeadDim: 64}
	for _, c := range []Config{{}, F16()} {
		cache, err := c.NewCache(0, sh)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := cache.(*Dense); !ok || c.String() != "f16" {
			t.Errorf("%s made %T", c, cache)
		}
		// 3 layers × 10 tokens × 2 KV heads × 64 × (K+V) × 2 bytes.
		if b, err := c.BytesAt(10, 3, sh); err != nil || b != 3*10*2*64*2*2 {
			t.Errorf("%s: BytesAt = %d, %v", c, b, err)
		}
	}
}

// TestConfigBytesAt: a configuration's BytesAt is what the caches it makes
// for every layer hold after n tokens, summed: for uniform formats, K/V
// pairs and a plan whose layers differ.
func TestConfigBytesAt(t *testing.T) {
	const layers = 3
	sh := Shape{QHeads: 4, KVHeads: 2, HeadDim: 128}
	p := &Plan{Budget: 4, HeadDim: 128, Window: 8, Layers: []LayerFormats{
		{mustFormat(t, "kivi2"), mustFormat(t, "turbo3.5")},
		{mustFormat(t, "f16"), mustFormat(t, "f16")},
		{mustFormat(t, "qjl"), mustFormat(t, "q4_0")},
	}}
	var configs []Config
	for _, name := range []string{"f32", "f16", "turbo3.5", "q8_0:turbo2.5", "kivi2"} {
		c, err := Parse(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []int{-1, 0, 8} {
			cw, err := c.WithWindow(w)
			if err != nil {
				t.Fatal(err)
			}
			configs = append(configs, cw)
		}
	}
	configs = append(configs, Planned(p))
	r := rand.New(rand.NewPCG(4, 5))
	for _, c := range configs {
		caches := make([]Cache, layers)
		for l := range caches {
			var err error
			if caches[l], err = c.NewCache(l, sh); err != nil {
				t.Fatal(err)
			}
		}
		for n := 0; n <= 100; n++ {
			if n > 0 {
				for _, cache := range caches {
					k, v := kvData(r, sh, 1, true)
					if err := cache.Append(k[0], v[0]); err != nil {
						t.Fatal(err)
					}
				}
			}
			if n%11 != 0 && n != 100 && n != 33 {
				continue
			}
			var want int64
			for _, cache := range caches {
				want += int64(cache.Bytes())
			}
			got, err := c.BytesAt(n, layers, sh)
			if err != nil || got != want {
				t.Fatalf("%s window %d after %d tokens: BytesAt %d (%v), caches hold %d", c, c.Window(), n, got, err, want)
			}
		}
	}
}

func mustFormat(t testing.TB, name string) Format {
	return mustFormats(t, name)[0]
}

func TestConfigBits(t *testing.T) {
	for _, tc := range []struct {
		name string
		want float64
	}{
		{"f16", 16},
		{"turbo3.5", 3.5},
		{"q8_0:turbo2.5", (8.5 + 2.5) / 2},
		{"turbo4:f32", (4.125 + 32) / 2},
	} {
		c, err := Parse(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		if b, err := c.Bits(128); err != nil || b != tc.want {
			t.Errorf("%s: Bits = %g, %v; want %g", tc.name, b, err, tc.want)
		}
	}
	p := Planned(&Plan{Budget: 3, HeadDim: 128, Layers: []LayerFormats{
		{mustFormat(t, "turbo2.5"), mustFormat(t, "turbo3.5")},
		{mustFormat(t, "q8_0"), mustFormat(t, "turbo4")},
	}})
	if b, err := p.Bits(128); err != nil || b != (2.5+3.5+8.5+4.125)/4 {
		t.Errorf("plan: Bits = %g, %v", b, err)
	}
	if _, err := p.Bits(64); err == nil {
		t.Error("plan: Bits at another head dimension: no error")
	}
	a, _ := Parse("auto:3")
	if _, err := a.Bits(128); err == nil {
		t.Error("auto:3 without a plan: Bits gave no error")
	}
}

// TestConfigRefuses: what a configuration cannot do is an error before
// any cache is made.
func TestConfigRefuses(t *testing.T) {
	sh := Shape{QHeads: 4, KVHeads: 2, HeadDim: 128}
	auto, _ := Parse("auto:3")
	turbo, _ := Parse("turbo3.5")
	plan := Planned(&Plan{Budget: 3, HeadDim: 128, Window: 16, Layers: []LayerFormats{{mustFormat(t, "turbo3.5"), mustFormat(t, "qjl")}}})
	for _, tc := range []struct {
		what string
		err  error
		want string
	}{
		{"auto check", auto.Check(2, sh), "still to be measured"},
		{"auto bytes", second(auto.BytesAt(10, 2, sh)), "still to be measured"},
		{"auto cache", second(auto.NewCache(0, sh)), "still to be measured"},
		{"head dim", turbo.Check(2, Shape{QHeads: 4, KVHeads: 2, HeadDim: 48}), "multiple of 32"},
		{"no layers", turbo.Check(0, sh), "0 layers"},
		{"plan layers", plan.Check(2, sh), "plan has 1 layers"},
		{"plan values", plan.Check(1, sh), "keys only"},
		{"plan window", second(plan.WithWindow(8)), "measured with window 16"},
		{"window range", second(turbo.WithWindow(-2)), "out of range"},
		{"window range", second(turbo.WithWindow(1 << 20)), "out of range"},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error ∋ %q", tc.what, tc.err, tc.want)
		}
	}
	if w, err := plan.WithWindow(16); err != nil || w.Window() != 16 {
		t.Errorf("plan with its own window: %v", err)
	}
}

func second[T any](_ T, err error) error { return err }

// TestPlannedConfigRoundTrip: a planned configuration written and read
// back makes the same caches and counts the same bytes.
func TestPlannedConfigRoundTrip(t *testing.T) {
	s := randomSensitivity(t, 3, 9, "turbo2.5", "turbo3.5", "q8_0")
	p, err := Allocate(s, 4, 128)
	if err != nil {
		t.Fatal(err)
	}
	p.Model, p.Window = testHash, 16
	var buf bytes.Buffer
	if _, err := p.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	q, err := ReadPlan(&buf)
	if err != nil {
		t.Fatal(err)
	}
	a, b := Planned(p), Planned(q)
	sh := Shape{QHeads: 4, KVHeads: 2, HeadDim: 128}
	if a.String() != "auto:4" || b.String() != a.String() || b.Window() != 16 || b.NeedsPlan() {
		t.Errorf("read back %s (window %d)", b, b.Window())
	}
	for _, n := range []int{0, 17, 1000} {
		x, err1 := a.BytesAt(n, 3, sh)
		y, err2 := b.BytesAt(n, 3, sh)
		if err1 != nil || err2 != nil || x != y {
			t.Errorf("at %d tokens: %d (%v) vs %d (%v)", n, x, err1, y, err2)
		}
	}
}

// TestRecommended: the measured choice by head dimension, and f16 where
// the turbo formats cannot store the head.
func TestRecommended(t *testing.T) {
	for _, tt := range []struct {
		headDim int
		want    string
	}{
		{4, "f16"},
		{8, "turbo4"},
		{64, "turbo4"},
		{80, "turbo4"},
		{96, "turbo4"},
		{128, "turbo3.5"},
		{256, "turbo3.5"},
	} {
		sh := Shape{QHeads: 4, KVHeads: 2, HeadDim: tt.headDim}
		s := Recommended(sh)
		if s.K.String() != tt.want || s.V.String() != tt.want || s.Window != 0 || s.Cov != nil {
			t.Errorf("head dimension %d: %s/%s window %d, want %s", tt.headDim, s.K, s.V, s.Window, tt.want)
		}
		if err := s.Check(sh); err != nil {
			t.Errorf("head dimension %d: %s cannot serve it: %v", tt.headDim, s.K, err)
		}
	}
}
