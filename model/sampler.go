package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// SamplerConfig chooses how the next token is drawn from logits. The
// zero value is greedy decoding.
type SamplerConfig struct {
	// Temperature divides the logits; 0 means greedy (argmax).
	Temperature float64
	TopK        int     // keep the K most likely tokens; 0: all
	TopP        float64 // keep the smallest set with this much probability; 0 or 1: all
	MinP        float64 // drop tokens below MinP × the top probability; 0: none
	// RepeatPenalty divides positive (multiplies negative) logits of tokens
	// seen in the last RepeatWindow tokens, as llama.cpp does; 0 or 1: off.
	RepeatPenalty float64
	RepeatWindow  int // 0: 64
	Seed          uint64
}

// Validate checks the configuration.
func (c SamplerConfig) Validate() error {
	switch {
	case c.Temperature < 0 || math.IsNaN(c.Temperature) || math.IsInf(c.Temperature, 0):
		return fmt.Errorf("model: temperature %g must be finite and ≥ 0", c.Temperature)
	case c.TopK < 0:
		return fmt.Errorf("model: top-k %d must be ≥ 0", c.TopK)
	case !(c.TopP >= 0 && c.TopP <= 1):
		return fmt.Errorf("model: top-p %g must be in [0, 1]", c.TopP)
	case !(c.MinP >= 0 && c.MinP <= 1):
		return fmt.Errorf("model: min-p %g must be in [0, 1]", c.MinP)
	case c.RepeatPenalty < 0 || math.IsNaN(c.RepeatPenalty) || math.IsInf(c.RepeatPenalty, 0):
		return fmt.Errorf("model: repeat penalty %g must be finite and ≥ 0", c.RepeatPenalty)
	case c.RepeatWindow < 0:
		return fmt.Errorf("model: repeat window %d must be ≥ 0", c.RepeatWindow)
	}
	return nil
}

// Sampler draws tokens according to a SamplerConfig; the same seed and
// logits give the same tokens.
type Sampler struct {
	c       SamplerConfig
	rng     *rand.Rand
	history []int32
	cand    []candidate
}

type candidate struct {
	id int32
	p  float64 // logit, then probability
}

// NewSampler returns a sampler for c.
func NewSampler(c SamplerConfig) (*Sampler, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.RepeatWindow == 0 {
		c.RepeatWindow = 64
	}
	return &Sampler{c: c, rng: rand.New(rand.NewPCG(c.Seed, 0x5eed))}, nil
}

// Accept records a token of the sequence (prompt or generated) for the
// repetition penalty.
func (s *Sampler) Accept(id int32) {
	s.history = append(s.history, id)
	if len(s.history) > 4*s.c.RepeatWindow {
		s.history = slices.Clone(s.history[len(s.history)-s.c.RepeatWindow:])
	}
}

// Sample returns the next token for logits (which it may modify).
func (s *Sampler) Sample(logits []float32) int32 {
	if p := s.c.RepeatPenalty; p > 0 && p != 1 {
		h := s.history[max(0, len(s.history)-s.c.RepeatWindow):]
		seen := map[int32]bool{}
		for _, id := range h {
			if seen[id] || int(id) >= len(logits) {
				continue
			}
			seen[id] = true
			if logits[id] > 0 {
				logits[id] = float32(float64(logits[id]) / p)
			} else {
				logits[id] = float32(float64(logits[id]) * p)
			}
		}
	}
	if s.c.Temperature == 0 {
		return int32(argmax(logits))
	}
	s.cand = s.cand[:0]
	for i, l := range logits {
		s.cand = append(s.cand, candidate{int32(i), float64(l) / s.c.Temperature})
	}
	slices.SortFunc(s.cand, func(a, b candidate) int {
		switch {
		case a.p > b.p:
			return -1
		case a.p < b.p:
			return 1
		}
		return int(a.id - b.id)
	})
	c := s.cand
	if k := s.c.TopK; k > 0 && k < len(c) {
		c = c[:k]
	}
	// Softmax over the kept candidates (sorted: c[0] is the maximum).
	top := c[0].p
	var sum float64
	for i := range c {
		c[i].p = math.Exp(c[i].p - top)
		sum += c[i].p
	}
	for i := range c {
		c[i].p /= sum
	}
	if mp := s.c.MinP; mp > 0 {
		n := 1
		for n < len(c) && c[n].p >= mp*c[0].p {
			n++
		}
		c = c[:n]
	}
	if tp := s.c.TopP; tp > 0 && tp < 1 {
		var cum float64
		n := 0
		for n < len(c) {
			cum += c[n].p
			n++
			if cum >= tp {
				break
			}
		}
		c = c[:n]
	}
	var total float64
	for _, x := range c {
		total += x.p
	}
	r := s.rng.Float64() * total
	for _, x := range c {
		r -= x.p
		if r < 0 {
			return x.id
		}
	}
	return c[len(c)-1].id
}

// argmax returns the index of the largest value (the first, on ties).
func argmax(x []float32) int {
	if len(x) == 0 {
		return 0
	}
	best, top := 0, x[0]
	for i, v := range x {
		if v > top {
			best, top = i, v
		}
	}
	return best
}
