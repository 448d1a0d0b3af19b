package tensor

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// amxSetup makes a product of each type of types from random weights
// (row counts rows, which leave a partial panel) over cols columns for n
// vectors, and the weights dequantized.
func amxSetup(t testing.TB, r *rand.Rand, types []DType, rows []int, cols, n int) ([]Product, []prepared, [][]float32) {
	var ps []Product
	var preps []prepared
	var mats [][]float32
	for i, ty := range types {
		w, err := Encode(ty, randomVector(r, rows[i]*cols))
		if err != nil {
			t.Fatal(err)
		}
		deq := make([]float32, rows[i]*cols)
		if err := Dequantize(ty, deq, w); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, Product{Out: make([]float32, n*rows[i]), W: w, Type: ty, Rows: rows[i]})
		preps = append(preps, prepared{rowByte: len(w) / rows[i]})
		mats = append(mats, deq)
	}
	return ps, preps, mats
}

// amxCalls are the two kinds of AMX call: Q8_0 and Q4_K products on
// Q8_0 activations in 32-element blocks, and Q6_K products on Q8_K
// activations in 64-element chunks.
var amxCalls = []struct {
	types []DType
	kind  actKind
	k     int
}{
	{[]DType{Q8_0, Q4_K}, actQ8_0, amxBlock},
	{[]DType{Q6_K, Q6_K}, actQ8_K, amxQ6Chunk},
}

// quantActs quantizes the n vectors of cols elements laid end to end in x
// as activations of kind k.
func quantActs(k actKind, x []float32, n, cols int) []*activation {
	acts := make([]*activation, n)
	for v := range acts {
		acts[v] = newActivation(k, cols)
		acts[v].set(k, x[v*cols:(v+1)*cols])
	}
	return acts
}

// actScale returns the scale of activation a that element j is quantized
// with (its block's: 32 or 256 elements).
func actScale(a *activation, j int) float32 { return a.d[j/(len(a.qs)/len(a.d))] }

// TestAMXMatMul: the AMX product (the assembly where the CPU has AMX,
// else its pure-Go twin), on 1 and 3 goroutines, against an independent
// float64 sum of the dequantized weights times the quantized activations
// (Q8_0's for Q8_0 and Q4_K, Q8_K's for Q6_K; the integer block sums are
// exact; the float scaling and summation differ: 1e-5 of Σ|w·x|).
// Partial panels and a partial group included.
func TestAMXMatMul(t *testing.T) {
	const cols, n = 512, 2*amxCols + 3
	for ci, call := range amxCalls {
		r := rand.New(rand.NewPCG(11, uint64(12+ci)))
		x := randomVector(r, n*cols)
		ps, preps, mats := amxSetup(t, r, call.types, []int{21, 37}, cols, n)
		xq := make([]float64, n*cols) // the activations as the kernel sees them
		for v, a := range quantActs(call.kind, x, n, cols) {
			for j := range cols {
				xq[v*cols+j] = float64(actScale(a, j)) * float64(a.qs[j])
			}
		}
		if got := amxServes(ps, cols, n); got != hasAMX {
			t.Errorf("amxServes(%v) = %v on a CPU with AMX %v", call.types, got, hasAMX)
		}
		for _, threads := range []int{1, 3} {
			pool := NewPool(threads)
			var scr Scratch
			scr.amxMatMul(ps, preps, cols, x, n, Options{Pool: pool})
			pool.Close()
			for i, p := range ps {
				for v := range n {
					for row := range p.Rows {
						var want, mag float64
						for j := range cols {
							wx := float64(mats[i][row*cols+j]) * xq[v*cols+j]
							want += wx
							mag += math.Abs(wx)
						}
						if got := p.Out[v*p.Rows+row]; math.Abs(float64(got)-want) > 1e-5*mag {
							t.Fatalf("threads %d %s vector %d row %d: %g, want %g", threads, p.Type, v, row, got, want)
						}
					}
				}
			}
		}
	}
}

// TestAMXTakes: the calls the AMX product takes: Q8_0 and Q4_K mixed, or
// Q6_K alone over whole super-blocks, with enough vectors.
func TestAMXTakes(t *testing.T) {
	q8, q4, q6 := Product{Type: Q8_0}, Product{Type: Q4_K}, Product{Type: Q6_K}
	for _, tc := range []struct {
		ps   []Product
		cols int
		n    int
		want bool
	}{
		{[]Product{q8, q4}, 512, gemmMinVectors, true},
		{[]Product{q8, q4}, 512, gemmMinVectors - 1, false},
		{[]Product{q8}, 96, 16, false}, // not whole pairs of blocks
		{[]Product{q6, q6}, 512, 16, true},
		{[]Product{q6, q6, q6}, 3 * QK_K, 16, true},
		{[]Product{q6}, 320, 16, false}, // not whole super-blocks
		{[]Product{q6}, 192, 16, false},
		{[]Product{q6, q8}, 512, 16, false},
		{[]Product{q6, q4}, 512, 16, false}, // Q6_K's call takes Q6_K alone
		{[]Product{q6, q6, q4}, 512, 16, false},
		{[]Product{q6, {Type: Q5_K}}, 512, 16, false},
		{[]Product{q8, q6}, 512, 16, false},
		{[]Product{q4, q6}, 512, 16, false},
		{[]Product{{Type: Q5_K}}, 512, 16, false},
		{nil, 512, 16, false},
	} {
		if got := amxTakes(tc.ps, tc.cols, tc.n); got != tc.want {
			var types []DType
			for _, p := range tc.ps {
				types = append(types, p.Type)
			}
			t.Errorf("amxTakes(%v, cols %d, n %d) = %v, want %v", types, tc.cols, tc.n, got, tc.want)
		}
	}
}

// TestUnpackQ6_KHiLo: a Q6_K panel row (the assembly where the CPU has
// it, and the pure-Go twin) against dequantQ6_K: 64·hi + lo is the
// element's w, hi in [−64, 64] (64 where (q−32)·scale = (−32)·(−128)),
// lo in [0, 63], and d·w the dequantized
// weight (to float32 rounding); the assembly's bytes and scales are the
// twin's.
func TestUnpackQ6_KHiLo(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for _, supers := range []int{1, 3} {
		cols := supers * QK_K
		w, err := Encode(Q6_K, randomVector(r, cols))
		if err != nil {
			t.Fatal(err)
		}
		deq := make([]float32, cols)
		if err := Dequantize(Q6_K, deq, w); err != nil {
			t.Fatal(err)
		}
		const m = 5 // the row's place in the panel
		q, twin := make([]byte, 2*amxRows*cols), make([]byte, 2*amxRows*cols)
		dw, dwTwin := make([]float32, supers*amxRows), make([]float32, supers*amxRows)
		unpackQ6_KHiLo(q[m*amxQ6Chunk:], dw[m:], w, w, supers)
		unpackQ6_KHiLoGo(twin[m*amxQ6Chunk:], dwTwin[m:], w, supers)
		if !slices.Equal(q, twin) || !slices.Equal(dw, dwTwin) {
			t.Fatalf("%d super-blocks: kernel and twin differ", supers)
		}
		for e := range cols {
			s, c, k := e/QK_K, e%QK_K/amxQ6Chunk, e%amxQ6Chunk
			at := s*amxQ6Super + 2*amxQ6Tile*c + m*amxQ6Chunk + k
			hi, lo := int8(q[at]), int8(q[at+amxQ6Tile])
			got := float64(dw[s*amxRows+m]) * float64(64*int32(hi)+int32(lo))
			if hi < -64 || hi > 64 || lo < 0 || lo > 63 || math.Abs(got-float64(deq[e])) > 1e-6*math.Abs(float64(deq[e]))+1e-30 {
				t.Fatalf("%d super-blocks: element %d: hi %d lo %d d %g: %g, want %g", supers, e, hi, lo, dw[s*amxRows+m], got, deq[e])
			}
		}
	}
}

// TestAMXKernel: the assembly kernel against its pure-Go twin on the same
// panels (full and partial, every type) and groups: 2e-6 of the sum of
// magnitudes (fused and unfused multiply-adds). Skips where the CPU has
// no AMX.
func TestAMXKernel(t *testing.T) {
	if !hasAMX {
		t.Skip("no AMX on this CPU (or Linux refused the tile permission): only the twin runs (TestAMXMatMul)")
	}
	const cols, n = 1024, 3 * amxCols
	for ci, call := range amxCalls {
		r := rand.New(rand.NewPCG(13, uint64(14+ci)))
		x := randomVector(r, n*cols)
		ps, preps, mats := amxSetup(t, r, call.types, []int{16, 9}, cols, n)
		var g amxActs
		g.size(n, cols, call.k)
		acts := quantActs(call.kind, x, n, cols)
		for gi := range g.groups {
			g.pack(gi, acts[gi*amxCols:(gi+1)*amxCols])
		}
		for i, p := range ps {
			var pan amxPanel
			op := pan.operand(&p, preps[i].rowByte, cols, 0, p.Rows)
			pan.out = growF(pan.out, g.groups*amxRows*amxCols)
			amxDot(&op, &g, &pan)
			got := append([]float32(nil), pan.out...)
			amxDotTwin(&op, &g, &pan)
			for k, want := range pan.out {
				m, tok := k/amxCols%amxRows, k/(amxRows*amxCols)*amxCols+k%amxCols
				mag := amxMagnitude(&op, &g, acts[tok], tok, m, mats[i], cols, p.Rows)
				if math.Abs(float64(got[k]-want)) > 2e-6*mag {
					t.Fatalf("%s: result %d (row %d, vector %d): kernel %g, twin %g", p.Type, k, m, tok, got[k], want)
				}
			}
		}
	}
}

// BenchmarkAMXMatMul times MatMul of a 2048×2048 matrix (Q8_0, Q4_K,
// Q6_K) with 256 vectors (one prefill chunk) on one goroutine, on the AMX
// kernel where the CPU has it (GODEBUG=cpu.amxtile=off measures the kernel it replaces):
// multiply-adds per second.
func BenchmarkAMXMatMul(b *testing.B) {
	const rows, cols, n = 2048, 2048, 256
	r := rand.New(rand.NewPCG(15, 16))
	x := randomVector(r, n*cols)
	for _, ty := range []DType{Q8_0, Q4_K, Q6_K} {
		b.Run(fmt.Sprintf("%s/amx=%v", ty, hasAMX), func(b *testing.B) {
			w, err := Encode(ty, randomVector(r, rows*cols))
			if err != nil {
				b.Fatal(err)
			}
			out := make([]float32, n*rows)
			opts := Options{Scratch: &Scratch{}}
			for b.Loop() {
				if err := MatMul(out, w, ty, rows, cols, x, n, opts); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(rows*cols*n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GMAC/s")
		})
	}
}

// TestAMXPrepare: the AMX product whose input rows Options.Prepare
// writes inside its region (then quantized, then packed block by block)
// calls it once per vector and gives, bit for bit, what it gives with
// the rows written beforehand; a partial group included.
func TestAMXPrepare(t *testing.T) {
	const cols, n = 512, amxCols + 5
	r := rand.New(rand.NewPCG(13, 14))
	src := randomVector(r, n*cols)
	want, preps, _ := amxSetup(t, r, amxCalls[0].types, []int{21, 37}, cols, n)
	got := make([]Product, len(want))
	for i, p := range want {
		got[i] = p
		got[i].Out = make([]float32, len(p.Out))
	}
	pool := NewPool(4)
	defer pool.Close()
	var s1, s2 Scratch
	s1.amxMatMul(want, preps, cols, append([]float32(nil), src...), n, Options{Pool: pool})
	x := make([]float32, n*cols)
	for i := range x {
		x[i] = float32(math.NaN())
	}
	calls := make([]int, n) // each v written by one goroutine
	s2.amxMatMul(got, preps, cols, x, n, Options{Pool: pool, Prepare: func(v int) {
		calls[v]++
		copy(x[v*cols:(v+1)*cols], src[v*cols:(v+1)*cols])
	}})
	for v, c := range calls {
		if c != 1 {
			t.Fatalf("Prepare(%d) called %d times", v, c)
		}
	}
	for i := range want {
		for j, w := range want[i].Out {
			if g := got[i].Out[j]; math.Float32bits(g) != math.Float32bits(w) {
				t.Fatalf("%s out %d: prepared %g, written before %g", want[i].Type, j, g, w)
			}
		}
	}
}

// TestAMXMatMulAllocs: a steady AMX product (its Scratch kept, a
// Prepare made once, as a decode step's) allocates nothing of its own:
// at most the pool's region (one). It ran three closures a product, 93
// a 16-row decode step of the embedded model where the CPU has AMX.
func TestAMXMatMulAllocs(t *testing.T) {
	const cols, n = 512, amxCols
	r := rand.New(rand.NewPCG(15, 16))
	src := randomVector(r, n*cols)
	ps, preps, _ := amxSetup(t, r, amxCalls[0].types, []int{48, 32}, cols, n)
	pool := NewPool(3)
	defer pool.Close()
	x := make([]float32, n*cols)
	prep := func(v int) { copy(x[v*cols:(v+1)*cols], src[v*cols:(v+1)*cols]) }
	var scr Scratch
	run := func() { scr.amxMatMul(ps, preps, cols, x, n, Options{Pool: pool, Scratch: &scr, Prepare: prep}) }
	run()
	if a := testing.AllocsPerRun(20, run); a > 1 {
		t.Errorf("AMX product: %.0f allocations a call, want at most 1 (the pool's region)", a)
	}
}

// TestPanelScalesQ8_0: a panel's block scales as the AMX kernel reads
// them ([block][row]), from the assembly's gathers where they run,
// against the Go loop, over every fp16 bit pattern (NaNs need only stay
// NaN: F16C quiets a signalling one) and panels of 1–16 rows, 1–64
// blocks, rows longer than their blocks.
func TestPanelScalesQ8_0(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 18))
	next := 0 // the next fp16 pattern to place
	for _, c := range []struct{ rows, blocks, extra int }{
		{16, 16, 0}, {16, 40, 0}, {16, 1, 0}, {16, 2, 34}, {16, 64, 0}, {16, 3, 5}, {15, 16, 0}, {1, 8, 0}, {7, 40, 0},
	} {
		reps := 1
		if next == 0 { // the first case places every pattern
			reps = (1<<16 + c.rows*c.blocks - 1) / (c.rows * c.blocks)
		}
		for range reps {
			rowBytes := c.blocks*q8_0Bytes + c.extra
			w := make([]byte, c.rows*rowBytes)
			for i := range w {
				w[i] = byte(r.Uint32())
			}
			for m := range c.rows {
				for b := range c.blocks {
					binary.LittleEndian.PutUint16(w[m*rowBytes+b*q8_0Bytes:], uint16(next))
					next = (next + 1) % (1 << 16)
				}
			}
			got := make([]float32, c.blocks*amxRows)
			want := make([]float32, c.blocks*amxRows)
			panelScalesQ8_0(got, w, rowBytes, c.rows, c.blocks)
			panelScalesQ8_0Go(want, w, rowBytes, c.rows, c.blocks)
			for i := range want {
				g, x := got[i], want[i]
				if math.Float32bits(g) != math.Float32bits(x) && !(g != g && x != x) {
					t.Fatalf("%d rows of %d blocks (+%d bytes): scale %d (block %d row %d) = %g (%#x), want %g (%#x)",
						c.rows, c.blocks, c.extra, i, i/amxRows, i%amxRows, g, math.Float32bits(g), x, math.Float32bits(x))
				}
			}
		}
	}
}

// BenchmarkPanelScalesQ8_0 times a 16-row panel's scales (512 and 1280
// columns, the default model's), the assembly where it runs against the
// Go loop.
func BenchmarkPanelScalesQ8_0(b *testing.B) {
	r := rand.New(rand.NewPCG(19, 20))
	for _, cols := range []int{512, 1280} {
		w, err := Encode(Q8_0, randomVector(r, amxRows*cols))
		if err != nil {
			b.Fatal(err)
		}
		blocks, rowBytes := cols/qk0, len(w)/amxRows
		dw := make([]float32, blocks*amxRows)
		for _, f := range []struct {
			name string
			f    func([]float32, []byte, int, int, int)
		}{{"go", panelScalesQ8_0Go}, {"dispatch", panelScalesQ8_0}} {
			b.Run(fmt.Sprintf("cols=%d/%s", cols, f.name), func(b *testing.B) {
				for b.Loop() {
					f.f(dw, w, rowBytes, amxRows, blocks)
				}
			})
		}
	}
}

// TestAMXPack: the tile operand of a group (full and partial) against
// its definition, for blocks of 32 (Q8_0 activations) and 16 (Q8_K's):
// vector t's quants k of block b at word row k/4, column t, byte k%4; its
// block's scale (Q8_K's repeated for each sub-block) and min term; zeros
// past the vectors.
func TestAMXPack(t *testing.T) {
	const cols = 512
	r := rand.New(rand.NewPCG(17, 18))
	for _, call := range amxCalls {
		for _, n := range []int{amxCols, 5} {
			acts := quantActs(call.kind, randomVector(r, n*cols), n, cols)
			var g amxActs
			g.size(n, cols, call.k)
			for i := range g.xb {
				g.xb[i] = 99 // stale bytes: a partial group's must become zero
			}
			g.pack(0, acts)
			for b := range g.blocks {
				xb := g.xb[b*call.k*amxCols : (b+1)*call.k*amxCols]
				for tc := range amxCols {
					want := make([]int8, call.k)
					var d, xs float32
					if tc < n {
						var sum int32
						for k := range call.k {
							want[k] = acts[tc].qs[b*call.k+k]
							sum += int32(want[k])
						}
						d = actScale(acts[tc], b*call.k)
						xs = -d * float32(sum)
					}
					for k := range call.k {
						if got := xb[(k/4)*4*amxCols+4*tc+k%4]; got != want[k] {
							t.Fatalf("k %d n %d block %d vector %d quant %d: %d, want %d", call.k, n, b, tc, k, got, want[k])
						}
					}
					if g.dx[b*amxCols+tc] != d || g.xs[b*amxCols+tc] != xs {
						t.Fatalf("k %d n %d block %d vector %d: scale %g min %g, want %g %g", call.k, n, b, tc, g.dx[b*amxCols+tc], g.xs[b*amxCols+tc], d, xs)
					}
				}
			}
		}
	}
}

// BenchmarkAMXPack times packing one group of 16 vectors of 512
// elements (a decode step's products' operand) into tile B's layout.
func BenchmarkAMXPack(b *testing.B) {
	const cols = 512
	r := rand.New(rand.NewPCG(19, 20))
	acts := quantActs(actQ8_0, randomVector(r, amxCols*cols), amxCols, cols)
	var g amxActs
	g.size(amxCols, cols, amxBlock)
	for b.Loop() {
		g.pack(0, acts)
	}
}

// TestAMXScratchShared: the AMX product and the generic one share a
// Scratch's call; one Scratch taking turns between them (the generic one
// with Prepare, on the multi-row kernel and on one vector) gives, bit for
// bit, what a fresh Scratch gives each call.
func TestAMXScratchShared(t *testing.T) {
	const cols = 512
	r := rand.New(rand.NewPCG(21, 22))
	pool := NewPool(3)
	defer pool.Close()
	var kept Scratch
	for _, tc := range []struct {
		name string
		amx  bool
		n    int
	}{{"amx", true, amxCols + 3}, {"multi-row", false, 5}, {"amx again", true, amxCols}, {"one vector", false, 1}, {"amx last", true, 2 * amxCols}} {
		src := randomVector(r, tc.n*cols)
		ps, preps, _ := amxSetup(t, r, amxCalls[0].types, []int{21, 37}, cols, tc.n)
		run := func(scr *Scratch) [][]float32 {
			x := make([]float32, len(src))
			opts := Options{Pool: pool, Scratch: scr, Prepare: func(v int) { copy(x[v*cols:(v+1)*cols], src[v*cols:(v+1)*cols]) }}
			if tc.amx {
				scr.amxMatMul(ps, preps, cols, x, tc.n, opts)
			} else if err := matMulShared(ps, cols, x, tc.n, opts, 1); err != nil {
				t.Fatal(err)
			}
			var outs [][]float32
			for i := range ps {
				outs = append(outs, slices.Clone(ps[i].Out))
				clear(ps[i].Out)
			}
			return outs
		}
		got, want := run(&kept), run(&Scratch{})
		for i := range want {
			for j := range want[i] {
				if math.Float32bits(got[i][j]) != math.Float32bits(want[i][j]) {
					t.Fatalf("%s: %s out %d: kept Scratch %g, fresh %g", tc.name, ps[i].Type, j, got[i][j], want[i][j])
				}
			}
		}
	}
}

// amxMagnitude bounds the rounding of result (row m, vector tok) of an
// AMX kernel: Σ|scaled block sums| over op's blocks, or for a Q6_K panel
// (whose blocks are not op's) Σ|w·x| over the dequantized row w (zero
// rows beyond the product's rows).
func amxMagnitude(op *amxOperand, g *amxActs, a *activation, tok, m int, w []float32, cols, rows int) float64 {
	mag := 1e-30
	if op.hilo {
		for e := range cols * min(1, rows-m) {
			mag += math.Abs(float64(w[m*cols+e]) * float64(actScale(a, e)) * float64(a.qs[e]))
		}
		return mag
	}
	for b := range g.blocks {
		var s float64
		for e := range amxBlock {
			wv := float64(op.a[m*op.stride+b*op.step+e])
			if op.signed {
				wv = float64(int8(op.a[m*op.stride+b*op.step+e]))
			}
			s += math.Abs(wv * float64(a.qs[b*amxBlock+e]))
		}
		mag += s * math.Abs(float64(op.dw[b*amxRows+m])*float64(actScale(a, b*amxBlock)))
		if op.mw != nil {
			mag += math.Abs(float64(op.mw[b*amxRows+m]) * float64(g.xs[(tok/amxCols*g.blocks+b)*amxCols+tok%amxCols]))
		}
	}
	return mag
}
