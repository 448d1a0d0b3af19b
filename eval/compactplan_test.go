package eval

import (
	"context"
	"math"
	"testing"

	"github.com/turbomem/turbomem/compact"
	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/model"
)

// TestCompactShares: the measured plan has a loss per head and budget,
// shares that sum to 1, and a predicted loss no larger than the uniform
// budget's (the allocator can always choose the uniform budget).
func TestCompactShares(t *testing.T) {
	if testing.Short() {
		t.Skip("compacts and runs the model once per layer and budget")
	}
	m := loadDefault(t)
	tok, err := model.LoadTokenizer(m.File())
	if err != nil {
		t.Fatal(err)
	}
	held := tok.Encode(defaultmodel.HeldOut()[:8000], false)
	p, err := CompactShares(context.Background(), m, tok, held, CompactPlanOptions{
		Method: compact.AMHighest, Ratio: 4, Window: 4, Length: 96, Tokens: 8, Levels: []float64{0.5, 1, 2},
		Extra: compact.QueryOptions{SelfStudy: 1, SelfTokens: 4},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Budgets) != 3 || p.Budgets[1] != 96/4-4 || len(p.Loss) != m.Config.Layers*m.Config.KVHeads {
		t.Fatalf("plan %+v", p)
	}
	var sum float64
	for _, row := range p.Shares {
		for _, s := range row {
			sum += s
		}
	}
	if math.Abs(sum-1) > 1e-9 || !(p.Predicted <= p.Uniform+1e-12) || !(p.Predicted >= 0) {
		t.Errorf("shares sum to %g; predicted %g, uniform %g", sum, p.Predicted, p.Uniform)
	}
	t.Logf("budgets %v, shares %v, predicted %.4f, uniform %.4f", p.Budgets, p.Shares, p.Predicted, p.Uniform)
}
