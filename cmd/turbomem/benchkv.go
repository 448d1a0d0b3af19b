package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/turbomem/turbomem/bench"
	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/plot"
)

// Defaults of 'bench kv'.
const (
	benchKVFormats   = "f16,q8_0,q4_0,kivi2,turbo2.5,turbo3,turbo3.5,turbo4,turbo3.5p,polar"
	benchKVLlamaKV   = "f16,q8_0,q4_0"
	benchKVPeer      = "bench/peers/greedy.mjs"
	benchKVMaxTokens = 1 << 20
)

func benchKV(e *env, args []string) error {
	fs := newFlagSet(e, "bench kv", "\n\nAttention-step time of one layer against context length for each KV format,\n"+
		"beside our f16 cache in the same run, on keys, values and queries with the\n"+
		"statistics of the model's own (recorded over the first --record tokens of the\n"+
		"embedded held-out text; Gaussian per channel beyond them); then decode tokens/s\n"+
		"of the model at --decode-ctx for each format and, with --llama, of llama.cpp\n"+
		"(bench/peers, flash attention on) with its f16/q8_0/q4_0 caches. Attention per\n"+
		"layer is also estimated from decode times: (t(N) − t(base))·N/(N − base)/layers,\n"+
		"base the smallest --decode-ctx, for both engines alike. With --repeat, the formats\n"+
		"take turns round after round (median and range reported). --llama-bench runs the\n"+
		"natively built llama-bench at the decode contexts instead of the Node peer (its\n"+
		"best of flash attention off and on). If llama.cpp fails, our measurements are\n"+
		"still printed (exit status 1).")
	mf := addModelFlags(fs, "; of llama.cpp too (on a busy machine use fewer: llama.cpp's threads spin at barriers and collapse when one is preempted)")
	kvf := addKVListFlags(fs, benchKVFormats, "; f16 is always measured as the reference")
	ctxList := fs.String("ctx", "1024,4096,16384,65536", "context lengths of the attention step")
	decodeList := fs.String("decode-ctx", "1024,4096,16384", "context lengths to decode at (empty: no decode)")
	n := fs.Int("n", 32, "tokens decoded at each decode context")
	iters := fs.Int("iters", 30, "timed Attend calls per format, context and round (the median is reported)")
	repeat := fs.Int("repeat", 1, "rounds of the attention timing and of each decode (median and range reported)")
	llamaBench := fs.String("llama-bench", "", "path to a natively built llama-bench: decode llama.cpp with each --llama-kv type at the decode contexts")
	record := fs.Int("record", 2048, "tokens of held-out text recorded for the K/V statistics")
	layer := fs.Int("layer", -1, "layer whose statistics the synthetic tokens follow (-1: the middle one)")
	llama := fs.Bool("llama", false, "also decode with llama.cpp through node-llama-cpp (cd bench/peers && npm install; --llama-bench is the fair peer)")
	peer := fs.String("peer", benchKVPeer, "the llama.cpp peer script")
	llamaKV := fs.String("llama-kv", benchKVLlamaKV, "llama.cpp KV cache types to run (flash attention on; with --llama-bench, f16 also off)")
	format := formatFlag(fs)
	plotFile := plotFlag(fs, "attention µs against context")
	jsonFile := fs.String("json", "", "also write the report as JSON to this file")
	seed := seedFlag(fs, "the synthetic tokens")
	calibChunks := calibChunksFlag(fs, "klt formats: calibration windows of 1024 tokens, from the end of the embedded held-out text")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkFormat(*format); err != nil {
		return err
	}
	if err := mf.check(); err != nil {
		return err
	}
	if *iters < 1 || *iters > 100000 {
		return usageError{fmt.Errorf("--iters %d out of range [1, 100000]", *iters)}
	}
	if *n < 2 || *n > 100000 {
		return usageError{fmt.Errorf("--n %d out of range [2, 100000]", *n)}
	}
	if *repeat < 1 || *repeat > 1000 {
		return usageError{fmt.Errorf("--repeat %d out of range [1, 1000]", *repeat)}
	}
	if *record < 2 || *record > benchKVMaxTokens {
		return usageError{fmt.Errorf("--record %d out of range [2, %d]", *record, benchKVMaxTokens)}
	}
	configs, err := kvf.configs(false)
	if err != nil {
		return err
	}
	ctxs, err := parseContexts("--ctx", *ctxList, 1)
	if err != nil {
		return err
	}
	if len(ctxs) == 0 {
		return usageError{fmt.Errorf("--ctx: no context length given")}
	}
	decodeCtxs, err := parseContexts("--decode-ctx", *decodeList, 2)
	if err != nil {
		return err
	}
	var llamaTypes []string
	if *llama && *llamaBench != "" {
		return usageError{errors.New("--llama and --llama-bench: choose one peer")}
	}
	if *llama || *llamaBench != "" {
		if llamaTypes, err = parseLlamaKV(*llamaKV); err != nil {
			return err
		}
		if len(decodeCtxs) == 0 {
			return usageError{fmt.Errorf("--llama and --llama-bench need at least one --decode-ctx")}
		}
	}
	if *llama {
		if err := bench.CheckPeer(*peer); err != nil {
			return usageError{fmt.Errorf("--peer: %w", err)}
		}
	}
	if *llamaBench != "" {
		if st, err := os.Stat(*llamaBench); err != nil || st.IsDir() {
			return usageError{fmt.Errorf("--llama-bench %q: not an executable file", *llamaBench)}
		}
	}
	if err := checkOutputs(*plotFile, *jsonFile); err != nil {
		return err
	}
	l, err := mf.load(e)
	if err != nil {
		return err
	}
	defer l.m.Close()
	if *calibChunks < 1 || *calibChunks > 1024 {
		return usageError{fmt.Errorf("--kv-calib-chunks %d out of range [1, 1024]", *calibChunks)}
	}
	text := l.tok.Encode(defaultmodel.HeldOut(), true)
	if err := benchCovariances(e, l, configs, text, *calibChunks); err != nil {
		return err
	}
	if err := checkConfigs(l.m, configs...); err != nil {
		return err
	}
	if *layer < -1 || *layer >= l.m.Config.Layers {
		return usageError{fmt.Errorf("--layer %d out of range [-1, %d)", *layer, l.m.Config.Layers)}
	}
	o := bench.KVOptions{
		Name: modelName(*mf.model), Configs: configs, Contexts: ctxs, DecodeContexts: decodeCtxs, N: *n, Iters: *iters, Repeat: *repeat,
		Text: text, Record: *record, Layer: *layer, Threads: mf.threadCount(), Seed: *seed,
		Llama: llamaTypes, LlamaBench: *llamaBench, Peer: *peer, ModelPath: *mf.model,
	}
	if isTerminal(e.stderr) {
		o.Progress = func(format string, a ...any) { fmt.Fprintf(e.stderr, "\r\033[K"+format, a...) }
	}
	rep, runErr := bench.KV(l.m, o)
	if runErr != nil && !errors.Is(runErr, bench.ErrPeer) {
		return runErr
	}
	// A failed peer keeps what we measured: printed, then the error.
	if *plotFile != "" {
		if err := writeAttentionPlot(*plotFile, rep); err != nil {
			return fmt.Errorf("bench kv: plot: %w", err)
		}
	}
	if *jsonFile != "" {
		if err := writeJSONFile(*jsonFile, rep); err != nil {
			return fmt.Errorf("bench kv: %w", err)
		}
	}
	if *format == "json" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = writeKVBenchTables(e.stdout, rep)
	}
	if runErr != nil {
		return fmt.Errorf("bench kv: %w; the measurements above are turbomem's alone", runErr)
	}
	return err
}

// benchCovariances gives the configurations that need them (the klt
// formats) K/V covariances measured once on chunks windows of 1024 tokens
// from the end of text, as run's --kv-calib does with the embedded text.
func benchCovariances(e *env, l *loaded, configs []kvcache.Config, text []int32, chunks int) error {
	if !slices.ContainsFunc(configs, kvcache.Config.NeedsCovariances) {
		return nil
	}
	fmt.Fprintf(e.stderr, "measuring K/V covariances on %d windows of 1024 tokens\n", chunks)
	cov, err := eval.MeasureCovariances(context.Background(), l.m, text, l.tok.BOS(), 1024, chunks)
	if err != nil {
		return fmt.Errorf("bench kv: %w", err)
	}
	for i, c := range configs {
		if c.NeedsCovariances() {
			configs[i] = c.WithCovariances(cov)
		}
	}
	return nil
}

// writeJSONFile writes v to path as indented JSON.
func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// parseContexts parses a comma-separated list of context lengths, each at
// least lo, into ascending order without repeats; an empty list is none.
func parseContexts(flagName, list string, lo int) ([]int, error) {
	out, err := parseInts(flagName, list, lo, benchKVMaxTokens)
	slices.Sort(out)
	return slices.Compact(out), err
}

// parseLlamaKV parses the llama.cpp cache types (--cache-type-k names).
func parseLlamaKV(list string) ([]string, error) {
	known := []string{"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"}
	var out []string
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if !slices.Contains(known, f) {
			return nil, usageError{fmt.Errorf("--llama-kv: %q is not a llama.cpp cache type (%s)", f, strings.Join(known, ", "))}
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out, nil
}

// modelName is the -m path, or the embedded model's name.
func modelName(path string) string {
	if path == "" {
		return defaultmodel.Name + " (embedded)"
	}
	return path
}

// writeKVBenchTables prints the report as tables.
func writeKVBenchTables(w io.Writer, rep bench.KVReport) error {
	sh := rep.Shape
	fmt.Fprintf(w, "%s: query heads %d, KV heads %d, head dim %d, layers %d; kernels %s; threads %d\n",
		rep.Model, sh.QHeads, sh.KVHeads, sh.HeadDim, rep.Layers, rep.Kernels, rep.Threads)
	rounds := ""
	if rep.Rounds > 1 {
		rounds = fmt.Sprintf(", median of %d rounds [range]", rep.Rounds)
	}
	fmt.Fprintf(w, "\nAttention step of one layer, µs (median of %d calls%s) and speed-up vs f16; tokens: %d recorded from layer %d, then Gaussian with its per-channel statistics\n",
		rep.Iters, rounds, rep.Recorded, rep.Layer)
	var ctxs, formats []string
	cell := map[[2]string]bench.AttnRow{}
	for _, r := range rep.Attention {
		c := strconv.Itoa(r.Context)
		if !slices.Contains(ctxs, c) {
			ctxs = append(ctxs, c)
		}
		if !slices.Contains(formats, r.Format) {
			formats = append(formats, r.Format)
		}
		cell[[2]string{r.Format, c}] = r
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "format\t")
	for _, c := range ctxs {
		fmt.Fprintf(tw, "%s µs\t×f16\t", c)
	}
	fmt.Fprintln(tw)
	for _, f := range formats {
		fmt.Fprintf(tw, "%s\t", f)
		for _, c := range ctxs {
			r := cell[[2]string{f, c}]
			if rep.Rounds > 1 {
				fmt.Fprintf(tw, "%.1f [%.1f–%.1f]\t%.2fx\t", r.Micros, r.MicrosMin, r.MicrosMax, r.VsF16)
			} else {
				fmt.Fprintf(tw, "%.1f\t%.2fx\t", r.Micros, r.VsF16)
			}
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rep.Decode) > 0 {
		fmt.Fprintf(w, "\nDecode, %d tokens after a prompt of the context's length, tok/s from the median step; attention per layer estimated as (t(N) − t(%d))·N/(N − %d)/%d\n",
			rep.DecodeN, rep.Base, rep.Base, rep.Layers)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "engine\tformat\tcontext\tprompt tok/s\tdecode tok/s\tmin–max\t×f16\tattn µs/layer\t×our f16\t×llama.cpp f16\t")
		for _, r := range rep.Decode {
			attn, vsF16, vsLlama, spread, engine, prompt := "-", "-", "-", "", r.Engine, "-"
			if r.PromptTPS > 0 {
				prompt = fmt.Sprintf("%.1f", r.PromptTPS)
			}
			if r.DecodeMax > r.DecodeMin {
				spread = fmt.Sprintf("%.2f–%.2f", r.DecodeMin, r.DecodeMax)
			}
			if r.FlashAttn != "" {
				engine += " fa " + r.FlashAttn
			}
			if r.AttnMicros != 0 {
				attn = fmt.Sprintf("%.1f", r.AttnMicros)
			}
			if r.VsF16 != 0 {
				vsF16 = fmt.Sprintf("%.2fx", r.VsF16)
			}
			if r.VsLlamaF16 != 0 {
				vsLlama = fmt.Sprintf("%.2fx", r.VsLlamaF16)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%.2f\t%s\t%.2fx\t%s\t%s\t%s\t\n", engine, r.Format, r.Context, prompt, r.DecodeTPS, spread, r.DecodeVsF16, attn, vsF16, vsLlama)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(rep.Summary) > 0 {
		fmt.Fprintln(w, "\nTargets (> 1: faster)")
		for _, s := range rep.Summary {
			fmt.Fprintf(w, "  %s at %d tokens: %.2fx (%s)\n", s.What, s.Context, s.Ratio, s.Source)
		}
	}
	return nil
}

// writeAttentionPlot draws the attention step's µs against log₂ of the
// context, one line per format.
func writeAttentionPlot(path string, rep bench.KVReport) error {
	c := &plot.Chart{Title: fmt.Sprintf("Attention step of one layer (%d query heads, %d KV heads, d=%d)", rep.Shape.QHeads, rep.Shape.KVHeads, rep.Shape.HeadDim),
		XLabel: "log₂ context tokens", YLabel: "µs per step", LogY: true}
	idx := map[string]int{}
	for _, r := range rep.Attention {
		k, ok := idx[r.Format]
		if !ok {
			k = len(c.Series)
			idx[r.Format] = k
			c.Series = append(c.Series, plot.Series{Name: r.Format, Dashed: r.Format == "f16"})
		}
		c.Series[k].X = append(c.Series[k].X, math.Log2(float64(r.Context)))
		c.Series[k].Y = append(c.Series[k].Y, r.Micros)
	}
	return writeSVG(path, c)
}
