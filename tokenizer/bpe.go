package tokenizer

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// byteRunes is GPT-2's bytes_to_unicode: each byte's stand-in character in
// byte-level vocabularies. Printable Latin-1 bytes stand for themselves; the
// other 68 (controls, space, DEL, NBSP, soft hyphen) map in order to U+0100
// onwards, so ' ' is 'Ġ' (U+0120) and '\n' is 'Ċ' (U+010A).
var byteRunes = func() (t [256]rune) {
	next := rune(256)
	for b := range 256 {
		if ('!' <= b && b <= '~') || (0xA1 <= b && b <= 0xAC) || (0xAE <= b && b <= 0xFF) {
			t[b] = rune(b)
		} else {
			t[b] = next
			next++
		}
	}
	return t
}()

// runeBytes inverts byteRunes: the byte a stand-in character means, or -1.
var runeBytes = func() (t [256 + 68]int16) {
	for i := range t {
		t[i] = -1
	}
	for b, r := range byteRunes {
		t[r] = int16(b)
	}
	return t
}()

// bpe is llama.cpp's byte-level BPE tokenizer (llm_tokenizer_bpe): the
// pre-tokenizer cuts the text into words; each word's bytes start as
// one-character tokens of the byte-level alphabet, and the adjacent pair of
// lowest merge rank is merged until no pair has a rank.
type bpe struct {
	ids     map[string]int32
	merges  map[uint64]bpeMerge // by pairKey(left id, right id)
	byteIDs [256]int32          // each byte's one-character token, or NoToken
	unk     int32
	pre     *preTokenizer
	// ignoreMerges: a word that is itself a token becomes that token
	// without merging (Llama-3's tokenizer.json "ignore_merges": true).
	ignoreMerges bool
}

type bpeMerge struct {
	rank int32 // position in tokenizer.ggml.merges: lower merges first
	id   int32 // the token the pair becomes
}

func pairKey(left, right int32) uint64 { return uint64(uint32(left))<<32 | uint64(uint32(right)) }

func newBPE(t *Tokenizer, merges []string, pre string) ([]string, encoder, error) {
	p, err := newPreTokenizer(pre)
	if err != nil {
		return nil, nil, err
	}
	s := &bpe{
		ids:          t.ids,
		merges:       make(map[uint64]bpeMerge, len(merges)),
		unk:          t.unk,
		pre:          p,
		ignoreMerges: p.ignoreMerges,
	}
	for b, r := range byteRunes {
		id, ok := t.ids[string(r)]
		if !ok {
			id = NoToken
		}
		s.byteIDs[b] = id
	}
	for i, m := range merges {
		// The separator is the first space after the first byte, as in
		// llama.cpp; byte-level tokens hold no raw spaces.
		sp := -1
		if len(m) > 1 {
			sp = strings.IndexByte(m[1:], ' ') + 1
		}
		if sp <= 0 || sp == len(m)-1 {
			return nil, nil, fmt.Errorf("tokenizer: merge %d is %q, want \"left right\"", i, m)
		}
		left, right := m[:sp], m[sp+1:]
		lid, ok1 := t.ids[left]
		rid, ok2 := t.ids[right]
		id, ok3 := t.ids[left+right]
		if !ok1 || !ok2 || !ok3 {
			return nil, nil, fmt.Errorf("tokenizer: merge %d (%q) names a token outside the vocabulary", i, m)
		}
		key := pairKey(lid, rid)
		if _, dup := s.merges[key]; !dup { // the first rank of a repeated merge holds, as in llama.cpp
			s.merges[key] = bpeMerge{rank: int32(i), id: id}
		}
	}

	pieces := make([]string, len(t.tokens))
	for i, tok := range t.tokens {
		if isSpecial(t.types[i]) {
			pieces[i] = tok // stored as plain text, not in the byte-level alphabet
			continue
		}
		pieces[i] = decodeByteLevel(tok)
	}
	return pieces, s, nil
}

// decodeByteLevel maps a token's characters back to the bytes they stand
// for; a character outside the alphabet stands for its own UTF-8.
func decodeByteLevel(tok string) string {
	b := make([]byte, 0, len(tok))
	for _, r := range tok {
		if r >= 0 && int(r) < len(runeBytes) && runeBytes[r] >= 0 {
			b = append(b, byte(runeBytes[r]))
		} else {
			b = utf8.AppendRune(b, r)
		}
	}
	return string(b)
}

type bpeSymbol struct {
	id         int32 // token id, NoToken for a byte outside the vocabulary, deadSymbol once merged away
	prev, next int32
}

const deadSymbol = -2

// bpeBigram is a candidate merge, queued by rankKey; lid and rid are the
// ids the two symbols had when it was queued, so a stale entry is
// recognised on popping.
type bpeBigram struct {
	left, right int32
	lid, rid    int32
	id          int32
}

// bpeScratch holds the buffers that one Encode call reuses across words.
type bpeScratch struct {
	words []string
	chain []string
	syms  []bpeSymbol
	q     mergeQueue[bpeBigram]
	buf   []byte
}

func (s *bpe) encode(dst []int32, text string, _ bool) []int32 {
	var sc bpeScratch
	sc.words = s.pre.split(sc.words[:0], &sc.chain, text)
	for _, w := range sc.words {
		dst = s.encodeWord(dst, w, &sc)
	}
	return dst
}

func (s *bpe) encodeWord(dst []int32, word string, sc *bpeScratch) []int32 {
	if s.ignoreMerges {
		sc.buf = sc.buf[:0]
		for i := 0; i < len(word); i++ {
			sc.buf = utf8.AppendRune(sc.buf, byteRunes[word[i]])
		}
		if id, ok := s.ids[string(sc.buf)]; ok {
			return append(dst, id)
		}
	}
	syms := sc.syms[:0]
	for i := 0; i < len(word); i++ {
		k := int32(i)
		syms = append(syms, bpeSymbol{id: s.byteIDs[word[i]], prev: k - 1, next: k + 1})
	}
	syms[len(syms)-1].next = -1
	sc.syms = syms

	q := &sc.q
	q.reset()
	tryPair := func(left, right int32) {
		if left < 0 || right < 0 {
			return
		}
		lid, rid := syms[left].id, syms[right].id
		if m, ok := s.merges[pairKey(lid, rid)]; ok {
			q.push(rankKey(m.rank, left), bpeBigram{left: left, right: right, lid: lid, rid: rid, id: m.id})
		}
	}
	for i := 1; i < len(syms); i++ {
		tryPair(int32(i-1), int32(i))
	}
	for q.len() > 0 {
		bg := q.pop()
		l, r := &syms[bg.left], &syms[bg.right]
		if l.id != bg.lid || r.id != bg.rid || l.next != bg.right {
			continue // stale: a side was merged since this pair was queued
		}
		l.id = bg.id
		r.id = deadSymbol
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = bg.left
		}
		tryPair(l.prev, bg.left)
		tryPair(bg.left, l.next)
	}
	for i := int32(0); i >= 0; i = syms[i].next {
		switch id := syms[i].id; {
		case id >= 0:
			dst = append(dst, id)
		case s.unk != NoToken:
			dst = append(dst, s.unk)
		}
	}
	return dst
}
