package tokenizer

// mergeQueue is a binary heap of candidate merges: the item for which
// before is true against all others comes out first. Both algorithms pop
// the best pair and push the pairs a merge creates, so a heap keeps a word
// of n symbols at O(n log n) (a rescan would be O(n²) on long words).
type mergeQueue[T interface{ before(T) bool }] struct {
	items []T
}

func (q *mergeQueue[T]) reset() { q.items = q.items[:0] }

func (q *mergeQueue[T]) len() int { return len(q.items) }

func (q *mergeQueue[T]) push(x T) {
	q.items = append(q.items, x)
	i := len(q.items) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !q.items[i].before(q.items[p]) {
			break
		}
		q.items[i], q.items[p] = q.items[p], q.items[i]
		i = p
	}
}

func (q *mergeQueue[T]) pop() T {
	top := q.items[0]
	last := len(q.items) - 1
	q.items[0] = q.items[last]
	q.items = q.items[:last]
	i := 0
	for {
		l := 2*i + 1
		if l >= last {
			break
		}
		m := l
		if r := l + 1; r < last && q.items[r].before(q.items[l]) {
			m = r
		}
		if !q.items[m].before(q.items[i]) {
			break
		}
		q.items[i], q.items[m] = q.items[m], q.items[i]
		i = m
	}
	return top
}
