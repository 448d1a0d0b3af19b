package wquant

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tensor"
)

// TestQuantizerEncode: a tensor in a weighted type is the rows quantized
// by tensor.QuantizeWeighted with the imatrix's importance (or none when
// the imatrix lacks it or has another width), whatever the threads; the
// source type comes back as stored; other types convert or quantize as
// tensor does; rows that hold no whole block and unknown tensors are
// refused.
func TestQuantizerEncode(t *testing.T) {
	src := openGGUF(t, tinyModel(t, false))
	ti, _ := src.Tensor("blk.0.ffn_down.weight")
	raw, _ := src.ReadTensor(ti)
	v := make([]float32, ti.Elements())
	tensor.Dequantize(ti.Type, v, raw)
	cols := int(ti.Shape[0])
	imp := make([]float32, cols)
	for j := range imp {
		imp[j] = float32(1 + j%7)
	}
	im := &IMatrix{Entries: map[string]*IEntry{"blk.0.ffn_down.weight": {Sums: make([]float64, cols), Count: 2},
		"blk.0.ffn_up.weight": {Sums: []float64{1, 2}, Count: 1}}}
	for j, x := range imp {
		im.Entries["blk.0.ffn_down.weight"].Sums[j] = 2 * float64(x)
	}
	for _, threads := range []int{1, 3} {
		q := NewQuantizer(src, im, threads)
		types := []tensor.DType{tensor.Q4_K, tensor.Q6_K, tensor.Q8_0, tensor.TQ2_0}
		if threads == 1 {
			types = types[:1]
		}
		for _, typ := range types {
			got, err := q.Encode(ti.Name, typ)
			if err != nil {
				t.Fatal(err)
			}
			want := make([]byte, len(got))
			if err := tensor.QuantizeWeighted(typ, want, v, imp); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%d threads, %s: not the weighted quantization with the imatrix", threads, typ)
			}
		}
		if got, _ := q.Encode(ti.Name, tensor.F32); !bytes.Equal(got, raw) {
			t.Error("the source type does not come back as stored")
		}
		got, err := q.Encode(ti.Name, tensor.F16)
		want, _ := tensor.Encode(tensor.F16, v)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("F16: %v", err)
		}
		got, err = q.Encode(ti.Name, tensor.Q5_1)
		want, _ = tensor.Encode(tensor.Q5_1, v)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("Q5_1 (reference quantizer): %v", err)
		}
		// ffn_up's entry has 2 columns, not 256: no importance.
		up, _ := src.Tensor("blk.0.ffn_up.weight")
		upRaw, _ := src.ReadTensor(up)
		uv := make([]float32, up.Elements())
		tensor.Dequantize(up.Type, uv, upRaw)
		got, _ = q.Encode(up.Name, tensor.Q4_K)
		want = make([]byte, len(got))
		tensor.QuantizeWeighted(tensor.Q4_K, want, uv, nil)
		if !bytes.Equal(got, want) {
			t.Error("an imatrix entry of the wrong width was used")
		}
	}
	q := NewQuantizer(recipeFile(t, 1, false, 96), nil, 1)
	for _, tt := range []struct {
		name string
		typ  tensor.DType
	}{{"blk.0.attn_q.weight", tensor.Q4_K}, {"nope.weight", tensor.Q8_0}, {"blk.0.attn_q.weight", tensor.IQ2_XXS}} {
		if _, err := q.Encode(tt.name, tt.typ); err == nil {
			t.Errorf("%s in %s: no error", tt.name, tt.typ)
		}
	}
}

// TestEncodeRefusesNonFinite: a source tensor holding NaN or ∞ is an
// error naming it.
func TestEncodeRefusesNonFinite(t *testing.T) {
	path := tinyModel(t, false)
	b := readBytes(t, path)
	f := openGGUF(t, path)
	ti, _ := f.Tensor("blk.1.attn_k.weight")
	copy(b[ti.Offset+40:], []byte{0, 0, 0xc0, 0x7f}) // a float32 NaN
	src := openGGUF(t, writeBytes(t, b))
	if _, err := NewQuantizer(src, nil, 1).Encode(ti.Name, tensor.Q4_K); err == nil || !strings.Contains(err.Error(), ti.Name) {
		t.Errorf("NaN in the source: %v", err)
	}
}

// TestWriteLoads: the written file has the plan's types, the source's
// metadata, quantization version 2 and the file type asked for, loads as
// a model whose logits stay close to the source's, and the plan in its
// manifest reads back.
func TestWriteLoads(t *testing.T) {
	path := sealed(t)
	f := openGGUF(t, path)
	m, err := ReadManifest(f)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := ReadPlan(strings.NewReader(m.Plan))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range plan.Tensors {
		ti, ok := f.Tensor(c.Name)
		if !ok || ti.Type != c.Type || ti.Size != c.Bytes {
			t.Errorf("%s: %s of %d bytes in the file, %s of %d in the plan", c.Name, ti.Type, ti.Size, c.Type, c.Bytes)
		}
	}
	if v, _ := f.Uint("general.quantization_version"); v != 2 {
		t.Errorf("quantization version %d", v)
	}
	if n, _ := f.String("general.name"); n != "tiny random" {
		t.Errorf("general.name %q", n)
	}
	src := tinyModel(t, false)
	logits := func(p string) []float32 {
		mod, err := model.Open(p, model.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer mod.Close()
		s, _ := mod.NewSession(nil, 0)
		l, err := s.Forward([]int32{5, 6, 7, 8}, false)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	a, b := logits(src), logits(path)
	var num, den float64
	for i := range a {
		num += float64(a[i]-b[i]) * float64(a[i]-b[i])
		den += float64(a[i]) * float64(a[i])
	}
	// Q4_K/Q6_K weights move a random model's logits by about a tenth
	// (measured 0.12; Gaussian weights quantize worse than trained ones).
	if r := math.Sqrt(num / den); !(r > 0 && r < 0.25) {
		t.Errorf("relative logit change %.4f", r)
	}
	var kept int
	for _, kv := range openGGUF(t, src).KV {
		if v, ok := f.Lookup(kv.Key); ok && kv.Key != "general.file_type" {
			a, _ := kv.Value.AppendBinary(nil)
			b, _ := v.AppendBinary(nil)
			if bytes.Equal(a, b) {
				kept++
			}
		}
	}
	if want := len(openGGUF(t, src).KV) - 1; kept != want {
		t.Errorf("%d of the source's %d other keys kept", kept, want)
	}
}
