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

// maxOf returns the largest element of s (len ≥ 1).
func maxOf(s []float32) float32 {
	n8 := len(s) &^ 7
	if !hasAVX2 || n8 == 0 {
		return maxGo(s)
	}
	m := maxAVX2(&s[0], n8)
	for _, v := range s[n8:] {
		m = max(m, v)
	}
	return m
}

// expSum replaces each s[i] by e^(scale·(s[i] − m)) (s[i] ≤ m) and
// returns their sum.
func expSum(s []float32, m, scale float32) float32 {
	n8 := len(s) &^ 7
	if !hasAVX2 || n8 == 0 {
		return expSumGo(s, m, scale)
	}
	return expSumAVX2(&s[0], n8, m, scale, &expConsts) + expSumGo(s[n8:], m, scale)
}

// scaleVec multiplies s by a.
func scaleVec(s []float32, a float32) {
	n8 := len(s) &^ 7
	if !hasAVX2 || n8 == 0 {
		scaleGo(s, a)
		return
	}
	scaleAVX2(&s[0], n8, a)
	scaleGo(s[n8:], a)
}
