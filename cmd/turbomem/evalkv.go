package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"text/tabwriter"

	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/plot"
)

func evalKV(e *env, args []string) error {
	fs := newFlagSet(e, "eval kv", "\n\nOne row per KV format: bits per coordinate, bytes per token and ratio to f16 at\n--ctx tokens (window included), perplexity, mean and p99 KL and top-1 agreement\nagainst the f16 cache on the same windows, and the needle score.")
	mf := addModelFlags(fs, "")
	file := fs.String("file", "", "text (default: the embedded held-out text)")
	kvf := addKVListFlags(fs, "f16,q8_0,q4_0,kivi2,turbo2.5,turbo3,turbo3.5,turbo4,turbo3.5p,polar,turbo3.5:turbo2.5,turbo2.5:turbo3.5,auto:3,auto:3.5", "; auto:B a per-layer plan of B bits per coordinate measured on the text's end")
	ctxLen := fs.Int("ctx", 1024, "window length in tokens")
	chunks := fs.Int("chunks", 8, "windows scored per format (0: all)")
	lengths := fs.String("needle-lengths", "1024,2048", "needle context lengths (empty: no needle test)")
	depths := fs.Int("needle-depths", 5, "needle depths per length")
	trials := fs.Int("needle-trials", 1, "needles per cell")
	candidates := candidatesFlag(fs, "formats auto:B rows choose among")
	calibChunks := calibChunksFlag(fs, "calibration windows of auto:B rows, from the end of the text (disjoint from the scored windows)")
	format := formatFlag(fs)
	plotFile := plotFlag(fs, "mean KL against bits")
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
	choices, err := kvf.configs(true)
	if err != nil {
		return err
	}
	cands, err := parseFormats(*candidates)
	if err != nil {
		return err
	}
	ls, err := parseInts("--needle-lengths", *lengths, 16, 1<<24)
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
	o := eval.KVTableOptions{Ctx: *ctxLen, Chunks: *chunks, NeedleLengths: ls, NeedleDepths: *depths, NeedleTrials: *trials,
		Plan:    eval.KVPlanOptions{Candidates: cands, CalibChunks: *calibChunks, Log: func(msg string) { fmt.Fprintln(e.stderr, msg) }},
		Planned: func(p *kvcache.Plan) { fmt.Fprint(e.stderr, p.Describe()) },
	}
	if isTerminal(e.stderr) {
		o.Plan.Progress = func(done, total int) { fmt.Fprintf(e.stderr, "\r%d/%d", done, total) }
		o.Progress = func(done, total int) { fmt.Fprintf(e.stderr, "\r%d/%d formats", done, total) }
		defer fmt.Fprintln(e.stderr)
	}
	res, err := eval.KVTable(context.Background(), l.m, l.tok, text, choices, o)
	if err != nil {
		return kvError(err)
	}
	rows := res.Rows
	if *plotFile != "" {
		if err := writeKLPlot(*plotFile, rows); err != nil {
			return err
		}
	}
	if *format == "json" {
		for i := range rows {
			if math.IsNaN(rows[i].Needle) {
				rows[i].Needle = -1 // JSON has no NaN: -1 means not measured
			}
			if math.IsNaN(rows[i].Predicted) {
				rows[i].Predicted = 0 // omitted
			}
		}
		return json.NewEncoder(e.stdout).Encode(rows)
	}
	fmt.Fprintf(e.stdout, "%d windows of %d tokens per format; KL and top-1 against f16 on the same windows\n", res.Chunks, *ctxLen)
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "format\tbits\tB/token\tvs f16\tppl\tKL mean\tKL p99\ttop-1\tneedle\tpredicted KL\t")
	for _, r := range rows {
		needle := "-"
		if !math.IsNaN(r.Needle) {
			needle = fmt.Sprintf("%.3f", r.Needle)
		}
		pred := "-"
		if !math.IsNaN(r.Predicted) {
			pred = fmt.Sprintf("%.5f", r.Predicted)
		}
		fmt.Fprintf(tw, "%s\t%.3f\t%.0f\t%.2fx\t%.4f\t%.5f\t%.4f\t%.4f\t%s\t%s\t\n", r.Format, r.Bits, r.BytesPerToken, r.Ratio, r.PPL, r.KLMean, r.KLP99, r.Top1, needle, pred)
	}
	return tw.Flush()
}

// writeKLPlot draws mean KL against bits, one point per format.
func writeKLPlot(path string, rows []eval.KVRow) error {
	c := &plot.Chart{Title: "KV formats: mean KL vs f16 against bits per coordinate", XLabel: "bits per coordinate", YLabel: "mean KL (nats)", LogY: true}
	for _, r := range rows {
		if r.KLMean <= 0 {
			continue // the reference itself
		}
		c.Series = append(c.Series, plot.Series{Name: r.Format, X: []float64{r.Bits}, Y: []float64{r.KLMean}})
	}
	return writeSVG(path, c)
}
