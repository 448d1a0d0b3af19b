package eval

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// DefaultKVCandidates are the formats a per-layer plan chooses among
// unless told otherwise (f16 always is one too): the turbo rates in steps
// of about half a bit from 2.1 to 5.1 bits, q8_0 for the most sensitive
// parts, and the tcq rates from 2 to 6 bits (klt's calibrated transform
// coder with trellis-coded components: a plan with them measures the K/V
// covariances on its calibration windows first, and its sensitivities
// take about twice as long as with the turbo rates alone). The tcq rates
// replaced the klt rates of the same bits, which lose to them at every
// rate (0.52–0.64x klt's KL): on the model suite (2 scored windows of
// 1024, fp16 window 64, 2 calibration windows) auto:3.5 has 1.6–2.1x
// q8_0's KL with them against 1.8–2.6x with the klt rates, and auto:2.5
// is below q4_0's on every model (BENCHMARKS.md, "tcq as auto's default
// candidates"). kivi2, polar, q4_0 and turbo3.5p lose to a turbo format
// of fewer bits, and plans with centred keys no longer chose kivi2 for
// any layer, so they are left out.
const DefaultKVCandidates = "turbo2,turbo2.5,turbo3,turbo3.5,turbo4,turbo5,q8_0,tcq2,tcq2.5,tcq3,tcq3.5,tcq4,tcq4.5,tcq5,tcq6"

// ParseFormats parses a comma-separated list of KV format names.
func ParseFormats(list string) ([]kvcache.Format, error) {
	var fs []kvcache.Format
	for _, name := range strings.Split(list, ",") {
		f, err := kvcache.ParseFormat(strings.TrimSpace(name))
		if err != nil {
			return nil, err
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// ErrKVRequest marks a KV plan request that cannot be met as asked: a
// saved plan of another model, a budget below the cheapest candidates, a
// window the plan was not measured with, calibration windows too short
// to measure anything, no saved plan where measuring is not allowed. It
// is the caller's input, not a failure of the run.
var ErrKVRequest = errors.New("eval: KV plan request")

// KVPlanOptions configures PlanKV.
type KVPlanOptions struct {
	// Model is the hex SHA-256 of the model file (ModelSHA256): a saved
	// plan is refused for any other model, and a new one records it.
	Model string
	// File names a saved plan: read when it exists, else written once a
	// plan is measured ("" none).
	File string
	// NoMeasure refuses to measure: only a saved plan will do.
	NoMeasure bool
	// Candidates are the formats to choose among (nil: DefaultKVCandidates).
	Candidates []kvcache.Format
	// CalibCtx is the calibration window length in tokens (0: 1024; at
	// most the model's context) and CalibChunks the number of windows
	// (0: 4), taken from the end of the calibration tokens.
	CalibCtx, CalibChunks int
	// CovFile names a saved calibration of the klt and tcq formats (K/V
	// covariances, kvcache.CovarianceFile): read when it exists and
	// holds the same model's (Model, which it needs) moments of the same
	// calibration tokens, else written once they are measured ("" none).
	CovFile string
	// Progress, if set, is called after each sensitivity measurement.
	Progress func(done, total int)
	// Log, if set, receives one line for each step that takes time or
	// writes a file (measuring, saving).
	Log func(msg string)
}

// calib returns the calibration window length and number of windows,
// the defaults where o leaves them 0.
func (o KVPlanOptions) calib() (ctxLen, chunks int) {
	ctxLen, chunks = o.CalibCtx, o.CalibChunks
	if ctxLen == 0 {
		ctxLen = 1024
	}
	if chunks == 0 {
		chunks = 4
	}
	return ctxLen, chunks
}

func (o KVPlanOptions) log(format string, a ...any) {
	if o.Log != nil {
		o.Log(fmt.Sprintf(format, a...))
	}
}

// PlanKV returns the cache configuration c, planned: c itself unless it
// asks for a per-layer plan (c.NeedsPlan, or o.File naming a plan); then
// the plan saved in o.File when there is one, checked against the model
// and re-allocated from its measurements when c asks for another budget;
// else a plan measured (KVSensitivity on the last CalibChunks windows of
// calib) and allocated (kvcache.Allocate) for c's budget and window, and
// saved to o.File when it names one. Nothing is measured before every
// check has passed.
func PlanKV(ctx context.Context, m *model.Model, calib []int32, bos int32, c kvcache.Config, o KVPlanOptions) (kvcache.Config, error) {
	c, err := withCovariances(ctx, m, calib, bos, c, o)
	if err != nil {
		return c, err
	}
	if !c.NeedsPlan() && o.File == "" {
		return c, checkConfig(m, c)
	}
	if _, ok := c.Spec(); ok {
		// A plan file alone: its budget, and its window unless c names one.
		w, err := (kvcache.Config{}).WithWindow(c.Window())
		if err != nil {
			return c, fmt.Errorf("%w: %w", ErrKVRequest, err)
		}
		c = w
	}
	p, err := LoadKVPlan(o.File, m, o.Model, c)
	if err != nil {
		return c, err
	}
	if p != nil {
		return withCovariances(ctx, m, calib, bos, kvcache.Planned(p), o)
	}
	if o.NoMeasure {
		return c, fmt.Errorf("%w: no saved plan to read for %s; measure one first (--kv auto --kv-bits B --kv-plan FILE)", ErrKVRequest, c)
	}
	if !c.NeedsPlan() {
		return c, fmt.Errorf("%w: the plan %s does not exist, and no budget was given to measure one", ErrKVRequest, o.File)
	}
	if p, err = MeasureKVPlan(ctx, m, calib, bos, c, o); err != nil {
		return c, err
	}
	if o.File != "" {
		if err := SaveKVPlan(o.File, p); err != nil {
			return c, err
		}
		o.log("KV plan saved to %s", o.File)
	}
	return kvcache.Planned(p), nil
}

// withCovariances returns c with covariances measured on the last
// CalibChunks windows of calib when it uses a klt format without them.
// They are not saved with a plan: the same calibration text gives them
// back bit for bit.
func withCovariances(ctx context.Context, m *model.Model, calib []int32, bos int32, c kvcache.Config, o KVPlanOptions) (kvcache.Config, error) {
	if !c.NeedsCovariances() {
		return c, nil
	}
	if o.NoMeasure {
		return c, fmt.Errorf("%w: %s needs K/V covariances measured on calibration text", ErrKVRequest, c)
	}
	ctxLen, chunks := o.calib()
	cov, err := covariances(ctx, m, calib, bos, ctxLen, chunks, o, c.String())
	if err != nil {
		return c, err
	}
	return c.WithCovariances(cov), nil
}

// checkConfig checks c against the model's layers and shape.
func checkConfig(m *model.Model, c kvcache.Config) error {
	if err := c.Check(m.Config.Layers, m.CacheShape()); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrKVRequest, c, err)
	}
	return nil
}

// LoadKVPlan reads the plan saved at path, or returns nil when there is
// no such file (or path is empty), and checks it against the model (its
// file's hex SHA-256 hash, its layers and shape). When c asks for a
// budget other than the plan's, the plan is allocated again from its
// measurements; a window other than the plan's is refused.
func LoadKVPlan(path string, m *model.Model, hash string, c kvcache.Config) (*kvcache.Plan, error) {
	if path == "" {
		return nil, nil
	}
	r, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("eval: KV plan: %w", err)
	}
	defer r.Close()
	p, err := kvcache.ReadPlan(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if b := c.Budget(); b != 0 && b != p.Budget {
		// The plan holds its measurements: choose again for this budget.
		q, err := kvcache.Allocate(p.Sensitivity, b, p.HeadDim)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrKVRequest, path, err)
		}
		q.Model, q.Window, q.Seed = p.Model, p.Window, p.Seed
		p = q
	}
	if w := c.Window(); w != 0 && w != p.Window {
		return nil, fmt.Errorf("%w: window %d: the plan %s was measured with window %d", ErrKVRequest, w, path, p.Window)
	}
	if err := p.Check(hash, m.Config.Layers, m.CacheShape()); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKVRequest, path, err)
	}
	return p, nil
}

// MeasureKVPlan measures the sensitivity of every layer's keys and values
// to each candidate format on the last CalibChunks windows of calib and
// allocates c's budget over them (kvcache.Allocate), with c's window.
func MeasureKVPlan(ctx context.Context, m *model.Model, calib []int32, bos int32, c kvcache.Config, o KVPlanOptions) (*kvcache.Plan, error) {
	ctxLen, chunks := o.calib()
	ctxLen = min(ctxLen, m.Config.Context)
	if err := CheckCalibWindow(ctxLen, c.Window()); err != nil {
		return nil, err
	}
	cands, err := candidates(o)
	if err != nil {
		return nil, err
	}
	if err := checkBudget(c.Budget(), cands, m.Config.HeadDim); err != nil {
		return nil, err
	}
	if need := ctxLen * chunks; len(calib) > need {
		calib = calib[len(calib)-need:] // the end: eval kv scores the start
	}
	s, cov, err := measureKVSensitivity(ctx, m, calib, bos, c.Window(), ctxLen, cands, o)
	if err != nil {
		return nil, err
	}
	p, err := allocateKV(s, cov, c, m.Config.HeadDim)
	if err != nil {
		return nil, err
	}
	p.Model = o.Model
	return p, nil
}

// candidates returns the options' candidate formats.
func candidates(o KVPlanOptions) ([]kvcache.Format, error) {
	if o.Candidates != nil {
		return o.Candidates, nil
	}
	return ParseFormats(DefaultKVCandidates)
}

// checkBudget refuses, before anything is measured, a budget that even
// the cheapest candidates for keys and for values exceed (f16 is always
// one).
func checkBudget(budget float64, cands []kvcache.Format, headDim int) error {
	minK, minV := 16.0, 16.0
	for _, f := range cands {
		b, err := f.Bits(headDim)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrKVRequest, err)
		}
		minK = min(minK, b)
		if f.Check(headDim, false) == nil {
			minV = min(minV, b)
		}
	}
	if (minK+minV)/2 > budget+1e-9 {
		return fmt.Errorf("%w: a budget of %g bits per coordinate is below the smallest candidate formats' %.3f", ErrKVRequest, budget, (minK+minV)/2)
	}
	return nil
}

// measureKVSensitivity runs KVSensitivity over the windows of calib with
// the candidates cands, logging what it does; when a candidate is a klt
// format, the covariances it is measured with (from the same windows)
// come back too.
func measureKVSensitivity(ctx context.Context, m *model.Model, calib []int32, bos int32, window, ctxLen int, cands []kvcache.Format, o KVPlanOptions) (kvcache.Sensitivity, *kvcache.Covariances, error) {
	var cov *kvcache.Covariances
	if slices.ContainsFunc(cands, kvcache.Format.Calibrated) {
		var err error
		if cov, err = covariances(ctx, m, calib, bos, ctxLen, len(calib)/ctxLen, o, "the calibrated candidates (klt, tcq)"); err != nil {
			return kvcache.Sensitivity{}, nil, err
		}
	}
	o.log("measuring KV sensitivity: %d layers × keys/values × %d formats on %d windows of %d tokens", m.Config.Layers, len(cands), len(calib)/ctxLen, ctxLen)
	s, err := KVSensitivity(ctx, m, calib, bos, cands, SensitivityOptions{Ctx: ctxLen, Window: window, Cov: cov, Progress: o.Progress})
	return s, cov, err
}

// allocateKV allocates c's budget over measured sensitivities, with c's
// window and the covariances of klt candidates.
func allocateKV(s kvcache.Sensitivity, cov *kvcache.Covariances, c kvcache.Config, headDim int) (*kvcache.Plan, error) {
	p, err := kvcache.Allocate(s, c.Budget(), headDim)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKVRequest, err)
	}
	p.Window, p.Cov = c.Window(), cov
	return p, nil
}

// CheckCalibWindow refuses calibration windows of ctxLen tokens whose
// scored second half would lie inside the fp16 window (Spec.Window):
// nothing measured would be compressed.
func CheckCalibWindow(ctxLen, window int) error {
	w := window
	if w == 0 {
		w = kvcache.DefaultWindow
	}
	if ctxLen/2 <= 2*w {
		return fmt.Errorf("%w: calibration windows of %d tokens: the scored half must be over twice the fp16 window of %d tokens to measure compression; use a longer --kv-calib-ctx (or --ctx) or a shorter --kv-window", ErrKVRequest, ctxLen, max(w, 0))
	}
	return nil
}

// SaveKVPlan writes p to path, through a temporary file so that a failed
// write leaves no partial plan.
func SaveKVPlan(path string, p *kvcache.Plan) error { return SaveFile(path, p) }

// ModelSHA256 returns the hex SHA-256 of the model file at path, or of
// the embedded default model when path is empty: what a saved plan is
// keyed by.
func ModelSHA256(path string) (string, error) {
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
		return "", fmt.Errorf("eval: hashing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
