package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/turbomem/turbomem/model"
)

// The request and response bodies of the OpenAI API that the server
// speaks, with the field names of OpenAI's OpenAPI specification
// (CreateChatCompletionRequest/Response, CreateChatCompletionStreamResponse,
// CreateCompletionRequest/Response, ListModelsResponse, ErrorResponse).

// chatRequest is the body of POST /v1/chat/completions.
type chatRequest struct {
	Model    string        `json:"model"`
	Messages []chatMessage `json:"messages"`
	commonParams
	// MaxCompletionTokens supersedes MaxTokens in the current API.
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Logprobs            *bool           `json:"logprobs"`
	Tools               json.RawMessage `json:"tools"`
}

// completionRequest is the body of POST /v1/completions.
type completionRequest struct {
	Model  string          `json:"model"`
	Prompt json.RawMessage `json:"prompt"`
	commonParams
	Echo     *bool           `json:"echo"`
	Suffix   *string         `json:"suffix"`
	BestOf   *int            `json:"best_of"`
	Logprobs json.RawMessage `json:"logprobs"`
}

// commonParams are the sampling and streaming parameters both endpoints
// take.
type commonParams struct {
	MaxTokens        *int           `json:"max_tokens"`
	Temperature      *float64       `json:"temperature"`
	TopP             *float64       `json:"top_p"`
	N                *int           `json:"n"`
	Stop             stopList       `json:"stop"`
	Seed             *int64         `json:"seed"`
	Stream           bool           `json:"stream"`
	StreamOptions    *streamOptions `json:"stream_options"`
	FrequencyPenalty *float64       `json:"frequency_penalty"`
	PresencePenalty  *float64       `json:"presence_penalty"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// chatMessage is one message of a conversation; content is a string or
// an array of content parts of which only text parts are understood.
type chatMessage struct {
	Role    string         `json:"role"`
	Content messageContent `json:"content"`
}

type messageContent struct {
	text string
	set  bool
}

func (c *messageContent) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		return nil
	case len(b) > 0 && b[0] == '"':
		c.set = true
		return json.Unmarshal(b, &c.text)
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(b, &parts); err != nil {
		return errors.New("content must be a string or an array of text parts")
	}
	var sb strings.Builder
	for _, p := range parts {
		if p.Type != "text" || p.Text == nil {
			return fmt.Errorf("content part of type %q: only text parts are supported", p.Type)
		}
		sb.WriteString(*p.Text)
	}
	c.text, c.set = sb.String(), true
	return nil
}

// stopList is a stop sequence or up to 4 of them.
type stopList []string

func (s *stopList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*s = nil
		return nil
	case len(b) > 0 && b[0] == '"':
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*s = stopList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("stop must be a string or an array of strings")
	}
	*s = many
	return nil
}

// maxStops and maxStopLen bound the stop sequences (the API allows 4).
const (
	maxStops   = 4
	maxStopLen = 256
)

// genParams is what a request asks the scheduler for, validated.
type genParams struct {
	maxTokens    int
	sampler      model.SamplerConfig
	stop         []string
	stream       bool
	includeUsage bool
}

// params validates the common parameters; defMax is the max_tokens of a
// request that gives none.
func (p *commonParams) params(defMax int, seed uint64) (genParams, *apiError) {
	g := genParams{maxTokens: defMax, stream: p.Stream}
	if p.MaxTokens != nil {
		g.maxTokens = *p.MaxTokens
	}
	if g.maxTokens < 1 {
		return g, paramError("max_tokens", "max_tokens must be at least 1, got %d", g.maxTokens)
	}
	if p.N != nil && *p.N != 1 {
		return g, paramError("n", "only n=1 is supported (one choice per request), got %d; send separate requests instead", *p.N)
	}
	// The API's defaults: temperature 1, top_p 1.
	g.sampler.Temperature = 1
	if t := p.Temperature; t != nil {
		if !(*t >= 0 && *t <= 2) {
			return g, paramError("temperature", "temperature must be in [0, 2], got %g", *t)
		}
		g.sampler.Temperature = *t
	}
	if t := p.TopP; t != nil {
		if !(*t >= 0 && *t <= 1) {
			return g, paramError("top_p", "top_p must be in [0, 1], got %g", *t)
		}
		g.sampler.TopP = *t
	}
	for _, pen := range []struct {
		name string
		v    *float64
	}{{"frequency_penalty", p.FrequencyPenalty}, {"presence_penalty", p.PresencePenalty}} {
		if pen.v != nil && *pen.v != 0 {
			return g, paramError(pen.name, "%s is not supported (only 0)", pen.name)
		}
	}
	g.sampler.Seed = seed
	if p.Seed != nil {
		g.sampler.Seed = uint64(*p.Seed)
	}
	if len(p.Stop) > maxStops {
		return g, paramError("stop", "at most %d stop sequences, got %d", maxStops, len(p.Stop))
	}
	for _, s := range p.Stop {
		if s == "" || len(s) > maxStopLen {
			return g, paramError("stop", "stop sequences must be 1 to %d bytes long", maxStopLen)
		}
	}
	g.stop = p.Stop
	if p.StreamOptions != nil {
		if !p.Stream {
			return g, paramError("stream_options", "stream_options is only allowed with stream: true")
		}
		g.includeUsage = p.StreamOptions.IncludeUsage
	}
	if err := g.sampler.Validate(); err != nil {
		return g, paramError("", "%v", err)
	}
	return g, nil
}

// messages returns the conversation for the chat template.
func (r *chatRequest) messages() ([]model.Message, *apiError) {
	if len(r.Messages) == 0 {
		return nil, paramError("messages", "messages must hold at least one message")
	}
	msgs := make([]model.Message, 0, len(r.Messages))
	for i, m := range r.Messages {
		role := m.Role
		if role == "developer" { // the newer name of the system role
			role = "system"
		}
		switch role {
		case "system", "user", "assistant":
		default:
			return nil, paramError(fmt.Sprintf("messages[%d].role", i), "role %q is not supported (system, developer, user or assistant)", m.Role)
		}
		if !m.Content.set {
			return nil, paramError(fmt.Sprintf("messages[%d].content", i), "message %d has no content", i)
		}
		msgs = append(msgs, model.Message{Role: role, Content: m.Content.text})
	}
	return msgs, nil
}

// validate rejects the chat options the server does not implement.
func (r *chatRequest) validate() *apiError {
	if r.Logprobs != nil && *r.Logprobs {
		return paramError("logprobs", "logprobs are not supported")
	}
	if t := bytes.TrimSpace(r.Tools); len(t) > 0 && !bytes.Equal(t, []byte("null")) && !bytes.Equal(t, []byte("[]")) {
		return paramError("tools", "tools are not supported")
	}
	if r.MaxCompletionTokens != nil {
		r.MaxTokens = r.MaxCompletionTokens
	}
	return nil
}

// prompt returns the completion request's prompt: text, or token ids
// when it is an array of integers. One prompt only.
func (r *completionRequest) prompt() (text string, ids []int32, err *apiError) {
	if r.Echo != nil && *r.Echo {
		return "", nil, paramError("echo", "echo is not supported")
	}
	if r.Suffix != nil && *r.Suffix != "" {
		return "", nil, paramError("suffix", "suffix is not supported")
	}
	if r.BestOf != nil && *r.BestOf != 1 {
		return "", nil, paramError("best_of", "only best_of=1 is supported")
	}
	if l := bytes.TrimSpace(r.Logprobs); len(l) > 0 && !bytes.Equal(l, []byte("null")) {
		return "", nil, paramError("logprobs", "logprobs are not supported")
	}
	p := bytes.TrimSpace(r.Prompt)
	if len(p) == 0 || bytes.Equal(p, []byte("null")) {
		return "", nil, paramError("prompt", "prompt is required")
	}
	if json.Unmarshal(p, &text) == nil {
		return text, nil, nil
	}
	var texts []string
	if json.Unmarshal(p, &texts) == nil {
		if len(texts) != 1 {
			return "", nil, paramError("prompt", "exactly one prompt is supported, got %d", len(texts))
		}
		return texts[0], nil, nil
	}
	var tokens []int64
	if json.Unmarshal(p, &tokens) != nil {
		var batches [][]int64
		if json.Unmarshal(p, &batches) != nil {
			return "", nil, paramError("prompt", "prompt must be a string, an array of one string, or an array of token ids")
		}
		if len(batches) != 1 {
			return "", nil, paramError("prompt", "exactly one prompt is supported, got %d", len(batches))
		}
		tokens = batches[0]
	}
	if len(tokens) == 0 {
		return "", nil, paramError("prompt", "prompt holds no tokens")
	}
	ids = make([]int32, len(tokens))
	for i, t := range tokens {
		if t < 0 || t > math.MaxInt32 {
			return "", nil, paramError("prompt", "token id %d out of range", t)
		}
		ids[i] = int32(t)
	}
	return "", ids, nil
}

// usage is CompletionUsage.
type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type chatResponse struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	SystemFingerprint string       `json:"system_fingerprint"`
	Choices           []chatChoice `json:"choices"`
	Usage             *usage       `json:"usage,omitempty"`
}

type chatChoice struct {
	Index        int              `json:"index"`
	Message      *responseMessage `json:"message,omitempty"`
	Delta        *responseMessage `json:"delta,omitempty"`
	Logprobs     *struct{}        `json:"logprobs"`
	FinishReason *string          `json:"finish_reason"`
}

type responseMessage struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
	Refusal *string `json:"refusal,omitempty"`
}

type completionResponse struct {
	ID                string             `json:"id"`
	Object            string             `json:"object"`
	Created           int64              `json:"created"`
	Model             string             `json:"model"`
	SystemFingerprint string             `json:"system_fingerprint"`
	Choices           []completionChoice `json:"choices"`
	Usage             *usage             `json:"usage,omitempty"`
}

type completionChoice struct {
	Index        int       `json:"index"`
	Text         string    `json:"text"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

type modelList struct {
	Object string        `json:"object"`
	Data   []modelObject `json:"data"`
}

type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// apiError is an error response: its HTTP status and the ErrorResponse
// body {"error": {"message", "type", "param", "code"}}.
type apiError struct {
	Status  int     `json:"-"`
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
	// RetryAfter, in seconds, is sent as the Retry-After header when > 0.
	RetryAfter int `json:"-"`
}

func (e *apiError) Error() string { return e.Message }

func str(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// paramError is a 400 invalid_request_error about one parameter.
func paramError(param, format string, args ...any) *apiError {
	return &apiError{Status: 400, Type: "invalid_request_error", Param: str(param), Message: fmt.Sprintf(format, args...)}
}
