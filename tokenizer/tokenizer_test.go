package tokenizer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestPreTokenizersMatchHF compares the scanners with Hugging Face's
// Oniguruma regexes (chained Split pre-tokenizers) on the fixture strings:
// hand-picked tricky ones and 200 random mixes of every character class
// the patterns tell apart.
func TestPreTokenizersMatchHF(t *testing.T) {
	var fx splitFixture
	readGzipJSON(t, "splits.json.gz", &fx)
	if len(fx.Chains) == 0 {
		t.Fatal("splits.json.gz has no chains")
	}
	for _, name := range sortedKeys(fx.Chains) {
		chain := fx.Chains[name]
		t.Run(name, func(t *testing.T) {
			p, err := newPreTokenizer(name)
			if err != nil {
				t.Fatal(err)
			}
			var scratch []string
			bad := 0
			for i, s := range fx.Strings {
				got := p.split(nil, &scratch, s)
				if want := chain.Pieces[i]; !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
					if bad++; bad <= 10 {
						t.Errorf("%q:\n got %q\nwant %q", s, got, want)
					}
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d strings split differently", bad, len(fx.Strings))
			}
		})
	}
}

// TestBPEMatchesHF checks the ids of byte-level BPE vocabularies trained by
// Hugging Face tokenizers, converted as a GGUF file stores them, against
// the ids tokenizers gives for the same strings, and the decoded text.
func TestBPEMatchesHF(t *testing.T) {
	corpus := readCorpus(t)
	for _, pre := range bpePres {
		t.Run(pre, func(t *testing.T) {
			tok, fx := newBPEFixtureTokenizer(t, pre)
			if len(fx.Cases) < 40 {
				t.Fatalf("only %d cases in the fixture", len(fx.Cases))
			}
			for _, c := range fx.Cases {
				got := tok.Encode(c.Text, false)
				if !slices.Equal(got, c.IDs) && !(len(got) == 0 && len(c.IDs) == 0) {
					t.Errorf("Encode(%q):\n got %v\nwant %v", c.Text, got, c.IDs)
				}
				if got := tok.Decode(c.IDs); got != c.Decoded {
					t.Errorf("Decode(%v) = %q, want %q", c.IDs, got, c.Decoded)
				}
				if got := tok.Decode(tok.Encode(c.Text, false)); got != c.Text {
					t.Errorf("Decode(Encode(%q)) = %q", c.Text, got)
				}
			}
			got := tok.Encode(corpus, false)
			if len(fx.CorpusIDs) < 1000 {
				t.Fatalf("fixture has only %d corpus ids", len(fx.CorpusIDs))
			}
			if i := firstDifference(got, fx.CorpusIDs); i >= 0 {
				t.Errorf("corpus: ids differ first at %d of %d/%d: got %v, want %v",
					i, len(got), len(fx.CorpusIDs), window(got, i), window(fx.CorpusIDs, i))
			}
			if got := tok.Decode(got); got != corpus {
				t.Error("corpus: Decode(Encode(corpus)) differs from corpus")
			}
		})
	}
}

// TestSPMMatchesReferences checks the SentencePiece algorithm on the
// Llama-2 vocabulary against two references: Hugging Face's BPE built as
// transformers' LlamaConverter builds it (which also parses special tokens
// in the text), and SentencePiece itself (which does not: strings with
// special tokens are compared with Hugging Face only).
func TestSPMMatchesReferences(t *testing.T) {
	tok := newLlamaTokenizer(t)
	var fx spmFixture
	readGzipJSON(t, "spm-llama2.json.gz", &fx)
	if len(fx.HFCases) < 40 || len(fx.HFCorpusIDs) < 1000 {
		t.Fatalf("fixture too small: %d cases, %d corpus ids", len(fx.HFCases), len(fx.HFCorpusIDs))
	}
	hasSpecial := func(s string) bool {
		return strings.Contains(s, "<s>") || strings.Contains(s, "</s>") || strings.Contains(s, "<unk>")
	}
	for _, c := range fx.HFCases {
		got := tok.Encode(c.Text, false)
		if !slices.Equal(got, c.IDs) && !(len(got) == 0 && len(c.IDs) == 0) {
			t.Errorf("Encode(%q), Hugging Face:\n got %v\nwant %v", c.Text, got, c.IDs)
		}
		// Hugging Face's Strip decoder removes one leading space of the
		// whole text, Decode also one after each special token: they agree
		// on text without special tokens.
		if !hasSpecial(c.Text) {
			if got := tok.Decode(c.IDs); got != c.Decoded {
				t.Errorf("Decode(%v) = %q, Hugging Face %q", c.IDs, got, c.Decoded)
			}
		}
		// "▁" in the input decodes as a space: the one normalisation that
		// Decode cannot undo.
		if !strings.Contains(c.Text, spaceMark) {
			if got := tok.Decode(tok.Encode(c.Text, false)); got != c.Text {
				t.Errorf("Decode(Encode(%q)) = %q", c.Text, got)
			}
		}
	}
	if len(fx.SPCases) == 0 {
		t.Error("fixture has no SentencePiece cases")
	}
	for _, c := range fx.SPCases {
		if hasSpecial(c.Text) {
			continue
		}
		if got := tok.Encode(c.Text, false); !slices.Equal(got, c.IDs) && !(len(got) == 0 && len(c.IDs) == 0) {
			t.Errorf("Encode(%q), SentencePiece:\n got %v\nwant %v", c.Text, got, c.IDs)
		}
	}
	corpus := readCorpus(t)
	got := tok.Encode(corpus, false)
	for _, ref := range []struct {
		name string
		ids  []int32
	}{{"Hugging Face", fx.HFCorpusIDs}, {"SentencePiece", fx.SPCorpusIDs}} {
		if i := firstDifference(got, ref.ids); i >= 0 {
			t.Errorf("corpus vs %s: ids differ first at %d: got %v, want %v", ref.name, i, window(got, i), window(ref.ids, i))
		}
	}
	if got := tok.Decode(got); got != corpus {
		t.Error("corpus: Decode(Encode(corpus)) differs from corpus")
	}
}

func firstDifference(a, b []int32) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

func window(ids []int32, i int) []int32 {
	return ids[max(0, i-3):min(len(ids), i+5)]
}

// tinySPM is a hand-made SentencePiece vocabulary: three specials, the 256
// byte tokens, and a few pieces whose scores make the merge order visible.
func tinySPM(tb testing.TB) (*Tokenizer, map[string]int32) {
	tb.Helper()
	v := Vocab{Model: "llama", BOS: 1, EOS: 2, UNK: 0, PAD: NoToken, AddBOS: true}
	add := func(tok string, score float32, ty int32) {
		v.Tokens = append(v.Tokens, tok)
		v.Scores = append(v.Scores, score)
		v.Types = append(v.Types, ty)
	}
	add("<unk>", 0, TypeUnknown)
	add("<s>", 0, TypeControl)
	add("</s>", 0, TypeControl)
	for b := range 256 {
		add(fmt.Sprintf("<0x%02X>", b), 0, TypeByte)
	}
	for _, p := range []struct {
		tok   string
		score float32
	}{
		{"▁", -1}, {"a", -2}, {"b", -3}, {"c", -4}, {"é", -5},
		{"ab", -10}, {"bc", -6}, {"▁a", -7}, {"▁ab", -12}, {"abc", -8},
	} {
		add(p.tok, p.score, TypeNormal)
	}
	tok, err := New(v)
	if err != nil {
		tb.Fatal(err)
	}
	ids := make(map[string]int32)
	for i, s := range v.Tokens {
		ids[s] = int32(i)
	}
	return tok, ids
}

func TestSPMTiny(t *testing.T) {
	tok, id := tinySPM(t)
	b := func(x byte) int32 { return id[fmt.Sprintf("<0x%02X>", x)] }
	for _, c := range []struct {
		text       string
		addSpecial bool
		want       []int32
	}{
		{"", false, nil},
		{"", true, []int32{1}},
		// Highest score first: "bc" (-6), then "▁a" (-7), which takes the
		// "a" that "abc" (-8) needed; "▁abc" is no token.
		{"abc", false, []int32{id["▁a"], id["bc"]}},
		{"abc", true, []int32{1, id["▁a"], id["bc"]}},
		// "▁a" (-7) before "ab" (-10), then "▁a"+"b" is "▁ab".
		{"ab", false, []int32{id["▁ab"]}},
		{" c", false, []int32{id["▁"], id["▁"], id["c"]}},
		// € is not in the vocabulary: its three bytes.
		{"€é", false, []int32{id["▁"], b(0xE2), b(0x82), b(0xAC), id["é"]}},
		// Special tokens in the text; a space is prepended after each.
		{"a<s>c</s>", false, []int32{id["▁a"], 1, id["▁"], id["c"], 2}},
		{"<unk>", false, []int32{0}},
		// An invalid byte falls back to its byte token.
		{"a\xff", false, []int32{id["▁a"], b(0xFF)}},
	} {
		got := tok.Encode(c.text, c.addSpecial)
		if !slices.Equal(got, c.want) && !(len(got) == 0 && len(c.want) == 0) {
			t.Errorf("Encode(%q, %v) = %v, want %v", c.text, c.addSpecial, got, c.want)
		}
	}
	for _, c := range []struct {
		ids  []int32
		want string
	}{
		{[]int32{1, id["▁a"], id["bc"]}, "<s>abc"},
		{[]int32{id["▁a"], id["▁a"]}, "a a"},
		{[]int32{id["▁"], id["▁a"]}, " a"},
		{[]int32{id["a"], 2, id["▁a"]}, "a</s>a"},
		{[]int32{b(0xE2), b(0x82), b(0xAC)}, "€"},
		{[]int32{-1, 1 << 30, id["a"]}, "a"}, // ids outside the vocabulary are skipped
	} {
		if got := tok.Decode(c.ids); got != c.want {
			t.Errorf("Decode(%v) = %q, want %q", c.ids, got, c.want)
		}
	}
}

func TestDecoderStreamsCompleteUTF8(t *testing.T) {
	tok, id := tinySPM(t)
	b := func(x byte) int32 { return id[fmt.Sprintf("<0x%02X>", x)] }
	d := tok.NewDecoder()
	steps := []struct {
		id   int32
		want string
	}{
		{id["▁a"], " a"}, // a continuation keeps its leading space
		{1, "<s>"},
		{id["▁a"], "a"}, // but not the one after a special token

		{b(0xE2), ""},
		{b(0x82), ""},
		{b(0xAC), "€"},
		{b(0xF0), ""}, // 👍 is F0 9F 91 8D
		{b(0x9F), ""},
		{b(0x91), ""},
		{b(0x8D), "👍"},
		{b(0xFF), "\xff"},    // never valid: not held back
		{b(0xC3), ""},        // é cut short by...
		{id["▁a"], "\xc3 a"}, // ...a space: the lone lead byte is let go
		{b(0xE2), ""},
	}
	for i, s := range steps {
		if got := d.Next(s.id); got != s.want {
			t.Fatalf("step %d: Next(%d) = %q, want %q", i, s.id, got, s.want)
		}
	}
	if got := d.Flush(); got != "\xe2" {
		t.Errorf("Flush() = %q, want the held-back byte", got)
	}
	if got := d.Flush(); got != "" {
		t.Errorf("second Flush() = %q, want empty", got)
	}
}

// TestDecoderMatchesDecode streams every fixture case through a Decoder:
// the chunks are valid UTF-8 and add up to Decode's text.
func TestDecoderMatchesDecode(t *testing.T) {
	for _, pre := range bpePres {
		tok, fx := newBPEFixtureTokenizer(t, pre)
		splits := 0
		for _, c := range fx.Cases {
			d := tok.NewDecoder()
			var sb strings.Builder
			for _, id := range c.IDs {
				chunk := d.Next(id)
				if !utf8.ValidString(chunk) {
					t.Errorf("%s: %q: chunk %q is not valid UTF-8", pre, c.Text, chunk)
				}
				if !utf8.ValidString(tok.pieces[id]) {
					splits++
				}
				sb.WriteString(chunk)
			}
			sb.WriteString(d.Flush())
			if got, want := sb.String(), tok.Decode(c.IDs); got != want {
				t.Errorf("%s: streamed %q, Decode %q", pre, got, want)
			}
		}
		if splits == 0 {
			t.Errorf("%s: no token splits a character; the test shows nothing", pre)
		}
	}
}

func TestCompleteUTF8(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
	}{
		{"", 0},
		{"abc", 3},
		{"a\xe2", 1},
		{"a\xe2\x82", 1},
		{"a\xe2\x82\xac", 4},
		{"\xf0\x9f\x91", 0},
		{"\xf0\x9f\x91\x8d", 4},
		{"\x82\xac", 2},     // stray continuation bytes: never valid
		{"a\xc0", 2},        // C0 can start no valid sequence
		{"a\xed\xa0", 3},    // a surrogate half: invalid, not held
		{"\xe2\x82\xe2", 2}, // a broken sequence, then a new lead byte
	} {
		if got := completeUTF8([]byte(c.in)); got != c.want {
			t.Errorf("completeUTF8(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestEncodeAddsSpecialTokens(t *testing.T) {
	tok, fx := newBPEFixtureTokenizer(t, "llama-bpe")
	v := fx.Tokenizer.ggufVocab(t, "llama-bpe")
	v.AddBOS, v.AddEOS = true, true
	tok2, err := New(v)
	if err != nil {
		t.Fatal(err)
	}
	plain := tok.Encode("Hello", false)
	got := tok2.Encode("Hello", true)
	want := append(append([]int32{v.BOS}, plain...), v.EOS)
	if !slices.Equal(got, want) {
		t.Errorf("Encode with specials = %v, want %v", got, want)
	}
	if got := tok2.Encode("Hello", false); !slices.Equal(got, plain) {
		t.Errorf("Encode without specials = %v, want %v", got, plain)
	}
}

func TestIsEOG(t *testing.T) {
	tok, fx := newBPEFixtureTokenizer(t, "llama-bpe")
	v := fx.Tokenizer.ggufVocab(t, "llama-bpe")
	idOf := func(s string) int32 {
		i := slices.Index(v.Tokens, s)
		if i < 0 {
			t.Fatalf("no token %q", s)
		}
		return int32(i)
	}
	for _, c := range []struct {
		tok  string
		want bool
	}{
		{"<|end_of_text|>", true}, // EOS
		{"<|eot_id|>", true},
		{"<|begin_of_text|>", false},
		{"<|start_header_id|>", false},
		{"<tool>", false},
		{"a", false},
	} {
		if got := tok.IsEOG(idOf(c.tok)); got != c.want {
			t.Errorf("IsEOG(%q) = %v, want %v", c.tok, got, c.want)
		}
	}
	if tok.IsEOG(-1) || tok.IsEOG(int32(tok.Len())) {
		t.Error("IsEOG true outside the vocabulary")
	}
	if got := tok.Token(idOf("<|eot_id|>")); got != "<|eot_id|>" {
		t.Errorf("Token = %q", got)
	}
	if got := tok.Token(int32(tok.Len())); got != "" {
		t.Errorf("Token(out of range) = %q, want empty", got)
	}
	if tok.EOS() != idOf("<|end_of_text|>") || tok.BOS() != idOf("<|begin_of_text|>") {
		t.Errorf("BOS, EOS = %d, %d", tok.BOS(), tok.EOS())
	}
}

func TestNewRejectsBadVocab(t *testing.T) {
	base := func() Vocab {
		return Vocab{
			Model:  "gpt2",
			Pre:    "gpt-2",
			Tokens: []string{"a", "b", "ab", "<|eot|>"},
			Types:  []int32{1, 1, 1, 3},
			Merges: []string{"a b"},
			BOS:    NoToken, EOS: 3, PAD: NoToken, UNK: NoToken,
		}
	}
	if _, err := New(base()); err != nil {
		t.Fatalf("base vocabulary: %v", err)
	}
	spmBase := func() Vocab {
		v := Vocab{Model: "llama", BOS: NoToken, EOS: NoToken, PAD: NoToken, UNK: 0}
		v.Tokens = []string{"<unk>", "▁", "<0x41>"}
		v.Scores = []float32{0, -1, 0}
		v.Types = []int32{2, 1, 6}
		return v
	}
	if _, err := New(spmBase()); err != nil {
		t.Fatalf("SentencePiece base vocabulary: %v", err)
	}
	for _, c := range []struct {
		name        string
		edit        func(*Vocab)
		want        string
		unsupported bool
	}{
		{"no tokens", func(v *Vocab) { v.Tokens, v.Types, v.EOS = nil, nil, NoToken }, "no tokens", false},
		{"unknown model", func(v *Vocab) { v.Model = "bert" }, `"llama", "gpt2"`, true},
		{"unknown pre", func(v *Vocab) { v.Pre = "klingon" }, `"klingon"`, true},
		{"types length", func(v *Vocab) { v.Types = v.Types[:2] }, "2 token types for 4 tokens", false},
		{"scores length", func(v *Vocab) { v.Scores = []float32{1} }, "1 scores for 4 tokens", false},
		{"bad type", func(v *Vocab) { v.Types[1] = 9 }, "unknown type 9", false},
		{"EOS range", func(v *Vocab) { v.EOS = 4 }, "EOS id 4", false},
		{"BOS negative", func(v *Vocab) { v.BOS = -2 }, "BOS id -2", false},
		{"UNK range", func(v *Vocab) { v.UNK = 100 }, "UNK id 100", false},
		{"add BOS without BOS", func(v *Vocab) { v.AddBOS = true }, "add_bos_token", false},
		{"add EOS without EOS", func(v *Vocab) { v.EOS, v.AddEOS = NoToken, true }, "add_eos_token", false},
		{"merge without space", func(v *Vocab) { v.Merges = []string{"ab"} }, `merge 0 is "ab"`, false},
		{"merge with empty side", func(v *Vocab) { v.Merges = []string{"a "} }, `merge 0 is "a "`, false},
		{"merge outside vocabulary", func(v *Vocab) { v.Merges = []string{"a b", "b a"} }, `merge 1 ("b a")`, false},
	} {
		v := base()
		c.edit(&v)
		_, err := New(v)
		if err == nil {
			t.Errorf("%s: New succeeded", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "tokenizer: ") {
			t.Errorf("%s: error %q, want it to mention %q", c.name, err, c.want)
		}
		if got := errors.Is(err, ErrUnsupported); got != c.unsupported {
			t.Errorf("%s: errors.Is(err, ErrUnsupported) = %v", c.name, got)
		}
	}
	for _, c := range []struct {
		name string
		edit func(*Vocab)
		want string
	}{
		{"no scores", func(v *Vocab) { v.Scores = nil }, "needs a score per token"},
		{"bad byte token", func(v *Vocab) { v.Tokens[2] = "<0xZZ>" }, `"<0xZZ>", want <0xXX>`},
		{"no byte fallback", func(v *Vocab) { v.UNK = NoToken }, "no token <0x00>"},
	} {
		v := spmBase()
		c.edit(&v)
		if _, err := New(v); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to mention %q", c.name, err, c.want)
		}
	}
}

// TestEmptyPre checks that an absent tokenizer.ggml.pre means llama.cpp's
// "default" chain rather than an error.
func TestEmptyPre(t *testing.T) {
	_, fx := newBPEFixtureTokenizer(t, "gpt-2")
	v := fx.Tokenizer.ggufVocab(t, "")
	tok, err := New(v)
	if err != nil {
		t.Fatal(err)
	}
	const s = "don't stop 12345!"
	if got := tok.Decode(tok.Encode(s, false)); got != s {
		t.Errorf("round trip %q", got)
	}
}

// wholeTextSPM returns a copy of tok that merges each fragment as one
// sequence, as llama.cpp does, instead of word by word.
func wholeTextSPM(tb testing.TB, tok *Tokenizer) *Tokenizer {
	tb.Helper()
	s, ok := tok.enc.(*spm)
	if !ok || !s.splitWords {
		tb.Fatal("tokenizer does not merge word by word")
	}
	whole := *s
	whole.splitWords = false
	t2 := *tok
	t2.enc = &whole
	return &t2
}

// TestSPMWordSplitIsExact checks that merging word by word gives the ids
// of merging the whole text at once.
func TestSPMWordSplitIsExact(t *testing.T) {
	tok := newLlamaTokenizer(t)
	whole := wholeTextSPM(t, tok)
	var fx splitFixture
	readGzipJSON(t, "splits.json.gz", &fx)
	for _, s := range append(fx.Strings, readCorpus(t)) {
		if got, want := tok.Encode(s, false), whole.Encode(s, false); !slices.Equal(got, want) {
			t.Errorf("%.40q: word by word %v, whole %v", s, got, want)
		}
	}
}

// TestNoSpacePrefix checks tokenizer.ggml.add_space_prefix = false: no "▁"
// is prepended, so none is removed.
func TestNoSpacePrefix(t *testing.T) {
	v := Vocab{
		Model:  "llama",
		Tokens: []string{"<unk>", "<s>", "▁", "a", "▁a"},
		Scores: []float32{0, 0, -1, -2, -3},
		Types:  []int32{2, 3, 1, 1, 1},
		BOS:    1, EOS: NoToken, UNK: 0, PAD: NoToken,
		NoSpacePrefix: true,
	}
	tok, err := New(v)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		text string
		want []int32
	}{
		{"a", []int32{3}},
		{" a", []int32{4}},
		{"<s>a a", []int32{1, 3, 4}},
	} {
		ids := tok.Encode(c.text, false)
		if !slices.Equal(ids, c.want) {
			t.Errorf("Encode(%q) = %v, want %v", c.text, ids, c.want)
		}
		if got := tok.Decode(ids); got != c.text {
			t.Errorf("Decode(%v) = %q, want %q", ids, got, c.text)
		}
	}
}
