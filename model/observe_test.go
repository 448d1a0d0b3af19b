package model_test

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tensor"
)

func testIDs(n int) []int32 {
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(5 + 37*i%3000)
	}
	return ids
}

// TestObserver: every weight matrix's input is reported once per chunk,
// with the right width; the output projection's input times the output
// matrix gives the returned logits bit for bit, and layer 0's Q input is
// the RMS-normalised embedding (recomputed here in float64).
func TestObserver(t *testing.T) {
	m, err := defaultmodel.Load(model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c := m.Config
	ids := testIDs(model.MaxBatch + 9)
	s, err := m.NewSession(nil, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]int{}
	calls := map[string]int{}
	inputs := map[string][]float32{}
	s.SetObserver(func(name string, x []float32, cols int) {
		if len(x)%cols != 0 {
			t.Errorf("%s: %d values, not rows of %d", name, len(x), cols)
		}
		calls[name]++
		rows[name] += len(x) / cols
		if name == "token_embd.weight" || name == "blk.0.attn_q.weight" {
			inputs[name] = append(inputs[name], x...)
		}
	})
	logits, err := s.Forward(ids, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) != 7*c.Layers+1 {
		t.Errorf("%d tensors observed, want %d", len(calls), 7*c.Layers+1)
	}
	for name, n := range calls {
		if n != 2 || rows[name] != len(ids) {
			t.Errorf("%s: %d calls, %d rows; want 2 and %d", name, n, rows[name], len(ids))
		}
	}
	f := m.File()
	emb, _ := f.Tensor("token_embd.weight")
	data, _ := f.ReadTensor(emb)
	got := make([]float32, len(ids)*c.Vocab)
	for i := 0; i < len(ids); i += model.MaxBatch { // the model's chunks: the kernels depend on the batch size
		n := min(model.MaxBatch, len(ids)-i)
		if err := tensor.MatMul(got[i*c.Vocab:(i+n)*c.Vocab], data, emb.Type, c.Vocab, c.Hidden, inputs["token_embd.weight"][i*c.Hidden:(i+n)*c.Hidden], n, tensor.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(got, logits) {
		t.Error("output matrix × observed input differs from the logits")
	}
	// Layer 0's Q input: rmsnorm(embedding) · attn_norm.
	nt, _ := f.Tensor("blk.0.attn_norm.weight")
	nb, _ := f.ReadTensor(nt)
	norm := make([]float32, c.Hidden)
	if err := tensor.Dequantize(nt.Type, norm, nb); err != nil {
		t.Fatal(err)
	}
	rb, _ := emb.Type.RowBytes(int64(c.Hidden))
	row := make([]float32, c.Hidden)
	q := inputs["blk.0.attn_q.weight"]
	for i, id := range ids {
		if err := tensor.Dequantize(emb.Type, row, data[int64(id)*rb:int64(id+1)*rb]); err != nil {
			t.Fatal(err)
		}
		var ss float64
		for _, v := range row {
			ss += float64(v) * float64(v)
		}
		inv := 1 / math.Sqrt(ss/float64(c.Hidden)+float64(c.RMSEps))
		for j, v := range row {
			want := float64(v) * inv * float64(norm[j])
			// float32 products in the model: a few ulps of relative error.
			if d := math.Abs(float64(q[i*c.Hidden+j]) - want); d > 1e-5*math.Abs(want)+1e-7 {
				t.Fatalf("token %d, column %d: Q input %g, want %g", i, j, q[i*c.Hidden+j], want)
			}
		}
	}
}

// copyWith writes the GGUF file f to a temporary file, with tensor name
// replaced by data of type typ.
func copyWith(t *testing.T, f *gguf.File, name string, typ tensor.DType, data []byte) string {
	t.Helper()
	return copyReplacing(t, f, func(ti gguf.TensorInfo, d []byte) (tensor.DType, []byte) {
		if ti.Name == name {
			return typ, data
		}
		return ti.Type, d
	})
}

// copyReplacing writes f to a temporary file with each tensor's type and
// data what replace returns for them, and returns its path.
func copyReplacing(t *testing.T, f *gguf.File, replace func(ti gguf.TensorInfo, data []byte) (tensor.DType, []byte)) string {
	t.Helper()
	b := gguf.NewBuilder()
	for _, kv := range f.KV {
		if err := b.Set(kv.Key, kv.Value); err != nil {
			t.Fatal(err)
		}
	}
	for _, ti := range f.Tensors {
		d, err := f.ReadTensor(ti)
		if err != nil {
			t.Fatal(err)
		}
		ty, d := replace(ti, d)
		if err := b.AddTensor(ti.Name, ty, ti.Shape, d); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "copy.gguf")
	if err := b.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// defaultWithLogits loads the embedded model, closed when t ends, and
// returns it with a function that gives a model's logits at every
// position of the same test prompt (40 tokens, 16 in -short: the pure-Go
// CI pass, where the model is slow).
func defaultWithLogits(t *testing.T) (*model.Model, func(*model.Model) []float32) {
	t.Helper()
	m, err := defaultmodel.Load(model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	ids := testIDs(40)
	if testing.Short() {
		ids = ids[:16]
	}
	return m, func(mm *model.Model) []float32 {
		s, err := mm.NewSession(nil, len(ids))
		if err != nil {
			t.Fatal(err)
		}
		l, err := s.Forward(ids, true)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
}

// TestWithTensor: a model with one matrix replaced gives the logits of a
// file written with that matrix replaced, bit for bit, for a layer matrix
// and for the tied embeddings; the original model is untouched; bad
// replacements are refused.
func TestWithTensor(t *testing.T) {
	m, logitsOf := defaultWithLogits(t)
	base := logitsOf(m)
	f := m.File()
	for _, tt := range []struct {
		name string
		typ  tensor.DType
	}{{"blk.2.ffn_down.weight", tensor.Q4_K}, {"token_embd.weight", tensor.Q3_K}, {"blk.0.attn_v.weight", tensor.F16}} {
		ti, _ := f.Tensor(tt.name)
		raw, _ := f.ReadTensor(ti)
		v := make([]float32, ti.Elements())
		if err := tensor.Dequantize(ti.Type, v, raw); err != nil {
			t.Fatal(err)
		}
		q, err := tensor.Encode(tt.typ, v)
		if err != nil {
			t.Fatal(err)
		}
		mm, err := m.WithTensor(tt.name, tt.typ, q)
		if err != nil {
			t.Fatal(err)
		}
		if d := mm.WeightBytes() - m.WeightBytes(); d != int64(len(q))-ti.Size {
			t.Errorf("%s: WeightBytes changed by %d, want %d", tt.name, d, int64(len(q))-ti.Size)
		}
		ref, err := model.Open(copyWith(t, f, tt.name, tt.typ, q), model.Options{})
		if err != nil {
			t.Fatal(err)
		}
		want := logitsOf(ref)
		ref.Close()
		got := logitsOf(mm)
		if !slices.Equal(got, want) {
			t.Errorf("%s as %s: logits differ from the rewritten file's", tt.name, tt.typ)
		}
		if slices.Equal(got, base) {
			t.Errorf("%s as %s: logits did not change", tt.name, tt.typ)
		}
		if err := mm.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(logitsOf(m), base) {
		t.Error("the original model changed")
	}
	for _, tt := range []struct {
		name string
		typ  tensor.DType
		n    int
	}{{"blk.9.attn_q.weight", tensor.Q8_0, 0}, {"blk.0.attn_norm.weight", tensor.F32, 2048}, {"blk.0.attn_q.weight", tensor.Q4_K, 100}, {"blk.0.attn_q.weight", tensor.IQ2_XXS, 0}} {
		if _, err := m.WithTensor(tt.name, tt.typ, make([]byte, tt.n)); err == nil {
			t.Errorf("WithTensor(%s, %s, %d bytes): no error", tt.name, tt.typ, tt.n)
		}
	}
}

// TestWithFloatWeights: the embedded model (Q8_0) with float weights
// gives the logits of a file written with every quantized tensor
// dequantized and stored as F16, bit for bit, and holds its bytes; the
// original model is untouched.
func TestWithFloatWeights(t *testing.T) {
	m, logitsOf := defaultWithLogits(t)
	base := logitsOf(m)
	converted := 0
	path := copyReplacing(t, m.File(), func(ti gguf.TensorInfo, d []byte) (tensor.DType, []byte) {
		if !tensor.QuantizesActivations(ti.Type) {
			return ti.Type, d
		}
		v := make([]float32, ti.Elements())
		if err := tensor.Dequantize(ti.Type, v, d); err != nil {
			t.Fatal(err)
		}
		q, err := tensor.Encode(tensor.F16, v)
		if err != nil {
			t.Fatal(err)
		}
		converted++
		return tensor.F16, q
	})
	if converted == 0 {
		t.Fatal("the embedded model has no quantized tensor to convert")
	}
	fm, err := m.WithFloatWeights()
	if err != nil {
		t.Fatal(err)
	}
	ref, err := model.Open(path, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	got := logitsOf(fm)
	if want := logitsOf(ref); !slices.Equal(got, want) {
		t.Error("logits differ from the rewritten file's")
	}
	if slices.Equal(got, base) {
		t.Error("logits did not change")
	}
	if fm.WeightBytes() != ref.WeightBytes() {
		t.Errorf("WeightBytes %d, the rewritten file's %d", fm.WeightBytes(), ref.WeightBytes())
	}
	if !slices.Equal(logitsOf(m), base) {
		t.Error("the original model changed")
	}
}

// TestFirstUse: vectors are checked as they load, each matrix once at its
// first use; a failing check fails the load or the Forward that needs the
// tensor, naming it.
func TestFirstUse(t *testing.T) {
	f, err := defaultmodel.Open()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	m, err := model.New(f, model.Options{FirstUse: func(ti gguf.TensorInfo, data []byte) error {
		name := ti.Name
		if want, _ := f.Tensor(name); int64(len(data)) != want.Size || !slices.Equal(ti.Shape, want.Shape) || ti.Type != want.Type {
			t.Errorf("%s: %d bytes, %s %v; want %d, %s %v", name, len(data), ti.Type, ti.Shape, want.Size, want.Type, want.Shape)
		}
		seen[name]++
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	L := m.Config.Layers
	if len(seen) != 2*L+1 {
		t.Errorf("after load: %d tensors checked, want the %d norms", len(seen), 2*L+1)
	}
	s, _ := m.NewSession(nil, 0)
	for range 2 {
		if _, err := s.Forward(testIDs(3), false); err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != len(f.Tensors) {
		t.Errorf("after Forward: %d tensors checked, want %d", len(seen), len(f.Tensors))
	}
	for name, n := range seen {
		if n != 1 {
			t.Errorf("%s checked %d times", name, n)
		}
	}
	bad := errors.New("altered")
	for _, name := range []string{"blk.3.ffn_up.weight", "token_embd.weight", "blk.1.ffn_norm.weight"} {
		m, err := model.New(f, model.Options{FirstUse: func(t gguf.TensorInfo, _ []byte) error {
			if t.Name == name {
				return fmt.Errorf("tensor %q: %w", t.Name, bad)
			}
			return nil
		}})
		if strings.HasSuffix(name, "_norm.weight") {
			if !errors.Is(err, bad) || !strings.Contains(err.Error(), name) {
				t.Errorf("%s: load error %v", name, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		s, _ := m.NewSession(nil, 0)
		for range 2 {
			if _, err := s.Forward(testIDs(3), false); !errors.Is(err, bad) || !strings.Contains(err.Error(), name) {
				t.Errorf("%s: Forward error %v", name, err)
			}
		}
	}
}

// TestOnClose: Close calls Options.OnClose once, after which the model
// is closed; a model from WithTensor, sharing the weights, does not.
func TestOnClose(t *testing.T) {
	f, err := defaultmodel.Open()
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	m, err := model.New(f, model.Options{OnClose: func() { calls++ }})
	if err != nil {
		t.Fatal(err)
	}
	ti, _ := f.Tensor("blk.0.attn_v.weight")
	raw, _ := f.ReadTensor(ti)
	w, err := m.WithTensor(ti.Name, ti.Type, raw)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if calls != 0 {
		t.Errorf("WithTensor's model's Close called OnClose %d times", calls)
	}
	m.Close()
	m.Close()
	if calls != 1 {
		t.Errorf("OnClose called %d times, want 1", calls)
	}
}

// TestSettled: with Options.Settled the steps do not wait for FirstUse at
// a matrix's first product (only the norms are checked, as they load)
// and give the same logits; every Forward, ForwardFrom and Batch.Forward
// calls Settled before returning, and its error fails them with nothing
// returned. A session with a capture, whose callback sees values inside
// the step, checks each matrix at first use as without Settled.
func TestSettled(t *testing.T) {
	f, err := defaultmodel.Open()
	if err != nil {
		t.Fatal(err)
	}
	plain, err := model.New(f, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ps, _ := plain.NewSession(nil, 0)
	want, err := ps.Forward(testIDs(5), false)
	if err != nil {
		t.Fatal(err)
	}
	bad := errors.New("tensor blk.2.ffn_gate.weight: altered")
	for _, tt := range []struct {
		name    string
		result  error
		capture bool
	}{{"passed", nil, false}, {"failed", bad, false}, {"passed, captured", nil, true}} {
		t.Run(tt.name, func(t *testing.T) {
			checked, settled := map[string]bool{}, 0
			m, err := model.New(f, model.Options{
				FirstUse: func(ti gguf.TensorInfo, _ []byte) error { checked[ti.Name] = true; return nil },
				Settled:  func() error { settled++; return tt.result },
			})
			if err != nil {
				t.Fatal(err)
			}
			L := m.Config.Layers
			s, _ := m.NewSession(nil, 0)
			if tt.capture {
				s.SetCapture(func(int, []float32) {})
			}
			got, err := s.Forward(testIDs(5), false)
			if err != tt.result {
				t.Fatalf("Forward: error %v, want %v", err, tt.result)
			}
			if settled != 1 {
				t.Errorf("Forward called Settled %d times, want 1", settled)
			}
			wantChecked := 2*L + 1 // the norms
			if tt.capture {
				wantChecked = len(f.Tensors)
			}
			if len(checked) != wantChecked {
				t.Errorf("FirstUse checked %d tensors, want %d", len(checked), wantChecked)
			}
			if tt.result != nil {
				if got != nil {
					t.Errorf("failed Forward returned %d logits", len(got))
				}
				if out, err := s.ForwardFrom(1, make([]float32, m.Config.Hidden), 1); err != bad || out != nil {
					t.Errorf("ForwardFrom: %d logits, error %v", len(out), err)
				}
				s2, _ := m.NewSession(nil, 0)
				logits, errs := m.NewBatch().Forward([]*model.Session{s2}, [][]int32{testIDs(2)})
				if errs[0] != bad || logits[0] != nil || s2.Len() != 0 {
					t.Errorf("Batch.Forward: %d logits, error %v, session at %d", len(logits[0]), errs[0], s2.Len())
				}
				return
			}
			if !slices.Equal(got, want) {
				t.Errorf("logits differ from the model's without Settled")
			}
		})
	}
}
