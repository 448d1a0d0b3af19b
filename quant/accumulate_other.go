//go:build !amd64 || purego

package quant

func expandCodesFast(dst []float32, rowLen, col, d int, table *[16]float32, codes []byte, n, stride, off, b int) {
	expandCodesGo(dst, rowLen, col, d, table, codes, n, stride, off, b)
}

func hasGroup4() bool { return false }

func dotCodesGroup4(dst, qi []float32, d int, table *[16]float32, codes []byte, n, stride, off, b int, add bool) {
	dotCodesGroup4Go(dst, qi, d, table, codes, n, stride, off, b, add)
}

func accCodes4(acc, w *[4][]float32, table *[16]float32, codes []byte, n, stride, off, g, b int) {
	accCodes4Go(acc, w, table, codes, n, stride, off, g, b)
}
