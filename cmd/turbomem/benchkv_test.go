package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/bench"
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
		{[]string{"--repeat", "0"}, "--repeat"},
		{[]string{"--llama-bench", "/no/such/llama-bench"}, "--llama-bench"},
		{[]string{"--record", "1"}, "--record"},
		{[]string{"--layer", "99"}, "--layer"},
		{[]string{"--kv", "klt3.5", "--kv-calib-chunks", "0"}, "--kv-calib-chunks"},
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
	// The decode rows prefill their contexts and the recording its
	// tokens: half as many in the pure-Go CI pass (-short), where the
	// model is slow.
	record, decode, base := "128", "64,128", 64
	if testing.Short() {
		record, decode, base = "64", "32,64", 32
	}
	code, out, errOut := runCmd("bench", "kv", "--kv", "q8_0,turbo3.5", "--ctx", "256,128", "--decode-ctx", decode,
		"--iters", "2", "--n", "4", "--record", record, "--format", "json", "--plot", plotPath)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep bench.KVReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output is not the report: %v\n%s", err, out)
	}
	if rep.Shape.HeadDim != 128 || rep.Layers != 6 || strconv.Itoa(rep.Recorded) != record || rep.Base != base {
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

// TestBenchKVKLT: a klt format is timed with covariances measured on the
// held-out text first (what it cannot do without), beside f16.
func TestBenchKVKLT(t *testing.T) {
	code, out, errOut := runCmd("bench", "kv", "--kv", "klt3.5", "--ctx", "160", "--decode-ctx", "",
		"--iters", "1", "--record", "64", "--kv-calib-chunks", "1", "--format", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep bench.KVReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output is not the report: %v\n%s", err, out)
	}
	if len(rep.Attention) != 2 || rep.Attention[1].Format != "klt3.5" || rep.Attention[1].Micros <= 0 || rep.Attention[1].Bytes >= rep.Attention[0].Bytes {
		t.Errorf("attention rows %+v", rep.Attention)
	}
	if !strings.Contains(errOut, "covariances") {
		t.Errorf("stderr %q does not say the covariances are measured", errOut)
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
	var rep bench.KVReport
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

// fakePeer writes a peer script beside an installed-looking
// node_modules/node-llama-cpp that fails as a broken llama.cpp would.
func fakePeer(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "node_modules", "node-llama-cpp"), 0o755); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "greedy.mjs")
	if err := os.WriteFile(script, []byte("console.error('llama.cpp exploded'); process.exit(3);\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return script
}

// TestBenchPeerFails: a peer without npm install is refused before any
// work with the command that fixes it; a peer that fails keeps our own
// table on stdout and exits 1 with its error.
func TestBenchPeerFails(t *testing.T) {
	bare := filepath.Join(t.TempDir(), "greedy.mjs")
	if err := os.WriteFile(bare, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"bench", "kv", "--llama", "--peer", bare},
		{"bench", "decode", "--peer", bare},
	} {
		code, _, errOut := runCmd(args...)
		if code != 2 || !strings.Contains(errOut, "npm install") {
			t.Errorf("%v: code %d, %q; want 2 and how to install", args, code, errOut)
		}
	}
	if _, err := exec.LookPath("node"); err != nil {
		// CheckPeer refuses before the script runs: said above.
		return
	}
	peer := fakePeer(t)
	ctxLen, decode := "96", "64,96"
	if testing.Short() { // the pure-Go CI pass, where the model is slow
		ctxLen, decode = "48", "32,48"
	}
	code, out, errOut := runCmd("bench", "kv", "--kv", "turbo4", "--ctx", ctxLen, "--decode-ctx", decode, "--iters", "1", "--n", "2", "--record", ctxLen,
		"--llama", "--llama-kv", "f16", "--peer", peer)
	if code != 1 || !strings.Contains(out, "turbo4") || !strings.Contains(out, "Decode") || !strings.Contains(errOut, "llama.cpp exploded") {
		t.Errorf("bench kv with a failing peer: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut = runCmd("bench", "decode", "--ctx", "16", "--n", "2", "--peer", peer)
	if code != 1 || !strings.Contains(out, "turbomem") || !strings.Contains(errOut, "llama.cpp exploded") {
		t.Errorf("bench decode with a failing peer: code %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// fakeLlamaBench writes a llama-bench stand-in that records its
// arguments (one call a line) in the returned file and prints out, as
// llama-bench -o json would.
func fakeLlamaBench(t *testing.T, out string) (bin, argsFile string) {
	t.Helper()
	dir := t.TempDir()
	bin, argsFile = filepath.Join(dir, "llama-bench"), filepath.Join(dir, "args")
	script := "#!/bin/sh\necho \"$*\" >> " + argsFile + "\ncat <<'JSON'\n" + out + "\nJSON\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, argsFile
}

// TestBenchKVLlamaBench: with --llama-bench, llama.cpp's rows come from
// one llama-bench run per cache type at every decode context (f16 with
// flash attention off and on, its best kept), the rounds are llama-bench's
// repetitions, and our rows carry the range of their rounds; the summary
// gives our decode rates against llama.cpp's f16.
func TestBenchKVLlamaBench(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh to run the stand-in")
	}
	bin, argsFile := fakeLlamaBench(t, `[
 {"n_threads": 2, "flash_attn": 0, "n_prompt": 0, "n_gen": 4, "n_depth": 64, "avg_ts": 300.5, "stddev_ts": 1},
 {"n_threads": 2, "flash_attn": 1, "n_prompt": 0, "n_gen": 4, "n_depth": 64, "avg_ts": 250.0, "stddev_ts": 1},
 {"n_threads": 2, "flash_attn": 0, "n_prompt": 0, "n_gen": 4, "n_depth": 96, "avg_ts": 200.0, "stddev_ts": 1},
 {"n_threads": 2, "flash_attn": 1, "n_prompt": 0, "n_gen": 4, "n_depth": 96, "avg_ts": 220.0, "stddev_ts": 1}
]`)
	code, out, errOut := runCmd("bench", "kv", "--kv", "turbo3.5", "--ctx", "96", "--decode-ctx", "64,96", "--iters", "2", "--n", "4",
		"--record", "96", "--threads", "2", "--repeat", "2", "--llama-bench", bin, "--llama-kv", "f16", "--format", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep bench.KVReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output is not the report: %v\n%s", err, out)
	}
	args, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"-fa 0,1", "-r 2", "-ctk f16 -ctv f16", "-t 2", "-n 4", "-d 64,96", "-p 0"} {
		if !strings.Contains(string(args), want) {
			t.Errorf("llama-bench called with %q, lacks %q", args, want)
		}
	}
	if n := strings.Count(string(args), "\n"); n != 1 {
		t.Errorf("llama-bench ran %d times, want once", n)
	}
	if rep.Rounds != 2 || rep.Attention[0].MicrosMin > rep.Attention[0].Micros || rep.Attention[0].Micros > rep.Attention[0].MicrosMax {
		t.Errorf("attention rounds: %d, row %+v", rep.Rounds, rep.Attention[0])
	}
	var llama []bench.DecodeRow
	for _, r := range rep.Decode {
		if r.Engine == "llama.cpp" {
			llama = append(llama, r)
		} else if !(r.DecodeMin <= r.DecodeTPS && r.DecodeTPS <= r.DecodeMax && r.DecodeMin > 0) {
			t.Errorf("our row %+v: rate outside its range", r)
		}
	}
	if len(llama) != 2 || llama[0].Context != 64 || llama[0].DecodeTPS != 300.5 || llama[0].FlashAttn != "off" ||
		llama[1].Context != 96 || llama[1].DecodeTPS != 220 || llama[1].FlashAttn != "on" {
		t.Errorf("llama.cpp rows %+v, want its best at 64 (300.5, fa off) and 96 (220, fa on)", llama)
	}
	found := false
	for _, s := range rep.Summary {
		if s.What == "our turbo3.5 vs llama.cpp f16" && s.Context == 96 && s.Ratio > 0 {
			found = true
		}
	}
	if !found {
		t.Errorf("summary %+v lacks our turbo3.5 against llama.cpp's f16 at 96", rep.Summary)
	}
	code, _, errOut = runCmd("bench", "kv", "--llama", "--llama-bench", bin)
	if code != 2 || !strings.Contains(errOut, "choose one") {
		t.Errorf("--llama with --llama-bench: code %d, %q", code, errOut)
	}
}

// TestBenchDecodeCPUProfile: --cpuprofile writes a profile of the
// decoding that pprof reads (a gzip stream: the profile.proto format
// starts with the gzip magic); a path that cannot be written, or more
// than one context, is refused before any work.
func TestBenchDecodeCPUProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decode.prof")
	code, out, errOut := runCmd("bench", "decode", "--ctx", "16", "--n", "2", "--threads", "2", "--cpuprofile", path)
	if code != 0 || !strings.Contains(out, "turbomem") {
		t.Fatalf("bench decode --cpuprofile: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Errorf("profile of %d bytes does not start with the gzip magic", len(b))
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--cpuprofile", filepath.Join(t.TempDir(), "no", "such", "dir", "p")}, "cannot be written"},
		{[]string{"--cpuprofile", path, "--ctx", "16,32"}, "single --ctx"},
	} {
		code, _, errOut = runCmd(append([]string{"bench", "decode"}, tt.args...)...)
		if code != 2 || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: code %d, stderr %q; want 2, ∋ %q", tt.args, code, errOut, tt.want)
		}
	}
}
