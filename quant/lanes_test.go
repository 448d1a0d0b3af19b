package quant

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"
)

// laneQuantizers are the quantizers Lanes holds: the turbo formats'
// (TurboMSE at 2–4 bits, the outlier split), and the research ones built
// of the same segments (TurboProd parts, QJL).
func laneQuantizers(t *testing.T, d int) []Quantizer {
	t.Helper()
	var qs []Quantizer
	for _, b := range []int{2, 3, 4} {
		q, err := NewTurboMSE(d, b, Options{Seed: uint64(b), Correction: CorrectNorm})
		if err != nil {
			t.Fatal(err)
		}
		qs = append(qs, q)
	}
	split, err := NewTurboSplit(d, firstChannels(d/4), 4, 3, false, Options{Seed: 2, Correction: CorrectNorm})
	if err != nil {
		t.Fatal(err)
	}
	prod, err := NewTurboSplit(d, firstChannels(d/4), 4, 3, true, Options{Seed: 6})
	if err != nil {
		t.Fatal(err)
	}
	qjl, err := NewQJL(d, 2*d, 7)
	if err != nil {
		t.Fatal(err)
	}
	return append(qs, split, prod, qjl)
}

// TestLanesCodes: Lanes gives back each token's code byte for byte, over
// several blocks filled by appends of different sizes; Bytes counts the
// codes; a quantizer not made of segments has no Lanes.
func TestLanesCodes(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for _, d := range []int{64, 128} {
		for _, q := range laneQuantizers(t, d) {
			l := NewLanes(q)
			if l == nil {
				t.Fatalf("%s d=%d: no Lanes", q.Name(), d)
			}
			const n = 53
			xs := randomVectors(r, n, d, 2)
			want := make([]byte, n*q.Bytes())
			if err := q.EncodeBatch(want, xs); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < n; {
				m := min(1+i%5, n-i)
				if err := l.Append(xs[i*d : (i+m)*d]); err != nil {
					t.Fatal(err)
				}
				i += m
			}
			if l.Len() != n || l.Bytes() != n*q.Bytes() {
				t.Fatalf("%s: Len %d Bytes %d, want %d and %d", q.Name(), l.Len(), l.Bytes(), n, n*q.Bytes())
			}
			got := make([]byte, q.Bytes())
			for i := range n {
				l.Code(got, i)
				if w := want[i*q.Bytes() : (i+1)*q.Bytes()]; !bytes.Equal(got, w) {
					t.Fatalf("%s d=%d token %d: code %x, want %x", q.Name(), d, i, got, w)
				}
			}
		}
	}
	for _, q := range []Quantizer{mustQ8(t, 64)} {
		if NewLanes(q) != nil {
			t.Errorf("%s: Lanes made for a quantizer without segments", q.Name())
		}
	}
}

func mustQ8(t *testing.T, d int) Quantizer {
	q, err := NewQ8_0(d)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// TestLanesScore: Lanes' scores equal each query's own Scorer on the same
// codes (the same estimate summed in another order: 1e-4 of the scores'
// scale), for 1 to 6 queries, from block starts, over whole and partial
// blocks; every other span is scored with one LaneQueries prepared once
// per query set and reused across quantizers and query counts.
func TestLanesScore(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	const d, n = 128, 70
	var lq LaneQueries // reused across quantizers and query counts
	for _, q := range laneQuantizers(t, d) {
		l := NewLanes(q)
		xs := randomVectors(r, n, d, 1)
		codes := make([]byte, n*q.Bytes())
		if err := q.EncodeBatch(codes, xs); err != nil {
			t.Fatal(err)
		}
		if err := l.Append(xs); err != nil {
			t.Fatal(err)
		}
		for _, nq := range []int{1, 2, 4, 6} {
			qs := make([][]float32, nq)
			for j := range qs {
				qs[j] = randomVectors(r, 1, d, 1)
			}
			if err := l.PrepareQueries(&lq, qs); err != nil {
				t.Fatal(err)
			}
			for si, span := range [][2]int{{0, n}, {16, 33}, {48, 22}, {64, 6}, {32, 0}} {
				t0, m := span[0], span[1]
				got := make([][]float32, nq)
				for j := range got {
					got[j] = make([]float32, m+1)
					got[j][m] = 7 // past the scores: untouched
				}
				dst := make([][]float32, nq)
				for j := range dst {
					dst[j] = got[j][:m]
				}
				// Score, and the queries prepared once for every span
				score := func() error { return l.Score(dst, qs, t0) }
				if si%2 == 1 {
					score = func() error { return l.ScorePrepared(dst, &lq, t0) }
				}
				if err := score(); err != nil {
					t.Fatal(err)
				}
				for j, qq := range qs {
					sc, err := q.Prepare(qq)
					if err != nil {
						t.Fatal(err)
					}
					want := make([]float32, m)
					sc.Score(want, codes[t0*q.Bytes():(t0+m)*q.Bytes()])
					for i := range m {
						if math.Abs(float64(got[j][i]-want[i])) > 1e-4*(1+math.Abs(float64(want[i]))) {
							t.Fatalf("%s, %d queries, tokens from %d: query %d token %d: %g, want %g", q.Name(), nq, t0, j, t0+i, got[j][i], want[i])
						}
					}
					if got[j][m] != 7 {
						t.Fatalf("%s: score written past the tokens asked for", q.Name())
					}
				}
			}
		}
	}
}

// TestLanesScoreErrors: a start off a block boundary, a range past the
// tokens held, a query of the wrong length and score rows that do not
// match the prepared queries are refused.
func TestLanesScoreErrors(t *testing.T) {
	q, _ := NewTurboMSE(64, 3, Options{Seed: 1})
	l := NewLanes(q)
	if err := l.Append(randomVectors(rand.New(rand.NewPCG(1, 1)), 40, 64, 1)); err != nil {
		t.Fatal(err)
	}
	good := [][]float32{make([]float32, 64)}
	for _, c := range []struct {
		t0, n, qlen int
	}{{8, 4, 64}, {32, 9, 64}, {0, 4, 63}} {
		qs := [][]float32{make([]float32, c.qlen)}
		if err := l.Score([][]float32{make([]float32, c.n)}, qs, c.t0); err == nil {
			t.Errorf("Score of [%d, %d) with a query of %d: no error", c.t0, c.t0+c.n, c.qlen)
		}
	}
	if err := l.Score([][]float32{make([]float32, 8)}, good, 32); err != nil {
		t.Errorf("Score of [32, 40): %v", err)
	}
	var lq LaneQueries
	if err := l.PrepareQueries(&lq, [][]float32{make([]float32, 63)}); err == nil {
		t.Error("PrepareQueries of a query of 63: no error")
	}
	if err := l.PrepareQueries(&lq, [][]float32{good[0], good[0]}); err != nil {
		t.Fatal(err)
	}
	if err := l.ScorePrepared([][]float32{make([]float32, 8)}, &lq, 32); err == nil {
		t.Error("ScorePrepared of 1 score row for 2 prepared queries: no error")
	}
}

// laneKernelQuantizers are the quantizers whose lane layouts the kernel
// tests run on: turbo3.5's two parts (4 and 3 bits), turbo2.5's (3 and
// 2) and turbo4 (4 bits alone), 128 coordinates.
func laneKernelQuantizers(t *testing.T) []Quantizer {
	t.Helper()
	var qs []Quantizer
	for _, bits := range [][2]int{{4, 3}, {3, 2}} {
		q, err := NewTurboSplit(128, firstChannels(32), bits[0], bits[1], false, Options{Seed: 2})
		if err != nil {
			t.Fatal(err)
		}
		qs = append(qs, q)
	}
	q, err := NewTurboMSE(128, 4, Options{Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	return append(qs, q)
}

// TestLaneScoreKernel: each kernel level the CPU has against the pure-Go
// twin on random blocks of turbo3.5's, turbo2.5's and turbo4's parts,
// for 1 to 4 queries. Tolerance 8e-5·(1 + |score|): the same terms
// summed with fused multiply-adds in two chains per query, against the
// twin's one.
func TestLaneScoreKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(25, 26))
	for _, level := range levels() {
		for _, q := range laneKernelQuantizers(t) {
			l := NewLanes(q)
			if err := l.Append(randomVectors(r, 3*laneBlock, 128, 1)); err != nil {
				t.Fatal(err)
			}
			qi := make([]float32, 4*128)
			for i := range qi {
				qi[i] = float32(r.NormFloat64())
			}
			for nq := 1; nq <= 4; nq++ {
				var got, want [4][]float32
				for j := range nq {
					got[j] = make([]float32, 3*laneBlock)
					want[j] = make([]float32, 3*laneBlock)
				}
				laneScore4At(level, &got, nq, 3, qi, l.parts, l.data, l.block)
				laneScore4Go(&want, nq, 3, qi, l.parts, l.data, l.block)
				for j := range nq {
					for i := range got[j] {
						if math.Abs(float64(got[j][i]-want[j][i])) > 1e-5*(1+math.Abs(float64(want[j][i])))*8 {
							t.Fatalf("%s, %s, %d queries: query %d token %d: %g, twin %g", level, q.Name(), nq, j, i, got[j][i], want[j][i])
						}
					}
				}
			}
		}
	}
}

// TestLanesAccumulate: Lanes' value sums against float64 sums of the
// expanded codes (the internal-basis values the Accumulator sums;
// tolerance 1e-5 of the sum of |terms|), for 1 to 6 heads, from block
// starts, over chunks of 256 tokens, whole and partial blocks; sums are
// added to what the accumulators hold.
func TestLanesAccumulate(t *testing.T) {
	r := rand.New(rand.NewPCG(27, 28))
	const d, n = 128, 600
	for _, q := range laneQuantizers(t, d) {
		l := NewLanes(q)
		xs := randomVectors(r, n, d, 1)
		codes := make([]byte, n*q.Bytes())
		if err := q.EncodeBatch(codes, xs); err != nil {
			t.Fatal(err)
		}
		if err := l.Append(xs); err != nil {
			t.Fatal(err)
		}
		e := expanderFor(q)
		al := e.internalLen()
		rows := make([]float32, n*al)
		e.expand(rows, al, 0, codes, n, q.Bytes(), 0)
		for _, nq := range []int{1, 3, 4, 6} {
			for _, span := range [][2]int{{0, n}, {16, 300}, {48, 22}, {592, 8}, {32, 0}} {
				t0, m := span[0], span[1]
				ws := make([][]float32, nq)
				got := make([][]float32, nq)
				for j := range ws {
					ws[j] = make([]float32, m)
					for i := range ws[j] {
						ws[j][i] = float32(r.NormFloat64())
					}
					got[j] = make([]float32, al)
					for k := range got[j] {
						got[j][k] = float32(k) // added to
					}
				}
				if err := l.Accumulate(got, ws, t0); err != nil {
					t.Fatal(err)
				}
				for j := range got {
					for k := range got[j] {
						want, abs := float64(k), float64(k)
						for i, w := range ws[j] {
							x := float64(w) * float64(rows[(t0+i)*al+k])
							want += x
							abs += math.Abs(x)
						}
						if math.Abs(float64(got[j][k])-want) > 1e-5*abs+1e-6 {
							t.Fatalf("%s, %d heads, tokens [%d, %d): head %d value %d: %g, want %g", q.Name(), nq, t0, t0+m, j, k, got[j][k], want)
						}
					}
				}
			}
		}
	}
}

// TestLaneAccKernel: each kernel level the CPU has against the pure-Go
// twin on random blocks and weights of turbo3.5's, turbo2.5's and
// turbo4's parts, for 1 to 4 heads, added to what the sums hold.
// Tolerance 1e-5 of the sum of |terms|.
func TestLaneAccKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(29, 30))
	const nb = 5
	var w [4][]float32
	for j := range w {
		w[j] = make([]float32, nb*laneBlock)
		for i := range w[j] {
			w[j][i] = float32(r.NormFloat64())
		}
	}
	for _, level := range levels() {
		for _, q := range laneKernelQuantizers(t) {
			l := NewLanes(q)
			if err := l.Append(randomVectors(r, nb*laneBlock, 128, 1)); err != nil {
				t.Fatal(err)
			}
			for nq := 1; nq <= 4; nq++ {
				for pi := range l.parts {
					p := &l.parts[pi]
					var got, want [4][]float32
					for j := range nq {
						got[j] = make([]float32, p.dim)
						want[j] = make([]float32, p.dim)
						for k := range p.dim {
							got[j][k], want[j][k] = float32(k), float32(k)
						}
					}
					wb1 := make([]float32, 4*nb*laneBlock)
					wb2 := make([]float32, 4*nb*laneBlock)
					laneAcc4At(level, &got, nq, &w, wb1, nb, p, l.data, l.block)
					laneAcc4Go(&want, nq, &w, wb2, nb, p, l.data, l.block)
					for j := range nq {
						abs := float64(p.dim)
						for b := range nb {
							for s := range laneBlock {
								abs += math.Abs(float64(wb2[(4*b+j)*laneBlock+s])) * 4
							}
						}
						for k := range got[j] {
							if math.Abs(float64(got[j][k]-want[j][k])) > 1e-5*abs {
								t.Fatalf("%s, %s, %d heads, part %d: head %d value %d: %g, twin %g", level, q.Name(), nq, pi, j, k, got[j][k], want[j][k])
							}
						}
					}
				}
			}
		}
	}
}
