package kvcache

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/half"
	"github.com/turbomem/turbomem/tensor"
)

// held returns the tokens a Dense or Compressed cache holds as it holds
// them (decoded codes, fp16 roundings), token-major as Append takes them.
func held(t testing.TB, c Cache) (ks, vs [][]float32) {
	t.Helper()
	switch c := c.(type) {
	case *Compressed:
		return decoded(t, c)
	case *Dense:
		d, w := c.shape.HeadDim, c.shape.KVHeads*c.shape.HeadDim
		row := func(r rows, tok int, dst []float32) {
			switch r := r.(type) {
			case *f32Rows:
				copy(dst, r.data[tok*d:(tok+1)*d])
			case *f16Rows:
				toF32(dst, r.data[tok*d:(tok+1)*d])
			}
		}
		for tok := range c.n {
			k, v := make([]float32, w), make([]float32, w)
			for h := range c.shape.KVHeads {
				row(c.keys[h], tok, k[h*d:(h+1)*d])
				row(c.values[h], tok, v[h*d:(h+1)*d])
			}
			ks, vs = append(ks, k), append(vs, v)
		}
		return ks, vs
	}
	t.Fatalf("held: a %T", c)
	return nil, nil
}

// naiveCompacted is one softmax in float64 over KV head h's prefix (keys,
// values and biases as the cache holds them) and then the appended
// tokens, for every query head: the independent reference for
// Compacted.Attend.
func naiveCompacted(t testing.TB, c *Compacted, q []float32, scale float64) []float64 {
	d, g := c.shape.HeadDim, c.shape.Group()
	iks, ivs := held(t, c.inner)
	out := make([]float64, c.shape.QHeads*d)
	for h, p := range c.prefix {
		pks, pvs := held(t, p)
		var bias []float32
		switch p := p.(type) {
		case *Dense:
			bias = f16s(p.bias[0])
		case *Compressed:
			bias = f16s(p.bias[0])
		}
		for j := range g {
			qh := q[(h*g+j)*d : (h*g+j+1)*d]
			var s []float64
			var vals [][]float32
			for i, k := range pks {
				s = append(s, scale*dot64(qh, k)+float64(bias[i]))
				vals = append(vals, pvs[i])
			}
			for i, k := range iks {
				s = append(s, scale*dot64(qh, k[h*d:(h+1)*d]))
				vals = append(vals, ivs[i][h*d:(h+1)*d])
			}
			m := math.Inf(-1)
			for _, x := range s {
				m = max(m, x)
			}
			var sum float64
			o := out[(h*g+j)*d : (h*g+j+1)*d]
			for i, x := range s {
				e := math.Exp(x - m)
				sum += e
				for k := range d {
					o[k] += e * float64(vals[i][k])
				}
			}
			for k := range o {
				o[k] /= sum
			}
		}
	}
	return out
}

func f16s(b []uint16) []float32 {
	out := make([]float32, len(b))
	for i, x := range b {
		out[i] = half.F16ToF32(half.F16(x))
	}
	return out
}

func dot64(a, b []float32) float64 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}

// compactedInput returns random compacted heads (kept[h] tokens each,
// biases in [−2, 2]).
func compactedInput(r *rand.Rand, sh Shape, kept []int) (keys, bias, values [][]float32) {
	d := sh.HeadDim
	for _, t := range kept {
		k, v := make([]float32, t*d), make([]float32, t*d)
		for i := range k {
			k[i], v[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
		}
		b := make([]float32, t)
		for i := range b {
			b[i] = float32(4*r.Float64() - 2)
		}
		keys, bias, values = append(keys, k), append(bias, b), append(values, v)
	}
	return keys, bias, values
}

// TestCompactedAttendIsTheMath: for every format (keys and values alike,
// qjl keys with f16 values), a compacted context whose heads keep
// different numbers of tokens (below and above the 32 that split formats
// choose outliers from, KIVI's blocks and a remainder), with biases, and
// tokens appended after it, attends as one float64 softmax over what the
// caches hold, biases added, at several lengths, with and without a pool.
// Tolerance 2e-3 relative, as TestCompressedAttendIsTheMath (float32
// scores and sums; fp16 biases are rounded the same on both sides).
func TestCompactedAttendIsTheMath(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	sh := Shape{QHeads: 4, KVHeads: 2, HeadDim: 64}
	pool := tensor.NewPool(3)
	defer pool.Close()
	for _, name := range FormatNames() {
		v := name
		if name == "qjl" {
			v = "f16"
		}
		spec, err := ParseSpec(name, v)
		if err != nil {
			t.Fatal(err)
		}
		spec.Window = 8
		cfg := Uniform(withCov(t, spec, sh))
		for _, kept := range [][]int{{20, 70}, {33, 1}} {
			keys, bias, values := compactedInput(r, sh, kept)
			c, err := cfg.NewCompacted(1, sh, keys, bias, values)
			if spec.K.calibrated() {
				if err == nil {
					t.Fatalf("%s: a compacted context in a klt format: no error", name)
				}
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if name == "f32" {
				UsePool(c, pool)
			}
			ks, vs := kvData(r, sh, 40, false)
			for n := range 41 {
				if n > 0 {
					if err := c.Append(ks[n-1], vs[n-1]); err != nil {
						t.Fatal(err)
					}
				}
				if n%13 != 0 && n != 40 {
					continue
				}
				q := randQuery(r, sh)
				got := make([]float32, sh.QHeads*sh.HeadDim)
				c.Attend(got, q, 0.125)
				want := naiveCompacted(t, c, q, 0.125)
				if e := relErr(got, want); !(e <= 2e-3) {
					t.Fatalf("%s, kept %v, %d appended: relative error %g", name, kept, n, e)
				}
			}
			if want, err := cfg.CompactedBytesAt(1, kept, 40, sh); err != nil || int64(c.Bytes()) != want {
				t.Errorf("%s, kept %v: Bytes %d, CompactedBytesAt %d (%v)", name, kept, c.Bytes(), want, err)
			}
			if c.Len() != max(kept[0], kept[1])+40 {
				t.Errorf("%s: Len %d", name, c.Len())
			}
		}
	}
}

// TestCompactedBias: one kept key with β = log m attends exactly as m
// copies of it (its values the copies' mean) in an f32 cache, for tokens
// appended after it too: the closed form the mass fit relies on.
func TestCompactedBias(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	sh := Shape{QHeads: 2, KVHeads: 1, HeadDim: 16}
	const m = 6
	k := randQuery(r, Shape{QHeads: 1, KVHeads: 1, HeadDim: 16})
	var mean []float32 = make([]float32, 16)
	ref, _ := NewF32(sh)
	for range m {
		v := randQuery(r, Shape{QHeads: 1, KVHeads: 1, HeadDim: 16})
		for i := range v {
			mean[i] += v[i] / m
		}
		if err := ref.Append(k, v); err != nil {
			t.Fatal(err)
		}
	}
	c, err := F32().NewCompacted(0, sh, [][]float32{k}, [][]float32{{float32(math.Log(m))}}, [][]float32{mean})
	if err != nil {
		t.Fatal(err)
	}
	// log 6 in fp16 is off by up to 2⁻¹¹ relative: e^β by 1e-3 at most.
	ks, vs := kvData(r, sh, 5, false)
	for i := range 6 {
		if i > 0 {
			for _, x := range []Cache{ref, c} {
				if err := x.Append(ks[i-1], vs[i-1]); err != nil {
					t.Fatal(err)
				}
			}
		}
		q := randQuery(r, sh)
		want := make([]float32, len(q))
		got := make([]float32, len(q))
		ref.Attend(want, q, 0.3)
		c.Attend(got, q, 0.3)
		if e := relErr32(got, want); e > 1e-3 {
			t.Fatalf("after %d tokens: relative error %g from %d copies", i, e, m)
		}
	}
}

// TestCompactedFork: forks of an f32 compacted context with zero biases
// attend as one f32 cache holding the context and each fork's own
// tokens, without touching the context or each other; a fork needs an
// empty cache that can follow a compacted context.
func TestCompactedFork(t *testing.T) {
	r := rand.New(rand.NewPCG(25, 26))
	sh := Shape{QHeads: 4, KVHeads: 2, HeadDim: 32}
	const n = 30
	ks, vs := kvData(r, sh, n+6, false)
	d := sh.HeadDim
	keys, values := make([][]float32, sh.KVHeads), make([][]float32, sh.KVHeads)
	bias := make([][]float32, sh.KVHeads)
	for h := range sh.KVHeads {
		for p := range n {
			keys[h] = append(keys[h], ks[p][h*d:(h+1)*d]...)
			values[h] = append(values[h], vs[p][h*d:(h+1)*d]...)
		}
		bias[h] = make([]float32, n)
	}
	base, err := F32().NewCompacted(0, sh, keys, bias, values)
	if err != nil {
		t.Fatal(err)
	}
	var forks []*Compacted
	var refs []*Dense
	for f := range 2 {
		inner, _ := NewF32(sh)
		fk, err := base.Fork(inner)
		if err != nil {
			t.Fatal(err)
		}
		ref, _ := NewF32(sh)
		for p := range n {
			if err := ref.Append(ks[p], vs[p]); err != nil {
				t.Fatal(err)
			}
		}
		for p := n + 3*f; p < n+3*f+3; p++ { // each fork its own tokens
			if err := fk.Append(ks[p], vs[p]); err != nil {
				t.Fatal(err)
			}
			if err := ref.Append(ks[p], vs[p]); err != nil {
				t.Fatal(err)
			}
		}
		forks, refs = append(forks, fk), append(refs, ref)
	}
	if !SharesScratch(base) || !SharesScratch(forks[1]) || !SharesScratch(NewRecorder(forks[0], sh)) {
		t.Error("a compacted context with forks, a fork, or a recorder around one: SharesScratch false")
	}
	if unforked, _ := F32().NewCompacted(0, sh, keys, bias, values); SharesScratch(unforked) {
		t.Error("a compacted context without forks: SharesScratch true")
	}
	if base.Len() != n || forks[0].Len() != n+3 {
		t.Errorf("Len: context %d, fork %d; want %d and %d", base.Len(), forks[0].Len(), n, n+3)
	}
	for i, fk := range forks {
		q := randQuery(r, sh)
		got, want := make([]float32, len(q)), make([]float32, len(q))
		fk.Attend(got, q, 0.2)
		refs[i].Attend(want, q, 0.2)
		if e := relErr32(got, want); !(e <= 1e-5) {
			t.Errorf("fork %d: relative error %g from one f32 cache", i, e)
		}
	}
	full, _ := NewF32(sh)
	if err := full.Append(ks[0], vs[0]); err != nil {
		t.Fatal(err)
	}
	for _, inner := range []Cache{nil, full} {
		if _, err := base.Fork(inner); err == nil || !strings.Contains(err.Error(), "empty cache") {
			t.Errorf("fork with %v: error %v", inner, err)
		}
	}
}

// TestCompactedRejects: bad compacted contexts get clear errors.
func TestCompactedRejects(t *testing.T) {
	sh := Shape{QHeads: 2, KVHeads: 1, HeadDim: 32}
	ok := [][]float32{make([]float32, 32)}
	for _, c := range []struct {
		name               string
		keys, bias, values [][]float32
		want               string
	}{
		{"heads", [][]float32{}, [][]float32{}, [][]float32{}, "for 1 KV heads"},
		{"rows", ok, [][]float32{{0, 0}}, ok, "2 biases"},
		{"NaN bias", ok, [][]float32{{float32(math.NaN())}}, ok, "bias NaN"},
		{"huge value", ok, [][]float32{{0}}, [][]float32{append(make([]float32, 31), 1e6)}, "fp16"},
	} {
		_, err := F16().NewCompacted(0, sh, c.keys, c.bias, c.values)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
	if _, err := F16().CompactedBytesAt(0, []int{-1}, 0, sh); err == nil {
		t.Error("negative kept count accepted")
	}
}
