package tokenizer

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// Token types, as GGUF's tokenizer.ggml.token_type stores them (llama.cpp's
// llama_token_type).
const (
	TypeUndefined   = 0
	TypeNormal      = 1
	TypeUnknown     = 2
	TypeControl     = 3
	TypeUserDefined = 4
	TypeUnused      = 5
	TypeByte        = 6
)

// NoToken marks an absent special token id in a Vocab.
const NoToken = -1

// ErrUnsupported is returned (wrapped) by New for a tokenizer model or
// pre-tokenizer that this package does not implement.
var ErrUnsupported = errors.New("unsupported tokenizer")

// Vocab is a tokenizer's description as GGUF stores it. The caller copies
// each field from the key named beside it; absent ids must be NoToken (-1),
// not 0, which is a valid id.
type Vocab struct {
	Model  string    // tokenizer.ggml.model: "llama" or "gpt2"
	Tokens []string  // tokenizer.ggml.tokens
	Scores []float32 // tokenizer.ggml.scores (required for "llama")
	Types  []int32   // tokenizer.ggml.token_type (optional: all normal)
	Merges []string  // tokenizer.ggml.merges, "left right" (for "gpt2")
	Pre    string    // tokenizer.ggml.pre (for "gpt2"; "" means "default")

	BOS int32 // tokenizer.ggml.bos_token_id
	EOS int32 // tokenizer.ggml.eos_token_id
	PAD int32 // tokenizer.ggml.padding_token_id
	UNK int32 // tokenizer.ggml.unknown_token_id

	AddBOS bool // tokenizer.ggml.add_bos_token
	AddEOS bool // tokenizer.ggml.add_eos_token

	// NoSpacePrefix is set when tokenizer.ggml.add_space_prefix is present
	// and false; "llama" models otherwise prepend a space to the text, as
	// SentencePiece's add_dummy_prefix does.
	NoSpacePrefix bool
}

// eogTexts are the texts of end-of-generation tokens other than EOS, as
// llama.cpp recognises them (llama_vocab::impl::load).
var eogTexts = []string{
	"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>",
	"<|flush|>", "<|calls|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
	"<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
}

// Tokenizer encodes text to token ids and decodes ids to text.
type Tokenizer struct {
	model  string
	tokens []string
	types  []int32
	ids    map[string]int32 // token text -> id; the last of duplicates wins, as in llama.cpp

	// pieces holds the bytes each token decodes to.
	pieces []string

	bos, eos, unk  int32
	addBOS, addEOS bool
	eog            []int32
	specials       specialMatcher

	// spacePrefix: "llama" models prepend "▁" to each text fragment that
	// starts the input or follows a special token, and Decode removes it.
	spacePrefix bool

	enc encoder
}

// encoder is the model-specific part of Encode: it appends the ids of one
// fragment of plain text (no special tokens in it) to dst.
type encoder interface {
	encode(dst []int32, text string, afterSpecial bool) []int32
}

// New checks v and builds its tokenizer.
func New(v Vocab) (*Tokenizer, error) {
	n := len(v.Tokens)
	if n == 0 {
		return nil, errors.New("tokenizer: vocabulary has no tokens")
	}
	if n > math.MaxInt32 {
		return nil, fmt.Errorf("tokenizer: %d tokens exceed the int32 id range", n)
	}
	if len(v.Types) != 0 && len(v.Types) != n {
		return nil, fmt.Errorf("tokenizer: %d token types for %d tokens", len(v.Types), n)
	}
	if len(v.Scores) != 0 && len(v.Scores) != n {
		return nil, fmt.Errorf("tokenizer: %d scores for %d tokens", len(v.Scores), n)
	}
	types := v.Types
	if len(types) == 0 {
		types = make([]int32, n)
		for i := range types {
			types[i] = TypeNormal
		}
	}
	for i, ty := range types {
		if ty < TypeUndefined || ty > TypeByte {
			return nil, fmt.Errorf("tokenizer: token %d (%q) has unknown type %d", i, v.Tokens[i], ty)
		}
	}
	for _, s := range []struct {
		name string
		id   int32
	}{{"BOS", v.BOS}, {"EOS", v.EOS}, {"PAD", v.PAD}, {"UNK", v.UNK}} {
		if s.id < NoToken || int(s.id) >= n {
			return nil, fmt.Errorf("tokenizer: %s id %d outside the vocabulary [0, %d) (use %d for none)", s.name, s.id, n, NoToken)
		}
	}
	if v.AddBOS && v.BOS == NoToken {
		return nil, errors.New("tokenizer: add_bos_token is set but there is no BOS token")
	}
	if v.AddEOS && v.EOS == NoToken {
		return nil, errors.New("tokenizer: add_eos_token is set but there is no EOS token")
	}

	t := &Tokenizer{
		model:  v.Model,
		tokens: v.Tokens,
		types:  types,
		ids:    make(map[string]int32, n),
		bos:    v.BOS,
		eos:    v.EOS,
		unk:    v.UNK,
		addBOS: v.AddBOS,
		addEOS: v.AddEOS,
	}
	for i, tok := range v.Tokens {
		t.ids[tok] = int32(i)
	}
	var err error
	switch v.Model {
	case "llama":
		t.spacePrefix = !v.NoSpacePrefix
		t.pieces, t.enc, err = newSPM(t, v.Scores)
	case "gpt2":
		t.pieces, t.enc, err = newBPE(t, v.Merges, v.Pre)
	default:
		return nil, fmt.Errorf("tokenizer: model %q: %w (supported: \"llama\", \"gpt2\")", v.Model, ErrUnsupported)
	}
	if err != nil {
		return nil, err
	}
	t.specials = newSpecialMatcher(v.Tokens, types)
	t.eog = eogTokens(v.Tokens, types, v.EOS)
	return t, nil
}

// isSpecial reports whether tokens of type ty are matched literally in the
// text given to Encode and kept verbatim by Decode: control, user-defined
// and unknown tokens, the ones llama.cpp caches as special.
func isSpecial(ty int32) bool {
	return ty == TypeControl || ty == TypeUserDefined || ty == TypeUnknown
}

func eogTokens(tokens []string, types []int32, eos int32) []int32 {
	var eog []int32
	if eos != NoToken {
		eog = append(eog, eos)
	}
	for i, tok := range tokens {
		if types[i] != TypeNormal && int32(i) != eos && containsString(eogTexts, tok) {
			eog = append(eog, int32(i))
		}
	}
	return eog
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Len returns the number of tokens in the vocabulary.
func (t *Tokenizer) Len() int { return len(t.tokens) }

// Token returns the text of token id as the vocabulary stores it (for
// "gpt2" models, in the byte-to-unicode alphabet: "Ġthe"; for "llama",
// with "▁" for spaces), or "" when id is out of range.
func (t *Tokenizer) Token(id int32) string {
	if id < 0 || int(id) >= len(t.tokens) {
		return ""
	}
	return t.tokens[id]
}

// BOS returns the beginning-of-sequence token, or NoToken.
func (t *Tokenizer) BOS() int32 { return t.bos }

// EOS returns the end-of-sequence token, or NoToken.
func (t *Tokenizer) EOS() int32 { return t.eos }

// IsEOG reports whether id ends generation: EOS, or a non-normal token
// whose text marks the end of a turn or text (<|eot_id|>, <|im_end|>,
// <|endoftext|>, <end_of_turn>, ...).
func (t *Tokenizer) IsEOG(id int32) bool {
	for _, e := range t.eog {
		if e == id {
			return true
		}
	}
	return false
}

// Encode returns the token ids of text. Control, user-defined and unknown
// tokens written literally in text ("<|eot_id|>", "<s>") become those single
// tokens, as llama.cpp's parse_special=true and Hugging Face's added tokens
// do: the longest match at the leftmost position wins. With addSpecial, BOS
// and EOS are added when the vocabulary asks for them (AddBOS, AddEOS).
func (t *Tokenizer) Encode(text string, addSpecial bool) []int32 {
	ids := make([]int32, 0, len(text)/3+2)
	if addSpecial && t.addBOS {
		ids = append(ids, t.bos)
	}
	afterSpecial := true // the start of the text counts as following one
	for len(text) > 0 {
		at, id, size := t.specials.find(text)
		if at > 0 {
			ids = t.enc.encode(ids, text[:at], afterSpecial)
			afterSpecial = false
		}
		if id == NoToken {
			break
		}
		ids = append(ids, id)
		afterSpecial = true
		text = text[at+size:]
	}
	if addSpecial && t.addEOS {
		ids = append(ids, t.eos)
	}
	return ids
}

// Decode returns the text of ids, the inverse of Encode: special tokens are
// written as their text, "llama" models' "▁" become spaces and <0xXX>
// tokens bytes, and the space that Encode prepends to the text (at the start
// and after each special token) is removed. Ids outside the vocabulary are
// skipped. The result may be invalid UTF-8 when ids end inside a character.
// To decode generated tokens as they come, use a Decoder.
func (t *Tokenizer) Decode(ids []int32) string {
	var b strings.Builder
	d := decodeState{t: t, afterSpecial: true}
	for _, id := range ids {
		b.WriteString(d.piece(id))
	}
	return b.String()
}

// decodeState is what decoding one token needs to know of the ones before.
type decodeState struct {
	t            *Tokenizer
	afterSpecial bool
}

// piece returns the text of id in its context and updates the context.
func (d *decodeState) piece(id int32) string {
	t := d.t
	if id < 0 || int(id) >= len(t.pieces) {
		return ""
	}
	p := t.pieces[id]
	ty := t.types[id]
	if t.spacePrefix && d.afterSpecial && !isSpecial(ty) && ty != TypeByte && strings.HasPrefix(p, " ") {
		p = p[1:]
	}
	d.afterSpecial = isSpecial(ty)
	return p
}
