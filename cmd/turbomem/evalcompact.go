package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/turbomem/turbomem/compact"
	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/plot"
)

func evalCompact(e *env, args []string) error {
	fs := newFlagSet(e, "eval compact", "\n\nCompacts contexts of held-out text (--file) by each --methods at each --ratios\n(the context's tokens per token kept, per layer and KV head, window included),\nwith the caches stored as --kv says (compaction composes with quantization),\nthen scores what the model still answers: needles at --depths depths, --facts\nkey→value facts per context (each asked), and the KL divergence of its\ndistributions over --kl-tokens held-out tokens after the context from the\nuncompacted f16 cache's. Rows: the uncompacted f16 (and --kv) caches, then each\nmethod and ratio, with the bytes holding the context and the total reduction\nagainst f16.")
	mf := addModelFlags(fs, "")
	file := fs.String("file", "", "text (default: the embedded held-out text)")
	methods := fs.String("methods", "am,am-omp,snapkv,h2o,streaming", "comma-separated compaction methods: "+methodNames())
	ratios := fs.String("ratios", "5,10,20,50,100", "comma-separated compaction ratios")
	length := fs.Int("length", 2048, "context length in tokens")
	depths := fs.Int("depths", 5, "needle depths, from start to end")
	trials := fs.Int("trials", 2, "needles per depth")
	facts := fs.Int("facts", 4, "key→value facts per multi-fact context")
	factCtx := fs.Int("fact-contexts", 3, "multi-fact contexts")
	klCtx := fs.Int("kl-contexts", 2, "held-out contexts whose continuations score the KL divergence")
	klTokens := fs.Int("kl-tokens", 256, "continuation tokens per KL context")
	measured := fs.Bool("measured-budgets", false, "also run the attention-matching methods with budgets per layer and KV head chosen from measured loss (KL of a held-out continuation with one head compacted at a time, exact allocation)")
	saveBudgets := fs.String("save-budgets", "", "with --measured-budgets: save the first measured budgets (the first attention-matching method at the first ratio) to this file, for --compact-budgets")
	seed := seedFlag(fs, "the contexts, needles and reference queries")
	kvf := addKVFlags(fs, "f16")
	cf := addCompactFitFlags(fs)
	format := formatFlag(fs)
	plotFile := plotFlag(fs, "retrieval against the total KV reduction")
	if err := parseOutputFlags(fs, args, format, plotFile); err != nil {
		return err
	}
	none := func(n int) int { // 0 asks for none: CompactOptions' 0 is the default
		if n == 0 {
			return -1
		}
		return n
	}
	o := eval.CompactOptions{Length: *length, Depths: *depths, Trials: none(*trials), Facts: *facts, FactContexts: none(*factCtx), KLContexts: none(*klCtx), KLTokens: *klTokens, Seed: *seed, Measured: *measured}
	for _, name := range strings.Split(*methods, ",") {
		m, err := compact.ParseMethod(strings.TrimSpace(name))
		if err != nil {
			return usageError{err}
		}
		o.Methods = append(o.Methods, m)
	}
	for _, r := range strings.Split(*ratios, ",") {
		x, err := parseRatio(r)
		if err != nil {
			return err
		}
		o.Ratios = append(o.Ratios, x)
	}
	if *length < 64 || *depths < 1 || *trials < 0 || *facts < 1 || *factCtx < 0 || *klCtx < 0 || *klTokens < 2 {
		return usageError{errors.New("--length must be ≥ 64, --depths and --facts ≥ 1, --kl-tokens ≥ 2, the counts ≥ 0")}
	}
	base, q, err := cf.base(compact.AMHighest, *seed)
	if err != nil {
		return err
	}
	o.Window, o.Queries, o.ExtraShare, o.Extra, o.Select = base.Window, base.Queries, base.ExtraShare, q, base.Select
	if o.Shares, err = cf.shares(); err != nil {
		return err
	}
	if *saveBudgets != "" && !*measured {
		return usageError{errors.New("--save-budgets saves what --measured-budgets measures: give both")}
	}
	l, kv, text, err := openText(e, *file, mf, kvf)
	if err != nil {
		return err
	}
	defer l.m.Close()
	o.KV = kv
	o.Progress = func(done, total int) {
		if isTerminal(e.stderr) {
			fmt.Fprintf(e.stderr, "\rcontext %d/%d", done, total)
		}
	}
	res, err := eval.CompactEval(context.Background(), l.m, l.tok, l.tok.Encode(text, false), o)
	if isTerminal(e.stderr) {
		fmt.Fprintln(e.stderr)
	}
	if err != nil {
		return err
	}
	if *saveBudgets != "" {
		if err := saveCompactBudgets(e, *saveBudgets, l, res); err != nil {
			return err
		}
	}
	if *plotFile != "" {
		if err := writeCompactPlot(*plotFile, res); err != nil {
			return err
		}
	}
	if *format == "json" {
		return json.NewEncoder(e.stdout).Encode(res)
	}
	fmt.Fprintf(e.stdout, "contexts of %d tokens; window %d, %d reference queries per KV head, self-study %d × %d tokens, rereading %v; am's keys by %s\n",
		res.Tokens, o.Window, o.Queries, q.SelfStudy, q.SelfTokens, q.Repeat, cmp.Or(o.Select, compact.ByMaxRMS))
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "method\tbudgets\tratio\tkv\tkept\tbytes\treduction\tneedle\tfacts\tKL\ttop-1\tseconds\twarnings\t")
	for _, r := range res.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%g\t%s\t%.1f\t%.0f\t%.1fx\t%.3f\t%.3f\t%.4f\t%.3f\t%.2f\t%d\t\n", r.Method, r.Budgets, r.Ratio, r.KV, r.Kept, r.Bytes, r.Reduction, r.Needle, r.Facts, r.KL, r.Top1, r.Seconds, r.Warnings)
	}
	return tw.Flush()
}

// saveCompactBudgets saves the first measured budgets of res to path.
func saveCompactBudgets(e *env, path string, l *loaded, res eval.CompactResult) error {
	for _, r := range res.Rows {
		if r.Plan == nil {
			continue
		}
		name, _ := l.m.File().String("general.name")
		b := compact.BudgetShares{Model: name, Method: compact.Method(r.Method), Ratio: r.Ratio, Shares: r.Plan.Shares}
		if err := eval.SaveFile(path, b); err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "budgets of %s at %gx saved to %s\n", r.Method, r.Ratio, path)
		return nil
	}
	return errors.New("eval compact: no measured budgets to save (no attention-matching method?)")
}

// writeCompactPlot draws each method's needle (solid) and multi-fact
// (dashed) scores against the total KV reduction, the uncompacted caches
// as points at their own reduction.
func writeCompactPlot(path string, res eval.CompactResult) error {
	c := &plot.Chart{Title: fmt.Sprintf("compaction of %d-token contexts: retrieval vs total KV reduction", res.Tokens), XLabel: "total KV reduction against f16 (×)", YLabel: "exact answers"}
	type key struct{ method, budgets, kv string }
	var order []key
	rows := map[key][]eval.CompactRow{}
	for _, r := range res.Rows {
		k := key{r.Method, r.Budgets, r.KV}
		if _, ok := rows[k]; !ok {
			order = append(order, k)
		}
		rows[k] = append(rows[k], r)
	}
	for _, k := range order {
		name := k.method
		switch {
		case k.method == "none":
			name = "uncompacted"
		case k.budgets != "" && k.budgets != "uniform":
			name += " (" + k.budgets + " budgets)"
		}
		name += " " + k.kv
		needle, facts := plot.Series{Name: name + " needle"}, plot.Series{Name: name + " facts", Dashed: true}
		for _, r := range rows[k] {
			needle.X, needle.Y = append(needle.X, r.Reduction), append(needle.Y, r.Needle)
			facts.X, facts.Y = append(facts.X, r.Reduction), append(facts.Y, r.Facts)
		}
		c.Series = append(c.Series, needle, facts)
	}
	return writeSVG(path, c)
}
