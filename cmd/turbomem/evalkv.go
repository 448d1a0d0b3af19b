package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/plot"
)

// kvRow is one line of 'eval kv'.
type kvRow struct {
	Format        string  `json:"format"`
	Bits          float64 `json:"bits"`            // per coordinate of compressed tokens, K and V averaged
	BytesPerToken float64 `json:"bytes_per_token"` // at --ctx tokens, window included
	Ratio         float64 `json:"ratio"`           // f16 bytes / these bytes
	PPL           float64 `json:"ppl"`
	KLMean        float64 `json:"kl_mean"`
	KLP99         float64 `json:"kl_p99"`
	Top1          float64 `json:"top1"`
	Needle        float64 `json:"needle"`
	// Predicted is an auto:B row's predicted mean KL (the sum of its
	// parts' measured KL on the calibration windows).
	Predicted float64 `json:"predicted_kl,omitempty"`
}

func evalKV(e *env, args []string) error {
	fs := newFlagSet(e, "eval kv", "\n\nOne row per KV format: bits per coordinate, bytes per token and ratio to f16 at\n--ctx tokens (window included), perplexity, mean and p99 KL and top-1 agreement\nagainst the f16 cache on the same windows, and the needle score.")
	path := fs.String("m", "", "GGUF model file (default: the embedded reference model)")
	file := fs.String("file", "", "text (default: the embedded held-out text)")
	kvList := fs.String("kv", "f16,q8_0,q4_0,kivi2,turbo2.5,turbo3,turbo3.5,turbo4,turbo3.5p,polar,turbo3.5:turbo2.5,turbo2.5:turbo3.5,auto:3,auto:3.5", "comma-separated formats (K/V pairs as K:V; auto:B a per-layer plan of B bits per coordinate measured on the text's end)")
	ctxLen := fs.Int("ctx", 1024, "window length in tokens")
	chunks := fs.Int("chunks", 8, "windows scored per format (0: all)")
	lengths := fs.String("needle-lengths", "1024,2048", "needle context lengths (empty: no needle test)")
	depths := fs.Int("needle-depths", 5, "needle depths per length")
	trials := fs.Int("needle-trials", 1, "needles per cell")
	candidates := fs.String("kv-candidates", defaultCandidates, "formats auto:B rows choose among (f16 is always one)")
	calibChunks := fs.Int("kv-calib-chunks", 4, "calibration windows of auto:B rows, from the end of the text (disjoint from the scored windows)")
	window := fs.Int("kv-window", 0, fmt.Sprintf("recent tokens kept in fp16 (0: %d; -1: none)", kvcache.DefaultWindow))
	threads := fs.Int("threads", 0, "threads (0: all CPUs)")
	format := formatFlag(fs)
	plotFile := fs.String("plot", "", "draw mean KL against bits to this SVG file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkFormat(*format); err != nil {
		return err
	}
	// Fixed formats are checked once the model loads; auto:B rows once
	// the sensitivities are measured.
	choices, err := parseKVList(*kvList, *window, true)
	if err != nil {
		return err
	}
	autos := slices.ContainsFunc(choices, kvcache.Config.NeedsPlan)
	cands, err := parseFormats(*candidates)
	if err != nil {
		return err
	}
	var ls []int
	if *lengths != "" {
		for _, f := range strings.Split(*lengths, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 16 {
				return usageError{fmt.Errorf("--needle-lengths: %q is not a length ≥ 16", f)}
			}
			ls = append(ls, n)
		}
	}
	text, err := readText(*file)
	if err != nil {
		return err
	}
	l, err := (genFlags{model: path, threads: threads}).load(e)
	if err != nil {
		return err
	}
	defer l.m.Close()
	sh := l.m.CacheShape()
	if err := checkConfigs(l.m, choices...); err != nil {
		return err
	}
	ids := l.tok.Encode(text, true)
	ctx := context.Background()
	scored := len(ids) / max(*ctxLen, 1)
	if *chunks > 0 {
		scored = min(scored, *chunks)
	}
	calib := *calibChunks * *ctxLen
	if autos {
		if err := checkCalibWindow(*ctxLen, *window); err != nil {
			return err
		}
		if *calibChunks < 1 || scored**ctxLen+calib > len(ids) {
			return usageError{fmt.Errorf("auto rows: %d calibration windows of %d tokens after the %d scored ones need %d tokens; the text has %d", *calibChunks, *ctxLen, scored, scored**ctxLen+calib, len(ids))}
		}
	}
	ref, err := eval.Perplexity(ctx, l.m, ids, l.tok.BOS(), eval.PPLOptions{Ctx: *ctxLen, MaxChunks: *chunks})
	if err != nil {
		return err
	}
	if autos {
		// One measurement serves every budget.
		sens, err := measureSensitivity(e, l, ids[len(ids)-calib:], cands, eval.SensitivityOptions{Ctx: *ctxLen, Window: *window})
		if err != nil {
			return err
		}
		for i, ch := range choices {
			if !ch.NeedsPlan() {
				continue
			}
			p, err := kvcache.Allocate(sens, ch.Budget(), sh.HeadDim)
			if err != nil {
				return usageError{err}
			}
			p.Window = *window
			choices[i] = kvcache.Planned(p)
			fmt.Fprint(e.stderr, p.Describe())
		}
	}
	f16Bytes, err := kvcache.F16().BytesAt(1, l.m.Config.Layers, sh)
	if err != nil {
		return err
	}
	f16PerToken := float64(f16Bytes)
	var rows []kvRow
	for _, ch := range choices {
		row := kvRow{Format: ch.String(), Predicted: math.NaN()}
		nc := ch
		if row.Bits, err = ch.Bits(sh.HeadDim); err != nil {
			return err
		}
		if p := ch.Plan(); p != nil {
			row.Predicted = p.Predicted
		}
		// Bytes per token: a session over the first --ctx tokens.
		sess, err := l.m.NewSession(nc, *ctxLen)
		if err != nil {
			return err
		}
		if _, err := sess.Forward(ids[:min(*ctxLen, len(ids))], false); err != nil {
			return err
		}
		row.BytesPerToken = float64(sess.CacheBytes()) / float64(sess.Len())
		row.Ratio = f16PerToken / row.BytesPerToken
		res, err := eval.Perplexity(ctx, l.m, ids, l.tok.BOS(), eval.PPLOptions{Ctx: *ctxLen, MaxChunks: *chunks, KV: nc, Ref: ref.Dists})
		if err != nil {
			return fmt.Errorf("%s: %w", ch, err)
		}
		row.PPL, row.KLMean, row.KLP99, row.Top1 = res.PPL, res.Agreement.KLMean, res.Agreement.KLP99, res.Agreement.Top1
		row.Needle = math.NaN()
		if len(ls) > 0 {
			nr, err := eval.Needle(ctx, l.m, l.tok, l.tok.Encode(text, false), eval.NeedleOptions{Lengths: ls, Depths: *depths, Trials: *trials, Seed: 1, KV: nc})
			if err != nil {
				return fmt.Errorf("%s: %w", ch, err)
			}
			row.Needle = nr.Overall
		}
		rows = append(rows, row)
		if isTerminal(e.stderr) {
			fmt.Fprintf(e.stderr, "\r%d/%d formats", len(rows), len(choices))
		}
	}
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
	fmt.Fprintf(e.stdout, "%d windows of %d tokens per format; KL and top-1 against f16 on the same windows\n", ref.Chunks, *ctxLen)
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
func writeKLPlot(path string, rows []kvRow) error {
	c := &plot.Chart{Title: "KV formats: mean KL vs f16 against bits per coordinate", XLabel: "bits per coordinate", YLabel: "mean KL (nats)", LogY: true}
	for _, r := range rows {
		if r.KLMean <= 0 {
			continue // the reference itself
		}
		c.Series = append(c.Series, plot.Series{Name: r.Format, X: []float64{r.Bits}, Y: []float64{r.KLMean}})
	}
	return writeSVG(path, c)
}
