// Command greedyagree compares greedy continuations of the same prompts
// by several generators — our engine with a given KV format, or a running
// llama.cpp llama-server — and, where two answers part, how close the
// choice was: the log-probability margin between the two tokens in each
// generator at the first step where they differ (both have seen the same
// tokens up to there). Small margins on both sides mean a near tie that
// any change of rounding can flip; a large margin means a real difference.
//
//	go run ./tools/greedyagree -n 22 -w 1300 -m 32 \
//	    llama-f16=http://127.0.0.1:18201 ours-f16=f16 ours-turbo3.5=turbo3.5
//
// The first generator is the reference. Each argument is NAME=SOURCE: an
// http URL is a llama-server (its /completion endpoint, given the prompt's
// token ids), anything else a KV configuration for our engine
// (kvcache.Parse: a format, K/V formats or auto:B; klt formats and auto
// plans are calibrated on the held-out text's last windows, as serve's
// --kv does), optionally followed by how the server would run it:
// ",tN" with N threads, ",cN" the prompt fed in chunks of N tokens (the
// server's --prefill-tokens, 128), ",bK" every decode step taken in a
// batch beside K other sequences decoding their own short prompts (a
// server with K+1 running requests); ",wN" sets a compressed format's
// fp16 window of recent tokens to N (kvcache's default is 64). "f16,t16" against "f16" or
// "f16,c128,b15" against "f16" is f16 against itself, only the float
// order changed: the floor under any KV format's agreement.
// Prompts are windows of W words of the embedded held-out text, at the
// same offsets as tools/serve_greedy_compare.py, tokenized by our tokenizer
// (BOS as the model asks); the end-of-text token is not a stop for anyone.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// topN is how many candidates each step keeps: the margin against a token
// outside them is reported as at least the gap to the last kept one.
const topN = 10

// cand is a token and its log-probability at one step.
type cand struct {
	ID      int32   `json:"id"`
	Logprob float64 `json:"logprob"`
}

// step is one greedy step: the chosen token and the top candidates.
type step struct {
	Token int32  `json:"token"`
	Top   []cand `json:"top"`
}

// logprob returns the log-probability of id at this step, and whether it
// was among the kept candidates (if not, the last kept one's, a bound).
func (s step) logprob(id int32) (float64, bool) {
	for _, c := range s.Top {
		if c.ID == id {
			return c.Logprob, true
		}
	}
	return s.Top[len(s.Top)-1].Logprob, false
}

// gap is the margin of the chosen token over the runner-up.
func (s step) gap() float64 { return s.Top[0].Logprob - s.Top[1].Logprob }

type generator interface {
	greedy(prompt []int32, n int) ([]step, error)
}

// post sends a JSON body to a llama-server endpoint and decodes the
// answer into out.
func post(url string, in, out any) error {
	body, _ := json.Marshal(in)
	c := http.Client{Timeout: 15 * time.Minute}
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	return nil
}

// ours runs our engine with one KV configuration.
type ours struct {
	m     *model.Model
	kv    kvcache.Config
	eos   int32
	chunk int       // prompt tokens per Forward (0: all at once)
	mates [][]int32 // prompts of the sequences decoding beside (none: alone)
}

func (g ours) greedy(prompt []int32, n int) ([]step, error) { return g.run(prompt, n, nil) }

// run generates n tokens after prompt: its own greedy choices, or, with
// forced, those tokens (each step still reports its own choice).
func (g ours) run(prompt []int32, n int, forced []int32) ([]step, error) {
	s, err := g.m.NewSession(g.kv, len(prompt)+n)
	if err != nil {
		return nil, err
	}
	var logits []float32
	for rest := prompt; len(rest) > 0; {
		k := len(rest)
		if g.chunk > 0 {
			k = min(k, g.chunk)
		}
		if logits, err = s.Forward(rest[:k], false); err != nil {
			return nil, err
		}
		rest = rest[k:]
	}
	// The sequences beside: prompts fed, then each step feeds its own
	// greedy token with ours, in one Batch.
	seqs := []*model.Session{s}
	toks := [][]int32{nil}
	for _, p := range g.mates {
		ms, err := g.m.NewSession(g.kv, len(p)+n)
		if err != nil {
			return nil, err
		}
		ml, err := ms.Forward(p, false)
		if err != nil {
			return nil, err
		}
		seqs = append(seqs, ms)
		toks = append(toks, []int32{topOf(ml, g.eos).Token})
	}
	b := g.m.NewBatch()
	var steps []step
	for i := range n {
		st := topOf(logits, g.eos)
		steps = append(steps, st)
		if i == n-1 {
			break
		}
		next := st.Token
		if forced != nil {
			next = forced[i]
		}
		if len(seqs) == 1 {
			if logits, err = s.Forward([]int32{next}, false); err != nil {
				return nil, err
			}
			continue
		}
		toks[0] = []int32{next}
		out, errs := b.Forward(seqs, toks)
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		logits = slices.Clone(out[0])
		for j := 1; j < len(seqs); j++ {
			toks[j] = []int32{argmax(out[j])}
		}
	}
	return steps, nil
}

func argmax(xs []float32) int32 {
	best := 0
	for i, x := range xs {
		if x > xs[best] {
			best = i
		}
	}
	return int32(best)
}

// topOf returns the argmax of logits other than the banned end-of-text
// token and the topN log-softmax values (over the whole vocabulary, as
// llama-server reports them).
func topOf(logits []float32, banned int32) step {
	lp := eval.LogSoftmax(logits)
	idx := make([]int32, len(logits))
	for i := range idx {
		idx[i] = int32(i)
	}
	// Ties go to the lower id, as an argmax scan that keeps the first
	// maximum does.
	slices.SortStableFunc(idx, func(a, b int32) int {
		switch {
		case logits[a] > logits[b]:
			return -1
		case logits[a] < logits[b]:
			return 1
		}
		return 0
	})
	idx = slices.DeleteFunc(idx, func(id int32) bool { return id == banned })
	st := step{Token: idx[0]}
	for _, id := range idx[:topN] {
		st.Top = append(st.Top, cand{id, lp[id]})
	}
	return st
}

// llama asks a running llama-server.
type llama struct {
	url string
	eos int32
}

func (g llama) greedy(prompt []int32, n int) ([]step, error) {
	var r struct {
		Tokens []int32 `json:"tokens"`
		Probs  []struct {
			ID  int32  `json:"id"`
			Top []cand `json:"top_logprobs"`
		} `json:"completion_probabilities"`
	}
	in := map[string]any{
		"prompt": prompt, "n_predict": n, "temperature": 0, "n_probs": topN,
		"cache_prompt": false, "ignore_eos": true, "return_tokens": true,
	}
	if err := post(g.url+"/completion", in, &r); err != nil {
		return nil, err
	}
	if len(r.Probs) != n {
		return nil, fmt.Errorf("%s: %d steps, want %d", g.url, len(r.Probs), n)
	}
	steps := make([]step, n)
	for i, p := range r.Probs {
		// ignore_eos bans the end-of-text token after the probabilities
		// are taken.
		p.Top = slices.DeleteFunc(p.Top, func(c cand) bool { return c.ID == g.eos })
		if len(p.Top) < 2 || p.Top[0].ID != p.ID {
			return nil, fmt.Errorf("%s: step %d: token %d is not the most likely of %v (not greedy?)", g.url, i, p.ID, p.Top)
		}
		steps[i] = step{Token: p.ID, Top: p.Top}
	}
	return steps, nil
}

// pair is the agreement of generator B with generator A over the prompts.
type pair struct {
	A, B        string
	Prompts     int       `json:"prompts"`
	NextEqual   int       `json:"next_equal"`
	AnswerEqual int       `json:"answer_equal"`
	Common      []int     `json:"common_prefix"`
	MarginA     []float64 `json:"margin_a"` // A's pick over B's, in A, where they part
	MarginB     []float64 `json:"margin_b"` // B's pick over A's, in B
	// Drift is |Δ log p| of A's token between A and B over the steps
	// before they part (the same history on both sides): how far apart
	// the two computations are where they agree.
	Drift []float64 `json:"drift"`
}

// add compares two answers to one prompt.
func (p *pair) add(a, b []step) string {
	p.Prompts++
	d := 0
	for d < len(a) && b[d].Token == a[d].Token {
		la, _ := a[d].logprob(a[d].Token)
		lb, _ := b[d].logprob(a[d].Token)
		p.Drift = append(p.Drift, math.Abs(la-lb))
		d++
	}
	p.Common = append(p.Common, d)
	if d > 0 {
		p.NextEqual++
	}
	if d == len(a) {
		p.AnswerEqual++
		return fmt.Sprintf("  %s=%s", p.B, p.A)
	}
	ma, _ := a[d].logprob(a[d].Token)
	la, _ := a[d].logprob(b[d].Token)
	mb, _ := b[d].logprob(b[d].Token)
	lb, inB := b[d].logprob(a[d].Token)
	p.MarginA = append(p.MarginA, ma-la)
	p.MarginB = append(p.MarginB, mb-lb)
	return fmt.Sprintf("  %s/%s part at %d (margins %.4f / %.4f%s)", p.B, p.A, d, ma-la, mb-lb, map[bool]string{true: "", false: "+"}[inB])
}

func main() {
	n := flag.Int("n", 22, "prompts")
	w := flag.Int("w", 1300, "words per prompt")
	m := flag.Int("m", 32, "greedy tokens per answer")
	threads := flag.Int("threads", 1, "our engine's threads (unless a generator says ,tN)")
	// The embedded model's own file, not defaultmodel.Load: the binary
	// then holds no copy of it (it travels light to a benchmark machine).
	path := flag.String("model", "defaultmodel/turbomem-default.gguf", "GGUF file (the default is the embedded model's, from the repository's root)")
	out := flag.String("json", "", "write every prompt's steps here")
	vsFirst := flag.Bool("vs-first", false, "compare each generator with the first only (else every pair)")
	budget := flag.Duration("for", 0, "start no prompt after this long (0: no bound); the tables cover the prompts done")
	flag.Parse()
	if flag.NArg() < 2 {
		log.Fatal("want at least two NAME=SOURCE generators")
	}
	models := map[int]*model.Model{} // by thread count
	load := func(t int) *model.Model {
		if mod, ok := models[t]; ok {
			return mod
		}
		mod, err := model.Open(*path, model.Options{Threads: t})
		if err != nil {
			log.Fatal(err)
		}
		models[t] = mod
		return mod
	}
	mod := load(*threads)
	tok, err := model.LoadTokenizer(mod.File())
	if err != nil {
		log.Fatal(err)
	}
	words := strings.Fields(defaultmodel.HeldOut())
	calib := tok.Encode(defaultmodel.HeldOut(), true)
	var names []string
	var gens []generator
	for _, a := range flag.Args() {
		name, src, ok := strings.Cut(a, "=")
		if !ok {
			log.Fatalf("%q: want NAME=SOURCE", a)
		}
		names = append(names, name)
		if strings.HasPrefix(src, "http") {
			gens = append(gens, llama{strings.TrimSuffix(src, "/"), tok.EOS()})
			continue
		}
		format, opts, _ := strings.Cut(src, ",")
		g := ours{m: mod, eos: tok.EOS()}
		window := 0
		for _, o := range strings.Split(opts, ",") {
			if o == "" {
				continue
			}
			v, err := strconv.Atoi(o[1:])
			if err != nil || v < 1 || v > 4096 {
				log.Fatalf("%q: option %q: want tN, cN, bK or wN with a number in 1..4096", a, o)
			}
			switch o[0] {
			case 't':
				g.m = load(v)
			case 'c':
				g.chunk = v
			case 'b':
				for k := range v {
					at := (k*4099 + 101) % (len(words) - 12)
					g.mates = append(g.mates, tok.Encode(strings.Join(words[at:at+12], " "), true))
				}
			case 'w':
				window = v
			default:
				log.Fatalf("%q: option %q: want tN, cN, bK or wN", a, o)
			}
		}
		kv, err := kvcache.Parse(format)
		if err == nil && window > 0 {
			kv, err = kv.WithWindow(window)
		}
		if err != nil {
			log.Fatal(err)
		}
		if kv.NeedsPlan() || kv.NeedsCovariances() {
			if kv, err = eval.PlanKV(context.Background(), g.m, calib, tok.BOS(), kv, eval.KVPlanOptions{}); err != nil {
				log.Fatalf("%s: %v", name, err)
			}
		}
		g.kv = kv
		gens = append(gens, g)
	}
	var pairs []*pair
	for i := range names {
		for j := i + 1; j < len(names); j++ {
			if *vsFirst && i > 0 {
				break
			}
			pairs = append(pairs, &pair{A: names[i], B: names[j]})
		}
	}
	sameIDs := 0                   // prompts llama.cpp tokenizes as we do
	teacher := map[string][2]int{} // steps agreeing with the first's answer, steps
	var gaps []float64             // the first generator's top-2 gap at every step
	var all []map[string]any
	began := time.Now()
	for i := range *n {
		if *budget > 0 && time.Since(began) > *budget {
			fmt.Fprintf(os.Stderr, "-for %v passed: %d of %d prompts\n", *budget, i, *n)
			break
		}
		at := (i * 7919 * 37) % (len(words) - *w)
		ids := tok.Encode(strings.Join(words[at:at+*w], " "), true)
		if len(ids)+*m > mod.Config.Context {
			fmt.Fprintf(os.Stderr, "prompt %d: %d tokens, past the context: skipped\n", i, len(ids))
			continue
		}
		// llama.cpp's tokenizer (BOS as the file says) must give the same
		// ids; the generators are then given the ids themselves.
		for j, g := range gens {
			if l, ok := g.(llama); ok {
				var r struct {
					Tokens []int32 `json:"tokens"`
				}
				if err := post(l.url+"/tokenize", map[string]any{"content": strings.Join(words[at:at+*w], " "), "add_special": true}, &r); err != nil {
					log.Fatal(err)
				}
				if !slices.Equal(r.Tokens, ids) {
					log.Fatalf("prompt %d: %s tokenizes to %d ids, we to %d: not the same", i, names[j], len(r.Tokens), len(ids))
				}
				sameIDs++
				break
			}
		}
		got := make(map[string][]step, len(gens))
		for j, g := range gens {
			if got[names[j]], err = g.greedy(ids, *m); err != nil {
				log.Fatalf("prompt %d, %s: %v", i, names[j], err)
			}
		}
		for _, s := range got[names[0]] {
			gaps = append(gaps, s.gap())
		}
		// Our engines again, each fed the first generator's answer: how
		// often a step's choice agrees when the history is the same (every
		// step where the answers are equal).
		ref := got[names[0]]
		forced := make([]int32, len(ref))
		for k, s := range ref {
			forced[k] = s.Token
		}
		for j, g := range gens[1:] {
			o, ok := g.(ours)
			if !ok {
				continue
			}
			steps := got[names[j+1]]
			if !slices.EqualFunc(steps, ref, func(a, b step) bool { return a.Token == b.Token }) {
				if steps, err = o.run(ids, *m, forced); err != nil {
					log.Fatalf("prompt %d, %s: %v", i, names[j+1], err)
				}
			}
			f := teacher[names[j+1]]
			for k, s := range steps {
				f[0] += boolInt(s.Token == forced[k])
				f[1]++
			}
			teacher[names[j+1]] = f
		}
		line := fmt.Sprintf("prompt %2d (%d tokens):", i, len(ids))
		for _, p := range pairs {
			line += p.add(got[p.A], got[p.B])
		}
		fmt.Println(line)
		all = append(all, map[string]any{"prompt": i, "ids": len(ids), "steps": got})
	}
	fmt.Printf("\nllama.cpp's tokenizer gave our ids on %d prompts\n", sameIDs)
	fmt.Printf("\nmargins: log-probability differences at the first differing step; drift: |Δ log p| of A's token before it\n\n")
	fmt.Println("| A | B | next token equal | whole answer equal | mean common prefix | median margin in A | median margin in B | largest shift (sum of margins) | median drift | p99 drift |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for _, p := range pairs {
		mx := 0.0
		for k := range p.MarginA {
			mx = math.Max(mx, p.MarginA[k]+p.MarginB[k])
		}
		fmt.Printf("| %s | %s | %d/%d | %d/%d | %.1f | %s | %s | %.3f | %s | %s |\n", p.A, p.B, p.NextEqual, p.Prompts, p.AnswerEqual, p.Prompts,
			mean(p.Common), quantile(p.MarginA, 0.5), quantile(p.MarginB, 0.5), mx, quantile(p.Drift, 0.5), quantile(p.Drift, 0.99))
	}
	// Agreement against answer length: the share of prompts whose first
	// k tokens are equal.
	var lens []int
	for k := 1; k < *m; k *= 2 {
		lens = append(lens, k)
	}
	lens = append(lens, *m)
	fmt.Printf("\n| A | B |")
	for _, k := range lens {
		fmt.Printf(" first %d equal |", k)
	}
	fmt.Printf("\n|---|---|%s\n", strings.Repeat("---|", len(lens)))
	for _, p := range pairs {
		fmt.Printf("| %s | %s |", p.A, p.B)
		for _, k := range lens {
			c := 0
			for _, d := range p.Common {
				c += boolInt(d >= k)
			}
			fmt.Printf(" %d/%d (%.0f%%) |", c, p.Prompts, 100*float64(c)/float64(max(1, p.Prompts)))
		}
		fmt.Println()
	}
	fmt.Println()
	for _, name := range names[1:] {
		if f, ok := teacher[name]; ok {
			fmt.Printf("%s fed %s's answers: the same choice at %d of %d steps (%.1f%%)\n", name, names[0], f[0], f[1], 100*float64(f[0])/float64(f[1]))
		}
	}
	// What each configuration of ours holds at a 4096-token conversation,
	// against f16: the sessions a memory budget admits scale with it.
	sh := mod.CacheShape()
	ref, err := kvcache.F16().BytesAt(4096, mod.Config.Layers, sh)
	if err != nil {
		log.Fatal(err)
	}
	for j, g := range gens {
		if o, ok := g.(ours); ok {
			b, err := o.kv.BytesAt(4096, mod.Config.Layers, sh)
			if err != nil {
				log.Fatal(err)
			}
			fmt.Printf("%s: %s, KV at 4096 tokens %d B, f16's / its = %.2fx\n", names[j], o.kv, b, float64(ref)/float64(b))
		}
	}
	slices.Sort(gaps)
	fmt.Printf("\n%s's gap between its first and second token over %d steps: ", names[0], len(gaps))
	for _, t := range []float64{0.01, 0.03, 0.1, 0.3} {
		k, _ := slices.BinarySearch(gaps, t)
		fmt.Printf("< %.2f: %.1f%%  ", t, 100*float64(k)/float64(len(gaps)))
	}
	fmt.Println()
	if *out != "" {
		b, _ := json.Marshal(map[string]any{"names": names, "pairs": pairs, "prompts": all})
		if err := os.WriteFile(*out, b, 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func mean(xs []int) float64 {
	s := 0
	for _, x := range xs {
		s += x
	}
	return float64(s) / float64(max(1, len(xs)))
}

// quantile returns the q-quantile of xs, or a dash when there are none.
func quantile(xs []float64, q float64) string {
	if len(xs) == 0 {
		return "–"
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return fmt.Sprintf("%.4f", s[min(len(s)-1, int(q*float64(len(s))))])
}
