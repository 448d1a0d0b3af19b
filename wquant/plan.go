package wquant

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
	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/internal/jsonsum"
	"github.com/turbomem/turbomem/tensor"
)

// Sensitivity is what storing each weight matrix in each candidate type
// costs on its own: Loss[i][j] is the mean KL divergence (nats) of the
// next-token distributions from the source model's when only Tensors[i]
// is stored in Types[j] (eval.WeightSensitivity measures it). A negative
// loss marks a type the tensor cannot take.
type Sensitivity struct {
	Tensors []string
	Types   []tensor.DType
	Loss    [][]float64
}

// validate checks the shape and values of s.
func (s *Sensitivity) validate() error {
	if len(s.Tensors) == 0 || len(s.Tensors) > maxPlanTensors || len(s.Types) == 0 || len(s.Types) > alloc.MaxOptions-1 {
		return fmt.Errorf("%d tensors and %d types: want 1 to %d and 1 to %d", len(s.Tensors), len(s.Types), maxPlanTensors, alloc.MaxOptions-1)
	}
	if len(s.Loss) != len(s.Tensors) {
		return fmt.Errorf("%d rows of losses for %d tensors", len(s.Loss), len(s.Tensors))
	}
	for i, row := range s.Loss {
		if len(row) != len(s.Types) {
			return fmt.Errorf("tensor %s has %d losses for %d types", s.Tensors[i], len(row), len(s.Types))
		}
		for j, l := range row {
			if math.IsNaN(l) || math.IsInf(l, 0) {
				return fmt.Errorf("tensor %s in %s: loss %g is not finite", s.Tensors[i], s.Types[j], l)
			}
		}
	}
	return nil
}

// maxPlanTensors bounds the tensors of a plan read from a file.
const maxPlanTensors = 1 << 16

// Choice is the type a plan gives one tensor.
type Choice struct {
	Name     string
	Type     tensor.DType
	Elements int64
	Bytes    int64
	// Loss is the measured KL of this choice alone less the tensor's
	// floor, or its weights' part where that is not positive
	// (Sensitivity.Losses; 0 for the source's own type and for recipes).
	Loss float64
}

// Plan gives every tensor of one source model a type: measured (Allocate,
// under a byte budget) or by a fixed recipe (Recipe).
type Plan struct {
	// Source is the hex SHA-256 of the source model file; a plan is
	// refused for any other file.
	Source string
	// Recipe is the llama.cpp recipe reproduced, or "" for a measured
	// plan.
	Recipe string
	// Budget is the bytes of tensor data asked for (0 for a recipe).
	Budget int64
	// Tensors lists every tensor of the source, in file order.
	Tensors []Choice
	// Predicted is the sum of the choices' losses: the predicted mean KL.
	Predicted float64
	// Sensitivity is what a measured plan was chosen from; it lets the
	// plan be re-allocated for another budget without measuring again.
	Sensitivity *Sensitivity
}

// Types returns each tensor's type by name.
func (p *Plan) Types() map[string]tensor.DType {
	m := make(map[string]tensor.DType, len(p.Tensors))
	for _, c := range p.Tensors {
		m[c.Name] = c.Type
	}
	return m
}

// Bytes returns the bytes of tensor data the plan's file holds.
func (p *Plan) Bytes() int64 {
	var n int64
	for _, c := range p.Tensors {
		n += c.Bytes
	}
	return n
}

// BPW returns the bits per weight over all tensors (llama.cpp's figure:
// tensor bytes × 8 / elements).
func (p *Plan) BPW() float64 {
	var n int64
	for _, c := range p.Tensors {
		n += c.Elements
	}
	if n == 0 {
		return 0
	}
	return 8 * float64(p.Bytes()) / float64(n)
}

// Describe returns the plan as a table: each tensor's type, size and
// measured loss, then the totals.
func (p *Plan) Describe() string {
	var b strings.Builder
	what := p.Recipe
	if what == "" {
		what = fmt.Sprintf("measured, budget %d bytes", p.Budget)
	}
	fmt.Fprintf(&b, "weight plan (%s): %d bytes of tensors, %.3f bits per weight, predicted mean KL %.5f\n", what, p.Bytes(), p.BPW(), p.Predicted)
	count := map[tensor.DType]int{}
	for _, c := range p.Tensors {
		count[c.Type]++
		fmt.Fprintf(&b, "  %-28s %-5s %10d bytes  KL %.5f\n", c.Name, c.Type, c.Bytes, c.Loss)
	}
	var types []tensor.DType
	for t := range count {
		types = append(types, t)
	}
	slices.Sort(types)
	b.WriteString("  tensors per type:")
	for _, t := range types {
		fmt.Fprintf(&b, " %s %d", t, count[t])
	}
	b.WriteString("\n")
	return b.String()
}

// choice returns the Choice of tensor t in type typ.
func choice(t gguf.TensorInfo, typ tensor.DType, loss float64) (Choice, error) {
	rb, err := typ.RowBytes(t.Shape[0])
	if err != nil {
		return Choice{}, fmt.Errorf("wquant: tensor %s in %s: %w", t.Name, typ, err)
	}
	n := t.Elements()
	return Choice{Name: t.Name, Type: typ, Elements: n, Bytes: rb * (n / t.Shape[0]), Loss: loss}, nil
}

// Floors returns, for each tensor of s, the part of its measured losses
// that does not come from its weights' rounding, and that Allocate takes
// off every loss of the tensor. A measurement sees every difference
// between the probed model and the source's, and storing one matrix in
// another type changes more than its weights: its product takes another
// kernel, which rounds the activations differently (per 256 values for
// the K-quants, per 32 for Q8_0). That part is about the same in every
// type and falls with the layer's depth (it travels through fewer layers
// after), and it does not add up over matrices as the weights' errors
// do: the matrices of a whole file change together. Measured, it is what
// keeps the losses of the finest types level (Q6_K ≈ Q5_K ≈ Q4_K for some
// matrices), and summed over a file's matrices it exceeds the KL of the
// whole file at 6 bits per weight. Left in, it makes every change of
// type look dearer by the same amount and the allocator keeps too many
// matrices in the source's type.
//
// The weights' part of a loss is, to second order, proportional to the
// importance-weighted squared error, which falls about 4× per bit per
// weight (uniform rounding, MSE ∝ 4^−bits). With L₁ and L₂ the losses of
// the tensor's two finest measured types, of b₁ > b₂ bits per weight, and
// r = 4^(b₁−b₂): L₁ = f + a and L₂ = f + r·a give the weights' part of the
// finest a = (L₂ − L₁)/(r − 1), clamped at 0, and the floor f = L₁ − a,
// clamped at 0. A tensor with fewer than two measured types has floor 0.
func (s *Sensitivity) Floors() []float64 {
	floors := make([]float64, len(s.Tensors))
	for i, row := range s.Loss {
		first, second := -1, -1 // the finest and next-finest measured types
		for j, l := range row {
			if l < 0 {
				continue
			}
			switch b := s.Types[j].BitsPerWeight(); {
			case first < 0 || b > s.Types[first].BitsPerWeight():
				first, second = j, first
			case second < 0 || b > s.Types[second].BitsPerWeight():
				second = j
			}
		}
		if second < 0 {
			continue
		}
		r := math.Pow(4, s.Types[first].BitsPerWeight()-s.Types[second].BitsPerWeight())
		a := max(0, (row[second]-row[first])/(r-1))
		floors[i] = max(0, row[first]-a)
	}
	return floors
}

// Losses returns the losses Allocate weighs, for each tensor of s and
// each type (−1 where not measured): the measured loss less the tensor's
// floor (Floors) where that is positive; where it is not (the type's
// measured loss came out at or under the floor: the matrix's losses lie
// level within their noise), the weights' part that the 4^−bits law,
// fitted to all of the tensor's measured losses by least squares
// (L = f + a·4^−bits, a ≥ 0), gives the type. Taken as 0, such a coarser
// type would cost nothing and the allocator would take it even where the
// budget holds a finer one, leaving bytes unspent.
func (s *Sensitivity) Losses() [][]float64 {
	floors := s.Floors()
	out := make([][]float64, len(s.Loss))
	for i, row := range s.Loss {
		// Least squares of L on x = 4^−bits over the measured types.
		var n, sx, sl, sxx, sxl float64
		for j, l := range row {
			if l >= 0 {
				x := math.Pow(4, -s.Types[j].BitsPerWeight())
				n, sx, sl, sxx, sxl = n+1, sx+x, sl+l, sxx+x*x, sxl+x*l
			}
		}
		a := 0.0
		if d := n*sxx - sx*sx; n >= 2 && d > 0 {
			a = max(0, (n*sxl-sx*sl)/d)
		}
		out[i] = make([]float64, len(row))
		for j, l := range row {
			out[i][j] = -1
			if l >= 0 {
				out[i][j] = l - floors[i]
				if out[i][j] <= 0 {
					out[i][j] = a * math.Pow(4, -s.Types[j].BitsPerWeight())
				}
			}
		}
	}
	return out
}

// allocSteps is the resolution of the budget in Allocate: costs are
// rounded up to 1/allocSteps of it (at most one step lost per tensor).
const allocSteps = 1 << 20

// Allocate chooses a type for every tensor measured in s so that the
// predicted loss (the sum of the chosen losses, each less its tensor's
// floor, or its weights' part where that is not positive: Losses) is
// least while the file's tensor data stay within
// budget bytes. Each tensor may also keep its
// source type (loss 0); tensors not measured keep theirs and their bytes
// count against the budget. The choice is exact up to the rounding of
// costs to 1/2²⁰ of the budget (alloc.Choose), and a choice whose bytes
// fit the budget exactly is not lost to that rounding.
func Allocate(src *gguf.File, sourceSHA256 string, s Sensitivity, budget int64) (*Plan, error) {
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("wquant: sensitivity: %w", err)
	}
	measured := make(map[string]int, len(s.Tensors))
	for i, n := range s.Tensors {
		if _, dup := measured[n]; dup {
			return nil, fmt.Errorf("wquant: sensitivity: tensor %s twice", n)
		}
		measured[n] = i
	}
	plan := &Plan{Source: sourceSHA256, Budget: budget, Sensitivity: &s}
	losses := s.Losses()
	var fixed int64
	var items [][]Choice
	for _, t := range src.Tensors {
		i, ok := measured[t.Name]
		if !ok {
			fixed += t.Size
			continue
		}
		if !Quantizable(t) {
			return nil, fmt.Errorf("wquant: sensitivity: tensor %s is not a weight matrix", t.Name)
		}
		keep, err := choice(t, t.Type, 0)
		if err != nil {
			return nil, err
		}
		opts := []Choice{keep}
		for j, typ := range s.Types {
			if l := losses[i][j]; l >= 0 && typ != t.Type && Fits(t.Shape, typ) {
				c, err := choice(t, typ, l)
				if err != nil {
					return nil, err
				}
				opts = append(opts, c)
			}
		}
		items = append(items, opts)
	}
	if len(items) != len(s.Tensors) {
		return nil, fmt.Errorf("wquant: sensitivity names %d tensors, the file has %d of them", len(s.Tensors), len(items))
	}
	avail := budget - fixed
	if avail <= 0 {
		return nil, fmt.Errorf("wquant: a budget of %d bytes does not cover the %d bytes of tensors kept as they are", budget, fixed)
	}
	unit := max(1, float64(avail)/allocSteps)
	costs := make([][]alloc.Option, len(items))
	for i, opts := range items {
		for _, c := range opts {
			u, err := alloc.Units(float64(c.Bytes), unit)
			if err != nil {
				return nil, err
			}
			costs[i] = append(costs[i], alloc.Option{Cost: u, Loss: c.Loss})
		}
	}
	// Rounded up, the costs of a choice can exceed the budget by up to a
	// unit per tensor when its bytes do not: a budget of exactly the
	// source's size would not hold the source. So the choice is first
	// made with that slack and kept if its bytes fit, else made again
	// within the rounded budget.
	capacity := int(float64(avail) / unit)
	picks, loss, err := alloc.Choose(costs, capacity+len(items))
	if err == nil {
		var bytes int64
		for i, k := range picks {
			bytes += items[i][k].Bytes
		}
		if bytes > avail {
			picks, loss, err = alloc.Choose(costs, capacity)
		}
	}
	if errors.Is(err, alloc.ErrOverBudget) {
		var least int64
		for _, opts := range items {
			m := opts[0].Bytes
			for _, c := range opts {
				m = min(m, c.Bytes)
			}
			least += m
		}
		return nil, fmt.Errorf("wquant: a budget of %d bytes is below the smallest choice's %d bytes", budget, least+fixed)
	}
	if err != nil {
		return nil, err
	}
	plan.Predicted = loss
	k := 0
	for _, t := range src.Tensors {
		if _, ok := measured[t.Name]; ok {
			plan.Tensors = append(plan.Tensors, items[k][picks[k]])
			k++
			continue
		}
		c, err := choice(t, t.Type, 0)
		if err != nil {
			return nil, err
		}
		plan.Tensors = append(plan.Tensors, c)
	}
	return plan, nil
}

// BudgetForBPW returns the bytes of tensor data that bpw bits per weight
// over all of src's tensors allow.
func BudgetForBPW(src *gguf.File, bpw float64) (int64, error) {
	if !(bpw > 0 && bpw <= 32) {
		return 0, fmt.Errorf("wquant: %g bits per weight: want (0, 32]", bpw)
	}
	var n int64
	for _, t := range src.Tensors {
		n += t.Elements()
	}
	return int64(math.Floor(bpw * float64(n) / 8)), nil
}

// Check reports whether the plan serves src, whose file has the hex
// SHA-256 sourceSHA256: same model, same tensors, and types that fit
// them.
func (p *Plan) Check(src *gguf.File, sourceSHA256 string) error {
	if !strings.EqualFold(p.Source, sourceSHA256) {
		return fmt.Errorf("wquant: the plan is for the model with SHA-256 %.16s…, this one's is %.16s…", p.Source, sourceSHA256)
	}
	if len(p.Tensors) != len(src.Tensors) {
		return fmt.Errorf("wquant: the plan has %d tensors, the model %d", len(p.Tensors), len(src.Tensors))
	}
	for _, c := range p.Tensors {
		t, ok := src.Tensor(c.Name)
		if !ok {
			return fmt.Errorf("wquant: the plan's tensor %s is not in the model", c.Name)
		}
		if !Fits(t.Shape, c.Type) || c.Type != t.Type && !Quantizable(t) {
			return fmt.Errorf("wquant: the plan gives tensor %s (shape %v) type %s, which does not fit", c.Name, t.Shape, c.Type)
		}
	}
	return nil
}

// planVersion is the version of the plan file format.
const planVersion = 1

// planFormat is the plan file's format: JSON with a checksum of itself.
var planFormat = jsonsum.Format{Name: "plan", Version: planVersion, MaxBytes: maxPlanBytes}

// planFile is a plan as JSON.
type planFile struct {
	Version     int           `json:"version"`
	Source      string        `json:"source_sha256"`
	Recipe      string        `json:"recipe,omitempty"`
	Budget      int64         `json:"budget_bytes"`
	Bytes       int64         `json:"bytes"`
	BPW         float64       `json:"bpw"`
	Predicted   float64       `json:"predicted_kl"`
	Tensors     []choiceJSON  `json:"tensors"`
	Sensitivity *sensitivityJ `json:"sensitivity,omitempty"`
	// Checksum is the hex SHA-256 of the file's JSON with this field
	// empty: a plan that was edited or damaged is refused.
	Checksum string `json:"checksum"`
}

type choiceJSON struct {
	Name     string  `json:"name"`
	Type     string  `json:"type"`
	Elements int64   `json:"elements"`
	Bytes    int64   `json:"bytes"`
	Loss     float64 `json:"kl"`
}

type sensitivityJ struct {
	Tensors []string    `json:"tensors"`
	Types   []string    `json:"types"`
	Loss    [][]float64 `json:"kl"`
}

// JSON returns the plan file's bytes (as WriteTo writes them).
func (p *Plan) JSON() ([]byte, error) {
	f := planFile{Version: planVersion, Source: strings.ToLower(p.Source), Recipe: p.Recipe, Budget: p.Budget,
		Bytes: p.Bytes(), BPW: p.BPW(), Predicted: p.Predicted}
	for _, c := range p.Tensors {
		f.Tensors = append(f.Tensors, choiceJSON{Name: c.Name, Type: c.Type.String(), Elements: c.Elements, Bytes: c.Bytes, Loss: c.Loss})
	}
	if s := p.Sensitivity; s != nil {
		f.Sensitivity = &sensitivityJ{Tensors: s.Tensors, Loss: s.Loss}
		for _, t := range s.Types {
			f.Sensitivity.Types = append(f.Sensitivity.Types, t.String())
		}
	}
	b, err := jsonsum.Marshal(&f, &f.Checksum)
	if err != nil {
		return nil, fmt.Errorf("wquant: plan: %w", err)
	}
	return b, nil
}

// WriteTo writes the plan as JSON with a checksum.
func (p *Plan) WriteTo(w io.Writer) (int64, error) {
	b, err := p.JSON()
	if err != nil {
		return 0, err
	}
	n, err := w.Write(b)
	return int64(n), err
}

// maxPlanBytes bounds the size of a plan file.
const maxPlanBytes = 64 << 20

// ReadPlan reads a plan that WriteTo wrote, checking its checksum and
// every field.
func ReadPlan(r io.Reader) (*Plan, error) {
	var f planFile
	if err := planFormat.Read(r, &f, &f.Version, &f.Checksum); err != nil {
		return nil, fmt.Errorf("wquant: plan: %w; make the plan again", err)
	}
	if h, err := hex.DecodeString(f.Source); err != nil || len(h) != sha256.Size {
		return nil, fmt.Errorf("wquant: plan: source_sha256 %q is not a SHA-256", f.Source)
	}
	if len(f.Tensors) == 0 || len(f.Tensors) > maxPlanTensors || f.Budget < 0 {
		return nil, fmt.Errorf("wquant: plan: %d tensors, budget %d: out of range", len(f.Tensors), f.Budget)
	}
	p := &Plan{Source: f.Source, Recipe: f.Recipe, Budget: f.Budget, Predicted: f.Predicted}
	for i, c := range f.Tensors {
		typ, err := tensor.ParseDType(c.Type)
		if err != nil {
			return nil, fmt.Errorf("wquant: plan: tensor %d: %w", i, err)
		}
		if c.Name == "" || c.Elements < 0 || c.Bytes < 0 || math.IsNaN(c.Loss) || math.IsInf(c.Loss, 0) {
			return nil, fmt.Errorf("wquant: plan: tensor %d (%q): fields out of range", i, c.Name)
		}
		p.Tensors = append(p.Tensors, Choice{Name: c.Name, Type: typ, Elements: c.Elements, Bytes: c.Bytes, Loss: c.Loss})
	}
	if sj := f.Sensitivity; sj != nil {
		s := &Sensitivity{Tensors: sj.Tensors, Loss: sj.Loss}
		for _, name := range sj.Types {
			t, err := tensor.ParseDType(name)
			if err != nil {
				return nil, fmt.Errorf("wquant: plan: sensitivity: %w", err)
			}
			s.Types = append(s.Types, t)
		}
		if err := s.validate(); err != nil {
			return nil, fmt.Errorf("wquant: plan: sensitivity: %w", err)
		}
		p.Sensitivity = s
	}
	return p, nil
}
