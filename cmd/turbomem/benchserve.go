package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/turbomem/turbomem/bench"
	"github.com/turbomem/turbomem/defaultmodel"
)

// asMainEnv makes a test binary run main (bench serve starts the server
// as its own executable, which in tests is the test binary).
const asMainEnv = "TURBOMEM_AS_MAIN"

func benchServe(e *env, args []string) error {
	fs := newFlagSet(e, "bench serve", "\n\nA load test: starts 'turbomem serve' as a child process on 127.0.0.1 (or uses\n--url), runs --clients concurrent streaming completion clients for --duration,\nthen stops the server with SIGTERM (it must drain and exit 0). Reports lost and\ncorrupted answers, 429s, time to first token, tokens/s and the server's peak RSS.")
	url := fs.String("url", "", "an already running server to load instead of starting one")
	apiKey := fs.String("api-key", "", "API key of --url's server")
	pid := fs.Int("pid", 0, "process id of --url's server, for its peak RSS (else sampled from its /metrics)")
	modelPath := modelPathFlag(fs)
	threads := fs.Int("threads", 0, "server threads (0: all CPUs)")
	kv := fs.String("kv", "f16", "server KV cache format")
	mem := fs.String("mem", "1GiB", "server memory budget")
	parallel := fs.Int("parallel", 16, "server: most sequences at once")
	queue := fs.Int("queue", 64, "server: most requests waiting")
	serial := fs.Bool("serial", false, "server: step sequences one after another instead of batching them")
	interval := fs.Duration("stream-interval", 0, "server: least time between a stream's text events (its serve --stream-interval)")
	serverProfile := fs.String("server-cpuprofile", "", "server: write a CPU profile (go tool pprof) of the started server, ready to drained, to this file (its serve --cpuprofile)")
	serverTrace := fs.String("server-trace", "", "server: write an execution trace (go tool trace) of the started server, ready to drained, to this file (its serve --trace)")
	clients := fs.Int("clients", 64, "concurrent streaming clients")
	duration := fs.Duration("duration", 30*time.Second, "how long clients start new requests")
	requests := fs.Int("requests", 0, "most requests in all (0: until --duration)")
	promptWords := fs.Int("prompt-words", 40, "words of held-out text per prompt")
	maxTokens := fs.Int("max-tokens", 32, "max_tokens of each request")
	format := formatFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkFormat(*format); err != nil {
		return err
	}
	if *url != "" && (*serverProfile != "" || *serverTrace != "" || *interval != 0) {
		return usageError{errors.New("--server-cpuprofile, --server-trace and --stream-interval are for the server that bench serve starts, not --url's")}
	}
	if *clients < 1 || *clients > 4096 || *maxTokens < 1 || *promptWords < 1 || *duration <= 0 || *duration > 24*time.Hour || *requests < 0 {
		return usageError{errors.New("--clients 1..4096, --max-tokens and --prompt-words ≥ 1, --duration in (0, 24h], --requests ≥ 0")}
	}
	// 16 distinct prompts from the held-out text.
	words := strings.Fields(defaultmodel.HeldOut())
	var prompts []string
	for i := range 16 {
		at := (i * 997 * *promptWords) % max(1, len(words)-*promptWords)
		prompts = append(prompts, strings.Join(words[at:at+*promptWords], " "))
	}
	load := bench.ServeLoad{URL: *url, APIKey: *apiKey, PID: *pid, Clients: *clients, Duration: *duration, Requests: *requests, Prompts: prompts, MaxTokens: *maxTokens}
	var child *exec.Cmd
	var logPath string
	if *url == "" {
		var err error
		args := []string{"--kv", *kv, "--mem", *mem, "--parallel", fmt.Sprint(*parallel), "--queue", fmt.Sprint(*queue), "--threads", fmt.Sprint(*threads),
			"--stream-interval", interval.String()}
		for _, f := range []struct{ flag, v string }{{"-m", *modelPath}, {"--cpuprofile", *serverProfile}, {"--trace", *serverTrace}} {
			if f.v != "" {
				args = append(args, f.flag, f.v)
			}
		}
		if *serial {
			args = append(args, "--serial")
		}
		child, logPath, load.URL, err = startServer(e, args)
		if err != nil {
			return err
		}
		load.PID = child.Process.Pid
		defer child.Process.Kill()
	}
	res, err := bench.RunServeLoad(context.Background(), load)
	if err != nil {
		return err
	}
	drain := "not ours (--url)"
	if child != nil {
		drain = stopServer(child, logPath)
	}
	if *format == "json" {
		return json.NewEncoder(e.stdout).Encode(struct {
			bench.ServeResult
			KV, Mem string
			Drain   string `json:"drain"`
		}{res, *kv, *mem, drain})
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "clients\trequests\tok\tlost\tcorrupted\t429s\tsame as first\tTTFT p50\tTTFT p99\ttokens\ttok/s\tstream tok/s p50\tserver peak RSS\t\n")
	fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%.1f%%\t%.0f ms\t%.0f ms\t%d\t%.1f\t%.1f\t%s\t\n", res.Clients, res.Requests, res.OK, res.Lost, res.Corrupted, res.Rejected,
		100*res.SameAsFirst, res.TTFTp50, res.TTFTp99, res.Tokens, res.TokPerSec, res.StreamTokPerSec, humanBytes(res.PeakRSS))
	tw.Flush()
	if res.FullBatch > 0 {
		// The server's own count of its decode-only steps: prefill's steps
		// and the idle time between requests left out.
		fmt.Fprintf(e.stdout, "decode (steps without prompt tokens): %.1f tok/s at %d sequences", res.DecodeTokPerSec, res.FullBatch)
		total := 0.0
		for _, d := range res.Decode {
			total += d.Tokens
		}
		for _, d := range res.Decode {
			if d.Sequences != res.FullBatch && d.Tokens >= 0.05*total {
				fmt.Fprintf(e.stdout, "; %.1f at %d", d.TokPerSec, d.Sequences)
			}
		}
		fmt.Fprintf(e.stdout, " (%.0f%% of the tokens at %d)\n", 100*res.Decode[res.FullBatch-1].Tokens/max(total, 1), res.FullBatch)
	}
	if res.ServerCPUSeconds > 0 || res.ClientCPUSeconds > 0 {
		// The load clients run on the server's machine: what they take
		// is CPU the server's steps do not get.
		perTok := func(s float64) float64 { return 1e6 * s / float64(max(res.Tokens, 1)) }
		fmt.Fprintf(e.stdout, "cpu: server %.2f s (%.0f µs a token, its pool's spinning included), load clients %.2f s (%.0f µs a token)\n",
			res.ServerCPUSeconds, perTok(res.ServerCPUSeconds), res.ClientCPUSeconds, perTok(res.ClientCPUSeconds))
	}
	if child != nil {
		fmt.Fprintf(e.stdout, "server: --kv %s --mem %s --parallel %d --queue %d; %.1f s; drain on SIGTERM: %s\n", *kv, *mem, *parallel, *queue, res.Seconds, drain)
	} else {
		fmt.Fprintf(e.stdout, "server: %s; %.1f s\n", *url, res.Seconds)
	}
	for _, msg := range res.Errors {
		fmt.Fprintln(e.stderr, "error:", msg)
	}
	if res.Lost > 0 || res.Corrupted > 0 || res.OK == 0 || !strings.HasPrefix(drain, "ok") && child != nil {
		return fmt.Errorf("%d lost, %d corrupted, %d answered; drain: %s", res.Lost, res.Corrupted, res.OK, drain)
	}
	return nil
}

// startServer starts 'turbomem serve' with flags on a free
// loopback port and waits until /health answers 200; its log goes to a
// temporary file.
func startServer(e *env, flags []string) (*exec.Cmd, string, string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, "", "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	args := append([]string{"serve", "--addr", addr}, flags...)
	logf, err := os.CreateTemp("", "turbomem-bench-serve-*.log")
	if err != nil {
		return nil, "", "", err
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), asMainEnv+"=1")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, "", "", err
	}
	logf.Close()
	url := "http://" + addr
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if r, err := http.Get(url + "/health"); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) || cmd.ProcessState != nil {
			cmd.Process.Kill()
			log, _ := os.ReadFile(logf.Name())
			return nil, "", "", fmt.Errorf("the server did not become healthy: %s", log)
		}
	}
	fmt.Fprintf(e.stderr, "server %s started (log %s)\n", url, logf.Name())
	return cmd, logf.Name(), url, nil
}

// stopServer sends SIGTERM and reports how the server ended.
func stopServer(c *exec.Cmd, logPath string) string {
	c.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Sprintf("exit: %v (log %s)", err, logPath)
		}
		log, _ := os.ReadFile(logPath)
		if !strings.Contains(string(log), "drained") {
			return "exit 0 without draining (log " + logPath + ")"
		}
		os.Remove(logPath)
		return "ok (drained, exit 0)"
	case <-time.After(time.Minute):
		c.Process.Kill()
		return "no exit 1 min after SIGTERM (log " + logPath + ")"
	}
}
