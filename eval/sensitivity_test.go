package eval

import (
	"context"
	"slices"
	"testing"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tensor"
)

// TestKVSensitivity measures the embedded model's parts on a short text:
// f16 costs nothing, qjl cannot hold values, every compressed part costs
// something, and each loss is what a Perplexity run with only that part
// compressed gives.
func TestKVSensitivity(t *testing.T) {
	m := loadDefault(t)
	tok, err := model.LoadTokenizer(m.File())
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode(defaultmodel.HeldOut()[:4000], true)
	var fs []kvcache.Format
	for _, n := range []string{"f16", "turbo2.5", "qjl"} {
		f, err := kvcache.ParseFormat(n)
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	// -short (the pure-Go CI pass, where the model is slow): shorter
	// windows, still with most scored tokens outside the fp16 window.
	ctxLen := 96
	if testing.Short() {
		ctxLen = 48
	}
	o := SensitivityOptions{Ctx: ctxLen, MaxChunks: 1, Window: 4}
	s, err := KVSensitivity(context.Background(), m, ids, tok.BOS(), fs, o)
	if err != nil {
		t.Fatal(err)
	}
	if s.Layers() != m.Config.Layers {
		t.Fatalf("%d layers measured, model has %d", s.Layers(), m.Config.Layers)
	}
	for p, row := range s.Loss {
		if row[0] != 0 {
			t.Errorf("part %d: f16 loss %g", p, row[0])
		}
		if row[1] <= 0 || row[1] > 1 {
			t.Errorf("part %d: turbo2.5 loss %g, want in (0, 1]", p, row[1])
		}
		if key := p%2 == 0; key && row[2] <= 0 || !key && row[2] != -1 {
			t.Errorf("part %d: qjl loss %g", p, row[2])
		}
	}
	// Layer 2's values at turbo2.5, measured on their own.
	ref, err := Perplexity(context.Background(), m, ids, tok.BOS(), PPLOptions{Ctx: ctxLen, MaxChunks: 1})
	if err != nil {
		t.Fatal(err)
	}
	one := kvcache.Spec{K: fs[0], V: fs[1], Window: 4}
	res, err := Perplexity(context.Background(), m, ids, tok.BOS(), PPLOptions{Ctx: ctxLen, MaxChunks: 1, Ref: ref.Dists,
		KV: kvcache.NewCacheFunc(func(l int, sh kvcache.Shape) (kvcache.Cache, error) {
			if l == 2 {
				return one.NewCache(l, sh)
			}
			return kvcache.NewF16(sh)
		})})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Loss[5][1]; got != res.Agreement.KLMean {
		t.Errorf("layer 2 values at turbo2.5: %g, alone %g", got, res.Agreement.KLMean)
	}
	p, err := kvcache.Allocate(s, 3, m.Config.HeadDim)
	if err != nil {
		t.Fatal(err)
	}
	if p.Bits() > 3 || p.Predicted <= 0 {
		t.Errorf("plan %s", p.Describe())
	}
}

// TestWeightSensitivity measures two of the embedded model's matrices
// (one in a layer, the tied embeddings) in two types: a coarser type
// costs more, and each loss is what Perplexity of the model with that one
// tensor replaced gives against the original.
func TestWeightSensitivity(t *testing.T) {
	m := loadDefault(t)
	tok, err := model.LoadTokenizer(m.File())
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode(defaultmodel.HeldOut()[:3000], true)
	ctxLen := 64
	if testing.Short() {
		ctxLen = 32
	}
	// Each tensor and type encoded once, for the measurement and for the
	// check below; each call gets its own copy, so that a measurement
	// writing into the bytes cannot pass its change on to the check.
	encoded := map[string][]byte{}
	encode := func(name string, typ tensor.DType) ([]byte, error) {
		key := name + "/" + typ.String()
		if b, ok := encoded[key]; ok {
			return slices.Clone(b), nil
		}
		ti, _ := m.File().Tensor(name)
		raw, err := m.File().ReadTensor(ti)
		if err != nil {
			return nil, err
		}
		v := make([]float32, ti.Elements())
		if err := tensor.Dequantize(ti.Type, v, raw); err != nil {
			return nil, err
		}
		b, err := tensor.Encode(typ, v)
		encoded[key] = b
		return slices.Clone(b), err
	}
	names := []string{"blk.4.ffn_down.weight", "token_embd.weight"}
	if testing.Short() {
		names = names[:1] // quantizing the embeddings takes seconds in pure Go
	}
	types := []tensor.DType{tensor.Q4_K, tensor.Q2_K}
	o := SensitivityOptions{Ctx: ctxLen, MaxChunks: 2}
	loss, err := WeightSensitivity(context.Background(), m, ids, tok.BOS(), names, types, encode, o)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := Perplexity(context.Background(), m, ids, tok.BOS(), PPLOptions{Ctx: ctxLen, MaxChunks: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range names {
		if !(0 < loss[i][0] && loss[i][0] < loss[i][1]) {
			t.Errorf("%s: Q4_K %g, Q2_K %g: want 0 < Q4_K < Q2_K", name, loss[i][0], loss[i][1])
		}
		for j, typ := range types {
			data, err := encode(name, typ)
			if err != nil {
				t.Fatal(err)
			}
			changed, err := m.WithTensor(name, typ, data)
			if err != nil {
				t.Fatal(err)
			}
			res, err := Perplexity(context.Background(), changed, ids, tok.BOS(), PPLOptions{Ctx: ctxLen, MaxChunks: 2, Ref: ref.Dists})
			if err != nil {
				t.Fatal(err)
			}
			if got := loss[i][j]; got != res.Agreement.KLMean {
				t.Errorf("%s in %s: %g, alone %g", name, typ, got, res.Agreement.KLMean)
			}
		}
	}
	if _, err := WeightSensitivity(context.Background(), m, ids, tok.BOS(), []string{"blk.6.attn_q.weight"}, types, encode, o); err == nil {
		t.Error("a tensor of a layer the model lacks: no error")
	}
	if _, err := WeightSensitivity(context.Background(), m, ids, tok.BOS(), []string{"blk.0.attn_norm.weight"}, types, encode, o); err == nil {
		t.Error("a vector: no error")
	}
}
