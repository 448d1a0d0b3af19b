//go:build !amd64 || purego

package quant

func fwhtAt(_ kernelLevel, x []float32) { fwhtGo(x) }
