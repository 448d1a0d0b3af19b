package tokenizer

import "math"

// mergeQueue is a binary min-heap of candidate merges by a uint64 priority
// key. Both algorithms pop the best pair and push the pairs a merge
// creates, so a heap keeps a text of n symbols at O(n log n) (a rescan
// would be O(n²), and SentencePiece texts are whole fragments, not words).
// Keys are plain integers so that comparing them needs no call.
type mergeQueue[T any] struct {
	keys  []uint64
	items []T
}

func (q *mergeQueue[T]) reset() {
	q.keys = q.keys[:0]
	q.items = q.items[:0]
}

func (q *mergeQueue[T]) len() int { return len(q.keys) }

func (q *mergeQueue[T]) push(key uint64, x T) {
	q.keys = append(q.keys, key)
	q.items = append(q.items, x)
	i := len(q.keys) - 1
	for i > 0 {
		p := (i - 1) / 2
		if q.keys[p] <= key {
			break
		}
		q.keys[i], q.items[i] = q.keys[p], q.items[p]
		i = p
	}
	q.keys[i], q.items[i] = key, x
}

func (q *mergeQueue[T]) pop() T {
	top := q.items[0]
	last := len(q.keys) - 1
	key, x := q.keys[last], q.items[last]
	q.keys, q.items = q.keys[:last], q.items[:last]
	if last == 0 {
		return top
	}
	i := 0
	for {
		m := 2*i + 1
		if m >= last {
			break
		}
		if r := m + 1; r < last && q.keys[r] < q.keys[m] {
			m = r
		}
		if key <= q.keys[m] {
			break
		}
		q.keys[i], q.items[i] = q.keys[m], q.items[m]
		i = m
	}
	q.keys[i], q.items[i] = key, x
	return top
}

// scoreKey orders SentencePiece merges: the highest score first, then the
// leftmost, as llama.cpp's llm_bigram_spm::comparator and SentencePiece's
// bpe_model.cc do.
func scoreKey(score float32, left int32) uint64 {
	// Map the float's bits to an unsigned order (negatives reversed), then
	// invert it so that a higher score is a smaller key.
	b := math.Float32bits(score)
	if b>>31 != 0 {
		b = ^b
	} else {
		b |= 1 << 31
	}
	return uint64(^b)<<32 | uint64(uint32(left))
}

// rankKey orders byte-level BPE merges: the lowest rank first, then the
// leftmost (llama.cpp's llm_bigram_bpe, Hugging Face's BPE word merge).
func rankKey(rank, left int32) uint64 {
	return uint64(uint32(rank))<<32 | uint64(uint32(left))
}
