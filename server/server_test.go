package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

var (
	loadOnce sync.Once
	embedded *Model
	loadErr  error
)

// testModel returns the embedded model with f16 caches.
func testModel(t testing.TB) *Model {
	t.Helper()
	loadOnce.Do(func() {
		m, err := defaultmodel.Load(model.Options{})
		if err != nil {
			loadErr = err
			return
		}
		tok, err := model.LoadTokenizer(m.File())
		if err != nil {
			loadErr = err
			return
		}
		embedded = &Model{Model: m, Tokenizer: tok, Template: model.ChatPlain, KV: kvcache.F16(), Name: defaultmodel.Name}
	})
	if loadErr != nil {
		t.Fatal(loadErr)
	}
	return embedded
}

// withKV returns the embedded model served with another cache format; a
// calibrated one (klt, tcq, tiered) gets the covariances of Gaussian keys
// and values of the model's shape: codes of no quality, but the cache's
// every path.
func withKV(t testing.TB, format string) *Model {
	c, err := kvcache.Parse(format)
	if err != nil {
		t.Fatal(err)
	}
	m := *testModel(t)
	m.KV = c
	if !c.NeedsCovariances() {
		return &m
	}
	sh := m.Model.CacheShape()
	r := rand.New(rand.NewPCG(3, 4))
	tr := &kvcache.Trace{Shape: sh}
	for range 400 * sh.KVHeads * sh.HeadDim {
		tr.K = append(tr.K, float32(r.NormFloat64()))
		tr.V = append(tr.V, float32(r.NormFloat64()))
	}
	layers := make([]*kvcache.Trace, m.Model.Config.Layers)
	for i := range layers {
		layers[i] = tr
	}
	cov, err := kvcache.EstimateCovariances([][]*kvcache.Trace{layers})
	if err != nil {
		t.Fatal(err)
	}
	m.KV = c.WithCovariances(cov)
	return &m
}

// start serves m with o (Mem 1 GiB unless set) on a loopback test server.
func start(t testing.TB, m *Model, o Options) (*Server, *httptest.Server) {
	t.Helper()
	if o.Mem == 0 {
		o.Mem = 1 << 30
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if m != nil {
		if _, err := s.Load(m); err != nil {
			t.Fatal(err)
		}
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		ts.Close()
		s.Drain(context.Background())
	})
	return s, ts
}

func post(t testing.TB, url, body string, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func decode[T any](t testing.TB, r *http.Response) T {
	t.Helper()
	defer r.Body.Close()
	var v T
	if err := json.NewDecoder(r.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// greedy is the reference: the model's own session and argmax, tokens
// decoded as the server does.
func greedy(t testing.TB, m *Model, prompt []int32, n int) (string, int) {
	t.Helper()
	s, err := m.Model.NewSession(m.KV, len(prompt)+n)
	if err != nil {
		t.Fatal(err)
	}
	logits, err := s.Forward(prompt, false)
	if err != nil {
		t.Fatal(err)
	}
	dec := m.Tokenizer.NewDecoder()
	var b strings.Builder
	for i := range n {
		best := int32(0)
		for id, v := range logits {
			if v > logits[best] {
				best = int32(id)
			}
		}
		if m.Tokenizer.IsEOG(best) {
			return b.String() + dec.Flush(), i
		}
		b.WriteString(dec.Next(best))
		if i+1 < n {
			if logits, err = s.Forward([]int32{best}, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	return b.String() + dec.Flush(), n
}

// sse reads a stream's data lines, checking that it ends with [DONE].
func sse(t testing.TB, r *http.Response) []json.RawMessage {
	t.Helper()
	defer r.Body.Close()
	if ct := r.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	var out []json.RawMessage
	sc := bufio.NewScanner(r.Body)
	done := false
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("line %q is not an SSE data line", line)
		}
		if done {
			t.Fatalf("data after [DONE]: %q", line)
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		out = append(out, json.RawMessage(data))
	}
	if !done {
		t.Fatal("stream did not end with data: [DONE]")
	}
	return out
}

func TestHealthAndModels(t *testing.T) {
	s, ts := start(t, nil, Options{})
	resp, err := http.Get(ts.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 503 || decode[map[string]string](t, resp)["status"] != "loading" {
		t.Fatalf("health before Load: %d", resp.StatusCode)
	}
	if r := post(t, ts.URL+"/v1/completions", `{"prompt":"x"}`); r.StatusCode != 503 {
		t.Fatalf("completion while loading: %d", r.StatusCode)
	}
	if _, err := s.Load(testModel(t)); err != nil {
		t.Fatal(err)
	}
	resp, _ = http.Get(ts.URL + "/health")
	if resp.StatusCode != 200 || decode[map[string]string](t, resp)["status"] != "ok" {
		t.Fatalf("health after Load: %d", resp.StatusCode)
	}
	resp, _ = http.Get(ts.URL + "/v1/models")
	ml := decode[modelList](t, resp)
	if ml.Object != "list" || len(ml.Data) != 1 || ml.Data[0].ID != defaultmodel.Name || ml.Data[0].Object != "model" || ml.Data[0].OwnedBy == "" {
		t.Fatalf("models: %+v", ml)
	}
}

func TestChatGreedyMatchesModel(t *testing.T) {
	m := testModel(t)
	_, ts := start(t, m, Options{})
	msgs := []model.Message{{Role: "system", Content: "You answer briefly."}, {Role: "user", Content: "Name a planet."}}
	text, _ := m.Template.Render(msgs)
	want, n := greedy(t, m, m.Tokenizer.Encode(text, true), 24)
	resp := post(t, ts.URL+"/v1/chat/completions", `{"model":"x","messages":[{"role":"system","content":"You answer briefly."},{"role":"user","content":[{"type":"text","text":"Name a planet."}]}],"max_tokens":24,"temperature":0}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	cr := decode[chatResponse](t, resp)
	if cr.Object != "chat.completion" || !strings.HasPrefix(cr.ID, "chatcmpl-") || cr.Model != defaultmodel.Name || len(cr.Choices) != 1 {
		t.Fatalf("response %+v", cr)
	}
	c := cr.Choices[0]
	if c.Message == nil || c.Message.Role != "assistant" || c.Message.Content == nil || *c.Message.Content != want {
		t.Fatalf("message %+v, want content %q", c.Message, want)
	}
	if cr.Usage == nil || cr.Usage.CompletionTokens != n || cr.Usage.PromptTokens != len(m.Tokenizer.Encode(text, true)) || cr.Usage.TotalTokens != cr.Usage.PromptTokens+n {
		t.Fatalf("usage %+v, want %d completion tokens", cr.Usage, n)
	}
	if want := map[bool]string{true: "length", false: "stop"}[n == 24]; *c.FinishReason != want {
		t.Fatalf("finish %q, want %q", *c.FinishReason, want)
	}
}

func TestCompletionStream(t *testing.T) {
	m := testModel(t)
	_, ts := start(t, m, Options{})
	const prompt = "The history of the city begins"
	want, n := greedy(t, m, m.Tokenizer.Encode(prompt, true), 32)
	for _, withUsage := range []bool{false, true} {
		body := fmt.Sprintf(`{"prompt":%q,"max_tokens":32,"temperature":0,"stream":true,"stream_options":{"include_usage":%v}}`, prompt, withUsage)
		chunks := sse(t, post(t, ts.URL+"/v1/completions", body))
		var text strings.Builder
		var finish string
		var gotUsage *usage
		for i, raw := range chunks {
			var c completionResponse
			if err := json.Unmarshal(raw, &c); err != nil {
				t.Fatal(err)
			}
			if c.Object != "text_completion" || c.ID != mustID(t, chunks[0]) {
				t.Fatalf("chunk %d: %s", i, raw)
			}
			if len(c.Choices) == 0 {
				if i != len(chunks)-1 || c.Usage == nil {
					t.Fatalf("chunk %d without choices is not the final usage chunk: %s", i, raw)
				}
				gotUsage = c.Usage
				continue
			}
			text.WriteString(c.Choices[0].Text)
			if f := c.Choices[0].FinishReason; f != nil {
				finish = *f
			}
		}
		if text.String() != want || finish == "" {
			t.Fatalf("streamed %q (finish %q), want %q", text.String(), finish, want)
		}
		if withUsage != (gotUsage != nil) || withUsage && gotUsage.CompletionTokens != n {
			t.Fatalf("include_usage %v: usage chunk %+v", withUsage, gotUsage)
		}
	}
}

// slowStepper is a Stepper whose steps take at least d: a handler woken
// for a token then reads it before the next one is made.
type slowStepper struct {
	Stepper
	d time.Duration
}

func (s slowStepper) Step(seqs []*StepSeq) {
	s.Stepper.Step(seqs)
	time.Sleep(s.d)
}

// TestStreamInterval: with Options.StreamInterval a stream's first token
// goes out at once and later ones together, at most once per interval
// (here an hour: all of them with the end); without it every token has
// an event of its own (steps slowed to 2 ms, so that the handler reads
// each token before the next). The text is what greedy decoding gives,
// streamed or not.
func TestStreamInterval(t *testing.T) {
	m := testModel(t)
	const prompt = "The history of the city begins"
	want, n := greedy(t, m, m.Tokenizer.Encode(prompt, true), 24)
	for _, interval := range []time.Duration{0, time.Hour} {
		_, ts := start(t, m, Options{StreamInterval: interval,
			Stepper: func(m *model.Model) Stepper { return slowStepper{NewBatched(m), 2 * time.Millisecond} }})
		body := fmt.Sprintf(`{"prompt":%q,"max_tokens":24,"temperature":0,"stream":true}`, prompt)
		var text strings.Builder
		events := 0
		for _, raw := range sse(t, post(t, ts.URL+"/v1/completions", body)) {
			var c completionResponse
			if err := json.Unmarshal(raw, &c); err != nil {
				t.Fatal(err)
			}
			if len(c.Choices) > 0 && c.Choices[0].Text != "" {
				events++
				text.WriteString(c.Choices[0].Text)
			}
		}
		if text.String() != want {
			t.Fatalf("interval %s: streamed %q, want %q", interval, text.String(), want)
		}
		if interval == 0 && events < n*3/4 || interval > 0 && events != 2 {
			t.Fatalf("interval %s: %d text events for %d tokens", interval, events, n)
		}
		resp := post(t, ts.URL+"/v1/completions", fmt.Sprintf(`{"prompt":%q,"max_tokens":24,"temperature":0}`, prompt))
		if got := decode[completionResponse](t, resp).Choices[0].Text; got != want {
			t.Fatalf("interval %s: answered %q, want %q", interval, got, want)
		}
	}
}

func mustID(t testing.TB, raw json.RawMessage) string {
	var v struct{ ID string }
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return v.ID
}

func TestChatStream(t *testing.T) {
	m := testModel(t)
	_, ts := start(t, m, Options{})
	chunks := sse(t, post(t, ts.URL+"/v1/chat/completions", `{"messages":[{"role":"user","content":"Hi"}],"max_tokens":8,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}`))
	var first chatResponse
	json.Unmarshal(chunks[0], &first)
	if first.Object != "chat.completion.chunk" || first.Choices[0].Delta.Role != "assistant" {
		t.Fatalf("first chunk %s", chunks[0])
	}
	var last, fin chatResponse
	json.Unmarshal(chunks[len(chunks)-1], &last)
	json.Unmarshal(chunks[len(chunks)-2], &fin)
	if len(last.Choices) != 0 || last.Usage == nil || last.Usage.TotalTokens != last.Usage.PromptTokens+last.Usage.CompletionTokens {
		t.Fatalf("usage chunk %s", chunks[len(chunks)-1])
	}
	if fin.Choices[0].FinishReason == nil || fin.Choices[0].Delta.Content != nil {
		t.Fatalf("finish chunk %s", chunks[len(chunks)-2])
	}
	if !strings.Contains(string(chunks[1]), `"usage":null`) && strings.Contains(string(chunks[1]), `"usage"`) {
		t.Fatalf("content chunk carries usage: %s", chunks[1])
	}
}

func TestStopSequence(t *testing.T) {
	m := testModel(t)
	_, ts := start(t, m, Options{})
	const prompt = "The history of the city begins"
	full, _ := greedy(t, m, m.Tokenizer.Encode(prompt, true), 32)
	// Stop at a piece of the greedy output that starts past its first
	// few characters: the answer must be the text before it.
	stop := strings.TrimSpace(full[len(full)/2:])[:3]
	i := strings.Index(full, stop)
	for _, stream := range []bool{false, true} {
		body := fmt.Sprintf(`{"prompt":%q,"max_tokens":32,"temperature":0,"stop":[%q, "zzzzqqq"],"stream":%v}`, prompt, stop, stream)
		resp := post(t, ts.URL+"/v1/completions", body)
		var text, finish string
		if stream {
			for _, raw := range sse(t, resp) {
				var c completionResponse
				json.Unmarshal(raw, &c)
				text += c.Choices[0].Text
				if c.Choices[0].FinishReason != nil {
					finish = *c.Choices[0].FinishReason
				}
			}
		} else {
			c := decode[completionResponse](t, resp)
			text, finish = c.Choices[0].Text, *c.Choices[0].FinishReason
		}
		if text != full[:i] || finish != "stop" {
			t.Fatalf("stream %v: stop %q: got %q (%s), want %q", stream, stop, text, finish, full[:i])
		}
	}
}

func TestStopMatcher(t *testing.T) {
	for _, c := range []struct {
		stops  []string
		pieces []string
		want   string
		stop   bool
	}{
		{nil, []string{"ab", "cd"}, "abcd", false},
		{[]string{"cd"}, []string{"ab", "c", "d", "ef"}, "ab", true},
		{[]string{"cde"}, []string{"abc", "dx"}, "abcdx", false},
		{[]string{"xyz", "b"}, []string{"a", "bxyz"}, "a", true},
		{[]string{"\n\n"}, []string{"line\n", "\nnext"}, "line", true},
		{[]string{"aab"}, []string{"a", "a", "a", "b"}, "a", true},
	} {
		m := stopMatcher{stops: c.stops}
		var got strings.Builder
		stopped := false
		for _, p := range c.pieces {
			out, s := m.feed(p)
			got.WriteString(out)
			if s {
				stopped = true
				break
			}
		}
		if !stopped {
			got.WriteString(m.flush())
		}
		if got.String() != c.want || stopped != c.stop {
			t.Errorf("stops %q pieces %q: got %q stop %v, want %q stop %v", c.stops, c.pieces, got.String(), stopped, c.want, c.stop)
		}
	}
}

func TestErrors(t *testing.T) {
	m := testModel(t)
	_, ts := start(t, m, Options{MaxBodyBytes: 4096, APIKey: "sekret"})
	auth := []string{"Authorization", "Bearer sekret"}
	for _, c := range []struct {
		name, path, body string
		header           []string
		status           int
		param            string
	}{
		{"no key", "/v1/completions", `{"prompt":"x"}`, nil, 401, ""},
		{"wrong key", "/v1/completions", `{"prompt":"x"}`, []string{"Authorization", "Bearer nope"}, 401, ""},
		{"malformed", "/v1/completions", `{"prompt":`, auth, 400, ""},
		{"wrong type", "/v1/completions", `{"prompt":"x","max_tokens":"many"}`, auth, 400, "max_tokens"},
		{"no prompt", "/v1/completions", `{}`, auth, 400, "prompt"},
		{"two prompts", "/v1/completions", `{"prompt":["a","b"]}`, auth, 400, "prompt"},
		{"token out of vocab", "/v1/completions", `{"prompt":[1,2,99999999]}`, auth, 400, "prompt"},
		{"echo", "/v1/completions", `{"prompt":"x","echo":true}`, auth, 400, "echo"},
		{"n", "/v1/completions", `{"prompt":"x","n":2}`, auth, 400, "n"},
		{"max_tokens 0", "/v1/completions", `{"prompt":"x","max_tokens":0}`, auth, 400, "max_tokens"},
		{"temperature", "/v1/completions", `{"prompt":"x","temperature":2.5}`, auth, 400, "temperature"},
		{"top_p", "/v1/completions", `{"prompt":"x","top_p":-1}`, auth, 400, "top_p"},
		{"five stops", "/v1/completions", `{"prompt":"x","stop":["a","b","c","d","e"]}`, auth, 400, "stop"},
		{"stream_options without stream", "/v1/completions", `{"prompt":"x","stream_options":{"include_usage":true}}`, auth, 400, "stream_options"},
		{"context", "/v1/completions", `{"prompt":"x","max_tokens":5000}`, auth, 400, "max_tokens"},
		{"body too large", "/v1/completions", `{"prompt":"` + strings.Repeat("x", 5000) + `"}`, auth, 413, ""},
		{"no messages", "/v1/chat/completions", `{"messages":[]}`, auth, 400, "messages"},
		{"bad role", "/v1/chat/completions", `{"messages":[{"role":"tool","content":"x"}]}`, auth, 400, "messages[0].role"},
		{"image part", "/v1/chat/completions", `{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, auth, 400, ""},
		{"tools", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}`, auth, 400, "tools"},
		{"logprobs", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"logprobs":true}`, auth, 400, "logprobs"},
		{"penalty", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"presence_penalty":1}`, auth, 400, "presence_penalty"},
		{"unknown path", "/v1/embeddings", `{}`, auth, 404, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := post(t, ts.URL+c.path, c.body, c.header...)
			e := decode[map[string]*apiError](t, resp)["error"]
			if resp.StatusCode != c.status || e == nil || e.Message == "" || e.Type == "" {
				t.Fatalf("status %d, error %+v; want %d", resp.StatusCode, e, c.status)
			}
			if c.param != "" && (e.Param == nil || *e.Param != c.param) {
				t.Fatalf("param %v, want %q (%s)", e.Param, c.param, e.Message)
			}
		})
	}
	// The key opens every endpoint but /health, which needs none.
	for path, want := range map[string]int{"/health": 200, "/metrics": 401, "/v1/models": 401} {
		if r, _ := http.Get(ts.URL + path); r.StatusCode != want {
			t.Errorf("GET %s without key: %d, want %d", path, r.StatusCode, want)
		}
	}
	req, _ := http.NewRequest("GET", ts.URL+"/v1/models", nil)
	req.Header.Set(auth[0], auth[1])
	if r, _ := http.DefaultClient.Do(req); r.StatusCode != 200 {
		t.Errorf("GET /v1/models with key: %d", r.StatusCode)
	}
	req, _ = http.NewRequest("DELETE", ts.URL+"/v1/completions", nil)
	if r, _ := http.DefaultClient.Do(req); r.StatusCode != 405 || r.Header.Get("Allow") != "POST" {
		t.Errorf("DELETE /v1/completions: %d", r.StatusCode)
	}
}

// gate is a Stepper that runs each step only when let through, and
// checks the scheduler's memory invariant at every step.
type gate struct {
	inner Stepper
	open  chan struct{}
	once  sync.Once
	steps atomic.Int64
	check func([]*StepSeq)
}

func (g *gate) Step(seqs []*StepSeq) {
	if g.open != nil {
		<-g.open
	}
	if g.check != nil {
		g.check(seqs)
	}
	g.steps.Add(1)
	g.inner.Step(seqs)
}

// release lets every later step through (once; also on a failed test's
// cleanup, so that no handler stays blocked).
func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

func (g *gate) ScratchBytes(rows, seqs int) int64 { return g.inner.ScratchBytes(rows, seqs) }
func (g *gate) SeqBytes(n int) int64              { return g.inner.SeqBytes(n) }

// reservation is what one request of prompt ids and max tokens reserves.
func reservation(t testing.TB, s *Server, m *Model, prompt []int32, maxTokens int, temp float64) int64 {
	t.Helper()
	e := s.eng.Load()
	kv, err := m.KV.BytesAt(len(prompt)+maxTokens, m.Model.Config.Layers, m.Model.CacheShape())
	if err != nil {
		t.Fatal(err)
	}
	return kv + e.seqBytes(len(prompt), genParams{sampler: model.SamplerConfig{Temperature: temp}})
}

func TestAdmissionByMemory(t *testing.T) {
	m := withKV(t, "turbo3.5")
	const prompt, maxTokens = "Memory decides how many run at once.", 24
	ids := m.Tokenizer.Encode(prompt, true)
	// Size the budget for exactly two such requests (and a little less
	// than three), and check at every step that no more run.
	probe, _ := start(t, m, Options{})
	one := reservation(t, probe, m, ids, maxTokens, 0)
	e := probe.eng.Load()
	fixed := e.budget.Weights + e.budget.Scratch + e.budget.Reserve
	var peak atomic.Int64
	g := &gate{inner: NewBatched(m.Model)}
	s, ts := start(t, m, Options{Mem: fixed + 2*one + one/2, Stepper: func(*model.Model) Stepper { return g }})
	g.check = func(seqs []*StepSeq) {
		sc := s.eng.Load().sched
		sc.mu.Lock()
		r := sc.reserved
		sc.mu.Unlock()
		if r > sc.budget {
			t.Errorf("reserved %d over the budget %d", r, sc.budget)
		}
		peak.Store(max(peak.Load(), int64(len(seqs))))
	}
	var wg sync.WaitGroup
	var ok atomic.Int64
	for range 6 {
		wg.Go(func() {
			resp := post(t, ts.URL+"/v1/completions", fmt.Sprintf(`{"prompt":%q,"max_tokens":%d,"temperature":0}`, prompt, maxTokens))
			c := decode[completionResponse](t, resp)
			if resp.StatusCode == 200 && c.Usage.PromptTokens == len(ids) {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 6 || peak.Load() != 2 {
		t.Fatalf("%d of 6 answered, at most %d running at once; want 6 and 2", ok.Load(), peak.Load())
	}
	// A request whose reservation alone exceeds the budget never fits.
	resp := post(t, ts.URL+"/v1/completions", fmt.Sprintf(`{"prompt":%q,"max_tokens":3000}`, prompt))
	if e := decode[map[string]*apiError](t, resp)["error"]; resp.StatusCode != 400 || *e.Code != "exceeds_memory_budget" || !strings.Contains(e.Message, "turbo3.5") {
		t.Fatalf("oversized request: %d %+v", resp.StatusCode, e)
	}
}

func TestQueueFull429(t *testing.T) {
	m := testModel(t)
	g := &gate{inner: NewBatched(m.Model), open: make(chan struct{})}
	s, ts := start(t, m, Options{Parallel: 1, Queue: 1, Stepper: func(*model.Model) Stepper { return g }})
	t.Cleanup(g.release)
	body := `{"prompt":"one two three","max_tokens":2,"temperature":0}`
	results := make(chan int, 2)
	// One runs (held at the gate), then one waits in the queue: the
	// second is sent once the first is admitted, else both could reach
	// the queue of one before the first leaves it.
	for _, want := range []string{"turbomem_requests_queued 0", "turbomem_requests_queued 1"} {
		go func() { results <- post(t, ts.URL+"/v1/completions", body).StatusCode }()
		waitFor(t, func() bool {
			r, _ := http.Get(ts.URL + "/metrics")
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			return strings.Contains(string(b), want) && strings.Contains(string(b), "turbomem_requests_running 1")
		})
	}
	resp := post(t, ts.URL+"/v1/completions", body)
	if e := decode[map[string]*apiError](t, resp)["error"]; resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || e.Type != "rate_limit_error" {
		t.Fatalf("third request: %d, Retry-After %q, %+v", resp.StatusCode, resp.Header.Get("Retry-After"), e)
	}
	g.release()
	for range 2 {
		if st := <-results; st != 200 {
			t.Fatalf("queued request ended with %d", st)
		}
	}
	// A step's decode counters are added at its end, after its jobs have
	// ended and their answers may have been read: the metrics are read
	// once the scheduler's loop has stopped.
	if err := s.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	r, _ := http.Get(ts.URL + "/metrics")
	b, _ := io.ReadAll(r.Body)
	for _, series := range []string{`turbomem_requests_rejected_total{reason="queue_full"} 1`, `turbomem_generated_tokens_total 4`, `turbomem_memory_budget_bytes{part="weights"}`, `turbomem_kv_bytes_in_use{format="f16"}`, `turbomem_time_to_first_token_seconds_count 2`,
		// one request at a time: each a prefill step, then one decode
		// step of one sequence; prefill steps are not decode steps
		`turbomem_decode_tokens_total{sequences="1"} 2`, `turbomem_decode_seconds_total{sequences="1"}`} {
		if !strings.Contains(string(b), series) {
			t.Errorf("metrics lack %s", series)
		}
	}
	if strings.Contains(string(b), `turbomem_decode_tokens_total{sequences="2"}`) {
		t.Error("a decode step of two sequences with --parallel 1")
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not reached in 20 s")
}

func TestDisconnectFreesMemory(t *testing.T) {
	m := testModel(t)
	g := &gate{inner: NewBatched(m.Model)}
	s, ts := start(t, m, Options{Stepper: func(*model.Model) Stepper { return g }})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/v1/completions", strings.NewReader(`{"prompt":"a long story","max_tokens":2000,"stream":true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sc := s.eng.Load().sched
	reserved := func() int64 { sc.mu.Lock(); defer sc.mu.Unlock(); return sc.reserved }
	// Read a few chunks, then hang up.
	br := bufio.NewReader(resp.Body)
	for range 3 {
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	if reserved() == 0 {
		t.Fatal("nothing reserved while streaming")
	}
	cancel()
	resp.Body.Close()
	waitFor(t, func() bool { return reserved() == 0 })
	steps := g.steps.Load()
	time.Sleep(50 * time.Millisecond)
	if g.steps.Load() != steps {
		t.Fatal("steps go on after the only client left")
	}
}

func TestDrain(t *testing.T) {
	m := testModel(t)
	g := &gate{inner: NewBatched(m.Model), open: make(chan struct{})}
	s, ts := start(t, m, Options{Stepper: func(*model.Model) Stepper { return g }})
	t.Cleanup(g.release)
	first := make(chan *http.Response, 1)
	go func() { first <- post(t, ts.URL+"/v1/completions", `{"prompt":"drain me","max_tokens":4}`) }()
	sc := s.eng.Load().sched
	waitFor(t, func() bool { sc.mu.Lock(); defer sc.mu.Unlock(); return sc.reserved > 0 })
	drained := make(chan error, 1)
	go func() { drained <- s.Drain(context.Background()) }()
	waitFor(t, func() bool { return s.draining.Load() })
	if r := post(t, ts.URL+"/v1/completions", `{"prompt":"too late"}`); r.StatusCode != 503 {
		t.Fatalf("request while draining: %d", r.StatusCode)
	}
	if r, _ := http.Get(ts.URL + "/health"); r.StatusCode != 503 {
		t.Fatalf("health while draining: %d", r.StatusCode)
	}
	select {
	case <-drained:
		t.Fatal("drained before the running request finished")
	case <-time.After(20 * time.Millisecond):
	}
	g.release()
	if r := <-first; r.StatusCode != 200 || decode[completionResponse](t, r).Usage.CompletionTokens == 0 {
		t.Fatalf("running request after drain: %d", r.StatusCode)
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
}

func TestLoadRefusesSmallBudget(t *testing.T) {
	s, err := New(Options{Mem: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(testModel(t)); err == nil || !strings.Contains(err.Error(), "weights") {
		t.Fatalf("Load with 1 MiB: %v", err)
	}
}

func FuzzRequest(f *testing.F) {
	for _, s := range []string{
		`{"messages":[{"role":"user","content":"hi"}],"stop":"x","max_tokens":3}`,
		`{"prompt":[[1,2,3]],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"prompt":["a"],"temperature":0.5,"top_p":0.9,"seed":-3,"n":1}`,
		`{"messages":[{"role":"developer","content":[{"type":"text","text":"a"}]}],"max_completion_tokens":2}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var c chatRequest
		if json.Unmarshal(b, &c) == nil && c.validate() == nil {
			if msgs, err := c.messages(); err == nil {
				model.ChatPlain.Render(msgs)
			}
			if p, err := c.params(16, 1); err == nil && (p.maxTokens < 1 || len(p.stop) > maxStops) {
				t.Fatalf("accepted %+v", p)
			}
		}
		var r completionRequest
		if json.Unmarshal(b, &r) == nil {
			if _, ids, err := r.prompt(); err == nil && ids != nil && len(ids) == 0 {
				t.Fatal("accepted an empty token prompt")
			}
			r.params(16, 1)
		}
	})
}

// TestConcurrentGreedy: eight greedy completions at once, each stepped on
// its own (the Serial stepper, so every sequence's logits are those of a
// lone session) while the scheduler samples the step's tokens side by
// side and detokenises them and matches the stop strings side by side,
// each get the model's own greedy answer to their prompt: the whole of
// it ("length") or, for every other prompt, what comes before a stop
// string taken from its middle ("stop").
func TestConcurrentGreedy(t *testing.T) {
	m := testModel(t)
	_, ts := start(t, m, Options{PrefillTokens: 4096, Stepper: func(mm *model.Model) Stepper { return Serial{M: mm} }})
	prompts := []string{"The river", "In the morning the", "A list of", "Python is", "The old house", "She said that", "Numbers such as", "Once upon a time"}
	want, wantEnd, stops := make([]string, len(prompts)), make([]string, len(prompts)), make([]string, len(prompts))
	for i, p := range prompts {
		full, _ := greedy(t, m, m.Tokenizer.Encode(p, true), 12)
		want[i], wantEnd[i], stops[i] = full, "length", "zzzzqqq"
		if mid := strings.TrimSpace(full[len(full)/2:]); i%2 == 1 && len(mid) >= 3 {
			stops[i] = mid[:3]
			want[i], wantEnd[i] = full[:strings.Index(full, stops[i])], "stop"
		}
	}
	got, gotEnd := make([]string, len(prompts)), make([]string, len(prompts))
	var wg sync.WaitGroup
	for i, p := range prompts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", ts.URL+"/v1/completions", strings.NewReader(fmt.Sprintf(`{"prompt":%q,"max_tokens":12,"temperature":0,"stop":[%q]}`, p, stops[i])))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var cr completionResponse
			if err := json.NewDecoder(resp.Body).Decode(&cr); err != nil || len(cr.Choices) != 1 || cr.Choices[0].FinishReason == nil {
				t.Errorf("prompt %q: %v, %+v", p, err, cr)
				return
			}
			got[i], gotEnd[i] = cr.Choices[0].Text, *cr.Choices[0].FinishReason
		}()
	}
	wg.Wait()
	for i, p := range prompts {
		if got[i] != want[i] || gotEnd[i] != wantEnd[i] {
			t.Errorf("prompt %q, stop %q: %q (%s), want %q (%s)", p, stops[i], got[i], gotEnd[i], want[i], wantEnd[i])
		}
	}
}

// TestConcurrentStreamsMatchAlone streams 16 requests at once, greedy and
// seeded sampled ones, through both endpoints, and checks that each
// client gets, event by event joined, the text, finish reason and usage
// it gets when it runs alone: the step's sampling, detokenising and
// hand-off side by side (on the model's goroutines, handlers woken
// there) mix up no sequences. The sequences are stepped one after
// another (Serial), whose logits do not depend on the others in the
// step (a batch's Q8_0 products may round a row differently with the
// number of rows beside it).
func TestConcurrentStreamsMatchAlone(t *testing.T) {
	m := testModel(t)
	_, ts := start(t, m, Options{PrefillTokens: 4096, Stepper: func(mm *model.Model) Stepper { return Serial{M: mm} }})
	words := strings.Fields("The river ran past the old mill and the town where the people of the valley met each market day to trade grain wool and news")
	type answer struct {
		text, finish string
		tokens       int
	}
	run := func(i int) (answer, error) {
		prompt := strings.Join(words[i%7:i%7+3+i%5], " ")
		sampling := `"temperature":0`
		if i%2 == 1 {
			sampling = fmt.Sprintf(`"temperature":0.9,"top_p":0.95,"seed":%d`, 100+i)
		}
		path, body := "/v1/completions", fmt.Sprintf(`{"prompt":%q,"max_tokens":%d,%s,"stream":true,"stream_options":{"include_usage":true}}`, prompt, 8+i%9, sampling)
		if i%3 == 2 {
			path, body = "/v1/chat/completions", fmt.Sprintf(`{"messages":[{"role":"user","content":%q}],"max_tokens":%d,%s,"stream":true,"stream_options":{"include_usage":true}}`, prompt, 8+i%9, sampling)
		}
		resp, err := http.Post(ts.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			return answer{}, err
		}
		defer resp.Body.Close()
		var a answer
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok || data == "[DONE]" {
				continue
			}
			var c struct {
				Choices []struct {
					Text         string
					Delta        struct{ Content string }
					FinishReason *string `json:"finish_reason"`
				}
				Usage *usage
			}
			if err := json.Unmarshal([]byte(data), &c); err != nil {
				return a, fmt.Errorf("%s: %w", data, err)
			}
			for _, ch := range c.Choices {
				a.text += ch.Text + ch.Delta.Content
				if ch.FinishReason != nil {
					a.finish = *ch.FinishReason
				}
			}
			if c.Usage != nil {
				a.tokens = c.Usage.CompletionTokens
			}
		}
		return a, sc.Err()
	}
	const clients = 16
	alone := make([]answer, clients)
	for i := range alone {
		var err error
		if alone[i], err = run(i); err != nil || alone[i].finish == "" || alone[i].tokens == 0 {
			t.Fatalf("request %d alone: %+v, %v", i, alone[i], err)
		}
	}
	got := make([]answer, clients)
	var wg sync.WaitGroup
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if got[i], err = run(i); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for i := range got {
		if got[i] != alone[i] {
			t.Errorf("request %d: %+v with %d others, %+v alone", i, got[i], clients-1, alone[i])
		}
	}
}

// TestTextChunk checks a stream's text events against json.Marshal of
// the endpoint's chunk, byte for byte, for text that is plain ASCII and
// text that JSON escapes.
func TestTextChunk(t *testing.T) {
	texts := []string{"", "hello", " world.", `a"b\c`, "<b> & </b>", "naïve 日本", "line\nbreak\ttab\r", "\x00\x1f", "\xff\xfe", "\u2028\u2029", "🙂"}
	for _, ep := range []endpoint{completionEndpoint, chatEndpoint} {
		tc := newTextChunk(ep.chunk("cmpl-abc", 1700000000, "some-model", textSentinel, false, nil))
		if tc == nil {
			t.Fatalf("%s: the chunk does not cut at the sentinel", ep.idPrefix)
		}
		for _, text := range texts {
			want, err := json.Marshal(ep.chunk("cmpl-abc", 1700000000, "some-model", text, false, nil))
			if err != nil {
				t.Fatal(err)
			}
			if got := tc.event(nil, []byte(text)); string(got) != "data: "+string(want)+"\n\n" {
				t.Errorf("%s %q: %s, want data: %s", ep.idPrefix, text, got, want)
			}
		}
	}
	if newTextChunk(completionEndpoint.chunk("cmpl-abc", 1, textSentinel, textSentinel, false, nil)) != nil {
		t.Error("a chunk with the sentinel twice was cut")
	}
}

// TestGeneratedCountedBeforeEnd: by the time a job's end reaches its
// handler, turbomem_generated_tokens_total counts every token of it, so
// that a client that has its answer and then reads /metrics finds them.
// The job ends in a step beside a prompt still being fed (chunks of 8
// tokens), whose hand-off gives the woken handler (the test here) its
// processor in the middle of the step's sampling region.
func TestGeneratedCountedBeforeEnd(t *testing.T) {
	m := testModel(t)
	s, _ := start(t, m, Options{PrefillTokens: 8, NoPrefixCache: true})
	sc := s.eng.Load().sched
	submit := func(prompt string, maxTokens int) *job {
		ids := m.Tokenizer.Encode(prompt, true)
		r := reservation(t, s, m, ids, maxTokens, 0)
		j := &job{id: "cmpl-test", ctx: context.Background(), prompt: ids, p: genParams{maxTokens: maxTokens},
			fixed: r, reserve: r, arrived: time.Now(), notify: make(chan struct{}, 1)}
		if err := sc.submit(j); err != nil {
			t.Fatal(err)
		}
		return j
	}
	wait := func(j *job) {
		for {
			<-j.notify
			if _, done := j.take(nil); done {
				return
			}
		}
	}
	short := submit("one two three", 4)
	long := submit(longPrompt(), 1) // fed 8 tokens a step while short decodes
	wait(short)
	var c dto.Metric
	if err := sc.met.genTokens.Write(&c); err != nil {
		t.Fatal(err)
	}
	want := short.usage().CompletionTokens
	wait(long)
	if short.err != nil || want == 0 {
		t.Fatalf("short job: %v, %d tokens", short.err, want)
	}
	if got := c.GetCounter().GetValue(); got != float64(want) {
		t.Errorf("generated tokens counted when the job ended: %g, want its %d", got, want)
	}
}
