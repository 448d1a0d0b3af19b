package compact

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tokenizer"
)

// DefaultRepeatPrompt is what the model reads between the context and its
// rereading (RepeatQueries).
const DefaultRepeatPrompt = "\n\nRepeat the previous context.\n\n"

// DefaultSelfPrompt starts the model's self-study (SelfQueries): a
// question about the context, in the style of the questions of the
// embedded model's training data (it follows no instructions).
const DefaultSelfPrompt = "\n\nWhat is the"

// QueryOptions says which reference queries to collect beyond the
// prefill's own.
type QueryOptions struct {
	// Repeat collects the model's rereading of the context (after
	// DefaultRepeatPrompt); KVzip needs it, attention matching adds it to
	// the self-study queries.
	Repeat bool
	// SelfStudy collects SelfStudy samples of SelfTokens tokens (0: 24)
	// that the model writes after the context and DefaultSelfPrompt, at
	// temperature 1 from Seed.
	SelfStudy, SelfTokens int
	Seed                  uint64
}

// Extra is the reference queries collected beyond the prefill's own, per
// layer (nil where not collected).
type Extra struct {
	Repeat, Self [][]float32
}

// For returns the extra queries method m uses: KVzip the rereading's;
// attention matching the self-study's and the rereading's (nil where
// there are none); eviction none.
func (e Extra) For(m Method) [][]float32 {
	switch {
	case m == KVzip:
		return e.Repeat
	case !m.Fits():
		return nil
	case e.Self == nil:
		return e.Repeat
	case e.Repeat == nil:
		return e.Self
	}
	out := make([][]float32, len(e.Self))
	for l := range out {
		out[l] = append(append([]float32(nil), e.Self[l]...), e.Repeat[l]...)
	}
	return out
}

// CollectQueries collects the extra reference queries q asks for over the
// recorded context c of the tokens ids (limit: the session length the
// model allows, 0 for its context).
func CollectQueries(ctx context.Context, m *model.Model, tok *tokenizer.Tokenizer, c Context, ids []int32, q QueryOptions, limit int) (Extra, error) {
	var e Extra
	var err error
	if q.Repeat {
		instr := tok.Encode(DefaultRepeatPrompt, false)
		if e.Repeat, err = RepeatQueries(ctx, m, c, ids, instr, tok.BOS() >= 0 && len(ids) > 0 && ids[0] == tok.BOS(), limit); err != nil {
			return e, err
		}
	}
	if q.SelfStudy > 0 {
		tokens := q.SelfTokens
		if tokens == 0 {
			tokens = 24
		}
		p := tok.Encode(DefaultSelfPrompt, false)
		prompts := make([][]int32, q.SelfStudy)
		for i := range prompts {
			prompts[i] = p
		}
		sc := model.SamplerConfig{Temperature: 1, Seed: q.Seed}
		// A sample ends with its line: a question and its answer, not
		// the next question's start, which every sample would repeat.
		stop := func(t int32) bool { return strings.Contains(tok.Decode([]int32{t}), "\n") }
		if e.Self, err = SelfQueries(ctx, m, c, prompts, tokens, sc, stop, limit); err != nil {
			return e, err
		}
	}
	return e, nil
}

// Report is what CompactPrompt measured: the times of the prefill, of
// collecting the extra reference queries and of the compaction (fits and
// making the caches), the bytes of all layers' caches holding the context
// before and after, the tokens kept per layer and KV head on average (the
// window included), and the fits' fallbacks.
type Report struct {
	Prefill, Queries, Compaction time.Duration
	Before, After                int64
	Tokens                       int
	Kept                         float64
	Warnings                     []string
}

// CompactPrompt prefills ids on a new session of m whose caches kv makes,
// collects the extra reference queries q asks for, compacts the context as
// o says (on the model's threads unless o.Workers says otherwise) and returns a session that continues after it (limit: its
// length, 0 for the model's context), with the logits of the prompt's
// last token (computed before compaction) and what it measured.
func CompactPrompt(ctx context.Context, m *model.Model, tok *tokenizer.Tokenizer, kv kvcache.Config, ids []int32, limit int, o Options, q QueryOptions) (*model.Session, []float32, Report, error) {
	var r Report
	start := time.Now()
	s, c, logits, err := Prefill(m, kv, ids, limit)
	if err != nil {
		return nil, nil, r, err
	}
	r.Prefill = time.Since(start)
	r.Before, r.Tokens = s.CacheBytes(), len(ids)
	start = time.Now()
	if o.Method == KVzip {
		q.Repeat = true
	}
	extra, err := CollectQueries(ctx, m, tok, c, ids, q, limit)
	if err != nil {
		return nil, nil, r, err
	}
	c.Extra = extra.For(o.Method)
	r.Queries = time.Since(start)
	if o.Workers == 0 {
		o.Workers = m.Threads() // the prefill's threads, so the times compare
	}
	start = time.Now()
	comp, err := Compact(ctx, c, o)
	if err != nil {
		return nil, nil, r, err
	}
	cs, err := Resume(m, comp, kv, s.Limit())
	if err != nil {
		return nil, nil, r, fmt.Errorf("compact: %w", err)
	}
	r.Compaction = time.Since(start)
	r.After = cs.CacheBytes()
	r.Kept = float64(comp.Kept()) / float64(len(comp.Heads)*comp.Shape.KVHeads)
	r.Warnings = comp.Warnings
	return cs, logits, r, nil
}
