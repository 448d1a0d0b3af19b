package server

import (
	"container/heap"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"

	"github.com/turbomem/turbomem/half"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tensor"
)

// blockTokens is the number of prompt tokens in one prefix-cache block.
const blockTokens = 64

// The prefix cache keeps the keys and values of prompt prefixes that
// requests share (a system prompt, the earlier turns of a conversation)
// so that a later request starts from them instead of recomputing them.
//
// A block stands for blockTokens tokens, every layer, and holds them in
// one of two forms. Codes: what a compressed cache holds for the
// tokens once they have left its fp16 window (kvcache.Compressed.Export:
// the session's own format, turbo3.5's 3.5 bits instead of 16, with the
// layer's calibration where the block starts among the tokens it is
// estimated from; layers of an uncompressed format keep fp16 rows).
// Rows: the fp16 rows every format takes its tokens in. A cache refilled
// from a chain of blocks holds, bit for bit, what computing the prefix
// gave: blocks before the last are imported as codes where they have
// them (else their rows appended, which compresses them as computing
// did), the last one's rows appended, since a cache holds its newest
// tokens in its fp16 window. So a chain can end only at a block with
// rows: the last block a request records keeps them, and so does a
// block where a later request's prompt parts from the cached ones (a
// system prompt's end, found when the second request differing after it
// comes: its codes are then replaced by rows, which serve the chains
// that go on past it too); the others keep codes where they can (a block
// whose codes depend on tokens after it, the calibration's, or still in
// the window when the prompt is in, keeps rows). A block never holds
// both: its size is what one form takes. (The prompt tokens after
// the prefix are then computed as rows of another chunk; with quantized
// weights that can move a logit by an activation-rounding step, as
// batching can: see model.Batch.)
//
// Blocks are content-addressed (SHA-256 of the parent block's key, the
// block's token ids and the KV configuration, so a block stands for its
// whole prefix), reference-counted (a block is held by its children in
// the cache and by the sequences whose prompts it starts until their
// prompts are in; only blocks with neither are evicted, least recently
// used first), charged at their real bytes to the same memory budget as
// the running sequences, and checksummed (CRC-32C of its form, checked
// with its shape before every reuse: a block that fails is dropped with
// its descendants and the prefix is computed instead; the codes carry
// their own, which Import checks, with their format, model, shape and
// every code's range, so that a block that would refill a cache wrongly
// is refused with an error, and dropped, never used).
//
// The cache belongs to the scheduler's loop goroutine: only admit, step
// and finish, which that goroutine alone runs, read or change it.
type prefixCache struct {
	kvName string
	tag    string // the model's identity in exported codes
	layers int
	width  int // KVHeads·HeadDim
	limit  int // most prompt tokens recorded per request, whole blocks
	blocks map[[32]byte]*block
	bytes  int64
	clock  uint64
}

type block struct {
	key, parent [32]byte
	root        bool // no parent
	// codes, per layer: the exported codes of a compressed layer, nil for
	// an uncompressed one (whose rows k, v then hold the block); nil when
	// the block has no codes.
	codes [][]byte
	// k, v, per layer: blockTokens·width fp16 values, nil where not held.
	k, v [][]uint16
	rows bool // every layer's rows are held (then codes is nil)
	sum  uint32
	size int64 // bytes held
	// children counts the cached blocks whose parent this is; holds the
	// sequences (and insert calls) holding it. Only a block with neither
	// is evicted.
	children, holds int
	used            uint64
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func newPrefixCache(m *model.Model, kv kvcache.Config, name string, limit int) *prefixCache {
	c := &m.Config
	tag := name + " " + kv.String()
	if len(tag) > 255 {
		tag = tag[:255]
	}
	return &prefixCache{kvName: kv.String(), tag: tag, layers: c.Layers, width: c.KVHeads * c.HeadDim,
		limit: limit / blockTokens * blockTokens, blocks: map[[32]byte]*block{}}
}

// recordable returns the end of the prompt part a request records: its
// whole blocks, at most limit tokens.
func (p *prefixCache) recordable(prompt int) int { return min(prompt/blockTokens*blockTokens, p.limit) }

// prefixable reports whether a configuration's caches take their tokens
// in fp16 (all but f32), so that blocks can refill them exactly.
func prefixable(kv kvcache.Config) bool { return !strings.Contains(kv.String(), "f32") }

// rowBytes is the memory of one block's fp16 rows, every layer: what a
// recorder holds per block.
func (p *prefixCache) rowBytes() int64 { return int64(2 * 2 * p.layers * p.width * blockTokens) }

// recorderBytes is what a recorder holds for a prompt of n tokens whose
// first from are reused: the rows of the recordable blocks after them.
func (p *prefixCache) recorderBytes(from, n int) int64 {
	return int64(max(p.recordable(n)-from, 0)/blockTokens) * p.rowBytes()
}

// key returns the address of the block of ids that follows parent.
func (p *prefixCache) key(parent *[32]byte, ids []int32) [32]byte {
	h := sha256.New()
	if parent != nil {
		h.Write(parent[:])
	}
	h.Write([]byte(p.kvName))
	var b [4]byte
	for _, id := range ids {
		binary.LittleEndian.PutUint32(b[:], uint32(id))
		h.Write(b[:])
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// seal sets the block's size and checksum after a form is added.
func (b *block) seal() {
	b.size, b.sum = 0, 0
	var buf []byte
	for l := range b.k {
		for _, rows := range [][]uint16{b.k[l], b.v[l]} {
			buf = buf[:0]
			for _, x := range rows {
				buf = binary.LittleEndian.AppendUint16(buf, x)
			}
			b.sum = crc32.Update(b.sum, castagnoli, buf)
			b.size += int64(len(buf))
		}
	}
	for _, c := range b.codes {
		b.sum = crc32.Update(b.sum, castagnoli, c)
		b.size += int64(len(c))
	}
}

// intact reports whether the block's bytes still give its checksum and
// its forms have their shapes: per layer, codes or rows of blockTokens
// tokens (both for no layer; rows for every layer when rows is set).
func (b *block) intact(p *prefixCache) bool {
	sum, size := b.sum, b.size
	b.seal()
	if b.sum != sum || b.size != size {
		return false
	}
	n := p.width * blockTokens
	if len(b.k) != p.layers || len(b.v) != p.layers || b.codes != nil && (len(b.codes) != p.layers || b.rows) {
		return false
	}
	for l := range p.layers {
		hasCodes := b.codes != nil && b.codes[l] != nil
		hasRows := b.k[l] != nil || b.v[l] != nil
		if hasCodes == hasRows || hasRows && (len(b.k[l]) != n || len(b.v[l]) != n) {
			return false
		}
	}
	return true
}

// hasCodes reports whether the block can be refilled from codes (an
// uncompressed layer's rows count as its codes).
func (b *block) hasCodes() bool { return b.codes != nil }

// match returns the longest chain of cached blocks that prompt starts
// with and that can end there (its last block has rows), leaving at least
// one prompt token to compute (its logits start the generation). The
// blocks are held (holds) until release.
func (p *prefixCache) match(prompt []int32) []*block {
	var chain []*block
	end := 0
	var parent *[32]byte
	for n := blockTokens; n < len(prompt); n += blockTokens {
		k := p.key(parent, prompt[n-blockTokens:n])
		b, ok := p.blocks[k]
		if !ok {
			break
		}
		if !b.intact(p) {
			p.drop(b)
			break
		}
		chain = append(chain, b)
		if b.rows {
			end = len(chain)
		}
		parent = &b.key
	}
	chain = chain[:end]
	p.clock++
	for _, b := range chain {
		b.holds++
		b.used = p.clock
	}
	return chain
}

// release ends holds that match took (or insert).
func (p *prefixCache) release(chain []*block) {
	for _, b := range chain {
		b.holds--
	}
}

// drop removes b and every block below it.
func (p *prefixCache) drop(b *block) {
	for _, c := range p.blocks {
		if !c.root && c.parent == b.key {
			p.drop(c)
		}
	}
	p.remove(b)
}

// remove takes b, which no cached block follows, out of the cache.
func (p *prefixCache) remove(b *block) {
	if p.blocks[b.key] == b {
		if parent := p.parentOf(b); parent != nil {
			parent.children--
		}
		delete(p.blocks, b.key)
		p.bytes -= b.size
	}
}

// cached reports whether b is still in the cache (not dropped since it
// was found).
func (p *prefixCache) cached(b *block) bool { return p.blocks[b.key] == b }

// evict removes unheld blocks, least recently used first, until want
// bytes are free or none is left to remove; it returns the bytes freed.
// A block is removable once no cached block follows it, so the
// candidates are the unheld leaves, kept in a heap by last use; a parent
// whose last child goes joins them.
func (p *prefixCache) evict(want int64) int64 {
	var h lruHeap
	for _, b := range p.blocks {
		if b.children == 0 && b.holds == 0 {
			h = append(h, b)
		}
	}
	heap.Init(&h)
	var freed int64
	for freed < want && h.Len() > 0 {
		b := heap.Pop(&h).(*block)
		parent := p.parentOf(b)
		freed += b.size
		p.remove(b)
		if parent != nil && parent.children == 0 && parent.holds == 0 {
			heap.Push(&h, parent)
		}
	}
	return freed
}

// lruHeap orders blocks by last use, least recent first.
type lruHeap []*block

func (h lruHeap) Len() int           { return len(h) }
func (h lruHeap) Less(i, j int) bool { return h[i].used < h[j].used }
func (h lruHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *lruHeap) Push(x any)        { *h = append(*h, x.(*block)) }
func (h *lruHeap) Pop() any {
	old := *h
	b := old[len(old)-1]
	*h = old[:len(old)-1]
	return b
}

// evictable returns the bytes evict could free: every block's but those
// held and their ancestors.
func (p *prefixCache) evictable() int64 {
	pinned := map[*block]bool{}
	for _, b := range p.blocks {
		if b.holds == 0 {
			continue
		}
		for y := b; y != nil && !pinned[y]; y = p.parentOf(y) {
			pinned[y] = true // a held block and its ancestors stay
		}
	}
	free := p.bytes
	for b := range pinned {
		free -= b.size
	}
	return free
}

// parentOf returns b's parent in the cache, nil for a root.
func (p *prefixCache) parentOf(b *block) *block {
	if b.root {
		return nil
	}
	return p.blocks[b.parent]
}

// restore returns a session holding the chain's tokens, its caches made
// by kv and refilled from the blocks (codes imported, rows appended: see
// prefixCache), each then wrapped by rec if not nil, able to hold limit
// tokens in all.
func (p *prefixCache) restore(m *model.Model, kv kvcache.Maker, rec *recorder, chain []*block, limit int) (*model.Session, error) {
	caches := make([]kvcache.Cache, p.layers)
	k, v := make([]float32, p.width), make([]float32, p.width)
	for l := range caches {
		c, err := kv.NewCache(l, m.CacheShape())
		if err != nil {
			return nil, err
		}
		for i, b := range chain {
			if i < len(chain)-1 && b.hasCodes() && b.codes[l] != nil {
				cc, ok := c.(*kvcache.Compressed)
				if !ok {
					return nil, fmt.Errorf("server: prefix block of codes for layer %d, whose cache is %T", l, c)
				}
				if err := cc.Import(p.tag, b.codes[l]); err != nil {
					return nil, fmt.Errorf("server: prefix block: %w", err)
				}
				continue
			}
			for t := range blockTokens {
				toF32(k, b.k[l][t*p.width:(t+1)*p.width])
				toF32(v, b.v[l][t*p.width:(t+1)*p.width])
				if err := c.Append(k, v); err != nil {
					return nil, fmt.Errorf("server: prefix block: %w", err)
				}
			}
		}
		if n := c.Len(); n != len(chain)*blockTokens {
			return nil, fmt.Errorf("server: prefix blocks refilled layer %d with %d tokens, want %d", l, n, len(chain)*blockTokens)
		}
		if rec != nil {
			c = rec.wrap(l, c)
		}
		caches[l] = c
	}
	return m.Resume(caches, len(chain)*blockTokens, limit)
}

func toF32(dst []float32, src []uint16) {
	for i, x := range src {
		dst[i] = half.F16ToF32(half.F16(x))
	}
}

// recorder wraps a sequence's caches and keeps the fp16 rows of the
// prompt tokens that fill whole blocks not in the prefix cache yet.
type recorder struct {
	from, to int             // the token positions recorded
	k, v     [][]uint16      // per layer
	pos      []int           // per layer: tokens appended so far
	caches   []kvcache.Cache // per layer: the wrapped cache
}

// newRecorder records positions [from, to) of a sequence.
func newRecorder(layers, width, from, to int) *recorder {
	r := &recorder{from: from, to: to, k: make([][]uint16, layers), v: make([][]uint16, layers), pos: make([]int, layers),
		caches: make([]kvcache.Cache, layers)}
	for l := range layers {
		r.pos[l] = from
		r.k[l] = make([]uint16, 0, (to-from)*width)
		r.v[l] = make([]uint16, 0, (to-from)*width)
	}
	return r
}

// bytes is the recorder's memory.
func (r *recorder) bytes(layers, width int) int64 { return int64(4 * layers * width * (r.to - r.from)) }

// wrap returns c, recording what layer l appends; the wrapper attends a
// prompt's chunk at once where c can (kvcache.ChunkAttender,
// kvcache.LastAttender), as c alone would.
func (r *recorder) wrap(l int, c kvcache.Cache) kvcache.Cache {
	r.caches[l] = c
	t := &teeCache{Cache: c, r: r, l: l}
	switch c.(type) {
	case kvcache.ChunkAttender:
		return teeChunk{t}
	case kvcache.LastAttender:
		return teeLast{t}
	}
	return t
}

type teeCache struct {
	kvcache.Cache
	r *recorder
	l int
}

func (t *teeCache) Append(k, v []float32) error {
	if err := t.Cache.Append(k, v); err != nil {
		return err
	}
	t.record(k, v)
	return nil
}

// record keeps one appended token's keys and values, while the recorded
// positions last.
func (t *teeCache) record(k, v []float32) {
	r := t.r
	if r.pos[t.l] < r.to {
		for _, x := range k {
			r.k[t.l] = append(r.k[t.l], uint16(half.F32ToF16(x)))
		}
		for _, x := range v {
			r.v[t.l] = append(r.v[t.l], uint16(half.F32ToF16(x)))
		}
	}
	r.pos[t.l]++
}

// teeChunk is a teeCache over a kvcache.ChunkAttender.
type teeChunk struct{ *teeCache }

// AppendAttend appends and attends a chunk with the wrapped cache, then
// records its tokens.
func (t teeChunk) AppendAttend(out, q, k, v []float32, n int, scale float32) error {
	if err := t.Cache.(kvcache.ChunkAttender).AppendAttend(out, q, k, v, n, scale); err != nil {
		return err
	}
	w := len(k) / max(n, 1)
	for i := range n {
		t.record(k[i*w:(i+1)*w], v[i*w:(i+1)*w])
	}
	return nil
}

// teeLast is a teeCache over a kvcache.LastAttender.
type teeLast struct{ *teeCache }

// AttendLast attends the chunk that Append recorded with the wrapped
// cache.
func (t teeLast) AttendLast(out, q []float32, n int, scale float32) {
	t.Cache.(kvcache.LastAttender).AttendLast(out, q, n, scale)
}

// SetPool passes the model's pool on to the wrapped cache.
func (t *teeCache) SetPool(p *tensor.Pool) { kvcache.UsePool(t.Cache, p) }

// insert adds the recorded blocks of prompt (positions [r.from, done),
// whole blocks) that follow the chain: each in codes where the
// sequence's caches hold them final, else in rows; in rows the last one
// and any cached block that a new one follows (a chain parts there: see
// prefixCache). It returns the bytes added. A block is added or changed
// only while freeSpace allows it; the blocks it passes are held
// meanwhile, so that making room never evicts them. It stops at a chain
// whose blocks were dropped since the sequence matched them.
func (p *prefixCache) insert(prompt []int32, chain []*block, r *recorder, done int, freeSpace func(int64) bool) int64 {
	var parent *block
	if len(chain) > 0 {
		parent = chain[len(chain)-1]
	}
	var path []*block
	defer func() { p.release(path) }()
	hold := func(b *block) {
		b.holds++
		path = append(path, b)
	}
	var added int64
	// grow gives b (positions [lo, lo+blockTokens)) the form it needs:
	// rows with wantRows (replacing its codes), else codes if it has no
	// form yet and the caches hold them (else rows); false if the budget
	// has no room.
	grow := func(b *block, wantRows bool, lo int) bool {
		if b.rows || !wantRows && b.codes != nil {
			return true
		}
		var nb block
		if !wantRows {
			nb.codes = p.export(r, lo)
		}
		p.addRows(&nb, r, lo)
		nb.seal()
		delta := nb.size - b.size
		if delta > 0 && !freeSpace(delta) {
			return false
		}
		b.codes, b.k, b.v, b.rows, b.size, b.sum = nb.codes, nb.k, nb.v, nb.rows, nb.size, nb.sum
		p.bytes += delta
		added += delta
		return true
	}
	end := min(done, r.to)
	cached := false // parent was cached before this request
	for n := r.from + blockTokens; n <= end; n += blockTokens {
		var pk *[32]byte
		if parent != nil {
			if !p.cached(parent) {
				break
			}
			pk = &parent.key
		}
		k := p.key(pk, prompt[n-blockTokens:n])
		lo := n - blockTokens
		if b, ok := p.blocks[k]; ok { // cached before: add what it lacks
			hold(b)
			grow(b, n == end, lo)
			parent, cached = b, true
			continue
		}
		if cached && !parent.rows && lo-blockTokens >= r.from {
			grow(parent, true, lo-blockTokens) // a chain parts here
		}
		b := &block{key: k, root: parent == nil}
		if !grow(b, n == end, lo) {
			break
		}
		if parent != nil {
			b.parent = parent.key
			parent.children++
		}
		p.clock++
		b.used = p.clock
		p.blocks[k] = b
		hold(b)
		parent, cached = b, false
	}
	return added
}

// export returns the codes of positions [lo, lo+blockTokens) from the
// recorded sequence's caches (an uncompressed layer: nil), or nil if a
// compressed layer does not hold them final, they depend on tokens after
// the block (its calibration's), or no layer is compressed (rows are
// then the block's one form). A tiered format's tokens go in their
// high-rate codes, made again from the recorded rows where the cache has
// re-coded them (kvcache.Compressed.ExportRows).
func (p *prefixCache) export(r *recorder, lo int) [][]byte {
	for _, c := range r.caches { // every layer checked before any works
		if cc, ok := c.(*kvcache.Compressed); ok && (lo+blockTokens > cc.CompressedLen() || lo+blockTokens < cc.CalibrationTokens()) {
			return nil
		}
	}
	var codes [][]byte
	for l, c := range r.caches {
		cc, ok := c.(*kvcache.Compressed)
		if !ok {
			continue
		}
		i, j := (lo-r.from)*p.width, (lo-r.from+blockTokens)*p.width
		b, err := cc.ExportRows(p.tag, lo, lo+blockTokens, r.k[l][i:j], r.v[l][i:j])
		if err != nil {
			return nil
		}
		if codes == nil {
			codes = make([][]byte, p.layers)
		}
		codes[l] = b
	}
	return codes
}

// addRows copies into b, which holds nothing yet, the recorded rows of
// positions [lo, lo+blockTokens): every layer's if b has no codes (b then
// holds rows), else the uncompressed layers' (their codes).
func (p *prefixCache) addRows(b *block, r *recorder, lo int) {
	b.k, b.v = make([][]uint16, p.layers), make([][]uint16, p.layers)
	i, j := (lo-r.from)*p.width, (lo-r.from+blockTokens)*p.width
	for l := range p.layers {
		if b.codes == nil || b.codes[l] == nil {
			// copies: the recorder goes when its sequence does
			b.k[l], b.v[l] = slices.Clone(r.k[l][i:j]), slices.Clone(r.v[l][i:j])
		}
	}
	b.rows = b.codes == nil
}
