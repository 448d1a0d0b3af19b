package model

import (
	"errors"
	"fmt"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/tokenizer"
)

// LoadTokenizer builds the tokenizer that f's tokenizer.ggml.* metadata
// describes.
func LoadTokenizer(f *gguf.File) (*tokenizer.Tokenizer, error) {
	v := tokenizer.Vocab{BOS: tokenizer.NoToken, EOS: tokenizer.NoToken, PAD: tokenizer.NoToken, UNK: tokenizer.NoToken}
	var err error
	if v.Model, err = f.String("tokenizer.ggml.model"); err != nil {
		return nil, fmt.Errorf("model: tokenizer: %w", err)
	}
	if v.Tokens, err = f.Strings("tokenizer.ggml.tokens"); err != nil {
		return nil, fmt.Errorf("model: tokenizer: %w", err)
	}
	optional := func(err error) error {
		if err != nil && !errors.Is(err, gguf.ErrNotFound) {
			return fmt.Errorf("model: tokenizer: %w", err)
		}
		return nil
	}
	var e error
	v.Scores, e = f.Float32s("tokenizer.ggml.scores")
	if err := optional(e); err != nil {
		return nil, err
	}
	v.Types, e = f.Int32s("tokenizer.ggml.token_type")
	if err := optional(e); err != nil {
		return nil, err
	}
	v.Merges, e = f.Strings("tokenizer.ggml.merges")
	if err := optional(e); err != nil {
		return nil, err
	}
	v.Pre, e = f.String("tokenizer.ggml.pre")
	if err := optional(e); err != nil {
		return nil, err
	}
	for _, id := range []struct {
		key string
		dst *int32
	}{
		{"tokenizer.ggml.bos_token_id", &v.BOS},
		{"tokenizer.ggml.eos_token_id", &v.EOS},
		{"tokenizer.ggml.padding_token_id", &v.PAD},
		{"tokenizer.ggml.unknown_token_id", &v.UNK},
	} {
		x, err := f.Uint(id.key)
		if errors.Is(err, gguf.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("model: tokenizer: %w", err)
		}
		if x >= uint64(len(v.Tokens)) {
			return nil, fmt.Errorf("model: tokenizer: %s = %d outside the vocabulary of %d", id.key, x, len(v.Tokens))
		}
		*id.dst = int32(x)
	}
	// Without tokenizer.ggml.add_bos_token, llama.cpp adds BOS for
	// SentencePiece vocabularies and for Llama-3's byte-level one.
	v.AddBOS = v.Model == "llama" || v.Pre == "llama-bpe" || v.Pre == "llama3"
	for _, b := range []struct {
		key string
		dst *bool
	}{
		{"tokenizer.ggml.add_bos_token", &v.AddBOS},
		{"tokenizer.ggml.add_eos_token", &v.AddEOS},
	} {
		x, err := f.Bool(b.key)
		if err == nil {
			*b.dst = x
		} else if err := optional(err); err != nil {
			return nil, err
		}
	}
	if x, err := f.Bool("tokenizer.ggml.add_space_prefix"); err == nil {
		v.NoSpacePrefix = !x
	} else if err := optional(err); err != nil {
		return nil, err
	}
	return tokenizer.New(v)
}
