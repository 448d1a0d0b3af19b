// Package defaultmodel embeds turbomem's default model: a 22M-parameter
// llama (6 layers, hidden 512, 4 query heads and 1 KV head of dimension
// 128, SwiGLU 1280, RoPE base 10000, context 4096, tied embeddings, 12288
// byte-level BPE tokens with the llama-bpe pre-tokenizer) trained from
// scratch on free-licensed English text from Debian packages plus synthetic
// long-context retrieval data (tools/train: README.md, CORPUS.md), stored
// as Q8_0 GGUF by tools/export. <|endoftext|> (id 0) is BOS and EOS; it
// has no chat template.
package defaultmodel

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/model"
)

// Name is the model's general.name.
const Name = "turbomem-default-22m"

// SHA256 is the hex SHA-256 of the embedded GGUF file.
const SHA256 = "4c82c1dfd03e33ad2d556b3367a8a317ce125c3d814e1fa5d8c17db9948f4493"

//go:embed turbomem-default.gguf
var file []byte

//go:embed heldout.txt
var heldOut string

// HeldOut returns about 50k tokens of held-out text (Python 3.11
// documentation, PSF License 2.0; see tools/train/CORPUS.md) that the
// model never saw in training: the default text of turbomem eval.
func HeldOut() string { return heldOut }

// GGUF returns the embedded GGUF file. The slice is shared: callers must
// not modify it.
func GGUF() []byte { return file }

// Verify checks the embedded bytes against SHA256.
func Verify() error {
	sum := sha256.Sum256(file)
	if got := hex.EncodeToString(sum[:]); got != SHA256 {
		return fmt.Errorf("defaultmodel: embedded GGUF has sha256 %s, want %s", got, SHA256)
	}
	return nil
}

// Open decodes the embedded GGUF file (in memory, no copy).
func Open() (*gguf.File, error) {
	f, err := gguf.DecodeBytes(file)
	if err != nil {
		return nil, fmt.Errorf("defaultmodel: %w", err)
	}
	return f, nil
}

// Load returns the embedded model, ready for NewSession.
func Load(o model.Options) (*model.Model, error) {
	f, err := Open()
	if err != nil {
		return nil, err
	}
	m, err := model.New(f, o)
	if err != nil {
		return nil, fmt.Errorf("defaultmodel: %w", err)
	}
	return m, nil
}
