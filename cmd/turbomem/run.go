package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tokenizer"
)

// genFlags are the flags that every generating command shares.
type genFlags struct {
	modelFlags
	ctx                      *int
	temp, topP, minP, repeat *float64
	topK                     *int
	seed                     *uint64
}

func addGenFlags(fs *flag.FlagSet) genFlags {
	return genFlags{
		modelFlags: addModelFlags(fs, ""),
		ctx:        fs.Int("ctx", 0, "maximum tokens in the sequence (0: the model's context length)"),
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
}

// load opens the model named by the flags, paging its weights in with a
// progress bar when stderr is a terminal.
func (g modelFlags) load(e *env) (*loaded, error) {
	opts := model.Options{Threads: *g.threads}
	var m *model.Model
	var err error
	if *g.model == "" {
		// The embedded reference model: checked against its SHA-256 first.
		if err := defaultmodel.Verify(); err != nil {
			return nil, err
		}
		m, err = defaultmodel.Load(opts)
	} else {
		m, err = model.Open(*g.model, opts)
	}
	if err != nil {
		return nil, err
	}
	tok, err := model.LoadTokenizer(m.File())
	if err != nil {
		m.Close()
		return nil, err
	}
	if isTerminal(e.stderr) {
		p := mpb.New(mpb.WithOutput(e.stderr), mpb.WithWidth(40))
		bar := p.AddBar(m.WeightBytes(),
			mpb.PrependDecorators(decor.Name("loading weights "), decor.CountersKibiByte("% .1f / % .1f")),
			mpb.AppendDecorators(decor.Percentage()))
		var last int64
		m.Prefault(func(done, _ int64) { bar.IncrInt64(done - last); last = done })
		bar.SetTotal(-1, true)
		p.Wait()
	} else {
		m.Prefault(nil)
	}
	return &loaded{m: m, tok: tok}, nil
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
}

// generate feeds prompt ids to s and samples up to n tokens, writing text
// to w as it is decoded; it stops at an end-of-generation token.
func generate(w io.Writer, l *loaded, s *model.Session, sm *model.Sampler, prompt []int32, n int) (genStats, error) {
	st := genStats{promptTokens: len(prompt)}
	for _, id := range prompt {
		sm.Accept(id)
	}
	start := time.Now()
	logits, err := s.Forward(prompt, false)
	if err != nil {
		return st, err
	}
	st.prompt = time.Since(start)
	dec := l.tok.NewDecoder()
	start = time.Now()
	for range n {
		next := sm.Sample(logits)
		if l.tok.IsEOG(next) {
			break
		}
		sm.Accept(next)
		st.genTokens++
		if _, err := io.WriteString(w, dec.Next(next)); err != nil {
			return st, err
		}
		if s.Len() >= s.Limit() {
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

// printMemory reports where the session's memory went, with the KV
// cache's bytes per token and ratio to an fp16 cache.
func printMemory(e *env, l *loaded, s *model.Session, kv string) {
	c := l.m.Config
	f16PerToken := float64(2 * 2 * c.Layers * c.KVHeads * c.HeadDim)
	perToken, ratio := 0.0, 0.0
	if s.Len() > 0 {
		perToken = float64(s.CacheBytes()) / float64(s.Len())
		ratio = f16PerToken / perToken
	}
	fmt.Fprintf(e.stderr, "memory: weights %s, KV cache %s (%s, %d tokens, %.0f B/token, %.2fx smaller than f16), scratch %s\n",
		humanBytes(l.m.WeightBytes()), humanBytes(s.CacheBytes()), kv, s.Len(), perToken, ratio, humanBytes(s.ScratchBytes()))
}

func runRun(e *env, args []string) error {
	fs := newFlagSet(e, "run", " \"prompt\"\n\nGenerates a continuation of the prompt, streaming it to stdout; speed and\nmemory by part go to stderr.")
	g := addGenFlags(fs)
	n := fs.Int("n", 128, "maximum tokens to generate")
	chat := fs.Bool("chat", false, "wrap the prompt as a user message in the model's chat template")
	kvf := addKVFlags(fs)
	var prompt []string
	// Accept the prompt before or after the flags.
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		prompt, args = append(prompt, args[0]), args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flagErrHelp) {
			return err
		}
		return usageError{err}
	}
	prompt = append(prompt, fs.Args()...)
	if len(prompt) == 0 {
		return usageError{errors.New("run needs a prompt")}
	}
	if *n < 1 {
		return usageError{fmt.Errorf("-n %d must be ≥ 1", *n)}
	}
	sc, err := g.sampler()
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
	if len(ids) == 0 {
		return errors.New("the prompt encodes to no tokens")
	}
	s, err := l.m.NewSession(kv, *g.ctx)
	if err != nil {
		return err
	}
	sm, err := model.NewSampler(sc)
	if err != nil {
		return err
	}
	if !*chat {
		fmt.Fprint(e.stdout, text)
	}
	st, err := generate(e.stdout, l, s, sm, ids, *n)
	fmt.Fprintln(e.stdout)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stderr, st)
	printMemory(e, l, s, kv.String())
	return nil
}
