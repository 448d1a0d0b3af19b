package compact

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/internal/jsonsum"
)

func sampleShares() BudgetShares {
	return BudgetShares{Model: "m", Method: AMHighest, Ratio: 20, Shares: [][]float64{{0.125, 0.125}, {0.5, 0.25}}}
}

// TestBudgetSharesRoundTrip: what WriteTo writes, ReadBudgetShares reads
// back the same, and a file whose content was changed after it was
// written is refused by its checksum.
func TestBudgetSharesRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	if _, err := sampleShares().WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := ReadBudgetShares(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, sampleShares()) {
		t.Errorf("read back %+v, want %+v", got, sampleShares())
	}
	edited := strings.Replace(buf.String(), "0.5", "0.25", 1)
	edited = strings.Replace(edited, "0.125,", "0.375,", 1)
	if _, err := ReadBudgetShares(strings.NewReader(edited)); !errors.Is(err, jsonsum.ErrMismatch) {
		t.Errorf("an edited file: error %v, want a checksum mismatch", err)
	}
}

// TestBudgetSharesInvalid: shares that no compaction can use are refused
// on writing, and so on reading (the checksum made valid).
func TestBudgetSharesInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*BudgetShares)
		want string
	}{
		{"no layers", func(b *BudgetShares) { b.Shares = nil }, "layers"},
		{"no heads", func(b *BudgetShares) { b.Shares = [][]float64{{}} }, "KV heads"},
		{"ragged", func(b *BudgetShares) { b.Shares = [][]float64{{0.5, 0.25}, {0.25}} }, "layer 1 has 1"},
		{"negative", func(b *BudgetShares) { b.Shares[0][0] = -0.125; b.Shares[1][0] = 0.75 }, "not in [0, 1]"},
		{"sum", func(b *BudgetShares) { b.Shares[0][0] = 0.5 }, "sum to"},
		{"method", func(b *BudgetShares) { b.Method = "nope" }, "unknown method"},
		{"ratio", func(b *BudgetShares) { b.Ratio = 0.5 }, "ratio"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := sampleShares()
			tc.edit(&b)
			if _, err := b.WriteTo(new(bytes.Buffer)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("WriteTo: error %v, want one saying %q", err, tc.want)
			}
			f := sharesFile{Version: sharesFormat.Version, Model: b.Model, Method: string(b.Method), Ratio: b.Ratio, Shares: b.Shares}
			data, err := jsonsum.Marshal(&f, &f.Checksum)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ReadBudgetShares(bytes.NewReader(data)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ReadBudgetShares: error %v, want one saying %q", err, tc.want)
			}
		})
	}
	if _, err := ReadBudgetShares(strings.NewReader(`{"version": 2}`)); err == nil || !strings.Contains(err.Error(), "version 2") {
		t.Errorf("another version: error %v", err)
	}
}

// FuzzReadBudgetShares: any input gives shares or an error, never a
// panic, and accepted shares write back to a file that reads the same.
func FuzzReadBudgetShares(f *testing.F) {
	var buf bytes.Buffer
	if _, err := sampleShares().WriteTo(&buf); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte(`{"version":1,"shares":[[1]]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ReadBudgetShares(bytes.NewReader(data))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if _, err := b.WriteTo(&out); err != nil {
			t.Fatalf("accepted shares do not write: %v", err)
		}
		again, err := ReadBudgetShares(&out)
		if err != nil || !reflect.DeepEqual(again, b) {
			t.Fatalf("written back and read: %+v, %v; want %+v", again, err, b)
		}
	})
}
