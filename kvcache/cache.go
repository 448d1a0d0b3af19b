// Package kvcache holds the keys and values of one sequence's attention
// layers, in full precision or compressed, and computes attention on what
// it holds. The cache owns attention (shared/DESIGN.md): a compressed
// cache scores queries against its compressed keys directly instead of
// handing back decompressed copies.
package kvcache

import (
	"fmt"
	"math"
	"runtime"
	"sync"
)

// Cache holds one sequence's keys and values for one layer, all KV heads.
type Cache interface {
	// Append adds one token: k and v hold KVHeads·HeadDim values each,
	// head after head; keys are taken after RoPE.
	Append(k, v []float32) error
	// Attend computes softmax(scale·q·Kᵀ)·V for every query head against
	// every stored token and writes the QHeads·HeadDim results to out.
	// Query head h uses KV head h/(QHeads/KVHeads) (grouped-query
	// attention).
	Attend(out, q []float32, scale float32)
	// Len returns the number of tokens held.
	Len() int
	// Bytes returns the exact number of bytes the cache holds for its
	// tokens (capacity reserved but unused is not counted).
	Bytes() int
}

// Shape is the geometry of one layer's attention.
type Shape struct {
	QHeads, KVHeads, HeadDim int
}

// Validate checks that the shape is usable for grouped-query attention.
func (s Shape) Validate() error {
	if s.QHeads <= 0 || s.KVHeads <= 0 || s.HeadDim <= 0 || s.QHeads%s.KVHeads != 0 {
		return fmt.Errorf("kvcache: shape %d query heads, %d KV heads, head dim %d: need positive sizes and query heads a multiple of KV heads", s.QHeads, s.KVHeads, s.HeadDim)
	}
	if s.HeadDim > 1<<14 || s.QHeads > 1<<12 {
		return fmt.Errorf("kvcache: shape %d heads × %d dims is out of range", s.QHeads, s.HeadDim)
	}
	return nil
}

// Group returns the number of query heads that share one KV head.
func (s Shape) Group() int { return s.QHeads / s.KVHeads }

// softmax replaces s by softmax(s), subtracting the maximum first so that
// large scores cannot overflow.
func softmax(s []float32) {
	m := float32(math.Inf(-1))
	for _, v := range s {
		m = max(m, v)
	}
	var sum float32
	for i, v := range s {
		e := float32(math.Exp(float64(v - m)))
		s[i] = e
		sum += e
	}
	inv := 1 / sum
	for i := range s {
		s[i] *= inv
	}
}

// minParallelWork is the number of multiply-adds per head below which
// heads run on the calling goroutine: spawning costs more than it saves.
const minParallelWork = 1 << 15

// parallelHeads calls f(h) for every head h in [0, heads), spread over up
// to runtime.NumCPU() goroutines when each head has at least
// minParallelWork of work.
func parallelHeads(heads, workPerHead int, f func(h int)) {
	workers := min(heads, runtime.NumCPU())
	if workers <= 1 || workPerHead < minParallelWork {
		for h := range heads {
			f(h)
		}
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for h := w; h < heads; h += workers {
				f(h)
			}
		})
	}
	wg.Wait()
}
