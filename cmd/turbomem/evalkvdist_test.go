package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEvalKVDist checks that bad command lines fail before any work (exit
// 2) and runs a short window of the embedded model: one row per layer and
// format, then one mean per format.
func TestEvalKVDist(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"eval", "kvdist", "--kv", "f16,zz"}, "unknown KV format"},
		{[]string{"eval", "kvdist", "--kv", "f16:qjl"}, "keys only"},
		{[]string{"eval", "kvdist", "--kv-window", "-2"}, "--kv-window"},
		{[]string{"eval", "kvdist", "--every", "0"}, "--every"},
		{[]string{"eval", "kvdist", "--format", "csv"}, "--format"},
		{[]string{"eval", "kvdist", "-m", "missing.gguf", "--kv", "q9"}, "unknown KV format"},
	} {
		if code, _, errOut := runCmd(tt.args...); code != 2 || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: code %d, %q", tt.args, code, errOut)
		}
	}
	plotPath := filepath.Join(t.TempDir(), "kvdist.svg")
	code, out, errOut := runCmd("eval", "kvdist", "--kv", "f32,turbo4,q8_0:turbo3", "--ctx", "128", "--every", "16", "--plot", plotPath, "--format", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rows []struct {
		Layer      int     `json:"layer"`
		Format     string  `json:"format"`
		AttnReal   float64 `json:"err_real_attn"`
		AttnRandom float64 `json:"err_random_attn"`
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	const layers = 6 // the embedded model's
	if len(rows) != (layers+1)*3 {
		t.Fatalf("%d rows, want %d", len(rows), (layers+1)*3)
	}
	for i, r := range rows {
		wantLayer, wantFormat := i/3, []string{"f32", "turbo4", "q8_0/turbo3"}[i%3]
		if i >= 3*layers {
			wantLayer = -1
		}
		if r.Layer != wantLayer || r.Format != wantFormat {
			t.Errorf("row %d: layer %d format %s, want %d %s", i, r.Layer, r.Format, wantLayer, wantFormat)
		}
		if (r.Format == "f32") != (r.AttnReal == 0 && r.AttnRandom == 0) {
			t.Errorf("row %d: %+v", i, r)
		}
	}
	svg, err := os.ReadFile(plotPath)
	if err != nil || !strings.Contains(string(svg), "<svg") || !strings.Contains(string(svg), "turbo4") {
		t.Errorf("plot: %v", err)
	}
	code, out, errOut = runCmd("eval", "kvdist", "--kv", "turbo3", "--ctx", "96", "--every", "16")
	if code != 0 || !strings.Contains(out, "mean  turbo3") || strings.Count(out, "turbo3") != layers+1 {
		t.Errorf("table: exit %d %s\n%s", code, errOut, out)
	}
	// --structure: one row per layer and KV head (the embedded model has 1).
	code, out, errOut = runCmd("eval", "kvdist", "--structure", "--ctx", "96", "--every", "16", "--format", "json")
	var st []struct {
		Layer        int     `json:"layer"`
		PreMeanShare float64 `json:"key_premean_share"`
		MeanShare    float64 `json:"key_mean_share"`
	}
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || len(st) != layers {
		t.Fatalf("--structure: exit %d %s, %d rows (%v)\n%s", code, errOut, len(st), err, out)
	}
	for i, r := range st {
		if r.Layer != i || !(r.PreMeanShare > 0 && r.PreMeanShare < 1) || !(r.MeanShare > 0 && r.MeanShare < 1) {
			t.Errorf("--structure row %d: %+v", i, r)
		}
	}
}
