package server

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
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
func TestPrefixCache(t *testing.T) {
	for _, kv := range []string{"f16", "turbo3.5"} {
		t.Run(kv, func(t *testing.T) {
			if testing.Short() && kv != "f16" {
				t.Skip("the compressed format without -short (slow with the pure-Go kernels)")
			}
			m := withKV(t, kv)
			_, with := start(t, m, Options{})
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
			blocks := metric(t, with.URL, "turbomem_prefix_cache_bytes") / float64(4*m.Model.Config.Layers*m.Model.Config.KVHeads*m.Model.Config.HeadDim*blockTokens)
			if int(blocks) != n/blockTokens {
				t.Fatalf("%g blocks cached for a prompt of %d tokens", blocks, n)
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
	one := reservation(t, probe, m, ids, 4, 0) + int64(len(ids)/blockTokens)*e.sched.prefix.blockBytes()
	blocks := int64(len(ids) / blockTokens)
	s, ts := start(t, m, Options{Mem: fixed + one + blocks*e.sched.prefix.blockBytes()*3/2, Parallel: 1})
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
