//go:build !amd64 || purego

package quant

// SIMDLevel names the scoring kernels in use ("avx512", "avx2" or
// "purego"), for benchmark reports.
func SIMDLevel() string { return "purego" }

func bestLevel() kernelLevel { return levelGo }

func dotCodes(dst, q []float32, table *[16]float32, codes []byte, stride, off, b int, add bool) {
	dotCodesGo(dst, q, table, codes, stride, off, b, add)
}

func dotCodesAt(_ kernelLevel, dst, q []float32, table *[16]float32, codes []byte, stride, off, b int, add bool) {
	dotCodesGo(dst, q, table, codes, stride, off, b, add)
}

func dotRows(dst, q, keys []float32) { dotRowsGo(dst, q, keys) }

func dotRowsAt(_ kernelLevel, dst, q, keys []float32) { dotRowsGo(dst, q, keys) }

func levels() []kernelLevel { return []kernelLevel{levelGo} }
