package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"
	"unicode/utf8"
)

// endpoint is what differs between chat and text completions: how a
// response body and a stream chunk look.
type endpoint struct {
	idPrefix string
	// chunk returns a stream chunk with text (first: the opening chunk of
	// a chat stream) or, with finish set, the closing one.
	chunk func(id string, created int64, name, text string, first bool, finish *string) any
	// whole returns the non-streamed response.
	whole func(id string, created int64, name, text string, finish string, u usage) any
	// usageChunk returns the last chunk of a stream with include_usage.
	usageChunk func(id string, created int64, name string, u usage) any
}

var chatEndpoint = endpoint{
	idPrefix: "chatcmpl-",
	chunk: func(id string, created int64, name, text string, first bool, finish *string) any {
		d := &responseMessage{Content: &text}
		if first {
			d.Role = "assistant"
		}
		if finish != nil {
			d = &responseMessage{}
		}
		return chatResponse{ID: id, Object: "chat.completion.chunk", Created: created, Model: name, SystemFingerprint: fingerprint,
			Choices: []chatChoice{{Delta: d, FinishReason: finish}}}
	},
	whole: func(id string, created int64, name, text, finish string, u usage) any {
		return chatResponse{ID: id, Object: "chat.completion", Created: created, Model: name, SystemFingerprint: fingerprint,
			Choices: []chatChoice{{Message: &responseMessage{Role: "assistant", Content: &text}, FinishReason: &finish}}, Usage: &u}
	},
	usageChunk: func(id string, created int64, name string, u usage) any {
		return chatResponse{ID: id, Object: "chat.completion.chunk", Created: created, Model: name, SystemFingerprint: fingerprint,
			Choices: []chatChoice{}, Usage: &u}
	},
}

var completionEndpoint = endpoint{
	idPrefix: "cmpl-",
	chunk: func(id string, created int64, name, text string, first bool, finish *string) any {
		return completionResponse{ID: id, Object: "text_completion", Created: created, Model: name, SystemFingerprint: fingerprint,
			Choices: []completionChoice{{Text: text, FinishReason: finish}}}
	},
	whole: func(id string, created int64, name, text, finish string, u usage) any {
		return completionResponse{ID: id, Object: "text_completion", Created: created, Model: name, SystemFingerprint: fingerprint,
			Choices: []completionChoice{{Text: text, FinishReason: &finish}}, Usage: &u}
	},
	usageChunk: func(id string, created int64, name string, u usage) any {
		return completionResponse{ID: id, Object: "text_completion", Created: created, Model: name, SystemFingerprint: fingerprint,
			Choices: []completionChoice{}, Usage: &u}
	},
}

// fingerprint names the backend in responses' system_fingerprint.
const fingerprint = "turbomem"

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	e := s.ready(w)
	if e == nil {
		return
	}
	var req chatRequest
	if err := s.decodeBody(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := req.validate(); err != nil {
		writeError(w, err)
		return
	}
	msgs, err := req.messages()
	if err != nil {
		writeError(w, err)
		return
	}
	text, rerr := e.m.Template.Render(msgs)
	if rerr != nil {
		writeError(w, paramError("messages", "%v", rerr))
		return
	}
	p, perr := req.params(s.o.DefaultMaxTokens, rand.Uint64())
	if perr != nil {
		writeError(w, perr)
		return
	}
	s.run(w, r, e, chatEndpoint, e.m.Tokenizer.Encode(text, true), p)
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	e := s.ready(w)
	if e == nil {
		return
	}
	var req completionRequest
	if err := s.decodeBody(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	text, ids, err := req.prompt()
	if err != nil {
		writeError(w, err)
		return
	}
	p, perr := req.params(16, rand.Uint64())
	if perr != nil {
		writeError(w, perr)
		return
	}
	if ids == nil {
		ids = e.m.Tokenizer.Encode(text, true)
	}
	s.run(w, r, e, completionEndpoint, ids, p)
}

// run admits a generation and answers it, streamed or whole.
func (s *Server) run(w http.ResponseWriter, r *http.Request, e *engine, ep endpoint, prompt []int32, p genParams) {
	c := &e.m.Model.Config
	if len(prompt) == 0 {
		writeError(w, paramError("prompt", "the prompt encodes to no tokens"))
		return
	}
	for _, t := range prompt {
		if t < 0 || int(t) >= c.Vocab {
			writeError(w, paramError("prompt", "token id %d outside the vocabulary of %d", t, c.Vocab))
			return
		}
	}
	limit := c.Context
	if c.SlidingWindow > 0 {
		limit = min(limit, c.SlidingWindow)
	}
	if len(prompt)+p.maxTokens > limit {
		writeError(w, &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: str("max_tokens"), Code: str("context_length_exceeded"),
			Message: fmt.Sprintf("the prompt's %d tokens plus max_tokens %d exceed the model's context of %d tokens", len(prompt), p.maxTokens, limit)})
		return
	}
	kv, err := e.m.KV.BytesAt(len(prompt)+p.maxTokens, c.Layers, e.m.Model.CacheShape())
	if err != nil {
		writeError(w, &apiError{Status: http.StatusInternalServerError, Type: "server_error", Message: err.Error()})
		return
	}
	j := &job{id: newID(ep.idPrefix), ctx: r.Context(), prompt: prompt, p: p, kvBytes: kv,
		arrived: time.Now(), notify: make(chan struct{}, 1)}
	if pc := e.sched.prefix; pc != nil {
		j.recBytes = pc.recorderBytes(0, len(prompt))
	}
	j.fixed = kv + e.seqBytes(len(prompt), p)
	j.reserve = j.fixed + j.recBytes
	info, _ := r.Context().Value(reqInfoKey{}).(*reqInfo)
	defer func() {
		if info != nil {
			info.attrs = append(info.attrs, j.logAttrs()...)
		}
	}()
	if err := e.sched.submit(j); err != nil {
		switch {
		case errors.Is(err, errQueueFull):
			s.met.rejected.WithLabelValues("queue_full").Inc()
			writeError(w, &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: str("queue_full"),
				Message: "the server is at capacity and its queue is full; retry later", RetryAfter: e.sched.retryAfter()})
		case errors.Is(err, errDraining):
			s.met.rejected.WithLabelValues("draining").Inc()
			writeError(w, &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: str("shutting_down"), Message: "the server is shutting down"})
		default:
			s.met.rejected.WithLabelValues("never_fits").Inc()
			writeError(w, &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: str("max_tokens"), Code: str("exceeds_memory_budget"), Message: err.Error()})
		}
		return
	}
	created := time.Now().Unix()
	if p.stream {
		s.stream(w, r, e, ep, j, created)
		return
	}
	var text []byte
	for {
		select {
		case <-j.notify:
		case <-r.Context().Done():
			e.sched.abandon(j)
			return
		}
		var done bool
		if text, done = j.take(text); done {
			break
		}
	}
	if j.err != nil {
		writeError(w, jobError(j.err))
		return
	}
	writeJSON(w, http.StatusOK, ep.whole(j.id, created, e.m.Name, string(text), j.finish, j.usage()))
}

// stream sends a job's text as server-sent events as it is produced,
// ending with the finish chunk, the usage chunk if asked for, and
// "data: [DONE]".
func (s *Server) stream(w http.ResponseWriter, r *http.Request, e *engine, ep endpoint, j *job, created int64) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	var buf []byte // a chunk's event, kept from token to token
	write := func(b []byte) bool {
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	send := func(v any) bool {
		b, err := json.Marshal(v)
		if err != nil {
			return false
		}
		buf = append(append(append(buf[:0], "data: "...), b...), "\n\n"...)
		return write(buf)
	}
	first := ep.idPrefix == chatEndpoint.idPrefix // a chat stream opens with the role
	if first && !send(ep.chunk(j.id, created, e.m.Name, "", true, nil)) {
		e.sched.abandon(j)
		return
	}
	tc := newTextChunk(ep.chunk(j.id, created, e.m.Name, textSentinel, false, nil))
	var text []byte
	for {
		select {
		case <-j.notify:
		case <-r.Context().Done():
			e.sched.abandon(j)
			return
		}
		var done bool
		text, done = j.take(text[:0])
		if len(text) > 0 {
			if tc == nil { // the template did not split: marshal each chunk
				if !send(ep.chunk(j.id, created, e.m.Name, string(text), false, nil)) {
					e.sched.abandon(j)
					return
				}
			} else if buf = tc.event(buf[:0], text); !write(buf) {
				e.sched.abandon(j)
				return
			}
		}
		if done {
			break
		}
	}
	if j.err != nil {
		send(map[string]*apiError{"error": jobError(j.err)})
	} else {
		finish := j.finish
		send(ep.chunk(j.id, created, e.m.Name, "", false, &finish))
		if j.p.includeUsage {
			send(ep.usageChunk(j.id, created, e.m.Name, j.usage()))
		}
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	rc.Flush()
}

// textSentinel is the text of the chunk a stream's textChunk is cut from:
// a character encoding/json escapes (as \u0000), which no id, model name
// or fixed field of a chunk holds.
const textSentinel = "\x00"

// textChunk is a stream's text chunk cut around its text: every token's
// event is the JSON that json.Marshal makes of the endpoint's chunk with
// that text, byte for byte, without marshalling the chunk again.
type textChunk struct{ head, tail []byte }

// newTextChunk cuts the JSON of chunk, whose text is textSentinel, at the
// sentinel; nil if it is not there exactly once.
func newTextChunk(chunk any) *textChunk {
	b, err := json.Marshal(chunk)
	if err != nil {
		return nil
	}
	const enc = `"\u0000"`
	i := bytes.Index(b, []byte(enc))
	if i < 0 || bytes.Count(b, []byte(enc)) != 1 {
		return nil
	}
	return &textChunk{head: b[:i], tail: b[i+len(enc):]}
}

// event appends the server-sent event of the chunk with text to dst.
func (c *textChunk) event(dst, text []byte) []byte {
	dst = append(append(dst, "data: "...), c.head...)
	dst = appendJSONString(dst, text)
	return append(append(dst, c.tail...), "\n\n"...)
}

// appendJSONString appends text as encoding/json writes a string (HTML
// characters, control characters, invalid UTF-8 and U+2028/U+2029
// escaped): text of plain printable ASCII directly, anything else
// through json.Marshal.
func appendJSONString(dst, text []byte) []byte {
	for _, c := range text {
		if c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(string(text)) // a string always marshals
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, text...)
	return append(dst, '"')
}

// jobError is the response to a job that ended in error.
func jobError(err error) *apiError {
	if errors.Is(err, errCanceled) {
		return &apiError{Status: 499, Type: "invalid_request_error", Message: "request canceled"}
	}
	return &apiError{Status: http.StatusInternalServerError, Type: "server_error", Message: err.Error()}
}

// usage returns the job's token counts (after it has ended).
func (j *job) usage() usage {
	j.mu.Lock()
	defer j.mu.Unlock()
	return usage{PromptTokens: len(j.prompt), CompletionTokens: j.completion, TotalTokens: len(j.prompt) + j.completion}
}

// logAttrs describes the job for its request's log line.
func (j *job) logAttrs() []slog.Attr {
	j.mu.Lock()
	defer j.mu.Unlock()
	ms := func(a, b time.Time) float64 {
		if a.IsZero() || b.IsZero() {
			return -1
		}
		return float64(b.Sub(a).Microseconds()) / 1000
	}
	a := []slog.Attr{
		slog.String("id", j.id), slog.Int("prompt_tokens", len(j.prompt)), slog.Int("reused_tokens", j.reused), slog.Int("completion_tokens", j.completion),
		slog.Float64("queue_ms", ms(j.arrived, j.admitted)), slog.Float64("ttft_ms", ms(j.arrived, j.first)),
		slog.Float64("decode_ms", ms(j.first, j.last)),
		slog.Int64("kv_reserved", j.kvBytes), slog.Int64("kv_held", j.kvHeld), slog.String("finish", j.finish),
	}
	if j.err != nil {
		a = append(a, slog.String("error", j.err.Error()))
	}
	return a
}

// seqBytes is the memory a sequence holds besides its caches: the
// stepper's buffers, its logits, the sampler's candidate list when it
// samples (16 bytes per vocabulary entry), and its prompt.
func (e *engine) seqBytes(n int, p genParams) int64 {
	v := int64(e.m.Model.Config.Vocab)
	b := e.stepper.SeqBytes(n) + 4*v + 4*int64(n)
	if p.sampler.Temperature > 0 {
		b += 16 * v
	}
	return b
}
