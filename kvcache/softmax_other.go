//go:build !amd64 || purego

package kvcache

func maxOf(s []float32) float32                    { return maxGo(s) }
func expSum(s []float32, m, scale float32) float32 { return expSumGo(s, m, scale) }
func scaleVec(s []float32, a float32)              { scaleGo(s, a) }
