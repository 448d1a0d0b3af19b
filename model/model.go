package model

import (
	"fmt"
	"math"
	"runtime"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/tensor"
)

// Model is a loaded model: hyperparameters and weights. It is read-only
// and may serve many Sessions at once.
type Model struct {
	Config  Config
	w       *weights
	file    *gguf.File
	owned   bool          // Close closes file
	invFreq []float64     // RoPE inverse frequencies per rotated pair
	kvRope  *kvcache.Rope // the same, for the caches (CacheShape)
	pool    *tensor.Pool
	onClose func()       // Options.OnClose; nil in WithTensor's models
	settled func() error // Options.Settled
}

// Options configures how a model runs.
type Options struct {
	// Threads is the number of goroutines that share matrix products and
	// attention; 0 means all CPUs.
	Threads int
	// FirstUse, if set, is called once for each tensor the model reads,
	// with its description and bytes, before their first use: vectors as they
	// are loaded, weight matrices at the first product (or embedding
	// lookup) that needs them. An error fails the load or that Forward,
	// and every later one that needs the tensor. It lets a file's
	// integrity be checked lazily, as the weights are used.
	FirstUse func(t gguf.TensorInfo, data []byte) error
	// Settled, if set, is a check of every tensor that runs beside the
	// model (hashing the weights in the background): it blocks until the
	// check is complete and returns nil if every tensor passed. With it
	// set, a step's products no longer wait for FirstUse at a matrix's
	// first use; instead every Forward, ForwardTail, ForwardFrom and
	// Batch.Forward calls Settled before it returns anything computed
	// from the weights, and fails with its error (every later call fails
	// too). So the first step's work overlaps the check, and no value
	// derived from a tensor leaves the model before the tensor has
	// passed. A session with a capture or an observer, whose callbacks
	// see values inside the step, waits for FirstUse at each first use as
	// without Settled. Vectors are still checked by FirstUse as they load.
	Settled func() error
	// OnClose, if set, is called once by Close after the model's workers
	// have stopped and before it releases a file it opened: what reads
	// the weights beside the model (a check hashing them in the
	// background ahead of their first use) stops there, and a file given
	// to New may be closed there.
	OnClose func()
}

// Open loads the model in the GGUF file at path. The weights stay in the
// file's memory mapping; Close releases it.
func Open(path string, o Options) (*Model, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	m, err := New(f, o)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m.owned = true
	return m, nil
}

// New builds a model from an open GGUF file, which must stay open while
// the model is used.
func New(f *gguf.File, o Options) (*Model, error) {
	c, err := ReadConfig(f)
	if err != nil {
		return nil, err
	}
	w, err := loadWeights(f, &c, o.FirstUse)
	if err != nil {
		return nil, err
	}
	m := &Model{Config: c, w: w, file: f, pool: tensor.NewPool(o.Threads), onClose: o.OnClose, settled: o.Settled}
	m.invFreq = make([]float64, c.RopeDim/2)
	for i := range m.invFreq {
		// θᵢ = base^(−2i/d); Llama-3 files divide it by rope_freqs[i].
		m.invFreq[i] = math.Pow(c.RopeBase, -2*float64(i)/float64(c.RopeDim)) / c.RopeLinear
		if w.ropeFreqs != nil {
			m.invFreq[i] /= float64(w.ropeFreqs[i])
		}
	}
	if m.kvRope, err = kvcache.NewRope(c.HeadDim, m.invFreq, c.RopeStyle == RopeHalves); err != nil {
		m.pool.Close()
		return nil, fmt.Errorf("model: %w", err)
	}
	return m, nil
}

// File returns the GGUF file the model was loaded from.
func (m *Model) File() *gguf.File { return m.file }

// WeightBytes returns the bytes of all weight tensors.
func (m *Model) WeightBytes() int64 { return m.w.bytes }

// Threads returns the number of goroutines that share the work of a step.
func (m *Model) Threads() int { return m.pool.Threads() }

// Parallel calls f(i, w) for every i in [0, n) on the goroutines that
// share the model's steps, and returns when all have returned: per-sequence
// work between steps (sampling each sequence's next token) runs side by
// side instead of one sequence after another. w numbers the goroutine
// that runs the call, in [0, Threads()). The caller waits while the
// model's other goroutines run f (w ≥ 1), so f may give its processor
// to a goroutine it wakes without holding up the next step; it runs
// every call itself, with w = 0, where there are no others (one thread,
// or n = 1). It must not be called from inside a step, or from f.
func (m *Model) Parallel(n int, f func(i, w int)) { m.pool.RunAside(n, f) }

// settle returns the result of the check beside the model
// (Options.Settled), waiting for it; nil without one.
func (m *Model) settle() error {
	if m.settled == nil {
		return nil
	}
	return m.settled()
}

// Close stops the model's worker goroutines and releases the file if the
// model opened it.
func (m *Model) Close() error {
	m.pool.Close()
	if f := m.onClose; f != nil {
		m.onClose = nil
		f()
	}
	if m.owned {
		return m.file.Close()
	}
	return nil
}

// CacheShape returns the attention geometry of every layer.
func (m *Model) CacheShape() kvcache.Shape {
	return kvcache.Shape{QHeads: m.Config.Heads, KVHeads: m.Config.KVHeads, HeadDim: m.Config.HeadDim, Rope: m.kvRope}
}

// MemoryPlan is where a session's memory goes, in bytes.
type MemoryPlan struct {
	Weights int64 // weight tensors (memory-mapped from the file)
	KVCache int64 // keys and values of all layers at Context tokens
	Scratch int64 // working buffers of a session at the largest batch
	Context int
	// KVBytesPerToken is KVCache / Context.
	KVBytesPerToken float64
}

// Total returns the sum of the parts.
func (p MemoryPlan) Total() int64 { return p.Weights + p.KVCache + p.Scratch }

// Plan returns the memory a session of ctx tokens takes when the cache
// stores bitsPerValue bits for each key and value coordinate (16 for f16).
func (m *Model) Plan(ctx int, bitsPerValue float64) MemoryPlan {
	c := &m.Config
	perToken := 2 * float64(c.Layers*c.KVHeads*c.HeadDim) * bitsPerValue / 8
	return m.PlanKV(ctx, int64(perToken*float64(ctx)))
}

// PlanKV returns the memory a session of ctx tokens takes when its
// caches hold kvBytes in all (kvcache's BytesAt gives that exactly).
func (m *Model) PlanKV(ctx int, kvBytes int64) MemoryPlan {
	c := &m.Config
	qd, kd := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	batch := min(ctx, MaxBatch)
	scratch := 4 * int64(batch) * int64(3*c.Hidden+2*qd+2*kd+2*c.FFN)
	scratch += 4 * int64(c.Vocab) // logits of one token
	p := MemoryPlan{Weights: m.w.bytes, KVCache: kvBytes, Scratch: scratch, Context: ctx}
	if ctx > 0 {
		p.KVBytesPerToken = float64(kvBytes) / float64(ctx)
	}
	return p
}

// Prefault reads one byte of every page of the weights, so that the first
// tokens do not pay for page faults of the memory mapping, reporting the
// bytes done so far to progress (which may be nil).
func (m *Model) Prefault(progress func(done, total int64)) {
	var all []*matrix
	m.eachMatrix(func(x *matrix) { all = append(all, x) })
	var total, done int64
	for _, x := range all {
		total += int64(len(x.data))
	}
	var sink byte
	for _, x := range all {
		for i := 0; i < len(x.data); i += 4096 {
			sink += x.data[i]
		}
		done += int64(len(x.data))
		if progress != nil {
			progress(done, total)
		}
	}
	runtime.KeepAlive(sink) // the reads are the point
}
