// Command export converts a training checkpoint of tools/train/train.py
// (bf16 safetensors chunks with LlamaForCausalLM / Qwen2ForCausalLM names,
// and the Hugging Face tokenizer.json, or with -vocab the tokenizer of an
// existing GGUF file as tools/vocab writes it) to a GGUF llama or qwen2 file
// with turbomem's own gguf writer.
//
// Usage:
//
//	go run ./tools/export -ckpt .train/final -type q8_0 -out defaultmodel/turbomem-default.gguf
//	go run ./tools/export -ckpt .train/final -type f16  -out .train/default-f16.gguf
//	go run ./tools/export -ckpt .train/mha64 -vocab .train/vocab.json -name turbomem-suite-mha64 -out suite.gguf
//
// Matrices are stored as -type (Q8_0, Q6_K, F16 or F32), norms and biases
// as F32. For llama the q_proj and k_proj rows are permuted from Hugging
// Face's rotate-half RoPE to GGUF llama's adjacent pairs
// (docs/ALGORITHMS.md §11); qwen2 files keep rotate-half (NeoX) RoPE, so
// nothing is permuted. The output projection is tied to token_embd.weight,
// so output.weight is left out.
package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tensor"
)

// modelConfig is the subset of train.py's CFG that the GGUF needs.
type modelConfig struct {
	Vocab     int     `json:"vocab_size"`
	Hidden    int     `json:"hidden_size"`
	FFN       int     `json:"intermediate_size"`
	Layers    int     `json:"num_hidden_layers"`
	Heads     int     `json:"num_attention_heads"`
	KVHeads   int     `json:"num_key_value_heads"`
	HeadDim   int     `json:"head_dim"`
	RopeTheta float64 `json:"rope_theta"`
	Eps       float64 `json:"rms_norm_eps"`
	Context   int     `json:"max_position_embeddings"`
	// Arch is general.architecture: "llama" (also when absent, as in the
	// default model's checkpoint) or "qwen2".
	Arch     string `json:"architecture"`
	AttnBias bool   `json:"attention_bias"` // Q, K and V biases (qwen2)
}

// stTensor is one tensor of a safetensors file, converted to float32.
type stTensor struct {
	shape []int
	data  []float32
}

// readSafetensors reads a safetensors file: an 8-byte little-endian header
// length, a JSON header mapping names to dtype, shape and data offsets
// (relative to the end of the header), then the raw data.
func readSafetensors(path string) (map[string]stTensor, map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	if len(b) < 8 {
		return nil, nil, fmt.Errorf("safetensors %s: %d bytes, shorter than the header length", path, len(b))
	}
	n := binary.LittleEndian.Uint64(b)
	if n > uint64(len(b)-8) {
		return nil, nil, fmt.Errorf("safetensors %s: header length %d beyond file size %d", path, n, len(b))
	}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &hdr); err != nil {
		return nil, nil, fmt.Errorf("safetensors %s: header: %w", path, err)
	}
	data := b[8+n:]
	out := map[string]stTensor{}
	meta := map[string]string{}
	for name, raw := range hdr {
		if name == "__metadata__" {
			if err := json.Unmarshal(raw, &meta); err != nil {
				return nil, nil, fmt.Errorf("safetensors %s: metadata: %w", path, err)
			}
			continue
		}
		var ti struct {
			Dtype   string   `json:"dtype"`
			Shape   []int    `json:"shape"`
			Offsets [2]int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(raw, &ti); err != nil {
			return nil, nil, fmt.Errorf("safetensors %s: tensor %q: %w", path, name, err)
		}
		elems := 1
		for _, d := range ti.Shape {
			elems *= d
		}
		lo, hi := ti.Offsets[0], ti.Offsets[1]
		if lo < 0 || hi < lo || hi > int64(len(data)) {
			return nil, nil, fmt.Errorf("safetensors %s: tensor %q: offsets [%d,%d) beyond data size %d", path, name, lo, hi, len(data))
		}
		raw := data[lo:hi]
		v := make([]float32, elems)
		switch ti.Dtype {
		case "BF16":
			if len(raw) != 2*elems {
				return nil, nil, fmt.Errorf("safetensors %s: tensor %q: %d bytes for %d bf16 values", path, name, len(raw), elems)
			}
			for i := range v {
				v[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(raw[2*i:])) << 16)
			}
		case "F32":
			if len(raw) != 4*elems {
				return nil, nil, fmt.Errorf("safetensors %s: tensor %q: %d bytes for %d f32 values", path, name, len(raw), elems)
			}
			for i := range v {
				v[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
			}
		default:
			return nil, nil, fmt.Errorf("safetensors %s: tensor %q: dtype %s not supported", path, name, ti.Dtype)
		}
		out[name] = stTensor{ti.Shape, v}
	}
	return out, meta, nil
}

// hfTokenizer is the part of tokenizer.json that a GGUF gpt2 tokenizer needs.
type hfTokenizer struct {
	AddedTokens []struct {
		ID      int    `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	} `json:"added_tokens"`
	Model struct {
		Type   string            `json:"type"`
		Vocab  map[string]int    `json:"vocab"`
		Merges []json.RawMessage `json:"merges"` // "a b" (old format) or ["a", "b"]
	} `json:"model"`
}

// ggufVocab is the tokenizer part of tools/vocab's JSON.
type ggufVocab struct {
	Model  string   `json:"model"`
	Pre    string   `json:"pre"`
	Tokens []string `json:"tokens"`
	Types  []int32  `json:"types"`
	Merges []string `json:"merges"`
}

// tokenizerFromVocab reads tools/vocab's JSON: the tokens, types and merges
// are copied unchanged, so the new file tokenizes exactly as the old one.
func tokenizerFromVocab(path string, vocab int) (tokens []string, types []int32, merges []string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, nil, err
	}
	var v ggufVocab
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, nil, nil, fmt.Errorf("export: %s: %w", path, err)
	}
	if v.Model != "gpt2" || v.Pre != "llama-bpe" {
		return nil, nil, nil, fmt.Errorf("export: %s: tokenizer %s/%s, want gpt2/llama-bpe", path, v.Model, v.Pre)
	}
	if len(v.Tokens) != vocab || len(v.Types) != vocab {
		return nil, nil, nil, fmt.Errorf("export: %s: %d tokens and %d types for a vocabulary of %d", path, len(v.Tokens), len(v.Types), vocab)
	}
	return v.Tokens, v.Types, v.Merges, nil
}

// tokenizerFromJSON reads a Hugging Face tokenizer.json (byte-level BPE).
func tokenizerFromJSON(path string, vocab int) (tokens []string, types []int32, merges []string, err error) {
	var tj hfTokenizer
	tb, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := json.Unmarshal(tb, &tj); err != nil {
		return nil, nil, nil, fmt.Errorf("export: tokenizer.json: %w", err)
	}
	if tj.Model.Type != "BPE" {
		return nil, nil, nil, fmt.Errorf("export: tokenizer.json: model %q, want BPE", tj.Model.Type)
	}
	tokens = make([]string, vocab)
	types = make([]int32, vocab)
	for s, id := range tj.Model.Vocab {
		if id < 0 || id >= vocab {
			return nil, nil, nil, fmt.Errorf("export: token %q: id %d outside vocabulary of %d", s, id, vocab)
		}
		tokens[id], types[id] = s, 1 // normal
	}
	for _, a := range tj.AddedTokens {
		if a.ID < 0 || a.ID >= vocab {
			return nil, nil, nil, fmt.Errorf("export: added token %q: id %d outside vocabulary", a.Content, a.ID)
		}
		tokens[a.ID] = a.Content
		if a.Special {
			types[a.ID] = 3 // control
		}
	}
	for i, s := range tokens {
		if s == "" {
			return nil, nil, nil, fmt.Errorf("export: token id %d has no string", i)
		}
	}
	merges = make([]string, len(tj.Model.Merges))
	for i, m := range tj.Model.Merges {
		var s string
		var pair []string
		if json.Unmarshal(m, &s) == nil {
			merges[i] = s
		} else if json.Unmarshal(m, &pair) == nil && len(pair) == 2 {
			merges[i] = pair[0] + " " + pair[1]
		} else {
			return nil, nil, nil, fmt.Errorf("export: merge %d: %s", i, m)
		}
	}
	return tokens, types, merges, nil
}

func run(ckpt, vocabPath, typName, out, name string) error {
	var typ tensor.DType
	var fileType uint32
	switch strings.ToLower(typName) {
	case "q8_0":
		typ, fileType = tensor.Q8_0, 7
	case "q6_k":
		typ, fileType = tensor.Q6_K, 18
	case "f16":
		typ, fileType = tensor.F16, 1
	case "f32":
		typ, fileType = tensor.F32, 0
	default:
		return fmt.Errorf("export: type %q: want q8_0, q6_k, f16 or f32", typName)
	}
	files, _ := filepath.Glob(filepath.Join(ckpt, "weights-*.safetensors"))
	if len(files) == 0 {
		return fmt.Errorf("export: no weights-*.safetensors in %s", ckpt)
	}
	sort.Strings(files)
	weights := map[string]stTensor{}
	var cfg modelConfig
	for _, f := range files {
		ts, meta, err := readSafetensors(f)
		if err != nil {
			return err
		}
		for k, v := range ts {
			weights[k] = v
		}
		if c, ok := meta["config"]; ok {
			if err := json.Unmarshal([]byte(c), &cfg); err != nil {
				return fmt.Errorf("export: %s: config: %w", f, err)
			}
		}
	}
	if cfg.Hidden == 0 || cfg.Heads == 0 || cfg.HeadDim*cfg.Heads != cfg.Hidden {
		return fmt.Errorf("export: config %+v: missing, or head_dim·heads ≠ hidden", cfg)
	}

	if cfg.Arch == "" {
		cfg.Arch = "llama"
	}
	if cfg.Arch != "llama" && cfg.Arch != "qwen2" {
		return fmt.Errorf("export: architecture %q: want llama or qwen2", cfg.Arch)
	}
	var tokens, merges []string
	var types []int32
	var err error
	if vocabPath != "" {
		tokens, types, merges, err = tokenizerFromVocab(vocabPath, cfg.Vocab)
	} else {
		tokens, types, merges, err = tokenizerFromJSON(filepath.Join(ckpt, "tokenizer.json"), cfg.Vocab)
	}
	if err != nil {
		return err
	}

	b := gguf.NewBuilder()
	var setErr error
	set := func(k string, v any) {
		if err := b.Set(k, v); err != nil && setErr == nil {
			setErr = err
		}
	}
	arch := cfg.Arch
	set("general.architecture", arch)
	set("general.name", name)
	set("general.file_type", fileType)
	set("general.license", "see tools/train/CORPUS.md")
	set(arch+".vocab_size", uint32(cfg.Vocab))
	set(arch+".context_length", uint32(cfg.Context))
	set(arch+".embedding_length", uint32(cfg.Hidden))
	set(arch+".block_count", uint32(cfg.Layers))
	set(arch+".feed_forward_length", uint32(cfg.FFN))
	set(arch+".attention.head_count", uint32(cfg.Heads))
	set(arch+".attention.head_count_kv", uint32(cfg.KVHeads))
	set(arch+".rope.dimension_count", uint32(cfg.HeadDim))
	set(arch+".rope.freq_base", float32(cfg.RopeTheta))
	set(arch+".attention.layer_norm_rms_epsilon", float32(cfg.Eps))
	set("tokenizer.ggml.model", "gpt2")
	set("tokenizer.ggml.pre", "llama-bpe")
	set("tokenizer.ggml.tokens", tokens)
	set("tokenizer.ggml.token_type", types)
	set("tokenizer.ggml.merges", merges)
	set("tokenizer.ggml.bos_token_id", uint32(0)) // <|endoftext|> begins every training window
	set("tokenizer.ggml.eos_token_id", uint32(0))
	set("tokenizer.ggml.padding_token_id", uint32(0))
	set("tokenizer.ggml.add_bos_token", true)
	set("tokenizer.ggml.add_eos_token", false)
	if setErr != nil {
		return fmt.Errorf("export: metadata: %w", setErr)
	}

	used := map[string]bool{}
	get := func(n string, elems int) ([]float32, error) {
		t, ok := weights[n]
		if !ok {
			return nil, fmt.Errorf("export: tensor %q missing", n)
		}
		if len(t.data) != elems {
			return nil, fmt.Errorf("export: tensor %q: %d values, want %d", n, len(t.data), elems)
		}
		used[n] = true
		return t.data, nil
	}
	addVec := func(g, hf string, n int) error {
		v, err := get(hf, n)
		if err != nil {
			return err
		}
		d, err := tensor.Encode(tensor.F32, v)
		if err != nil {
			return err
		}
		return b.AddTensor(g, tensor.F32, []int64{int64(n)}, d)
	}
	addMat := func(g, hf string, rows, cols, permHeads int) error {
		v, err := get(hf, rows*cols)
		if err != nil {
			return err
		}
		if permHeads > 0 {
			v = model.PermuteRoPERows(v, permHeads, rows, cols)
		}
		d, err := tensor.Encode(typ, v)
		if err != nil {
			return fmt.Errorf("export: %s: %w", g, err)
		}
		return b.AddTensor(g, typ, []int64{int64(cols), int64(rows)}, d)
	}
	h, f, hd := cfg.Hidden, cfg.FFN, cfg.HeadDim
	qPerm, kPerm := cfg.Heads, cfg.KVHeads
	if arch == "qwen2" { // NeoX RoPE in GGUF too: rows stay in Hugging Face's order
		qPerm, kPerm = 0, 0
	}
	if err := addMat("token_embd.weight", "model.embed_tokens.weight", cfg.Vocab, h, 0); err != nil {
		return err
	}
	for i := range cfg.Layers {
		p, q := fmt.Sprintf("blk.%d.", i), fmt.Sprintf("model.layers.%d.", i)
		for _, e := range []error{
			addVec(p+"attn_norm.weight", q+"input_layernorm.weight", h),
			addMat(p+"attn_q.weight", q+"self_attn.q_proj.weight", cfg.Heads*hd, h, qPerm),
			addMat(p+"attn_k.weight", q+"self_attn.k_proj.weight", cfg.KVHeads*hd, h, kPerm),
			addMat(p+"attn_v.weight", q+"self_attn.v_proj.weight", cfg.KVHeads*hd, h, 0),
			addMat(p+"attn_output.weight", q+"self_attn.o_proj.weight", h, cfg.Heads*hd, 0),
			addVec(p+"ffn_norm.weight", q+"post_attention_layernorm.weight", h),
			addMat(p+"ffn_gate.weight", q+"mlp.gate_proj.weight", f, h, 0),
			addMat(p+"ffn_up.weight", q+"mlp.up_proj.weight", f, h, 0),
			addMat(p+"ffn_down.weight", q+"mlp.down_proj.weight", h, f, 0),
		} {
			if e != nil {
				return e
			}
		}
		if cfg.AttnBias {
			for _, e := range []error{
				addVec(p+"attn_q.bias", q+"self_attn.q_proj.bias", cfg.Heads*hd),
				addVec(p+"attn_k.bias", q+"self_attn.k_proj.bias", cfg.KVHeads*hd),
				addVec(p+"attn_v.bias", q+"self_attn.v_proj.bias", cfg.KVHeads*hd),
			} {
				if e != nil {
					return e
				}
			}
		}
	}
	if err := addVec("output_norm.weight", "model.norm.weight", h); err != nil {
		return err
	}
	for n := range weights {
		if !used[n] {
			return fmt.Errorf("export: checkpoint tensor %q not mapped", n)
		}
	}
	return b.WriteFile(out)
}

func main() {
	ckpt := flag.String("ckpt", ".train/final", "folder with weights-*.safetensors and tokenizer.json")
	vocab := flag.String("vocab", "", "tools/vocab JSON to take the tokenizer from instead of the checkpoint's tokenizer.json")
	typ := flag.String("type", "q8_0", "matrix type: q8_0, q6_k, f16 or f32")
	out := flag.String("out", "turbomem-default.gguf", "output GGUF file")
	name := flag.String("name", "turbomem-default-22m", "general.name")
	flag.Parse()
	if err := run(*ckpt, *vocab, *typ, *out, *name); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	st, _ := os.Stat(*out)
	fmt.Printf("wrote %s (%d bytes)\n", *out, st.Size())
}
