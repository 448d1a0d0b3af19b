package tokenizer

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// spaceMark is SentencePiece's escaped space, U+2581 "▁".
const spaceMark = "\u2581"

// spm is llama.cpp's SentencePiece BPE tokenizer (llm_tokenizer_spm): the
// text, with spaces escaped to "▁", starts as one symbol per character, and
// the adjacent pair whose concatenation is the vocabulary token of highest
// score is merged until no pair is a token. Symbols left that are not
// tokens fall back to their bytes' <0xXX> tokens.
type spm struct {
	ids         map[string]int32
	scores      []float32
	byteIDs     [256]int32 // <0xXX> token of each byte, or the UNK token
	spacePrefix bool
	// splitWords: no token holds "▁" after another character (true of
	// Llama's vocabulary), so the text can be merged word by word.
	splitWords bool
}

func newSPM(t *Tokenizer, scores []float32) ([]string, encoder, error) {
	n := len(t.tokens)
	if len(scores) != n {
		return nil, nil, fmt.Errorf("tokenizer: model \"llama\" needs a score per token, have %d for %d tokens", len(scores), n)
	}
	s := &spm{ids: t.ids, scores: scores, spacePrefix: t.spacePrefix}
	for i := range s.byteIDs {
		s.byteIDs[i] = NoToken
	}
	s.splitWords = true
	pieces := make([]string, n)
	for i, tok := range t.tokens {
		if s.splitWords && spansWords(tok) {
			s.splitWords = false
		}
		switch ty := t.types[i]; {
		case ty == TypeByte:
			b, ok := parseByteToken(tok)
			if !ok {
				return nil, nil, fmt.Errorf("tokenizer: byte token %d is %q, want <0xXX>", i, tok)
			}
			s.byteIDs[b] = int32(i)
			pieces[i] = string([]byte{b})
		case isSpecial(ty):
			pieces[i] = tok
		default:
			pieces[i] = strings.ReplaceAll(tok, spaceMark, " ")
		}
	}
	for b, id := range s.byteIDs {
		if id != NoToken {
			continue
		}
		if t.unk == NoToken {
			return nil, nil, fmt.Errorf("tokenizer: no token <0x%02X> for byte fallback and no UNK token", b)
		}
		s.byteIDs[b] = t.unk
	}
	return pieces, s, nil
}

// parseByteToken parses "<0xXX>" (either case of hex digit).
func parseByteToken(tok string) (byte, bool) {
	if len(tok) != 6 || tok[:3] != "<0x" || tok[5] != '>' {
		return 0, false
	}
	hi, ok1 := hexDigit(tok[3])
	lo, ok2 := hexDigit(tok[4])
	return hi<<4 | lo, ok1 && ok2
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// spmSymbol is a run of the normalized text; a symbol merged into its left
// neighbour has start == end.
type spmSymbol struct {
	start, end int32
	prev, next int32 // neighbours' indices, -1 at the ends
}

// spmBigram is a candidate merge of symbols left and right, queued by
// scoreKey; size is their joint length when queued, which tells a stale
// entry (either side has grown or vanished since) from a live one.
type spmBigram struct {
	left, right int32
	size        int32
}

func (s *spm) encode(dst []int32, text string, afterSpecial bool) []int32 {
	// Normalize as llama.cpp does: a leading space where SentencePiece's
	// add_dummy_prefix would put one, then every ' ' escaped to "▁".
	var b strings.Builder
	b.Grow(len(text) + 3 + 2*strings.Count(text, " "))
	if s.spacePrefix && afterSpecial {
		b.WriteString(spaceMark)
	}
	for i := 0; i < len(text); {
		j := strings.IndexByte(text[i:], ' ')
		if j < 0 {
			b.WriteString(text[i:])
			break
		}
		b.WriteString(text[i : i+j])
		b.WriteString(spaceMark)
		i += j + 1
	}
	norm := b.String()

	var sc spmScratch
	if !s.splitWords {
		return s.encodeSegment(dst, norm, &sc)
	}
	// Cut before each "▁" that follows another character: no token spans
	// such a cut, so no merge does, and each piece merges alone to the same
	// result with a small queue.
	seg := 0
	for i := 1; i < len(norm); i++ {
		if strings.HasPrefix(norm[i:], spaceMark) && !strings.HasSuffix(norm[:i], spaceMark) {
			dst = s.encodeSegment(dst, norm[seg:i], &sc)
			seg = i
			i += len(spaceMark) - 1
		}
	}
	return s.encodeSegment(dst, norm[seg:], &sc)
}

// spmScratch holds the buffers that one Encode call reuses across segments.
type spmScratch struct {
	syms []spmSymbol
	q    mergeQueue[spmBigram]
}

// encodeSegment appends the ids of a normalized text.
func (s *spm) encodeSegment(dst []int32, norm string, sc *spmScratch) []int32 {
	if norm == "" {
		return dst
	}
	// One symbol per character; an invalid byte is a character of its own.
	syms := sc.syms[:0]
	for i := 0; i < len(norm); {
		_, w := utf8.DecodeRuneInString(norm[i:])
		k := int32(len(syms))
		syms = append(syms, spmSymbol{start: int32(i), end: int32(i + w), prev: k - 1, next: k + 1})
		i += w
	}
	syms[len(syms)-1].next = -1
	sc.syms = syms

	q := &sc.q
	q.reset()
	tryPair := func(left, right int32) {
		if left < 0 || right < 0 {
			return
		}
		l, r := syms[left], syms[right]
		id, ok := s.ids[norm[l.start:r.end]]
		if !ok {
			return
		}
		q.push(scoreKey(s.scores[id], left), spmBigram{left: left, right: right, size: r.end - l.start})
	}
	for i := 1; i < len(syms); i++ {
		tryPair(int32(i-1), int32(i))
	}
	for q.len() > 0 {
		bg := q.pop()
		l, r := &syms[bg.left], &syms[bg.right]
		if l.start == l.end || r.start == r.end || (l.end-l.start)+(r.end-r.start) != bg.size {
			continue // stale: a side was merged since this pair was queued
		}
		l.end = r.end
		r.end = r.start
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = bg.left
		}
		tryPair(l.prev, bg.left)
		tryPair(bg.left, l.next)
	}

	for i := int32(0); i >= 0; i = syms[i].next {
		piece := norm[syms[i].start:syms[i].end]
		if id, ok := s.ids[piece]; ok {
			dst = append(dst, id)
			continue
		}
		// Merges only make tokens, so this is one character outside the
		// vocabulary: byte fallback.
		for j := 0; j < len(piece); j++ {
			dst = append(dst, s.byteIDs[piece[j]])
		}
	}
	return dst
}

// spansWords reports whether tok holds a "▁" after another character, so
// that a merge could join the end of a word to the space after it.
func spansWords(tok string) bool {
	for i := 1; i < len(tok); i++ {
		if strings.HasPrefix(tok[i:], spaceMark) && !strings.HasSuffix(tok[:i], spaceMark) {
			return true
		}
	}
	return false
}
