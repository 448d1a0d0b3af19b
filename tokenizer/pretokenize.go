package tokenizer

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// The pre-tokenizers below are hand-written scanners for the regexes that
// byte-level BPE models split text with before merging. Go's regexp has no
// lookahead, and these patterns need one (\s+(?!\S)); a scanner is also
// several times faster. Each matcher returns the length of the match that
// the regex, with its leftmost-first alternation and backtracking, finds at
// a position; the tests compare them with Hugging Face's Oniguruma regexes
// on 250 strings (testdata/splits.json.gz).
//
// \p{L}, \p{N} and \s are Go's unicode.IsLetter, IsNumber and IsSpace (the
// White_Space property, as Oniguruma's \s). A byte that is not valid UTF-8
// counts as a character of its own that is none of these.

// preTokenizer splits text into the words that BPE merges within.
type preTokenizer struct {
	name string
	// stages run in sequence, each cutting every piece the previous one
	// produced (llama.cpp's unicode_regex_split with several regexes).
	stages       []matchFunc
	ignoreMerges bool
}

// matchFunc returns the length in bytes of the match at s[i:], or 0 for
// none; text between matches becomes a piece of its own.
type matchFunc func(s string, i int) int

// newPreTokenizer returns the pre-tokenizer that llama.cpp's
// llm_tokenizer_bpe uses for the tokenizer.ggml.pre value name.
func newPreTokenizer(name string) (*preTokenizer, error) {
	p := &preTokenizer{name: name}
	switch name {
	case "", "default":
		// LLAMA_VOCAB_PRE_TYPE_DEFAULT: [\p{P}\$\+<=>\^~\|]+, then GPT-2's
		// regex, then \p{N}+, then [0-9][0-9][0-9].
		p.stages = []matchFunc{matchPunctRun, matchGPT2, matchNumberRun, matchDigitTriple}
	case "gpt-2", "phi-2", "mpt", "olmo", "jais", "trillion", "exaone4", "gigachat", "mellum":
		p.stages = []matchFunc{matchGPT2}
	case "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2":
		p.stages = []matchFunc{matchLlama3}
		p.ignoreMerges = true
	case "dbrx", "smaug-bpe":
		p.stages = []matchFunc{matchLlama3}
	case "qwen2", "deepseek-r1-qwen", "megrez", "stablelm2":
		p.stages = []matchFunc{matchQwen2}
	case "smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", "mellum2":
		// \p{N} (each digit alone), then GPT-2's regex.
		p.stages = []matchFunc{matchNumber, matchGPT2}
	default:
		return nil, fmt.Errorf("tokenizer: pre-tokenizer %q: %w", name, ErrUnsupported)
	}
	return p, nil
}

// split appends the pieces of text to dst; scratch is reused between
// stages.
func (p *preTokenizer) split(dst []string, scratch *[]string, text string) []string {
	if text == "" {
		return dst
	}
	if len(p.stages) == 1 {
		return splitMatches(dst, text, p.stages[0])
	}
	cur := append((*scratch)[:0], text)
	for k, match := range p.stages {
		if k == len(p.stages)-1 {
			for _, piece := range cur {
				dst = splitMatches(dst, piece, match)
			}
			break
		}
		// The pieces are appended after the current ones, then moved down.
		n := len(cur)
		for _, piece := range cur[:n] {
			cur = splitMatches(cur, piece, match)
		}
		cur = append(cur[:0], cur[n:]...)
	}
	*scratch = cur
	return dst
}

// splitMatches appends to dst the matches of match in s and the runs of text
// between them, in order.
func splitMatches(dst []string, s string, match matchFunc) []string {
	gap := 0
	for i := 0; i < len(s); {
		if n := match(s, i); n > 0 {
			if gap < i {
				dst = append(dst, s[gap:i])
			}
			dst = append(dst, s[i:i+n])
			i += n
			gap = i
			continue
		}
		_, w := runeAt(s, i)
		i += w
	}
	if gap < len(s) {
		dst = append(dst, s[gap:])
	}
	return dst
}

// Character classes of the patterns.
const (
	classOther  = iota // [^\s\p{L}\p{N}]
	classLetter        // \p{L}
	classNumber        // \p{N}
	classSpace         // \s
)

var asciiClass = func() (t [utf8.RuneSelf]uint8) {
	for r := range rune(utf8.RuneSelf) {
		t[r] = classifySlow(r)
	}
	return t
}()

func classifySlow(r rune) uint8 {
	switch {
	case unicode.IsLetter(r):
		return classLetter
	case unicode.IsNumber(r):
		return classNumber
	case unicode.IsSpace(r):
		return classSpace
	}
	return classOther
}

func classify(r rune) uint8 {
	if r < utf8.RuneSelf {
		return asciiClass[r]
	}
	return classifySlow(r)
}

// runeAt decodes the character at s[i]; an invalid byte is RuneError of
// width 1, which classifies as classOther.
func runeAt(s string, i int) (rune, int) {
	if c := s[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

// classAt is the class of the character at s[i], and its width.
func classAt(s string, i int) (uint8, int) {
	if c := s[i]; c < utf8.RuneSelf {
		return asciiClass[c], 1
	}
	r, w := utf8.DecodeRuneInString(s[i:])
	if r == utf8.RuneError && w == 1 {
		return classOther, 1
	}
	return classifySlow(r), w
}

// runOf returns the length of the run of characters of class c at s[i:].
func runOf(s string, i int, c uint8) int {
	j := i
	for j < len(s) {
		cj, w := classAt(s, j)
		if cj != c {
			break
		}
		j += w
	}
	return j - i
}

// contraction returns the length of the contraction suffix (s, t, re, ve,
// m, ll, d) at the start of rest, 0 for none; fold compares ASCII letters
// without case, as (?i:...) does for them.
func contraction(rest string, fold bool) int {
	lower := func(i int) byte {
		if i >= len(rest) {
			return 0
		}
		c := rest[i]
		if fold && 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		return c
	}
	switch lower(0) {
	case 's', 't', 'm', 'd':
		return 1
	case 'r', 'v':
		if lower(1) == 'e' {
			return 2
		}
	case 'l':
		if lower(1) == 'l' {
			return 2
		}
	}
	return 0
}

// matchSpaces matches \s+(?!\S)|\s+ at s[i], a whitespace character: the
// whole run when it ends the text or is one character long, else all of it
// but its last character, which goes with the word after it.
func matchSpaces(s string, i int) int {
	j, last, count := i, i, 0
	for j < len(s) {
		c, w := classAt(s, j)
		if c != classSpace {
			break
		}
		last = j
		j += w
		count++
	}
	if j == len(s) || count == 1 {
		return j - i
	}
	return last - i
}

// matchGPT2 matches GPT-2's pattern
//
//	's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
func matchGPT2(s string, i int) int {
	if s[i] == '\'' {
		if n := contraction(s[i+1:], false); n > 0 {
			return 1 + n
		}
	}
	c, _ := classAt(s, i)
	if s[i] == ' ' && i+1 < len(s) {
		if c2, _ := classAt(s, i+1); c2 != classSpace {
			return 1 + runOf(s, i+1, c2)
		}
	}
	if c != classSpace {
		return runOf(s, i, c)
	}
	return matchSpaces(s, i)
}

// matchLlama3 matches Llama-3's pattern
//
//	(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
func matchLlama3(s string, i int) int { return matchLlama3Digits(s, i, 3) }

// matchQwen2 matches Qwen2's pattern, Llama-3's with \p{N} for \p{N}{1,3}.
func matchQwen2(s string, i int) int { return matchLlama3Digits(s, i, 1) }

func matchLlama3Digits(s string, i, maxDigits int) int {
	if s[i] == '\'' {
		if n := contraction(s[i+1:], true); n > 0 {
			return 1 + n
		}
	}
	c, w := classAt(s, i)
	switch c {
	case classLetter:
		return runOf(s, i, classLetter)
	case classNumber:
		j := i
		for k := 0; k < maxDigits && j < len(s); k++ {
			cj, wj := classAt(s, j)
			if cj != classNumber {
				break
			}
			j += wj
		}
		return j - i
	}
	// [^\r\n\p{L}\p{N}]?\p{L}+: one other or space character before letters.
	if s[i] != '\r' && s[i] != '\n' && i+w < len(s) {
		if c2, _ := classAt(s, i+w); c2 == classLetter {
			return w + runOf(s, i+w, classLetter)
		}
	}
	// ` ?[^\s\p{L}\p{N}]+[\r\n]*`
	j := i
	if s[i] == ' ' && i+1 < len(s) {
		if c2, _ := classAt(s, i+1); c2 == classOther {
			j = i + 1
		}
	}
	if j > i || c == classOther {
		j += runOf(s, j, classOther)
		for j < len(s) && (s[j] == '\r' || s[j] == '\n') {
			j++
		}
		return j - i
	}
	// \s*[\r\n]+: the whitespace run up to its last line break, if any.
	lastNL := -1
	for j < len(s) {
		cj, wj := classAt(s, j)
		if cj != classSpace {
			break
		}
		if s[j] == '\r' || s[j] == '\n' {
			lastNL = j
		}
		j += wj
	}
	if lastNL >= 0 {
		return lastNL + 1 - i
	}
	return matchSpaces(s, i)
}

// matchNumber matches \p{N}: one number character.
func matchNumber(s string, i int) int {
	if c, w := classAt(s, i); c == classNumber {
		return w
	}
	return 0
}

// matchNumberRun matches \p{N}+.
func matchNumberRun(s string, i int) int { return runOf(s, i, classNumber) }

// matchDigitTriple matches [0-9][0-9][0-9].
func matchDigitTriple(s string, i int) int {
	if i+3 <= len(s) && isDigit(s[i]) && isDigit(s[i+1]) && isDigit(s[i+2]) {
		return 3
	}
	return 0
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// matchPunctRun matches [\p{P}\$\+<=>\^~\|]+.
func matchPunctRun(s string, i int) int {
	j := i
	for j < len(s) {
		r, w := runeAt(s, j)
		if !unicode.IsPunct(r) && !isPunctExtra(r) {
			break
		}
		j += w
	}
	return j - i
}

func isPunctExtra(r rune) bool {
	switch r {
	case '$', '+', '<', '=', '>', '^', '~', '|':
		return true
	}
	return false
}
