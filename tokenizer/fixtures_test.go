package tokenizer

import (
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/turbomem/turbomem/gguf"
)

// The fixtures are made by tools/tokref/make_fixtures.py from Hugging Face
// tokenizers and sentencepiece; see tools/tokref/README.md.

// bpePres are the pre-tokenizers of the trained byte-level BPE fixtures.
var bpePres = []string{"gpt-2", "llama-bpe", "qwen2", "smollm"}

// llamaGGUF is the Llama-2 vocabulary fixture (../testdata/README.md), relative to this
// package; it lives outside the repository.
const llamaGGUF = "../testdata/llama-2-tiny-random.gguf"

type fixtureCase struct {
	Text    string  `json:"text"`
	IDs     []int32 `json:"ids"`
	Decoded string  `json:"decoded"`
}

type bpeFixture struct {
	Pre       string        `json:"pre"`
	Tokenizer hfTokenizer   `json:"tokenizer"`
	Cases     []fixtureCase `json:"cases"`
	CorpusIDs []int32       `json:"corpus_ids"`
}

// hfTokenizer is the part of a Hugging Face tokenizer.json that a GGUF
// converter reads.
type hfTokenizer struct {
	AddedTokens []struct {
		ID      int32  `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	} `json:"added_tokens"`
	Model struct {
		Type         string           `json:"type"`
		Vocab        map[string]int32 `json:"vocab"`
		Merges       json.RawMessage  `json:"merges"`
		IgnoreMerges bool             `json:"ignore_merges"`
	} `json:"model"`
}

type spmFixture struct {
	GGUF        string        `json:"gguf"`
	HFCases     []fixtureCase `json:"hf_cases"`
	HFCorpusIDs []int32       `json:"hf_corpus_ids"`
	SPCases     []fixtureCase `json:"sp_cases"`
	SPCorpusIDs []int32       `json:"sp_corpus_ids"`
}

type splitFixture struct {
	Strings []string `json:"strings"`
	Chains  map[string]struct {
		Regexes []string   `json:"regexes"`
		Pieces  [][]string `json:"pieces"`
	} `json:"chains"`
}

func readGzipJSON(tb testing.TB, name string, v any) {
	tb.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	if err := json.NewDecoder(zr).Decode(v); err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
}

func loadBPEFixture(tb testing.TB, pre string) bpeFixture {
	tb.Helper()
	var fx bpeFixture
	readGzipJSON(tb, "bpe-"+pre+".json.gz", &fx)
	return fx
}

// ggufVocab converts a tokenizer.json as llama.cpp's convert_hf_to_gguf.py
// does: tokens in id order (byte-level alphabet as stored), added special
// tokens as control, other added tokens as user-defined, merges as "a b".
func (h hfTokenizer) ggufVocab(tb testing.TB, pre string) Vocab {
	tb.Helper()
	if h.Model.Type != "BPE" {
		tb.Fatalf("tokenizer.json model type %q, want BPE", h.Model.Type)
	}
	n := 0
	for _, id := range h.Model.Vocab {
		n = max(n, int(id)+1)
	}
	for _, a := range h.AddedTokens {
		n = max(n, int(a.ID)+1)
	}
	tokens := make([]string, n)
	types := make([]int32, n)
	for tok, id := range h.Model.Vocab {
		tokens[id], types[id] = tok, TypeNormal
	}
	for _, a := range h.AddedTokens {
		tokens[a.ID], types[a.ID] = a.Content, TypeUserDefined
		if a.Special {
			types[a.ID] = TypeControl
		}
	}
	for i, ty := range types {
		if ty == TypeUndefined {
			tb.Fatalf("tokenizer.json has no token %d", i)
		}
	}
	// Merges are "a b" strings in older files, ["a", "b"] pairs in newer.
	var merges []string
	if err := json.Unmarshal(h.Model.Merges, &merges); err != nil {
		merges = nil
		var pairs [][2]string
		if err := json.Unmarshal(h.Model.Merges, &pairs); err != nil {
			tb.Fatalf("tokenizer.json merges: %v", err)
		}
		for _, p := range pairs {
			merges = append(merges, p[0]+" "+p[1])
		}
	}
	v := Vocab{
		Model: "gpt2", Pre: pre, Tokens: tokens, Types: types, Merges: merges,
		BOS: NoToken, EOS: NoToken, PAD: NoToken, UNK: NoToken,
	}
	for i, tok := range tokens {
		switch tok {
		case "<|begin_of_text|>":
			v.BOS = int32(i)
		case "<|endoftext|>", "<|end_of_text|>":
			v.EOS = int32(i)
		}
	}
	return v
}

func newBPEFixtureTokenizer(tb testing.TB, pre string) (*Tokenizer, bpeFixture) {
	tb.Helper()
	fx := loadBPEFixture(tb, pre)
	tok, err := New(fx.Tokenizer.ggufVocab(tb, pre))
	if err != nil {
		tb.Fatal(err)
	}
	return tok, fx
}

// llamaVocab reads the Llama-2 vocabulary from the GGUF fixture.
func llamaVocab(tb testing.TB) Vocab {
	tb.Helper()
	f, err := gguf.Open(llamaGGUF)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	v := Vocab{Model: "llama", PAD: NoToken, AddBOS: true}
	if v.Tokens, err = f.Strings("tokenizer.ggml.tokens"); err != nil {
		tb.Fatal(err)
	}
	if v.Scores, err = f.Float32s("tokenizer.ggml.scores"); err != nil {
		tb.Fatal(err)
	}
	if v.Types, err = f.Int32s("tokenizer.ggml.token_type"); err != nil {
		tb.Fatal(err)
	}
	for _, k := range []struct {
		key string
		id  *int32
	}{
		{"tokenizer.ggml.bos_token_id", &v.BOS},
		{"tokenizer.ggml.eos_token_id", &v.EOS},
		{"tokenizer.ggml.unknown_token_id", &v.UNK},
	} {
		x, err := f.Int(k.key)
		if err != nil {
			tb.Fatal(err)
		}
		*k.id = int32(x)
	}
	return v
}

func newLlamaTokenizer(tb testing.TB) *Tokenizer {
	tb.Helper()
	tok, err := New(llamaVocab(tb))
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

func readCorpus(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "corpus.txt"))
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
