package wquant

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/tensor"
)

// recipe is one of llama.cpp's fixed quantization mixes: its default
// type and its llama.cpp file type (general.file_type).
type recipe struct {
	base     tensor.DType
	fileType uint32
}

var recipes = map[string]recipe{
	"F32":    {tensor.F32, 0},
	"F16":    {tensor.F16, 1},
	"BF16":   {tensor.BF16, 32},
	"Q8_0":   {tensor.Q8_0, 7},
	"Q3_K_M": {tensor.Q3_K, 12},
	"Q4_K_M": {tensor.Q4_K, 15},
	"Q5_K_M": {tensor.Q5_K, 17},
	"TQ1_0":  {tensor.TQ1_0, 36},
	"TQ2_0":  {tensor.TQ2_0, 37},
}

// ternary reports whether t is one of GGML's ternary types.
func ternary(t tensor.DType) bool { return t == tensor.TQ1_0 || t == tensor.TQ2_0 }

// Recipes returns the names of the recipes Recipe reproduces.
func Recipes() []string {
	var names []string
	for n := range recipes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// RecipeFileType returns the llama.cpp file type of a recipe.
func RecipeFileType(name string) uint32 { return recipes[name].fileType }

// moreBits is llama.cpp's use_more_bits: the first and last eighth of the
// layers and every third one between get a larger type.
func moreBits(i, n int) bool {
	return i < n/8 || i >= 7*n/8 || (i-n/8)%3 == 2
}

// fallback is the type llama.cpp stores a tensor in when its rows do not
// hold whole blocks of the type chosen (tensor_type_fallback), F16 when
// even that does not fit.
func fallback(shape []int64, t tensor.DType) tensor.DType {
	if Fits(shape, t) {
		return t
	}
	var f tensor.DType
	switch t {
	case tensor.Q2_K, tensor.Q3_K, tensor.TQ1_0, tensor.TQ2_0:
		f = tensor.Q4_0
	case tensor.Q4_K:
		f = tensor.Q5_0
	case tensor.Q5_K:
		f = tensor.Q5_1
	case tensor.Q6_K:
		f = tensor.Q8_0
	default:
		f = t
	}
	if !Fits(shape, f) {
		return tensor.F16
	}
	return f
}

// layerOf returns N for a tensor named blk.N.*, −1 otherwise.
func layerOf(name string) int {
	var l int
	if _, err := fmt.Sscanf(name, "blk.%d.", &l); err != nil {
		return -1
	}
	return l
}

// Recipe returns the plan that llama-quantize's fixed recipe name makes of
// src. F32, F16, BF16 and Q8_0 store every weight matrix in that type
// (llama.cpp's rules change nothing for them); TQ1_0 and TQ2_0 store the
// output projection (and tied embeddings) in Q6_K, untied embeddings in
// Q4_K and every other weight matrix in the ternary type; Q3_K_M, Q4_K_M and Q5_K_M
// follow the per-tensor rules
// of llama.cpp's llama_tensor_get_type for dense models that are not
// Falcon (src/llama-quant.cpp): the output projection (and tied
// embeddings) Q6_K; attn_v Q6_K (Q4_K_M, Q5_K_M) in the layers
// use_more_bits picks, or Q5_K in the first two and Q4_K after (Q3_K_M);
// ffn_down likewise Q6_K where use_more_bits picks, or Q4_K (Q5_K in the
// first sixteenth) for Q3_K_M; attn_output Q4_K for Q3_K_M; every other
// weight matrix the recipe's base type; rows that do not hold whole
// blocks fall back as llama.cpp does. Tensors are visited in llama.cpp's
// order (by layer, then name), which the counters of attn_v rely on.
func Recipe(src *gguf.File, sourceSHA256, name string) (*Plan, error) {
	r, ok := recipes[name]
	if !ok {
		return nil, fmt.Errorf("wquant: unknown recipe %q (have %s)", name, strings.Join(Recipes(), ", "))
	}
	layers := 0
	if arch, err := src.Architecture(); err == nil {
		if n, err := src.Uint(arch + ".block_count"); err == nil && n < 1<<16 {
			layers = int(n)
		}
	}
	order := slices.Clone(src.Tensors)
	slices.SortStableFunc(order, func(a, b gguf.TensorInfo) int {
		return cmp.Or(cmp.Compare(layerOf(a.Name), layerOf(b.Name)), strings.Compare(a.Name, b.Name))
	})
	tied := true
	attnV := 0
	for _, t := range order {
		if t.Name == "output.weight" {
			tied = false
		}
		if strings.Contains(t.Name, "attn_v.weight") || strings.Contains(t.Name, "attn_qkv.weight") || strings.Contains(t.Name, "attn_kv_b.weight") {
			attnV++
		}
	}
	types := map[string]tensor.DType{}
	iAttnV, iDown := 0, 0
	for _, t := range order {
		if !Quantizable(t) {
			continue
		}
		typ := r.base
		if r.base.BlockSize() < tensor.QK_K {
			types[t.Name] = fallback(t.Shape, typ)
			continue
		}
		switch n := t.Name; {
		case n == "output.weight" || tied && n == "token_embd.weight":
			if t.Shape[0]%int64(r.base.BlockSize()) != 0 {
				typ = tensor.Q8_0
			} else {
				typ = tensor.Q6_K
			}
		case n == "token_embd.weight":
			if ternary(r.base) {
				typ = tensor.Q4_K
			}
		case ternary(r.base):
			// llama.cpp's other rules leave the ternary types alone.
		case strings.Contains(n, "attn_v.weight") || strings.Contains(n, "attn_qkv.weight") || strings.Contains(n, "attn_kv_b.weight"):
			switch {
			case name == "Q3_K_M" && iAttnV < 2:
				typ = tensor.Q5_K
			case name == "Q3_K_M":
				typ = tensor.Q4_K
			case moreBits(iAttnV, attnV):
				typ = tensor.Q6_K
			}
			iAttnV++
		case strings.Contains(n, "ffn_down"):
			switch {
			case name == "Q3_K_M" && iDown < layers/16:
				typ = tensor.Q5_K
			case name == "Q3_K_M":
				typ = tensor.Q4_K
			case moreBits(iDown, layers):
				typ = tensor.Q6_K
			}
			iDown++
		case strings.Contains(n, "attn_output.weight") && name == "Q3_K_M":
			typ = tensor.Q4_K
		}
		types[t.Name] = fallback(t.Shape, typ)
	}
	p := &Plan{Source: sourceSHA256, Recipe: name}
	for _, t := range src.Tensors {
		typ, ok := types[t.Name]
		if !ok {
			typ = t.Type
		}
		c, err := choice(t, typ, 0)
		if err != nil {
			return nil, err
		}
		p.Tensors = append(p.Tensors, c)
	}
	return p, nil
}
