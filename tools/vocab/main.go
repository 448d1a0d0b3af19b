// Command vocab writes the byte-level BPE tokenizer of a GGUF file (tokens,
// token types, merges, pre-tokenizer and special ids) as JSON, so that
// tools/train/train.py can train new models with the same tokenizer as an
// existing one (the suite models use the embedded model's). With -check it
// also encodes the start of a text file with turbomem's tokenizer and stores
// the ids, so the Python side can verify that its rebuilt tokenizer agrees.
//
// Usage:
//
//	go run ./tools/vocab -gguf defaultmodel/turbomem-default.gguf \
//	    -check defaultmodel/heldout.txt -out .train/vocab.json
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"unicode/utf8"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/model"
)

// vocabFile is what train.py's --tokenizer-vocab reads.
type vocabFile struct {
	Model     string   `json:"model"`
	Pre       string   `json:"pre"`
	Tokens    []string `json:"tokens"`
	Types     []int32  `json:"types"`
	Merges    []string `json:"merges"`
	BOS       int32    `json:"bos"`
	EOS       int32    `json:"eos"`
	CheckText string   `json:"check_text,omitempty"`
	CheckIDs  []int32  `json:"check_ids,omitempty"`
}

func run(path, check string, checkChars int, out string) error {
	f, err := gguf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tok, err := model.LoadTokenizer(f)
	if err != nil {
		return err
	}
	v := vocabFile{BOS: tok.BOS(), EOS: tok.EOS()}
	if v.Model, err = f.String("tokenizer.ggml.model"); err != nil {
		return fmt.Errorf("vocab: %s: %w", path, err)
	}
	if v.Model != "gpt2" {
		return fmt.Errorf("vocab: %s: tokenizer model %q, want gpt2 (byte-level BPE)", path, v.Model)
	}
	if v.Pre, err = f.String("tokenizer.ggml.pre"); err != nil {
		return fmt.Errorf("vocab: %s: %w", path, err)
	}
	if v.Tokens, err = f.Strings("tokenizer.ggml.tokens"); err != nil {
		return fmt.Errorf("vocab: %s: %w", path, err)
	}
	if v.Types, err = f.Int32s("tokenizer.ggml.token_type"); err != nil {
		return fmt.Errorf("vocab: %s: %w", path, err)
	}
	if v.Merges, err = f.Strings("tokenizer.ggml.merges"); err != nil {
		return fmt.Errorf("vocab: %s: %w", path, err)
	}
	if check != "" {
		b, err := os.ReadFile(check)
		if err != nil {
			return err
		}
		if len(b) > checkChars {
			b = b[:checkChars]
			for len(b) > 0 && !utf8.Valid(b) { // never cut a character in two
				b = b[:len(b)-1]
			}
		}
		v.CheckText = string(b)
		v.CheckIDs = tok.Encode(v.CheckText, false)
	}
	js, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(out, js, 0o644)
}

func main() {
	path := flag.String("gguf", "defaultmodel/turbomem-default.gguf", "GGUF file whose tokenizer to write")
	check := flag.String("check", "", "text file whose start is encoded into check_ids")
	chars := flag.Int("check-bytes", 20000, "bytes of -check to encode")
	out := flag.String("out", "vocab.json", "output JSON file")
	flag.Parse()
	if err := run(*path, *check, *chars, *out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
