//go:build !amd64 || purego

package tensor

func gemmF32Tile(a []float32, lda int, b []float32, k int, c []float32, ldc int) {
	panelTileGo(a, lda, b, k, c, ldc)
}

func gemmF64Tile(a []float64, lda int, b []float64, k int, c []float64, ldc int) {
	panelTileGo(a, lda, b, k, c, ldc)
}
