//go:build amd64 && !purego

package tensor

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestPanelsF64AVX2: the AVX2 float64 tile kernel gives the AVX-512
// kernel's bits (the same FMAs in the same order), on machines with
// both, for a few depths.
func TestPanelsF64AVX2(t *testing.T) {
	if !hasAVX512F {
		t.Skip("no AVX-512: TestPanelsMul compares the AVX2 kernel with its Go twin")
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, k := range []int{1, 2, 48, 77} {
		lda, ldc := k+3, 16+5
		a, b := randFloats[float64](r, panelTileRows*lda), randFloats[float64](r, k*16)
		got, want := make([]float64, panelTileRows*ldc), make([]float64, panelTileRows*ldc)
		gemmF64TileAVX2(&a[0], lda, &b[0], k, &got[0], ldc)
		gemmF64TileAVX512(&a[0], lda, &b[0], k, &want[0], ldc)
		if !slices.Equal(got, want) {
			t.Errorf("k=%d: AVX2 and AVX-512 kernels differ", k)
		}
	}
}
