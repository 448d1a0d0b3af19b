package bench

import (
	"math"
	"slices"
	"testing"
)

// TestAttnEstimate checks the decode-time attention estimate on exact
// times t(N) = a + b·N: it returns b·N per layer.
func TestAttnEstimate(t *testing.T) {
	for _, tt := range []struct {
		a, b        float64 // s, s per token of context
		n, base, ly int
	}{
		{a: 3e-3, b: 50e-9, n: 16384, base: 1024, ly: 6},
		{a: 1e-2, b: 1e-7, n: 4096, base: 128, ly: 32},
		{a: 2e-3, b: 0, n: 2048, base: 1024, ly: 1},
	} {
		got := attnEstimate(1/(tt.a+tt.b*float64(tt.n)), 1/(tt.a+tt.b*float64(tt.base)), tt.n, tt.base, tt.ly)
		want := tt.b * float64(tt.n) / float64(tt.ly) * 1e6
		if math.Abs(got-want) > 1e-9*max(1, want) { // float64 rounding of reciprocals
			t.Errorf("%+v: %g µs, want %g", tt, got, want)
		}
	}
}

// TestEstimateDecodeAttention checks the ratios on made-up decode rows:
// our turbo format at half the attention time of our f16 and a third of
// llama.cpp's.
func TestEstimateDecodeAttention(t *testing.T) {
	const layers = 2
	tps := func(attnUs float64) float64 { return 1 / (1e-3 + layers*attnUs*1e-6) } // 1 ms besides attention
	rows := []DecodeRow{
		{Engine: "turbomem", Format: "f16", Context: 100, DecodeTPS: tps(0)},
		{Engine: "turbomem", Format: "turbo3.5", Context: 100, DecodeTPS: tps(0)},
		{Engine: "llama.cpp", Format: "f16", Context: 100, DecodeTPS: tps(0)},
		{Engine: "turbomem", Format: "f16", Context: 1100, DecodeTPS: tps(200)},
		{Engine: "turbomem", Format: "turbo3.5", Context: 1100, DecodeTPS: tps(100)},
		{Engine: "llama.cpp", Format: "f16", Context: 1100, DecodeTPS: tps(300)},
	}
	// Attention at the base context counts as 0 here, so the estimate
	// is the made-up time scaled by N/(N − base).
	estimateDecodeAttention(rows, 100, layers)
	scale := 1100.0 / 1000
	for _, tt := range []struct {
		row                int
		attn, vsF16, llama float64
	}{
		{3, 200 * scale, 1, 1.5},
		{4, 100 * scale, 2, 3},
		{5, 300 * scale, 2.0 / 3, 1},
	} {
		r := rows[tt.row]
		if math.Abs(r.AttnMicros-tt.attn) > 1e-6 || math.Abs(r.VsF16-tt.vsF16) > 1e-9 || math.Abs(r.VsLlamaF16-tt.llama) > 1e-9 {
			t.Errorf("row %d: %+v; want attn %g, ×f16 %g, ×llama %g", tt.row, r, tt.attn, tt.vsF16, tt.llama)
		}
	}
	if rows[0].AttnMicros != 0 || rows[0].VsF16 != 0 {
		t.Errorf("base row %+v", rows[0])
	}
}

func TestRepeatIDs(t *testing.T) {
	for _, tt := range []struct {
		ids  []int32
		n    int
		want []int32
	}{
		{[]int32{1, 2, 3}, 2, []int32{1, 2}},
		{[]int32{1, 2, 3}, 7, []int32{1, 2, 3, 1, 2, 3, 1}},
		{[]int32{5}, 3, []int32{5, 5, 5}},
	} {
		if got := RepeatIDs(tt.ids, tt.n); !slices.Equal(got, tt.want) {
			t.Errorf("RepeatIDs(%v, %d) = %v, want %v", tt.ids, tt.n, got, tt.want)
		}
	}
}
