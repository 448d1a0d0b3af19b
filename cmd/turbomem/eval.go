package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"text/tabwriter"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/plot"
)

// openText reads the text of path (readText), then opens the model and
// KV configuration the flags name: the steps of the eval commands that
// read a haystack.
func openText(e *env, path string, mf modelFlags, kvf kvFlags) (*loaded, kvcache.Config, string, error) {
	text, err := readText(path)
	if err != nil {
		return nil, kvcache.Config{}, "", err
	}
	l, kv, err := openWithKV(e, mf, kvf)
	return l, kv, text, err
}

// readText returns the text of path, or the embedded held-out text when
// path is empty.
func readText(path string) (string, error) {
	if path == "" {
		return defaultmodel.HeldOut(), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func evalPPL(e *env, args []string) error {
	fs := newFlagSet(e, "eval ppl", "\n\nPerplexity over --file in windows of --ctx tokens, scored as llama-perplexity\ndoes (the logits at positions ctx/2 … ctx−2 of each window). --dump saves the next-token distributions;\n--ref compares this run with a dump: KL divergence (mean, p99) and top-1.")
	mf := addModelFlags(fs, "")
	file := fs.String("file", "", "text to score (default: the embedded held-out text)")
	ctxLen := fs.Int("ctx", 512, "window length in tokens")
	chunks := fs.Int("chunks", 0, "score at most this many windows (0: all)")
	kvf := addKVFlags(fs, "f16")
	dump := fs.String("dump", "", "write the next-token distributions to this file")
	ref := fs.String("ref", "", "compare with the distributions in this file")
	topK := fs.Int("top-k", 64, "most likely tokens kept per position in --dump")
	format := formatFlag(fs)
	if err := parseOutputFlags(fs, args, format, dump); err != nil {
		return err
	}
	text, err := readText(*file)
	if err != nil {
		return err
	}
	var refD *eval.Dists
	if *ref != "" {
		f, err := os.Open(*ref)
		if err != nil {
			return err
		}
		refD, err = eval.ReadDists(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", *ref, err)
		}
	}
	l, kv, err := openWithKV(e, mf, kvf)
	if err != nil {
		return err
	}
	defer l.m.Close()
	ids := l.tok.Encode(text, true)
	res, err := eval.Perplexity(context.Background(), l.m, ids, l.tok.BOS(), eval.PPLOptions{
		Ctx: *ctxLen, KV: kv, MaxChunks: *chunks, TopK: *topK, Ref: refD,
		Progress: func(done, total int) {
			if isTerminal(e.stderr) {
				fmt.Fprintf(e.stderr, "\rwindow %d/%d", done, total)
			}
		},
	})
	if isTerminal(e.stderr) {
		fmt.Fprintln(e.stderr)
	}
	if err != nil {
		return err
	}
	if *dump != "" {
		f, err := os.Create(*dump)
		if err != nil {
			return err
		}
		if _, err := res.Dists.WriteTo(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	if *format == "json" {
		out := map[string]any{"kv": kv.String(), "ctx": *ctxLen, "tokens": res.Tokens, "chunks": res.Chunks, "ppl": res.PPL, "ppl_stderr": res.PPLStdErr, "nll": res.NLL}
		if a := res.Agreement; a != nil {
			out["kl_mean"], out["kl_p99"], out["kl_max"], out["top1"], out["delta_nll"] = a.KLMean, a.KLP99, a.KLMax, a.Top1, a.DeltaNLL
		}
		return json.NewEncoder(e.stdout).Encode(out)
	}
	mem, err := kvMemory(l.m, kv, *ctxLen)
	if err != nil {
		return err
	}
	name := *file
	if name == "" {
		name = "embedded held-out text"
	}
	fmt.Fprintf(e.stdout, "%s: %d windows of %d tokens, %d scored\n%s\nperplexity %.4f ± %.4f (mean NLL %.5f)\n", name, res.Chunks, *ctxLen, res.Tokens, mem, res.PPL, res.PPLStdErr, res.NLL)
	if a := res.Agreement; a != nil {
		fmt.Fprintf(e.stdout, "vs %s: KL mean %.6f, p99 %.6f, max %.6f; top-1 agreement %.4f; ΔNLL %+.6f\n", *ref, a.KLMean, a.KLP99, a.KLMax, a.Top1, a.DeltaNLL)
	}
	return nil
}

func evalNeedle(e *env, args []string) error {
	fs := newFlagSet(e, "eval needle", "\n\nHides a random number at each depth of held-out text (--file) of each length,\nasks for it at the end and scores exact greedy answers.")
	mf := addModelFlags(fs, "")
	file := fs.String("file", "", "haystack text (default: the embedded held-out text)")
	lengths := fs.String("lengths", "512,1024,2048,4096", "comma-separated context lengths")
	depths := fs.Int("depths", 11, "needle depths per length, from start to end")
	trials := fs.Int("trials", 1, "needles per cell")
	seed := seedFlag(fs, "the needles and haystack offsets")
	kvf := addKVFlags(fs, "f16")
	plotFile := plotFlag(fs, "the grid as a heat map")
	format := formatFlag(fs)
	if err := parseOutputFlags(fs, args, format, plotFile); err != nil {
		return err
	}
	if *depths < 1 || *depths > 101 || *trials < 1 || *trials > 1000 {
		return usageError{fmt.Errorf("--depths must be in [1, 101] and --trials in [1, 1000]")}
	}
	ls, err := parseInts("--lengths", *lengths, 16, 1<<24)
	if err != nil {
		return err
	}
	if len(ls) == 0 {
		return usageError{errors.New("--lengths: no length given")}
	}
	l, kv, text, err := openText(e, *file, mf, kvf)
	if err != nil {
		return err
	}
	defer l.m.Close()
	res, err := eval.Needle(context.Background(), l.m, l.tok, l.tok.Encode(text, false), eval.NeedleOptions{
		Lengths: ls, Depths: *depths, Trials: *trials, Seed: *seed, KV: kv,
	})
	if err != nil {
		return err
	}
	if *plotFile != "" {
		h := &plot.Heatmap{Title: fmt.Sprintf("needle in a haystack, KV %s: overall %.3f", kv, res.Overall), XLabel: "needle depth", YLabel: "context length"}
		for _, d := range res.Depths {
			h.XTicks = append(h.XTicks, fmt.Sprintf("%.1f", d))
		}
		for _, n := range res.Lengths {
			h.YTicks = append(h.YTicks, strconv.Itoa(n))
		}
		h.Values = res.Score
		if err := writeSVG(*plotFile, h); err != nil {
			return err
		}
	}
	if *format == "json" {
		return json.NewEncoder(e.stdout).Encode(map[string]any{"kv": kv.String(), "lengths": res.Lengths, "depths": res.Depths, "score": res.Score, "needle": res.Overall})
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 1, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "length \\ depth\t")
	for _, d := range res.Depths {
		fmt.Fprintf(tw, "%.2f\t", d)
	}
	fmt.Fprintln(tw)
	for i, n := range res.Lengths {
		fmt.Fprintf(tw, "%d\t", n)
		for _, v := range res.Score[i] {
			fmt.Fprintf(tw, "%.2f\t", v)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	mem, err := kvMemory(l.m, kv, slices.Max(res.Lengths))
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "needle score %.4f (%d lengths × %d depths × %d trials)\n%s\n", res.Overall, len(res.Lengths), len(res.Depths), *trials, mem)
	return nil
}
