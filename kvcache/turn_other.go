//go:build !amd64 || purego

package kvcache

func turnSums4(out, w []float32, rows int, table []float32) { turnSums4Go(out, w, rows, table) }
