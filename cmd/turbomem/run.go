package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/turbomem/turbomem/compact"
	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tokenizer"
)

// genFlags are the flags that every generating command shares.
type genFlags struct {
	modelFlags
	ctx                      *int
	longCtx                  *bool
	temp, topP, minP, repeat *float64
	topK                     *int
	seed                     *uint64
}

func addGenFlags(fs *flag.FlagSet) genFlags {
	mf := addModelFlags(fs, "")
	mf.addVerifyFlag(fs)
	return genFlags{
		modelFlags: mf,
		ctx:        fs.Int("ctx", 0, "maximum tokens in the sequence, prompt included (0: the context the model was trained on)"),
		longCtx:    fs.Bool("allow-long-ctx", false, "allow --ctx beyond the context the model was trained on"),
		temp:       fs.Float64("temp", 0.7, "sampling temperature (0: greedy)"),
		topK:       fs.Int("top-k", 40, "keep the K most likely tokens (0: all)"),
		topP:       fs.Float64("top-p", 0.9, "keep the smallest set of tokens with this probability (1: all)"),
		minP:       fs.Float64("min-p", 0.05, "drop tokens below this fraction of the top probability"),
		repeat:     fs.Float64("repeat-penalty", 1.1, "penalty for tokens among the last 64 (1: off)"),
		seed:       seedFlag(fs, "sampling"),
	}
}

func (g genFlags) sampler() (model.SamplerConfig, error) {
	c := model.SamplerConfig{Temperature: *g.temp, TopK: *g.topK, TopP: *g.topP, MinP: *g.minP, RepeatPenalty: *g.repeat, Seed: *g.seed}
	if err := c.Validate(); err != nil {
		return c, usageError{err}
	}
	if *g.ctx < 0 {
		return c, usageError{errors.New("--ctx must be ≥ 0")}
	}
	if err := g.check(); err != nil {
		return c, err
	}
	return c, nil
}

// loaded is an open model with its tokenizer.
type loaded struct {
	m   *model.Model
	tok *tokenizer.Tokenizer
	// checked receives the result of --verify=lazy's background check
	// once every tensor is compared (nil channel: no such check).
	checked <-chan error
}

// load opens the model named by the flags, paging its weights in with a
// progress bar when stderr is a terminal.
func (g modelFlags) load(e *env) (*loaded, error) {
	opts := model.Options{Threads: *g.threads}
	var m *model.Model
	var tok *tokenizer.Tokenizer
	var checked <-chan error
	var err error
	loadTokenizer := func(m *model.Model) (err error) {
		tok, err = model.LoadTokenizer(m.File())
		return err
	}
	if *g.model == "" {
		// The embedded reference model: checked against its SHA-256 first.
		if err := defaultmodel.Verify(); err != nil {
			return nil, err
		}
		if m, err = defaultmodel.Load(opts); err == nil {
			if err = loadTokenizer(m); err != nil {
				m.Close()
			}
		}
	} else {
		mode := "off"
		if g.verify != nil {
			mode = *g.verify
		}
		var cache string
		if cache, err = g.checkedCache(); err != nil {
			return nil, err
		}
		// The tokenizer's load reads the metadata, which lazy may still
		// be comparing: OpenModel reports what differs there if it fails.
		m, checked, err = openChecked(e, *g.model, mode, g.metadataFirst, cache, opts, loadTokenizer)
	}
	if err != nil {
		return nil, err
	}
	bar := newBar(e, "loading weights", m.WeightBytes(), true)
	m.Prefault(func(done, _ int64) { bar.set(done) })
	bar.finish()
	return &loaded{m: m, tok: tok, checked: checked}, nil
}

// isTerminal reports whether w is a terminal (progress is drawn only there).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// genStats is what a generation measured.
type genStats struct {
	promptTokens, genTokens int
	prompt, decode          time.Duration
	tokens                  []int32 // generated and fed to the session
	stop                    stopReason
}

// stopReason says why a generation stopped.
type stopReason int

const (
	stopEOS         stopReason = iota // the model's end-of-generation token
	stopN                             // -n tokens generated
	stopFull                          // the session's context is full
	stopInterrupted                   // the context was cancelled (Ctrl-C in chat)
)

// describe says why generation stopped, for stderr.
func (r stopReason) describe(st genStats, s *model.Session, trained int) string {
	switch r {
	case stopEOS:
		return "stopped: the model ended its text (end-of-generation token)"
	case stopN:
		return fmt.Sprintf("stopped: %d tokens generated (-n)", st.genTokens)
	case stopFull:
		return fmt.Sprintf("stopped: the context of %d tokens is full (--ctx; the model was trained on %d)", s.Limit(), trained)
	}
	return "stopped: interrupted"
}

// generate feeds prompt ids to s and samples up to n tokens, writing text
// to w as it is decoded; it stops at an end-of-generation token, when the
// context is full or when ctx is cancelled, and says which in stats.
func generate(ctx context.Context, w io.Writer, l *loaded, s *model.Session, sm *model.Sampler, prompt []int32, n int) (genStats, error) {
	start := time.Now()
	logits, err := s.Forward(prompt, false)
	if err != nil {
		return genStats{promptTokens: len(prompt)}, err
	}
	return decode(ctx, w, l, s, sm, prompt, logits, time.Since(start), n)
}

// decode samples up to n tokens after a prompt already fed to s (in the
// time given), from its last token's logits, as generate does.
func decode(ctx context.Context, w io.Writer, l *loaded, s *model.Session, sm *model.Sampler, prompt []int32, logits []float32, took time.Duration, n int) (genStats, error) {
	st := genStats{promptTokens: len(prompt), stop: stopN, prompt: took}
	for _, id := range prompt {
		sm.Accept(id)
	}
	var err error
	dec := l.tok.NewDecoder()
	start := time.Now()
	for range n {
		if ctx.Err() != nil {
			st.stop = stopInterrupted
			break
		}
		next := sm.Sample(logits)
		if l.tok.IsEOG(next) {
			st.stop = stopEOS
			break
		}
		sm.Accept(next)
		st.genTokens++
		if _, err := io.WriteString(w, dec.Next(next)); err != nil {
			return st, err
		}
		if s.Len() >= s.Limit() {
			if st.genTokens < n {
				st.stop = stopFull
			}
			break
		}
		if logits, err = s.Forward([]int32{next}, false); err != nil {
			return st, err
		}
		st.tokens = append(st.tokens, next)
	}
	_, err = io.WriteString(w, dec.Flush())
	st.decode = time.Since(start)
	return st, err
}

func (st genStats) String() string {
	tps := func(n int, d time.Duration) float64 {
		if d <= 0 {
			return 0
		}
		return float64(n) / d.Seconds()
	}
	return fmt.Sprintf("prompt %d tokens, %.1f tok/s; generated %d tokens, %.1f tok/s",
		st.promptTokens, tps(st.promptTokens, st.prompt), st.genTokens, tps(st.genTokens, st.decode))
}

// printMemory reports where the session's memory went: the weights, the
// KV cache now, and the KV cache at the session's full context with its
// ratio to an fp16 cache there (a compressed cache keeps its last tokens
// in fp16, so the ratio now says little), and the scratch buffers.
func printMemory(e *env, l *loaded, s *model.Session, kv kvcache.Config) error {
	full, err := kvMemory(l.m, kv, s.Limit())
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "memory: weights %s, KV cache now %s (%d tokens), scratch %s; %s\n",
		humanBytes(l.m.WeightBytes()), humanBytes(s.CacheBytes()), s.Len(), humanBytes(s.ScratchBytes()), full)
	return nil
}

// sessionLimit returns the --ctx of a session of m: the model's trained
// context for 0; beyond it only with --allow-long-ctx, and with a
// warning.
func (g genFlags) sessionLimit(e *env, m *model.Model) (int, error) {
	trained := m.Config.Context
	switch {
	case *g.ctx == 0:
		return trained, nil
	case *g.ctx <= trained:
		return *g.ctx, nil
	case !*g.longCtx:
		return 0, usageError{fmt.Errorf("--ctx %d is beyond the %d tokens the model was trained on: add --allow-long-ctx to go there anyway (quality usually falls apart past it)", *g.ctx, trained)}
	}
	fmt.Fprintf(e.stderr, "warning: --ctx %d is beyond the %d tokens the model was trained on; expect worse text past them\n", *g.ctx, trained)
	return *g.ctx, nil
}

func runRun(e *env, args []string) error {
	fs := newFlagSet(e, "run", " \"prompt\"\n\nGenerates a continuation of the prompt, streaming it to stdout (after the prompt\nitself when stdout is a terminal: a script reading a pipe gets the continuation\nalone); why it stopped, speed and memory by part go to stderr. An explicit --ctx\nmust hold the prompt and -n tokens; with the default context, generation stops\nwhen the context is full, and says so.")
	g := addGenFlags(fs)
	n := fs.Int("n", 128, "maximum tokens to generate")
	chat := fs.Bool("chat", false, "wrap the prompt as a user message in the model's chat template")
	noEcho := fs.Bool("no-echo", false, "do not print the prompt before the continuation on a terminal")
	kvf := addKVFlags(fs, recommendedKV)
	cf := addCompactFlags(fs)
	prompt, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if strings.TrimSpace(strings.Join(prompt, "")) == "" {
		return usageError{errors.New("run needs a prompt (a non-empty argument)")}
	}
	if *n < 1 {
		return usageError{fmt.Errorf("-n %d must be ≥ 1", *n)}
	}
	sc, err := g.sampler()
	if err != nil {
		return err
	}
	co, cq, err := cf.options(*g.seed)
	if err != nil {
		return err
	}
	l, kv, err := openWithKV(e, g.modelFlags, kvf)
	if err != nil {
		return err
	}
	defer l.m.Close()
	text := strings.Join(prompt, " ")
	if *chat {
		tmpl, _ := l.m.File().String("tokenizer.chat_template")
		if text, err = model.DetectChatTemplate(tmpl).Render([]model.Message{{Role: "user", Content: text}}); err != nil {
			return err
		}
	}
	ids := l.tok.Encode(text, true)
	limit, err := g.sessionLimit(e, l.m)
	if err != nil {
		return err
	}
	switch {
	case len(ids) >= limit:
		return usageError{fmt.Errorf("the prompt is %d tokens; the context holds %d (--ctx)", len(ids), limit)}
	case *g.ctx != 0 && len(ids)+*n > limit:
		return usageError{fmt.Errorf("the prompt (%d tokens) and -n %d need %d tokens; --ctx is %d", len(ids), *n, len(ids)+*n, limit)}
	}
	sm, err := model.NewSampler(sc)
	if err != nil {
		return err
	}
	var s *model.Session
	var st genStats
	if co == nil {
		if s, err = l.m.NewSession(kv, limit); err != nil {
			return err
		}
		if !*chat && !*noEcho && isTerminal(e.stdout) {
			fmt.Fprint(e.stdout, text)
		}
		st, err = generate(context.Background(), e.stdout, l, s, sm, ids, *n)
	} else {
		var logits []float32
		var rep compact.Report
		s, logits, rep, err = compact.CompactPrompt(context.Background(), l.m, l.tok, kv, ids, limit, *co, cq)
		if err != nil {
			return err
		}
		printCompaction(e, co.Method, rep)
		if !*chat && !*noEcho && isTerminal(e.stdout) {
			fmt.Fprint(e.stdout, text)
		}
		st, err = decode(context.Background(), e.stdout, l, s, sm, ids, logits, rep.Prefill, *n)
	}
	fmt.Fprintln(e.stdout)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stderr, st.stop.describe(st, s, l.m.Config.Context))
	fmt.Fprintln(e.stderr, st)
	return printMemory(e, l, s, kv)
}
