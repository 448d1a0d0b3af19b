package eval

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tokenizer"
)

// NeedleTemplate says how a needle is written into the haystack and asked
// for at the end. Value is a random decimal number of Digits digits.
type NeedleTemplate struct {
	Needle   string // contains "{value}"
	Question string // written after the haystack; the answer follows it
	Digits   int
}

// DefaultNeedle is the pass-key format of the reference model's
// retrieval training data.
var DefaultNeedle = NeedleTemplate{
	Needle:   " The pass key is {value}. Remember it. {value} is the pass key. ",
	Question: "\n\nWhat is the pass key? The pass key is",
	Digits:   5,
}

// NeedleOptions configures Needle.
type NeedleOptions struct {
	Lengths  []int // context lengths in tokens, needle and question included
	Depths   int   // needle depths per length, evenly from 0 (start) to 1 (end)
	Trials   int   // random needles per cell
	Seed     uint64
	KV       kvcache.Maker // the KV caches under test (a kvcache.Config; nil: f16)
	Template NeedleTemplate
}

// NeedleResult holds the fraction of exact answers per (length, depth).
type NeedleResult struct {
	Lengths []int       `json:"lengths"`
	Depths  []float64   `json:"depths"`
	Score   [][]float64 `json:"score"` // [length][depth]
	Overall float64     `json:"overall"`
}

// Needle runs the needle-in-a-haystack test: for each context length and
// needle depth it hides a random number in haystack text (token ids from
// held-out text, never seen in training), asks for it at the end, decodes
// greedily and scores an exact match of the number.
func Needle(ctx context.Context, m *model.Model, tok *tokenizer.Tokenizer, haystack []int32, o NeedleOptions) (NeedleResult, error) {
	t := o.Template
	if t.Needle == "" {
		t = DefaultNeedle
	}
	if !strings.Contains(t.Needle, "{value}") || t.Digits < 1 || t.Digits > 18 {
		return NeedleResult{}, fmt.Errorf("eval: needle template must contain {value} and ask for 1 to 18 digits")
	}
	if o.Depths < 1 || o.Trials < 1 {
		return NeedleResult{}, fmt.Errorf("eval: needle needs at least one depth and one trial")
	}
	res := NeedleResult{Lengths: o.Lengths}
	for d := range o.Depths {
		if o.Depths == 1 {
			res.Depths = append(res.Depths, 0.5)
		} else {
			res.Depths = append(res.Depths, float64(d)/float64(o.Depths-1))
		}
	}
	question := tok.Encode(t.Question, false)
	r := rand.New(rand.NewPCG(o.Seed, 11))
	var total, correct int
	for _, length := range o.Lengths {
		if length > m.Config.Context {
			return res, fmt.Errorf("eval: needle length %d exceeds the model's context %d", length, m.Config.Context)
		}
		row := make([]float64, len(res.Depths))
		for di, depth := range res.Depths {
			for range o.Trials {
				if err := ctx.Err(); err != nil {
					return res, err
				}
				value := fmt.Sprintf("%0*d", t.Digits, r.Int64N(pow10(t.Digits)))
				if value[0] == '0' {
					value = "1" + value[1:] // no leading zero: the answer is unambiguous
				}
				needle := tok.Encode(strings.ReplaceAll(t.Needle, "{value}", value), false)
				prompt, err := buildHaystack(tok, haystack, needle, question, length, depth, r)
				if err != nil {
					return res, err
				}
				ok, err := answers(m, tok, prompt, value, o.KV)
				if err != nil {
					return res, err
				}
				total++
				if ok {
					correct++
					row[di]++
				}
			}
			row[di] /= float64(o.Trials)
		}
		res.Score = append(res.Score, row)
	}
	res.Overall = float64(correct) / float64(total)
	return res, nil
}

func pow10(n int) int64 {
	p := int64(1)
	for range n {
		p *= 10
	}
	return p
}

// buildHaystack returns BOS (if the tokenizer has one), filler from a
// random offset of haystack with the needle at the given depth, and the
// question, length tokens in all. The needle goes after a filler token
// that ends a line or a sentence where one is near, so it does not split
// a word.
func buildHaystack(tok *tokenizer.Tokenizer, haystack, needle, question []int32, length int, depth float64, r *rand.Rand) ([]int32, error) {
	var prefix []int32
	if b := tok.BOS(); b >= 0 {
		prefix = append(prefix, b)
	}
	fill := length - len(prefix) - len(needle) - len(question)
	if fill < 1 {
		return nil, fmt.Errorf("eval: needle length %d is too short for the needle and question (%d tokens)", length, len(needle)+len(question)+len(prefix))
	}
	if len(haystack) < fill {
		return nil, fmt.Errorf("eval: haystack of %d tokens is shorter than the %d needed", len(haystack), fill)
	}
	start := r.IntN(len(haystack) - fill + 1)
	out := append(prefix, bury(tok, haystack[start:start+fill], [][]int32{needle}, []float64{depth})...)
	return append(out, question...), nil
}

// bury returns filler with items inserted at the given depths (ascending
// fractions of the filler), each after a filler token that ends a line
// or a sentence where one is within 32 tokens before, so that no item
// splits a word.
func bury(tok *tokenizer.Tokenizer, filler []int32, items [][]int32, depths []float64) []int32 {
	var out []int32
	prev := 0
	for i, item := range items {
		at := max(prev, int(depths[i]*float64(len(filler))))
		for back := 0; back < 32 && at-back > prev; back++ {
			s := tok.Token(filler[at-back-1])
			if strings.ContainsAny(s, ".\n") || strings.Contains(s, "Ċ") {
				at -= back
				break
			}
		}
		out = append(out, filler[prev:at]...)
		out = append(out, item...)
		prev = at
	}
	return append(out, filler[prev:]...)
}

// answers decodes greedily after prompt and reports whether the digits
// that follow are exactly value.
func answers(m *model.Model, tok *tokenizer.Tokenizer, prompt []int32, value string, kv kvcache.Maker) (bool, error) {
	s, err := m.NewSession(kv, len(prompt)+len(value)+4)
	if err != nil {
		return false, err
	}
	logits, err := s.Forward(prompt, false)
	if err != nil {
		return false, err
	}
	return answerFrom(s, logits, tok, value)
}

// answerFrom decodes greedily from a session whose next-token logits are
// given, until its limit, and reports whether the digits that follow are
// exactly value.
func answerFrom(s *model.Session, logits []float32, tok *tokenizer.Tokenizer, value string) (bool, error) {
	var out strings.Builder
	dec := tok.NewDecoder()
	var err error
	for s.Len() < s.Limit() {
		best := int32(0)
		for i, v := range logits {
			if v > logits[best] {
				best = int32(i)
			}
		}
		if tok.IsEOG(best) {
			break
		}
		out.WriteString(dec.Next(best))
		if digits := leadingDigits(out.String()); len(digits) > len(value) || (len(digits) > 0 && !strings.HasPrefix(value, digits)) {
			return false, nil
		} else if digits == value && strings.TrimLeft(out.String(), " ") != digits {
			return true, nil // the number ended
		}
		if logits, err = s.Forward([]int32{best}, false); err != nil {
			return false, err
		}
	}
	out.WriteString(dec.Flush())
	return leadingDigits(out.String()) == value, nil
}

// leadingDigits returns the run of digits at the start of s after spaces.
func leadingDigits(s string) string {
	s = strings.TrimLeft(s, " ")
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i]
}
