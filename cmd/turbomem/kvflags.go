package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// kvFlags are the KV cache options every model command shares.
type kvFlags struct {
	fs          *flag.FlagSet
	def         string // the --kv default
	kv, k, v    *string
	window      *int
	bits        *float64
	plan, calib *string
	calibFile   *string
	candidates  *string
	calibCtx    *int
	calibChunks *int
}

// recommendedKV is the --kv default of the commands that generate (run,
// chat, serve), a name for kvcache.Recommended's choice for the model's
// head dimension (turbo3.5 from 128 up, turbo4 below, f16 where neither
// fits): chosen by measurement on the model suite (BENCHMARKS.md, "The
// recommended format by head dimension"). It is also accepted for --kv-k
// and --kv-v. The eval and bench commands keep f16, the reference.
const recommendedKV = "recommended"

// addKVFlags declares the KV flags, def the --kv default.
func addKVFlags(fs *flag.FlagSet, def string) kvFlags {
	return kvFlags{
		fs:          fs,
		def:         def,
		kv:          fs.String("kv", def, "KV cache format for keys and values: "+formatHelp()+"; or auto (per layer, see --kv-bits); or "+recommendedKV+" (turbo3.5 at head dimension 128 and up, turbo4 below, f16 where neither fits)"),
		k:           fs.String("kv-k", "", "key format (overrides --kv)"),
		v:           fs.String("kv-v", "", "value format (overrides --kv)"),
		window:      fs.Int("kv-window", 0, fmt.Sprintf("recent tokens kept in fp16 by compressed formats (0: %d; -1: none)", kvcache.DefaultWindow)),
		bits:        fs.Float64("kv-bits", 0, "with --kv auto: average bits per coordinate to allocate over layers' keys and values"),
		plan:        fs.String("kv-plan", "", "per-layer KV plan file (JSON): used if it exists, else written by --kv auto"),
		calib:       fs.String("kv-calib", "", "with --kv auto or a klt format: calibration text (default: the embedded held-out text)"),
		calibFile:   fs.String("kv-calib-file", "", "with --kv auto or a klt or tcq format: the calibration (K/V covariances) saved in this file: read when it exists and was measured on this model and calibration text (checksummed), else measured and written there, so that later runs skip measuring"),
		candidates:  fs.String("kv-candidates", eval.DefaultKVCandidates, "with --kv auto: formats to choose among (f16 is always one)"),
		calibCtx:    fs.Int("kv-calib-ctx", 1024, "with --kv auto or a klt format: calibration window length in tokens"),
		calibChunks: fs.Int("kv-calib-chunks", 4, "with --kv auto or a klt format: calibration windows (taken from the end of the text)"),
	}
}

// auto reports whether the flags ask for a per-layer plan.
func (f kvFlags) auto() bool { return *f.kv == "auto" || *f.plan != "" }

// names returns the key and value format names the flags give (--kv-k
// and --kv-v, else --kv).
func (f kvFlags) names() (k, v string) {
	k, v = *f.k, *f.v
	if k == "" {
		k = *f.kv
	}
	if v == "" {
		v = *f.kv
	}
	return k, v
}

// spec returns the cache configuration the flags name when they name one
// format pair for every layer, recommendedKV standing for rec's key or
// value format.
func (f kvFlags) spec(rec kvcache.Spec) (kvcache.Config, error) {
	k, v := f.names()
	if k == recommendedKV {
		k = rec.K.String()
	}
	if v == recommendedKV {
		v = rec.V.String()
	}
	s, err := kvcache.ParseSpec(k, v)
	if err != nil {
		return kvcache.Config{}, usageError{err}
	}
	return withWindow(kvcache.Uniform(s), *f.window)
}

// withWindow returns c with the --kv-window w.
func withWindow(c kvcache.Config, w int) (kvcache.Config, error) {
	c, err := c.WithWindow(w)
	if err != nil {
		return c, usageError{fmt.Errorf("--kv-window: %w", err)}
	}
	return c, nil
}

// validate checks the flags before any work.
func (f kvFlags) validate() error {
	if err := checkSaveTarget(*f.calibFile); err != nil {
		return err
	}
	if !f.auto() {
		if *f.bits != 0 {
			return usageError{errors.New("--kv-bits needs --kv auto")}
		}
		_, err := f.spec(kvcache.Recommended(kvcache.Shape{QHeads: 1, KVHeads: 1, HeadDim: 128}))
		return err
	}
	if *f.kv != "auto" && *f.kv != f.def || *f.k != "" || *f.v != "" {
		return usageError{errors.New("--kv-plan and --kv auto choose the formats per layer: drop --kv FORMAT, --kv-k and --kv-v")}
	}
	if _, err := withWindow(kvcache.Config{}, *f.window); err != nil {
		return err
	}
	if *f.bits < 0 || *f.bits > 16 {
		return usageError{fmt.Errorf("--kv-bits %g out of range (0, 16]", *f.bits)}
	}
	if *f.bits == 0 {
		if *f.plan == "" {
			return usageError{errors.New("--kv auto needs --kv-bits B (average bits per coordinate) or an existing --kv-plan FILE")}
		}
		if _, err := os.Stat(*f.plan); err != nil {
			return usageError{fmt.Errorf("--kv-plan %s does not exist and no --kv-bits was given to measure one: %w", *f.plan, err)}
		}
	}
	if err := checkSaveTarget(*f.plan); err != nil {
		return err
	}
	if *f.calibCtx < 16 || *f.calibChunks < 1 || *f.calibChunks > 1024 {
		return usageError{fmt.Errorf("--kv-calib-ctx %d / --kv-calib-chunks %d out of range (≥ 16, 1..1024)", *f.calibCtx, *f.calibChunks)}
	}
	_, err := parseFormats(*f.candidates)
	return err
}

// checkSaveTarget checks that a file to be written once its contents are
// measured (a plan, a calibration: hours on a large model, not to be
// lost to an unwritable path) can be written, where path names one that
// does not exist yet.
func checkSaveTarget(path string) error {
	if _, err := os.Stat(path); path != "" && errors.Is(err, fs.ErrNotExist) {
		return checkOutputs(path)
	}
	return nil
}

// parseKVList parses a comma-separated list of the eval and bench
// commands: formats, K:V pairs and, with auto true, auto:B plans still to
// be measured; each with the recent window w.
func parseKVList(list string, w int, auto bool) ([]kvcache.Config, error) {
	var cs []kvcache.Config
	for _, name := range strings.Split(list, ",") {
		c, err := kvcache.Parse(name)
		if err != nil {
			return nil, usageError{err}
		}
		if c.NeedsPlan() && !auto {
			return nil, usageError{fmt.Errorf("--kv %s: per-layer plans are not measured here; name formats or K:V pairs", c)}
		}
		if c, err = withWindow(c, w); err != nil {
			return nil, err
		}
		cs = append(cs, c)
	}
	return cs, nil
}

// uniformSpecs returns the Specs of configurations that parseKVList made
// with auto false.
func uniformSpecs(cs []kvcache.Config) []kvcache.Spec {
	specs := make([]kvcache.Spec, len(cs))
	for i, c := range cs {
		specs[i], _ = c.Spec()
	}
	return specs
}

// checkConfigs checks, before any work, that every configuration that is
// not a plan still to be measured can serve m.
func checkConfigs(m *model.Model, cs ...kvcache.Config) error {
	for _, c := range cs {
		if c.NeedsPlan() {
			continue
		}
		if err := c.Check(m.Config.Layers, m.CacheShape()); err != nil {
			return usageError{fmt.Errorf("%s: %w", c, err)}
		}
	}
	return nil
}

// parseFormats parses a comma-separated list of format names.
func parseFormats(list string) ([]kvcache.Format, error) {
	fs, err := eval.ParseFormats(list)
	if err != nil {
		return nil, usageError{err}
	}
	return fs, nil
}

// kvMemory describes the bytes of m's caches in configuration c after n
// tokens, against f16's.
func kvMemory(m *model.Model, c kvcache.Config, n int) (string, error) {
	b, err := c.BytesAt(n, m.Config.Layers, m.CacheShape())
	if err != nil {
		return "", err
	}
	f16, err := kvcache.F16().BytesAt(n, m.Config.Layers, m.CacheShape())
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("KV cache %s at %d tokens: %s, %.0f B/token, %.2fx smaller than f16", c, n, humanBytes(b), float64(b)/float64(n), float64(f16)/float64(max(b, 1))), nil
}

// config returns the cache configuration the flags name, planned for the
// model (eval.PlanKV) before any work starts: with --kv auto or
// --kv-plan, the saved plan, or one measured on the calibration text
// (progress on stderr) and saved when --kv-plan names a new file;
// measure false refuses to measure instead.
func (f kvFlags) config(e *env, l *loaded, modelPath string, measure bool) (kvcache.Config, error) {
	var c kvcache.Config
	var err error
	switch {
	case *f.kv == "auto" && *f.bits != 0:
		if c, err = kvcache.Auto(*f.bits, *f.window); err != nil {
			return c, usageError{err}
		}
	case f.auto():
		// A saved plan: its budget.
		if c, err = withWindow(kvcache.Config{}, *f.window); err != nil {
			return c, err
		}
	default:
		sh := l.m.CacheShape()
		rec := kvcache.Recommended(sh)
		if c, err = f.spec(rec); err != nil {
			return c, err
		}
		if k, v := f.names(); (k == recommendedKV || v == recommendedKV) && rec.K.String() == "f16" {
			fmt.Fprintf(e.stderr, "KV format %s: no compressed format fits this model's head dimension %d: using f16\n", recommendedKV, sh.HeadDim)
		}
	}
	o := eval.KVPlanOptions{File: *f.plan, CovFile: *f.calibFile, NoMeasure: !measure, CalibCtx: *f.calibCtx, CalibChunks: *f.calibChunks,
		Log: func(msg string) { fmt.Fprintln(e.stderr, msg) }}
	var calib []int32
	if f.auto() || *f.calibFile != "" && c.NeedsCovariances() {
		if o.Model, err = eval.ModelSHA256(modelPath); err != nil {
			return c, err
		}
	}
	if f.auto() {
		if o.Candidates, err = parseFormats(*f.candidates); err != nil {
			return c, err
		}
	}
	if f.auto() || c.NeedsCovariances() {
		text, err := readText(*f.calib)
		if err != nil {
			return c, err
		}
		if l.tok != nil {
			calib = l.tok.Encode(text, true)
		}
		if isTerminal(e.stderr) {
			o.Progress = func(done, total int) { fmt.Fprintf(e.stderr, "\r%d/%d", done, total) }
			defer fmt.Fprintln(e.stderr)
		}
	}
	var bos int32
	if l.tok != nil {
		bos = l.tok.BOS()
	}
	c, err = eval.PlanKV(context.Background(), l.m, calib, bos, c, o)
	if err != nil {
		return c, kvError(err)
	}
	if p := c.Plan(); p != nil {
		fmt.Fprint(e.stderr, p.Describe())
	}
	return c, nil
}

// kvError makes a KV request that cannot be met a usage error.
func kvError(err error) error {
	if errors.Is(err, eval.ErrKVRequest) {
		return usageError{err}
	}
	return err
}

// openWithKV validates the KV flags, loads the model the generation flags
// name and checks the KV configuration against it, all before any work:
// the common start of every model command. The caller closes l.m.
func openWithKV(e *env, g modelFlags, kvf kvFlags) (*loaded, kvcache.Config, error) {
	if err := kvf.validate(); err != nil {
		return nil, kvcache.Config{}, err
	}
	if err := g.check(); err != nil {
		return nil, kvcache.Config{}, err
	}
	l, err := g.load(e)
	if err != nil {
		return nil, kvcache.Config{}, err
	}
	c, err := kvf.config(e, l, *g.model, true)
	if err != nil {
		l.m.Close()
		return nil, kvcache.Config{}, err
	}
	return l, c, nil
}

// formatHelp lists the KV formats for --help: the ones to use, then the
// research baselines (kvcache.Format.Research) apart.
func formatHelp() string {
	var use, research []string
	for _, name := range kvcache.FormatNames() {
		switch f, err := kvcache.ParseFormat(name); {
		case err == nil && f.Research():
			research = append(research, name)
		default:
			use = append(use, name)
		}
	}
	return strings.Join(use, ", ") + " (turbo3.5: 4.5x smaller than f16 at long context, less KL than q4_0 at head dimension 128; turbo4: less KL than q4_0 on every model measured; tcq: klt with trellis-coded components, less KL than klt at the same bits, auto's default candidates; HIGH>LOW~BITS or HIGH>LOW@AGE, tiered klt or tcq formats: tcq3.5>2~2.5 holds the newest of each head's compressed tokens as tcq3.5 (a share of its own, from the calibration's attention profile, a third on average) and re-codes the rest as tcq2, at most 2.5 bits at every length, below q4_0's KL at 1024, 2048 and 4096 tokens on every model measured; tcq3.5>2@384 re-codes a token once 384 newer ones are held); research baselines, measured to lose to the turbo formats: " + strings.Join(research, ", ")
}
