package eval

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tensor"
	"github.com/turbomem/turbomem/wquant"
)

// DefaultWeightTypes are the types a weight plan chooses among unless told
// otherwise (each tensor may also keep its source type): the K-quants,
// Q8_0, and TQ1_0 (ternary, 1.6875 bits per weight) below Q2_K's 2.625,
// which lets budgets under 2.7 bits per weight be met. TQ2_0 holds the
// same values as TQ1_0 (tensor.TestTernaryTypesAgree) in 22% more bytes,
// so it is not among them: with both, the allocator would never take it.
var DefaultWeightTypes = []tensor.DType{tensor.Q8_0, tensor.Q6_K, tensor.Q5_K, tensor.Q4_K, tensor.Q3_K, tensor.Q2_K, tensor.TQ1_0}

// WeightPlanOptions configures PlanWeights.
type WeightPlanOptions struct {
	// Source is the hex SHA-256 of the source model file (ModelSHA256):
	// a saved plan is refused for any other file, and a new one records
	// it.
	Source string
	// File names a saved plan: read when it exists (and allocated again
	// when Budget differs from its own), else written once a plan is
	// measured ("": none).
	File string
	// Budget is the bytes of tensor data allowed (0: a saved plan's).
	Budget int64
	// Types are the candidates (nil: DefaultWeightTypes).
	Types []tensor.DType
	// CalibCtx is the calibration window length in tokens (0: 512, at
	// most the model's context), CalibChunks the number of windows (0:
	// 4), taken from the end of the calibration tokens.
	CalibCtx, CalibChunks int
	// Progress, if set, is called after each measurement.
	Progress func(done, total int)
	// Log, if set, receives one line for each step that takes time or
	// writes a file.
	Log func(msg string)
}

func (o WeightPlanOptions) log(format string, a ...any) {
	if o.Log != nil {
		o.Log(fmt.Sprintf(format, a...))
	}
}

// PlanWeights returns the weight plan of the model m (loaded from src)
// for o.Budget: the plan saved in o.File when there is one, checked
// against src and allocated again from its measurements for another
// budget; else one measured (MeasureWeights with q, on calib) and
// allocated (wquant.Allocate), saved to o.File when it names one.
func PlanWeights(ctx context.Context, m *model.Model, src *gguf.File, q *wquant.Quantizer, calib []int32, bos int32, o WeightPlanOptions) (*wquant.Plan, error) {
	if o.File != "" {
		p, err := loadWeightPlan(o.File, src, o)
		if err != nil || p != nil {
			return p, err
		}
	}
	if o.Budget <= 0 {
		return nil, fmt.Errorf("eval: no budget to measure a weight plan for")
	}
	s, err := MeasureWeights(ctx, m, src, q, calib, bos, o)
	if err != nil {
		return nil, err
	}
	p, err := wquant.Allocate(src, o.Source, s, o.Budget)
	if err != nil {
		return nil, err
	}
	if o.File != "" {
		if err := SaveFile(o.File, p); err != nil {
			return nil, err
		}
		o.log("weight plan saved to %s", o.File)
	}
	return p, nil
}

// loadWeightPlan reads the plan at path (nil when there is no such
// file), checks it against src and allocates it again for another budget.
func loadWeightPlan(path string, src *gguf.File, o WeightPlanOptions) (*wquant.Plan, error) {
	r, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("eval: weight plan: %w", err)
	}
	defer r.Close()
	p, err := wquant.ReadPlan(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := p.Check(src, o.Source); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if o.Budget > 0 && o.Budget != p.Budget {
		if p.Sensitivity == nil {
			return nil, fmt.Errorf("%s: the plan (%s) holds no measurements to allocate %d bytes from", path, p.Recipe, o.Budget)
		}
		o.log("allocating %d bytes from the measurements in %s", o.Budget, path)
		return wquant.Allocate(src, o.Source, *p.Sensitivity, o.Budget)
	}
	o.log("weight plan read from %s", path)
	return p, nil
}

// MeasureWeights measures every weight matrix of src (wquant.Quantizable)
// in every candidate type that fits it other than its own
// (WeightSensitivity, with q's encodings) on the last CalibChunks windows of calib.
func MeasureWeights(ctx context.Context, m *model.Model, src *gguf.File, q *wquant.Quantizer, calib []int32, bos int32, o WeightPlanOptions) (wquant.Sensitivity, error) {
	types := o.Types
	if types == nil {
		types = DefaultWeightTypes
	}
	ctxLen, chunks := o.CalibCtx, o.CalibChunks
	if ctxLen == 0 {
		ctxLen = 512
	}
	if chunks == 0 {
		chunks = 4
	}
	ctxLen = min(ctxLen, m.Config.Context)
	if need := ctxLen * chunks; len(calib) > need {
		calib = calib[len(calib)-need:] // the end: evaluations score the start
	}
	var names []string
	for _, t := range src.Tensors {
		if wquant.Quantizable(t) {
			names = append(names, t.Name)
		}
	}
	o.log("measuring weight sensitivity: %d matrices × %d types on %d windows of %d tokens", len(names), len(types), len(calib)/ctxLen, ctxLen)
	encode := func(name string, t tensor.DType) ([]byte, error) {
		ti, _ := src.Tensor(name)
		if !wquant.Fits(ti.Shape, t) {
			return nil, fmt.Errorf("%w: %s in %s", ErrSkip, name, t)
		}
		if t == ti.Type {
			// Keeping the source's type costs nothing: Allocate offers
			// it at loss 0 without a measurement.
			return nil, fmt.Errorf("%w: %s is stored in %s", ErrSkip, name, t)
		}
		return q.Encode(name, t)
	}
	loss, err := WeightSensitivity(ctx, m, calib, bos, names, types, encode, SensitivityOptions{Ctx: ctxLen, Progress: o.Progress})
	return wquant.Sensitivity{Tensors: names, Types: types, Loss: loss}, err
}

// SaveFile writes what w writes to path, through a temporary file so that
// a failed write leaves no partial file.
func SaveFile(path string, w io.WriterTo) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("eval: saving %s: %w", path, err)
	}
	if _, err := w.WriteTo(f); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("eval: saving %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("eval: saving %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}
