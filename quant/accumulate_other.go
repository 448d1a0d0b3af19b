//go:build !amd64 || purego

package quant

func expandCodesFast(dst []float32, rowLen, col, d int, table *[16]float32, codes []byte, n, stride, off, b int) {
	expandCodesGo(dst, rowLen, col, d, table, codes, n, stride, off, b)
}
