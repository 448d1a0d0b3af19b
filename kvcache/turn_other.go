//go:build !amd64 || purego

package kvcache

func turnAdd4(out *[4][]float32, w []float32, rows int, table []float32, stride int, set bool) {
	turnAdd4Go(out, w, rows, table, stride, set)
}
