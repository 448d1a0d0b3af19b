package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestBenchKVErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--kv", "f16,zz"}, "unknown KV format"},
		{[]string{"--kv", "qjl"}, "keys only"}, // Spec.Check against the model's shape
		{[]string{"--ctx", "0"}, "--ctx"},
		{[]string{"--ctx", "1k"}, "--ctx"},
		{[]string{"--ctx", ""}, "--ctx: no context"},
		{[]string{"--decode-ctx", "1"}, "--decode-ctx"},
		{[]string{"--iters", "0"}, "--iters"},
		{[]string{"--n", "1"}, "--n"},
		{[]string{"--record", "1"}, "--record"},
		{[]string{"--layer", "99"}, "--layer"},
		{[]string{"--format", "csv"}, "--format"},
		{[]string{"--llama", "--llama-kv", "q9"}, "--llama-kv"},
		{[]string{"--llama", "--decode-ctx", ""}, "--decode-ctx"},
		{[]string{"--llama", "--peer", "no/such.mjs"}, "--peer"},
		{[]string{"stray"}, "unexpected arguments"},
	} {
		code, _, errOut := runCmd(append([]string{"bench", "kv"}, tt.args...)...)
		if code != 2 || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: code %d, stderr %q; want 2, ∋ %q", tt.args, code, errOut, tt.want)
		}
	}
}

// TestBenchKVJSON runs the benchmark on the embedded model at tiny
// contexts: a row per format and context, f16 first and its own
// reference, positive times, compressed caches smaller than f16 once
// most of their tokens have left the 64-token window, and a decode row
// per format and context.
func TestBenchKVJSON(t *testing.T) {
	plotPath := filepath.Join(t.TempDir(), "attn.svg")
	code, out, errOut := runCmd("bench", "kv", "--kv", "q8_0,turbo3.5", "--ctx", "256,128", "--decode-ctx", "64,128",
		"--iters", "2", "--n", "4", "--record", "128", "--format", "json", "--plot", plotPath)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep kvBenchReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output is not the report: %v\n%s", err, out)
	}
	if rep.Shape.HeadDim != 128 || rep.Layers != 6 || rep.Recorded != 128 || rep.Base != 64 {
		t.Errorf("header %+v", rep)
	}
	formats := []string{"f16", "q8_0", "turbo3.5"}
	if len(rep.Attention) != 2*len(formats) {
		t.Fatalf("%d attention rows, want %d", len(rep.Attention), 2*len(formats))
	}
	f16Bytes := map[int]int{}
	for i, r := range rep.Attention {
		wantCtx := []int{128, 256}[i/len(formats)]
		if r.Format != formats[i%len(formats)] || r.Context != wantCtx || r.Micros <= 0 || r.VsF16 <= 0 || r.Bytes <= 0 {
			t.Errorf("attention row %d: %+v", i, r)
		}
		if r.Format == "f16" {
			f16Bytes[r.Context] = r.Bytes
			if r.VsF16 != 1 {
				t.Errorf("f16 against itself: %v", r.VsF16)
			}
		} else if r.Context == 256 && r.Bytes >= f16Bytes[256] {
			t.Errorf("%s holds %d bytes at 256 tokens, f16 %d", r.Format, r.Bytes, f16Bytes[256])
		}
	}
	if len(rep.Decode) != 2*len(formats) {
		t.Fatalf("%d decode rows, want %d", len(rep.Decode), 2*len(formats))
	}
	for _, r := range rep.Decode {
		if r.Engine != "turbomem" || !slices.Contains(formats, r.Format) || r.DecodeTPS <= 0 || r.DecodeTPSMean <= 0 || r.PromptTPS <= 0 {
			t.Errorf("decode row %+v", r)
		}
	}
	if len(rep.Summary) == 0 || rep.Summary[0].What != "turbo3.5 vs our f16" || rep.Summary[0].Context != 256 {
		t.Errorf("summary %+v", rep.Summary)
	}
	if b, err := os.ReadFile(plotPath); err != nil || !bytes.Contains(b, []byte("<svg")) || !bytes.Contains(b, []byte("turbo3.5")) {
		t.Errorf("plot not written: %v", err)
	}
}

// TestBenchKVTable checks the table output, one line per format in the
// attention table and no decode table without decode contexts, and the
// JSON written beside it.
func TestBenchKVTable(t *testing.T) {
	jsonPath := filepath.Join(t.TempDir(), "kv.json")
	code, out, errOut := runCmd("bench", "kv", "--kv", "turbo4", "--ctx", "96", "--decode-ctx", "", "--iters", "1", "--record", "96", "--json", jsonPath)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep kvBenchReport
	if b, err := os.ReadFile(jsonPath); err != nil || json.Unmarshal(b, &rep) != nil || len(rep.Attention) != 2 {
		t.Errorf("--json file: %v, %+v", err, rep)
	}
	for _, want := range []string{"96 µs", "median of 1 calls"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	var rows []string
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) == 3 && strings.HasSuffix(f[2], "x") {
			rows = append(rows, f[0])
		}
	}
	if !slices.Equal(rows, []string{"f16", "turbo4"}) {
		t.Errorf("attention rows %v, want f16 and turbo4:\n%s", rows, out)
	}
	if strings.Contains(out, "Decode") {
		t.Errorf("decode table printed with --decode-ctx \"\":\n%s", out)
	}
}

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
	rows := []kvDecodeRow{
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
		if got := repeatIDs(tt.ids, tt.n); !slices.Equal(got, tt.want) {
			t.Errorf("repeatIDs(%v, %d) = %v, want %v", tt.ids, tt.n, got, tt.want)
		}
	}
}
