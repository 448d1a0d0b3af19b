package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/server"
)

func runServe(e *env, args []string) error {
	fs := newFlagSet(e, "serve", "\n\nAn OpenAI-compatible HTTP server (/v1/chat/completions, /v1/completions,\n/v1/models, /health, /metrics). Requests are admitted while the exact KV bytes\nof prompt + max_tokens fit in --mem beside the weights; the rest wait in a\nbounded queue, then get 429. SIGINT/SIGTERM drain: no new requests, running\nones finish, then exit.")
	mf := addModelFlags(fs, "")
	mf.addVerifyFlag(fs)
	mem := fs.String("mem", "4GiB", "memory budget of the whole server: weights, scratch and every sequence's KV cache (e.g. 512MiB, 8GiB)")
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on")
	apiKey := fs.String("api-key", "", "require 'Authorization: Bearer KEY' (default: the TURBOMEM_API_KEY environment variable, else none)")
	parallel := fs.Int("parallel", 16, "most sequences decoding at once")
	queue := fs.Int("queue", 64, "most requests waiting for memory or a slot (beyond it: 429)")
	maxTokens := fs.Int("max-tokens", 512, "max_tokens of a chat request that sets none")
	tmplName := fs.String("template", "", "chat template (plain, llama3, chatml, mistral, llama2; default: from the model)")
	logJSON := fs.Bool("log-json", false, "log one JSON object per request instead of text")
	prefixTokens := fs.Int("prefix-cache-tokens", 1024, "prompt tokens per request kept in the prefix cache for reuse by later requests sharing them (0: no prefix cache)")
	serial := fs.Bool("serial", false, "step the sequences one after another instead of batching them (for comparison)")
	interval := fs.Duration("stream-interval", 0, "least time between a stream's text events after its first token; the tokens made meanwhile go out in one event (0: an event per token)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile (go tool pprof) of the server from when it is ready until it has drained to this file")
	traceFile := fs.String("trace", "", "write an execution trace (go tool trace: goroutines, processors, scheduling latency) of the server from when it is ready until it has drained to this file")
	kvf := addKVFlags(fs, recommendedKV)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	budget, err := parseBytes(*mem)
	if err != nil {
		return usageError{fmt.Errorf("--mem: %w", err)}
	}
	if *parallel < 1 || *queue < 0 || *maxTokens < 1 || *prefixTokens < 0 {
		return usageError{errors.New("--parallel and --max-tokens must be ≥ 1, --queue and --prefix-cache-tokens ≥ 0")}
	}
	if *interval < 0 || *interval > time.Minute {
		return usageError{fmt.Errorf("--stream-interval %s: from 0 to 1m", *interval)}
	}
	var tmpl model.ChatTemplate
	if *tmplName != "" {
		if tmpl, err = model.ParseChatTemplate(*tmplName); err != nil {
			return usageError{err}
		}
	}
	if err := kvf.validate(); err != nil {
		return err
	}
	if err := mf.check(); err != nil {
		return err
	}
	prof, err := createFlagFile("cpuprofile", *cpuProfile)
	if err != nil {
		return err
	}
	defer prof.Close()
	tracef, err := createFlagFile("trace", *traceFile)
	if err != nil {
		return err
	}
	defer tracef.Close()
	key := *apiKey
	if key == "" {
		key = os.Getenv("TURBOMEM_API_KEY")
	}
	var h slog.Handler = slog.NewTextHandler(e.stderr, nil)
	if *logJSON {
		h = slog.NewJSONHandler(e.stderr, nil)
	}
	log := slog.New(h)
	o := server.Options{Mem: budget, Parallel: *parallel, Queue: max(*queue, 1), APIKey: key, DefaultMaxTokens: *maxTokens, Logger: log,
		PrefixTokens: *prefixTokens, NoPrefixCache: *prefixTokens == 0, StreamInterval: *interval}
	if *serial {
		o.Stepper = func(m *model.Model) server.Stepper { return server.Serial{M: m} }
	}
	srv, err := server.New(o)
	if err != nil {
		return err
	}
	// Listen first: /health answers 503 while the model loads.
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(h, slog.LevelWarn)}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	mf.metadataFirst = true // nothing from unchecked metadata is served
	l, err := mf.load(e)
	if err != nil {
		hs.Close()
		return err
	}
	defer l.m.Close()
	kv, err := kvf.config(e, l, *mf.model, true)
	if err != nil {
		hs.Close()
		return err
	}
	if *tmplName == "" {
		jinja, _ := l.m.File().String("tokenizer.chat_template")
		tmpl = model.DetectChatTemplate(jinja)
	}
	b, err := srv.Load(&server.Model{Model: l.m, Tokenizer: l.tok, Template: tmpl, KV: kv, Name: servedName(l.m, *mf.model)})
	if err != nil {
		hs.Close()
		return usageError{err}
	}
	// The Go heap is what grows with load: hold it under the budget less
	// the weights, which live outside it (memory-mapped or in the binary).
	debug.SetMemoryLimit(b.Total - b.Weights)
	perSeq, _ := kv.BytesAt(l.m.Config.Context, l.m.Config.Layers, l.m.CacheShape())
	fmt.Fprintf(e.stderr, "serving %s on http://%s: KV %s; memory %s = weights %s + scratch %s + reserve %s + %s for sequences and the prefix cache (%d full-context sequences of %d tokens at %s each; prefix blocks are charged at their bytes in the KV format, turbomem_prefix_cache_bytes)\n",
		servedName(l.m, *mf.model), ln.Addr(), kv, humanBytes(b.Total), humanBytes(b.Weights), humanBytes(b.Scratch), humanBytes(b.Reserve), humanBytes(b.Sequences),
		b.Sequences/max(perSeq, 1), l.m.Config.Context, humanBytes(perSeq))
	if prof != nil {
		// Serving only: the model's loading is left out; the step loop,
		// the handlers and a --verify=lazy check are in.
		if err := pprof.StartCPUProfile(prof); err != nil {
			hs.Close()
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if tracef != nil {
		if err := trace.Start(tracef); err != nil {
			hs.Close()
			return fmt.Errorf("--trace: %w", err)
		}
		defer trace.Stop()
	}

	// --verify=lazy's check hashes the weights while the server waits for
	// requests; a request answers only once every tensor has passed, a
	// tensor that differs fails every request, and the check's result is
	// reported here as soon as it is complete.
	checked := l.checked
wait:
	for {
		select {
		case err := <-served:
			return err
		case err := <-checked:
			checked = nil
			if err != nil {
				log.Error("integrity check: the weights differ from the file's manifest; requests fail", "err", err)
			} else {
				log.Info("integrity check: every tensor matches the file's manifest")
			}
		case <-ctx.Done():
			break wait
		}
	}
	stop() // a second signal ends the process at once
	fmt.Fprintln(e.stderr, "draining: no new requests; waiting for the running ones")
	drained := make(chan error, 1)
	go func() { drained <- srv.Drain(context.Background()) }()
	if err := hs.Shutdown(context.Background()); err != nil {
		return err
	}
	if err := <-drained; err != nil {
		return err
	}
	fmt.Fprintln(e.stderr, "drained")
	return nil
}

// servedName is the id clients see: the file's general.name, else its
// base name.
func servedName(m *model.Model, path string) string {
	if path == "" {
		return defaultmodel.Name
	}
	if n, err := m.File().String("general.name"); err == nil && n != "" {
		return n
	}
	return strings.TrimSuffix(filepath.Base(path), ".gguf")
}

// parseBytes reads a byte count: a number with an optional unit (B, KB,
// MB, GB, TB in powers of 1000; KiB, MiB, GiB, TiB, or K, M, G, T, in
// powers of 1024).
func parseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := len(t)
	for i > 0 && (t[i-1] < '0' || t[i-1] > '9') && t[i-1] != '.' {
		i--
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult := map[string]float64{"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "kb": 1e3, "m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
		"g": 1 << 30, "gib": 1 << 30, "gb": 1e9, "t": 1 << 40, "tib": 1 << 40, "tb": 1e12}[unit]
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || mult == 0 || !(v > 0) || v*mult > 1<<50 {
		return 0, fmt.Errorf("%q: want a positive size such as 512MiB or 8GiB", s)
	}
	return int64(v * mult), nil
}
