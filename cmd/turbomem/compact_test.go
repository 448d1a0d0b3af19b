package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/compact"
	"github.com/turbomem/turbomem/eval"
)

// TestRunCompact: run --compact compacts the prompt after its prefill and
// says how (tokens kept, times, bytes before and after); bad requests are
// refused with a clear message.
func TestRunCompact(t *testing.T) {
	const fixture = "../../testdata/llama-2-tiny-random.gguf"
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--compact", "0.5"}, 2, "want a number ≥ 1"},
		{[]string{"--compact", "ten"}, 2, "want a number ≥ 1"},
		{[]string{"--compact", "2x", "--compact-method", "lru"}, 2, "unknown method"},
		{[]string{"--compact", "2x", "--compact-window", "-1"}, 2, "--compact-window"},
		{[]string{"--compact", "2x"}, 1, "not longer than the window of 16"},
		{[]string{"--compact", "100x", "--compact-window", "0"}, 1, "leaves none"},
	} {
		args := append([]string{"run", "-m", fixture, "-n", "2", "--temp", "0"}, append(tt.args, "Once upon a time there was")...)
		if code, _, errOut := runCmd(args...); code != tt.code || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: code %d, stderr %q; want %d, ∋ %q", tt.args, code, errOut, tt.code, tt.want)
		}
	}
	for _, m := range []string{"am", "am-omp", "snapkv", "streaming"} {
		code, out, errOut := runCmd("run", "-m", fixture, "-n", "3", "--temp", "0", "--compact", "2x", "--compact-method", m, "--compact-window", "2", "--compact-self", "1", "--compact-self-tokens", "2", "Once upon a time there was")
		if code != 0 || out == "" {
			t.Fatalf("%s: exit %d, stdout %q: %s", m, code, out, errOut)
		}
		for _, want := range []string{"compacted 7 tokens to 3.0 per layer and KV head (" + m + ", 2.3x)", "KV cache 224 B → 108 B (2.1x smaller)", "prefill", "KV cache", "smaller", "generated 3 tokens"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("%s: stderr lacks %q: %s", m, want, errOut)
			}
		}
	}
}

// TestRunCompactBudgets: run --compact-budgets splits the kept tokens
// as its file says (a file eval compact --save-budgets writes); a file
// for another shape, or not a budget file, is refused with a clear error.
func TestRunCompactBudgets(t *testing.T) {
	const fixture = "../../testdata/llama-2-tiny-random.gguf" // 1 layer, 2 KV heads
	dir := t.TempDir()
	write := func(name string, b compact.BudgetShares) string {
		path := filepath.Join(dir, name)
		if err := eval.SaveFile(path, b); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := write("good.json", compact.BudgetShares{Method: compact.AMHighest, Ratio: 2, Shares: [][]float64{{0.25, 0.75}}})
	other := write("other.json", compact.BudgetShares{Method: compact.AMHighest, Ratio: 2, Shares: [][]float64{{0.5, 0.5}, {0, 0}}})
	garbage := filepath.Join(dir, "garbage.json")
	if err := os.WriteFile(garbage, []byte(`{"version": 1, "shares": [[1]]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(file string) (int, string) {
		code, _, errOut := runCmd("run", "-m", fixture, "-n", "2", "--temp", "0", "--compact", "2x", "--compact-window", "0", "--compact-self", "1", "--compact-self-tokens", "2", "--compact-budgets", file, "Once upon a time there was a")
		return code, errOut
	}
	// 8 tokens at 2x: 4 per head on average however they are split
	// (the split itself: compact's TestEvictionClosedForms).
	if code, errOut := run(good); code != 0 || !strings.Contains(errOut, "compacted 8 tokens to 4.0 per layer and KV head") {
		t.Errorf("good budgets: exit %d, %s", code, errOut)
	}
	for _, tt := range []struct{ file, want string }{
		{other, "budget shares for 2 layers, the context has 1"},
		{garbage, "checksum"},
		{filepath.Join(dir, "missing.json"), "no such file"},
	} {
		if code, errOut := run(tt.file); code == 0 || !strings.Contains(errOut, tt.want) {
			t.Errorf("%s: exit %d, stderr %q; want ∋ %q", tt.file, code, errOut, tt.want)
		}
	}
	if code, _, errOut := runCmd("eval", "compact", "--save-budgets", filepath.Join(dir, "x.json")); code != 2 || !strings.Contains(errOut, "give both") {
		t.Errorf("--save-budgets alone: exit %d, %s", code, errOut)
	}
}

// TestEvalCompact: eval compact prints its table, JSON with a row per
// method and ratio after the uncompacted ones, and the plot.
func TestEvalCompact(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the embedded model over several contexts")
	}
	svg := filepath.Join(t.TempDir(), "compact.svg")
	args := []string{"eval", "compact", "--length", "96", "--depths", "1", "--trials", "1", "--facts", "2", "--fact-contexts", "1",
		"--kl-contexts", "1", "--kl-tokens", "8", "--ratios", "4,8", "--methods", "am,h2o", "--compact-window", "4",
		"--compact-self", "1", "--compact-self-tokens", "4", "--kv", "q8_0"}
	code, out, errOut := runCmd(append(args, "--format", "json", "--plot", svg)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var res eval.CompactResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(res.Rows) != 2+4 || res.Rows[0].KV != "f16" || res.Rows[1].KV != "q8_0" || res.Rows[2].Method != "am" || res.Rows[5].Ratio != 8 {
		t.Errorf("rows %+v", res.Rows)
	}
	if b, err := os.ReadFile(svg); err != nil || !strings.Contains(string(b), "am q8_0 needle") {
		t.Errorf("plot: %v %.200s", err, b)
	}
	code, out, errOut = runCmd(args...)
	if code != 0 || !strings.Contains(out, "reduction") || !strings.Contains(out, "h2o") {
		t.Errorf("table: exit %d, %s %s", code, out, errOut)
	}
	if code, _, errOut := runCmd("eval", "compact", "--ratios", "0.5"); code != 2 || !strings.Contains(errOut, "want a number ≥ 1") {
		t.Errorf("--ratios 0.5: exit %d, %s", code, errOut)
	}
}
