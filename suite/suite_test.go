package suite

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// TestLogitsMatchTransformers: each suite model, as our engine runs it
// from the exported GGUF, against transformers' float32 logits of the
// trained weights (LlamaForCausalLM, or Qwen2ForCausalLM for suite-qwen2:
// Q/K/V biases and rotate-half RoPE, which tools/export must not permute),
// 8 positions of a fixed prompt (testdata, written by train.py on the GPU
// machine). Q8_0 (the small models) moves logits by a few percent of the
// largest (the embedded Q8_0 model: 2.3e-2; tolerance 4e-2); Q6_K (the
// large model) has a quantization step 4x coarser than Q8_0's, so 4x the
// tolerance. A wrong RoPE layout, a missing bias or a wrong tokenizer id
// moves logits by tens of percent. Argmax: 7 of 8 rows at least. The
// models are not in git: each one absent is skipped with the way to make
// it.
func TestLogitsMatchTransformers(t *testing.T) {
	tol := map[string]float64{"suite-large": 0.16, "suite-mha64": 0.04, "suite-qwen2": 0.04}
	for _, name := range Names {
		t.Run(name, func(t *testing.T) {
			path, ok := Path(name)
			if !ok {
				t.Skip(Absent(path))
			}
			var ref struct {
				IDs   []int32 `json:"ids"`
				Rows  int     `json:"rows"`
				Vocab int     `json:"vocab"`
			}
			b, err := os.ReadFile("testdata/" + name + ".reflogits8.json")
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &ref); err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile("testdata/" + name + ".reflogits8.f32")
			if err != nil {
				t.Fatal(err)
			}
			if len(raw) != 4*ref.Rows*ref.Vocab || len(ref.IDs) != ref.Rows {
				t.Fatalf("reference: %d bytes for %d rows of %d", len(raw), ref.Rows, ref.Vocab)
			}
			m, err := model.Open(path, model.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			s, err := m.NewSession(kvcache.F32(), 0)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Forward(ref.IDs, true)
			if err != nil {
				t.Fatal(err)
			}
			var maxAbs, maxDiff float64
			agree := 0
			for r := range ref.Rows {
				best, bestRef := 0, 0
				for i := range ref.Vocab {
					w := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*(r*ref.Vocab+i):]))
					g := got[r*ref.Vocab+i]
					maxAbs = math.Max(maxAbs, math.Abs(float64(w)))
					maxDiff = math.Max(maxDiff, math.Abs(float64(g-w)))
					if g > got[r*ref.Vocab+best] {
						best = i
					}
					if w > math.Float32frombits(binary.LittleEndian.Uint32(raw[4*(r*ref.Vocab+bestRef):])) {
						bestRef = i
					}
				}
				if best == bestRef {
					agree++
				}
			}
			rel := maxDiff / maxAbs
			t.Logf("max |Δ| / max |logit| = %.3g, argmax %d/%d", rel, agree, ref.Rows)
			if rel > tol[name] || agree < ref.Rows-1 {
				t.Errorf("relative error %.3g (tolerance %g), argmax agrees on %d of %d rows", rel, tol[name], agree, ref.Rows)
			}
		})
	}
}

// TestResolve: the embedded model, suite names with and without their
// prefix (present and absent, in a $TURBOMEM_SUITE folder made here), and
// plain paths.
func TestResolve(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvDir, dir)
	large := filepath.Join(dir, "suite-large.gguf")
	if err := os.WriteFile(large, []byte("GGUF"), 0o644); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "mine.gguf")
	if err := os.WriteFile(other, []byte("GGUF"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		entry, path string
		ok          bool
		absent      string // what Absent says of path, when !ok
	}{
		{"default", "", true, ""},
		{"large", large, true, ""},
		{"suite-large", large, true, ""},
		{"qwen2", filepath.Join(dir, "suite-qwen2.gguf"), false, "tools/train/README.md"},
		{"suite-mha64", filepath.Join(dir, "suite-mha64.gguf"), false, "tools/train/README.md"},
		{other, other, true, ""},
		{dir, dir, false, "no such file"}, // a folder is not a model file
		{filepath.Join(dir, "nope.gguf"), filepath.Join(dir, "nope.gguf"), false, "no such file"},
	} {
		path, ok := Resolve(tt.entry)
		if path != tt.path || ok != tt.ok {
			t.Errorf("Resolve(%q) = %q, %v; want %q, %v", tt.entry, path, ok, tt.path, tt.ok)
		}
		if !tt.ok {
			if msg := Absent(path); !strings.Contains(msg, path) || !strings.Contains(msg, tt.absent) {
				t.Errorf("Absent(%q) = %q, want it to name the file and say %q", path, msg, tt.absent)
			}
		}
	}
}
