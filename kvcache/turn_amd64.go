//go:build amd64 && !purego

package kvcache

import "golang.org/x/sys/cpu"

// hasAVX512 selects turnSums4's kernel; read-only after initialisation.
var hasAVX512 = cpu.X86.HasAVX512F

//go:noescape
func turnSums4AVX512(out *float32, w *float32, rows int, table *float32)

// turnSums4 sets out[q·ropeChunk + j] = Σ_{k<rows} w[q·rows + k]·table[k·ropeChunk + j]
// for four queries q and the ropeChunk positions j of a chunk.
func turnSums4(out, w []float32, rows int, table []float32) {
	_ = out[4*ropeChunk-1]
	_ = w[4*rows-1]
	_ = table[rows*ropeChunk-1]
	if hasAVX512 && rows > 0 {
		turnSums4AVX512(&out[0], &w[0], rows, &table[0])
		return
	}
	turnSums4Go(out, w, rows, table)
}
