// Command export converts the default model's training checkpoint
// (tools/train/train.py: bf16 safetensors chunks with LlamaForCausalLM
// names, and the Hugging Face tokenizer.json) to a GGUF llama file with
// turbomem's own gguf writer.
//
// Usage:
//
//	go run ./tools/export -ckpt .train/final -type q8_0 -out defaultmodel/turbomem-default.gguf
//	go run ./tools/export -ckpt .train/final -type f16  -out .train/default-f16.gguf
//
// Matrices are stored as -type (Q8_0 or F16), norms as F32. The q_proj and
// k_proj rows are permuted from Hugging Face's rotate-half RoPE to GGUF
// llama's adjacent pairs (docs/ALGORITHMS.md §11). The output projection is tied
// to token_embd.weight, so output.weight is left out.
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

func run(ckpt, typName, out, name string) error {
	var typ tensor.DType
	var fileType uint32
	switch strings.ToLower(typName) {
	case "q8_0":
		typ, fileType = tensor.Q8_0, 7
	case "f16":
		typ, fileType = tensor.F16, 1
	case "f32":
		typ, fileType = tensor.F32, 0
	default:
		return fmt.Errorf("export: type %q: want q8_0, f16 or f32", typName)
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

	var tj hfTokenizer
	tb, err := os.ReadFile(filepath.Join(ckpt, "tokenizer.json"))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(tb, &tj); err != nil {
		return fmt.Errorf("export: tokenizer.json: %w", err)
	}
	if tj.Model.Type != "BPE" {
		return fmt.Errorf("export: tokenizer.json: model %q, want BPE", tj.Model.Type)
	}
	tokens := make([]string, cfg.Vocab)
	types := make([]int32, cfg.Vocab)
	for s, id := range tj.Model.Vocab {
		if id < 0 || id >= cfg.Vocab {
			return fmt.Errorf("export: token %q: id %d outside vocabulary of %d", s, id, cfg.Vocab)
		}
		tokens[id], types[id] = s, 1 // normal
	}
	for _, a := range tj.AddedTokens {
		if a.ID < 0 || a.ID >= cfg.Vocab {
			return fmt.Errorf("export: added token %q: id %d outside vocabulary", a.Content, a.ID)
		}
		tokens[a.ID] = a.Content
		if a.Special {
			types[a.ID] = 3 // control
		}
	}
	for i, s := range tokens {
		if s == "" {
			return fmt.Errorf("export: token id %d has no string", i)
		}
	}
	merges := make([]string, len(tj.Model.Merges))
	for i, m := range tj.Model.Merges {
		var s string
		var pair []string
		if json.Unmarshal(m, &s) == nil {
			merges[i] = s
		} else if json.Unmarshal(m, &pair) == nil && len(pair) == 2 {
			merges[i] = pair[0] + " " + pair[1]
		} else {
			return fmt.Errorf("export: merge %d: %s", i, m)
		}
	}

	b := gguf.NewBuilder()
	var setErr error
	set := func(k string, v any) {
		if err := b.Set(k, v); err != nil && setErr == nil {
			setErr = err
		}
	}
	set("general.architecture", "llama")
	set("general.name", name)
	set("general.file_type", fileType)
	set("general.license", "see tools/train/CORPUS.md")
	set("llama.vocab_size", uint32(cfg.Vocab))
	set("llama.context_length", uint32(cfg.Context))
	set("llama.embedding_length", uint32(cfg.Hidden))
	set("llama.block_count", uint32(cfg.Layers))
	set("llama.feed_forward_length", uint32(cfg.FFN))
	set("llama.attention.head_count", uint32(cfg.Heads))
	set("llama.attention.head_count_kv", uint32(cfg.KVHeads))
	set("llama.rope.dimension_count", uint32(cfg.HeadDim))
	set("llama.rope.freq_base", float32(cfg.RopeTheta))
	set("llama.attention.layer_norm_rms_epsilon", float32(cfg.Eps))
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
	if err := addMat("token_embd.weight", "model.embed_tokens.weight", cfg.Vocab, h, 0); err != nil {
		return err
	}
	for i := range cfg.Layers {
		p, q := fmt.Sprintf("blk.%d.", i), fmt.Sprintf("model.layers.%d.", i)
		for _, e := range []error{
			addVec(p+"attn_norm.weight", q+"input_layernorm.weight", h),
			addMat(p+"attn_q.weight", q+"self_attn.q_proj.weight", cfg.Heads*hd, h, cfg.Heads),
			addMat(p+"attn_k.weight", q+"self_attn.k_proj.weight", cfg.KVHeads*hd, h, cfg.KVHeads),
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
	typ := flag.String("type", "q8_0", "matrix type: q8_0, f16 or f32")
	out := flag.String("out", "turbomem-default.gguf", "output GGUF file")
	name := flag.String("name", "turbomem-default-22m", "general.name")
	flag.Parse()
	if err := run(*ckpt, *typ, *out, *name); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	st, _ := os.Stat(*out)
	fmt.Printf("wrote %s (%d bytes)\n", *out, st.Size())
}
