package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// kvFlags are the KV cache options every model command shares.
type kvFlags struct {
	kv, k, v    *string
	window      *int
	bits        *float64
	plan, calib *string
	candidates  *string
	calibCtx    *int
	calibChunks *int
}

// defaultCandidates are the formats --kv auto chooses among (f16 always
// is one too): the turbo rates cover 2.5 to 4.1 bits, q8_0 the sensitive
// parts, and kivi2, whose per-channel keys suit some layers' keys (the
// reference model's plans take it for the middle layers' keys though it
// loses as a whole-model format). polar, q4_0 and turbo3.5p lose to a
// turbo format of fewer bits in that model's eval kv table, so they are
// left out by default (--kv-candidates adds them).
const defaultCandidates = "turbo2.5,kivi2,turbo3,turbo3.5,turbo4,q8_0"

func addKVFlags(fs *flag.FlagSet) kvFlags {
	names := strings.Join(kvcache.FormatNames(), ", ")
	return kvFlags{
		kv:          fs.String("kv", "f16", "KV cache format for keys and values: "+names+"; or auto (per layer, see --kv-bits)"),
		k:           fs.String("kv-k", "", "key format (overrides --kv)"),
		v:           fs.String("kv-v", "", "value format (overrides --kv)"),
		window:      fs.Int("kv-window", 0, fmt.Sprintf("recent tokens kept in fp16 by compressed formats (0: %d; -1: none)", kvcache.DefaultWindow)),
		bits:        fs.Float64("kv-bits", 0, "with --kv auto: average bits per coordinate to allocate over layers' keys and values"),
		plan:        fs.String("kv-plan", "", "per-layer KV plan file (JSON): used if it exists, else written by --kv auto"),
		calib:       fs.String("kv-calib", "", "with --kv auto: calibration text (default: the embedded held-out text)"),
		candidates:  fs.String("kv-candidates", defaultCandidates, "with --kv auto: formats to choose among (f16 is always one)"),
		calibCtx:    fs.Int("kv-calib-ctx", 1024, "with --kv auto: calibration window length in tokens"),
		calibChunks: fs.Int("kv-calib-chunks", 4, "with --kv auto: calibration windows (taken from the end of the text)"),
	}
}

// auto reports whether the flags ask for a per-layer plan.
func (f kvFlags) auto() bool { return *f.kv == "auto" || *f.plan != "" }

// spec returns the cache configuration the flags name when they name one
// format pair for every layer.
func (f kvFlags) spec() (kvcache.Config, error) {
	k, v := *f.k, *f.v
	if k == "" {
		k = *f.kv
	}
	if v == "" {
		v = *f.kv
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
	if !f.auto() {
		if *f.bits != 0 {
			return usageError{errors.New("--kv-bits needs --kv auto")}
		}
		_, err := f.spec()
		return err
	}
	if *f.kv != "auto" && *f.kv != "f16" || *f.k != "" || *f.v != "" {
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
	if *f.calibCtx < 16 || *f.calibChunks < 1 || *f.calibChunks > 1024 {
		return usageError{fmt.Errorf("--kv-calib-ctx %d / --kv-calib-chunks %d out of range (≥ 16, 1..1024)", *f.calibCtx, *f.calibChunks)}
	}
	_, err := parseFormats(*f.candidates)
	return err
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
	var fs []kvcache.Format
	for _, name := range strings.Split(list, ",") {
		f, err := kvcache.ParseFormat(strings.TrimSpace(name))
		if err != nil {
			return nil, usageError{err}
		}
		fs = append(fs, f)
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

// config checks the flags against the model before any work starts and
// returns the cache configuration they name. With --kv auto it loads the
// plan, or measures one (printing it to stderr) and saves it when
// --kv-plan names a new file; measure false refuses to measure instead.
func (f kvFlags) config(e *env, l *loaded, modelPath string, measure bool) (kvcache.Config, error) {
	if !f.auto() {
		c, err := f.spec()
		if err != nil {
			return c, err
		}
		return c, checkConfigs(l.m, c)
	}
	hash, err := modelSHA256(modelPath)
	if err != nil {
		return kvcache.Config{}, err
	}
	p, err := f.savedPlan(l.m, hash)
	if err != nil {
		return kvcache.Config{}, err
	}
	if p == nil {
		if !measure {
			return kvcache.Config{}, usageError{fmt.Errorf("--kv auto: no saved plan to read (--kv-plan FILE); make one with run or eval --kv auto --kv-bits B --kv-plan FILE")}
		}
		if p, err = f.measurePlan(e, l, hash); err != nil {
			return kvcache.Config{}, err
		}
		if *f.plan != "" {
			if err := writePlan(*f.plan, p); err != nil {
				return kvcache.Config{}, err
			}
			fmt.Fprintf(e.stderr, "KV plan saved to %s\n", *f.plan)
		}
	}
	fmt.Fprint(e.stderr, p.Describe())
	return kvcache.Planned(p), nil
}

// savedPlan returns the --kv-plan file's plan checked against the model
// (re-allocated from its measurements when --kv-bits asks for another
// budget), or nil when there is no such file.
func (f kvFlags) savedPlan(m *model.Model, hash string) (*kvcache.Plan, error) {
	p, err := f.loadPlan()
	if p == nil || err != nil {
		return nil, err
	}
	if *f.bits != 0 && *f.bits != p.Budget {
		// The plan holds its measurements: choose again for this budget.
		q, err := kvcache.Allocate(p.Sensitivity, *f.bits, p.HeadDim)
		if err != nil {
			return nil, usageError{fmt.Errorf("--kv-plan %s: %w", *f.plan, err)}
		}
		q.Model, q.Window, q.Seed = p.Model, p.Window, p.Seed
		p = q
	}
	if *f.window != 0 && *f.window != p.Window {
		return nil, usageError{fmt.Errorf("--kv-window %d: the plan was measured with window %d", *f.window, p.Window)}
	}
	if err := p.Check(hash, m.Config.Layers, m.CacheShape()); err != nil {
		return nil, usageError{fmt.Errorf("--kv-plan %s: %w", *f.plan, err)}
	}
	return p, nil
}

// loadPlan reads the --kv-plan file, or returns nil when there is none.
func (f kvFlags) loadPlan() (*kvcache.Plan, error) {
	if *f.plan == "" {
		return nil, nil
	}
	r, err := os.Open(*f.plan)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer r.Close()
	p, err := kvcache.ReadPlan(r)
	if err != nil {
		return nil, fmt.Errorf("--kv-plan %s: %w", *f.plan, err)
	}
	return p, nil
}

// measurePlan measures the sensitivity of every layer's keys and values
// on the calibration text and allocates --kv-bits over them.
func (f kvFlags) measurePlan(e *env, l *loaded, hash string) (*kvcache.Plan, error) {
	cands, err := parseFormats(*f.candidates)
	if err != nil {
		return nil, err
	}
	text, err := readText(*f.calib)
	if err != nil {
		return nil, err
	}
	ctxLen := min(*f.calibCtx, l.m.Config.Context)
	if err := checkCalibWindow(ctxLen, *f.window); err != nil {
		return nil, err
	}
	ids := l.tok.Encode(text, true)
	if need := ctxLen * *f.calibChunks; len(ids) > need {
		ids = ids[len(ids)-need:] // the end: eval kv scores the start
	}
	s, err := measureSensitivity(e, l, ids, cands, eval.SensitivityOptions{Ctx: ctxLen, Window: *f.window})
	if err != nil {
		return nil, err
	}
	p, err := kvcache.Allocate(s, *f.bits, l.m.Config.HeadDim)
	if err != nil {
		return nil, usageError{err}
	}
	p.Model, p.Window = hash, *f.window
	return p, nil
}

// checkCalibWindow refuses calibration windows whose scored second half
// would lie inside the fp16 window: nothing measured would be compressed.
func checkCalibWindow(ctxLen, window int) error {
	w := window
	if w == 0 {
		w = kvcache.DefaultWindow
	}
	if ctxLen/2 <= 2*w {
		return usageError{fmt.Errorf("calibration windows of %d tokens: the scored half must be over twice the fp16 window of %d tokens to measure compression; use a longer --kv-calib-ctx (or --ctx) or a shorter --kv-window", ctxLen, max(w, 0))}
	}
	return nil
}

// measureSensitivity runs eval.KVSensitivity with progress on stderr.
func measureSensitivity(e *env, l *loaded, ids []int32, cands []kvcache.Format, o eval.SensitivityOptions) (kvcache.Sensitivity, error) {
	chunks := len(ids) / o.Ctx
	fmt.Fprintf(e.stderr, "measuring KV sensitivity: %d layers × keys/values × %d formats on %d windows of %d tokens\n", l.m.Config.Layers, len(cands), chunks, o.Ctx)
	if isTerminal(e.stderr) {
		o.Progress = func(done, total int) { fmt.Fprintf(e.stderr, "\r%d/%d", done, total) }
		defer fmt.Fprintln(e.stderr)
	}
	return eval.KVSensitivity(context.Background(), l.m, ids, l.tok.BOS(), cands, o)
}

// writePlan writes p to path, through a temporary file so that a failed
// write leaves no partial plan.
func writePlan(path string, p *kvcache.Plan) error {
	tmp := path + ".tmp"
	w, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := p.WriteTo(w); err != nil {
		w.Close()
		os.Remove(tmp)
		return err
	}
	if err := w.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// modelSHA256 returns the hex SHA-256 of the model file at path, or of
// the embedded model when path is empty.
func modelSHA256(path string) (string, error) {
	if path == "" {
		return defaultmodel.SHA256, nil
	}
	r, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", fmt.Errorf("hashing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// openWithKV validates the KV flags, loads the model the generation flags
// name and checks the KV configuration against it, all before any work:
// the common start of every model command. The caller closes l.m.
func openWithKV(e *env, g genFlags, kvf kvFlags) (*loaded, kvcache.Config, error) {
	if err := kvf.validate(); err != nil {
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
