//go:build amd64 && !purego

package quant

// viterbi8AVX512 runs viterbi8's passes over n steps of dist (four
// errors a step), the costs by state in cost on entry and on return, the
// decisions of step t in back[t] (tcq_amd64.s).
//
//go:noescape
func viterbi8AVX512(dist *float64, n int, cost *[8]float64, back *uint64)

// hasViterbi8AVX512 reports whether viterbi8AVX512 runs (unless
// tcqGoOnly).
func hasViterbi8AVX512() bool { return simd.avx512 && !tcqGoOnly }
