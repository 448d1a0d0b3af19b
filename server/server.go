// Package server is turbomem's OpenAI-compatible HTTP server: chat and
// text completions (streamed as server-sent events or whole), the model
// list, health and Prometheus metrics. Requests are admitted by memory:
// each reserves the exact bytes its KV cache will hold at prompt +
// max_tokens tokens (kvcache's BytesAt), so the reservations never exceed
// the budget that --mem leaves after the weights and scratch; the others
// wait in a bounded queue (beyond it: 429 with Retry-After), and a
// request that could never fit is refused with 400 saying why. Admitted
// sequences run in one loop, a step at a time, each step feeding every
// running sequence (continuous batching: a new request joins at the next
// step).
package server

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/turbomem/turbomem/model"
)

// Options configures a Server. Zero fields take the defaults shown.
type Options struct {
	// Mem is the memory budget of the whole process in bytes: weights,
	// scratch, Reserve, and every admitted sequence's KV cache and
	// buffers. Required.
	Mem int64
	// Reserve is memory set aside for the process itself (Go runtime,
	// code, connections, responses); 48 MiB.
	Reserve int64
	// Parallel is the most sequences running at once; 16.
	Parallel int
	// Queue is the most requests waiting for memory or a slot; beyond
	// it requests get 429. 64.
	Queue int
	// PrefillTokens is the most prompt tokens fed per step, shared by
	// the sequences still reading their prompts, oldest first; 128.
	PrefillTokens int
	// APIKey, if set, is required as "Authorization: Bearer KEY" on every
	// endpoint but /health.
	APIKey string
	// MaxBodyBytes bounds request bodies; 4 MiB.
	MaxBodyBytes int64
	// DefaultMaxTokens is the max_tokens of a chat request that gives
	// none; 512. (A text completion's default is the API's 16.)
	DefaultMaxTokens int
	// Logger receives one line per request; slog.Default() if nil.
	Logger *slog.Logger
	// NoPrefixCache turns the prefix cache off (see prefixCache).
	NoPrefixCache bool
	// PrefixTokens bounds the prompt tokens a request records for the
	// prefix cache (its first ones: system prompts, conversation starts);
	// while its prompt is read, a request reserves their fp16 rows beside
	// its KV cache. 1024.
	PrefixTokens int
	// StreamInterval is the least time between a stream's text events
	// after its first token: the tokens made meanwhile go out together
	// in one event, so that a batch of sequences wakes fewer handlers per
	// step. 0: every token in an event of its own, as it is made.
	StreamInterval time.Duration
	// Stepper makes the stepper that runs the sequences; NewBatched if
	// nil.
	Stepper func(*model.Model) Stepper
}

func (o *Options) defaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.Parallel, 16)
	def(&o.Queue, 64)
	def(&o.PrefillTokens, 128)
	def(&o.DefaultMaxTokens, 512)
	def(&o.PrefixTokens, 1024)
	if o.Reserve <= 0 {
		o.Reserve = 48 << 20
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 4 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Stepper == nil {
		o.Stepper = func(m *model.Model) Stepper { return NewBatched(m) }
	}
}

// Server serves one model. It answers /health with 503 until Load has
// given it its model, and from Drain on.
type Server struct {
	o        Options
	log      *slog.Logger
	met      *metrics
	mux      *http.ServeMux
	eng      atomic.Pointer[engine]
	draining atomic.Bool
	started  int64
}

// engine is a loaded model with its scheduler.
type engine struct {
	m       *Model
	stepper Stepper
	sched   *scheduler
	budget  Budget
}

// Budget is how the memory budget is shared out, in bytes.
type Budget struct {
	Total, Weights, Scratch, Reserve int64
	// Sequences is what is left for admitted sequences' KV caches and
	// buffers.
	Sequences int64
}

// New returns a server without a model: Load gives it one.
func New(o Options) (*Server, error) {
	o.defaults()
	if o.Mem <= 0 {
		return nil, errors.New("server: a memory budget (Options.Mem) is required")
	}
	s := &Server{o: o, log: o.Logger, met: newMetrics(), started: time.Now().Unix()}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /health", s.health)
	s.mux.Handle("GET /metrics", s.auth(promhttp.HandlerFor(s.met.reg, promhttp.HandlerOpts{})))
	s.mux.Handle("GET /v1/models", s.auth(http.HandlerFunc(s.models)))
	s.mux.Handle("POST /v1/chat/completions", s.auth(http.HandlerFunc(s.chat)))
	s.mux.Handle("POST /v1/completions", s.auth(http.HandlerFunc(s.completions)))
	s.mux.HandleFunc("/", s.notFound)
	s.met.budget.WithLabelValues("total").Set(float64(o.Mem))
	return s, nil
}

// Load gives the server its model and starts admitting requests. It
// fails when the budget cannot hold the weights, scratch and reserve.
func (s *Server) Load(m *Model) (Budget, error) {
	if s.eng.Load() != nil {
		return Budget{}, errors.New("server: a model is already loaded")
	}
	st := s.o.Stepper(m.Model)
	b := Budget{Total: s.o.Mem, Weights: m.Model.WeightBytes(), Reserve: s.o.Reserve,
		Scratch: st.ScratchBytes(s.o.PrefillTokens+s.o.Parallel, s.o.Parallel)}
	b.Sequences = b.Total - b.Weights - b.Scratch - b.Reserve
	if b.Sequences <= 0 {
		return b, fmt.Errorf("server: a memory budget of %s does not hold the weights (%s), scratch (%s) and process reserve (%s)",
			fmtBytes(b.Total), fmtBytes(b.Weights), fmtBytes(b.Scratch), fmtBytes(b.Reserve))
	}
	sc := &scheduler{m: m, stepper: st, met: s.met, kvName: m.KV.String(),
		parallel: s.o.Parallel, queueCap: s.o.Queue, prefill: s.o.PrefillTokens, budget: b.Sequences, interval: s.o.StreamInterval,
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	for part, v := range map[string]int64{"weights": b.Weights, "scratch": b.Scratch, "reserve": b.Reserve, "sequences": b.Sequences} {
		s.met.budget.WithLabelValues(part).Set(float64(v))
	}
	if !s.o.NoPrefixCache && prefixable(m.KV) {
		sc.prefix = newPrefixCache(m.Model, m.KV, m.Name, s.o.PrefixTokens)
	}
	go sc.loop()
	s.eng.Store(&engine{m: m, stepper: st, sched: sc, budget: b})
	return b, nil
}

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.logRequests(s.mux) }

// Drain stops admitting requests (new ones get 503) and waits until every
// queued and running one has finished, or ctx ends. Handlers still
// streaming finish on their own; http.Server.Shutdown waits for them.
func (s *Server) Drain(ctx context.Context) error {
	s.draining.Store(true)
	e := s.eng.Load()
	if e == nil {
		return nil
	}
	e.sched.close()
	select {
	case <-e.sched.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	switch {
	case s.draining.Load():
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
	case s.eng.Load() == nil:
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "loading"})
	default:
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}
}

func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	e := s.ready(w)
	if e == nil {
		return
	}
	writeJSON(w, http.StatusOK, modelList{Object: "list", Data: []modelObject{{ID: e.m.Name, Object: "model", Created: s.started, OwnedBy: "turbomem"}}})
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	for p, allow := range map[string]string{"/v1/chat/completions": "POST", "/v1/completions": "POST", "/v1/models": "GET", "/health": "GET", "/metrics": "GET"} {
		if r.URL.Path == p {
			w.Header().Set("Allow", allow)
			writeError(w, &apiError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error",
				Message: fmt.Sprintf("method %s is not allowed on %s", r.Method, p)})
			return
		}
	}
	writeError(w, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: str("unknown_url"),
		Message: fmt.Sprintf("unknown endpoint %s %s", r.Method, r.URL.Path)})
}

// ready returns the engine, or answers 503 while loading or draining.
func (s *Server) ready(w http.ResponseWriter) *engine {
	e := s.eng.Load()
	switch {
	case s.draining.Load():
		s.met.rejected.WithLabelValues("draining").Inc()
		writeError(w, &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: str("shutting_down"), Message: "the server is shutting down"})
		return nil
	case e == nil:
		s.met.rejected.WithLabelValues("loading").Inc()
		writeError(w, &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: str("loading"), Message: "the model is still loading", RetryAfter: 1})
		return nil
	}
	return e
}

// auth requires the API key, if one is set.
func (s *Server) auth(h http.Handler) http.Handler {
	if s.o.APIKey == "" {
		return h
	}
	want := []byte("Bearer " + s.o.APIKey)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			msg := "invalid API key"
			if len(got) == 0 {
				msg = "missing API key: send Authorization: Bearer KEY"
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="turbomem"`)
			writeError(w, &apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: str("invalid_api_key"), Message: msg})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// decodeBody reads a bounded JSON body into v.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) *apiError {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.o.MaxBodyBytes))
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			return &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error",
				Message: fmt.Sprintf("request body over %d bytes", s.o.MaxBodyBytes)}
		}
		return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Message: "reading the request body: " + err.Error()}
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			field := strings.TrimPrefix(te.Field, "commonParams.") // the embedded struct's name is no parameter
			return paramError(field, "%s: wrong type %s", field, te.Value)
		}
		return paramError("", "malformed JSON body: %v", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *apiError) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(e.RetryAfter))
	}
	writeJSON(w, e.Status, map[string]*apiError{"error": e})
}

// newID returns a response id with the API's prefix.
func newID(prefix string) string {
	var b [12]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// statusWriter records the status a handler sent.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// reqInfo is what a generation handler adds to its request's log line.
type reqInfo struct {
	attrs []slog.Attr
}

type reqInfoKey struct{}

// logRequests writes one line per request: method, path, status, time,
// and what a generation handler added (id, tokens, timings, KV bytes).
func (s *Server) logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &reqInfo{}
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), reqInfoKey{}, info)))
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		endpoint := r.URL.Path
		if !strings.HasPrefix(endpoint, "/v1/") && endpoint != "/health" && endpoint != "/metrics" {
			endpoint = "other"
		}
		s.met.requests.WithLabelValues(endpoint, fmt.Sprint(sw.status)).Inc()
		attrs := append([]slog.Attr{
			slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Int("status", sw.status),
			slog.Float64("ms", msSince(start)),
		}, info.attrs...)
		level := slog.LevelInfo
		if r.URL.Path == "/health" || r.URL.Path == "/metrics" {
			level = slog.LevelDebug
		}
		s.log.LogAttrs(r.Context(), level, "request", attrs...)
	})
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }
