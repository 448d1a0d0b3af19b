package bench

import (
	"reflect"
	"regexp"
	"testing"
)

// TestDecodeRates reads the server's decode counters from /metrics text
// (other series, malformed values and sizes out of range ignored) and
// takes the rates of the run from two reads.
func TestDecodeRates(t *testing.T) {
	before := parseDecode([]byte(`# HELP turbomem_decode_tokens_total Tokens decoded.
turbomem_decode_seconds_total{sequences="1"} 0.5
turbomem_decode_tokens_total{sequences="1"} 100
turbomem_generated_tokens_total 700
`))
	after := parseDecode([]byte(`turbomem_decode_seconds_total{sequences="1"} 1.5
turbomem_decode_tokens_total{sequences="1"} 300
turbomem_decode_seconds_total{sequences="3"} 2
turbomem_decode_tokens_total{sequences="3"} 600
turbomem_decode_tokens_total{sequences="0"} 5
turbomem_decode_tokens_total{sequences="5000"} 5
turbomem_decode_tokens_total{sequences="2"} NaNx
`))
	want := []DecodeRate{
		{Sequences: 1, Tokens: 200, Seconds: 1, TokPerSec: 200},
		{Sequences: 2},
		{Sequences: 3, Tokens: 600, Seconds: 2, TokPerSec: 300},
	}
	if got := decodeRates(before, after); !reflect.DeepEqual(got, want) {
		t.Errorf("decodeRates = %+v, want %+v", got, want)
	}
	if got := decodeRates(nil, parseDecode(nil)); len(got) != 0 {
		t.Errorf("no counters: %+v", got)
	}
}

// TestMetricValue reads an unlabelled series from /metrics text: the
// named one only (not a longer name or a labelled series), 0 for none
// and for values that are not finite numbers.
func TestMetricValue(t *testing.T) {
	text := []byte(`# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
process_cpu_seconds_total_x 9
process_cpu_seconds_total{mode="user"} 8
process_cpu_seconds_total 12.5
process_resident_memory_bytes 1.048576e+06
bad NaN
inf +Inf
`)
	for _, tc := range []struct {
		name string
		want float64
	}{
		{"process_cpu_seconds_total", 12.5},
		{"process_resident_memory_bytes", 1 << 20},
		{"bad", 0},
		{"inf", 0},
		{"absent", 0},
	} {
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(tc.name) + ` (\S+)$`)
		if got := metricValue(re, text); got != tc.want {
			t.Errorf("%s: %g, want %g", tc.name, got, tc.want)
		}
	}
	if got := metricValue(cpuLine, text); got != 12.5 {
		t.Errorf("cpuLine: %g", got)
	}
}
