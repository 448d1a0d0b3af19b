//go:build amd64 && !purego

package tensor

import "golang.org/x/sys/cpu"

// hasAVX512F selects the panel tile kernels (24 accumulators in Z8–Z31).
var hasAVX512F = hasAVX2 && cpu.X86.HasAVX512F

//go:noescape
func gemmF32TileAVX512(a *float32, lda int, b *float32, k int, c *float32, ldc int)

//go:noescape
func gemmF64TileAVX512(a *float64, lda int, b *float64, k int, c *float64, ldc int)

//go:noescape
func gemmF32TileAVX2(a *float32, lda int, b *float32, k int, c *float32, ldc int)

//go:noescape
func gemmF64TileAVX2(a *float64, lda int, b *float64, k int, c *float64, ldc int)

// gemmF32Tile runs the AVX-512 kernel, else the AVX2 one (the same
// FMAs in the same order: the same bits), else the Go twin.
func gemmF32Tile(a []float32, lda int, b []float32, k int, c []float32, ldc int) {
	if !hasAVX2 || k == 0 {
		panelTileGo(a, lda, b, k, c, ldc)
		return
	}
	_ = a[(panelTileRows-1)*lda+k-1]
	_ = b[k*32-1]
	_ = c[(panelTileRows-1)*ldc+31]
	if hasAVX512F {
		gemmF32TileAVX512(&a[0], lda, &b[0], k, &c[0], ldc)
		return
	}
	gemmF32TileAVX2(&a[0], lda, &b[0], k, &c[0], ldc)
}

// gemmF64Tile runs the AVX-512 kernel, else the AVX2 one (the same
// FMAs in the same order: the same bits), else the Go twin.
func gemmF64Tile(a []float64, lda int, b []float64, k int, c []float64, ldc int) {
	if !hasAVX2 || k == 0 {
		panelTileGo(a, lda, b, k, c, ldc)
		return
	}
	_ = a[(panelTileRows-1)*lda+k-1]
	_ = b[k*16-1]
	_ = c[(panelTileRows-1)*ldc+15]
	if hasAVX512F {
		gemmF64TileAVX512(&a[0], lda, &b[0], k, &c[0], ldc)
		return
	}
	gemmF64TileAVX2(&a[0], lda, &b[0], k, &c[0], ldc)
}
