package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/plot"
	"github.com/turbomem/turbomem/quant"
)

// kvBenchReport is what 'bench kv' measured: the attention step of one
// layer per format and context, and decode speed of the whole model.
type kvBenchReport struct {
	Model     string         `json:"model"`
	Shape     kvcache.Shape  `json:"shape"`
	Layers    int            `json:"layers"`
	Layer     int            `json:"stats_layer"`   // layer whose K/V statistics the synthetic tokens follow
	Recorded  int            `json:"recorded"`      // real tokens recorded (the first tokens of every cache)
	Threads   int            `json:"threads"`       // model threads; one layer's attention runs on one core per KV head
	Kernels   string         `json:"kernels"`       // quant.SIMDLevel()
	Iters     int            `json:"iters"`         // Attend calls per format and context (median reported)
	Attention []attnRow      `json:"attention"`     // one per format and context
	Decode    []kvDecodeRow  `json:"decode"`        // one per engine, format and decode context
	Summary   []kvBenchRatio `json:"summary"`       // the two ratios
	Date      string         `json:"date"`          // RFC 3339, UTC
	Base      int            `json:"decode_base"`   // context the decode attention estimate subtracts (0: none)
	DecodeN   int            `json:"decode_tokens"` // tokens decoded per context
}

// attnRow is the attention step of one layer for one format at one
// context length.
type attnRow struct {
	Format  string  `json:"format"`
	Context int     `json:"context"`
	Micros  float64 `json:"us"`             // median time of one Attend call
	VsF16   float64 `json:"speedup_vs_f16"` // our f16 time / this time, same context
	Bytes   int     `json:"bytes"`          // the cache's bytes at this context
}

// kvDecodeRow is the decode speed of one engine and cache format at one
// context, with the attention time per layer estimated from it.
type kvDecodeRow struct {
	Engine    string  `json:"engine"` // turbomem or llama.cpp
	Format    string  `json:"format"`
	Context   int     `json:"context"`
	PromptTPS float64 `json:"prompt_tps"`
	// DecodeTPS is 1 / the median decode step (the first step, which
	// also evaluates the last prompt token, left out): the median
	// resists other load on the machine better than the mean.
	DecodeTPS     float64 `json:"decode_tps"`
	DecodeTPSMean float64 `json:"decode_tps_mean"` // decode steps / their total time
	// AttnMicros is the attention time per layer and token estimated
	// from decode times (attnEstimate); 0 at the base context.
	AttnMicros   float64 `json:"attn_us_per_layer"`
	VsF16        float64 `json:"attn_speedup_vs_f16"`       // our f16 estimate / this one
	VsLlamaF16   float64 `json:"attn_speedup_vs_llama_f16"` // llama.cpp f16 estimate / this one (0: not run)
	DecodeVsF16  float64 `json:"decode_speedup_vs_f16"`     // decode tok/s / our f16's
	PeakRSSBytes int64   `json:"peak_rss_bytes,omitempty"`
}

// kvBenchRatio is one of the target ratios at one context.
type kvBenchRatio struct {
	What    string  `json:"what"`
	Context int     `json:"context"`
	Ratio   float64 `json:"ratio"` // > 1: the format is faster
	Source  string  `json:"source"`
}

// Defaults of 'bench kv'.
const (
	benchKVFormats   = "f16,q8_0,q4_0,kivi2,turbo2.5,turbo3,turbo3.5,turbo4,turbo3.5p,polar"
	benchKVTarget    = "turbo3.5" // the format the targets name
	benchKVLlamaKV   = "f16,q8_0,q4_0"
	benchKVPeer      = "bench/peers/greedy.mjs"
	benchKVMaxTokens = 1 << 20
)

func benchKV(e *env, args []string) error {
	fs := newFlagSet(e, "bench kv", "\n\nAttention-step time of one layer against context length for each KV format,\n"+
		"beside our f16 cache in the same run, on keys, values and queries with the\n"+
		"statistics of the model's own (recorded over the first --record tokens of the\n"+
		"embedded held-out text; Gaussian per channel beyond them); then decode tokens/s\n"+
		"of the model at --decode-ctx for each format and, with --llama, of llama.cpp\n"+
		"(bench/peers, flash attention on) with its f16/q8_0/q4_0 caches. Attention per\n"+
		"layer is also estimated from decode times: (t(N) − t(base))·N/(N − base)/layers,\n"+
		"base the smallest --decode-ctx, for both engines alike.")
	path := fs.String("m", "", "GGUF model file (default: the embedded reference model)")
	kvList := fs.String("kv", benchKVFormats, "comma-separated formats (K/V pairs as K:V); f16 is always measured as the reference")
	ctxList := fs.String("ctx", "1024,4096,16384,65536", "context lengths of the attention step")
	decodeList := fs.String("decode-ctx", "1024,4096,16384", "context lengths to decode at (empty: no decode)")
	n := fs.Int("n", 32, "tokens decoded at each decode context")
	iters := fs.Int("iters", 30, "timed Attend calls per format and context (the median is reported)")
	record := fs.Int("record", 2048, "tokens of held-out text recorded for the K/V statistics")
	layer := fs.Int("layer", -1, "layer whose statistics the synthetic tokens follow (-1: the middle one)")
	threads := fs.Int("threads", 0, "threads of the model and of llama.cpp (0: all CPUs; on a busy machine use fewer: llama.cpp's threads spin at barriers and collapse when one is preempted)")
	llama := fs.Bool("llama", false, "also decode with llama.cpp through node-llama-cpp (cd bench/peers && npm install)")
	peer := fs.String("peer", benchKVPeer, "the llama.cpp peer script")
	llamaKV := fs.String("llama-kv", benchKVLlamaKV, "llama.cpp KV cache types to run (flash attention on)")
	format := formatFlag(fs)
	plotFile := fs.String("plot", "", "draw attention µs against context to this SVG file")
	jsonFile := fs.String("json", "", "also write the report as JSON to this file")
	seed := fs.Uint64("seed", 1, "seed of the synthetic tokens")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkFormat(*format); err != nil {
		return err
	}
	if *iters < 1 || *iters > 100000 {
		return usageError{fmt.Errorf("--iters %d out of range [1, 100000]", *iters)}
	}
	if *n < 2 || *n > 100000 {
		return usageError{fmt.Errorf("--n %d out of range [2, 100000]", *n)}
	}
	if *record < 2 || *record > benchKVMaxTokens {
		return usageError{fmt.Errorf("--record %d out of range [2, %d]", *record, benchKVMaxTokens)}
	}
	if *threads < 0 {
		return usageError{fmt.Errorf("--threads %d: must be ≥ 0", *threads)}
	}
	specs, err := parseKVSpecs(*kvList)
	if err != nil {
		return err
	}
	ctxs, err := parseContexts("--ctx", *ctxList, 1)
	if err != nil {
		return err
	}
	if len(ctxs) == 0 {
		return usageError{fmt.Errorf("--ctx: no context length given")}
	}
	decodeCtxs, err := parseContexts("--decode-ctx", *decodeList, 2)
	if err != nil {
		return err
	}
	var llamaTypes []string
	if *llama {
		if llamaTypes, err = parseLlamaKV(*llamaKV); err != nil {
			return err
		}
		if len(decodeCtxs) == 0 {
			return usageError{fmt.Errorf("--llama needs at least one --decode-ctx")}
		}
		if _, err := os.Stat(*peer); err != nil {
			return usageError{fmt.Errorf("--peer: %w (run from the repository root, after cd bench/peers && npm install)", err)}
		}
	}
	th := *threads
	if th == 0 {
		th = numCPU()
	}

	l, err := (genFlags{model: path, threads: &th}).load(e)
	if err != nil {
		return err
	}
	defer l.m.Close()
	sh := l.m.CacheShape()
	if err := checkConfigs(l.m, specs...); err != nil {
		return err
	}
	layers := l.m.Config.Layers
	if *layer < -1 || *layer >= layers {
		return usageError{fmt.Errorf("--layer %d out of range [-1, %d)", *layer, layers)}
	}
	statsLayer := *layer
	if statsLayer < 0 {
		statsLayer = layers / 2
	}
	ids := l.tok.Encode(defaultmodel.HeldOut(), true)
	if len(ids) < 2 {
		return fmt.Errorf("bench kv: held-out text has %d tokens", len(ids))
	}
	rep := kvBenchReport{
		Model: modelName(*path), Shape: sh, Layers: layers, Layer: statsLayer, Threads: th,
		Kernels: quant.SIMDLevel(), Iters: *iters, DecodeN: *n, Date: time.Now().UTC().Format(time.RFC3339),
	}

	progress := func(format string, a ...any) {
		if isTerminal(e.stderr) {
			fmt.Fprintf(e.stderr, "\r\033[K"+format, a...)
		}
	}
	rec, err := recordLayer(l.m, ids[:min(*record, len(ids), l.m.Config.Context)], statsLayer)
	if err != nil {
		return err
	}
	rep.Recorded = rec.tokens()
	rep.Attention, err = timeAttention(specs, sh, rec, ctxs, *iters, *seed, progress)
	if err != nil {
		return err
	}
	if len(decodeCtxs) > 0 {
		rep.Base = decodeCtxs[0]
		var modelFile string
		if *llama {
			f, cleanup, err := modelFileFor(*path)
			if err != nil {
				return err
			}
			defer cleanup()
			modelFile = f
		}
		for _, ctx := range decodeCtxs {
			prompt := repeatIDs(ids, ctx)
			for _, s := range specs {
				progress("decode %s at %d tokens", s, ctx)
				r, err := decodeOurs(l.m, s, prompt, *n, th)
				if err != nil {
					return fmt.Errorf("bench kv: decode %s at %d tokens: %w", s, ctx, err)
				}
				rep.Decode = append(rep.Decode, newKVDecodeRow(r, s.String()))
			}
			for _, kv := range llamaTypes {
				progress("llama.cpp %s at %d tokens", kv, ctx)
				r, err := decodePeer(*peer, modelFile, prompt, *n, th, "--kv", kv, "--flash")
				if err != nil {
					return fmt.Errorf("bench kv: llama.cpp %s at %d tokens: %w", kv, ctx, err)
				}
				rep.Decode = append(rep.Decode, newKVDecodeRow(r, kv))
			}
		}
		estimateDecodeAttention(rep.Decode, rep.Base, layers)
	}
	progress("")
	rep.Summary = kvBenchSummary(rep)
	if *plotFile != "" {
		if err := writeAttentionPlot(*plotFile, rep); err != nil {
			return fmt.Errorf("bench kv: plot: %w", err)
		}
	}
	if *jsonFile != "" {
		if err := writeKVBenchJSON(*jsonFile, rep); err != nil {
			return fmt.Errorf("bench kv: %w", err)
		}
	}
	if *format == "json" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return writeKVBenchTables(e.stdout, rep)
}

// writeKVBenchJSON writes the report to path as indented JSON.
func writeKVBenchJSON(path string, rep kvBenchReport) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// parseKVSpecs parses a comma-separated list of formats (K:V for a pair),
// with f16 first whether or not it is named: it is the reference.
func parseKVSpecs(list string) ([]kvcache.Config, error) {
	cs, err := parseKVList(list, 0, false)
	if err != nil {
		return nil, err
	}
	specs := []kvcache.Config{kvcache.F16()}
	for _, c := range cs {
		if !slices.ContainsFunc(specs, func(o kvcache.Config) bool { return o.String() == c.String() }) {
			specs = append(specs, c)
		}
	}
	return specs, nil
}

// parseContexts parses a comma-separated list of context lengths, each at
// least lo, into ascending order without repeats; an empty list is none.
func parseContexts(flagName, list string, lo int) ([]int, error) {
	var out []int
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	for _, f := range strings.Split(list, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || c < lo || c > benchKVMaxTokens {
			return nil, usageError{fmt.Errorf("%s: %q is not a context length in [%d, %d]", flagName, f, lo, benchKVMaxTokens)}
		}
		out = append(out, c)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// parseLlamaKV parses the llama.cpp cache types (--cache-type-k names).
func parseLlamaKV(list string) ([]string, error) {
	known := []string{"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"}
	var out []string
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if !slices.Contains(known, f) {
			return nil, usageError{fmt.Errorf("--llama-kv: %q is not a llama.cpp cache type (%s)", f, strings.Join(known, ", "))}
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out, nil
}

// modelName is the -m path, or the embedded model's name.
func modelName(path string) string {
	if path == "" {
		return defaultmodel.Name + " (embedded)"
	}
	return path
}

// modelFileFor returns a file that holds the model for the peer: path
// itself, or the embedded GGUF written to a temporary file that cleanup
// removes.
func modelFileFor(path string) (file string, cleanup func(), err error) {
	if path != "" {
		return path, func() {}, nil
	}
	f, err := os.CreateTemp("", "turbomem-default-*.gguf")
	if err != nil {
		return "", nil, fmt.Errorf("bench kv: writing the embedded model for llama.cpp: %w", err)
	}
	cleanup = func() { os.Remove(f.Name()) }
	if _, err := f.Write(defaultmodel.GGUF()); err != nil {
		f.Close()
		cleanup()
		return "", nil, fmt.Errorf("bench kv: writing the embedded model for llama.cpp: %w", err)
	}
	if err := f.Close(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("bench kv: writing the embedded model for llama.cpp: %w", err)
	}
	return f.Name(), cleanup, nil
}

// repeatIDs returns n tokens: ids repeated from the start as often as
// needed.
func repeatIDs(ids []int32, n int) []int32 {
	out := make([]int32, 0, n)
	for len(out) < n {
		out = append(out, ids[:min(len(ids), n-len(out))]...)
	}
	return out
}

// kvRecording is what one layer saw over the recorded tokens, with the
// per-channel statistics of its keys and values.
type kvRecording struct {
	sh                    kvcache.Shape
	keys, values, queries []float32 // token after token
	kMean, kStd           []float32 // per channel of the KVHeads·HeadDim
	vMean, vStd           []float32
}

// tokens returns the number of tokens recorded.
func (r *kvRecording) tokens() int { return len(r.keys) / (r.sh.KVHeads * r.sh.HeadDim) }

// recordLayer runs the model over ids with f32 caches and returns what
// layer saw.
func recordLayer(m *model.Model, ids []int32, layer int) (*kvRecording, error) {
	traces, err := eval.RecordKV(m, ids, layer)
	if err != nil {
		return nil, fmt.Errorf("bench kv: %w", err)
	}
	t := traces[layer]
	r := &kvRecording{sh: t.Shape, keys: t.K, values: t.V, queries: t.Q}
	w := r.sh.KVHeads * r.sh.HeadDim
	r.kMean, r.kStd = channelStats(r.keys, w)
	r.vMean, r.vStd = channelStats(r.values, w)
	return r, nil
}

// channelStats returns the mean and standard deviation of each of the w
// channels of rows (len a multiple of w).
func channelStats(rows []float32, w int) (mean, std []float32) {
	n := len(rows) / w
	sum := make([]float64, w)
	sq := make([]float64, w)
	for t := range n {
		for c, x := range rows[t*w : (t+1)*w] {
			sum[c] += float64(x)
			sq[c] += float64(x) * float64(x)
		}
	}
	mean, std = make([]float32, w), make([]float32, w)
	for c := range w {
		mu := sum[c] / float64(n)
		mean[c] = float32(mu)
		std[c] = float32(math.Sqrt(max(sq[c]/float64(n)-mu*mu, 0)))
	}
	return mean, std
}

// tokenSource yields the tokens of the attention benchmark: the recorded
// ones first, then synthetic ones drawn per channel from a Gaussian with
// the recorded mean and standard deviation. Sources with the same seed
// yield the same tokens.
type tokenSource struct {
	rec  *kvRecording
	rng  *rand.Rand
	next int
}

func newTokenSource(rec *kvRecording, seed uint64) *tokenSource {
	return &tokenSource{rec: rec, rng: rand.New(rand.NewPCG(seed, 0x6b76))}
}

// fill sets k and v to the next token's keys and values.
func (s *tokenSource) fill(k, v []float32) {
	w := len(k)
	if s.next < s.rec.tokens() {
		copy(k, s.rec.keys[s.next*w:])
		copy(v, s.rec.values[s.next*w:])
	} else {
		for c := range w {
			k[c] = s.rec.kMean[c] + s.rec.kStd[c]*float32(s.rng.NormFloat64())
			v[c] = s.rec.vMean[c] + s.rec.vStd[c]*float32(s.rng.NormFloat64())
		}
	}
	s.next++
}

// timeAttention fills one cache per spec with the same tokens, context
// after context, and times Attend at each: all formats at one context
// interleaved call by call, so that load from elsewhere falls on each
// alike. The queries are the recorded ones, in turn.
func timeAttention(specs []kvcache.Config, sh kvcache.Shape, rec *kvRecording, ctxs []int, iters int, seed uint64, progress func(string, ...any)) ([]attnRow, error) {
	type bench struct {
		spec  kvcache.Config
		cache kvcache.Cache
		src   *tokenSource
		times []time.Duration
	}
	bs := make([]*bench, len(specs))
	for i, s := range specs {
		c, err := s.NewCache(0, sh)
		if err != nil {
			return nil, fmt.Errorf("bench kv: %s: %w", s, err)
		}
		bs[i] = &bench{spec: s, cache: c, src: newTokenSource(rec, seed)}
	}
	w := sh.KVHeads * sh.HeadDim
	qw := sh.QHeads * sh.HeadDim
	nq := len(rec.queries) / qw
	k, v := make([]float32, w), make([]float32, w)
	out := make([]float32, qw)
	scale := float32(1 / math.Sqrt(float64(sh.HeadDim)))
	query := func(i int) []float32 { j := i % nq; return rec.queries[j*qw : (j+1)*qw] }
	var rows []attnRow
	for _, ctx := range ctxs {
		for _, b := range bs {
			progress("filling %s to %d tokens", b.spec, ctx)
			for b.cache.Len() < ctx {
				b.src.fill(k, v)
				if err := b.cache.Append(k, v); err != nil {
					return nil, fmt.Errorf("bench kv: %s: token %d: %w", b.spec, b.cache.Len(), err)
				}
			}
			b.cache.Attend(out, query(0), scale) // warm-up
			b.times = b.times[:0]
		}
		progress("timing attention at %d tokens", ctx)
		for i := range iters {
			for _, b := range bs {
				q := query(i)
				start := time.Now()
				b.cache.Attend(out, q, scale)
				b.times = append(b.times, time.Since(start))
			}
		}
		var ref float64
		for i, b := range bs {
			r := attnRow{Format: b.spec.String(), Context: ctx, Micros: medianMicros(b.times), Bytes: b.cache.Bytes()}
			if i == 0 {
				ref = r.Micros // f16 is first (parseKVSpecs)
			}
			r.VsF16 = ref / r.Micros
			rows = append(rows, r)
		}
	}
	return rows, nil
}

// newKVDecodeRow returns the row of a decode run with cache format
// format.
func newKVDecodeRow(r decodeResult, format string) kvDecodeRow {
	row := kvDecodeRow{Engine: r.Engine, Format: format, Context: r.Context, PromptTPS: r.PromptTPS,
		DecodeTPS: r.DecodeTPS, DecodeTPSMean: r.DecodeTPS, PeakRSSBytes: r.PeakRSS}
	if len(r.StepMs) > 1 {
		steps := slices.Clone(r.StepMs[1:])
		slices.Sort(steps)
		m := steps[len(steps)/2]
		if len(steps)%2 == 0 {
			m = (steps[len(steps)/2-1] + m) / 2
		}
		row.DecodeTPS = 1000 / m
	}
	return row
}

// medianMicros returns the median of ts in microseconds.
func medianMicros(ts []time.Duration) float64 {
	s := slices.Clone(ts)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return float64(m) / float64(time.Microsecond)
}

// attnEstimate estimates one layer's attention time per token at context
// n, in µs, from decode speeds at n and at a smaller base context: if a
// token costs a + b·N (attention linear in the context, everything else
// constant), attention at n is b·n = (t(n) − t(base))·n/(n − base),
// shared among the layers.
func attnEstimate(tpsN, tpsBase float64, n, base, layers int) float64 {
	dt := 1/tpsN - 1/tpsBase
	return dt * float64(n) / float64(n-base) / float64(layers) * 1e6
}

// estimateDecodeAttention fills in the attention estimates of rows and
// their ratios to our f16 cache and to llama.cpp's f16 cache at the same
// context.
func estimateDecodeAttention(rows []kvDecodeRow, base, layers int) {
	find := func(engine, format string, ctx int) *kvDecodeRow {
		for i := range rows {
			if rows[i].Engine == engine && rows[i].Format == format && rows[i].Context == ctx {
				return &rows[i]
			}
		}
		return nil
	}
	for i := range rows {
		r := &rows[i]
		if b := find(r.Engine, r.Format, base); b != nil && r.Context > base {
			r.AttnMicros = attnEstimate(r.DecodeTPS, b.DecodeTPS, r.Context, base, layers)
		}
	}
	for i := range rows {
		r := &rows[i]
		// A ratio needs two positive estimates: at short contexts, noise
		// can exceed the attention's share of a token.
		if f := find("turbomem", "f16", r.Context); f != nil {
			r.DecodeVsF16 = r.DecodeTPS / f.DecodeTPS
			if r.AttnMicros > 0 && f.AttnMicros > 0 {
				r.VsF16 = f.AttnMicros / r.AttnMicros
			}
		}
		if f := find("llama.cpp", "f16", r.Context); f != nil && r.AttnMicros > 0 && f.AttnMicros > 0 {
			r.VsLlamaF16 = f.AttnMicros / r.AttnMicros
		}
	}
}

// kvBenchSummary returns the ratios for the target format at the
// context closest to 16k: against our f16 cache (measured attention step,
// and estimated from decode) and against llama.cpp's f16 cache
// (estimated from decode, both engines alike).
func kvBenchSummary(rep kvBenchReport) []kvBenchRatio {
	closest := func(ctxs []int) int {
		best := 0
		for _, c := range ctxs {
			if best == 0 || math.Abs(math.Log(float64(c)/16384)) < math.Abs(math.Log(float64(best)/16384)) {
				best = c
			}
		}
		return best
	}
	var out []kvBenchRatio
	var ctxs []int
	for _, r := range rep.Attention {
		ctxs = append(ctxs, r.Context)
	}
	c := closest(ctxs)
	for _, r := range rep.Attention {
		if r.Format == benchKVTarget && r.Context == c {
			out = append(out, kvBenchRatio{What: benchKVTarget + " vs our f16", Context: c, Ratio: r.VsF16, Source: "attention step"})
		}
	}
	ctxs = ctxs[:0]
	for _, r := range rep.Decode {
		if r.Context > rep.Base {
			ctxs = append(ctxs, r.Context)
		}
	}
	c = closest(ctxs)
	for _, r := range rep.Decode {
		if r.Engine != "turbomem" || r.Format != benchKVTarget || r.Context != c {
			continue
		}
		if r.VsF16 > 0 {
			out = append(out, kvBenchRatio{What: benchKVTarget + " vs our f16", Context: c, Ratio: r.VsF16, Source: "decode estimate"})
		}
		if r.VsLlamaF16 > 0 {
			out = append(out, kvBenchRatio{What: benchKVTarget + " vs llama.cpp f16", Context: c, Ratio: r.VsLlamaF16, Source: "decode estimate"})
			for _, a := range rep.Attention {
				if a.Format == benchKVTarget && a.Context == c {
					var llama float64
					for _, l := range rep.Decode {
						if l.Engine == "llama.cpp" && l.Format == "f16" && l.Context == c {
							llama = l.AttnMicros
						}
					}
					if llama > 0 {
						out = append(out, kvBenchRatio{What: benchKVTarget + " vs llama.cpp f16", Context: c, Ratio: llama / a.Micros, Source: "our attention step vs llama.cpp's decode estimate"})
					}
				}
			}
		}
	}
	return out
}

// writeKVBenchTables prints the report as tables.
func writeKVBenchTables(w io.Writer, rep kvBenchReport) error {
	sh := rep.Shape
	fmt.Fprintf(w, "%s: query heads %d, KV heads %d, head dim %d, layers %d; kernels %s; threads %d\n",
		rep.Model, sh.QHeads, sh.KVHeads, sh.HeadDim, rep.Layers, rep.Kernels, rep.Threads)
	fmt.Fprintf(w, "\nAttention step of one layer, µs (median of %d calls) and speed-up vs f16; tokens: %d recorded from layer %d, then Gaussian with its per-channel statistics\n",
		rep.Iters, rep.Recorded, rep.Layer)
	var ctxs, formats []string
	cell := map[[2]string]attnRow{}
	for _, r := range rep.Attention {
		c := strconv.Itoa(r.Context)
		if !slices.Contains(ctxs, c) {
			ctxs = append(ctxs, c)
		}
		if !slices.Contains(formats, r.Format) {
			formats = append(formats, r.Format)
		}
		cell[[2]string{r.Format, c}] = r
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "format\t")
	for _, c := range ctxs {
		fmt.Fprintf(tw, "%s µs\t×f16\t", c)
	}
	fmt.Fprintln(tw)
	for _, f := range formats {
		fmt.Fprintf(tw, "%s\t", f)
		for _, c := range ctxs {
			r := cell[[2]string{f, c}]
			fmt.Fprintf(tw, "%.1f\t%.2fx\t", r.Micros, r.VsF16)
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rep.Decode) > 0 {
		fmt.Fprintf(w, "\nDecode, %d tokens after a prompt of the context's length, tok/s from the median step; attention per layer estimated as (t(N) − t(%d))·N/(N − %d)/%d\n",
			rep.DecodeN, rep.Base, rep.Base, rep.Layers)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "engine\tformat\tcontext\tprompt tok/s\tdecode tok/s\t×f16\tattn µs/layer\t×our f16\t×llama.cpp f16\t")
		for _, r := range rep.Decode {
			attn, vsF16, vsLlama := "-", "-", "-"
			if r.AttnMicros != 0 {
				attn = fmt.Sprintf("%.1f", r.AttnMicros)
			}
			if r.VsF16 != 0 {
				vsF16 = fmt.Sprintf("%.2fx", r.VsF16)
			}
			if r.VsLlamaF16 != 0 {
				vsLlama = fmt.Sprintf("%.2fx", r.VsLlamaF16)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f\t%.2f\t%.2fx\t%s\t%s\t%s\t\n", r.Engine, r.Format, r.Context, r.PromptTPS, r.DecodeTPS, r.DecodeVsF16, attn, vsF16, vsLlama)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(rep.Summary) > 0 {
		fmt.Fprintln(w, "\nTargets (> 1: faster)")
		for _, s := range rep.Summary {
			fmt.Fprintf(w, "  %s at %d tokens: %.2fx (%s)\n", s.What, s.Context, s.Ratio, s.Source)
		}
	}
	return nil
}

// writeAttentionPlot draws the attention step's µs against log₂ of the
// context, one line per format.
func writeAttentionPlot(path string, rep kvBenchReport) error {
	c := &plot.Chart{Title: fmt.Sprintf("Attention step of one layer (%d query heads, %d KV heads, d=%d)", rep.Shape.QHeads, rep.Shape.KVHeads, rep.Shape.HeadDim),
		XLabel: "log₂ context tokens", YLabel: "µs per step", LogY: true}
	idx := map[string]int{}
	for _, r := range rep.Attention {
		k, ok := idx[r.Format]
		if !ok {
			k = len(c.Series)
			idx[r.Format] = k
			c.Series = append(c.Series, plot.Series{Name: r.Format, Dashed: r.Format == "f16"})
		}
		c.Series[k].X = append(c.Series[k].X, math.Log2(float64(r.Context)))
		c.Series[k].Y = append(c.Series[k].Y, r.Micros)
	}
	return writeSVG(path, c)
}
