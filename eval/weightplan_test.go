package eval

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/internal/tinymodel"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tensor"
	"github.com/turbomem/turbomem/wquant"
)

// TestPlanWeights: a plan is measured on the end of the calibration
// tokens (every matrix in every type, losses ≥ 0, but in the source's own
// type, F32 here, which is not measured: loss −1), fits its budget and is
// saved; asked again with the same file it is read back without
// measuring; with another budget it is allocated again from its
// measurements; a plan for another source is refused.
func TestPlanWeights(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := tinymodel.Write(path, tinymodel.Options{}); err != nil {
		t.Fatal(err)
	}
	src, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	m, err := model.New(src, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sha, err := ModelSHA256(path)
	if err != nil {
		t.Fatal(err)
	}
	calib := make([]int32, 300)
	for i := range calib {
		calib[i] = int32(1 + 13*i%500)
	}
	var total int64
	for _, ti := range src.Tensors {
		total += ti.Size
	}
	planPath := filepath.Join(t.TempDir(), "plan.json")
	measured := 0
	o := WeightPlanOptions{Source: sha, File: planPath, Budget: total / 5, Types: []tensor.DType{tensor.Q8_0, tensor.Q4_K, tensor.F32}, CalibCtx: 32, CalibChunks: 2,
		Progress: func(done, total int) { measured = done }}
	q := wquant.NewQuantizer(src, nil, 2)
	p, err := PlanWeights(context.Background(), m, src, q, calib, 0, o)
	if err != nil {
		t.Fatal(err)
	}
	s := p.Sensitivity
	if measured != 15*3*2 || len(s.Tensors) != 15 || p.Bytes() > o.Budget {
		t.Fatalf("%d measurements, %d tensors, %d bytes for a budget of %d", measured, len(s.Tensors), p.Bytes(), o.Budget)
	}
	// In a random model some matrices barely matter (its one KV head's
	// keys and values move the KL by 1e-47): most, not all, lose more in
	// Q4_K than in Q8_0.
	coarser := 0
	for i, row := range s.Loss {
		if !(row[0] >= 0 && row[1] >= 0 && row[2] == -1) {
			t.Errorf("%s: Q8_0 %g, Q4_K %g, F32 (the source's) %g", s.Tensors[i], row[0], row[1], row[2])
		}
		if row[1] > row[0] {
			coarser++
		}
	}
	if coarser < 10 {
		t.Errorf("only %d of 15 matrices lose more in Q4_K than in Q8_0: %v", coarser, s.Loss)
	}
	measured = 0
	again, err := PlanWeights(context.Background(), m, src, q, calib, 0, o)
	if err != nil || measured != 0 || again.Predicted != p.Predicted {
		t.Errorf("saved plan: %v, %d measurements, predicted %g vs %g", err, measured, again.Predicted, p.Predicted)
	}
	o.Budget = total / 4
	more, err := PlanWeights(context.Background(), m, src, q, calib, 0, o)
	if err != nil || measured != 0 || more.Budget != total/4 || !(more.Predicted < p.Predicted) {
		t.Errorf("re-allocated plan: %v, %d measurements, predicted %g vs %g", err, measured, more.Predicted, p.Predicted)
	}
	o.Source = strings.Repeat("ab", 32)
	if _, err := PlanWeights(context.Background(), m, src, q, calib, 0, o); err == nil {
		t.Error("a plan of another source: no error")
	}
}
