package quant

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// randomKLT returns a KLT of dimension d whose components have random
// bits (0 to 8, in no order) and σ each its own: runs of one field,
// 8-bit fields and fields at every bit offset, unlike a designed one.
func randomKLT(t testing.TB, r *rand.Rand, d int) *KLT {
	t.Helper()
	p := KLTParams{Transform: make([]float32, d*d), Offset: make([]float32, d), Sigma: make([]float32, d), Bits: make([]uint8, d)}
	rot, err := NewDense(d, r.Uint64())
	if err != nil {
		t.Fatal(err)
	}
	copy(p.Transform, rot.m)
	for i := range d {
		p.Offset[i] = float32(r.NormFloat64())
		p.Sigma[i] = float32(0.1 + 2*r.Float64())
		p.Bits[i] = uint8(r.IntN(9))
	}
	k, err := NewKLT(p)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// kltCases are the KLTs the fast path is tested on: designed ones at both
// rates (runs of equal bits sharing σ) and random ones.
func kltCases(t testing.TB) []struct {
	name string
	k    *KLT
} {
	r := rand.New(rand.NewPCG(21, 22))
	var out []struct {
		name string
		k    *KLT
	}
	for _, d := range []int{16, 64, 96, 128} {
		cov, mean := correlated(r, d, -4, 1)
		for _, bpc := range []float64{2.5, 3.5} {
			out = append(out, struct {
				name string
				k    *KLT
			}{fmt.Sprintf("d%d/%g", d, bpc), kltFor(t, cov, mean, d, bpc)})
		}
	}
	for _, d := range []int{16, 40, 128} {
		out = append(out, struct {
			name string
			k    *KLT
		}{fmt.Sprintf("d%d/random", d), randomKLT(t, r, d)})
	}
	// The trellis-coded option: designed, weighted,
	// and random bits (8-bit components stay scalar among TCQ ones).
	for _, d := range []int{16, 128} {
		cov, mean := correlated(r, d, -4, 1)
		for _, bpc := range []float64{2.5, 3.5} {
			out = append(out, struct {
				name string
				k    *KLT
			}{fmt.Sprintf("d%d/%g/tcq", d, bpc), tcqKLTFor(t, cov, mean, nil, d, bpc)})
		}
	}
	// On the lane kernels too (up to 8 states): random bits (every width
	// 1 to 7, 8-bit scalar ones among them) at dimensions off the lanes,
	// every width in turn, 4 states (X of period 4), 16 (the row path),
	// and paths shorter than the trellis memory (the start state read
	// cyclically from one or two fields).
	for _, c := range []struct {
		name   string
		d      int
		states int
		bits   func(i int) uint8 // nil: randomKLT's
	}{
		{"d40/random/tcq", 40, 8, nil},
		{"d13/random/tcq", 13, 8, nil},
		{"d100/random/tcq", 100, 8, nil},
		{"d69/widths/tcq", 69, 8, func(i int) uint8 { return uint8(1 + i%7) }},
		{"d24/random/tcq4", 24, 4, nil},
		{"d24/random/tcq16", 24, 16, nil},
		{"d16/one/tcq", 16, 8, func(i int) uint8 { return uint8(3 * min(1, i%16/15)) }},
		{"d16/two/tcq", 16, 8, func(i int) uint8 { return [16]uint8{5: 2, 9: 8, 11: 4}[i] }},
	} {
		p := randomKLT(t, r, c.d).Params()
		p.Trellis, p.Weight = c.states, make([]float32, c.d)
		for i := range p.Weight {
			p.Weight[i] = float32(r.Float64())
			if c.bits != nil {
				p.Bits[i] = c.bits(i)
			}
		}
		k, err := NewKLT(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, struct {
			name string
			k    *KLT
		}{c.name, k})
	}
	return out
}

// kltCodes encodes n vectors of k's dimension with random norms (the
// scale byte spans octaves; every 5th vector zero, scale byte 0): exactly
// n codes, so the last code ends the slice.
func kltCodes(t testing.TB, r *rand.Rand, k *KLT, n int) []byte {
	t.Helper()
	d := k.Dim()
	xs := make([]float32, n*d)
	for v := range n {
		if v%5 == 4 {
			continue
		}
		s := math.Exp(2 * r.NormFloat64())
		for i := range d {
			xs[v*d+i] = float32(s * r.NormFloat64())
		}
	}
	codes := make([]byte, n*k.Bytes())
	if err := k.EncodeBatch(codes, xs); err != nil {
		t.Fatal(err)
	}
	return codes[: n*k.Bytes() : n*k.Bytes()]
}

// kltKernels returns the lane kernels to test on this CPU, by their name
// and the value of kltAVX2Only that picks them: the AVX-512 and the AVX2
// ones where it has both, else the one it runs (or the row path, "rows").
func kltKernels() []struct {
	name string
	avx2 bool
} {
	k := []struct {
		name string
		avx2 bool
	}{{"avx2", true}}
	if !hasKLTLanes() {
		k[0].name = "rows"
	}
	if hasKLTLanes512() {
		k = append([]struct {
			name string
			avx2 bool
		}{{"avx512", false}}, k...)
	}
	return k
}

// useKernel sets kltAVX2Only for the rest of the test.
func useKernel(t testing.TB, avx2 bool) {
	old := kltAVX2Only
	kltAVX2Only = avx2
	t.Cleanup(func() { kltAVX2Only = old })
}

// kltCounts are the numbers of codes the fast path is tested on: odd,
// whole blocks of eight 1 to 5 and 75 (a full chunk of the lanes, then
// 11) and 125 (then 61), each remainder of pairs and fours of blocks,
// tails of 1 to 7 codes (the last code ending the slice).
var kltCounts = []int{1, 7, 13, 17, 25, 33, 45, 131, 600, 1003}

// TestKLTScoreQueries: the grouped scorer (and PrepareGroup), on each lane
// kernel the CPU has and on their Go twin, gives each query's own
// scorer's scores, and the float64 ⟨q, Decode(code)⟩, within float32
// rounding, for 1 to 8 queries and odd numbers of codes (kltCounts).
func TestKLTScoreQueries(t *testing.T) {
	for _, kn := range kltKernels() {
		t.Run(kn.name, func(t *testing.T) {
			useKernel(t, kn.avx2)
			testKLTScoreQueries(t)
		})
	}
}

func testKLTScoreQueries(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, c := range kltCases(t) {
		k, d := c.k, c.k.Dim()
		for _, n := range kltCounts {
			codes := kltCodes(t, r, k, n)
			dec := make([]float32, n*d)
			for v := range n {
				if err := k.Decode(dec[v*d:(v+1)*d], codes[v*k.Bytes():(v+1)*k.Bytes()]); err != nil {
					t.Fatal(err)
				}
			}
			for _, g := range []int{1, 3, 4, 8} {
				qs := make([][]float32, g)
				for j := range qs {
					qs[j] = make([]float32, d)
					for i := range qs[j] {
						qs[j][i] = float32(r.NormFloat64())
					}
				}
				var p KLTQueries
				if err := k.PrepareQueries(&p, qs); err != nil {
					t.Fatal(err)
				}
				got, grp, twin := rows(g, n), rows(g, n), rows(g, n)
				if err := k.ScoreQueries(got, &p, codes); err != nil {
					t.Fatal(err)
				}
				k.scoreQueries(false, twin, &p, codes) // the kernel's Go twin
				gs, err := PrepareGroup(k, qs)
				if err != nil {
					t.Fatal(err)
				}
				gs.Score(grp, codes)
				for j, q := range qs {
					sc, err := k.Prepare(q)
					if err != nil {
						t.Fatal(err)
					}
					ref := make([]float32, n)
					sc.Score(ref, codes)
					for v := range n {
						var exact, mag float64
						for i, x := range dec[v*d : (v+1)*d] {
							exact += float64(q[i]) * float64(x)
							mag += math.Abs(float64(q[i]) * float64(x))
						}
						tol := 1e-5 * (mag + 1)
						if e := math.Abs(float64(got[j][v]) - float64(ref[v])); e > tol || got[j][v] != grp[j][v] || math.Abs(float64(got[j][v]-twin[j][v])) > tol {
							t.Fatalf("%s n %d g %d: query %d code %d: %g, group scorer %g, Go twin %g, own scorer %g", c.name, n, g, j, v, got[j][v], grp[j][v], twin[j][v], ref[v])
						}
						if e := math.Abs(float64(got[j][v]) - exact); e > tol {
							t.Fatalf("%s n %d g %d: query %d code %d: %g, ⟨q, decoded⟩ %g", c.name, n, g, j, v, got[j][v], exact)
						}
					}
				}
			}
		}
	}
}

func rows(g, n int) [][]float32 {
	out := make([][]float32, g)
	for j := range out {
		out[j] = make([]float32, n)
	}
	return out
}

// TestKLTAccumulator: the accumulator's finished sums, on each lane
// kernel the CPU has and on their Go twin, equal the decoding expander's
// (chunkAcc over kltExp, the reference) and the float64 Σ w·Decode(code),
// within float32 rounding, summed over two calls.
func TestKLTAccumulator(t *testing.T) {
	for _, kn := range kltKernels() {
		t.Run(kn.name, func(t *testing.T) {
			useKernel(t, kn.avx2)
			testKLTAccumulator(t)
		})
	}
}

func testKLTAccumulator(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, c := range kltCases(t) {
		k, d := c.k, c.k.Dim()
		for _, n := range kltCounts {
			codes := kltCodes(t, r, k, n)
			for _, g := range []int{1, 4, 5} {
				ws := rows(g, n)
				for j := range ws {
					for v := range ws[j] {
						ws[j][v] = float32(r.Float64())
					}
				}
				if _, ok := NewAccumulator(k).(*kltAcc); !ok {
					t.Fatalf("NewAccumulator(klt) is %T", NewAccumulator(k))
				}
				for _, lanes := range []bool{false, true} {
					fast := newKLTAcc(k, lanes)
					if want := lanes && k.lanes(); fast.lanes != want || fast.wide != (want && hasKLTLanes512()) {
						t.Fatalf("%s: lane kernel %v (AVX-512 %v), want %v", c.name, fast.lanes, fast.wide, want)
					}
					ref := &chunkAcc{e: kltExp{k}, n: d, stride: k.Bytes()}
					accF, accR := rows(g, fast.AccLen()), rows(g, d)
					h := 2 * n / 3 // two calls: sums carry over, and the first leaves weights in scratch
					for _, part := range [][2]int{{0, h}, {h, n}} {
						wp := make([][]float32, g)
						for j := range wp {
							wp[j] = ws[j][part[0]:part[1]]
						}
						fast.Accumulate(accF, wp, codes[part[0]*k.Bytes():])
						ref.Accumulate(accR, wp, codes[part[0]*k.Bytes():])
					}
					checkKLTSums(t, fmt.Sprintf("%s n %d g %d lanes %v", c.name, n, g, lanes), k, codes, ws, fast, ref, accF, accR)
				}
			}
		}
	}
}

// checkKLTSums compares the finished sums of fast and ref with the
// float64 Σ w·Decode(code).
func checkKLTSums(t *testing.T, name string, k *KLT, codes []byte, ws [][]float32, fast, ref Accumulator, accF, accR [][]float32) {
	t.Helper()
	d, n := k.Dim(), len(ws[0])
	x := make([]float32, d)
	for j := range ws {
		want := make([]float64, d)
		for v := range n {
			if err := k.Decode(x, codes[v*k.Bytes():(v+1)*k.Bytes()]); err != nil {
				t.Fatal(err)
			}
			for i := range d {
				want[i] += float64(ws[j][v]) * float64(x[i])
			}
		}
		gotF, gotR := make([]float32, d), make([]float32, d)
		fast.Finish(gotF, accF[j])
		ref.Finish(gotR, accR[j])
		var norm float64
		for _, w := range want {
			norm += w * w
		}
		tol := 1e-5*math.Sqrt(norm) + 1e-6
		for i := range d {
			if math.Abs(float64(gotF[i])-want[i]) > tol || math.Abs(float64(gotF[i]-gotR[i])) > 2*tol {
				t.Fatalf("%s: head %d [%d] = %g, reference %g, float64 %g", name, j, i, gotF[i], gotR[i], want[i])
			}
		}
	}
}

// TestKLTScoreQueriesErrors: mismatched lengths are errors, not panics.
func TestKLTScoreQueriesErrors(t *testing.T) {
	k := kltCases(t)[0].k
	var p KLTQueries
	if err := k.PrepareQueries(&p, [][]float32{make([]float32, k.Dim()+1)}); err == nil {
		t.Error("a query of the wrong length: no error")
	}
	if err := k.PrepareQueries(&p, [][]float32{make([]float32, k.Dim())}); err != nil {
		t.Fatal(err)
	}
	if err := k.ScoreQueries(rows(2, 3), &p, make([]byte, 3*k.Bytes())); err == nil {
		t.Error("two score rows for one query: no error")
	}
	if err := k.ScoreQueries(rows(1, 3), &p, make([]byte, 3*k.Bytes()-1)); err == nil {
		t.Error("short codes: no error")
	}
}

// BenchmarkKLTAttend: scoring four queries and summing values for four
// heads over 4096 klt3.5 codes at d = 128: the grouped path on each lane
// kernel the CPU has (group/avx512, group/avx2, kltKernels), its row path
// (the kernels' Go twin), and the reference (each query's own scorer; codes decoded to the
// transformed basis and summed by the row kernel).
func BenchmarkKLTAttend(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	cov, mean := correlated(r, 128, -4, 1)
	k := kltFor(b, cov, mean, 128, 3.5)
	const n = 4096
	codes := kltCodes(b, r, k, n)
	qs, ws := rows(4, 128), rows(4, n)
	for j := range qs {
		for i := range qs[j] {
			qs[j][i] = float32(r.NormFloat64())
		}
		for i := range ws[j] {
			ws[j][i] = float32(r.Float64())
		}
	}
	dst := rows(4, n)
	for _, kn := range kltKernels() {
		b.Run("score/group/"+kn.name, func(b *testing.B) {
			useKernel(b, kn.avx2)
			var p KLTQueries
			for b.Loop() {
				if err := k.PrepareQueries(&p, qs); err != nil {
					b.Fatal(err)
				}
				if err := k.ScoreQueries(dst, &p, codes); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("score/rows", func(b *testing.B) {
		var p KLTQueries
		for b.Loop() {
			if err := k.PrepareQueries(&p, qs); err != nil {
				b.Fatal(err)
			}
			k.scoreQueries(false, dst, &p, codes)
		}
	})
	b.Run("score/reference", func(b *testing.B) {
		for b.Loop() {
			for j, q := range qs {
				sc, _ := k.Prepare(q)
				sc.Score(dst[j], codes)
			}
		}
	})
	for _, kn := range kltKernels() {
		b.Run("acc/group/"+kn.name, func(b *testing.B) {
			useKernel(b, kn.avx2)
			a := NewAccumulator(k)
			accs := rows(4, a.AccLen())
			for b.Loop() {
				a.Accumulate(accs, ws, codes)
			}
		})
	}
	for _, c := range []struct {
		name string
		a    Accumulator
	}{{"rows", newKLTAcc(k, false)}, {"reference", &chunkAcc{e: kltExp{k}, n: 128, stride: k.Bytes()}}} {
		accs := rows(4, c.a.AccLen())
		b.Run("acc/"+c.name, func(b *testing.B) {
			for b.Loop() {
				c.a.Accumulate(accs, ws, codes)
			}
		})
	}
}

// TestKLTTrellisLanes: a trellis-coded KLT takes the lane kernels where
// the CPU has them up to 8 states (kltSeg's modes), the row path above,
// and its segments start with the ν kltStart ones.
func TestKLTTrellisLanes(t *testing.T) {
	for _, c := range kltCases(t) {
		tc := c.k.tcq
		if tc == nil {
			continue
		}
		if want := hasKLTLanes() && tc.tr.States() <= 8; c.k.lanes() != want {
			t.Errorf("%s: lane kernels %v, want %v", c.name, c.k.lanes(), want)
		}
		if c.k.segs == nil || len(tc.fields) == 0 {
			continue
		}
		for i, sg := range c.k.segs {
			if start := i < tc.tr.Memory(); (sg.mode == kltStart) != start || sg.mode == kltStart && sg.n != 1 {
				t.Fatalf("%s: segment %d of mode %d, %d fields", c.name, i, sg.mode, sg.n)
			}
		}
	}
}
