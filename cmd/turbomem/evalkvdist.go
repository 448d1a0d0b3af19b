package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/plot"
)

func evalKVDist(e *env, args []string) error {
	fs := newFlagSet(e, "eval kvdist", "\n\nDistortion of attention by each KV format, per layer, on the keys, values and\nqueries the model produces on --file (one window of --ctx tokens) against\nGaussian ones of the same norms: the relative error ‖o − o_ref‖²/‖o_ref‖² of the\nattention output against a float32 cache, at every --every-th position from\n--first on, with only the tokens up to it in the cache. K and V columns keep\nthe other side in float32.")
	mf := addModelFlags(fs, "")
	file := fs.String("file", "", "text (default: the embedded held-out text)")
	kvf := addKVListFlags(fs, "f16,q8_0,q4_0,kivi2,turbo2.5,turbo3,turbo3.5,turbo4,turbo3.5p,polar", "")
	ctxLen := fs.Int("ctx", 1024, "tokens run through the model")
	first := fs.Int("first", kvcache.DefaultWindow, "first compared position")
	every := fs.Int("every", 8, "step between compared positions")
	seed := seedFlag(fs, "the random vectors")
	format := formatFlag(fs)
	plotFile := plotFlag(fs, "the attention error against the layer")
	structure := fs.Bool("structure", false, "instead, per layer and KV head: attention mass on the first token, tokens 1-3 and the\nrecent window; key norm of token 0; share of the keys' energy in their mean after and\nbefore RoPE and of the values'; largest channel energy over the mean one")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkFormat(*format); err != nil {
		return err
	}
	if err := mf.check(); err != nil {
		return err
	}
	if err := checkOutputs(*plotFile); err != nil {
		return err
	}
	if *ctxLen < 2 || *first < 1 || *every < 1 {
		return usageError{fmt.Errorf("--ctx must be at least 2, --first and --every at least 1")}
	}
	kvs, err := kvf.configs(false)
	if err != nil {
		return err
	}
	text, err := readText(*file)
	if err != nil {
		return err
	}
	l, err := mf.load(e)
	if err != nil {
		return err
	}
	defer l.m.Close()
	if err := checkConfigs(l.m, kvs...); err != nil {
		return err
	}
	if *structure {
		return printKVStructure(e, l.m, l.tok.Encode(text, true), *ctxLen, *first, *every, *format)
	}
	o := eval.KVDistOptions{Ctx: *ctxLen, First: *first, Every: *every, Seed: *seed}
	o.Progress = func(done, total int) {
		if isTerminal(e.stderr) {
			fmt.Fprintf(e.stderr, "\r%d/%d layers × formats", done, total)
		}
	}
	res, err := eval.KVDistortion(context.Background(), l.m, l.tok.Encode(text, true), uniformSpecs(kvs), o)
	if isTerminal(e.stderr) {
		fmt.Fprintln(e.stderr)
	}
	if err != nil {
		return err
	}
	means := res.Means()
	if *plotFile != "" {
		if err := writeKVDistPlot(*plotFile, res); err != nil {
			return err
		}
	}
	if *format == "json" {
		return json.NewEncoder(e.stdout).Encode(append(res.Rows, means...))
	}
	fmt.Fprintf(e.stdout, "%d tokens, %d positions compared (%d to %d, every %d); relative attention-output error against f32\n",
		res.Tokens, len(res.Positions), res.Positions[0], res.Positions[len(res.Positions)-1], *every)
	fmt.Fprintln(e.stdout, "real: the model's K, V, q on the text; random: Gaussian of the layer's RMS norms; K, V: only keys, values in the format")
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "layer\tformat\treal\trandom\treal/random\tK real\tK random\tV real\tV random\t")
	for _, r := range append(res.Rows, means...) {
		layer := fmt.Sprint(r.Layer)
		if r.Layer < 0 {
			layer = "mean"
		}
		ratio := "-"
		if r.AttnRandom > 0 {
			ratio = fmt.Sprintf("%.3f", r.AttnReal/r.AttnRandom)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.3e\t%.3e\t%s\t%.3e\t%.3e\t%.3e\t%.3e\t\n", layer, r.Format, r.AttnReal, r.AttnRandom, ratio, r.KeyReal, r.KeyRandom, r.ValueReal, r.ValueRandom)
	}
	return tw.Flush()
}

// writeKVDistPlot draws each format's attention error on real vectors
// against the layer; formats without error (f32) are left out of the log
// axis.
func writeKVDistPlot(path string, res eval.KVDistResult) error {
	c := &plot.Chart{Title: "KV formats: attention-output error per layer on the model's K, V, q", XLabel: "layer", YLabel: "‖o − o_ref‖² / ‖o_ref‖²", LogY: true}
	for _, m := range res.Means() {
		s := plot.Series{Name: m.Format}
		for _, r := range res.Rows {
			if r.Format == m.Format && r.AttnReal > 0 {
				s.X, s.Y = append(s.X, float64(r.Layer)), append(s.Y, r.AttnReal)
			}
		}
		if len(s.X) > 0 {
			c.Series = append(c.Series, s)
		}
	}
	return writeSVG(path, c)
}

// printKVStructure prints eval.KVStructure of the first ctx tokens of ids.
func printKVStructure(e *env, m *model.Model, ids []int32, ctx, first, every int, format string) error {
	traces, err := eval.RecordKV(m, ids[:min(ctx, len(ids), m.Config.Context)], -1)
	if err != nil {
		return err
	}
	rows, err := eval.KVStructure(traces, first, every, kvcache.DefaultWindow)
	if err != nil {
		return err
	}
	if format == "json" {
		return json.NewEncoder(e.stdout).Encode(rows)
	}
	fmt.Fprintf(e.stdout, "%d tokens; attention at every %d-th position from %d; recent = the last %d tokens\n", traces[0].Len(), every, first, kvcache.DefaultWindow)
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "layer\thead\tattn tok 0\ttok 1-3\trecent\t‖k0‖/median\tK mean share\tbefore RoPE\tV mean share\tK top chan\tcentred\tV top chan\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%d\t%d\t%.3f\t%.3f\t%.3f\t%.2f\t%.3f\t%.3f\t%.3f\t%.1f\t%.1f\t%.1f\t\n", r.Layer, r.Head, r.Sink, r.First, r.Recent, r.Key0, r.MeanShare, r.PreMeanShare, r.ValueMeanShare, r.TopChannel, r.CenteredTop, r.ValueTop)
	}
	return tw.Flush()
}
