package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/internal/tinymodel"
)

// tinySource writes the tiny random model with the embedded model's
// tokenizer and returns its path.
func tinySource(t *testing.T) string {
	t.Helper()
	return tinyModel(t, tinymodel.Options{})
}

// tinyModel writes the tiny random model of options o with the embedded
// model's tokenizer and returns its path.
func tinyModel(t *testing.T, o tinymodel.Options) string {
	t.Helper()
	tok, err := defaultmodel.Open()
	if err != nil {
		t.Fatal(err)
	}
	o.VocabFrom = tok
	path := filepath.Join(t.TempDir(), "src.gguf")
	if err := tinymodel.Write(path, o); err != nil {
		t.Fatal(err)
	}
	return path
}

// flipped writes a copy of path with one byte of tensor name changed.
func flipped(t *testing.T, path, name string) string {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ti, _ := f.Tensor(name)
	f.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[ti.Offset+ti.Size/3] ^= 4
	out := filepath.Join(t.TempDir(), "flipped.gguf")
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestQuantizeVerifyRun: quantize by a recipe writes a file and its plan;
// verify passes it and names the tensor of a flipped byte; run refuses the
// flipped file with --verify=full and =lazy, naming the tensor, and runs
// it with --verify=off; a saved plan is used again, an edited one refused.
func TestQuantizeVerifyRun(t *testing.T) {
	src := tinySource(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "q.gguf")
	code, stdout, stderr := runCmd("quantize", src, out, "--recipe", "F16")
	if code != 0 || !strings.Contains(stdout, "tensors per type: F32 5 F16 15") {
		t.Fatalf("quantize: exit %d\n%s\n%s", code, stdout, stderr)
	}
	planPath := filepath.Join(dir, "q.plan.json")
	if _, err := os.Stat(planPath); err != nil {
		t.Fatalf("plan not saved: %v", err)
	}
	if code, stdout, stderr = runCmd("verify", out); code != 0 || !strings.Contains(stdout, "OK") {
		t.Errorf("verify: exit %d\n%s\n%s", code, stdout, stderr)
	}
	bad := flipped(t, out, "blk.1.ffn_up.weight")
	if code, _, stderr = runCmd("verify", bad); code != 1 || !strings.Contains(stderr, "tensor blk.1.ffn_up.weight:") {
		t.Errorf("verify of a flipped byte: exit %d, %s", code, stderr)
	}
	if code, _, stderr = runCmd("verify", src); code != 1 || !strings.Contains(stderr, "no integrity manifest") {
		t.Errorf("verify of a file without a manifest: exit %d, %s", code, stderr)
	}
	gen := []string{"-n", "2", "--temp", "0", "hello"}
	for _, tt := range []struct {
		path, mode string
		code       int
	}{{out, "lazy", 0}, {out, "full", 0}, {bad, "full", 1}, {bad, "lazy", 1}, {bad, "off", 0}, {src, "full", 0}} {
		code, _, stderr := runCmd(append([]string{"run", "-m", tt.path, "--verify", tt.mode}, gen...)...)
		if code != tt.code || tt.code == 1 && !strings.Contains(stderr, "tensor blk.1.ffn_up.weight") {
			t.Errorf("run --verify=%s %s: exit %d, want %d: %s", tt.mode, filepath.Base(tt.path), code, tt.code, stderr)
		}
	}
	// The saved plan, used again: the same file comes out.
	again := filepath.Join(dir, "again.gguf")
	if code, _, stderr = runCmd("quantize", src, again, "--plan", planPath); code != 0 {
		t.Fatalf("quantize --plan: exit %d: %s", code, stderr)
	}
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(again)
	if string(a) != string(b) {
		t.Error("quantizing again with the saved plan gave another file")
	}
	plan, _ := os.ReadFile(planPath)
	edited := filepath.Join(dir, "edited.json")
	os.WriteFile(edited, []byte(strings.Replace(string(plan), `"type": "F16"`, `"type": "Q4_0"`, 1)), 0o644)
	if code, _, stderr = runCmd("quantize", src, filepath.Join(dir, "x.gguf"), "--plan", edited); code != 1 || !strings.Contains(stderr, "checksum") {
		t.Errorf("edited plan: exit %d: %s", code, stderr)
	}
}

// TestRunLazyMetadata: with --verify=lazy the metadata is compared beside
// the load, so a changed value fails where it is first read — the
// tokenizer's load (tokenizer.ggml.model), the model's load
// (llama.embedding_length), or nowhere before the first output
// (llama.rope.freq_base) — and each is refused naming the key, with no
// continuation printed; serve compares the metadata first and does not
// start.
func TestRunLazyMetadata(t *testing.T) {
	src := tinySource(t)
	out := filepath.Join(t.TempDir(), "q.gguf")
	if code, _, stderr := runCmd("quantize", src, out, "--recipe", "Q8_0"); code != 0 {
		t.Fatalf("quantize: exit %d: %s", code, stderr)
	}
	good, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// edit flips bits x of byte at of key's value (its encoding after the
	// key) and returns the file's path.
	edit := func(key string, at int, x byte) string {
		b := append([]byte(nil), good...)
		i := bytes.Index(b, []byte(key))
		if i < 0 {
			t.Fatalf("no key %s", key)
		}
		b[i+len(key)+at] ^= x
		p := filepath.Join(t.TempDir(), "edited.gguf")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tt := range []struct {
		key string
		at  int // byte of the value after the key: type id (4 bytes), then the payload
		x   byte
	}{
		{"tokenizer.ggml.model", 4 + 8 + 3, '2' ^ '3'}, // "gpt2" -> "gpt3"
		{"llama.embedding_length", 4, 0x40},
		{"llama.rope.freq_base", 4 + 1, 0x01},
	} {
		p := edit(tt.key, tt.at, tt.x)
		want := "metadata key " + tt.key + ": value differs"
		code, stdout, stderr := runCmd("run", "-m", p, "--verify", "lazy", "-n", "2", "--temp", "0", "hello")
		if code != 1 || !strings.Contains(stderr, want) || strings.TrimSpace(stdout) != "" {
			t.Errorf("%s changed: exit %d, stdout %q, stderr %s", tt.key, code, stdout, stderr)
		}
		// A server compares the metadata before it loads: it does not
		// start.
		done := make(chan string, 1)
		go func() {
			code, _, stderr := runCmd("serve", "-m", p, "--addr", "127.0.0.1:0", "--mem", "256MiB")
			done <- fmt.Sprintf("exit %d: %s", code, stderr)
		}()
		select {
		case got := <-done:
			if !strings.HasPrefix(got, "exit 1:") || !strings.Contains(got, want) {
				t.Errorf("serve, %s changed: %s", tt.key, got)
			}
		case <-time.After(time.Minute):
			t.Fatalf("serve, %s changed: started anyway", tt.key)
		}
	}
}

// TestQuantizeUsage: bad command lines are refused before any work.
func TestQuantizeUsage(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"quantize", "a.gguf"}, "needs IN.gguf and OUT.gguf"},
		{[]string{"quantize", "a.gguf", "b.gguf"}, "give --bpw, --size, --size-of or --recipe"},
		{[]string{"quantize", "a.gguf", "b.gguf", "--bpw", "4", "--size", "100"}, "give one of"},
		{[]string{"quantize", "a.gguf", "b.gguf", "--recipe", "Q4_K_XL"}, "want one of"},
		{[]string{"quantize", "a.gguf", "b.gguf", "--size-of", "c.gguf", "--bpw", "4"}, "give one of"},
		{[]string{"quantize", "a.gguf", "b.gguf", "--bpw", "4", "--types", "Q4_K,IQ2_XXS"}, "--types"},
		{[]string{"quantize", "a.gguf", "b.gguf", "--bpw", "40"}, "out of range"},
		{[]string{"quantize", "a.gguf", filepath.Join(dir, "no", "b.gguf"), "--bpw", "4"}, "cannot be written"},
		{[]string{"verify"}, "needs one file"},
		{[]string{"run", "--verify", "sometimes", "hi"}, "--verify"},
		{[]string{"imatrix", "--ctx", "1"}, "out of range"},
	} {
		code, _, stderr := runCmd(tt.args...)
		if code != 2 || !strings.Contains(stderr, tt.want) {
			t.Errorf("%v: exit %d, %s; want 2 and %q", tt.args, code, stderr, tt.want)
		}
	}
}

// TestQuantizeMeasured runs the whole measured path on the tiny model: an
// importance matrix, then a plan measured under --bpw with it; the output
// loads and runs.
func TestQuantizeMeasured(t *testing.T) {
	if testing.Short() {
		t.Skip("measures every matrix in two types: seconds in pure Go")
	}
	src := tinySource(t)
	dir := t.TempDir()
	calib := filepath.Join(dir, "calib.txt")
	os.WriteFile(calib, []byte(strings.Repeat(defaultmodel.HeldOut()[:3000], 2)), 0o644)
	im := filepath.Join(dir, "im.dat")
	code, stdout, stderr := runCmd("imatrix", "-m", src, "--calib", calib, "--ctx", "64", "--chunks", "2", "-o", im)
	if code != 0 || !strings.Contains(stdout, "15 matrices") {
		t.Fatalf("imatrix: exit %d\n%s\n%s", code, stdout, stderr)
	}
	out := filepath.Join(dir, "mixed.gguf")
	code, stdout, stderr = runCmd("quantize", src, out, "--bpw", "8", "--imatrix", im, "--types", "Q8_0,Q4_K", "--calib", calib, "--calib-ctx", "64", "--calib-chunks", "1")
	if code != 0 || !strings.Contains(stdout, "predicted mean KL") || !strings.Contains(stderr, "imatrix: 15 entries for this model's matrices") {
		t.Fatalf("quantize: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if code, _, stderr = runCmd("run", "-m", out, "-n", "2", "--temp", "0", "hello"); code != 0 {
		t.Errorf("run: exit %d: %s", code, stderr)
	}
	// The measurements again, for at most the tensor bytes of a Q8_0 file.
	q8 := filepath.Join(dir, "q8.gguf")
	if code, _, stderr = runCmd("quantize", src, q8, "--recipe", "Q8_0"); code != 0 {
		t.Fatalf("quantize --recipe Q8_0: exit %d: %s", code, stderr)
	}
	same := filepath.Join(dir, "same.gguf")
	code, stdout, stderr = runCmd("quantize", src, same, "--size-of", q8, "--plan", filepath.Join(dir, "mixed.plan.json"), "--imatrix", im)
	want, err := tensorBytes(q8)
	if code != 0 || err != nil || !strings.Contains(stdout, fmt.Sprintf("budget %d bytes", want)) {
		t.Fatalf("quantize --size-of: exit %d (%v)\n%s\n%s", code, err, stdout, stderr)
	}
	if got, err := tensorBytes(same); err != nil || got > want {
		t.Errorf("--size-of a file of %d tensor bytes wrote %d (%v)", want, got, err)
	}
}

// TestServeLazyCheck: a server started on a sealed file with a flipped
// byte (--verify=lazy, the default) reports the tensor as soon as its
// background check finds it, before any request; an intact file's check
// reports that every tensor matches.
func TestServeLazyCheck(t *testing.T) {
	src := tinySource(t)
	out := filepath.Join(t.TempDir(), "q.gguf")
	if code, _, stderr := runCmd("quantize", src, out, "--recipe", "Q8_0"); code != 0 {
		t.Fatalf("quantize: exit %d: %s", code, stderr)
	}
	for _, tt := range []struct{ path, want string }{
		{flipped(t, out, "blk.1.ffn_up.weight"), "tensor blk.1.ffn_up.weight:"},
		{out, "every tensor matches"},
	} {
		cmd := exec.Command(os.Args[0], "serve", "-m", tt.path, "--addr", "127.0.0.1:0", "--mem", "256MiB")
		cmd.Env = append(os.Environ(), asMainEnv+"=1")
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		found := make(chan string, 1)
		go func() {
			var seen []string
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				seen = append(seen, sc.Text())
				if strings.Contains(sc.Text(), "integrity check") {
					found <- sc.Text()
					io.Copy(io.Discard, stderr)
					return
				}
			}
			found <- "no integrity line in: " + strings.Join(seen, "\n")
		}()
		select {
		case line := <-found:
			if !strings.Contains(line, tt.want) {
				t.Errorf("%s: %s; want %q", filepath.Base(tt.path), line, tt.want)
			}
		case <-time.After(2 * time.Minute):
			t.Errorf("%s: no integrity report within 2 minutes", filepath.Base(tt.path))
		}
		cmd.Process.Kill()
		cmd.Wait()
	}
}
