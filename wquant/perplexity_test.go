package wquant_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tensor"
	"github.com/turbomem/turbomem/wquant"
)

// TestQuantizedPerplexityMatchesLlamaCpp quantizes the embedded model with
// our Q3_K_M recipe (Q3_K, Q4_K, Q5_K and Q6_K tensors, importance-
// weighted fits without an imatrix) and checks that llama.cpp reads the
// file as the same model as we do:
//
//   - its weights, dequantized by llama-quantize to F32, are ours bit for
//     bit (the hash of tools/wquanteval/f32sha.py);
//   - on that F32 file, llama-perplexity's perplexity is ours within
//     0.05% (measured 0.002%);
//   - on the quantized file itself, within 0.6% (measured −0.33%): each
//     engine rounds activations to 8 bits per block in quantized
//     products, and llama.cpp's products move its perplexity further from
//     the F32 figure (+0.57%) than ours (+0.25%).
//
// testdata/llama-perplexity-q3km.json holds llama.cpp's figures, measured
// on the file this test writes (its tensors' hashes are recorded there
// too, so a change to the quantizer shows as such) with
//
//	turbomem quantize defaultmodel/turbomem-default.gguf q3km.gguf --recipe Q3_K_M
//	llama-quantize --allow-requantize q3km.gguf q3km-f32.gguf F32
//	PYTHONPATH=llama.cpp/gguf-py python3 tools/wquanteval/f32sha.py q3km-f32.gguf
//	head -c 6000 defaultmodel/heldout.txt > t.txt
//	llama-perplexity -m q3km.gguf -f t.txt -c 128 --chunks 8 -t 2
//	llama-perplexity -m q3km-f32.gguf -f t.txt -c 128 --chunks 8 -t 2
func TestQuantizedPerplexityMatchesLlamaCpp(t *testing.T) {
	if testing.Short() {
		t.Skip("quantizes 22M weights and scores 8 windows twice: a minute in pure Go")
	}
	var want struct {
		Tensors string  `json:"tensors_sha256"`
		F32     string  `json:"f32_sha256"`
		PPL     float64 `json:"ppl_llamacpp"`
		PPLF32  float64 `json:"ppl_llamacpp_f32"`
		Ctx     int     `json:"ctx"`
		Chunks  int     `json:"chunks"`
		Chars   int     `json:"text_chars"`
	}
	b, err := os.ReadFile("testdata/llama-perplexity-q3km.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	src, err := defaultmodel.Open()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "q3km.gguf")
	f := quantizeTo(t, src, defaultmodel.SHA256, "Q3_K_M", out)
	man, err := wquant.ReadManifest(f)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(man.Plan, `"recipe": "Q3_K_M"`) {
		t.Error("the plan is not in the manifest")
	}
	h := sha256.New()
	for _, s := range man.TensorHashes {
		h.Write([]byte(hex.EncodeToString(s[:])))
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want.Tensors {
		t.Fatalf("the quantized tensors changed (hash of their hashes %s, the fixture's %s): measure the new file with llama.cpp (commands above) and update the fixture", got, want.Tensors)
	}
	if got := f32Hash(t, f); got != want.F32 {
		t.Errorf("our F32 dequantization hashes to %s, llama-quantize's to %s", got, want.F32)
	}
	f32 := quantizeTo(t, f, "", "F32", filepath.Join(dir, "q3km-f32.gguf"))
	for _, c := range []struct {
		name string
		file *gguf.File
		want float64
		tol  float64
	}{
		{"F32 dequantization", f32, want.PPLF32, 0.0005},
		{"Q3_K_M file", f, want.PPL, 0.006},
	} {
		got := perplexity(t, c.file, want.Chars, want.Ctx, want.Chunks)
		if r := got/c.want - 1; math.Abs(r) > c.tol {
			t.Errorf("%s: perplexity %.4f, llama.cpp %.4f (%+.3f%%, tolerance %.2f%%)", c.name, got, c.want, 100*r, 100*c.tol)
		} else {
			t.Logf("%s: perplexity %.4f, llama.cpp %.4f (%+.3f%%)", c.name, got, c.want, 100*r)
		}
	}
}

// quantizeTo writes src with llama.cpp's recipe to path and opens it.
func quantizeTo(t *testing.T, src *gguf.File, srcSHA, recipe, path string) *gguf.File {
	t.Helper()
	plan, err := wquant.Recipe(src, srcSHA, recipe)
	if err != nil {
		t.Fatal(err)
	}
	if err := wquant.NewQuantizer(src, nil, 0).Write(context.Background(), path, plan, wquant.WriteOptions{Tool: "test", SourceSHA256: srcSHA}); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// f32Hash returns the hash tools/wquanteval/f32sha.py prints for f's
// weights dequantized to F32.
func f32Hash(t *testing.T, f *gguf.File) string {
	t.Helper()
	var lines []string
	for _, ti := range f.Tensors {
		raw, err := f.ReadTensor(ti)
		if err != nil {
			t.Fatal(err)
		}
		v := make([]float32, ti.Elements())
		if err := tensor.Dequantize(ti.Type, v, raw); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 0, 4*len(v))
		for _, x := range v {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
		}
		lines = append(lines, fmt.Sprintf("%s %x\n", ti.Name, sha256.Sum256(b)))
	}
	sort.Strings(lines)
	sum := sha256.Sum256([]byte(strings.Join(lines, "")))
	return hex.EncodeToString(sum[:])
}

// perplexity scores the first chars of the embedded held-out text with f
// as llama-perplexity does.
func perplexity(t *testing.T, f *gguf.File, chars, ctxLen, chunks int) float64 {
	t.Helper()
	m, err := model.New(f, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := model.LoadTokenizer(f)
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode(defaultmodel.HeldOut()[:chars], true)
	res, err := eval.Perplexity(context.Background(), m, ids, tok.BOS(), eval.PPLOptions{Ctx: ctxLen, MaxChunks: chunks})
	if err != nil {
		t.Fatal(err)
	}
	return res.PPL
}
