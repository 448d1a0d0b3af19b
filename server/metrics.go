package server

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the server's Prometheus series, in a registry of its own
// (no global state: two servers in one process do not share counters).
type metrics struct {
	reg *prometheus.Registry

	promptTokens, genTokens prometheus.Counter
	requests                *prometheus.CounterVec // by endpoint and HTTP status
	rejected                *prometheus.CounterVec // by reason
	running, queued         prometheus.Gauge
	ttft, duration          prometheus.Histogram
	stepSeconds             prometheus.Histogram
	// decodeSeconds and decodeTokens count the steps that fed no prompt
	// tokens, by how many sequences they decoded: aggregate decode
	// throughput at a batch size, apart from prefill (scheduler.step).
	decodeSeconds, decodeTokens *prometheus.CounterVec
	kvInUse, kvReserved         *prometheus.GaugeVec // by KV format
	budget                      *prometheus.GaugeVec // by part
	prefixBytes                 prometheus.Gauge
	prefixTokens                *prometheus.CounterVec // reused or computed
	prefixDropped               prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	m.promptTokens = prometheus.NewCounter(prometheus.CounterOpts{Name: "turbomem_prompt_tokens_total", Help: "Prompt tokens of admitted requests."})
	m.genTokens = prometheus.NewCounter(prometheus.CounterOpts{Name: "turbomem_generated_tokens_total", Help: "Tokens generated."})
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "turbomem_requests_total", Help: "Finished HTTP requests by endpoint and status."}, []string{"endpoint", "status"})
	m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "turbomem_requests_rejected_total", Help: "Requests refused before running: queue_full (429), never_fits (400), draining or loading (503)."}, []string{"reason"})
	m.running = prometheus.NewGauge(prometheus.GaugeOpts{Name: "turbomem_requests_running", Help: "Sequences admitted and decoding."})
	m.queued = prometheus.NewGauge(prometheus.GaugeOpts{Name: "turbomem_requests_queued", Help: "Requests waiting for memory or a slot."})
	buckets := prometheus.ExponentialBuckets(0.005, 2, 16)
	m.ttft = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "turbomem_time_to_first_token_seconds", Help: "From request arrival to its first generated token.", Buckets: buckets})
	m.duration = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "turbomem_request_duration_seconds", Help: "From request arrival to its last token.", Buckets: buckets})
	m.stepSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "turbomem_step_seconds", Help: "Duration of one scheduler step (all running sequences).", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)})
	m.decodeSeconds = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "turbomem_decode_seconds_total", Help: "Wall time of the steps that fed no prompt tokens, by the number of sequences they decoded: from the previous step's end to the step's end (sampling, scheduling and the handlers' share of the cores included)."}, []string{"sequences"})
	m.decodeTokens = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "turbomem_decode_tokens_total", Help: "Tokens decoded by the steps that fed no prompt tokens, by the number of sequences they decoded."}, []string{"sequences"})
	m.kvInUse = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "turbomem_kv_bytes_in_use", Help: "Bytes the running sequences' KV caches hold, by KV format."}, []string{"format"})
	m.kvReserved = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "turbomem_kv_bytes_reserved", Help: "Bytes reserved by admitted requests (KV at prompt + max_tokens, and buffers), by KV format."}, []string{"format"})
	m.budget = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "turbomem_memory_budget_bytes", Help: "The memory budget (--mem) by part: total, weights, scratch, reserve (the process itself), and sequences (what admission shares out)."}, []string{"part"})
	m.prefixBytes = prometheus.NewGauge(prometheus.GaugeOpts{Name: "turbomem_prefix_cache_bytes", Help: "Bytes held by cached prompt-prefix KV blocks, as stored (the KV format's codes; fp16 rows where a cached prefix can end), charged to the sequences' budget."})
	m.prefixTokens = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "turbomem_prefix_tokens_total", Help: "Prompt tokens whose KV was reused from the prefix cache (reused) or computed (computed)."}, []string{"kind"})
	m.prefixDropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "turbomem_prefix_chains_refused_total", Help: "Cached prefix chains that failed to refill a session (a block's codes refused on import) and were dropped; their prompts were computed instead."})
	for _, c := range []prometheus.Collector{m.promptTokens, m.genTokens, m.requests, m.rejected, m.running, m.queued, m.ttft, m.duration, m.stepSeconds, m.decodeSeconds, m.decodeTokens, m.kvInUse, m.kvReserved, m.budget, m.prefixBytes, m.prefixTokens, m.prefixDropped} {
		f(c)
	}
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
