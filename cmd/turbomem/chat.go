package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

func runChat(e *env, args []string) error {
	fs := newFlagSet(e, "chat", "\n\nAn interactive conversation in the model's chat template. Each line you type\nis a user turn; /reset starts over, /quit (or end of input) leaves. Ctrl-C stops\nthe answer being written (the conversation goes on); at the prompt it leaves.")
	g := addGenFlags(fs)
	n := fs.Int("n", 512, "maximum tokens per answer")
	system := fs.String("system", "", "system prompt")
	tmplName := fs.String("template", "", "chat template (plain, llama3, chatml, mistral, llama2; default: from the model)")
	kvf := addKVFlags(fs, recommendedKV)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	sc, err := g.sampler()
	if err != nil {
		return err
	}
	var tmpl model.ChatTemplate
	if *tmplName != "" {
		if tmpl, err = model.ParseChatTemplate(*tmplName); err != nil {
			return usageError{err}
		}
	}
	l, kv, err := openWithKV(e, g.modelFlags, kvf)
	if err != nil {
		return err
	}
	defer l.m.Close()
	if *tmplName == "" {
		jinja, _ := l.m.File().String("tokenizer.chat_template")
		tmpl = model.DetectChatTemplate(jinja)
	}
	fmt.Fprintf(e.stderr, "chat template: %s; /reset to start over, /quit to leave\n", tmpl)
	limit, err := g.sessionLimit(e, l.m)
	if err != nil {
		return err
	}
	c := &conversation{l: l, tmpl: tmpl, sc: sc, ctx: limit, system: *system, kv: kv}
	if err := c.reset(); err != nil {
		return err
	}
	var ir interrupter
	if e.in == nil {
		// The terminal's Ctrl-C: the answer's, or (at the prompt) ours.
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, os.Interrupt)
		defer signal.Stop(sigs)
		go func() {
			for range sigs {
				if !ir.interrupt() {
					fmt.Fprintln(e.stderr)
					os.Exit(130)
				}
			}
		}()
	}
	in := bufio.NewScanner(e.stdin())
	in.Buffer(make([]byte, 64<<10), 1<<20)
	for {
		fmt.Fprint(e.stdout, "> ")
		if !in.Scan() {
			fmt.Fprintln(e.stdout)
			return in.Err()
		}
		line := strings.TrimSpace(in.Text())
		switch line {
		case "":
			continue
		case "/quit", "/exit":
			return nil
		case "/reset":
			if err := c.reset(); err != nil {
				return err
			}
			continue
		}
		ctx, done := ir.answer()
		err := c.turn(ctx, e, line, *n)
		done()
		if err != nil {
			return err
		}
	}
}

// conversation keeps the messages and a session whose tokens are a prefix
// of the rendered conversation, so each turn feeds only what is new.
type conversation struct {
	l      *loaded
	tmpl   model.ChatTemplate
	sc     model.SamplerConfig
	ctx    int
	system string
	kv     kvcache.Config
	msgs   []model.Message
	s      *model.Session
	fed    []int32
	sm     *model.Sampler
}

func (c *conversation) reset() error {
	c.msgs = nil
	if c.system != "" {
		c.msgs = append(c.msgs, model.Message{Role: "system", Content: c.system})
	}
	s, err := c.l.m.NewSession(c.kv, c.ctx)
	if err != nil {
		return err
	}
	sm, err := model.NewSampler(c.sc)
	if err != nil {
		return err
	}
	c.s, c.sm, c.fed = s, sm, nil
	return nil
}

func (c *conversation) turn(ctx context.Context, e *env, line string, n int) error {
	c.msgs = append(c.msgs, model.Message{Role: "user", Content: line})
	text, err := c.tmpl.Render(c.msgs)
	if err != nil {
		return err
	}
	ids := c.l.tok.Encode(text, true)
	// Feed only the tokens after what the session already holds; if the
	// new rendering does not extend it (a tokenization boundary moved),
	// start the session over.
	common := 0
	for common < len(c.fed) && common < len(ids) && c.fed[common] == ids[common] {
		common++
	}
	if common < len(c.fed) || common == len(ids) {
		s, err := c.l.m.NewSession(c.kv, c.ctx)
		if err != nil {
			return err
		}
		c.s, c.fed, common = s, nil, 0
	}
	if len(ids) >= c.s.Limit() {
		return errors.New("the conversation no longer fits in the context; /reset to start over")
	}
	var answer strings.Builder
	st, err := generate(ctx, io.MultiWriter(e.stdout, &answer), c.l, c.s, c.sm, ids[common:], n)
	fmt.Fprintln(e.stdout)
	if err != nil {
		return err
	}
	// The session now holds exactly these tokens; the next turn's
	// rendering is compared with them.
	c.fed = append(ids, st.tokens...)
	c.msgs = append(c.msgs, model.Message{Role: "assistant", Content: answer.String()})
	stop := ""
	if st.stop != stopEOS {
		stop = "; " + st.stop.describe(st, c.s, c.l.m.Config.Context)
	}
	fmt.Fprintf(e.stderr, "[%s; KV cache %s%s]\n", st, humanBytes(c.s.CacheBytes()), stop)
	return nil
}

func (e *env) stdin() io.Reader {
	if e.in != nil {
		return e.in
	}
	return os.Stdin
}

// interrupter turns Ctrl-C into the cancellation of the answer being
// written, if there is one.
type interrupter struct {
	mu     sync.Mutex
	cancel context.CancelFunc
}

// answer returns the context of an answer and the function to call when
// it is written.
func (i *interrupter) answer() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	i.mu.Lock()
	i.cancel = cancel
	i.mu.Unlock()
	return ctx, func() {
		i.mu.Lock()
		i.cancel = nil
		i.mu.Unlock()
		cancel()
	}
}

// interrupt cancels the answer being written and reports whether there
// was one.
func (i *interrupter) interrupt() bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.cancel == nil {
		return false
	}
	i.cancel()
	return true
}
