//go:build !amd64 || purego

package kvcache

func softmax(s []float32, scale float32) { softmaxGo(s, scale) }
