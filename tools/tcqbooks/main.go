// Command tcqbooks trains union codebooks for the tcq formats' 8-state
// tail-biting trellis (quant.TrainedTCQBook; the formats keep
// quant.GaussianTCQBook, which measured less KL: BENCHMARKS.md, "Trained
// TCQ codebooks") and writes them as Go source:
//
//	go run ./tools/tcqbooks -o quant/tcq_books.go
//
// (-o, not a redirection: the tool builds on package quant, so the file
// must be whole while it compiles; it is written once the books are.)
// Each width's book (1 to quant.TCQMaxBits bits, 2^(b+1) levels) starts
// from quant.GaussianTCQBook and runs the TCQ Lloyd iteration (train.go)
// to convergence on i.i.d. unit-Gaussian sequences of -len values drawn
// from a fixed seed, symmetric about 0: a book that depends on no model.
// The klt coder normalises each component by its calibrated spread and
// each vector by its scale, so the Gaussian is the source it is designed
// for; -m measures how far real keys and values are from it (data.go).
//
//	go run ./tools/tcqbooks -check            # the new books against the old, on fresh samples
//	go run ./tools/tcqbooks -shipped -check -iters 40 -m default,.models/suite-qwen2.gguf   # on models' K/V
//
// -check prints to stderr, per width, the mean squared error of the old
// (GaussianTCQBook) and the new books on a fresh unit-Gaussian sample
// (another seed); with -m, per model, the weighted error (the klt coder's
// Viterbi metric) on the keys and values of the held-out text's first
// windows, where eval kv scores, of the old books, the Gaussian ones,
// books trained on the model's own calibration windows (the text's last,
// where eval kv calibrates) and books trained on every -m model's, and
// the kurtosis of each width's values (3 for a Gaussian). -shipped takes
// quant's trained books for the Gaussian ones instead of training them
// again; -unbias scales each book so that a decoded value's projection on
// the value is unbiased;
// -source models ships the books trained on the -m models, -t NU books
// trained on a heavier-tailed Student-t source.
package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"strings"

	"github.com/turbomem/turbomem/quant"
)

// Training: the seed of the Gaussian samples; the check draws with
// another.
const (
	trainSeed = 1
	checkSeed = 2
)

// options are the command's flags.
type options struct {
	seqLen, samples, iters, nu int
	check, unbias, shipped     bool
	models, source             string
	ctx, chunks                int
}

func main() {
	var o options
	flag.IntVar(&o.seqLen, "len", 128, "values per training sequence (a klt vector's coded components)")
	flag.IntVar(&o.samples, "samples", 1<<20, "Gaussian training values per width, at least 4096 per union level")
	flag.IntVar(&o.iters, "iters", 200, "most Lloyd iterations per width")
	flag.BoolVar(&o.check, "check", false, "print the books' errors against the old books to stderr")
	flag.StringVar(&o.models, "m", "", "comma-separated models whose K/V -check measures: default (the embedded one) or GGUF paths")
	flag.StringVar(&o.source, "source", "gauss", "what the written books are trained on: gauss, or models (the -m models' calibration K/V)")
	flag.IntVar(&o.ctx, "ctx", 1024, "tokens per window of -m's text")
	flag.IntVar(&o.chunks, "chunks", 2, "windows of -m's text for training (its end) and for measuring (its start)")
	flag.IntVar(&o.nu, "t", 0, "train on a Student-t source of this many degrees of freedom (> 4; unit variance, kurtosis 3+6/(t−4)) instead of the Gaussian: a heavier-tailed family")
	flag.BoolVar(&o.unbias, "unbias", false, "scale each trained book so that a decoded value's projection on the value is unbiased, E[x·x̂] = E[x²] (the Lloyd books shrink by 1−MSE)")
	flag.BoolVar(&o.shipped, "shipped", false, "take quant's trained books (quant.TrainedTCQBook) for the Gaussian ones instead of training them: for -m measurements")
	output := flag.String("o", "", "file to write the Go source to (default: stdout)")
	flag.Parse()
	var b strings.Builder
	err := run(&b, o)
	if err == nil {
		if *output == "" {
			_, err = io.WriteString(os.Stdout, b.String())
		} else {
			err = os.WriteFile(*output, []byte(b.String()), 0o644)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcqbooks:", err)
		os.Exit(1)
	}
}

func run(out io.Writer, o options) error {
	switch {
	case o.nu != 0 && o.nu <= 4:
		return fmt.Errorf("-t %d: want more than 4 degrees of freedom (a finite kurtosis)", o.nu)
	case o.source != "gauss" && o.source != "models":
		return fmt.Errorf("-source %q: want gauss or models", o.source)
	case o.source == "models" && o.models == "":
		return fmt.Errorf("-source models: no -m models")
	}
	tr, err := quant.NewTrellis(quant.TCQBookStates)
	if err != nil {
		return err
	}
	cfg := trainConfig{maxIters: o.iters, tol: 1e-6, symmetric: true}
	old, err := gaussianBooks(tr)
	if err != nil {
		return err
	}
	var gauss books
	if o.shipped {
		for b := 1; b <= quant.TCQMaxBits; b++ {
			if gauss[b], err = quant.TrainedTCQBook(tr, b); err != nil {
				return err
			}
		}
	} else if gauss, err = trainGaussian(tr, old, o.seqLen, o.samples, o.nu, cfg); err != nil {
		return err
	}
	if o.check {
		checkGaussian(tr, old, gauss, o.seqLen, o.samples)
	}
	src := "unit-Gaussian"
	if o.nu > 0 {
		src = fmt.Sprintf("unit-variance Student-t (%d degrees of freedom)", o.nu)
	}
	what := fmt.Sprintf("i.i.d. %s sequences of %d values, %d values per width (at least 4096 per level) from seed %d", src, o.seqLen, o.samples, trainSeed)
	if o.unbias {
		gauss = unbiased(tr, gauss, o.seqLen, o.samples, o.nu)
		what += "; each then scaled by E[x²]/E[x·x̂] on its training values"
	}
	ship := gauss
	var sets []modelSet
	if o.models != "" {
		if sets, err = loadModels(strings.Split(o.models, ","), tr, o.ctx, o.chunks); err != nil {
			return err
		}
		if o.check {
			if err := checkModels(tr, sets, old, gauss, cfg); err != nil {
				return err
			}
		}
	}
	if o.source == "models" {
		var all []sequence
		var names []string
		for _, s := range sets {
			all = append(all, s.train...)
			names = append(names, s.name)
		}
		ship, _, _ = train(tr, gauss, all, 0, cfg)
		what = fmt.Sprintf("the calibration keys and values of %s", strings.Join(names, ", "))
	}
	return writeBooks(out, ship, what, cfg)
}

// gaussianBooks returns quant.GaussianTCQBook at every width, the books
// the tcq formats shipped with first and the trainer's start.
func gaussianBooks(tr quant.Trellis) (books, error) {
	var bks books
	for b := 1; b <= quant.TCQMaxBits; b++ {
		bk, err := quant.GaussianTCQBook(tr, b)
		if err != nil {
			return bks, err
		}
		bks[b] = bk
	}
	return bks, nil
}

// gaussianSequences returns i.i.d. sequences of seqLen values, samples
// values in all (rounded up to whole sequences), from seed: N(0, 1), or
// with nu > 0 Student-t of nu degrees of freedom scaled to unit variance
// (a Gaussian over an independent √(χ²_ν/(ν−2)): a scale mixture, as
// tokens' spreads vary).
func gaussianSequences(seqLen, samples, nu int, seed uint64) []sequence {
	r := rand.New(rand.NewPCG(seed, uint64(seqLen)))
	seqs := make([]sequence, (samples+seqLen-1)/seqLen)
	for i := range seqs {
		x := make([]float64, seqLen)
		for j := range x {
			x[j] = r.NormFloat64()
			if nu > 0 {
				var chi float64
				for range nu {
					g := r.NormFloat64()
					chi += g * g
				}
				x[j] *= math.Sqrt(float64(nu-2) / chi)
			}
		}
		seqs[i].x = x
	}
	return seqs
}

// trainGaussian trains each width's book from start on its own sequences
// (gaussianSequences of nu, seed trainSeed and the width), at least 4096
// values per union level.
func trainGaussian(tr quant.Trellis, start books, seqLen, samples, nu int, cfg trainConfig) (books, error) {
	var out books
	for b := 1; b <= quant.TCQMaxBits; b++ {
		n := max(samples, 4096<<(b+1))
		seqs := gaussianSequences(seqLen, n, nu, trainSeed<<8|uint64(b))
		var one books
		one[b] = start[b]
		got, mse, it := train(tr, one, seqs, b, cfg)
		fmt.Fprintf(os.Stderr, "width %d: %d values, %d iterations, MSE %.6f (%.3f dB)\n", b, n, it, mse, -10*math.Log10(mse))
		out[b] = got[b]
	}
	return out, nil
}

// unbiased returns bks, each width's book scaled by E[x²]/E[x·x̂] on its
// training sequences. A book that meets Lloyd's centroid condition has
// E[x·x̂] = E[x̂²] = E[x²] − MSE: the decoded vector is shrunk towards 0
// by 1 − MSE along the coded one, and so are its inner products with
// queries correlated with it, a bias that tilts every score of a key the
// same way (quant's CorrectProjection removes the same shrinkage from
// TurboQuant's codes, per vector). The scale trades a little squared
// error for scores without it.
func unbiased(tr quant.Trellis, bks books, seqLen, samples, nu int) books {
	var out books
	for b := 1; b <= quant.TCQMaxBits; b++ {
		seqs := gaussianSequences(seqLen, max(samples, 4096<<(b+1)), nu, trainSeed<<8|uint64(b))
		var one books
		one[b] = bks[b]
		enc := newEncoder(tr, one)
		var xx, xq float64
		for i := range seqs {
			_, levels := enc.encode(&seqs[i], b)
			for t, x := range seqs[i].x {
				xx += x * x
				xq += x * bks[b][levels[t]]
			}
		}
		g := xx / xq
		out[b] = make([]float64, len(bks[b]))
		for l, v := range bks[b] {
			out[b][l] = g * v
		}
		fmt.Fprintf(os.Stderr, "width %d: unbiased by %.5f\n", b, g)
	}
	return out
}

// checkGaussian prints the old and new books' MSE on fresh unit-Gaussian
// sequences (seed checkSeed), paired: the same sample for both.
func checkGaussian(tr quant.Trellis, old, gauss books, seqLen, samples int) {
	fmt.Fprintf(os.Stderr, "\nunit Gaussian, fresh sample (seed %d), sequences of %d:\n%5s %10s %10s %8s %9s %9s\n", checkSeed, seqLen, "bits", "old MSE", "new MSE", "ratio", "old dB", "new dB")
	for b := 1; b <= quant.TCQMaxBits; b++ {
		seqs := gaussianSequences(seqLen, max(samples, 4096<<(b+1)), 0, checkSeed<<8|uint64(b))
		var o, n books
		o[b], n[b] = old[b], gauss[b]
		_, eo := encodeAll(tr, o, seqs, b)
		_, en := encodeAll(tr, n, seqs, b)
		fmt.Fprintf(os.Stderr, "%5d %10.6f %10.6f %8.4f %9.3f %9.3f\n", b, eo, en, en/eo, -10*math.Log10(eo), -10*math.Log10(en))
	}
}

// writeBooks writes the Go source of quant/tcq_books.go.
func writeBooks(out io.Writer, bks books, what string, cfg trainConfig) error {
	var sb strings.Builder
	sb.WriteString("// Code generated by go run ./tools/tcqbooks; DO NOT EDIT.\n\npackage quant\n\n")
	doc := fmt.Sprintf("trainedTCQBooks are TrainedTCQBook's union codebooks by width (index b: 2^(b+1) ascending levels, symmetric about 0) for the %d-state tail-biting trellis: the TCQ Lloyd iteration from GaussianTCQBook, until an iteration lowers the error by less than %g or for %d iterations, on %s.",
		quant.TCQBookStates, cfg.tol, cfg.maxIters, what)
	for _, line := range wrap(doc, 72) {
		fmt.Fprintf(&sb, "// %s\n", line)
	}
	fmt.Fprintf(&sb, "var trainedTCQBooks = [TCQMaxBits + 1][]float64{\n")
	for b := 1; b <= quant.TCQMaxBits; b++ {
		fmt.Fprintf(&sb, "\t%d: {", b)
		for l, v := range bks[b] {
			if l%4 == 0 {
				sb.WriteString("\n\t\t")
			} else {
				sb.WriteString(" ")
			}
			fmt.Fprintf(&sb, "%s,", formatLevel(v))
		}
		sb.WriteString("\n\t},\n")
	}
	sb.WriteString("}\n")
	_, err := io.WriteString(out, sb.String())
	return err
}

// wrap splits s into lines of at most width bytes at spaces.
func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return append(lines, line)
}

// formatLevel prints v exactly (the shortest decimal that reads back as
// v).
func formatLevel(v float64) string {
	return fmt.Sprintf("%v", v)
}
