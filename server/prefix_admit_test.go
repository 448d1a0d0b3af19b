package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// checkScheduler checks, on the scheduler's loop goroutine (a Stepper's
// Step), that its accounting is exact: the reservations add up to the
// admitted sequences', they and the prefix cache fit the budget, the
// cache's byte count is what its blocks hold, each block holds one form
// with its shape and checksum, no block is orphaned, and each block's
// children and holds are exactly the cached blocks below it and the
// admitted sequences whose chains hold it.
func checkScheduler(t testing.TB, sc *scheduler) {
	sc.mu.Lock()
	reserved := sc.reserved
	sc.mu.Unlock()
	var want int64
	holds := map[*block]int{}
	for _, q := range sc.active {
		want += q.j.reserve
		for _, b := range q.chain {
			holds[b]++
		}
	}
	if reserved != want {
		t.Errorf("reserved %d, the admitted sequences' reservations add up to %d", reserved, want)
	}
	pc := sc.prefix
	if reserved+pc.bytes > sc.budget {
		t.Errorf("reserved %d and prefix cache %d over the budget %d", reserved, pc.bytes, sc.budget)
	}
	if held := heldBytes(pc); pc.bytes != held {
		t.Errorf("prefix cache counts %d bytes, its blocks hold %d", pc.bytes, held)
	}
	children := map[[32]byte]int{}
	for _, b := range pc.blocks {
		if !b.root {
			children[b.parent]++
			if _, ok := pc.blocks[b.parent]; !ok {
				t.Errorf("a cached block without its parent")
			}
		}
	}
	for _, b := range pc.blocks {
		if b.children != children[b.key] || b.holds != holds[b] {
			t.Errorf("a block counts %d children and %d holds, has %d and %d", b.children, b.holds, children[b.key], holds[b])
		}
		if !b.intact(pc) {
			t.Errorf("a cached block fails its checksum or shape (rows %v, codes %v)", b.rows, b.codes != nil)
		}
	}
}

// TestPrefixAdmissionConcurrent: many clients at once, sharing three
// system prompts (cached first, one request each), a third of them
// hanging up at random moments, under a budget that fits three sequences
// and half a prefix block, so that admission, prefix reuse, recording,
// eviction and cancellation interleave. At every step the accounting is exact (checkScheduler);
// every request is answered in full or ends canceled; at the end nothing
// is reserved. (The answers themselves are not compared with a cacheless
// server's here: with the Q8_0 weights, a prompt computed beside other
// sequences or in other chunks can move a logit by an activation-rounding
// step with or without the cache, see model.Batch; TestPrefixCache,
// TestPrefixCompressed and TestPrefixRestoreExact check exactness where
// the chunks are the same.) Run with -race: the handlers and the
// scheduler's loop share only what its mutex guards (admission refills
// sessions outside it).
func TestPrefixAdmissionConcurrent(t *testing.T) {
	for _, kv := range []string{"f16", "turbo3.5"} {
		t.Run(kv, func(t *testing.T) {
			if testing.Short() && kv != "f16" {
				t.Skip("the compressed format without -short (slow with the pure-Go kernels)")
			}
			m := withKV(t, kv)
			prompt := func(i int) string {
				return fmt.Sprintf("System %d. ", i%3) + longPrompt()[:len(longPrompt())/2] + fmt.Sprintf(" Question %d?", i%2)
			}
			ids := m.Tokenizer.Encode(prompt(0), true)
			const maxTokens = 4
			probe, _ := start(t, m, Options{})
			e := probe.eng.Load()
			fixed := e.budget.Weights + e.budget.Scratch + e.budget.Reserve
			one := reservation(t, probe, m, ids, maxTokens, 0) + e.sched.prefix.recorderBytes(0, len(ids)+8)
			g := &gate{inner: NewBatched(m.Model)}
			o := Options{Mem: fixed + 3*one + e.sched.prefix.rowBytes()/2, Parallel: 4, Queue: 64, PrefillTokens: blockTokens,
				Stepper: func(*model.Model) Stepper { return g }}
			s, ts := start(t, m, o)
			sc := s.eng.Load().sched
			seen, evicted := map[*block]bool{}, 0 // the loop goroutine's
			g.check = func([]*StepSeq) {
				checkScheduler(t, sc)
				for b := range seen {
					if !sc.prefix.cached(b) {
						evicted++
						delete(seen, b)
					}
				}
				for _, b := range sc.prefix.blocks {
					seen[b] = true
				}
			}
			clients := 36
			if testing.Short() {
				clients = 15
			}
			for i := range 3 {
				complete(t, ts.URL, prompt(i), maxTokens)
			}
			stop := make(chan struct{})
			var scrapes sync.WaitGroup
			scrapes.Go(func() { // /metrics read all along
				for {
					select {
					case <-stop:
						return
					default:
						metric(t, ts.URL, "turbomem_prefix_cache_bytes")
						time.Sleep(time.Millisecond)
					}
				}
			})
			var wg sync.WaitGroup
			var mu sync.Mutex
			answered, canceled := 0, 0
			for i := range clients {
				wg.Go(func() {
					p := prompt(i)
					ctx, cancel := context.WithCancel(context.Background())
					defer cancel()
					if i%3 == 2 {
						time.AfterFunc(time.Duration(i)*time.Millisecond, cancel)
					}
					body := fmt.Sprintf(`{"prompt":%q,"max_tokens":%d,"temperature":0}`, p, maxTokens)
					req, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/v1/completions", strings.NewReader(body))
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						mu.Lock()
						canceled++
						mu.Unlock()
						return
					}
					c := decode[completionResponse](t, resp)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case resp.StatusCode == 200:
						answered++
						if u := c.Usage; u.PromptTokens != len(m.Tokenizer.Encode(p, true)) || u.CompletionTokens < 1 || u.CompletionTokens > maxTokens || c.Choices[0].Text == "" {
							t.Errorf("request %d: usage %+v, text %q", i, u, c.Choices[0].Text)
						}
					case ctx.Err() != nil:
						canceled++
					default:
						t.Errorf("request %d: status %d", i, resp.StatusCode)
					}
				})
			}
			wg.Wait()
			close(stop)
			scrapes.Wait()
			if answered < clients*2/3 || answered+canceled != clients {
				t.Errorf("%d answered, %d canceled of %d", answered, canceled, clients)
			}
			if r := metric(t, ts.URL, `turbomem_prefix_tokens_total{kind="reused"}`); r == 0 {
				t.Error("no prefix reused")
			}
			waitFor(t, func() bool { return metric(t, ts.URL, `turbomem_kv_bytes_reserved{format="`+kv+`"}`) == 0 })
			complete(t, ts.URL, prompt(0), maxTokens) // one more step checked, alone
			if evicted == 0 {
				t.Error("no prefix block evicted: the budget is not tight enough to test eviction")
			}
		})
	}
}

// TestPrefixRefusedCodes: a cached block whose codes carry a valid
// checksum but a value no encoder writes (a NaN scale: a forged or
// damaged block resealed) is refused when a session is refilled from it:
// the request is answered as a cacheless server answers it, from its
// computed prompt, the chain is dropped from the cache, and the refusal
// is counted.
func TestPrefixRefusedCodes(t *testing.T) {
	m, srv, with, without := compressedServers(t)
	p := "Notice. " + longPrompt() + longPrompt() + "When?"
	complete(t, with.URL, p, 4)
	pc := srv.eng.Load().sched.prefix
	var forged *block
	for _, b := range pc.blocks {
		if b.codes != nil && b.codes[0] != nil {
			forged = b
		}
	}
	if forged == nil {
		t.Fatal("no block of codes cached")
	}
	f, err := kvcache.ParseFormat("turbo3.5")
	if err != nil {
		t.Fatal(err)
	}
	d := m.Model.Config.HeadDim
	bits, err := f.Bits(d)
	if err != nil {
		t.Fatal(err)
	}
	// The first value code of the last head: its first two bytes are the
	// fp16 scale of its outlier part.
	c := forged.codes[0]
	at := len(c) - 4 - blockTokens*int(math.Round(bits*float64(d)/8))
	binary.LittleEndian.PutUint16(c[at:], 0x7e00)
	binary.LittleEndian.PutUint32(c[len(c)-4:], crc32.Checksum(c[:len(c)-4], crc32.MakeTable(crc32.Castagnoli)))
	forged.seal()
	got := complete(t, with.URL, p, 8)
	if want := complete(t, without.URL, p, 8); got != want {
		t.Fatalf("after the refused block %q, a cacheless server %q", got, want)
	}
	if n := metric(t, with.URL, "turbomem_prefix_chains_refused_total"); n != 1 {
		t.Fatalf("%g chains refused, want 1", n)
	}
	if pc.cached(forged) {
		t.Fatal("the refused block is still cached")
	}
	if r := metric(t, with.URL, `turbomem_prefix_tokens_total{kind="reused"}`); r != 0 {
		t.Fatalf("%g tokens reused from the refused chain", r)
	}
}
