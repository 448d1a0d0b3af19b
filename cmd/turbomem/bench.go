package main

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/turbomem/turbomem/plot"
	"github.com/turbomem/turbomem/quant"
)

// benchRow is one line of 'bench quant': quant.Distortion plus bandwidth.
type benchRow struct {
	quant.Distortion
	GBps float64 `json:"gbps"` // compressed bytes scored per second
}

func benchQuant(e *env, args []string) error {
	fs := newFlagSet(e, "bench quant", "\n\nMeasures every quantizer on --n random unit vectors of dimension --d:\n"+
		"stored bits per coordinate, MSE, inner-product distortion ×d, relative bias,\n"+
		"ratio to the Shannon bound 4^-bits, encode ns/vector, score ns/key and GB/s read.")
	d := fs.Int("d", 128, "vector dimension")
	n := fs.Int("n", 10000, "number of random vectors")
	bits := fs.String("bits", "1,2,3,4,2.5,3.5", "comma-separated rates: integers 1..8 and k.5")
	format := formatFlag(fs)
	plotFile := fs.String("plot", "", "also draw distortion vs bits to this SVG file")
	seed := fs.Uint64("seed", 1, "seed for rotations, sketches and test vectors")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *d < 8 || *d > 4096 {
		return usageError{fmt.Errorf("--d %d out of range [8, 4096]", *d)}
	}
	if *n < 2 || *n > 10_000_000 {
		return usageError{fmt.Errorf("--n %d out of range [2, 10000000]", *n)}
	}
	if err := checkFormat(*format); err != nil {
		return err
	}
	if err := checkOutputs(*plotFile); err != nil {
		return err
	}
	var rates []float64
	for _, f := range strings.Split(*bits, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			return usageError{fmt.Errorf("--bits: %q is not a number", f)}
		}
		rates = append(rates, r)
	}
	qs, err := quant.Standard(*d, rates, *seed)
	if err != nil {
		return usageError{err}
	}
	var rows []benchRow
	for _, q := range qs {
		m, err := quant.Measure(q, *n, *seed)
		if err != nil {
			return err
		}
		rows = append(rows, benchRow{Distortion: m, GBps: float64(q.Bytes()) / m.ScoreNs})
	}
	if *format == "json" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rows); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(e.stdout, "d=%d n=%d seed=%d kernels=%s\n", *d, *n, *seed, quant.SIMDLevel())
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "method\tbits\tmse\tip_dist×d\tbias\t±\tbound_ratio\tencode_ns\tscore_ns\tGB/s\t")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%.3f\t%.5f\t%.4f\t%+.4f\t%.4f\t%.2f\t%.0f\t%.2f\t%.1f\t\n",
				r.Method, r.Bits, r.MSE, r.IPDistortionD, r.Bias, r.BiasSE, r.BoundRatio, r.EncodeNs, r.ScoreNs, r.GBps)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if *plotFile != "" {
		return writeDistortionPlot(*plotFile, *d, rows)
	}
	return nil
}

// writeDistortionPlot draws MSE against stored bits, one line per method
// family, with the Shannon bound 4^-b.
func writeDistortionPlot(path string, d int, rows []benchRow) error {
	c := &plot.Chart{Title: fmt.Sprintf("MSE of unit vectors vs stored bits per coordinate (d=%d)", d), XLabel: "bits per coordinate", YLabel: "E‖x − x̃‖²", LogY: true}
	family := map[string]int{}
	var lo, hi = math.Inf(1), math.Inf(-1)
	for _, r := range rows {
		name := rateInName.ReplaceAllString(r.Method, "") // "turbo-mse/3+proj" → "turbo-mse+proj"
		k, ok := family[name]
		if !ok {
			k = len(c.Series)
			family[name] = k
			c.Series = append(c.Series, plot.Series{Name: name})
		}
		c.Series[k].X = append(c.Series[k].X, r.Bits)
		c.Series[k].Y = append(c.Series[k].Y, r.MSE)
		lo, hi = math.Min(lo, r.Bits), math.Max(hi, r.Bits)
	}
	bound := plot.Series{Name: "bound 4^-b", Dashed: true}
	for b := math.Floor(lo); b <= math.Ceil(hi); b += 0.25 {
		bound.X = append(bound.X, b)
		bound.Y = append(bound.Y, math.Pow(4, -b))
	}
	c.Series = append(c.Series, bound)
	for i := range c.Series {
		sortSeries(&c.Series[i])
	}
	return writeSVG(path, c)
}

// rateInName matches the rate part of a method name.
var rateInName = regexp.MustCompile(`/[0-9.]+`)

func sortSeries(s *plot.Series) {
	for i := 1; i < len(s.X); i++ {
		for j := i; j > 0 && s.X[j] < s.X[j-1]; j-- {
			s.X[j], s.X[j-1] = s.X[j-1], s.X[j]
			s.Y[j], s.Y[j-1] = s.Y[j-1], s.Y[j]
		}
	}
}
