package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/turbomem/turbomem/compact"
)

// compactFlags are the flags of prompt compaction (run).
type compactFlags struct {
	ratio  *string
	method *string
	compactFitFlags
}

// compactFitFlags are the compaction flags that run and eval compact
// share.
type compactFitFlags struct {
	window         *int
	queries        *int
	extraShare     *float64
	self, selfToks *int
	repeat         *bool
	sel            *string
	budgets        *string
}

// methodNames lists the compaction methods for help texts.
func methodNames() string {
	var names []string
	for _, m := range compact.Methods() {
		names = append(names, string(m))
	}
	return strings.Join(names, ", ")
}

func addCompactFlags(fs *flag.FlagSet) compactFlags {
	return compactFlags{
		ratio:           fs.String("compact", "", "after the prompt's prefill, compact its KV cache to 1/R of its tokens per head (R or Rx, e.g. 20x; the window included)"),
		method:          fs.String("compact-method", string(compact.AMHighest), "compaction method: "+methodNames()),
		compactFitFlags: addCompactFitFlags(fs),
	}
}

func addCompactFitFlags(fs *flag.FlagSet) compactFitFlags {
	return compactFitFlags{
		window:     fs.Int("compact-window", 16, "the context's last tokens kept as they are when compacting"),
		queries:    fs.Int("compact-queries", compact.DefaultQueries, "reference queries per KV head for attention matching"),
		extraShare: fs.Float64("compact-extra-share", compact.DefaultExtraShare, "the largest share of the reference queries taken by the self-study (and rereading) queries, the context's own the rest"),
		self:       fs.Int("compact-self", 32, "self-study samples: the model writing about the context, whose queries attention matching fits to"),
		selfToks:   fs.Int("compact-self-tokens", 24, "tokens per self-study sample"),
		sel:        fs.String("compact-select", "max+rms", "how attention matching (am) chooses the kept keys by their attention weight over the reference queries: max+rms (half by the largest, the rest by RMS), rms (the paper's), max, mean"),
		repeat:     fs.Bool("compact-repeat", false, "add the queries of the model rereading the context (KVzip uses them always)"),
		budgets:    fs.String("compact-budgets", "", "split the kept tokens over the layers and KV heads as this file says, measured once per model (eval compact --measured-budgets --save-budgets FILE) instead of as many per head everywhere"),
	}
}

// shares reads the --compact-budgets file, or returns nil without one.
func (c compactFitFlags) shares() (*compact.BudgetShares, error) {
	if *c.budgets == "" {
		return nil, nil
	}
	f, err := os.Open(*c.budgets)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := compact.ReadBudgetShares(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", *c.budgets, err)
	}
	return &b, nil
}

// parseRatio reads a compaction ratio, "20" or "20x".
func parseRatio(s string) (float64, error) {
	r, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "x"), 64)
	if err != nil || !(r >= 1) || r > 1e6 {
		return 0, usageError{fmt.Errorf("compaction ratio %q: want a number ≥ 1, e.g. 20x", s)}
	}
	return r, nil
}

// base returns the options the flags give for method m, without a ratio.
func (c compactFitFlags) base(m compact.Method, seed uint64) (compact.Options, compact.QueryOptions, error) {
	if *c.window < 0 || *c.queries < 1 || *c.self < 0 || *c.selfToks < 1 || !(*c.extraShare > 0 && *c.extraShare <= 1) {
		return compact.Options{}, compact.QueryOptions{}, usageError{errors.New("--compact-window must be ≥ 0, --compact-queries and --compact-self-tokens ≥ 1, --compact-self ≥ 0, --compact-extra-share in (0, 1]")}
	}
	sel, err := compact.ParseSelection(*c.sel)
	if err != nil {
		return compact.Options{}, compact.QueryOptions{}, usageError{err}
	}
	o := compact.Options{Method: m, Window: *c.window, Queries: *c.queries, ExtraShare: *c.extraShare, Seed: seed, Select: sel}
	q := compact.QueryOptions{Repeat: *c.repeat, SelfStudy: *c.self, SelfTokens: *c.selfToks, Seed: seed}
	if !m.Fits() && m != compact.KVzip {
		q = compact.QueryOptions{} // eviction scores the prefill's own attention
	}
	return o, q, nil
}

// options returns the compaction --compact asks for, or nil without it.
func (c compactFlags) options(seed uint64) (*compact.Options, compact.QueryOptions, error) {
	if *c.ratio == "" {
		return nil, compact.QueryOptions{}, nil
	}
	r, err := parseRatio(*c.ratio)
	if err != nil {
		return nil, compact.QueryOptions{}, err
	}
	m, err := compact.ParseMethod(*c.method)
	if err != nil {
		return nil, compact.QueryOptions{}, usageError{err}
	}
	o, q, err := c.base(m, seed)
	if err != nil {
		return nil, q, err
	}
	o.Ratio = r
	b, err := c.shares()
	if b != nil {
		o.Share = b.Shares
	}
	return &o, q, err
}

// printCompaction reports a prompt's compaction on stderr: tokens kept,
// times beside the prefill's, bytes before and after.
func printCompaction(e *env, m compact.Method, r compact.Report) {
	fmt.Fprintf(e.stderr, "compacted %d tokens to %.1f per layer and KV head (%s, %.1fx): prefill %.2f s, reference queries %.2f s, compaction %.2f s; KV cache %s → %s (%.1fx smaller)\n",
		r.Tokens, r.Kept, m, float64(r.Tokens)/r.Kept, r.Prefill.Seconds(), r.Queries.Seconds(), r.Compaction.Seconds(), humanBytes(r.Before), humanBytes(r.After), float64(r.Before)/float64(max(r.After, 1)))
	for _, w := range r.Warnings {
		fmt.Fprintln(e.stderr, "warning: compaction:", w)
	}
}
