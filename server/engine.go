package server

import (
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tokenizer"
)

// Model is what the server serves: a loaded model, its tokenizer, chat
// template and cache configuration, and the name clients see.
type Model struct {
	Model     *model.Model
	Tokenizer *tokenizer.Tokenizer
	Template  model.ChatTemplate
	// KV is the cache configuration of every sequence (a format pair or
	// a per-layer plan); its BytesAt is what admission reserves.
	KV kvcache.Config
	// Name is the model id of /v1/models and of every response.
	Name string
}

// StepSeq is one sequence's part of a step: Tokens are appended to
// Session and the next-token logits after the last of them come back in
// Logits, or Err if the sequence failed (its session is then unusable).
type StepSeq struct {
	Session *model.Session
	Tokens  []int32
	Logits  []float32
	Err     error
}

// Stepper runs one step of several sequences. A step of several
// sequences reads the weights once for all of them where the stepper
// batches (model.Batch); others run the sequences one after another.
type Stepper interface {
	Step(seqs []*StepSeq)
	// ScratchBytes is the memory the stepper needs for a step of at most
	// rows tokens in all, over at most seqs sequences.
	ScratchBytes(rows, seqs int) int64
	// SeqBytes is the memory a sequence holds besides its caches
	// (working buffers), for a prompt of n tokens.
	SeqBytes(n int) int64
}

// Serial is the Stepper that runs each sequence's tokens through
// Session.Forward on its own: the weights are read once per sequence.
type Serial struct{ M *model.Model }

// Step runs the sequences one after another.
func (s Serial) Step(seqs []*StepSeq) {
	for _, q := range seqs {
		q.Logits, q.Err = q.Session.Forward(q.Tokens, false)
	}
}

// ScratchBytes is 0: each session holds its own buffers (SeqBytes).
func (Serial) ScratchBytes(rows, seqs int) int64 { return 0 }

// SeqBytes is the session's working buffers at its largest chunk.
func (s Serial) SeqBytes(n int) int64 { return s.M.PlanKV(n, 0).Scratch }

// Batched is the Stepper that runs every sequence of a step through one
// model.Batch: each weight matrix is read once per step for all of them.
type Batched struct {
	m    *model.Model
	b    *model.Batch
	ss   []*model.Session // Step's lists, kept from step to step
	toks [][]int32
}

// NewBatched returns a batched stepper for m's sessions.
func NewBatched(m *model.Model) *Batched { return &Batched{m: m, b: m.NewBatch()} }

// Step runs the sequences' tokens as the rows of one batch.
func (s *Batched) Step(seqs []*StepSeq) {
	ss, toks := s.ss[:0], s.toks[:0]
	for _, q := range seqs {
		ss, toks = append(ss, q.Session), append(toks, q.Tokens)
	}
	s.ss, s.toks = ss, toks
	logits, errs := s.b.Forward(ss, toks)
	clear(ss) // hold no finished session
	clear(toks)
	for i, q := range seqs {
		q.Logits, q.Err = logits[i], errs[i]
	}
}

// ScratchBytes is the batch's buffers: a chunk of model.MaxBatch rows.
func (s *Batched) ScratchBytes(rows, seqs int) int64 { return s.m.PlanKV(model.MaxBatch, 0).Scratch }

// SeqBytes is 0: sessions stepped by a batch hold no buffers of their own.
func (s *Batched) SeqBytes(n int) int64 { return 0 }
