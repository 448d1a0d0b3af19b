//go:build !amd64 || purego

package quant

// simdLevel names the kernels in use, for benchmark reports.
const simdLevel = "purego"

func dotCodes(dst, q []float32, table *[16]float32, codes []byte, stride, off, b int, add bool) {
	dotCodesGo(dst, q, table, codes, stride, off, b, add)
}

func dotRows(dst, q, keys []float32) { dotRowsGo(dst, q, keys) }
