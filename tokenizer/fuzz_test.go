package tokenizer

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// fuzzSeeds are the fixture strings plus inputs that no valid text has.
func fuzzSeeds(f *testing.F) {
	var fx splitFixture
	readGzipJSON(f, "splits.json.gz", &fx)
	for _, s := range fx.Strings {
		f.Add(s)
	}
	for _, s := range []string{"\xff", "a\xe2\x82", "\xc3\x28", "<|eot_id|", "<|eot_id|><|eot_id|>", "<s></s><unk>", "'S'LL'", "\r\n\r\n  \t", "▁▁"} {
		f.Add(s)
	}
}

// FuzzEncode checks that any string, valid UTF-8 or not, encodes without
// panicking to ids in the vocabulary, and decodes back to itself through
// Decode and through a Decoder. The byte-level BPE round trip is exact;
// SentencePiece's is exact unless the text holds "▁", which decodes as a
// space.
func FuzzEncode(f *testing.F) {
	fuzzSeeds(f)
	var toks []*Tokenizer
	for _, pre := range bpePres {
		tok, _ := newBPEFixtureTokenizer(f, pre)
		toks = append(toks, tok)
	}
	_, fx := newBPEFixtureTokenizer(f, "gpt-2")
	def, err := New(fx.Tokenizer.ggufVocab(f, "default"))
	if err != nil {
		f.Fatal(err)
	}
	toks = append(toks, def)
	tiny, _ := tinySPM(f)
	spms := []*Tokenizer{tiny}
	var llama, llamaWhole *Tokenizer
	if _, err := os.Stat(llamaGGUF); err == nil {
		llama = newLlamaTokenizer(f)
		llamaWhole = wholeTextSPM(f, llama)
		spms = append(spms, llama)
	}

	check := func(t *testing.T, tok *Tokenizer, s string, exact bool) {
		ids := tok.Encode(s, true)
		for _, id := range ids {
			if id < 0 || int(id) >= tok.Len() {
				t.Fatalf("%s: Encode(%q) gave id %d outside [0, %d)", tok.model, s, id, tok.Len())
			}
		}
		ids = tok.Encode(s, false)
		got := tok.Decode(ids)
		if exact && got != s {
			t.Fatalf("%s: Decode(Encode(%q)) = %q (ids %v)", tok.model, s, got, ids)
		}
		// A Decoder keeps the leading space that Decode drops, unless the
		// sequence starts with a special token.
		d := tok.NewDecoder()
		var sb strings.Builder
		want := got
		if tok.bos != NoToken {
			want = tok.Decode(append([]int32{tok.bos}, ids...))
			sb.WriteString(d.Next(tok.bos))
		}
		for _, id := range ids {
			sb.WriteString(d.Next(id))
		}
		sb.WriteString(d.Flush())
		if sb.String() != want {
			t.Fatalf("%s: Decoder gave %q, Decode %q", tok.model, sb.String(), want)
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, tok := range toks {
			check(t, tok, s, true)
		}
		for _, tok := range spms {
			check(t, tok, s, !strings.Contains(s, spaceMark))
		}
		if llama != nil {
			if got, want := llama.Encode(s, false), llamaWhole.Encode(s, false); !slices.Equal(got, want) {
				t.Fatalf("Encode(%q): word by word %v, whole text %v", s, got, want)
			}
		}
	})
}

// FuzzPreTokenize checks that every pre-tokenizer cuts any string into
// non-empty pieces that add up to it.
func FuzzPreTokenize(f *testing.F) {
	fuzzSeeds(f)
	var pres []*preTokenizer
	for _, name := range []string{"default", "gpt-2", "llama-bpe", "qwen2", "smollm"} {
		p, err := newPreTokenizer(name)
		if err != nil {
			f.Fatal(err)
		}
		pres = append(pres, p)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var scratch []string
		for _, p := range pres {
			pieces := p.split(nil, &scratch, s)
			for _, piece := range pieces {
				if piece == "" {
					t.Fatalf("%s: empty piece in %q", p.name, pieces)
				}
			}
			if got := strings.Join(pieces, ""); got != s {
				t.Fatalf("%s: pieces %q of %q join to %q", p.name, pieces, s, got)
			}
		}
	})
}
