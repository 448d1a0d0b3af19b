package defaultmodel

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"testing"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// testdata/reflogits.f32 holds transformers' LlamaForCausalLM logits
// (float32, row after row) for the 32 ids of testdata/reflogits.json,
// computed on the GPU by tools/train/train.py --final from exactly the bf16
// weights that tools/export converted.

type refLogits struct {
	IDs   []int32 `json:"ids"`
	Rows  int     `json:"rows"`
	Vocab int     `json:"vocab"`
}

func loadRef(t *testing.T) (refLogits, []float32) {
	t.Helper()
	var r refLogits
	b, err := os.ReadFile("testdata/reflogits.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("testdata/reflogits.f32")
	if err != nil {
		t.Fatal(err)
	}
	v := make([]float32, len(raw)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	if len(v) != r.Rows*r.Vocab || len(r.IDs) != r.Rows {
		t.Fatalf("reflogits: %d values for %d rows of %d", len(v), r.Rows, r.Vocab)
	}
	return r, v
}

func argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}

// compare returns the largest |Δlogit| relative to the largest |logit| and
// the fraction of rows whose argmax agrees.
func compare(t *testing.T, m *model.Model, r refLogits, want []float32) (maxRel float64, agree float64) {
	t.Helper()
	s, err := m.NewSession(kvcache.F32(), 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Forward(r.IDs, true)
	if err != nil {
		t.Fatal(err)
	}
	var maxAbs, maxDiff float64
	same := 0
	for row := range r.Rows {
		g, w := got[row*r.Vocab:(row+1)*r.Vocab], want[row*r.Vocab:(row+1)*r.Vocab]
		for i := range w {
			maxAbs = max(maxAbs, math.Abs(float64(w[i])))
			maxDiff = max(maxDiff, math.Abs(float64(g[i]-w[i])))
		}
		if argmax(g) == argmax(w) {
			same++
		}
	}
	return maxDiff / maxAbs, float64(same) / float64(r.Rows)
}

func TestSHA256(t *testing.T) {
	if err := Verify(); err != nil {
		t.Fatal(err)
	}
}

func TestMetadata(t *testing.T) {
	f, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"general.architecture": "llama", "general.name": Name,
		"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "llama-bpe"} {
		if got, err := f.String(k); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", k, got, err, want)
		}
	}
	if n, err := f.Uint("llama.context_length"); err != nil || n != 4096 {
		t.Errorf("llama.context_length = %d, %v; want 4096", n, err)
	}
}

// TestLogitsMatchPyTorch: the embedded Q8_0 model against transformers'
// float32 logits. Q8_0 rounds weights (and our kernels the activations) to
// 8 bits, so logits move by a few percent of the largest logit (measured
// 2.3e-2; tolerance 4e-2); the argmax must agree on at least 90% of the 32
// rows (measured 32/32).
func TestLogitsMatchPyTorch(t *testing.T) {
	r, want := loadRef(t)
	m, err := Load(model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rel, agree := compare(t, m, r, want)
	t.Logf("Q8_0: max |Δ| / max |logit| = %.3g, argmax agreement %.3f", rel, agree)
	if rel > 4e-2 || agree < 0.9 {
		t.Errorf("Q8_0 logits: relative error %.3g (tolerance 4e-2), argmax agreement %.3f (want ≥ 0.9)", rel, agree)
	}
}

// TestLogitsMatchPyTorchF16 checks the F16 export, which holds the bf16
// training weights exactly: the only differences are float32 summation
// order, so 1e-4 of the largest logit (measured 9.8e-7) and every argmax. The F16 file (44 MB) is not committed: make it
// with  go run ./tools/export -type f16 -out ../.train/default-f16.gguf
func TestLogitsMatchPyTorchF16(t *testing.T) {
	path := os.Getenv("TURBOMEM_DEFAULT_F16")
	if path == "" {
		path = "../.train/default-f16.gguf"
	}
	if _, err := os.Stat(path); err != nil {
		t.Skipf("no F16 export at %s (see the comment)", path)
	}
	r, want := loadRef(t)
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := model.New(f, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rel, agree := compare(t, m, r, want)
	t.Logf("F16: max |Δ| / max |logit| = %.3g, argmax agreement %.3f", rel, agree)
	if rel > 1e-4 || agree < 1 {
		t.Errorf("F16 logits: relative error %.3g (tolerance 1e-4), argmax agreement %.3f (want 1)", rel, agree)
	}
}
