package server

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/half"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// longPrompt is a shared prefix of a few hundred tokens.
func longPrompt() string {
	return strings.Repeat("The committee met on Tuesday to review the budget for the new library. ", 10)
}

func metric(t testing.TB, url, name string) float64 {
	t.Helper()
	r, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no %s in metrics", name)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

func complete(t testing.TB, url, prompt string, n int) string {
	t.Helper()
	resp := post(t, url+"/v1/completions", fmt.Sprintf(`{"prompt":%q,"max_tokens":%d,"temperature":0}`, prompt, n))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	return decode[completionResponse](t, resp).Choices[0].Text
}

// TestPrefixCache: a request that shares a prefix with an earlier one
// refills the prefix's whole blocks from the cache instead of computing
// them, and answers exactly what a server without the cache answers, for
// a full-precision and a compressed format: the refilled caches are bit
// for bit the computed ones, and the prompt's rest is computed in the
// same chunks either way (the prompts are under 2·64 + 128 tokens, so
// without the cache the first step feeds 128 tokens and the second the
// rest; with it, the 128 refilled tokens are skipped and the rest fed as
// one chunk too).
//
// A tiered format's blocks hold its high-rate codes (made again from the
// recorded rows for the tokens the cache has re-coded), and a refilled
// cache re-codes them at its own length, to the same answers.
func TestPrefixCache(t *testing.T) {
	for _, kv := range []string{"f16", "turbo3.5", "tcq3.5>2@100"} {
		t.Run(kv, func(t *testing.T) {
			if testing.Short() && kv != "f16" {
				t.Skip("the compressed formats without -short (slow with the pure-Go kernels)")
			}
			m := withKV(t, kv)
			srv, with := start(t, m, Options{})
			_, without := start(t, m, Options{NoPrefixCache: true})
			shared := longPrompt()
			n := len(m.Tokenizer.Encode(shared+"Question one?", true))
			first := complete(t, with.URL, shared+"Question one?", 12)
			if got := metric(t, with.URL, `turbomem_prefix_tokens_total{kind="reused"}`); got != 0 {
				t.Fatalf("first request reused %g tokens", got)
			}
			if want := complete(t, without.URL, shared+"Question one?", 12); first != want {
				t.Fatalf("first answer %q, without the cache %q", first, want)
			}
			pc := srv.eng.Load().sched.prefix
			if blocks := len(pc.blocks); blocks != n/blockTokens {
				t.Fatalf("%d blocks cached for a prompt of %d tokens", blocks, n)
			}
			if got := metric(t, with.URL, "turbomem_prefix_cache_bytes"); got != float64(pc.bytes) || pc.bytes != heldBytes(pc) {
				t.Fatalf("prefix cache reports %g bytes, counts %d, holds %d", got, pc.bytes, heldBytes(pc))
			}
			if coded := codedBlocks(pc); strings.Contains(kv, ">") && coded == 0 {
				t.Fatalf("no block of %d holds codes", len(pc.blocks))
			}
			for _, q := range []string{"Question two, a longer one?", "Question one?"} {
				got := complete(t, with.URL, shared+q, 12)
				if want := complete(t, without.URL, shared+q, 12); got != want {
					t.Fatalf("%q: with the prefix cache %q, without %q", q, got, want)
				}
			}
			if got := metric(t, with.URL, `turbomem_prefix_tokens_total{kind="reused"}`); got < float64(2*(n/blockTokens-1)*blockTokens) {
				t.Fatalf("reused %g tokens over two requests sharing %d", got, n)
			}
		})
	}
}

// codedBlocks returns how many of pc's blocks hold codes.
func codedBlocks(pc *prefixCache) int {
	n := 0
	for _, b := range pc.blocks {
		if b.codes != nil {
			n++
		}
	}
	return n
}

// TestPrefixChecksum: a block whose rows changed is not reused: it is
// dropped (with the blocks after it) and the prefix computed again.
func TestPrefixChecksum(t *testing.T) {
	m := testModel(t)
	s, ts := start(t, m, Options{})
	_, without := start(t, m, Options{NoPrefixCache: true})
	p := longPrompt()
	complete(t, ts.URL, p+"A?", 4)
	pc := s.eng.Load().sched.prefix
	before := len(pc.blocks)
	var root *block
	for _, b := range pc.blocks {
		if b.root {
			root = b
		}
	}
	root.k[2][5] ^= 0x0100 // a flipped bit in layer 2's keys
	got := complete(t, ts.URL, p+"B?", 8)
	if want := complete(t, without.URL, p+"B?", 8); got != want {
		t.Fatalf("after corruption %q, want %q", got, want)
	}
	if r := metric(t, ts.URL, `turbomem_prefix_tokens_total{kind="reused"}`); r != 0 {
		t.Fatalf("reused %g tokens from a corrupted chain", r)
	}
	if len(pc.blocks) != before { // dropped, then cached again by the second request
		t.Fatalf("%d blocks after recomputing, want %d", len(pc.blocks), before)
	}
}

// TestPrefixEviction: under a budget with room for the running request
// and only a few blocks, older prefixes are evicted least recently used
// first, held blocks never, and the cache never exceeds what the budget
// leaves.
func TestPrefixEviction(t *testing.T) {
	m := testModel(t)
	probe, _ := start(t, m, Options{})
	e := probe.eng.Load()
	fixed := e.budget.Weights + e.budget.Scratch + e.budget.Reserve
	prompt := func(i int) string { return fmt.Sprintf("Topic %d. ", i) + longPrompt() }
	ids := m.Tokenizer.Encode(prompt(0), true)
	one := reservation(t, probe, m, ids, 4, 0) + int64(len(ids)/blockTokens)*e.sched.prefix.rowBytes()
	blocks := int64(len(ids) / blockTokens)
	s, ts := start(t, m, Options{Mem: fixed + one + blocks*e.sched.prefix.rowBytes()*3/2, Parallel: 1})
	pc := s.eng.Load().sched.prefix
	for i := range 4 {
		complete(t, ts.URL, prompt(i), 4)
		sc := s.eng.Load().sched
		if pc.bytes > sc.budget {
			t.Fatalf("prefix cache %d bytes over the budget %d", pc.bytes, sc.budget)
		}
	}
	// Only the newest prompt's blocks can still be there; its first block
	// is found, the oldest prompt's is not.
	newest, oldest := pc.match(m.Tokenizer.Encode(prompt(3)+"x", true)), pc.match(m.Tokenizer.Encode(prompt(0)+"x", true))
	pc.release(newest)
	pc.release(oldest)
	if len(newest) == 0 || len(oldest) != 0 {
		t.Fatalf("%d blocks of the newest prefix found, %d of the oldest; want some and none", len(newest), len(oldest))
	}
}

// heldBytes adds up the bytes the prefix cache's blocks hold.
func heldBytes(pc *prefixCache) int64 {
	var n int64
	for _, b := range pc.blocks {
		for l := range b.codes {
			n += int64(len(b.codes[l]))
		}
		for l := range b.k {
			n += int64(2 * (len(b.k[l]) + len(b.v[l])))
		}
	}
	return n
}

// commonPrefix returns the length of the longest common prefix of a, b.
func commonPrefix(a, b []int32) int {
	n := 0
	for n < min(len(a), len(b)) && a[n] == b[n] {
		n++
	}
	return n
}

// compressedServers starts two servers of the embedded model in
// turbo3.5 that feed prompts in chunks of one block, with and without
// the prefix cache (the test is skipped with -short: slow with the
// pure-Go kernels).
func compressedServers(t *testing.T) (m *Model, srv *Server, with, without *httptest.Server) {
	t.Helper()
	if testing.Short() {
		t.Skip("the compressed format without -short (slow with the pure-Go kernels)")
	}
	m = withKV(t, "turbo3.5")
	o := Options{PrefillTokens: blockTokens}
	srv, with = start(t, m, o)
	o.NoPrefixCache = true
	_, without = start(t, m, o)
	return m, srv, with, without
}

// TestPrefixCompressed: requests sharing a system prompt in a compressed
// format (turbo3.5) reuse it from blocks held as the session's own codes,
// several times smaller than fp16 rows, and answer exactly (greedy) what
// a server without the prefix cache answers. The first request caches
// its blocks; the second, parting from it after the system prompt, can
// reuse only the first block (the others end in codes, and a refilled
// cache needs its newest tokens' rows) and gives the block where they
// part its rows; the third reuses the whole system prompt; the first
// one's prompt again reuses all of its blocks. Both servers feed prompts
// in chunks of one block, so reuse leaves the chunks where computing
// them puts them.
func TestPrefixCompressed(t *testing.T) {
	m, srv, with, without := compressedServers(t)
	pc := srv.eng.Load().sched.prefix
	system := "You are a careful assistant for the city library. " + longPrompt() + longPrompt()
	q := func(s string) string {
		return system + s + strings.Repeat(" Say it in plain words for a reader of the notice board.", 12)
	}
	prompts := []string{q("Question one: when?"), q("Question two, a longer one: who and why?"), q("Question three: where?"), q("Question one: when?")}
	ids := make([][]int32, len(prompts))
	for i, p := range prompts {
		ids[i] = m.Tokenizer.Encode(p, true)
	}
	shared := commonPrefix(ids[0], ids[1]) / blockTokens * blockTokens
	if shared < 4*blockTokens || commonPrefix(ids[2], ids[0]) < shared || commonPrefix(ids[2], ids[1]) < shared {
		t.Fatalf("the prompts share %d tokens; the test needs whole blocks of a common system prompt", shared)
	}
	wantReused := []int{0, blockTokens, shared, (len(ids[3]) - 1) / blockTokens * blockTokens}
	reused := 0.0
	for i, p := range prompts {
		got := complete(t, with.URL, p, 10)
		if want := complete(t, without.URL, p, 10); got != want {
			t.Fatalf("request %d: with the compressed prefix cache %q, without %q", i, got, want)
		}
		r := metric(t, with.URL, `turbomem_prefix_tokens_total{kind="reused"}`)
		if int(r-reused) != wantReused[i] {
			t.Errorf("request %d reused %g tokens, want %d", i, r-reused, wantReused[i])
		}
		reused = r
		if got := metric(t, with.URL, "turbomem_prefix_cache_bytes"); got != float64(heldBytes(pc)) {
			t.Fatalf("request %d: prefix cache reports %g bytes, holds %d", i, got, heldBytes(pc))
		}
	}
	codes, rows := 0, 0
	for _, b := range pc.blocks {
		switch {
		case b.hasCodes() && !b.rows:
			codes++
			if ratio := float64(pc.rowBytes()) / float64(b.size); ratio < 4 {
				t.Errorf("a block of codes holds %d bytes, fp16 rows %d: %.2fx smaller, want ≥ 4x", b.size, pc.rowBytes(), ratio)
			}
		case b.rows:
			rows++
		}
	}
	if codes < len(pc.blocks)/2 {
		t.Errorf("%d of %d blocks held as codes alone (%d with rows)", codes, len(pc.blocks), rows)
	}
}

// TestPrefixRestoreExact: a session refilled from compressed blocks (a
// system prompt cached by one request, its end given rows by a second
// that parts from it there) gives, bit for bit, the logits of a session
// that computed the prefix in the same chunks.
func TestPrefixRestoreExact(t *testing.T) {
	if testing.Short() {
		t.Skip("slow with the pure-Go kernels")
	}
	m := withKV(t, "turbo3.5")
	pc := newPrefixCache(m.Model, m.KV, m.Name, 1024)
	feed := func(s *model.Session, ids []int32) []float32 {
		t.Helper()
		var logits []float32
		for i := 0; i < len(ids); i += blockTokens {
			var err error
			if logits, err = s.Forward(ids[i:min(i+blockTokens, len(ids))], false); err != nil {
				t.Fatal(err)
			}
		}
		return logits
	}
	always := func(int64) bool { return true }
	system := "You are a careful assistant for the city library. " + longPrompt() + longPrompt()
	tail := strings.Repeat(" Say it in plain words for a reader of the notice board.", 12)
	var shared int
	for i, q := range []string{"Question one: when?", "Question two: who?"} {
		ids := m.Tokenizer.Encode(system+q+tail, true)
		chain := pc.match(ids)
		rec := newRecorder(pc.layers, pc.width, len(chain)*blockTokens, pc.recordable(len(ids)))
		var s *model.Session
		var err error
		if len(chain) > 0 {
			s, err = pc.restore(m.Model, m.KV, rec, chain, len(ids))
		} else {
			s, err = m.Model.NewSession(kvcache.NewCacheFunc(func(l int, sh kvcache.Shape) (kvcache.Cache, error) {
				c, err := m.KV.NewCache(l, sh)
				return rec.wrap(l, c), err
			}), len(ids))
		}
		if err != nil {
			t.Fatal(err)
		}
		feed(s, ids[len(chain)*blockTokens:])
		pc.insert(ids, chain, rec, rec.to, always)
		pc.release(chain)
		if i == 1 {
			shared = commonPrefix(ids, m.Tokenizer.Encode(system+"Question one: when?"+tail, true)) / blockTokens * blockTokens
		}
	}
	ids := m.Tokenizer.Encode(system+"Question three: where?"+tail, true)
	chain := pc.match(ids)
	defer pc.release(chain)
	if len(chain)*blockTokens != shared || shared < 3*blockTokens {
		t.Fatalf("%d blocks reused, want the %d shared tokens' (≥ 3 blocks)", len(chain), shared)
	}
	codes := 0
	for _, b := range chain[:len(chain)-1] {
		if b.hasCodes() {
			codes++
		}
	}
	if codes < len(chain)-2 {
		t.Fatalf("%d of the %d blocks before the chain's end have codes", codes, len(chain)-1)
	}
	restored, err := pc.restore(m.Model, m.KV, nil, chain, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	computed, err := m.Model.NewSession(m.KV, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	feed(computed, ids[:shared])
	got, want := feed(restored, ids[shared:shared+1]), feed(computed, ids[shared:shared+1])
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("logit %d: %g refilled from blocks, %g computed", i, got[i], want[i])
		}
	}
}

// BenchmarkPrefixRestore: refilling a session from a cached 1024-token
// prefix (16 blocks), f16 rows against turbo3.5 codes; reports the
// cache's bytes per block.
func BenchmarkPrefixRestore(b *testing.B) {
	for _, kv := range []string{"f16", "turbo3.5"} {
		b.Run(kv, func(b *testing.B) {
			m := withKV(b, kv)
			pc := newPrefixCache(m.Model, m.KV, m.Name, 1024)
			ids := m.Tokenizer.Encode(strings.Repeat(longPrompt(), 9), true)[:1024+2*blockTokens]
			rec := newRecorder(pc.layers, pc.width, 0, 1024)
			s, err := m.Model.NewSession(kvcache.NewCacheFunc(func(l int, sh kvcache.Shape) (kvcache.Cache, error) {
				c, err := m.KV.NewCache(l, sh)
				return rec.wrap(l, c), err
			}), len(ids))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.Forward(ids, false); err != nil {
				b.Fatal(err)
			}
			pc.insert(ids, nil, rec, rec.to, func(int64) bool { return true })
			b.ResetTimer()
			for range b.N {
				chain := pc.match(ids)
				if len(chain) != 1024/blockTokens {
					b.Fatalf("%d blocks matched", len(chain))
				}
				if _, err := pc.restore(m.Model, m.KV, nil, chain, len(ids)); err != nil {
					b.Fatal(err)
				}
				pc.release(chain)
			}
			b.ReportMetric(float64(pc.bytes)/float64(len(pc.blocks)), "B/block")
		})
	}
}

// syntheticChains returns a prefix cache of n chains of depth blocks of
// size bytes each (no forms: eviction looks only at the links, holds and
// last uses), chain c's blocks last used at c·depth + d.
func syntheticChains(n, depth int, size int64) (*prefixCache, [][]*block) {
	p := &prefixCache{blocks: map[[32]byte]*block{}}
	chains := make([][]*block, n)
	for c := range n {
		var parent *block
		for d := range depth {
			var k [32]byte
			k[0], k[1], k[2] = byte(c), byte(c>>8), byte(d)
			b := &block{key: k, root: parent == nil, size: size, used: uint64(c*depth + d)}
			if parent != nil {
				b.parent = parent.key
				parent.children++
			}
			p.blocks[k] = b
			p.bytes += size
			chains[c] = append(chains[c], b)
			parent = b
		}
	}
	return p, chains
}

// TestPrefixEvictOrder: eviction frees the least recently used unheld
// leaves first, a parent once its children are gone, never a held block
// or its ancestors, and stops once enough is free.
func TestPrefixEvictOrder(t *testing.T) {
	p, chains := syntheticChains(3, 3, 10)
	chains[2][2].used = 0 // the newest chain's leaf, used least recently
	chains[1][1].holds = 1
	if got := p.evictable(); got != 70 {
		t.Fatalf("evictable %d bytes, want 70 (all but chain 1's first two blocks)", got)
	}
	if freed := p.evict(15); freed != 20 || p.cached(chains[2][2]) || p.cached(chains[0][2]) || !p.cached(chains[0][1]) {
		t.Fatalf("evict(15) freed %d; want chain 2's leaf (least recent), then chain 0's, and no more", freed)
	}
	if freed := p.evict(1000); freed != 50 || p.bytes != 20 || len(p.blocks) != 2 {
		t.Fatalf("evict(all) freed %d, left %d bytes in %d blocks; want 50, and chain 1's held block and its parent", freed, p.bytes, len(p.blocks))
	}
	for _, b := range chains[1][:2] {
		if !p.cached(b) {
			t.Fatal("a held block or its ancestor was evicted")
		}
	}
}

// BenchmarkPrefixEvict: making room for 1000 blocks in a cache of 20,000
// (2000 chains of 10), the scheduler's lock held meanwhile.
func BenchmarkPrefixEvict(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		p, _ := syntheticChains(2000, 10, 1000)
		b.StartTimer()
		if freed := p.evict(1000 * 1000); freed != 1000*1000 {
			b.Fatalf("freed %d", freed)
		}
	}
}

// TestRecorderKeepsChunks: the prefix recorder's wrapper attends a
// prompt's chunk at once where its cache can (kvcache.ChunkAttender for
// compressed caches, kvcache.LastAttender for f16), and records the
// chunk's keys and values as a wrapper that appends token by token does
// (within the rounding the two attention orders give the later layers).
func TestRecorderKeepsChunks(t *testing.T) {
	for _, kv := range []string{"f16", "turbo3.5"} {
		m := withKV(t, kv)
		pc := newPrefixCache(m.Model, m.KV, m.Name, 1024)
		ids := m.Tokenizer.Encode(longPrompt()+longPrompt(), true)[:3*blockTokens]
		record := func(chunked bool) *recorder {
			rec := newRecorder(pc.layers, pc.width, 0, len(ids))
			s, err := m.Model.NewSession(kvcache.NewCacheFunc(func(l int, sh kvcache.Shape) (kvcache.Cache, error) {
				c, err := m.KV.NewCache(l, sh)
				if !chunked {
					rec.caches[l] = c
					return &teeCache{Cache: c, r: rec, l: l}, err
				}
				w := rec.wrap(l, c)
				_, chunk := w.(kvcache.ChunkAttender)
				_, last := w.(kvcache.LastAttender)
				if chunk != (kv != "f16") || last != (kv == "f16") {
					t.Errorf("%s: the wrapper attends chunks %v, last rows %v", kv, chunk, last)
				}
				return w, err
			}), len(ids))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Forward(ids, false); err != nil {
				t.Fatal(err)
			}
			return rec
		}
		a, b := record(true), record(false)
		for l := range pc.layers {
			if a.pos[l] != len(ids) || len(a.k[l]) != len(b.k[l]) || len(a.v[l]) != len(b.v[l]) || len(a.k[l]) != len(ids)*pc.width {
				t.Fatalf("%s layer %d: %d positions, %d and %d values recorded, want %d", kv, l, a.pos[l], len(a.k[l]), len(b.k[l]), len(ids)*pc.width)
			}
			for i := range a.k[l] {
				x, y := half.F16ToF32(half.F16(a.k[l][i])), half.F16ToF32(half.F16(b.k[l][i]))
				p, q := half.F16ToF32(half.F16(a.v[l][i])), half.F16ToF32(half.F16(b.v[l][i]))
				if math.Abs(float64(x-y)) > 0.02*(1+math.Abs(float64(y))) || math.Abs(float64(p-q)) > 0.02*(1+math.Abs(float64(q))) {
					t.Fatalf("%s layer %d value %d: recorded %g, %g chunked; %g, %g token by token", kv, l, i, x, p, y, q)
				}
			}
		}
	}
}
