package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// decodeResult is one row of 'bench decode'.
type decodeResult struct {
	Engine    string  `json:"engine"`
	Context   int     `json:"context"`
	PromptTPS float64 `json:"prompt_tps"`
	DecodeTPS float64 `json:"decode_tps"`
	Tokens    []int32 `json:"tokens,omitempty"`
	PeakRSS   int64   `json:"peak_rss_bytes,omitempty"`
	Threads   int     `json:"threads"`
	// StepMs holds the time of each decode step in ms, the first one
	// (which also evaluates the last prompt token) included.
	StepMs []float64 `json:"-"`
}

func benchDecode(e *env, args []string) error {
	fs := newFlagSet(e, "bench decode", "\n\nPrefills --ctx random tokens, then decodes --n tokens greedily, and reports\nprompt and decode tokens/s; with --peer, runs llama.cpp (node-llama-cpp, see\nbench/peers) on the same file, ids and thread count, in the same run.")
	path := fs.String("m", "", "GGUF model file (required)")
	ctxList := fs.String("ctx", "128,2048", "comma-separated context lengths to decode at")
	n := fs.Int("n", 32, "tokens to decode at each context")
	threads := fs.Int("threads", 0, "threads (0: all CPUs)")
	peer := fs.String("peer", "", "path to bench/peers/greedy.mjs to run llama.cpp too")
	format := formatFlag(fs)
	seed := fs.Uint64("seed", 1, "seed of the random prompt")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *path == "" {
		return usageError{fmt.Errorf("-m FILE is required")}
	}
	if *n < 2 || *n > 100000 {
		return usageError{fmt.Errorf("--n %d out of range [2, 100000]", *n)}
	}
	if err := checkFormat(*format); err != nil {
		return err
	}
	var ctxs []int
	for _, s := range strings.Split(*ctxList, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || c < 1 {
			return usageError{fmt.Errorf("--ctx: %q is not a positive integer", s)}
		}
		ctxs = append(ctxs, c)
	}
	th := *threads
	if th == 0 {
		th = numCPU()
	}
	m, err := model.Open(*path, model.Options{Threads: th})
	if err != nil {
		return err
	}
	defer m.Close()
	var rows []decodeResult
	r := rand.New(rand.NewPCG(*seed, 3))
	for _, ctx := range ctxs {
		if ctx+*n > m.Config.Context {
			return usageError{fmt.Errorf("--ctx %d + --n %d exceeds the model's context %d", ctx, *n, m.Config.Context)}
		}
		ids := make([]int32, ctx)
		for i := range ids {
			ids[i] = int32(3 + r.IntN(m.Config.Vocab-3)) // skip the usual control tokens
		}
		res, err := decodeOurs(m, nil, ids, *n, th)
		if err != nil {
			return err
		}
		rows = append(rows, res)
		if *peer != "" {
			pr, err := decodePeer(*peer, *path, ids, *n, th)
			if err != nil {
				return fmt.Errorf("peer: %w", err)
			}
			rows = append(rows, pr)
		}
	}
	if *format == "json" {
		return json.NewEncoder(e.stdout).Encode(rows)
	}
	fmt.Fprintf(e.stdout, "%s, %d threads\n", *path, th)
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "engine\tcontext\tprompt tok/s\tdecode tok/s\tpeak RSS\tgreedy agree\t")
	for i, row := range rows {
		agree := ""
		if row.Engine == "llama.cpp" && i > 0 {
			ours := rows[i-1].Tokens
			k := 0
			for k < len(ours) && k < len(row.Tokens) && ours[k] == row.Tokens[k] {
				k++
			}
			agree = fmt.Sprintf("%d/%d", k, len(ours))
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.2f\t%s\t%s\t\n", row.Engine, row.Context, row.PromptTPS, row.DecodeTPS, "", agree)
			fmt.Fprintf(tw, "ratio ours/llama.cpp\t\t%.2fx\t%.2fx\t\t\t\n", rows[i-1].PromptTPS/row.PromptTPS, rows[i-1].DecodeTPS/row.DecodeTPS)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.2f\t%s\t%s\t\n", row.Engine, row.Context, row.PromptTPS, row.DecodeTPS, humanBytes(row.PeakRSS), agree)
	}
	return tw.Flush()
}

// decodeOurs prefills ids but the last, then decodes n tokens greedily
// starting with the last prompt token, timed like the peer script, with
// caches made by kv (nil: f16).
func decodeOurs(m *model.Model, kv kvcache.Maker, ids []int32, n, threads int) (decodeResult, error) {
	s, err := m.NewSession(kv, len(ids)+n)
	if err != nil {
		return decodeResult{}, err
	}
	start := time.Now()
	if len(ids) > 1 {
		if _, err := s.Forward(ids[:len(ids)-1], false); err != nil {
			return decodeResult{}, err
		}
	}
	prompt := time.Since(start)
	sampler, _ := model.NewSampler(model.SamplerConfig{})
	res := decodeResult{Engine: "turbomem", Context: len(ids), Threads: threads, PromptTPS: float64(len(ids)-1) / prompt.Seconds()}
	next := ids[len(ids)-1]
	var first time.Duration
	start = time.Now()
	last := start
	for i := range n {
		logits, err := s.Forward([]int32{next}, false)
		if err != nil {
			return res, err
		}
		next = sampler.Sample(logits)
		res.Tokens = append(res.Tokens, next)
		now := time.Now()
		res.StepMs = append(res.StepMs, float64(now.Sub(last))/float64(time.Millisecond))
		last = now
		if i == 0 {
			first = now.Sub(start)
		}
	}
	res.DecodeTPS = float64(n-1) / (time.Since(start) - first).Seconds()
	res.PeakRSS = peakRSS()
	return res, nil
}

// decodePeer runs the peer script (bench/peers/greedy.mjs) on the same
// ids, decoding n tokens; extra arguments go to the script as they are
// (--kv q8_0 --flash).
func decodePeer(script, modelPath string, ids []int32, n, threads int, extra ...string) (decodeResult, error) {
	strs := make([]string, len(ids))
	for i, id := range ids {
		strs[i] = strconv.Itoa(int(id))
	}
	abs, err := filepath.Abs(modelPath)
	if err != nil {
		return decodeResult{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	args := []string{script, "--model", abs, "--ids", strings.Join(strs, ","),
		"--n", strconv.Itoa(n), "--threads", strconv.Itoa(threads), "--ctx", strconv.Itoa(len(ids) + n + 8)}
	cmd := exec.CommandContext(ctx, "node", append(args, extra...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return decodeResult{}, fmt.Errorf("%v: %s", err, stderr.String())
	}
	var p struct {
		Tokens    []int32   `json:"tokens"`
		PromptTPS float64   `json:"prompt_tps"`
		DecodeTPS float64   `json:"decode_tps"`
		TokenMs   []float64 `json:"token_ms"`
	}
	// The last line is the JSON result.
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &p); err != nil {
		return decodeResult{}, fmt.Errorf("reading peer output: %v", err)
	}
	return decodeResult{Engine: "llama.cpp", Context: len(ids), PromptTPS: p.PromptTPS, DecodeTPS: p.DecodeTPS, Tokens: p.Tokens, Threads: threads, StepMs: p.TokenMs}, nil
}

// peakRSS returns the process's peak resident set (VmHWM), or 0 where
// /proc is not available.
func peakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}
