package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCmd(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestUsageAndErrors(t *testing.T) {
	tests := []struct {
		args     []string
		code     int
		inStdout string
		inStderr string
	}{
		{nil, 2, "Commands:", ""},
		{[]string{"--help"}, 0, "bench", ""},
		{[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{[]string{"bench"}, 2, "", "bench needs a subject"},
		{[]string{"bench", "nope"}, 2, "", `unknown subject "nope"`},
		{[]string{"bench", "quant", "--help"}, 0, "", "-bits"},
		{[]string{"bench", "quant", "--no-such-flag"}, 2, "", "flag provided but not defined"},
		{[]string{"bench", "quant", "--d", "x"}, 2, "", "invalid value"},
		{[]string{"bench", "quant", "--d", "3"}, 2, "", "out of range"},
		{[]string{"bench", "quant", "--bits", "2.7"}, 2, "", "rate 2.7"},
		{[]string{"bench", "quant", "--format", "xml"}, 2, "", "--format"},
		{[]string{"bench", "quant", "stray"}, 2, "", "unexpected arguments"},
		{[]string{"version"}, 0, "turbomem", ""},
	}
	for _, tt := range tests {
		code, out, errOut := runCmd(tt.args...)
		if code != tt.code || !strings.Contains(out, tt.inStdout) || !strings.Contains(errOut, tt.inStderr) {
			t.Errorf("%v: code %d, stdout %q, stderr %q; want code %d, stdout ∋ %q, stderr ∋ %q",
				tt.args, code, out, errOut, tt.code, tt.inStdout, tt.inStderr)
		}
	}
}

// TestBenchQuantJSON runs the real command and checks the JSON it prints:
// the keys the issue names, and values that agree with the published
// distortion of TurboQuant_mse at 2 bits (ALGORITHMS.md §3, d = 64:
// 0.1145; a few percent at n = 1500).
func TestBenchQuantJSON(t *testing.T) {
	plotPath := filepath.Join(t.TempDir(), "q.svg")
	code, out, errOut := runCmd("bench", "quant", "--d", "64", "--n", "1500", "--bits", "2,2.5", "--format", "json", "--plot", plotPath)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("output is not a JSON array: %v\n%s", err, out)
	}
	if len(rows) != 4 {
		t.Fatalf("%d rows, want 4 (turbo-mse, +proj, prod at 2 bits; split at 2.5)", len(rows))
	}
	for _, key := range []string{"method", "bits", "mse", "ip_distortion_d", "bias", "bound_ratio", "encode_ns", "score_ns"} {
		if _, ok := rows[0][key]; !ok {
			t.Errorf("key %q missing", key)
		}
	}
	if rows[0]["method"] != "turbo-mse/2" {
		t.Fatalf("first row %v", rows[0]["method"])
	}
	if mse := rows[0]["mse"].(float64); mse < 0.108 || mse > 0.121 {
		t.Errorf("turbo-mse/2 MSE at d=64 = %g, want ≈ 0.1145", mse)
	}
	svg, err := os.ReadFile(plotPath)
	if err != nil || !bytes.Contains(svg, []byte("<svg")) || !bytes.Contains(svg, []byte("bound 4^-b")) {
		t.Errorf("plot not written: %v", err)
	}
}
