package server

import (
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
// A block holds blockTokens tokens' keys and values, every layer, as the
// fp16 rows every format takes its tokens in (a compressed cache encodes
// a token from its fp16 window copy), so refilling a fresh cache with a
// prefix's blocks gives, bit for bit, the cache that computing the prefix
// gave. (The prompt tokens after the prefix are then computed as rows of
// another chunk; with quantized weights that can move a logit by an
// activation-rounding step, as batching can: see model.Batch.) Blocks are content-addressed (SHA-256 of
// the parent block's key, the block's token ids and the KV configuration,
// so a block stands for its whole prefix), reference-counted (a block is
// held by its children in the cache and by sequences being refilled from
// it; only unheld ones are evicted, least recently used first), charged
// to the same memory budget as the running sequences, and checksummed
// (CRC-32C of its rows, checked before every reuse: a block that fails is
// dropped with its descendants and the prefix is computed instead).
type prefixCache struct {
	kvName string
	layers int
	width  int // KVHeads·HeadDim
	limit  int // most prompt tokens recorded per request, whole blocks
	blocks map[[32]byte]*block
	bytes  int64
	clock  uint64
}

type block struct {
	key, parent [32]byte
	root        bool       // no parent
	k, v        [][]uint16 // per layer: blockTokens·width fp16 values
	sum         uint32
	refs        int
	used        uint64
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func newPrefixCache(m *model.Model, kv kvcache.Config, limit int) *prefixCache {
	c := &m.Config
	return &prefixCache{kvName: kv.String(), layers: c.Layers, width: c.KVHeads * c.HeadDim, limit: limit / blockTokens * blockTokens, blocks: map[[32]byte]*block{}}
}

// recordable returns the end of the prompt part a request records: its
// whole blocks, at most limit tokens.
func (p *prefixCache) recordable(prompt int) int { return min(prompt/blockTokens*blockTokens, p.limit) }

// prefixable reports whether a configuration's caches take their tokens
// in fp16 (all but f32), so that blocks can refill them exactly.
func prefixable(kv kvcache.Config) bool { return !strings.Contains(kv.String(), "f32") }

// blockBytes is the memory of one block.
func (p *prefixCache) blockBytes() int64 { return int64(2 * 2 * p.layers * p.width * blockTokens) }

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

func (b *block) checksum() uint32 {
	var sum uint32
	var buf []byte
	for l := range b.k {
		for _, rows := range [][]uint16{b.k[l], b.v[l]} {
			buf = buf[:0]
			for _, x := range rows {
				buf = binary.LittleEndian.AppendUint16(buf, x)
			}
			sum = crc32.Update(sum, castagnoli, buf)
		}
	}
	return sum
}

// match returns the longest chain of cached blocks that prompt starts
// with, leaving at least one prompt token to compute (its logits start
// the generation). The blocks are held (refs) until release.
func (p *prefixCache) match(prompt []int32) []*block {
	var chain []*block
	var parent *[32]byte
	for n := blockTokens; n < len(prompt); n += blockTokens {
		k := p.key(parent, prompt[n-blockTokens:n])
		b, ok := p.blocks[k]
		if !ok {
			break
		}
		if b.checksum() != b.sum {
			p.drop(b)
			break
		}
		chain = append(chain, b)
		parent = &b.key
	}
	p.clock++
	for _, b := range chain {
		b.refs++
		b.used = p.clock
	}
	return chain
}

func (p *prefixCache) release(chain []*block) {
	for _, b := range chain {
		b.refs--
	}
}

// drop removes b and every block below it.
func (p *prefixCache) drop(b *block) {
	for _, c := range p.blocks {
		if !c.root && c.parent == b.key {
			p.drop(c)
		}
	}
	if _, ok := p.blocks[b.key]; ok {
		delete(p.blocks, b.key)
		p.bytes -= p.blockBytes()
		if !b.root {
			if parent, ok := p.blocks[b.parent]; ok {
				parent.refs--
			}
		}
	}
}

// evict removes unheld blocks, least recently used first, until want
// bytes are free or none is left to remove; it returns the bytes freed.
func (p *prefixCache) evict(want int64) int64 {
	var freed int64
	for freed < want {
		var victim *block
		for _, b := range p.blocks {
			if b.refs == 0 && (victim == nil || b.used < victim.used) {
				victim = b
			}
		}
		if victim == nil {
			break
		}
		p.drop(victim)
		freed += p.blockBytes()
	}
	return freed
}

// restore returns a session holding the chain's tokens, its caches
// refilled from the blocks, able to hold limit tokens in all.
func (p *prefixCache) restore(m *model.Model, kv kvcache.Maker, chain []*block, limit int) (*model.Session, error) {
	caches := make([]kvcache.Cache, p.layers)
	k, v := make([]float32, p.width), make([]float32, p.width)
	for l := range caches {
		c, err := kv.NewCache(l, m.CacheShape())
		if err != nil {
			return nil, err
		}
		for _, b := range chain {
			for t := range blockTokens {
				toF32(k, b.k[l][t*p.width:(t+1)*p.width])
				toF32(v, b.v[l][t*p.width:(t+1)*p.width])
				if err := c.Append(k, v); err != nil {
					return nil, fmt.Errorf("server: prefix block: %w", err)
				}
			}
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
	from, to int        // the token positions recorded
	k, v     [][]uint16 // per layer
	pos      []int      // per layer: tokens appended so far
}

// newRecorder records positions [from, to) of a sequence.
func newRecorder(layers, width, from, to int) *recorder {
	r := &recorder{from: from, to: to, k: make([][]uint16, layers), v: make([][]uint16, layers), pos: make([]int, layers)}
	for l := range layers {
		r.pos[l] = from
		r.k[l] = make([]uint16, 0, (to-from)*width)
		r.v[l] = make([]uint16, 0, (to-from)*width)
	}
	return r
}

// bytes is the recorder's memory.
func (r *recorder) bytes(layers, width int) int64 { return int64(4 * layers * width * (r.to - r.from)) }

// wrap returns c, recording what layer l appends.
func (r *recorder) wrap(l int, c kvcache.Cache) kvcache.Cache { return &teeCache{Cache: c, r: r, l: l} }

type teeCache struct {
	kvcache.Cache
	r *recorder
	l int
}

func (t *teeCache) Append(k, v []float32) error {
	if err := t.Cache.Append(k, v); err != nil {
		return err
	}
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
	return nil
}

// SetPool passes the model's pool on to the wrapped cache.
func (t *teeCache) SetPool(p *tensor.Pool) { kvcache.UsePool(t.Cache, p) }

// insert adds the recorded blocks of prompt (positions [r.from, done),
// whole blocks) that follow the chain, and returns their bytes. A block
// is added only while freeSpace allows it.
func (p *prefixCache) insert(prompt []int32, chain []*block, r *recorder, done int, freeSpace func(int64) bool) int64 {
	var parent *[32]byte
	if len(chain) > 0 {
		parent = &chain[len(chain)-1].key
	}
	var added int64
	for n := r.from + blockTokens; n <= min(done, r.to); n += blockTokens {
		k := p.key(parent, prompt[n-blockTokens:n])
		if b, ok := p.blocks[k]; ok { // another request added it
			parent = &b.key
			continue
		}
		if !freeSpace(p.blockBytes()) {
			break
		}
		lo, hi := (n-blockTokens-r.from)*p.width, (n-r.from)*p.width
		b := &block{key: k, root: parent == nil, k: make([][]uint16, p.layers), v: make([][]uint16, p.layers)}
		if parent != nil {
			b.parent = *parent
			if pb, ok := p.blocks[*parent]; ok {
				pb.refs++
			}
		}
		for l := range p.layers { // copies: the recorder goes when its sequence does
			b.k[l] = slices.Clone(r.k[l][lo:hi])
			b.v[l] = slices.Clone(r.v[l][lo:hi])
		}
		b.sum = b.checksum()
		p.clock++
		b.used = p.clock
		p.blocks[k] = b
		p.bytes += p.blockBytes()
		added += p.blockBytes()
		parent = &b.key
	}
	return added
}
