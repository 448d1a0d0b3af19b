package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/turbomem/turbomem/half"
)

// TestVecKernels compares the exported vector kernels (assembly where
// available) with float64 sums of the same values, for lengths around the
// SIMD block sizes.
func TestVecKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 5))
	for _, n := range []int{1, 15, 16, 17, 64, 100, 128, 257} {
		a := make([]float32, n)
		b := make([]float32, n)
		h := make([]uint16, n)
		for i := range a {
			a[i] = float32(r.NormFloat64())
			b[i] = float32(r.NormFloat64())
			h[i] = uint16(half.F32ToF16(float32(r.NormFloat64())))
		}
		var want32, want16, mag float64
		for i := range a {
			want32 += float64(a[i]) * float64(b[i])
			want16 += float64(a[i]) * float64(half.F16ToF32(half.F16(h[i])))
			mag += math.Abs(float64(a[i]) * 3)
		}
		// float32 accumulation of n terms: a few ulps of Σ|terms|.
		if got := DotF32(a, b); math.Abs(float64(got)-want32) > 1e-6*mag {
			t.Errorf("n=%d DotF32 = %g, want %g", n, got, want32)
		}
		if got := DotF16(h, a); math.Abs(float64(got)-want16) > 1e-6*mag {
			t.Errorf("n=%d DotF16 = %g, want %g", n, got, want16)
		}
		y32 := append([]float32(nil), b...)
		y16 := append([]float32(nil), b...)
		AxpyF32(y32, 0.75, a)
		AxpyF16(y16, -1.5, h)
		for i := range y32 {
			w32 := float64(b[i]) + 0.75*float64(a[i])
			w16 := float64(b[i]) - 1.5*float64(half.F16ToF32(half.F16(h[i])))
			if math.Abs(float64(y32[i])-w32) > 1e-6*(1+math.Abs(w32)) || math.Abs(float64(y16[i])-w16) > 1e-6*(1+math.Abs(w16)) {
				t.Fatalf("n=%d axpy[%d] = %g, %g; want %g, %g", n, i, y32[i], y16[i], w32, w16)
			}
		}
	}
}

// TestFromF16: FromF16 (assembly where available) gives half.F16ToF32 of
// every fp16 bit pattern, bit for bit (NaNs need only stay NaN), at
// lengths around its blocks of 8 and 32, from any offset.
func TestFromF16(t *testing.T) {
	all := make([]uint16, 1<<16)
	for i := range all {
		all[i] = uint16(i)
	}
	for _, n := range []int{1 << 16, 1, 7, 8, 9, 31, 32, 33, 40, 128, 300} {
		for _, off := range []int{0, 1, 3} {
			if off+n > len(all) {
				continue
			}
			src := all[off : off+n]
			dst := make([]float32, n+1)
			dst[n] = 42 // past the end: untouched
			FromF16(dst[:n], src)
			for i, h := range src {
				g, w := dst[i], half.F16ToF32(half.F16(h))
				if math.Float32bits(g) != math.Float32bits(w) && !(g != g && w != w) {
					t.Fatalf("n=%d off=%d: FromF16(%#04x) = %g (%#x), want %g (%#x)", n, off, h, g, math.Float32bits(g), w, math.Float32bits(w))
				}
			}
			if dst[n] != 42 {
				t.Fatalf("n=%d off=%d: wrote past the end", n, off)
			}
		}
	}
}

// TestToF16: ToF16 gives half.F32ToF16 bit for bit (NaNs: a NaN), at
// lengths around the kernel's 8 and 32, on every fp16 value, the
// float32 values either side of every midpoint between two fp16 values
// and the midpoints themselves (ties), the subnormals, beyond the range,
// infinities and NaNs, and float32 patterns at a stride over all of them.
func TestToF16(t *testing.T) {
	var src []float32
	for h := range 1 << 16 {
		f := half.F16ToF32(half.F16(h))
		src = append(src, f)
		if h&0x7c00 == 0x7c00 || h&0x3ff == 0x3ff {
			continue
		}
		mid := (float64(f) + float64(half.F16ToF32(half.F16(h+1)))) / 2
		m := float32(mid)
		src = append(src, m, math.Nextafter32(m, float32(math.Inf(1))), math.Nextafter32(m, float32(math.Inf(-1))))
	}
	for b := uint64(0); b < 1<<32; b += 65521 {
		src = append(src, math.Float32frombits(uint32(b)))
	}
	src = append(src, 65504, 65519.99, 65520, 1e6, float32(math.Inf(-1)), float32(math.NaN()))
	for _, n := range []int{len(src), 1, 7, 8, 9, 31, 32, 33, 40, 300} {
		for _, off := range []int{0, 1, 3} {
			if off+n > len(src) {
				continue
			}
			in := src[off : off+n]
			dst := make([]uint16, n+1)
			dst[n] = 42 // past the end: untouched
			ToF16(dst[:n], in)
			for i, f := range in {
				g, w := dst[i], uint16(half.F32ToF16(f))
				nan := func(h uint16) bool { return h&0x7c00 == 0x7c00 && h&0x3ff != 0 }
				if g != w && !(nan(g) && nan(w)) {
					t.Fatalf("n=%d off=%d: ToF16(%g, %#x) = %#04x, want %#04x", n, off, f, math.Float32bits(f), g, w)
				}
			}
			if dst[n] != 42 {
				t.Fatalf("n=%d off=%d: wrote past the end", n, off)
			}
		}
	}
}

// TestRowKernels compares the batched row kernels with float64 sums.
func TestRowKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 7))
	for _, d := range []int{32, 64, 100, 128} {
		for _, n := range []int{1, 3, 50} {
			q := make([]float32, d)
			rows32 := make([]float32, n*d)
			rows16 := make([]uint16, n*d)
			w := make([]float32, n)
			for i := range q {
				q[i] = float32(r.NormFloat64())
			}
			for i := range rows32 {
				rows32[i] = float32(r.NormFloat64())
				rows16[i] = uint16(half.F32ToF16(rows32[i]))
			}
			for i := range w {
				w[i] = float32(r.Float64())
			}
			d32 := make([]float32, n)
			d16 := make([]float32, n)
			DotRowsF32(d32, q, rows32)
			DotRowsF16(d16, q, rows16)
			for tt := range n {
				var w32, w16, mag float64
				for i := range d {
					w32 += float64(q[i]) * float64(rows32[tt*d+i])
					w16 += float64(q[i]) * float64(half.F16ToF32(half.F16(rows16[tt*d+i])))
					mag += math.Abs(float64(q[i]) * 4)
				}
				if math.Abs(float64(d32[tt])-w32) > 1e-6*mag || math.Abs(float64(d16[tt])-w16) > 1e-6*mag {
					t.Fatalf("d=%d n=%d row %d: %g, %g; want %g, %g", d, n, tt, d32[tt], d16[tt], w32, w16)
				}
			}
			a32 := make([]float32, d)
			a16 := make([]float32, d)
			WeightedSumF32(a32, w, rows32)
			WeightedSumF16(a16, w, rows16)
			for i := range d {
				var w32, w16 float64
				for tt := range n {
					w32 += float64(w[tt]) * float64(rows32[tt*d+i])
					w16 += float64(w[tt]) * float64(half.F16ToF32(half.F16(rows16[tt*d+i])))
				}
				if math.Abs(float64(a32[i])-w32) > 1e-5*float64(n) || math.Abs(float64(a16[i])-w16) > 1e-5*float64(n) {
					t.Fatalf("d=%d n=%d col %d: %g, %g; want %g, %g", d, n, i, a32[i], a16[i], w32, w16)
				}
			}
		}
	}
}

// TestGroupF16Kernels: the four-query kernels give, bit for bit, what the
// one-query kernels (assembly where the CPU has it) give for each query,
// and their Go twins likewise, at row counts with and without tails.
func TestGroupF16Kernels(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	// d: one 32-column chunk, 64-column chunks, both; n: a single row, an
	// odd row after pairs, blocks of 32 rows and a part of one
	for _, d := range []int{32, 64, 96, 128} {
		for _, n := range []int{1, 2, 7, 33, 70} {
			q := randomVector(r, 4*d)
			vals := randomVector(r, n*d)
			rows := make([]uint16, n*d)
			for i, v := range vals {
				rows[i] = uint16(half.F32ToF16(v))
			}
			stride := n + 7 // the four queries' scores apart, with a gap
			got := make([]float32, 3*stride+n)
			twin := make([]float32, len(got))
			DotRowsF16x4(got, stride, n, q, rows)
			dotRowsF16x4Go(twin, stride, n, q, rows)
			for j := range 4 {
				want := make([]float32, n)
				DotRowsF16(want, q[j*d:(j+1)*d], rows)
				for i := range n {
					if got[j*stride+i] != want[i] || twin[j*stride+i] != want[i] {
						t.Fatalf("d=%d n=%d query %d row %d: %g (twin %g), one query %g", d, n, j, i, got[j*stride+i], twin[j*stride+i], want[i])
					}
				}
			}
			w := randomVector(r, 3*stride+n)
			var acc, accTwin [4][]float32
			for j := range 4 {
				acc[j] = randomVector(r, d)
				accTwin[j] = append([]float32(nil), acc[j]...)
			}
			want := make([][]float32, 4)
			for j := range 4 {
				want[j] = append([]float32(nil), acc[j]...)
				WeightedSumF16(want[j], w[j*stride:j*stride+n], rows)
			}
			WeightedSumF16x4(&acc, w, stride, n, rows)
			weightedSumF16x4Go(&accTwin, w, stride, n, rows)
			for j := range 4 {
				for c := range d {
					if acc[j][c] != want[j][c] || accTwin[j][c] != want[j][c] {
						t.Fatalf("d=%d n=%d query %d element %d: %g (twin %g), one query %g", d, n, j, c, acc[j][c], accTwin[j][c], want[j][c])
					}
				}
			}
		}
	}
}

// BenchmarkGroupF16Kernels times the four-query fp16 attention kernels
// over the 16k keys or values of one KV head of 128 (the embedded model's
// layer at 16k tokens), and their Go twins; ns/row is per position.
func BenchmarkGroupF16Kernels(b *testing.B) {
	const d, n = 128, 16384
	r := rand.New(rand.NewPCG(3, 4))
	q := randomVector(r, 4*d)
	rows := make([]uint16, n*d)
	for i := range rows {
		rows[i] = uint16(half.F32ToF16(float32(r.NormFloat64())))
	}
	scores := make([]float32, 4*n)
	var acc [4][]float32
	for j := range acc {
		acc[j] = make([]float32, d)
	}
	for _, k := range []struct {
		name string
		run  func()
	}{
		{"dot", func() { DotRowsF16x4(scores, n, n, q, rows) }},
		{"dot/go", func() { dotRowsF16x4Go(scores, n, n, q, rows) }},
		{"sum", func() { WeightedSumF16x4(&acc, scores, n, n, rows) }},
		{"sum/go", func() { weightedSumF16x4Go(&acc, scores, n, n, rows) }},
	} {
		b.Run(k.name, func(b *testing.B) {
			for b.Loop() {
				k.run()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/row")
		})
	}
}

// BenchmarkFromF16 converts a head's row (128 values) and a 64-token
// window of them (8192), FromF16 against half's per-value conversion
// (what a compressed cache used before).
func BenchmarkFromF16(b *testing.B) {
	for _, n := range []int{128, 8192} {
		src := make([]uint16, n)
		for i := range src {
			src[i] = uint16(half.F32ToF16(float32(i%97) / 7))
		}
		dst := make([]float32, n)
		b.Run(fmt.Sprintf("n=%d/FromF16", n), func(b *testing.B) {
			for b.Loop() {
				FromF16(dst, src)
			}
		})
		b.Run(fmt.Sprintf("n=%d/half", n), func(b *testing.B) {
			for b.Loop() {
				for i, v := range src {
					dst[i] = half.F16ToF32(half.F16(v))
				}
			}
		})
	}
}
