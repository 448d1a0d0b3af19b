package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/plot"
	"github.com/turbomem/turbomem/suite"
)

func evalKV(e *env, args []string) error {
	fs := newFlagSet(e, "eval kv", "\n\nOne row per KV format: bits per coordinate, bytes per token and ratio to f16 at\n--ctx tokens (window included), perplexity, mean and p99 KL and top-1 agreement\nagainst the f16 cache on the same windows, and the needle score. With --models,\none table per model and a summary across them: per format its bits and mean KL\non each model, and the geometric mean over models of its KL relative to q4_0's\nand to q4_0h's (q4_0 after llama.cpp's Walsh–Hadamard rotation).")
	mf := addModelFlags(fs, "")
	models := fs.String("models", "", "comma-separated models to measure one after another instead of -m: GGUF files, the model suite's names (large, mha64, qwen2; tools/train/README.md) or default (the embedded model); a file that is absent is skipped with a message")
	file := fs.String("file", "", "text (default: the embedded held-out text)")
	kvf := addKVListFlags(fs, "f16,q8_0,q4_0,q4_0h,kivi2,turbo2.5,turbo3,turbo3.5,turbo4,turbo3.5p,polar,turbo3.5:turbo2.5,turbo2.5:turbo3.5,auto:3,auto:3.5", "; auto:B a per-layer plan of B bits per coordinate measured on the text's end")
	ctxLen := fs.Int("ctx", 1024, "window length in tokens")
	chunks := fs.Int("chunks", 8, "windows scored per format (0: all)")
	lengths := fs.String("needle-lengths", "1024,2048", "needle context lengths (empty: no needle test)")
	depths := fs.Int("needle-depths", 5, "needle depths per length")
	trials := fs.Int("needle-trials", 1, "needles per cell")
	candidates := candidatesFlag(fs, "formats auto:B rows choose among")
	calibChunks := calibChunksFlag(fs, "calibration windows of auto:B rows, from the end of the text (disjoint from the scored windows)")
	floatWeights := fs.Bool("float-weights", false, "measure everything (the f16 reference, every row, the plans' sensitivities) on the model with its quantized weights dequantized to F16, whose products take their input as it is instead of rounded to 8 bits: without the floor that rounding puts under every KL (on suite-qwen2 the exact f32 cache 0.000085 with Q8_0 weights, 0.000000 with float ones); 2 bytes per weight")
	format := formatFlag(fs)
	plotFile := plotFlag(fs, "mean KL against bits (with --models, one line per model)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkFormat(*format); err != nil {
		return err
	}
	if err := mf.check(); err != nil {
		return err
	}
	if *models != "" && *mf.model != "" {
		return usageError{fmt.Errorf("-m and --models: give one")}
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
	// The models to measure, each checked for its file before any work.
	type target struct{ name, path string }
	targets := []target{{*mf.model, *mf.model}}
	if *models != "" {
		targets = nil
		for _, name := range strings.Split(*models, ",") {
			name = strings.TrimSpace(name)
			if name == "" {
				return usageError{fmt.Errorf("--models %q: an empty entry", *models)}
			}
			path, ok := suite.Resolve(name)
			if !ok {
				fmt.Fprintf(e.stderr, "skipped: %s\n", suite.Absent(path))
				continue
			}
			targets = append(targets, target{name, path})
		}
		if len(targets) == 0 {
			return fmt.Errorf("--models: none of %s is there to measure", *models)
		}
	}
	text, err := readText(*file)
	if err != nil {
		return err
	}
	var tables []eval.KVModelTable
	for _, tg := range targets {
		prefix := ""
		if *models != "" {
			prefix = tg.name + ": "
			fmt.Fprintf(e.stderr, "%smeasuring\n", prefix)
		}
		o := eval.KVTableOptions{Ctx: *ctxLen, Chunks: *chunks, NeedleLengths: ls, NeedleDepths: *depths, NeedleTrials: *trials,
			Plan:    eval.KVPlanOptions{Candidates: cands, CalibChunks: *calibChunks, Log: func(msg string) { fmt.Fprintln(e.stderr, prefix+msg) }},
			Planned: func(p *kvcache.Plan) { fmt.Fprint(e.stderr, prefix+p.Describe()) },
		}
		if isTerminal(e.stderr) {
			o.Plan.Progress = func(done, total int) { fmt.Fprintf(e.stderr, "\r%d/%d", done, total) }
			o.Progress = func(done, total int) { fmt.Fprintf(e.stderr, "\r%d/%d formats", done, total) }
		}
		res, err := measureKVTable(e, mf, tg.path, text, choices, *floatWeights, o)
		if isTerminal(e.stderr) {
			fmt.Fprintln(e.stderr)
		}
		if err != nil {
			return fmt.Errorf("%s%w", prefix, err)
		}
		tables = append(tables, eval.KVModelTable{Model: tg.name, KVTableResult: res})
	}
	if *models == "" {
		return printKVTable(e, tables[0].KVTableResult, *ctxLen, *format, *plotFile)
	}
	return printKVTables(e, tables, *ctxLen, *format, *plotFile)
}

// measureKVTable loads the model at path (the flags' model for path "",
// the embedded one when that is empty too) and measures its KV table, on
// the model with float weights if floatWeights (model.WithFloatWeights).
func measureKVTable(e *env, mf modelFlags, path, text string, choices []kvcache.Config, floatWeights bool, o eval.KVTableOptions) (eval.KVTableResult, error) {
	mf.model = &path
	l, err := mf.load(e)
	if err != nil {
		return eval.KVTableResult{}, err
	}
	defer l.m.Close()
	m := l.m
	if floatWeights {
		if m, err = m.WithFloatWeights(); err != nil {
			return eval.KVTableResult{}, err
		}
	}
	res, err := eval.KVTable(context.Background(), m, l.tok, text, choices, o)
	return res, kvError(err)
}

// printKVTable prints one model's table (or its rows as JSON) and draws
// its plot.
func printKVTable(e *env, res eval.KVTableResult, ctxLen int, format, plotFile string) error {
	if plotFile != "" {
		if err := writeKLPlot(plotFile, res.Rows); err != nil {
			return err
		}
	}
	if format == "json" {
		return json.NewEncoder(e.stdout).Encode(jsonRows(res.Rows))
	}
	return writeKVRows(e.stdout, res, ctxLen)
}

// printKVTables prints every model's table and the summary across them
// (or all of it as one JSON object), and draws one line per model.
func printKVTables(e *env, tables []eval.KVModelTable, ctxLen int, format, plotFile string) error {
	summary := eval.SummarizeKV(tables)
	if plotFile != "" {
		if err := writeModelsPlot(plotFile, tables); err != nil {
			return err
		}
	}
	if format == "json" {
		out := struct {
			Models  []eval.KVModelTable `json:"models"`
			Summary []eval.KVSummaryRow `json:"summary"`
		}{slices.Clone(tables), slices.Clone(summary)}
		for i := range out.Models {
			out.Models[i].Rows = jsonRows(out.Models[i].Rows)
		}
		for i, r := range out.Summary {
			out.Summary[i].Bits, out.Summary[i].KLMean = jsonValues(r.Bits), jsonValues(r.KLMean)
			out.Summary[i].VsQ4 = jsonValue(r.VsQ4)
			out.Summary[i].VsQ4H = jsonValue(r.VsQ4H)
		}
		return json.NewEncoder(e.stdout).Encode(out)
	}
	for _, t := range tables {
		fmt.Fprintf(e.stdout, "== %s\n", t.Model)
		if err := writeKVRows(e.stdout, t.KVTableResult, ctxLen); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout)
	}
	fmt.Fprintf(e.stdout, "== summary over %d models: mean KL against each model's f16; vs q4_0 (q4_0h) the geometric mean over models of KL / q4_0's (q4_0h's) KL\n", len(tables))
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "format\tbits\t")
	for _, t := range tables {
		fmt.Fprintf(tw, "KL %s\t", t.Model)
	}
	fmt.Fprintln(tw, "vs q4_0\tvs q4_0h\t")
	for _, r := range summary {
		fmt.Fprintf(tw, "%s\t%s\t", r.Format, bitsRange(r.Bits))
		for _, kl := range r.KLMean {
			fmt.Fprintf(tw, "%s\t", orDash("%.5f", kl))
		}
		fmt.Fprintf(tw, "%s\t%s\t\n", orDash("%.3fx", r.VsQ4), orDash("%.3fx", r.VsQ4H))
	}
	return tw.Flush()
}

// writeKVRows writes one model's table.
func writeKVRows(w io.Writer, res eval.KVTableResult, ctxLen int) error {
	fmt.Fprintf(w, "%d windows of %d tokens per format; KL and top-1 against f16 on the same windows\n", res.Chunks, ctxLen)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "format\tbits\tB/token\tvs f16\tppl\tKL mean\tKL p99\ttop-1\tneedle\tpredicted KL\t")
	for _, r := range res.Rows {
		fmt.Fprintf(tw, "%s\t%.3f\t%.0f\t%.2fx\t%.4f\t%.5f\t%.4f\t%.4f\t%s\t%s\t\n", r.Format, r.Bits, r.BytesPerToken, r.Ratio, r.PPL, r.KLMean, r.KLP99, r.Top1, orDash("%.3f", r.Needle), orDash("%.5f", r.Predicted))
	}
	return tw.Flush()
}

// orDash formats v, or "-" for NaN (not measured).
func orDash(format string, v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

// bitsRange formats a format's bits over the models: one value, or the
// smallest and largest where the head dimensions differ.
func bitsRange(bits []float64) string {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, b := range bits {
		if !math.IsNaN(b) {
			lo, hi = math.Min(lo, b), math.Max(hi, b)
		}
	}
	switch {
	case math.IsInf(lo, 0):
		return "-"
	case lo == hi:
		return fmt.Sprintf("%.3f", lo)
	}
	return fmt.Sprintf("%.3f-%.3f", lo, hi)
}

// jsonRows returns rows as JSON can hold them (it has no NaN): a needle
// score not measured is −1, a predicted KL not made is omitted.
func jsonRows(rows []eval.KVRow) []eval.KVRow {
	rows = slices.Clone(rows)
	for i := range rows {
		rows[i].Needle = jsonValue(rows[i].Needle)
		if math.IsNaN(rows[i].Predicted) {
			rows[i].Predicted = 0
		}
	}
	return rows
}

// jsonValues returns v with jsonValue of each.
func jsonValues(v []float64) []float64 {
	v = slices.Clone(v)
	for i := range v {
		v[i] = jsonValue(v[i])
	}
	return v
}

// jsonValue returns x, or −1 for NaN: not measured (JSON has no NaN).
func jsonValue(x float64) float64 {
	if math.IsNaN(x) {
		return -1
	}
	return x
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

// writeModelsPlot draws mean KL against bits, one line per model through
// its formats in order of bits.
func writeModelsPlot(path string, tables []eval.KVModelTable) error {
	c := &plot.Chart{Title: "KV formats on each model: mean KL vs f16 against bits per coordinate", XLabel: "bits per coordinate", YLabel: "mean KL (nats)", LogY: true}
	for _, t := range tables {
		rows := slices.Clone(t.Rows)
		slices.SortStableFunc(rows, func(a, b eval.KVRow) int { return cmp.Compare(a.Bits, b.Bits) })
		s := plot.Series{Name: t.Model}
		for _, r := range rows {
			if r.KLMean > 0 {
				s.X, s.Y = append(s.X, r.Bits), append(s.Y, r.KLMean)
			}
		}
		c.Series = append(c.Series, s)
	}
	return writeSVG(path, c)
}
