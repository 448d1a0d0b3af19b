package compact

import (
	"context"
	"fmt"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// Prefill runs the context ids through a new session whose caches kv makes
// (nil: f16), recording what every layer's cache sees (kvcache.Recorder):
// it returns the session, which holds the context and can go on, the
// recorded context for Compact, and the last token's logits. maxTokens
// bounds the session as model.NewSession's does.
func Prefill(m *model.Model, kv kvcache.Maker, ids []int32, maxTokens int) (*model.Session, Context, []float32, error) {
	if kv == nil {
		kv = kvcache.F16()
	}
	c := Context{Layers: make([]*kvcache.Trace, m.Config.Layers)}
	s, err := m.NewSession(kvcache.NewCacheFunc(func(layer int, sh kvcache.Shape) (kvcache.Cache, error) {
		inner, err := kv.NewCache(layer, sh)
		if err != nil {
			return nil, err
		}
		r := kvcache.NewRecorder(inner, sh)
		c.Layers[layer] = r.Trace
		return r.Recording(), nil
	}), maxTokens)
	if err != nil {
		return nil, Context{}, nil, fmt.Errorf("compact: prefill: %w", err)
	}
	logits, err := s.Forward(ids, false)
	if err != nil {
		return nil, Context{}, nil, fmt.Errorf("compact: prefill: %w", err)
	}
	return s, c, logits, nil
}

// resumeRecording returns a session that continues the recorded context
// from float32 caches holding its tokens exactly, each wrapped in a
// recorder that keeps the queries of positions from on, and the
// recorders' traces.
func resumeRecording(m *model.Model, c Context, from, limit int) (*model.Session, []*kvcache.Trace, error) {
	n := c.Layers[0].Len()
	caches := make([]kvcache.Cache, len(c.Layers))
	traces := make([]*kvcache.Trace, len(c.Layers))
	for l, tr := range c.Layers {
		f, err := kvcache.NewF32(tr.Shape)
		if err != nil {
			return nil, nil, err
		}
		kd := tr.Shape.KVHeads * tr.Shape.HeadDim
		for p := range n {
			if err := f.Append(tr.K[p*kd:(p+1)*kd], tr.V[p*kd:(p+1)*kd]); err != nil {
				return nil, nil, err
			}
		}
		r := kvcache.NewRecorder(f, tr.Shape)
		r.KeepQuery = func(pos int) bool { return pos >= from-n }
		caches[l], traces[l] = r.Recording(), r.Trace
	}
	s, err := m.Resume(caches, n, limit)
	return s, traces, err
}

// RepeatQueries returns, per layer, the queries of the model rereading
// the context (the paper's and KVzip's "repeat-prefill"): after the
// context come the instruction (e.g. the tokens of "\nRepeat the previous
// context.\n") and the context's tokens again (ids without its first
// token when skipFirst, for BOS), and the queries of the repeated tokens
// are kept, QHeads·HeadDim values each. Where the repetition does not fit
// the model's context after the original (limit tokens in all; 0: the
// model's), it is read in chunks that each follow the context and the
// instruction afresh (KVzip's chunked scoring).
func RepeatQueries(ctx context.Context, m *model.Model, c Context, ids, instr []int32, skipFirst bool, limit int) ([][]float32, error) {
	if _, n, err := c.validate(); err != nil {
		return nil, err
	} else if n != len(ids) {
		return nil, fmt.Errorf("compact: repeat: %d tokens recorded for a context of %d", n, len(ids))
	}
	if limit <= 0 {
		limit = m.Config.Context
	}
	text := ids
	if skipFirst && len(text) > 0 {
		text = text[1:]
	}
	n := len(ids)
	chunk := min(len(text), limit-n-len(instr))
	if chunk < 1 {
		return nil, fmt.Errorf("compact: repeat: a context of %d tokens and an instruction of %d leave no room to reread it within %d", n, len(instr), limit)
	}
	out := make([][]float32, len(c.Layers))
	for start := 0; start < len(text); start += chunk {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		part := text[start:min(start+chunk, len(text))]
		s, traces, err := resumeRecording(m, c, n+len(instr), limit)
		if err != nil {
			return nil, fmt.Errorf("compact: repeat: %w", err)
		}
		if _, err := s.Forward(append(append([]int32(nil), instr...), part...), false); err != nil {
			return nil, fmt.Errorf("compact: repeat: %w", err)
		}
		for l, tr := range traces {
			out[l] = append(out[l], tr.Q...)
		}
	}
	return out, nil
}

// SelfQueries returns, per layer, the queries of the model writing about
// the context: for each prompt (e.g. the tokens of "\nQuestion:"), it
// reads the prompt after the context and samples tokens more with
// sampler settings sc (the seed advanced per prompt), and keeps the
// queries of the prompt and what it wrote, QHeads·HeadDim values each
// (the paper's self-study, for a model that may not follow instructions).
func SelfQueries(ctx context.Context, m *model.Model, c Context, prompts [][]int32, tokens int, sc model.SamplerConfig, limit int) ([][]float32, error) {
	_, n, err := c.validate()
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = m.Config.Context
	}
	out := make([][]float32, len(c.Layers))
	for i, p := range prompts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if len(p) == 0 || n+len(p)+tokens > limit {
			return nil, fmt.Errorf("compact: self-study prompt %d: %d tokens and %d to write after a context of %d exceed %d (or the prompt is empty)", i, len(p), tokens, n, limit)
		}
		s, traces, err := resumeRecording(m, c, n, limit)
		if err != nil {
			return nil, fmt.Errorf("compact: self-study: %w", err)
		}
		sc.Seed++
		smp, err := model.NewSampler(sc)
		if err != nil {
			return nil, err
		}
		logits, err := s.Forward(p, false)
		if err != nil {
			return nil, fmt.Errorf("compact: self-study: %w", err)
		}
		for range tokens {
			next := smp.Sample(logits)
			smp.Accept(next)
			if logits, err = s.Forward([]int32{next}, false); err != nil {
				return nil, fmt.Errorf("compact: self-study: %w", err)
			}
		}
		for l, tr := range traces {
			out[l] = append(out[l], tr.Q...)
		}
	}
	return out, nil
}
