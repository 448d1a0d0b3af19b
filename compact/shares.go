package compact

import (
	"fmt"
	"io"
	"math"

	"github.com/turbomem/turbomem/internal/jsonsum"
)

// BudgetShares is a split of a compaction's kept tokens over the layers
// and KV heads, kept in a file: measured once per model (eval's
// CompactShares: the loss of each head compacted alone at several
// budgets, allocated exactly as --kv auto allocates formats) and given to
// every later compaction as Options.Share. On the small models measured
// the last layer's heads lose the most when compacted and get the most
// tokens, and at 20x attention matching answers more multi-fact
// questions with such a split than with as many tokens per head
// everywhere (BENCHMARKS.md, "KV compaction").
type BudgetShares struct {
	// Model names the model the shares were measured on (its
	// general.name), Method and Ratio the compaction: for messages; a
	// split serves any ratio.
	Model  string
	Method Method
	Ratio  float64
	// Shares holds the share of each [layer][KV head], summing to 1.
	Shares [][]float64
}

// sharesFormat is the budget file's format: JSON with a checksum of
// itself, at most 1 MiB (4096 layers × 16 heads of shares).
var sharesFormat = jsonsum.Format{Name: "compaction budget", Version: 1, MaxBytes: 1 << 20}

type sharesFile struct {
	Version int         `json:"version"`
	Model   string      `json:"model"`
	Method  string      `json:"method"`
	Ratio   float64     `json:"ratio"`
	Shares  [][]float64 `json:"shares"`
	// Checksum is the hex SHA-256 of the file's JSON with this field
	// empty: a file edited or damaged is refused.
	Checksum string `json:"checksum"`
}

// validate checks the shares' shape and values: at least one layer, as
// many heads in each (at most 4096 layers and heads), finite shares ≥ 0
// summing to 1.
func (b BudgetShares) validate() error {
	if len(b.Shares) == 0 || len(b.Shares) > 1<<12 {
		return fmt.Errorf("%d layers of shares: want 1 to 4096", len(b.Shares))
	}
	heads := len(b.Shares[0])
	if heads == 0 || heads > 1<<12 {
		return fmt.Errorf("%d KV heads of shares: want 1 to 4096", heads)
	}
	var sum float64
	for l, row := range b.Shares {
		if len(row) != heads {
			return fmt.Errorf("layer %d has %d shares, layer 0 %d", l, len(row), heads)
		}
		for h, s := range row {
			if !(s >= 0 && s <= 1) {
				return fmt.Errorf("layer %d head %d: share %g is not in [0, 1]", l, h, s)
			}
			sum += s
		}
	}
	if math.Abs(sum-1) > 1e-6 {
		return fmt.Errorf("the shares sum to %g, want 1", sum)
	}
	if _, err := ParseMethod(string(b.Method)); err != nil {
		return err
	}
	if !(b.Ratio >= 1) || math.IsInf(b.Ratio, 0) {
		return fmt.Errorf("ratio %g: want a finite ratio ≥ 1", b.Ratio)
	}
	return nil
}

// WriteTo writes the shares as JSON with a checksum.
func (b BudgetShares) WriteTo(w io.Writer) (int64, error) {
	if err := b.validate(); err != nil {
		return 0, fmt.Errorf("compact: budget shares: %w", err)
	}
	f := sharesFile{Version: sharesFormat.Version, Model: b.Model, Method: string(b.Method), Ratio: b.Ratio, Shares: b.Shares}
	data, err := jsonsum.Marshal(&f, &f.Checksum)
	if err != nil {
		return 0, fmt.Errorf("compact: budget shares: %w", err)
	}
	n, err := w.Write(data)
	return int64(n), err
}

// ReadBudgetShares reads shares that WriteTo wrote, checking the
// checksum and every field.
func ReadBudgetShares(r io.Reader) (BudgetShares, error) {
	var f sharesFile
	if err := sharesFormat.Read(r, &f, &f.Version, &f.Checksum); err != nil {
		return BudgetShares{}, fmt.Errorf("compact: budget shares: %w; measure them again", err)
	}
	b := BudgetShares{Model: f.Model, Method: Method(f.Method), Ratio: f.Ratio, Shares: f.Shares}
	if err := b.validate(); err != nil {
		return BudgetShares{}, fmt.Errorf("compact: budget shares: %w", err)
	}
	return b, nil
}
