//go:build amd64 && !purego

package quant

//go:noescape
func fwhtAVX2(x *float32, n int)

// fwhtAt applies the unnormalised Walsh–Hadamard transform to x (len a
// power of two) on the kernel of the given level: AVX2 from 8 values on,
// the same sums as fwhtGo's, bit for bit.
func fwhtAt(level kernelLevel, x []float32) {
	if level == levelGo || len(x) < 8 {
		fwhtGo(x)
		return
	}
	fwhtAVX2(&x[0], len(x))
}
