// Package model runs llama-family transformer models (Llama 2/3, Mistral,
// Qwen2 and their relatives) from GGUF files: it reads the architecture's
// hyperparameters and weights, and computes next-token logits for one
// sequence at a time (Session), with the sequence's keys and values held
// in a kvcache.Cache.
package model

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/turbomem/turbomem/gguf"
)

// RopeStyle says which coordinates RoPE rotates together.
type RopeStyle int

const (
	// RopeAdjacent rotates pairs (2i, 2i+1): GGUF llama files, whose
	// converter permutes the Q and K rows from Hugging Face's layout.
	RopeAdjacent RopeStyle = iota
	// RopeHalves rotates pairs (i, i + d/2) (GPT-NeoX, "rotate half"):
	// Qwen2 files.
	RopeHalves
)

// Config holds a model's hyperparameters.
type Config struct {
	Arch       string
	Layers     int
	Hidden     int // embedding length
	FFN        int // feed-forward length
	Heads      int
	KVHeads    int
	HeadDim    int
	Vocab      int
	Context    int // training context length
	RMSEps     float32
	RopeBase   float64
	RopeDim    int // coordinates per head that RoPE rotates
	RopeStyle  RopeStyle
	RopeLinear float64 // linear position scaling factor (1: none)
	// SlidingWindow limits attention to the last N tokens (Mistral); 0
	// means no limit.
	SlidingWindow int
}

// supported lists the architectures by general.architecture.
var supported = map[string]RopeStyle{"llama": RopeAdjacent, "mistral": RopeAdjacent, "qwen2": RopeHalves}

// ErrUnsupported reports an architecture or tensor type this package
// cannot run.
var ErrUnsupported = errors.New("model: unsupported")

// Limits on hyperparameters read from a file: generous for any model that
// fits in memory, small enough that a hostile file cannot make us allocate
// absurd buffers before weights are checked.
const (
	maxLayers  = 1024
	maxHidden  = 1 << 17
	maxHeads   = 1 << 10
	maxHeadDim = 1 << 10
	maxContext = 1 << 24
)

// ReadConfig reads the hyperparameters of f and checks them for
// consistency; tensor shapes are checked when the weights load.
func ReadConfig(f *gguf.File) (Config, error) {
	arch, err := f.Architecture()
	if err != nil {
		return Config{}, fmt.Errorf("model: %w", err)
	}
	style, ok := supported[arch]
	if !ok {
		names := make([]string, 0, len(supported))
		for n := range supported {
			names = append(names, n)
		}
		return Config{}, fmt.Errorf("%w architecture %q (supported: %s)", ErrUnsupported, arch, strings.Join(sortedStrings(names), ", "))
	}
	c := Config{Arch: arch, RopeStyle: style}
	geti := func(key string, dst *int, def int, lo, hi int) error {
		v, err := f.Uint(arch + "." + key)
		if err != nil {
			if def >= 0 && errors.Is(err, gguf.ErrNotFound) {
				*dst = def
				return nil
			}
			return fmt.Errorf("model: %s.%s: %w", arch, key, err)
		}
		if v < uint64(lo) || v > uint64(hi) {
			return fmt.Errorf("model: %s.%s = %d out of range [%d, %d]", arch, key, v, lo, hi)
		}
		*dst = int(v)
		return nil
	}
	for _, p := range []struct {
		key    string
		dst    *int
		def    int
		lo, hi int
	}{
		{"block_count", &c.Layers, -1, 1, maxLayers},
		{"embedding_length", &c.Hidden, -1, 1, maxHidden},
		{"feed_forward_length", &c.FFN, -1, 1, 4 * maxHidden},
		{"attention.head_count", &c.Heads, -1, 1, maxHeads},
		{"context_length", &c.Context, 2048, 1, maxContext},
		{"attention.sliding_window", &c.SlidingWindow, 0, 0, maxContext},
	} {
		if err := geti(p.key, p.dst, p.def, p.lo, p.hi); err != nil {
			return c, err
		}
	}
	if err := geti("attention.head_count_kv", &c.KVHeads, c.Heads, 1, maxHeads); err != nil {
		return c, err
	}
	if c.Hidden%c.Heads != 0 {
		return c, fmt.Errorf("model: embedding length %d not divisible by %d heads", c.Hidden, c.Heads)
	}
	if err := geti("attention.key_length", &c.HeadDim, c.Hidden/c.Heads, 1, maxHeadDim); err != nil {
		return c, err
	}
	if c.Heads%c.KVHeads != 0 {
		return c, fmt.Errorf("model: %d heads not a multiple of %d KV heads", c.Heads, c.KVHeads)
	}
	if err := geti("rope.dimension_count", &c.RopeDim, c.HeadDim, 2, c.HeadDim); err != nil {
		return c, err
	}
	if c.RopeDim%2 != 0 {
		return c, fmt.Errorf("model: RoPE dimension %d is odd", c.RopeDim)
	}
	getf := func(key string, def float64) (float64, error) {
		v, err := f.Float(arch + "." + key)
		if err != nil {
			if errors.Is(err, gguf.ErrNotFound) {
				return def, nil
			}
			return 0, fmt.Errorf("model: %s.%s: %w", arch, key, err)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
			return 0, fmt.Errorf("model: %s.%s = %g is not positive and finite", arch, key, v)
		}
		return v, nil
	}
	if c.RopeBase, err = getf("rope.freq_base", 10000); err != nil {
		return c, err
	}
	eps, err := getf("attention.layer_norm_rms_epsilon", 1e-5)
	if err != nil {
		return c, err
	}
	c.RMSEps = float32(eps)
	c.RopeLinear = 1
	if typ, err := f.String(arch + ".rope.scaling.type"); err == nil {
		switch typ {
		case "none":
		case "linear":
			if c.RopeLinear, err = getf("rope.scaling.factor", 1); err != nil {
				return c, err
			}
		default:
			return c, fmt.Errorf("%w RoPE scaling %q (supported: none, linear; Llama-3 scaling comes as rope_freqs.weight)", ErrUnsupported, typ)
		}
	} else if !errors.Is(err, gguf.ErrNotFound) {
		return c, fmt.Errorf("model: %w", err)
	}
	return c, nil
}

func sortedStrings(s []string) []string {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}
