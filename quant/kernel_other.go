//go:build !amd64 || purego

package quant

// SIMDLevel names the scoring kernels in use ("avx2" or "purego"), for
// benchmark reports.
func SIMDLevel() string { return "purego" }

func dotCodes(dst, q []float32, table *[16]float32, codes []byte, stride, off, b int, add bool) {
	dotCodesGo(dst, q, table, codes, stride, off, b, add)
}

func dotRows(dst, q, keys []float32) { dotRowsGo(dst, q, keys) }
