package kvcache

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/turbomem/turbomem/alloc"
	"github.com/turbomem/turbomem/internal/jsonsum"
)

// Sensitivity is the measured cost of compressing each part of a model's
// cache on its own: Loss[p][j] is the mean KL divergence of the
// next-token distributions (nats) from the f16 cache's when only part p
// is stored in Formats[j] and every other part stays f16. Parts are
// layer 0's keys, layer 0's values, layer 1's keys, … (2 per layer). A
// negative loss marks a format that cannot serve the part (qjl for
// values).
type Sensitivity struct {
	Formats []Format
	Loss    [][]float64
}

// Layers returns the number of layers measured.
func (s *Sensitivity) Layers() int { return len(s.Loss) / 2 }

// Floor returns what Allocate charges f16 for part p: the least loss
// measured for the part, less one part in 10⁹ (so that f16, the
// reference, wins the tie with the best format where the budget pays for
// it); 0 when no format was measured for it. Measured on a model whose
// products round their input to 8 bits (quantized weights), every change
// to a part, however small, costs about the same floor (on the model
// suite's 8M models up to 0.00007 for an exact f32 part, more than what
// q8_0 adds to it), and f16 at a loss of 0 would win that floor for 16
// bits: plans of 4.5 bits bought f16 for a layer's values and did worse
// than plans of 4 (BENCHMARKS.md, "auto:3.5 against q8_0").
func (s *Sensitivity) Floor(p int) float64 {
	floor := math.Inf(1)
	for j, l := range s.Loss[p] {
		if l >= 0 && s.Formats[j].name != "f16" {
			floor = min(floor, l)
		}
	}
	if math.IsInf(floor, 1) {
		return 0
	}
	return floor * (1 - 1e-9)
}

// validate checks the shape and values of s.
func (s *Sensitivity) validate() error {
	if len(s.Formats) == 0 || len(s.Formats) > 64 {
		return fmt.Errorf("%d candidate formats, want 1 to 64", len(s.Formats))
	}
	if len(s.Loss) == 0 || len(s.Loss)%2 != 0 || len(s.Loss) > 2*maxPlanLayers {
		return fmt.Errorf("%d parts, want 2 per layer and at most %d layers", len(s.Loss), maxPlanLayers)
	}
	for p, row := range s.Loss {
		if len(row) != len(s.Formats) {
			return fmt.Errorf("part %d has %d losses for %d formats", p, len(row), len(s.Formats))
		}
		for j, l := range row {
			if math.IsNaN(l) || math.IsInf(l, 0) {
				return fmt.Errorf("part %d, format %s: loss %g is not finite", p, s.Formats[j], l)
			}
		}
	}
	return nil
}

// maxPlanLayers bounds the layers of a plan read from a file.
const maxPlanLayers = 4096

// LayerFormats are the key and value formats of one layer.
type LayerFormats struct {
	K, V Format
}

// Plan assigns a key format and a value format to every layer of one
// model, chosen from measured sensitivities under a budget of bits per
// coordinate (Allocate). Its NewCache makes the caches it describes.
type Plan struct {
	// Model is the hex SHA-256 of the model file the plan was measured
	// on; a plan is refused for any other model.
	Model string
	// Budget is the average bits per coordinate that was asked for.
	Budget float64
	// HeadDim is the head dimension the bits are counted at.
	HeadDim int
	// Window and Seed are those of every layer's Spec.
	Window int
	Seed   uint64
	Layers []LayerFormats
	// Cov is the calibration of the plan's klt formats (not saved with
	// the plan; nil when it has none).
	Cov *Covariances `json:"-"`
	// Predicted is the sum of the chosen parts' measured losses: the
	// predicted mean KL of the whole plan.
	Predicted float64
	// Sensitivity is what the plan was chosen from; it lets a plan be
	// re-allocated for another budget without measuring again.
	Sensitivity Sensitivity
}

// Allocate chooses a format for every part measured in s so that the
// predicted loss (the sum of the parts' losses) is least while the
// average bits per coordinate at head dimension d (Format.Bits, every
// part the same size) stays within budget. f16 is always a candidate,
// charged its part's floor (Sensitivity.Floor): a measured loss holds
// what any change to the part costs besides what its format adds, and
// f16, the reference, is not measured, so a loss of 0 would buy it the
// whole floor. The choice is exact (alloc.Choose): a dynamic program over
// the total bits in units of 1/64 bit, in which every format's rate is a
// whole number.
func Allocate(s Sensitivity, budget float64, d int) (*Plan, error) {
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("kvcache: sensitivity: %w", err)
	}
	if !(budget > 0 && budget <= 32) {
		return nil, fmt.Errorf("kvcache: budget of %g bits per coordinate out of range (0, 32]", budget)
	}
	const unit = 1.0 / 64 // bits
	f16, _ := ParseFormat("f16")
	costs := make([]int, len(s.Formats))
	for j, f := range s.Formats {
		b, err := f.Bits(d)
		if err != nil {
			return nil, err
		}
		if costs[j], err = alloc.Units(b, unit); err != nil || float64(costs[j])*unit != b {
			return nil, fmt.Errorf("kvcache: format %s: %g bits is not a multiple of 1/64", f, b)
		}
	}
	parts := len(s.Loss)
	items := make([][]alloc.Option, parts)
	formats := make([][]Format, parts) // the format of each option
	for p := range parts {
		items[p] = append(items[p], alloc.Option{Cost: 16 * 64, Loss: s.Floor(p)})
		formats[p] = append(formats[p], f16)
		for j, f := range s.Formats {
			l := s.Loss[p][j]
			if l < 0 || f == f16 {
				continue
			}
			if err := f.Check(d, p%2 == 0); err != nil {
				return nil, fmt.Errorf("kvcache: sensitivity: %w", err)
			}
			items[p] = append(items[p], alloc.Option{Cost: costs[j], Loss: l})
			formats[p] = append(formats[p], f)
		}
	}
	picks, loss, err := alloc.Choose(items, int(math.Floor(budget*64*float64(parts)+1e-6)))
	if errors.Is(err, alloc.ErrOverBudget) {
		minUnits := 0
		for _, opts := range items {
			minUnits += slices.MinFunc(opts, func(a, b alloc.Option) int { return a.Cost - b.Cost }).Cost
		}
		return nil, fmt.Errorf("kvcache: a budget of %g bits per coordinate is below the smallest measured formats' %.3f", budget, float64(minUnits)/64/float64(parts))
	}
	if err != nil {
		return nil, fmt.Errorf("kvcache: %w", err)
	}
	plan := &Plan{Budget: budget, HeadDim: d, Layers: make([]LayerFormats, parts/2), Predicted: loss, Sensitivity: s}
	for p, j := range picks {
		if p%2 == 0 {
			plan.Layers[p/2].K = formats[p][j]
		} else {
			plan.Layers[p/2].V = formats[p][j]
		}
	}
	return plan, nil
}

// Spec returns the spec of one layer.
func (p *Plan) Spec(layer int) Spec {
	l := p.Layers[layer]
	return Spec{K: l.K, V: l.V, Window: p.Window, Seed: p.Seed, Cov: p.Cov}
}

// NewCache returns the cache of one layer, in the formats the plan gives
// it; its signature is that of model.NewCache.
func (p *Plan) NewCache(layer int, sh Shape) (Cache, error) {
	if layer < 0 || layer >= len(p.Layers) {
		return nil, fmt.Errorf("kvcache: plan has %d layers, no layer %d", len(p.Layers), layer)
	}
	return p.Spec(layer).NewCache(layer, sh)
}

// ErrOtherModel is returned by Plan.Check for a plan measured on another
// model.
var ErrOtherModel = errors.New("kvcache: plan was measured on another model")

// Check reports whether the plan can serve a model whose file has the
// hex SHA-256 modelHash and whose layers, all of shape sh, number layers.
// The covariances of its calibrated formats, which a plan read from a
// file gets afterwards (Config.WithCovariances), are checked when its
// caches are made.
func (p *Plan) Check(modelHash string, layers int, sh Shape) error {
	if !strings.EqualFold(p.Model, modelHash) {
		return fmt.Errorf("%w: the plan is for the model with SHA-256 %.16s…, this one's is %.16s…; measure a plan for this model with --kv auto", ErrOtherModel, p.Model, modelHash)
	}
	if len(p.Layers) != layers {
		return fmt.Errorf("kvcache: plan has %d layers, the model %d", len(p.Layers), layers)
	}
	if sh.HeadDim != p.HeadDim {
		return fmt.Errorf("kvcache: plan counts bits at head dimension %d, the model's is %d", p.HeadDim, sh.HeadDim)
	}
	for i := range p.Layers {
		if err := p.Spec(i).checkFormats(sh); err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
	}
	return nil
}

// Bits returns the plan's average bits per coordinate (Format.Bits at
// the plan's head dimension, every layer's keys and values alike).
func (p *Plan) Bits() float64 {
	// Format.Bits builds a quantizer: once per format.
	bits := map[Format]float64{}
	of := func(f Format) float64 {
		b, ok := bits[f]
		if !ok {
			b, _ = f.Bits(p.HeadDim)
			bits[f] = b
		}
		return b
	}
	var sum float64
	for _, l := range p.Layers {
		sum += of(l.K) + of(l.V)
	}
	return sum / float64(2*len(p.Layers))
}

// String returns "auto:B" with the budget B.
func (p *Plan) String() string { return fmt.Sprintf("auto:%g", p.Budget) }

// Describe returns one line per layer: its key and value formats and
// their measured losses.
func (p *Plan) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "KV plan %s: %.3f bits per coordinate on average, predicted mean KL %.5f\n", p, p.Bits(), p.Predicted)
	for i, l := range p.Layers {
		fmt.Fprintf(&b, "  layer %2d  K %-9s (KL %.5f)  V %-9s (KL %.5f)\n", i, l.K, p.loss(2*i, l.K), l.V, p.loss(2*i+1, l.V))
	}
	return b.String()
}

// loss returns the measured loss of format f for part i: its floor for
// f16 (Sensitivity.Floor), 0 for a format not measured.
func (p *Plan) loss(i int, f Format) float64 {
	if i >= len(p.Sensitivity.Loss) {
		return 0
	}
	if f.name == "f16" {
		return p.Sensitivity.Floor(i)
	}
	for j, g := range p.Sensitivity.Formats {
		if g == f {
			return p.Sensitivity.Loss[i][j]
		}
	}
	return 0
}

// planVersion is the version of the plan file format.
const planVersion = 1

// planFormat is the plan file's format: JSON with a checksum of itself.
var planFormat = jsonsum.Format{Name: "plan", Version: planVersion, MaxBytes: maxPlanBytes}

// planFile is a plan as JSON.
type planFile struct {
	Version     int          `json:"version"`
	Model       string       `json:"model_sha256"`
	Budget      float64      `json:"budget_bits"`
	Bits        float64      `json:"bits"`
	HeadDim     int          `json:"head_dim"`
	Window      int          `json:"window"`
	Seed        uint64       `json:"seed"`
	Predicted   float64      `json:"predicted_kl"`
	Layers      []layerJSON  `json:"layers"`
	Sensitivity sensitivityJ `json:"sensitivity"`
	// Checksum is the hex SHA-256 of the file's JSON with this field
	// empty: a plan that was edited or damaged is refused.
	Checksum string `json:"checksum"`
}

type layerJSON struct {
	K string `json:"k"`
	V string `json:"v"`
}

type sensitivityJ struct {
	Formats []string    `json:"formats"`
	Loss    [][]float64 `json:"kl"` // per part: layer 0 K, layer 0 V, layer 1 K, …
}

// WriteTo writes the plan as JSON with a checksum.
func (p *Plan) WriteTo(w io.Writer) (int64, error) {
	f := planFile{Version: planVersion, Model: strings.ToLower(p.Model), Budget: p.Budget, Bits: p.Bits(), HeadDim: p.HeadDim,
		Window: p.Window, Seed: p.Seed, Predicted: p.Predicted}
	for _, l := range p.Layers {
		f.Layers = append(f.Layers, layerJSON{K: l.K.name, V: l.V.name})
	}
	for _, g := range p.Sensitivity.Formats {
		f.Sensitivity.Formats = append(f.Sensitivity.Formats, g.name)
	}
	f.Sensitivity.Loss = p.Sensitivity.Loss
	b, err := jsonsum.Marshal(&f, &f.Checksum)
	if err != nil {
		return 0, fmt.Errorf("kvcache: plan: %w", err)
	}
	n, err := w.Write(b)
	return int64(n), err
}

// maxPlanBytes bounds the size of a plan file.
const maxPlanBytes = 16 << 20

// ReadPlan reads a plan that WriteTo wrote, checking its checksum and
// every field.
func ReadPlan(r io.Reader) (*Plan, error) {
	var f planFile
	if err := planFormat.Read(r, &f, &f.Version, &f.Checksum); err != nil {
		return nil, fmt.Errorf("kvcache: plan: %w; measure the plan again", err)
	}
	if h, err := hex.DecodeString(f.Model); err != nil || len(h) != sha256.Size {
		return nil, fmt.Errorf("kvcache: plan: model_sha256 %q is not a SHA-256", f.Model)
	}
	if !(f.Budget > 0 && f.Budget <= 32) || f.HeadDim <= 0 || f.HeadDim > 1<<14 || f.Window < -1 || f.Window > 1<<16 || len(f.Layers) == 0 || len(f.Layers) > maxPlanLayers {
		return nil, fmt.Errorf("kvcache: plan: budget %g, head dim %d, window %d or %d layers out of range", f.Budget, f.HeadDim, f.Window, len(f.Layers))
	}
	p := &Plan{Model: f.Model, Budget: f.Budget, HeadDim: f.HeadDim, Window: f.Window, Seed: f.Seed, Predicted: f.Predicted}
	for i, l := range f.Layers {
		k, err := ParseFormat(l.K)
		if err != nil {
			return nil, fmt.Errorf("kvcache: plan: layer %d: %w", i, err)
		}
		v, err := ParseFormat(l.V)
		if err != nil {
			return nil, fmt.Errorf("kvcache: plan: layer %d: %w", i, err)
		}
		if k.tiered() || v.tiered() {
			return nil, fmt.Errorf("kvcache: plan: layer %d: a tiered format's rate depends on the cache's length; a plan's formats have fixed rates", i)
		}
		p.Layers = append(p.Layers, LayerFormats{K: k, V: v})
	}
	for _, name := range f.Sensitivity.Formats {
		g, err := ParseFormat(name)
		if err != nil {
			return nil, fmt.Errorf("kvcache: plan: sensitivity: %w", err)
		}
		p.Sensitivity.Formats = append(p.Sensitivity.Formats, g)
	}
	p.Sensitivity.Loss = f.Sensitivity.Loss
	if err := p.Sensitivity.validate(); err != nil {
		return nil, fmt.Errorf("kvcache: plan: sensitivity: %w", err)
	}
	if p.Sensitivity.Layers() != len(p.Layers) {
		return nil, fmt.Errorf("kvcache: plan: sensitivity of %d layers for %d layers", p.Sensitivity.Layers(), len(p.Layers))
	}
	return p, nil
}
