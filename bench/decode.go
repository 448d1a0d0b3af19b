package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tensor"
)

// ErrPeer marks a failure of the llama.cpp peer (bench/peers): what was
// measured with turbomem before it is kept.
var ErrPeer = errors.New("bench: llama.cpp peer")

// CheckPeer reports, before any work, whether the peer script can run:
// the script exists, node is on the PATH and node-llama-cpp is installed
// beside the script (cd bench/peers && npm install).
func CheckPeer(script string) error {
	if _, err := os.Stat(script); err != nil {
		return fmt.Errorf("%w: %w (run from the repository root, after cd bench/peers && npm install)", ErrPeer, err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		return fmt.Errorf("%w: node (Node.js) is not on the PATH: install Node.js 20 or later, then cd bench/peers && npm install", ErrPeer)
	}
	lib := filepath.Join(filepath.Dir(script), "node_modules", "node-llama-cpp")
	if _, err := os.Stat(lib); err != nil {
		return fmt.Errorf("%w: %s is missing: run cd %s && npm install", ErrPeer, lib, filepath.Dir(script))
	}
	return nil
}

// DecodeOptions configures DecodeSpeed.
type DecodeOptions struct {
	// Contexts are the prompt lengths to decode after, N the tokens
	// decoded at each.
	Contexts []int
	N        int
	// Threads is the model's thread count (the prefill's), and llama.cpp's.
	Threads int
	// DecodeThreads are the thread counts each prefilled session decodes
	// at, one after another (none: Threads alone).
	DecodeThreads []int
	// KV makes the caches (a kvcache.Config; nil: f16); Configs, if set,
	// lists several, each with its own session, decoded in turn.
	KV      kvcache.Maker
	Configs []kvcache.Config
	// Repeat is how many times each session decodes N tokens at each
	// thread count (at least 1): the formats and thread counts take turns
	// round after round, so that load from elsewhere falls on each alike,
	// and the rows give the median and the range over the rounds.
	Repeat int
	// Seed seeds the random prompts.
	Seed uint64
	// Peer, if set, is the peer script to run llama.cpp with on
	// ModelPath ("": the embedded model, written to a temporary file),
	// after turbomem at each context.
	Peer, ModelPath string
	// CPUProfile, if set, receives a CPU profile (runtime/pprof) of the
	// decoding rounds alone, the prefills left out; it needs a single
	// context length.
	CPUProfile io.Writer
}

// DecodeSpeed prefills random tokens (the control tokens 0–2 left out)
// of each context length, once per cache configuration, and decodes N
// tokens greedily with each at each of DecodeThreads, Repeat rounds, with
// turbomem and, with a peer, with llama.cpp on the same ids and thread
// count. A failing peer keeps turbomem's rows: they are returned with an
// error wrapping ErrPeer. Rows come per context: each configuration's at
// each thread count, then the peer's.
func DecodeSpeed(m *model.Model, o DecodeOptions) ([]DecodeResult, error) {
	var rows []DecodeResult
	var modelFile string
	if o.Peer != "" {
		f, cleanup, err := ModelFile(o.ModelPath)
		if err != nil {
			return nil, err
		}
		defer cleanup()
		modelFile = f
	}
	makers := []kvcache.Maker{o.KV}
	if len(o.Configs) > 0 {
		makers = makers[:0]
		for _, c := range o.Configs {
			makers = append(makers, c)
		}
	}
	threads := o.DecodeThreads
	if len(threads) == 0 {
		threads = []int{o.Threads}
	}
	pools := make([]*tensor.Pool, len(threads))
	for i, t := range threads {
		pools[i] = tensor.NewPool(t)
		defer pools[i].Close()
	}
	if o.CPUProfile != nil && len(o.Contexts) != 1 {
		return nil, fmt.Errorf("bench: a CPU profile of decoding needs one context length, have %d", len(o.Contexts))
	}
	r := rand.New(rand.NewPCG(o.Seed, 3))
	for _, ctx := range o.Contexts {
		if ctx < 1 {
			return rows, fmt.Errorf("bench: a context of %d tokens", ctx)
		}
		ids := make([]int32, ctx)
		for i := range ids {
			ids[i] = int32(3 + r.IntN(m.Config.Vocab-3))
		}
		res, err := decodeRounds(m, makers, pools, ids, o.N, max(1, o.Repeat), o.Threads, o.CPUProfile)
		if err != nil {
			return rows, err
		}
		rows = append(rows, res...)
		if o.Peer != "" {
			pr, err := PeerDecode(o.Peer, modelFile, ids, o.N, o.Threads)
			if err != nil {
				return rows, err
			}
			rows = append(rows, pr)
		}
	}
	return rows, nil
}

// decodeRounds prefills ids but the last once per maker (on the model's
// pool), then decodes n tokens greedily from the last prompt token with
// every session at every pool, rounds times, in turn; one row per
// (maker, pool), the decode rate the median over the rounds of each
// round's median step. With profile set, the rounds (not the prefills)
// are profiled into it.
func decodeRounds(m *model.Model, makers []kvcache.Maker, pools []*tensor.Pool, ids []int32, n, rounds, threads int, profile io.Writer) ([]DecodeResult, error) {
	type run struct {
		s      *model.Session
		next   int32
		sample *model.Sampler
	}
	runs := make([]run, len(makers))
	rows := make([]DecodeResult, len(makers)*len(pools))
	rates := make([][]float64, len(rows))
	for i, kv := range makers {
		s, err := m.NewSession(kv, len(ids)+rounds*len(pools)*n)
		if err != nil {
			return nil, err
		}
		start := time.Now()
		if len(ids) > 1 {
			if _, err := s.Forward(ids[:len(ids)-1], false); err != nil {
				return nil, err
			}
		}
		prompt := float64(len(ids)-1) / time.Since(start).Seconds()
		sampler, _ := model.NewSampler(model.SamplerConfig{})
		runs[i] = run{s: s, next: ids[len(ids)-1], sample: sampler}
		for j, p := range pools {
			row := &rows[i*len(pools)+j]
			*row = DecodeResult{Engine: "turbomem", Format: formatName(kv), Context: len(ids), Threads: p.Threads()}
			if p.Threads() == threads {
				row.PromptTPS = prompt
			}
		}
	}
	if profile != nil {
		if err := pprof.StartCPUProfile(profile); err != nil {
			return nil, fmt.Errorf("bench: CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	for round := range rounds {
		for i := range runs {
			for j, p := range pools {
				ru := &runs[i]
				ru.s.UsePool(p)
				row := &rows[i*len(pools)+j]
				steps := make([]float64, 0, n)
				last := time.Now()
				for k := range n {
					logits, err := ru.s.Forward([]int32{ru.next}, false)
					if err != nil {
						return nil, err
					}
					ru.next = ru.sample.Sample(logits)
					if round == 0 {
						row.Tokens = append(row.Tokens, ru.next)
					}
					now := time.Now()
					if k > 0 || n == 1 { // the first step also evaluates the last prompt token
						steps = append(steps, float64(now.Sub(last))/float64(time.Millisecond))
					}
					last = now
				}
				if round == 0 {
					row.StepMs = steps
				}
				rates[i*len(pools)+j] = append(rates[i*len(pools)+j], 1000/median(steps))
			}
		}
	}
	for i := range rows {
		rs := rates[i]
		rows[i].DecodeTPS = median(rs)
		rows[i].DecodeMin, rows[i].DecodeMax = slices.Min(rs), slices.Max(rs)
		rows[i].Rounds = len(rs)
		rows[i].PeakRSS = peakRSS()
	}
	for i := range runs {
		runs[i].s.UsePool(nil)
	}
	return rows, nil
}

// formatName names the cache configuration kv makes (f16 for nil).
func formatName(kv kvcache.Maker) string {
	if s, ok := kv.(fmt.Stringer); ok && kv != nil {
		return s.String()
	}
	return "f16"
}

// median returns the median of xs (len ≥ 1), leaving xs as it is.
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + m) / 2
	}
	return m
}

// DecodeResult is one row of DecodeSpeed.
type DecodeResult struct {
	Engine    string  `json:"engine"`
	Format    string  `json:"format,omitempty"`
	Context   int     `json:"context"`
	PromptTPS float64 `json:"prompt_tps"` // 0 where the prefill ran at another thread count
	DecodeTPS float64 `json:"decode_tps"`
	// DecodeMin and DecodeMax are the range of the decode rate over the
	// rounds (Rounds of them).
	DecodeMin float64 `json:"decode_tps_min,omitempty"`
	DecodeMax float64 `json:"decode_tps_max,omitempty"`
	Rounds    int     `json:"rounds,omitempty"`
	Tokens    []int32 `json:"tokens,omitempty"`
	PeakRSS   int64   `json:"peak_rss_bytes,omitempty"`
	Threads   int     `json:"threads"`
	// StepMs holds the time of each decode step in ms (of the first
	// round; the first step, which also evaluates the last prompt token,
	// left out for ours).
	StepMs []float64 `json:"-"`
}

// PeerDecode runs the peer script (bench/peers/greedy.mjs) on the same
// ids, decoding n tokens; extra arguments go to the script as they are
// (--kv q8_0 --flash).
func PeerDecode(script, modelPath string, ids []int32, n, threads int, extra ...string) (DecodeResult, error) {
	strs := make([]string, len(ids))
	for i, id := range ids {
		strs[i] = strconv.Itoa(int(id))
	}
	abs, err := filepath.Abs(modelPath)
	if err != nil {
		return DecodeResult{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	args := []string{script, "--model", abs, "--ids", strings.Join(strs, ","),
		"--n", strconv.Itoa(n), "--threads", strconv.Itoa(threads), "--ctx", strconv.Itoa(len(ids) + n + 8)}
	cmd := exec.CommandContext(ctx, "node", append(args, extra...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return DecodeResult{}, fmt.Errorf("%w: %v: %s", ErrPeer, err, strings.TrimSpace(stderr.String()))
	}
	var p struct {
		Tokens    []int32   `json:"tokens"`
		PromptTPS float64   `json:"prompt_tps"`
		DecodeTPS float64   `json:"decode_tps"`
		TokenMs   []float64 `json:"token_ms"`
	}
	// The last line is the JSON result.
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &p); err != nil {
		return DecodeResult{}, fmt.Errorf("%w: reading its output: %v", ErrPeer, err)
	}
	return DecodeResult{Engine: "llama.cpp", Context: len(ids), PromptTPS: p.PromptTPS, DecodeTPS: p.DecodeTPS, Tokens: p.Tokens, Threads: threads, StepMs: p.TokenMs}, nil
}

// peakRSS returns the process's peak resident set (VmHWM), or 0 where
// /proc is not available.
func peakRSS() int64 { return procPeakRSS("self") }

// ModelFile returns a file that holds the model for llama.cpp: path
// itself, or the embedded GGUF written to a temporary file that cleanup
// removes.
func ModelFile(path string) (file string, cleanup func(), err error) {
	if path != "" {
		return path, func() {}, nil
	}
	f, err := os.CreateTemp("", "turbomem-default-*.gguf")
	if err != nil {
		return "", nil, fmt.Errorf("bench: writing the embedded model for llama.cpp: %w", err)
	}
	cleanup = func() { os.Remove(f.Name()) }
	if _, err := f.Write(defaultmodel.GGUF()); err != nil {
		f.Close()
		cleanup()
		return "", nil, fmt.Errorf("bench: writing the embedded model for llama.cpp: %w", err)
	}
	if err := f.Close(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("bench: writing the embedded model for llama.cpp: %w", err)
	}
	return f.Name(), cleanup, nil
}
