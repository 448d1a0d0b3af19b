//go:build amd64 && !purego

package tensor

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestPanelsAVX2: the AVX2 tile kernels give the AVX-512 kernels' bits
// (the same FMAs in the same order), on machines with both, for a few
// depths.
func TestPanelsAVX2(t *testing.T) {
	if !hasAVX512F {
		t.Skip("no AVX-512: TestPanelsMul compares the AVX2 kernels with their Go twin")
	}
	t.Run("float32", func(t *testing.T) { testPanelsAVX2(t, gemmF32TileAVX2, gemmF32TileAVX512) })
	t.Run("float64", func(t *testing.T) { testPanelsAVX2(t, gemmF64TileAVX2, gemmF64TileAVX512) })
}

func testPanelsAVX2[T float32 | float64](t *testing.T, avx2, avx512 func(a *T, lda int, b *T, k int, c *T, ldc int)) {
	r := rand.New(rand.NewPCG(5, 6))
	cols := panelCols[T]()
	for _, k := range []int{1, 2, 48, 77} {
		lda, ldc := k+3, cols+5
		a, b := randFloats[T](r, panelTileRows*lda), randFloats[T](r, k*cols)
		got, want := make([]T, panelTileRows*ldc), make([]T, panelTileRows*ldc)
		avx2(&a[0], lda, &b[0], k, &got[0], ldc)
		avx512(&a[0], lda, &b[0], k, &want[0], ldc)
		if !slices.Equal(got, want) {
			t.Errorf("k=%d: AVX2 and AVX-512 kernels differ", k)
		}
	}
}
