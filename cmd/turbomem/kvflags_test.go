package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/kvcache"
)

// TestKVAutoFlags: wrong combinations are refused before any work.
func TestKVAutoFlags(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.json")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "hi", "--kv", "auto"}, "needs --kv-bits"},
		{[]string{"run", "hi", "--kv-bits", "3"}, "--kv-bits needs --kv auto"},
		{[]string{"run", "hi", "--kv", "auto", "--kv-bits", "3", "--kv-k", "q8_0"}, "drop --kv FORMAT"},
		{[]string{"run", "hi", "--kv-plan", missing}, "does not exist"},
		{[]string{"run", "hi", "--kv", "auto", "--kv-bits", "40"}, "out of range"},
		{[]string{"run", "hi", "--kv", "auto", "--kv-bits", "3", "--kv-candidates", "turbo2.5,zz"}, "unknown KV format"},
		{[]string{"eval", "kv", "--kv", "auto:x"}, "want auto:B"},
		{[]string{"eval", "kv", "--kv", "auto:3", "--chunks", "100"}, "calibration windows"},
		{[]string{"run", "hi", "--kv", "auto", "--kv-bits", "3", "--kv-calib-ctx", "200"}, "twice the fp16 window"},
	} {
		if code, _, errOut := runCmd(tt.args...); code != 2 || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: code %d, stderr %q; want 2, ∋ %q", tt.args, code, errOut, tt.want)
		}
	}
}

// TestKVCalibFile: a tcq run measures its calibration once and saves it;
// the next run reads it and measures nothing; a file of other
// calibration text is refused, an unwritable path before any work.
func TestKVCalibFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "cov.bin")
	args := []string{"run", "The kernel", "-n", "2", "--temp", "0", "--kv", "tcq3.5", "--kv-calib-file", file, "--kv-calib-ctx", "512", "--kv-calib-chunks", "1"}
	code, out1, errOut := runCmd(args...)
	if code != 0 || !strings.Contains(errOut, "measuring K/V covariances for tcq3.5") || !strings.Contains(errOut, "saved to "+file) {
		t.Fatalf("measuring: code %d, %s", code, errOut)
	}
	code, out2, errOut := runCmd(args...)
	if code != 0 || strings.Contains(errOut, "measuring") || !strings.Contains(errOut, "read from "+file) || out2 != out1 {
		t.Fatalf("reusing: code %d, %q against %q, %s", code, out2, out1, errOut)
	}
	if code, _, errOut := runCmd(append(args, "--kv-calib-ctx", "600")...); code != 2 || !strings.Contains(errOut, "another model or calibration") {
		t.Errorf("other calibration: code %d, %s", code, errOut)
	}
	bad := filepath.Join(t.TempDir(), "absent", "cov.bin")
	if code, _, errOut := runCmd("run", "hi", "--kv", "tcq3.5", "--kv-calib-file", bad); code != 2 || strings.Contains(errOut, "measuring") {
		t.Errorf("unwritable: code %d, %s", code, errOut)
	}
}

// TestKVAutoPlan measures a plan on the embedded model, saves it, uses it
// again without measuring, re-allocates it for another budget, and
// refuses it for another model.
func TestKVAutoPlan(t *testing.T) {
	plan := filepath.Join(t.TempDir(), "plan.json")
	calib := "96"
	if testing.Short() { // the pure-Go CI pass, where the model is slow
		calib = "48"
	}
	auto := []string{"run", "The kernel", "-n", "4", "--temp", "0", "--kv", "auto", "--kv-plan", plan,
		"--kv-candidates", "turbo2.5,turbo3.5", "--kv-calib-ctx", calib, "--kv-calib-chunks", "1", "--kv-window", "8"}
	code, _, errOut := runCmd(append(auto, "--kv-bits", "3")...)
	if code != 0 || !strings.Contains(errOut, "measuring KV sensitivity") || !strings.Contains(errOut, "KV plan auto:3: 3.000 bits") {
		t.Fatalf("measuring: code %d, %s", code, errOut)
	}
	code, _, errOut = runCmd(append(auto, "--kv-bits", "3")...)
	if code != 0 || strings.Contains(errOut, "measuring") || !strings.Contains(errOut, "KV cache") {
		t.Fatalf("reusing: code %d, %s", code, errOut)
	}
	code, _, errOut = runCmd(append(auto, "--kv-bits", "16")...)
	if code != 0 || strings.Contains(errOut, "measuring") || !strings.Contains(errOut, "auto:16: 16.000 bits") {
		t.Fatalf("another budget: code %d, %s", code, errOut)
	}
	// The same plan with another model's hash (written through the
	// package, so that its checksum is right).
	r, err := os.Open(plan)
	if err != nil {
		t.Fatal(err)
	}
	p, err := kvcache.ReadPlan(r)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	p.Model = strings.Repeat("0", 64)
	other := filepath.Join(t.TempDir(), "other.json")
	if err := eval.SaveKVPlan(other, p); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCmd("run", "hi", "--kv-plan", other); code != 2 || !strings.Contains(errOut, "another model") {
		t.Errorf("plan of another model: code %d, %s", code, errOut)
	}
}

// TestInspectKV: the memory plan of inspect follows --kv, with the bytes
// kvcache.Spec.BytesAt gives, and --kv auto reads a saved plan only.
func TestInspectKV(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := os.WriteFile(path, defaultmodel.GGUF(), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		kv   []string
		want string
	}{
		{[]string{"--kv", "f16"}, "KV cache (f16, 3072 B/token, 1.00x smaller than f16) 48.00 MiB"},
		// 6 layers × 1 head × (16320 tokens × 2 × 56 B + 64 × 512 B + 2 × 64 B of outlier lists + 512 B of key mean) / 16384
		{[]string{"--kv", "turbo3.5"}, "KV cache (turbo3.5, 682 B/token, 4.51x smaller than f16)"},
		{[]string{"--kv-k", "q8_0", "--kv-v", "turbo2.5"}, "KV cache (q8_0/turbo2.5,"},
	} {
		code, out, errOut := runCmd(append([]string{"inspect", path, "--tensors=false", "--ctx", "16384"}, tt.kv...)...)
		if code != 0 || !strings.Contains(out, tt.want) {
			t.Errorf("%v: code %d, %s%s; want ∋ %q", tt.kv, code, out, errOut, tt.want)
		}
	}
	if code, _, errOut := runCmd("inspect", path, "--kv", "auto", "--kv-bits", "3"); code != 2 || !strings.Contains(errOut, "no saved plan") {
		t.Errorf("auto without a plan: code %d, %s", code, errOut)
	}
	if code, _, errOut := runCmd("inspect", path, "--kv", "turbo7"); code != 2 || !strings.Contains(errOut, "unknown KV format") {
		t.Errorf("bad format: code %d, %s", code, errOut)
	}
}

// TestEvalReportsKVMemory: eval ppl states the KV bytes at its window
// length. turbo3.5 at 256 tokens: per layer, 192 compressed tokens × 2 ×
// 56 B + 64 window tokens × 512 B + 2 × 64 B of outlier lists + the keys'
// mean, 128 × 4 B, 6 layers. In the pure-Go CI pass (-short), where the
// model is slow, 128 tokens: 64 compressed, the same window, lists and
// mean.
func TestEvalReportsKVMemory(t *testing.T) {
	ctxLen, want := "256", "KV cache turbo3.5 at 256 tokens: 321.75 KiB (329472 B), 1287 B/token, 2.39x smaller than f16"
	if testing.Short() {
		ctxLen, want = "128", "KV cache turbo3.5 at 128 tokens: 237.75 KiB (243456 B), 1902 B/token, 1.62x smaller than f16"
	}
	code, out, errOut := runCmd("eval", "ppl", "--ctx", ctxLen, "--chunks", "1", "--kv", "turbo3.5")
	if code != 0 || !strings.Contains(out, want) {
		t.Errorf("code %d, %s%s; want ∋ %q", code, out, errOut, want)
	}
}
