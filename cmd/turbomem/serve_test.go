package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMain runs the command itself when asked to (bench serve starts
// 'turbomem serve' as its own executable: here, the test binary).
func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestBenchServe is the short load test: 64 concurrent streaming clients
// against a real 'turbomem serve' process on 127.0.0.1 whose queue is
// smaller than the clients beyond its slots, for a few seconds; no answer
// may be lost or corrupted, some must be refused with 429 and retried,
// the server's peak RSS stays under --mem, and SIGTERM drains it.
func TestBenchServe(t *testing.T) {
	if testing.Short() {
		t.Skip("a few seconds of load; run without -short")
	}
	var out, errb bytes.Buffer
	args := []string{"bench", "serve", "--clients", "64", "--duration", "4s", "--max-tokens", "8", "--prompt-words", "20",
		"--mem", "256MiB", "--parallel", "16", "--queue", "16", "--kv", "turbo3.5", "--format", "json"}
	if code := run(args, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s %s", code, out.String(), errb.String())
	}
	var r struct {
		OK, Lost, Corrupted int
		Rejected            int     `json:"rejected_429"`
		PeakRSS             int64   `json:"server_peak_rss_bytes"`
		TTFTp99             float64 `json:"ttft_p99_ms"`
		Tokens              int     `json:"completion_tokens"`
		Decode              []struct{ Tokens, Seconds float64 }
		DecodeTokPerSec     float64 `json:"decode_tok_per_s"`
		Drain               string
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if r.OK < 64 || r.Lost != 0 || r.Corrupted != 0 || r.Rejected == 0 || r.PeakRSS <= 0 || r.PeakRSS > 256<<20 || !strings.HasPrefix(r.Drain, "ok") {
		t.Fatalf("load test: %+v", r)
	}
	// Decode-only steps: each decodes one token per sequence, a
	// completion's tokens after its first (or its end of text).
	decoded := 0.0
	for _, d := range r.Decode {
		decoded += d.Tokens
	}
	if r.DecodeTokPerSec <= 0 || decoded <= 0 || decoded > float64(r.Tokens) {
		t.Fatalf("decode counters: %g tokens of %d completion tokens, %g tok/s at the full batch", decoded, r.Tokens, r.DecodeTokPerSec)
	}
}

func TestParseBytes(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"4GiB", 4 << 30}, {"4G", 4 << 30}, {"512MiB", 512 << 20}, {"1.5GiB", 3 << 29},
		{"2GB", 2e9}, {"1000", 1000}, {"64 kib", 64 << 10}, {"0", -1}, {"-1G", -1}, {"4XB", -1}, {"", -1}, {"G", -1}, {"1e30", -1},
	} {
		got, err := parseBytes(c.in)
		if c.want < 0 {
			if err == nil {
				t.Errorf("parseBytes(%q) = %d, want an error", c.in, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
}

func TestServeRefuses(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"serve", "--mem", "lots"}, exitUsage, "--mem"},
		{[]string{"serve", "--parallel", "0"}, exitUsage, "--parallel"},
		{[]string{"serve", "--kv", "nope"}, exitUsage, "nope"},
		// The listener opens, the model loads, and the budget cannot hold it.
		{[]string{"serve", "--mem", "8MiB", "--addr", "127.0.0.1:0"}, exitUsage, "does not hold the weights"},
	} {
		var out, errb bytes.Buffer
		if code := run(c.args, &out, &errb); code != c.code || !strings.Contains(errb.String(), c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, errb.String(), c.code, c.msg)
		}
	}
}

// TestBenchServeCPUProfile: --server-cpuprofile and --server-trace have
// the server that bench serve starts write a CPU profile that pprof reads
// (a gzip stream) and an execution trace (go tool trace's header) by the
// time it has drained; serve --cpuprofile or --trace to a path that
// cannot be written, and either bench flag with --url, are refused before
// any work.
func TestBenchServeCPUProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serve.prof")
	tracePath := filepath.Join(t.TempDir(), "serve.trace")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--cpuprofile", filepath.Join(t.TempDir(), "no", "such", "dir", "p")}, "cannot be written"},
		{[]string{"serve", "--trace", filepath.Join(t.TempDir(), "no", "such", "dir", "t")}, "--trace cannot be written"},
		{[]string{"bench", "serve", "--url", "http://127.0.0.1:1", "--server-cpuprofile", path}, "--server-cpuprofile"},
		{[]string{"bench", "serve", "--url", "http://127.0.0.1:1", "--server-trace", tracePath}, "--server-trace"},
	} {
		code, _, errOut := runCmd(tt.args...)
		if code != 2 || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: code %d, stderr %q; want 2, ∋ %q", tt.args, code, errOut, tt.want)
		}
	}
	if testing.Short() {
		t.Skip("starts a server; run without -short")
	}
	code, out, errOut := runCmd("bench", "serve", "--clients", "2", "--requests", "4", "--duration", "20s", "--max-tokens", "4",
		"--prompt-words", "10", "--mem", "256MiB", "--parallel", "2", "--threads", "2", "--kv", "f16", "--server-cpuprofile", path, "--server-trace", tracePath)
	if code != 0 {
		t.Fatalf("bench serve --server-cpuprofile --server-trace: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	tr, err := os.ReadFile(tracePath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(tr, []byte("go 1.")) || !bytes.Contains(tr[:min(len(tr), 16)], []byte(" trace")) {
		t.Errorf("trace of %d bytes does not start with the execution trace header: %q", len(tr), tr[:min(len(tr), 16)])
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Errorf("profile of %d bytes does not start with the gzip magic", len(b))
	}
}

// TestOpenAIClient runs the official openai npm client (tests/openai)
// against a real 'turbomem serve' process: a streamed chat completion,
// a streamed and a whole text completion, the model list, an error.
func TestOpenAIClient(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not on the PATH: the openai client test needs Node.js 20+")
	}
	dir := filepath.Join("..", "..", "tests", "openai")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openai")); err != nil {
		t.Skipf("the openai client is not installed: run (cd %s && npm ci)", dir)
	}
	var errb bytes.Buffer
	srv, logPath, url, err := startServer(&env{stdout: io.Discard, stderr: &errb}, []string{"--kv", "turbo3.5", "--mem", "256MiB", "--parallel", "4", "--queue", "8", "--threads", "0"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Process.Kill()
	out, err := exec.Command(node, filepath.Join(dir, "client.mjs"), url+"/v1").CombinedOutput()
	if err != nil || !strings.Contains(string(out), " 0 failed") {
		t.Fatalf("openai client: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	if d := stopServer(srv, logPath); !strings.HasPrefix(d, "ok") {
		t.Fatalf("drain: %s", d)
	}
}
