package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// LlamaBenchRow is one test of llama.cpp's llama-bench: prompt processing
// ("pp", Tokens prompt tokens) or generation ("tg", Tokens tokens) after
// Depth tokens already in the cache.
type LlamaBenchRow struct {
	Test      string  `json:"test"`
	Tokens    int     `json:"tokens"`
	Depth     int     `json:"depth"`
	Threads   int     `json:"threads"`
	FlashAttn bool    `json:"flash_attn"`
	TPS       float64 `json:"tps"` // mean over llama-bench's repetitions
	StdDev    float64 `json:"tps_stddev"`
}

// FlashAttnName names the row's flash attention setting: on or off.
func (r LlamaBenchRow) FlashAttnName() string {
	if r.FlashAttn {
		return "on"
	}
	return "off"
}

// LlamaBenchOptions configures LlamaBench.
type LlamaBenchOptions struct {
	// Path is the llama-bench binary (built natively, ../shared/peers),
	// Model the GGUF file.
	Path, Model string
	// Threads are the thread counts of the generation tests, Depths their
	// cache depths; PromptThreads those of the prompt test.
	Threads, Depths, PromptThreads []int
	// Prompt is the prompt length of the prompt test (at depth 0; 0: no
	// prompt test), Gen the tokens of each generation test (0: none).
	Prompt, Gen int
	// Repeat is llama-bench's -r (at least 1).
	Repeat int
	// CacheType is the K and V cache type (-ctk, -ctv; "": llama-bench's
	// default, f16), FlashAttn the flash attention settings (-fa; "":
	// "0,1", off and on).
	CacheType, FlashAttn string
	// Timeout bounds each run of llama-bench (0: 30 minutes).
	Timeout time.Duration
}

// LlamaBench runs llama-bench with flash attention off and on (-fa 0,1,
// or as FlashAttn says),
// the prompt test at depth 0 and the generation tests at each depth, and
// returns its results; llama.cpp's best setting at each point is the
// larger TPS of the two.
func LlamaBench(o LlamaBenchOptions) ([]LlamaBenchRow, error) {
	join := func(xs []int) string {
		s := make([]string, len(xs))
		for i, x := range xs {
			s[i] = strconv.Itoa(x)
		}
		return strings.Join(s, ",")
	}
	fa := o.FlashAttn
	if fa == "" {
		fa = "0,1"
	}
	common := []string{"-m", o.Model, "-fa", fa, "-r", strconv.Itoa(max(1, o.Repeat)), "-o", "json"}
	if o.CacheType != "" {
		common = append(common, "-ctk", o.CacheType, "-ctv", o.CacheType)
	}
	var rows []LlamaBenchRow
	if o.Prompt > 0 && len(o.PromptThreads) > 0 {
		r, err := runLlamaBench(o, append(common, "-t", join(o.PromptThreads), "-p", strconv.Itoa(o.Prompt), "-n", "0"))
		if err != nil {
			return rows, err
		}
		rows = append(rows, r...)
	}
	if o.Gen > 0 {
		depths := o.Depths
		if len(depths) == 0 {
			depths = []int{0}
		}
		r, err := runLlamaBench(o, append(common, "-t", join(o.Threads), "-p", "0", "-n", strconv.Itoa(o.Gen), "-d", join(depths)))
		if err != nil {
			return rows, err
		}
		rows = append(rows, r...)
	}
	return rows, nil
}

// runLlamaBench runs llama-bench with args and parses its JSON output.
func runLlamaBench(o LlamaBenchOptions, args []string) ([]LlamaBenchRow, error) {
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 30 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, o.Path, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		return nil, fmt.Errorf("%w: llama-bench %s: %v: %s", ErrPeer, strings.Join(args, " "), err, msg)
	}
	return parseLlamaBench(out)
}

// parseLlamaBench reads llama-bench's JSON output (-o json): an array of
// tests with n_prompt, n_gen, n_depth, n_threads, flash_attn (0 or 1) and
// avg_ts, stddev_ts.
func parseLlamaBench(out []byte) ([]LlamaBenchRow, error) {
	var tests []struct {
		NPrompt   int     `json:"n_prompt"`
		NGen      int     `json:"n_gen"`
		NDepth    int     `json:"n_depth"`
		NThreads  int     `json:"n_threads"`
		FlashAttn int     `json:"flash_attn"`
		AvgTS     float64 `json:"avg_ts"`
		StdDevTS  float64 `json:"stddev_ts"`
	}
	if err := json.Unmarshal(out, &tests); err != nil {
		return nil, fmt.Errorf("%w: reading llama-bench's JSON: %v", ErrPeer, err)
	}
	rows := make([]LlamaBenchRow, 0, len(tests))
	for _, t := range tests {
		r := LlamaBenchRow{Test: "tg", Tokens: t.NGen, Depth: t.NDepth, Threads: t.NThreads, FlashAttn: t.FlashAttn == 1, TPS: t.AvgTS, StdDev: t.StdDevTS}
		if t.NGen == 0 {
			r.Test, r.Tokens = "pp", t.NPrompt
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// LlamaBest returns llama.cpp's best rate (flash attention off or on) for
// test ("pp" or "tg") at depth and threads, and whether it ran.
func LlamaBest(rows []LlamaBenchRow, test string, depth, threads int) (LlamaBenchRow, bool) {
	var best LlamaBenchRow
	found := false
	for _, r := range rows {
		if r.Test == test && r.Depth == depth && r.Threads == threads && (!found || r.TPS > best.TPS) {
			best, found = r, true
		}
	}
	return best, found
}
