package kvcache

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// ropeCases are the layouts Rope serves: adjacent pairs (llama GGUF),
// halves (Qwen2), and a partial rotation that leaves coordinates alone.
var ropeCases = []struct {
	name   string
	d, dim int // head dimension, rotated coordinates
	halves bool
}{
	{"adjacent", 64, 64, false},
	{"halves", 64, 64, true},
	{"partial-adjacent", 64, 32, false},
	{"partial-halves", 64, 48, true},
}

func testRope(t testing.TB, d, dim int, halves bool) *Rope {
	t.Helper()
	freqs := make([]float64, dim/2)
	for i := range freqs {
		freqs[i] = math.Pow(10000, -2*float64(i)/float64(dim))
	}
	r, err := NewRope(d, freqs, halves)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRopeRotate checks Rotate against each pair's 2×2 rotation matrix
// [cos −sin; sin cos] at angle t·ω_i, written out per layout, and that
// turning back by −t undoes it.
func TestRopeRotate(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, c := range ropeCases {
		t.Run(c.name, func(t *testing.T) {
			rope := testRope(t, c.d, c.dim, c.halves)
			x := make([]float64, c.d)
			for i := range x {
				x[i] = r.NormFloat64()
			}
			for _, pos := range []int{0, 1, 7, 1000, 123457} {
				want := append([]float64(nil), x...)
				for i := range c.dim / 2 {
					a, b := 2*i, 2*i+1
					if c.halves {
						a, b = i, i+c.dim/2
					}
					th := float64(pos) * math.Pow(10000, -2*float64(i)/float64(c.dim))
					want[a] = math.Cos(th)*x[a] - math.Sin(th)*x[b]
					want[b] = math.Sin(th)*x[a] + math.Cos(th)*x[b]
				}
				got := make([]float64, c.d)
				rope.Rotate(got, x, pos)
				for i := range got {
					if math.Abs(got[i]-want[i]) > 1e-12 {
						t.Fatalf("t=%d: coordinate %d = %g, want %g", pos, i, got[i], want[i])
					}
				}
				rope.Rotate(got, got, -pos)
				for i := range got {
					if math.Abs(got[i]-x[i]) > 1e-12 {
						t.Fatalf("t=%d: turning back gives %g at %d, want %g", pos, got[i], i, x[i])
					}
				}
			}
		})
	}
}

func TestNewRopeErrors(t *testing.T) {
	for _, c := range []struct {
		d     int
		freqs []float64
	}{
		{64, nil},
		{4, []float64{1, 1, 1}},
		{64, []float64{math.NaN()}},
		{64, []float64{math.Inf(1)}},
	} {
		if _, err := NewRope(c.d, c.freqs, false); err == nil {
			t.Errorf("NewRope(%d, %v) gives no error", c.d, c.freqs)
		}
	}
}

// TestLagrangeBasis: the interpolation basis reproduces polynomials of
// degree below ropeNodes at every position of a chunk (Σ_k ℓ_k(j)·x_k^m =
// j^m), and the nodes lie inside the chunk.
func TestLagrangeBasis(t *testing.T) {
	r := testRope(t, 64, 64, false)
	for k, x := range r.nodes {
		if x < 0 || x > ropeChunk-1 || (k > 0 && x <= r.nodes[k-1]) {
			t.Fatalf("nodes %v: not increasing inside [0, %d]", r.nodes, ropeChunk-1)
		}
	}
	for m := range ropeNodes {
		for j := range ropeChunk {
			var got float64
			for k, x := range r.nodes {
				got += r.basis[k][j] * math.Pow(x/(ropeChunk-1), float64(m))
			}
			if want := math.Pow(float64(j)/(ropeChunk-1), float64(m)); math.Abs(got-want) > 1e-12 {
				t.Fatalf("degree %d, position %d: Σ ℓ_k·x_k^m = %g, want %g", m, j, got, want)
			}
		}
	}
}

// ropeFreqs are rotary frequencies base^(−2i/dim) of the models served
// (llama 10⁴, Qwen2 10⁶) over head dimensions 64 and 128.
var ropeFreqCases = []struct {
	d      int
	base   float64
	halves bool
}{{64, 1e4, false}, {128, 1e4, false}, {64, 1e6, true}, {128, 5e5, true}}

// TestMeanTurns: the vector centred keys subtract is R_t·μ exactly on the
// fast pairs and the unrotated coordinates, and within ropeTol of each
// slow pair's |μ̃| of it (the Chebyshev interpolation bound), at
// positions across chunks and far out; most pairs are slow.
func TestMeanTurns(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, c := range ropeFreqCases {
		dim := c.d - 8 // eight coordinates left unrotated
		freqs := make([]float64, dim/2)
		for i := range freqs {
			freqs[i] = math.Pow(c.base, -2*float64(i)/float64(dim))
		}
		rope, err := NewRope(c.d, freqs, c.halves)
		if err != nil {
			t.Fatal(err)
		}
		if len(rope.slow) < len(freqs)/2 {
			t.Errorf("d %d base %g: %d of %d pairs slow, want at least half", c.d, c.base, len(rope.slow), len(freqs))
		}
		mu := make([]float64, c.d)
		for i := range mu {
			mu[i] = r.NormFloat64()
		}
		m := newMeanTurns(rope, mu)
		got := make([]float64, c.d)
		want := make([]float64, c.d)
		var worst float64
		for _, pos := range []int{0, 1, 31, 63, 64, 100, 127, 128, 4095, 4096, 99991, 1 << 20} {
			m.turned(got, pos)
			rope.Rotate(want, mu, pos)
			for i := dim; i < c.d; i++ {
				if got[i] != mu[i] {
					t.Fatalf("t=%d: unrotated coordinate %d = %g, want %g", pos, i, got[i], mu[i])
				}
			}
			for _, i := range rope.exact {
				a, b := rope.pair(i)
				if math.Abs(got[a]-want[a]) > 1e-12 || math.Abs(got[b]-want[b]) > 1e-12 {
					t.Fatalf("t=%d: exact pair %d = (%g, %g), want (%g, %g)", pos, i, got[a], got[b], want[a], want[b])
				}
			}
			for _, i := range rope.slow {
				a, b := rope.pair(i)
				e := math.Hypot(got[a]-want[a], got[b]-want[b]) / math.Hypot(mu[a], mu[b])
				worst = math.Max(worst, e)
				if e > ropeTol {
					t.Fatalf("t=%d: slow pair %d (ω %g) off by %g of its |μ̃|, want ≤ %g", pos, i, freqs[i], e, ropeTol)
				}
			}
		}
		t.Logf("d %d base %g: %d exact, %d slow pairs; worst slow error %.2g", c.d, c.base, len(rope.exact), len(rope.slow), worst)
	}
}

// TestMeanScores checks the chunked, tabulated ⟨q, m_t⟩ against the
// float64 product with the subtracted vector m_t (meanTurns) at every
// position, across chunk, span and block boundaries, far positions and
// one to five queries (a kernel call's four slots filled by chunks a
// span apart, or a group of four and a short one). Tolerance
// 2e-5·‖q‖∞·√d·‖μ‖: float32 tables and products over d = 64 terms (each
// within 2^-24 relative, sums of |terms| ≤ ‖q‖‖μ‖, node sums weighed by

// meanCase returns a mean μ (entries of spread 3) and nq queries of
// dimension d, and the mean scores' tolerance: 2e-5·‖q‖∞·√d·‖μ‖.
func meanCase(r *rand.Rand, d, nq int) (mu []float32, qs [][]float32, tol float64) {
	mu = make([]float32, d)
	for i := range mu {
		mu[i] = float32(r.NormFloat64() * 3)
	}
	qs = make([][]float32, nq)
	var qn float64
	for j := range qs {
		qs[j] = make([]float32, d)
		for i := range qs[j] {
			qs[j][i] = float32(r.NormFloat64())
			qn = math.Max(qn, math.Abs(float64(qs[j][i])))
		}
	}
	return mu, qs, 2e-5 * qn * math.Sqrt(float64(d)) * float64(norm64(mu))
}

// a basis of Lebesgue constant below 3).
func TestMeanScores(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, c := range append(ropeCases, struct {
		name   string
		d, dim int
		halves bool
	}{"none", 64, 0, false}) {
		t.Run(c.name, func(t *testing.T) {
			var rope *Rope
			if c.dim > 0 {
				rope = testRope(t, c.d, c.dim, c.halves)
			}
			mu, qs, tol := meanCase(r, c.d, 5)
			mu64 := make([]float64, c.d)
			for i := range mu {
				mu64[i] = float64(mu[i])
			}
			m := make([]float64, c.d)
			turns := newMeanTurns(rope, mu64)
			for _, span := range [][2]int{{0, 150}, {64, 150}, {70, 150}, {4000, 300}, {99991, 150}, {0, 8200}} {
				t0, n := span[0], span[1]
				for _, nq := range []int{1, 2, 3, 4, 5} {
					dst := make([][]float32, nq)
					for j := range dst {
						dst[j] = make([]float32, n)
						for i := range dst[j] {
							dst[j][i] = float32(i % 7) // added to, not overwritten
						}
					}
					rope.meanScores(dst, qs[:nq], mu, t0)
					for i := range n {
						turns.turned(m, t0+i)
						for j, q := range qs[:nq] {
							var want float64
							for k, v := range m {
								want += float64(q[k]) * v
							}
							if got := float64(dst[j][i]) - float64(i%7); math.Abs(got-want) > tol {
								t.Fatalf("t=%d query %d of %d: %g, want %g", t0+i, j, nq, got, want)
							}
						}
					}
				}
			}
		})
	}
}

// TestMeanScoresFar checks meanPlan.add against ⟨q, m_t⟩ made here from
// scratch in float64: μ turned by each pair's 2×2 rotation at angle t·ω
// on the fast pairs (|ω| > slowFreq) and the unrotated coordinates left
// alone; on the slow pairs, μ turned to the Chebyshev nodes c + x_k of
// t's chunk c and weighed by their Lagrange basis at t − c (the subtracted
// vector, centered.go). Positions run to 100k, across chunk, span and
// block (4096) boundaries, in slices that start and end inside chunks,
// for one to eight queries (whole groups of four, a short group, both).
// Tolerance as TestMeanScores: 2e-5·‖q‖∞·√d·‖μ‖, float32 tables and
// weights. The reference itself is checked against the plain ⟨q, R_t·μ⟩
// within the interpolation bound, ropeTol·|q̃_s|·|μ̃_s| summed over the
// slow pairs; and the same check on scores made one position off (t0+1)
// must fail by far.
func TestMeanScoresFar(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	type layout struct {
		d, dim int
		base   float64
		halves bool
	}
	cases := []layout{{128, 128, 1e4, false}, {64, 56, 1e4, false}, {128, 120, 1e6, true}, {64, 48, 5e5, true}}
	for _, c := range cases {
		t.Run(fmt.Sprintf("d=%d/dim=%d/base=%g/halves=%v", c.d, c.dim, c.base, c.halves), func(t *testing.T) {
			freqs := make([]float64, c.dim/2)
			for i := range freqs {
				freqs[i] = math.Pow(c.base, -2*float64(i)/float64(c.dim))
			}
			rope, err := NewRope(c.d, freqs, c.halves)
			if err != nil {
				t.Fatal(err)
			}
			pair := func(i int) (int, int) {
				if c.halves {
					return i, i + c.dim/2
				}
				return 2 * i, 2*i + 1
			}
			// Chebyshev nodes of [0, 63] and their Lagrange basis, from
			// the definitions
			var nodes [ropeNodes]float64
			for k := range nodes {
				nodes[k] = 31.5 - 31.5*math.Cos(math.Pi*float64(2*k+1)/(2*ropeNodes))
			}
			basis := func(k int, x float64) float64 {
				l := 1.0
				for m := range nodes {
					if m != k {
						l *= (x - nodes[m]) / (nodes[k] - nodes[m])
					}
				}
				return l
			}
			mu, qs, tol := meanCase(r, c.d, 8)
			// want returns ⟨q, m_t⟩ and ⟨q, R_t·μ⟩, and the interpolation
			// bound on their difference.
			want := func(q []float32, pos int) (m, exact, bound float64) {
				for i := c.dim; i < c.d; i++ {
					m += float64(q[i]) * float64(mu[i])
				}
				exact = m
				c0, j := pos-pos%ropeChunk, float64(pos%ropeChunk)
				for i, w := range freqs {
					a, b := pair(i)
					qa, qb, ma, mb := float64(q[a]), float64(q[b]), float64(mu[a]), float64(mu[b])
					turned := func(p float64) float64 {
						s, co := math.Sincos(p * w)
						return qa*(ma*co-mb*s) + qb*(ma*s+mb*co)
					}
					e := turned(float64(pos))
					exact += e
					if math.Abs(w) > slowFreq {
						m += e
						continue
					}
					for k, x := range nodes {
						m += basis(k, j) * turned(float64(c0)+x)
					}
					bound += ropeTol * math.Hypot(qa, qb) * math.Hypot(ma, mb)
				}
				return m, exact, bound
			}
			// check returns the worst |got − want|/tol of scores made for
			// the positions t0.. (dst minus what it held before).
			check := func(dst [][]float32, t0 int) float64 {
				var worst float64
				for i := range dst[0] {
					for j := range dst {
						m, exact, bound := want(qs[j], t0+i)
						if math.Abs(m-exact) > bound+tol {
							t.Fatalf("t=%d: reference %g off ⟨q, R_t·μ⟩ %g by more than the interpolation bound %g", t0+i, m, exact, bound)
						}
						worst = math.Max(worst, math.Abs(float64(dst[j][i])-float64(i%5)-m)/tol)
					}
				}
				return worst
			}
			scores := func(nq, t0, n int, shift int) [][]float32 {
				var p meanPlan
				rope.beginPlan(&p, nq)
				for j := range nq {
					rope.planQuery(&p, j, qs[j], mu)
				}
				dst := make([][]float32, nq)
				for j := range dst {
					dst[j] = make([]float32, n)
					for i := range dst[j] {
						dst[j][i] = float32(i % 5) // added to, not overwritten
					}
				}
				p.add(dst, t0+shift)
				return dst
			}
			var worst float64
			for _, span := range [][2]int{{0, 200}, {37, 300}, {4000, 300}, {8190, 70}, {65530, 131}, {99_872, 300}, {99_999, 1}} {
				for _, nq := range []int{1, 2, 3, 4, 5, 7, 8} {
					t0, n := span[0], span[1]
					w := check(scores(nq, t0, n, 0), t0)
					if w > 1 {
						t.Errorf("t0=%d n=%d, %d queries: off by %.3g of the tolerance %.3g", t0, n, nq, w, tol)
					}
					worst = math.Max(worst, w)
				}
			}
			off := check(scores(4, 99_872, 300, 1), 99_872)
			if off < 10 {
				t.Errorf("scores one position off pass within %.3g of the tolerance, want a failure", off)
			}
			t.Logf("worst error %.3g of the tolerance %.3g; one position off, %.3g", worst, tol, off)
		})
	}
}

// TestMeanKernels compares meanAdd4 and turnTiles4 on each kernel the
// CPU has, meanRun and spanWeights with their pure-Go twins on random weights and tables,
// over 0, 7 and 34 exact rows, runs of chunks from either column of a
// span, and 1, 16, 17 and 40 pairs. Tolerance 1e-5 of the sum of |terms|,
// as TestTurnAdd4.
func TestMeanKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	fill := func(n int) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = float32(r.NormFloat64())
		}
		return s
	}
	near := func(got, want, abs float64) bool { return math.Abs(got-want) <= 1e-5*abs+1e-6 }
	for _, erows := range []int{0, 7, 34} {
		table := fill((erows + ropeNodes) * ropeSpan)
		for _, k := range turnKernels() {
			var ew, nw, got, want [4][]float32
			for q := range 4 {
				ew[q], nw[q] = fill(erows), fill(ropeNodes)
				got[q] = fill(ropeChunk + 1)
				want[q] = append([]float32(nil), got[q]...)
			}
			meanAdd4With(k, &got, &ew, &nw, erows, table[ropeChunk:], ropeSpan)
			meanAdd4Go(&want, &ew, &nw, erows, table[ropeChunk:], ropeSpan)
			for q := range 4 {
				if got[q][ropeChunk] != want[q][ropeChunk] {
					t.Fatalf("meanAdd4 kernel %d, %d rows: wrote past the chunk", k, erows)
				}
				for j := range ropeChunk {
					abs := math.Abs(float64(want[q][j]))
					for i, w := range append(append([]float32(nil), ew[q]...), nw[q]...) {
						abs += math.Abs(float64(w) * float64(table[i*ropeSpan+ropeChunk+j]))
					}
					if !near(float64(got[q][j]), float64(want[q][j]), abs) {
						t.Fatalf("meanAdd4 kernel %d, %d rows, slot %d, position %d: %g, twin %g", k, erows, q, j, got[q][j], want[q][j])
					}
				}
			}
		}
		for _, col0 := range []int{0, 1} {
			for _, chunks := range []int{1, 2, 3, 6} {
				spans := (col0 + chunks + 1) / 2
				const ewStep, nwStride = 200, 70
				ew := fill((spans-1)*ewStep + 4*erows + 1)
				nw := fill(3*nwStride + chunks*ropeNodes)
				var got, want [4][]float32
				for q := range 4 {
					got[q] = fill(chunks*ropeChunk + 1)
					want[q] = append([]float32(nil), got[q]...)
				}
				meanRun(&got, ew, ewStep, erows, nw, nwStride, table, col0, chunks)
				meanRunGo(&want, ew, ewStep, erows, nw, nwStride, table, col0, chunks)
				for q := range 4 {
					if got[q][chunks*ropeChunk] != want[q][chunks*ropeChunk] {
						t.Fatalf("meanRun, %d rows, %d chunks: wrote past the run", erows, chunks)
					}
					for j := range chunks * ropeChunk {
						if !near(float64(got[q][j]), float64(want[q][j]), 100) {
							t.Fatalf("meanRun, %d rows, column %d, %d chunks, query %d, position %d: %g, twin %g", erows, col0, chunks, q, j, got[q][j], want[q][j])
						}
					}
				}
			}
		}
	}
	for _, k := range turnKernels() {
		for _, rows := range []int{1, 7, 94} {
			w, tiles := fill(4*rows), fill(2*rows*nodeTile)
			var got, want [4][]float32
			for q := range 4 {
				got[q], want[q] = fill(2*nodeTile+1), make([]float32, 2*nodeTile+1)
				want[q][2*nodeTile] = got[q][2*nodeTile]
			}
			turnTiles4With(k, &got, w, rows, tiles)
			turnTiles4Go(&want, w, rows, tiles)
			for q := range 4 {
				for j := range 2*nodeTile + 1 {
					if !near(float64(got[q][j]), float64(want[q][j]), 10*float64(rows)) {
						t.Fatalf("turnTiles4 kernel %d, %d rows, query %d, column %d: %g, twin %g", k, rows, q, j, got[q][j], want[q][j])
					}
				}
			}
		}
	}
	for _, pe := range []int{1, 16, 17, 40} {
		for _, nq := range []int{1, 3, 4} {
			z, turns := fill(nq*2*pe), fill(2*pe)
			got, want := fill(nq*2*pe+1), make([]float32, nq*2*pe+1)
			copy(want, got)
			spanWeights(got, z, turns, pe, nq)
			spanWeightsGo(want, z, turns, pe, nq)
			for i := range got {
				if !near(float64(got[i]), float64(want[i]), 10) {
					t.Fatalf("spanWeights, %d pairs, %d queries: weight %d = %g, twin %g", pe, nq, i, got[i], want[i])
				}
			}
		}
	}
}

// TestTurnAdd4 compares each kernel the CPU has with its pure-Go twin on
// random weights over 1, 7 and 128 rows of a table wider than a chunk,
// adding to what out holds and writing over it. Tolerance 1e-5 of the sum
// of |terms|: fused multiply-adds round once per term, the twin twice.
func TestTurnAdd4(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	const stride = ropeChunk + 40
	for _, k := range turnKernels() {
		for _, rows := range []int{1, 7, 128} {
			for _, set := range []bool{false, true} {
				w := make([]float32, 4*rows)
				table := make([]float32, rows*stride)
				for i := range w {
					w[i] = float32(r.NormFloat64())
				}
				for i := range table {
					table[i] = float32(r.NormFloat64())
				}
				var got, want [4][]float32
				for q := range 4 {
					got[q] = make([]float32, ropeChunk+1)
					want[q] = make([]float32, ropeChunk+1)
					for j := range got[q] {
						got[q][j] = float32(j)
						want[q][j] = float32(j)
					}
				}
				turnAdd4With(k, &got, w, rows, table, stride, set)
				turnAdd4Go(&want, w, rows, table, stride, set)
				for q := range 4 {
					if got[q][ropeChunk] != ropeChunk {
						t.Fatalf("kernel %d, rows %d: the kernel wrote past the chunk", k, rows)
					}
					for j := range ropeChunk {
						abs := float64(j)
						for k := range rows {
							abs += math.Abs(float64(w[q*rows+k]) * float64(table[k*stride+j]))
						}
						if math.Abs(float64(got[q][j]-want[q][j])) > 1e-5*abs {
							t.Fatalf("kernel %d, rows %d set %v, query %d, position %d: %g, twin %g", k, rows, set, q, j, got[q][j], want[q][j])
						}
					}
				}
			}
		}
	}
}

// BenchmarkMeanScores times the mean's share of one attention step on
// one goroutine (Rope.beginPlan, planQuery per query, meanPlan.add per
// slice), d = 128 fully rotated (base 10⁴: 17 exact pairs, 47 slow), for
// a group of 4 and of 2 queries: 4k positions in the 16 slices of a
// 16-thread step, 16k in 16 slices and in one. cpu-ns/op is the thread's
// CPU time, which holds on a loaded machine where the wall time does
// not; ns/pos is the wall time per position.
func BenchmarkMeanScores(b *testing.B) {
	rope := testRope(b, 128, 128, false)
	r := rand.New(rand.NewPCG(7, 8))
	mu := make([]float32, 128)
	for i := range mu {
		mu[i] = float32(r.NormFloat64())
	}
	qs := make([][]float32, 4)
	for j := range qs {
		qs[j] = make([]float32, 128)
		for i := range qs[j] {
			qs[j][i] = float32(r.NormFloat64())
		}
	}
	for _, g := range []int{4, 2} {
		for _, c := range []struct{ n, slices int }{{4096, 16}, {16384, 16}, {16384, 1}} {
			dst := make([][]float32, g)
			for j := range dst {
				dst[j] = make([]float32, c.n)
			}
			part := make([][]float32, g)
			var p meanPlan
			b.Run(fmt.Sprintf("g=%d/ctx=%d/slices=%d", g, c.n, c.slices), func(b *testing.B) {
				loopCPU(b, func() {
					rope.beginPlan(&p, g)
					for j := range g {
						rope.planQuery(&p, j, qs[j], mu)
					}
					for s := range c.slices {
						t0, t1 := bounds(s, c.slices, c.n)
						for j := range part {
							part[j] = dst[j][t0:t1]
						}
						p.add(part, t0)
					}
				})
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(c.n), "ns/pos")
			})
		}
	}
}
