//go:build amd64 && !purego

package kvcache

import (
	"math"

	"golang.org/x/sys/cpu"
)

// hasAVX2 selects the softmax kernels; read-only after initialisation.
var hasAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func maxAVX2(s *float32, n int) float32

//go:noescape
func expSumAVX2(s *float32, n int, m, scale float32, c *[13][8]float32) float32

//go:noescape
func scaleAVX2(s *float32, n int, a float32)

// expConsts are expNeg's constants, each broadcast to 8 lanes.
var expConsts = func() (c [13][8]float32) {
	v := [12]float32{-87.3, 1.44269504088896341, 0.5, 0.693359375, 2.12194440e-4,
		1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1, 1}
	for i, x := range v {
		for l := range 8 {
			c[i][l] = x
		}
	}
	for l := range 8 {
		c[12][l] = math.Float32frombits(127)
	}
	return c
}()

// softmax replaces s by softmax(scale·s) (scale > 0), subtracting the
// maximum first so that large scores cannot overflow: AVX2 kernels on
// the multiple of 8, the Go twin's loops on the rest.
func softmax(s []float32, scale float32) {
	n8 := len(s) &^ 7
	if !hasAVX2 || n8 == 0 {
		softmaxGo(s, scale)
		return
	}
	m := maxAVX2(&s[0], n8)
	for _, v := range s[n8:] {
		m = max(m, v)
	}
	sum := expSumAVX2(&s[0], n8, m, scale, &expConsts)
	for i, v := range s[n8:] {
		e := expNeg(scale * (v - m))
		s[n8+i] = e
		sum += e
	}
	inv := 1 / sum
	scaleAVX2(&s[0], n8, inv)
	for i := n8; i < len(s); i++ {
		s[i] *= inv
	}
}
