package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// ServeLoad is a load run against an OpenAI-compatible server: Clients
// concurrent clients, each streaming one completion after another until
// Duration has passed or Requests have been sent in all.
type ServeLoad struct {
	URL, APIKey string
	Clients     int
	Duration    time.Duration
	Requests    int      // most requests in all (0: no bound but Duration)
	Prompts     []string // client i sends Prompts[(i+k) % len] for its k-th request
	MaxTokens   int
	// PID, if set, is the server's process: its peak resident set is read
	// from /proc at the end (else sampled from /metrics).
	PID int
}

// ServeResult is what a load run measured.
type ServeResult struct {
	Clients  int `json:"clients"`
	Requests int `json:"requests"` // answered or failed; 429s not counted
	OK       int `json:"ok"`
	// Rejected counts 429 answers (the client waited Retry-After and
	// sent the request again).
	Rejected int `json:"rejected_429"`
	// Lost counts requests that ended without a well-formed answer:
	// transport errors, HTTP errors other than 429, streams without a
	// finish chunk, usage or data: [DONE], or with mixed ids.
	Lost int `json:"lost"`
	// Corrupted counts answers that are not valid UTF-8 or whose usage
	// does not add up.
	Corrupted int `json:"corrupted"`
	// SameAsFirst is the share of answers equal to the first answer to
	// the same prompt (greedy decoding: batch composition can move a
	// logit by a rounding step, rarely a token).
	SameAsFirst float64 `json:"same_as_first"`
	TTFTp50     float64 `json:"ttft_p50_ms"`
	TTFTp99     float64 `json:"ttft_p99_ms"`
	Tokens      int     `json:"completion_tokens"`
	Seconds     float64 `json:"seconds"`
	TokPerSec   float64 `json:"aggregate_tok_per_s"`
	// StreamTokPerSec is the median per-request decode rate (tokens
	// after the first over the time after the first).
	StreamTokPerSec float64 `json:"stream_tok_per_s_p50"`
	PeakRSS         int64   `json:"server_peak_rss_bytes"`
	// ServerCPUSeconds is the server's CPU time over the run (its
	// process_cpu_seconds_total, which counts its pool's spinning between
	// regions too), 0 where /metrics has no such series.
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
	// ClientCPUSeconds is this process's CPU time over the run: the load
	// clients' (reading and checking every streamed chunk), which on the
	// server's machine takes CPUs from it; 0 where the system does not
	// say.
	ClientCPUSeconds float64 `json:"client_cpu_seconds"`
	// Decode is the server's aggregate decode throughput by batch size,
	// from its /metrics (turbomem_decode_*_total, read before and after
	// the run): the steps that fed no prompt tokens, so that prefill's
	// share of the steps does not dilute it. Empty for a server without
	// those series.
	Decode []DecodeRate `json:"decode,omitempty"`
	// DecodeTokPerSec is Decode's rate at the batch size that decoded the
	// most tokens (FullBatch sequences).
	DecodeTokPerSec float64  `json:"decode_tok_per_s"`
	FullBatch       int      `json:"decode_sequences"`
	Errors          []string `json:"errors,omitempty"` // the first few
}

// DecodeRate is the tokens and wall time of a server's decode-only steps
// of one batch size.
type DecodeRate struct {
	Sequences int     `json:"sequences"`
	Tokens    float64 `json:"tokens"`
	Seconds   float64 `json:"seconds"`
	TokPerSec float64 `json:"tok_per_s"`
}

// RunServeLoad runs the load and returns what it measured.
func RunServeLoad(ctx context.Context, l ServeLoad) (ServeResult, error) {
	if l.Clients < 1 || len(l.Prompts) == 0 || l.MaxTokens < 1 || l.Duration <= 0 {
		return ServeResult{}, errors.New("bench: serve load needs clients, prompts, max tokens and a duration")
	}
	ctx, cancel := context.WithTimeout(ctx, l.Duration+2*time.Minute) // requests in flight at the end may finish
	defer cancel()
	deadline := time.Now().Add(l.Duration)
	var (
		mu      sync.Mutex
		res     = ServeResult{Clients: l.Clients}
		ttfts   []float64
		rates   []float64
		first   = map[string]string{}
		same    int
		sent    int
		rssPeak int64
	)
	fail := func(lost bool, msg string) {
		mu.Lock()
		defer mu.Unlock()
		if lost {
			res.Lost++
		} else {
			res.Corrupted++
		}
		if len(res.Errors) < 5 {
			res.Errors = append(res.Errors, msg)
		}
	}
	stopRSS := make(chan struct{})
	rssDone := make(chan struct{})
	go func() { // the server's resident set, sampled
		defer close(rssDone)
		for {
			if v := scrapeRSS(l.URL, l.APIKey); v > 0 {
				mu.Lock()
				rssPeak = max(rssPeak, v)
				mu.Unlock()
			}
			select {
			case <-stopRSS:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	before := scrapeMetrics(l.URL, l.APIKey)
	cpu0, cpuOK := processCPU()
	start := time.Now()
	var wg sync.WaitGroup
	client := &http.Client{}
	for c := range l.Clients {
		wg.Go(func() {
			for k := 0; ; k++ {
				mu.Lock()
				if time.Now().After(deadline) || l.Requests > 0 && sent >= l.Requests || ctx.Err() != nil {
					mu.Unlock()
					return
				}
				sent++
				mu.Unlock()
				prompt := l.Prompts[(c+k)%len(l.Prompts)]
				for {
					a, retry, err := streamOnce(ctx, client, l, prompt)
					if retry > 0 {
						mu.Lock()
						res.Rejected++
						mu.Unlock()
						select {
						case <-time.After(retry):
							continue
						case <-ctx.Done():
							fail(true, "gave up after 429: "+ctx.Err().Error())
							return
						}
					}
					mu.Lock()
					res.Requests++
					mu.Unlock()
					switch {
					case err != nil:
						fail(true, err.Error())
					case !utf8.ValidString(a.text) || a.usage.TotalTokens != a.usage.PromptTokens+a.usage.CompletionTokens ||
						a.usage.CompletionTokens < 1 || a.usage.CompletionTokens > l.MaxTokens || a.finish == "length" && a.usage.CompletionTokens != l.MaxTokens:
						fail(false, fmt.Sprintf("answer %q with usage %+v, finish %q", a.text, a.usage, a.finish))
					default:
						mu.Lock()
						res.OK++
						res.Tokens += a.usage.CompletionTokens
						ttfts = append(ttfts, a.ttft.Seconds()*1000)
						if a.usage.CompletionTokens > 1 && a.total > a.ttft {
							rates = append(rates, float64(a.usage.CompletionTokens-1)/(a.total-a.ttft).Seconds())
						}
						if f, ok := first[prompt]; !ok {
							first[prompt] = a.text
							same++
						} else if f == a.text {
							same++
						}
						mu.Unlock()
					}
					break
				}
			}
		})
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	after := scrapeMetrics(l.URL, l.APIKey)
	if cpu1, ok := processCPU(); ok && cpuOK {
		res.ClientCPUSeconds = (cpu1 - cpu0).Seconds()
	}
	if c0, c1 := metricValue(cpuLine, before), metricValue(cpuLine, after); c0 > 0 && c1 >= c0 {
		res.ServerCPUSeconds = c1 - c0
	}
	res.Decode = decodeRates(parseDecode(before), parseDecode(after))
	for _, d := range res.Decode {
		if res.FullBatch == 0 || d.Tokens > res.Decode[res.FullBatch-1].Tokens {
			res.FullBatch, res.DecodeTokPerSec = d.Sequences, d.TokPerSec
		}
	}
	close(stopRSS)
	<-rssDone
	res.PeakRSS = rssPeak
	if l.PID > 0 {
		if v := procPeakRSS(strconv.Itoa(l.PID)); v > 0 {
			res.PeakRSS = v
		}
	}
	res.TTFTp50, res.TTFTp99 = percentile(ttfts, 0.5), percentile(ttfts, 0.99)
	res.StreamTokPerSec = percentile(rates, 0.5)
	if res.Seconds > 0 {
		res.TokPerSec = float64(res.Tokens) / res.Seconds
	}
	if res.OK > 0 {
		res.SameAsFirst = float64(same) / float64(res.OK)
	}
	return res, nil
}

// answer is one streamed completion, checked for well-formedness.
type answer struct {
	text        string
	finish      string
	usage       struct{ PromptTokens, CompletionTokens, TotalTokens int }
	ttft, total time.Duration
}

// streamOnce sends one streaming completion. A 429 returns the time to
// wait before retrying.
func streamOnce(ctx context.Context, client *http.Client, l ServeLoad, prompt string) (a answer, retry time.Duration, err error) {
	body, _ := json.Marshal(map[string]any{"prompt": prompt, "max_tokens": l.MaxTokens, "temperature": 0, "stream": true,
		"stream_options": map[string]bool{"include_usage": true}})
	req, err := http.NewRequestWithContext(ctx, "POST", l.URL+"/v1/completions", bytes.NewReader(body))
	if err != nil {
		return a, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	// A server may close a kept-alive connection between requests
	// (llama-server does after a few): a POST already on its way over it
	// then fails with EOF before the server has read it. net/http resends
	// such a request on a new connection only when it is marked
	// idempotent; nothing was processed, so this loses or repeats nothing.
	req.Header.Set("Idempotency-Key", strconv.FormatInt(time.Now().UnixNano(), 36))
	if l.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+l.APIKey)
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return a, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusTooManyRequests {
		io.Copy(io.Discard, resp.Body)
		secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		return a, time.Duration(min(max(secs, 1), 5)) * time.Second / 4, nil
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return a, 0, fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var id string
	var text strings.Builder
	done, gotUsage := false, false
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, ":") { // blank, or an SSE comment (keep-alive)
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || done {
			return a, 0, fmt.Errorf("stray line %q", line)
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var c struct {
			ID      string `json:"id"`
			Error   *struct{ Message string }
			Choices []struct {
				Text         string  `json:"text"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *struct {
				PromptTokens     int `json:"prompt_tokens"`
				CompletionTokens int `json:"completion_tokens"`
				TotalTokens      int `json:"total_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			return a, 0, fmt.Errorf("chunk %q: %w", data, err)
		}
		if c.Error != nil {
			return a, 0, fmt.Errorf("error event: %s", c.Error.Message)
		}
		if id == "" {
			id = c.ID
		} else if c.ID != id {
			return a, 0, fmt.Errorf("chunk of id %q in stream %q", c.ID, id)
		}
		for _, ch := range c.Choices {
			if ch.Text != "" && a.ttft == 0 {
				a.ttft = time.Since(start)
			}
			text.WriteString(ch.Text)
			if ch.FinishReason != nil {
				a.finish = *ch.FinishReason
			}
		}
		if c.Usage != nil {
			gotUsage = true
			a.usage.PromptTokens, a.usage.CompletionTokens, a.usage.TotalTokens = c.Usage.PromptTokens, c.Usage.CompletionTokens, c.Usage.TotalTokens
		}
	}
	if err := sc.Err(); err != nil {
		return a, 0, err
	}
	if !done || !gotUsage || a.finish == "" {
		return a, 0, fmt.Errorf("stream ended without finish (%q), usage (%v) or [DONE] (%v)", a.finish, gotUsage, done)
	}
	a.text, a.total = text.String(), time.Since(start)
	if a.ttft == 0 {
		a.ttft = a.total
	}
	return a, 0, nil
}

var (
	rssLine    = regexp.MustCompile(`(?m)^process_resident_memory_bytes (\S+)$`)
	cpuLine    = regexp.MustCompile(`(?m)^process_cpu_seconds_total (\S+)$`)
	decodeLine = regexp.MustCompile(`(?m)^turbomem_decode_(tokens|seconds)_total\{sequences="(\d+)"\} (\S+)$`)
)

// scrapeMetrics returns the server's /metrics text, nil on any failure.
func scrapeMetrics(url, key string) []byte {
	req, err := http.NewRequest("GET", url+"/metrics", nil)
	if err != nil {
		return nil
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return b
}

// scrapeRSS reads the server's resident set from its /metrics.
func scrapeRSS(url, key string) int64 { return int64(metricValue(rssLine, scrapeMetrics(url, key))) }

// metricValue returns the value of the unlabelled series that re matches
// in /metrics text (its one group), 0 where there is none or it is not a
// finite number.
func metricValue(re *regexp.Regexp, metrics []byte) float64 {
	m := re.FindSubmatch(metrics)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0
	}
	return v
}

// parseDecode reads the decode counters of /metrics text: [tokens,
// seconds] by batch size (at most 4096 sequences).
func parseDecode(metrics []byte) map[int][2]float64 {
	out := map[int][2]float64{}
	for _, m := range decodeLine.FindAllSubmatch(metrics, -1) {
		n, err1 := strconv.Atoi(string(m[2]))
		v, err2 := strconv.ParseFloat(string(m[3]), 64)
		if err1 != nil || err2 != nil || n < 1 || n > 4096 {
			continue
		}
		c := out[n]
		c[boolIndex(string(m[1]) == "seconds")] = v
		out[n] = c
	}
	return out
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

// decodeRates returns the decode rate of each batch size between two
// scrapes, by batch size; the slice is indexed by size-1 up to the
// largest size seen.
func decodeRates(before, after map[int][2]float64) []DecodeRate {
	largest := 0
	for n := range after {
		largest = max(largest, n)
	}
	out := make([]DecodeRate, largest)
	for i := range out {
		a, b := after[i+1], before[i+1]
		d := DecodeRate{Sequences: i + 1, Tokens: a[0] - b[0], Seconds: a[1] - b[1]}
		if d.Seconds > 0 {
			d.TokPerSec = d.Tokens / d.Seconds
		}
		out[i] = d
	}
	return out
}

// procPeakRSS returns the peak resident set (VmHWM) of process pid (a
// number, or "self"), or 0 where /proc is not available.
func procPeakRSS(pid string) int64 {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// percentile returns the p-quantile of xs (nearest rank), 0 for none.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}
