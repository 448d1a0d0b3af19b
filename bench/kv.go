// Package bench measures speed: the attention step of one layer for each
// KV format against context length, on keys, values and queries with the
// statistics of the model's own; decode speed of a whole model with each
// KV format; and the same decode beside llama.cpp, run through the Node
// peer in bench/peers (node-llama-cpp) on the same file, token ids and
// thread count. Commands print what it measures (turbomem bench kv,
// bench decode).
package bench

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/quant"
	"github.com/turbomem/turbomem/tensor"
)

// Target is the format whose ratios KVReport.Summary gives.
const Target = "turbo3.5"

// KVReport is what KV measured: the attention step of one
// layer per format and context, and decode speed of the whole model.
type KVReport struct {
	Model     string        `json:"model"`
	Shape     kvcache.Shape `json:"shape"`
	Layers    int           `json:"layers"`
	Layer     int           `json:"stats_layer"`   // layer whose K/V statistics the synthetic tokens follow
	Recorded  int           `json:"recorded"`      // real tokens recorded (the first tokens of every cache)
	Threads   int           `json:"threads"`       // model threads, shared by each attention step too
	Kernels   string        `json:"kernels"`       // quant.SIMDLevel()
	Iters     int           `json:"iters"`         // Attend calls per format, context and round (median reported)
	Rounds    int           `json:"rounds"`        // rounds of the attention timing and of each decode
	Attention []AttnRow     `json:"attention"`     // one per format and context
	Decode    []DecodeRow   `json:"decode"`        // one per engine, format and decode context
	Summary   []Ratio       `json:"summary"`       // the two ratios
	Date      string        `json:"date"`          // RFC 3339, UTC
	Base      int           `json:"decode_base"`   // context the decode attention estimate subtracts (0: none)
	DecodeN   int           `json:"decode_tokens"` // tokens decoded per context
	// PeerError is why llama.cpp's runs stopped, if they did.
	PeerError string `json:"peer_error,omitempty"`
}

// AttnRow is the attention step of one layer for one format at one
// context length.
type AttnRow struct {
	Format  string  `json:"format"`
	Context int     `json:"context"`
	Micros  float64 `json:"us"` // median over the rounds of each round's median Attend call
	// MicrosMin and MicrosMax are the range of the rounds' medians.
	MicrosMin float64 `json:"us_min"`
	MicrosMax float64 `json:"us_max"`
	VsF16     float64 `json:"speedup_vs_f16"` // our f16 time / this time, same context
	Bytes     int     `json:"bytes"`          // the cache's bytes at this context
}

// DecodeRow is the decode speed of one engine and cache format at one
// context, with the attention time per layer estimated from it.
type DecodeRow struct {
	Engine    string  `json:"engine"` // turbomem or llama.cpp
	Format    string  `json:"format"`
	Context   int     `json:"context"`
	PromptTPS float64 `json:"prompt_tps"`
	// DecodeTPS is 1 / the median decode step (the first step, which
	// also evaluates the last prompt token, left out): the median
	// resists other load on the machine better than the mean. Over
	// several rounds, the median of the rounds' rates, DecodeMin and
	// DecodeMax their range. llama-bench's rows give its mean rate at
	// its best of flash attention off and on (FlashAttn).
	DecodeTPS     float64 `json:"decode_tps"`
	DecodeMin     float64 `json:"decode_tps_min,omitempty"`
	DecodeMax     float64 `json:"decode_tps_max,omitempty"`
	DecodeTPSMean float64 `json:"decode_tps_mean"` // decode steps / their total time (first round)
	FlashAttn     string  `json:"flash_attn,omitempty"`
	// AttnMicros is the attention time per layer and token estimated
	// from decode times (attnEstimate); 0 at the base context.
	AttnMicros   float64 `json:"attn_us_per_layer"`
	VsF16        float64 `json:"attn_speedup_vs_f16"`       // our f16 estimate / this one
	VsLlamaF16   float64 `json:"attn_speedup_vs_llama_f16"` // llama.cpp f16 estimate / this one (0: not run)
	DecodeVsF16  float64 `json:"decode_speedup_vs_f16"`     // decode tok/s / our f16's
	PeakRSSBytes int64   `json:"peak_rss_bytes,omitempty"`
}

// Ratio is one of the target ratios at one context.
type Ratio struct {
	What    string  `json:"what"`
	Context int     `json:"context"`
	Ratio   float64 `json:"ratio"` // > 1: the format is faster
	Source  string  `json:"source"`
}

// KVOptions configures KV.
type KVOptions struct {
	// Name names the model in the report.
	Name string
	// Configs are the cache configurations timed; f16 is put first when
	// it is not (it is the reference of every ratio).
	Configs []kvcache.Config
	// Contexts are the context lengths of the attention step and
	// DecodeContexts those to decode at (none: no decode), ascending.
	Contexts, DecodeContexts []int
	// N is the tokens decoded per context, Iters the timed Attend calls
	// per format, context and round (the median is reported).
	N, Iters int
	// Repeat is the number of rounds (at least 1) of the attention timing
	// and of each decode, the formats taking turns within each: the rows
	// give the median and the range over the rounds.
	Repeat int
	// Text is the token ids recorded (the first Record of them, at most
	// the model's context) and repeated into the decode prompts.
	Text   []int32
	Record int
	// Layer is the layer whose statistics the synthetic tokens follow
	// (-1: the middle one).
	Layer int
	// Threads is the model's thread count, and llama.cpp's.
	Threads int
	// Seed seeds the synthetic tokens.
	Seed uint64
	// Llama are llama.cpp cache types to decode with too, on ModelPath
	// ("": the embedded model, written to a temporary file): with
	// LlamaBench, the natively built llama-bench at that path (its best
	// of flash attention off and on; on alone for quantized caches, which
	// llama.cpp requires), else through the peer script Peer (flash
	// attention on). A failing llama.cpp does not lose what was measured:
	// KV returns the report with PeerError set and an error wrapping
	// ErrPeer.
	Llama      []string
	LlamaBench string
	Peer       string
	ModelPath  string
	// Progress, if set, is told what is being measured.
	Progress func(format string, a ...any)
}

// KV measures the attention step of one layer for each configuration at
// each context (the caches filled with the same tokens: the model's own
// keys and values of the layer over the recorded tokens, then Gaussian
// ones with their per-channel statistics; queries the recorded ones),
// then decode speed of the model with each configuration at each decode
// context, and llama.cpp's with each of its cache types; the attention
// per layer is also estimated from decode times, alike for both engines:
// (t(N) − t(base))·N/(N − base)/layers, base the smallest decode context.
func KV(m *model.Model, o KVOptions) (KVReport, error) {
	progress := o.Progress
	if progress == nil {
		progress = func(string, ...any) {}
	}
	configs := []kvcache.Config{kvcache.F16()}
	for _, c := range o.Configs {
		if !slices.ContainsFunc(configs, func(x kvcache.Config) bool { return x.String() == c.String() }) {
			configs = append(configs, c)
		}
	}
	sh := m.CacheShape()
	layers := m.Config.Layers
	for _, c := range configs {
		if err := c.Check(layers, sh); err != nil {
			return KVReport{}, fmt.Errorf("bench: %s: %w", c, err)
		}
	}
	statsLayer := o.Layer
	if statsLayer < 0 {
		statsLayer = layers / 2
	}
	if statsLayer >= layers || len(o.Text) < 2 || len(o.Contexts) == 0 || o.Iters < 1 {
		return KVReport{}, fmt.Errorf("bench: layer %d of %d, %d tokens of text, %d contexts, %d iterations", statsLayer, layers, len(o.Text), len(o.Contexts), o.Iters)
	}
	rounds := max(1, o.Repeat)
	rep := KVReport{
		Model: o.Name, Shape: sh, Layers: layers, Layer: statsLayer, Threads: o.Threads,
		Kernels: quant.SIMDLevel(), Iters: o.Iters, Rounds: rounds, DecodeN: o.N, Date: time.Now().UTC().Format(time.RFC3339),
	}
	rec, err := recordLayer(m, o.Text[:min(o.Record, len(o.Text), m.Config.Context)], statsLayer)
	if err != nil {
		return rep, err
	}
	rep.Recorded = rec.tokens()
	pool := tensor.NewPool(o.Threads)
	defer pool.Close()
	if rep.Attention, err = timeAttention(configs, sh, statsLayer, rec, o.Contexts, o.Iters, rounds, o.Seed, pool, progress); err != nil {
		return rep, err
	}
	var peerErr error
	if len(o.DecodeContexts) > 0 {
		rep.Base = o.DecodeContexts[0]
		var modelFile string
		if len(o.Llama) > 0 {
			f, cleanup, err := ModelFile(o.ModelPath)
			if err != nil {
				return rep, err
			}
			defer cleanup()
			modelFile = f
		}
		makers := make([]kvcache.Maker, len(configs))
		for i, c := range configs {
			makers[i] = c
		}
		for _, ctx := range o.DecodeContexts {
			prompt := RepeatIDs(o.Text, ctx)
			progress("decode at %d tokens", ctx)
			res, err := decodeRounds(m, makers, []*tensor.Pool{pool}, prompt, o.N, rounds, o.Threads, nil)
			if err != nil {
				return rep, fmt.Errorf("bench: decode at %d tokens: %w", ctx, err)
			}
			for _, r := range res {
				rep.Decode = append(rep.Decode, newDecodeRow(r, r.Format))
			}
			if o.LlamaBench != "" {
				continue // all contexts in one llama-bench run per type, below
			}
			for _, kv := range o.Llama {
				if peerErr != nil {
					break
				}
				progress("llama.cpp %s at %d tokens", kv, ctx)
				r, err := PeerDecode(o.Peer, modelFile, prompt, o.N, o.Threads, "--kv", kv, "--flash")
				if err != nil {
					peerErr = fmt.Errorf("llama.cpp %s at %d tokens: %w", kv, ctx, err)
					break
				}
				rep.Decode = append(rep.Decode, newDecodeRow(r, kv))
			}
		}
		if o.LlamaBench != "" {
			for _, kv := range o.Llama {
				progress("llama-bench %s", kv)
				rows, err := llamaBenchDecode(o, modelFile, kv, rounds)
				if err != nil {
					peerErr = fmt.Errorf("llama.cpp %s: %w", kv, err)
					break
				}
				rep.Decode = append(rep.Decode, rows...)
			}
		}
		if peerErr != nil {
			rep.PeerError = peerErr.Error()
		}
		estimateDecodeAttention(rep.Decode, rep.Base, layers)
	}
	progress("")
	rep.Summary = summary(rep)
	return rep, peerErr
}

// llamaBenchDecode runs llama-bench on file with cache type kv at every
// decode context: one row per context, its best of flash attention off
// and on (on alone for a quantized cache).
func llamaBenchDecode(o KVOptions, file, kv string, rounds int) ([]DecodeRow, error) {
	fa := "0,1"
	if kv != "f16" && kv != "f32" && kv != "bf16" {
		fa = "1" // llama.cpp quantizes the V cache only with flash attention
	}
	res, err := LlamaBench(LlamaBenchOptions{Path: o.LlamaBench, Model: file, Threads: []int{o.Threads},
		Depths: o.DecodeContexts, Gen: o.N, Repeat: rounds, CacheType: kv, FlashAttn: fa})
	if err != nil {
		return nil, err
	}
	var rows []DecodeRow
	for _, ctx := range o.DecodeContexts {
		b, ok := LlamaBest(res, "tg", ctx, o.Threads)
		if !ok {
			return rows, fmt.Errorf("%w: llama-bench gave no generation test at depth %d, %d threads", ErrPeer, ctx, o.Threads)
		}
		rows = append(rows, DecodeRow{Engine: "llama.cpp", Format: kv, Context: ctx, DecodeTPS: b.TPS, DecodeTPSMean: b.TPS, FlashAttn: b.FlashAttnName()})
	}
	return rows, nil
}

// RepeatIDs returns n tokens: ids repeated from the start as often as
// needed.
func RepeatIDs(ids []int32, n int) []int32 {
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
		return nil, fmt.Errorf("bench: %w", err)
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

// timeAttention fills one cache per spec (of layer layer, whose tokens
// rec holds) with the same tokens, context
// after context, and times Attend at each: all formats at one context
// interleaved call by call, so that load from elsewhere falls on each
// alike, each Attend spread over pool. The queries are the recorded ones,
// in turn. Each row is the median over rounds rounds of the median of
// iters calls, with the range of the rounds.
func timeAttention(specs []kvcache.Config, sh kvcache.Shape, layer int, rec *kvRecording, ctxs []int, iters, rounds int, seed uint64, pool *tensor.Pool, progress func(string, ...any)) ([]AttnRow, error) {
	type bench struct {
		spec   kvcache.Config
		cache  kvcache.Cache
		src    *tokenSource
		times  []time.Duration
		rounds []float64 // the rounds' medians, µs
	}
	bs := make([]*bench, len(specs))
	for i, s := range specs {
		c, err := s.NewCache(layer, sh) // the recorded layer's (a klt format's transforms)
		if err != nil {
			return nil, fmt.Errorf("bench: %s: %w", s, err)
		}
		kvcache.UsePool(c, pool)
		bs[i] = &bench{spec: s, cache: c, src: newTokenSource(rec, seed)}
	}
	w := sh.KVHeads * sh.HeadDim
	qw := sh.QHeads * sh.HeadDim
	nq := len(rec.queries) / qw
	k, v := make([]float32, w), make([]float32, w)
	out := make([]float32, qw)
	scale := float32(1 / math.Sqrt(float64(sh.HeadDim)))
	query := func(i int) []float32 { j := i % nq; return rec.queries[j*qw : (j+1)*qw] }
	var rows []AttnRow
	for _, ctx := range ctxs {
		for _, b := range bs {
			progress("filling %s to %d tokens", b.spec, ctx)
			for b.cache.Len() < ctx {
				b.src.fill(k, v)
				if err := b.cache.Append(k, v); err != nil {
					return nil, fmt.Errorf("bench: %s: token %d: %w", b.spec, b.cache.Len(), err)
				}
			}
			b.cache.Attend(out, query(0), scale) // warm-up
			b.rounds = b.rounds[:0]
		}
		progress("timing attention at %d tokens", ctx)
		for range rounds {
			for _, b := range bs {
				b.times = b.times[:0]
			}
			for i := range iters {
				for _, b := range bs {
					q := query(i)
					start := time.Now()
					b.cache.Attend(out, q, scale)
					b.times = append(b.times, time.Since(start))
				}
			}
			for _, b := range bs {
				b.rounds = append(b.rounds, medianMicros(b.times))
			}
		}
		var ref float64
		for i, b := range bs {
			r := AttnRow{Format: b.spec.String(), Context: ctx, Micros: median(b.rounds), MicrosMin: slices.Min(b.rounds),
				MicrosMax: slices.Max(b.rounds), Bytes: b.cache.Bytes()}
			if i == 0 {
				ref = r.Micros // f16 is first (KV)
			}
			r.VsF16 = ref / r.Micros
			rows = append(rows, r)
		}
	}
	return rows, nil
}

// newDecodeRow returns the row of a decode run with cache format
// format: ours from decodeRounds (its rate over the rounds), or the
// Node peer's (the median of its steps but the first).
func newDecodeRow(r DecodeResult, format string) DecodeRow {
	row := DecodeRow{Engine: r.Engine, Format: format, Context: r.Context, PromptTPS: r.PromptTPS,
		DecodeTPS: r.DecodeTPS, DecodeTPSMean: r.DecodeTPS, PeakRSSBytes: r.PeakRSS}
	if r.Rounds > 0 {
		row.DecodeMin, row.DecodeMax = r.DecodeMin, r.DecodeMax
		var sum float64
		for _, ms := range r.StepMs {
			sum += ms
		}
		if sum > 0 {
			row.DecodeTPSMean = float64(len(r.StepMs)) * 1000 / sum
		}
		return row
	}
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
func estimateDecodeAttention(rows []DecodeRow, base, layers int) {
	find := func(engine, format string, ctx int) *DecodeRow {
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

// summary returns the ratios for the target format at the
// context closest to 16k: against our f16 cache (measured attention step,
// and estimated from decode) and against llama.cpp's f16 cache
// (estimated from decode, both engines alike).
func summary(rep KVReport) []Ratio {
	closest := func(ctxs []int) int {
		best := 0
		for _, c := range ctxs {
			if best == 0 || math.Abs(math.Log(float64(c)/16384)) < math.Abs(math.Log(float64(best)/16384)) {
				best = c
			}
		}
		return best
	}
	var out []Ratio
	var ctxs []int
	for _, r := range rep.Attention {
		ctxs = append(ctxs, r.Context)
	}
	c := closest(ctxs)
	for _, r := range rep.Attention {
		if r.Format == Target && r.Context == c {
			out = append(out, Ratio{What: Target + " vs our f16", Context: c, Ratio: r.VsF16, Source: "attention step"})
		}
	}
	ctxs = ctxs[:0]
	for _, r := range rep.Decode {
		if r.Context > rep.Base {
			ctxs = append(ctxs, r.Context)
		}
	}
	c = closest(ctxs)
	var llamaF16 float64
	for _, r := range rep.Decode {
		if r.Engine == "llama.cpp" && r.Format == "f16" && r.Context == c {
			llamaF16 = r.DecodeTPS
		}
	}
	for _, r := range rep.Decode {
		if llamaF16 > 0 && r.Engine == "turbomem" && (r.Format == "f16" || r.Format == Target) && r.Context == c {
			out = append(out, Ratio{What: "our " + r.Format + " vs llama.cpp f16", Context: c, Ratio: r.DecodeTPS / llamaF16, Source: "decode tok/s"})
		}
	}
	for _, r := range rep.Decode {
		if r.Engine != "turbomem" || r.Format != Target || r.Context != c {
			continue
		}
		if r.VsF16 > 0 {
			out = append(out, Ratio{What: Target + " vs our f16", Context: c, Ratio: r.VsF16, Source: "decode estimate"})
		}
		if r.VsLlamaF16 > 0 {
			out = append(out, Ratio{What: Target + " vs llama.cpp f16", Context: c, Ratio: r.VsLlamaF16, Source: "decode estimate"})
			for _, a := range rep.Attention {
				if a.Format == Target && a.Context == c {
					var llama float64
					for _, l := range rep.Decode {
						if l.Engine == "llama.cpp" && l.Format == "f16" && l.Context == c {
							llama = l.AttnMicros
						}
					}
					if llama > 0 {
						out = append(out, Ratio{What: Target + " vs llama.cpp f16", Context: c, Ratio: llama / a.Micros, Source: "our attention step vs llama.cpp's decode estimate"})
					}
				}
			}
		}
	}
	return out
}
