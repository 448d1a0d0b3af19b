package tokenizer

import (
	"testing"
	"unicode/utf8"
)

// benchText is the first 10 KB of the corpus (prose, code, numbers, a
// dozen scripts), cut at a character boundary.
func benchText(b *testing.B) string {
	s := readCorpus(b)
	n := 10 << 10
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func BenchmarkEncode(b *testing.B) {
	text := benchText(b)
	run := func(b *testing.B, tok *Tokenizer) {
		b.SetBytes(int64(len(text)))
		b.ReportAllocs()
		n := 0
		for b.Loop() {
			n = len(tok.Encode(text, true))
		}
		b.ReportMetric(float64(n), "tokens")
	}
	for _, pre := range bpePres {
		b.Run("bpe-"+pre, func(b *testing.B) {
			tok, _ := newBPEFixtureTokenizer(b, pre)
			run(b, tok)
		})
	}
	b.Run("spm-llama2", func(b *testing.B) {
		run(b, newLlamaTokenizer(b))
	})
}

func BenchmarkDecoder(b *testing.B) {
	text := benchText(b)
	tok, _ := newBPEFixtureTokenizer(b, "llama-bpe")
	ids := tok.Encode(text, false)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		d := tok.NewDecoder()
		for _, id := range ids {
			d.Next(id)
		}
		d.Flush()
	}
}
