//go:build !amd64 || purego

package quant

func hasViterbi8AVX512() bool { return false }

func viterbi8AVX512(*float64, int, *[8]float64, *uint64) {
	panic("quant: no tcq Viterbi kernel")
}
