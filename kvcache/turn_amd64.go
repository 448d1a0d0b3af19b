//go:build amd64 && !purego

package kvcache

import "golang.org/x/sys/cpu"

// hasAVX512 selects turnAdd4's kernel; read-only after initialisation.
var hasAVX512 = cpu.X86.HasAVX512F

//go:noescape
func turnAdd4AVX512(out *[4]*float32, w *float32, rows int, table *float32, stride int, set int)

// turnAdd4 adds (or, with set, writes) to out[q][j] the sum
// Σ_{k<rows} w[q·rows + k]·table[k·stride + j] for four queries q and the
// ropeChunk positions j of a chunk: the rows of the table weighed for
// four queries at once, the 16 sums of 16 positions in registers while
// the rows stream by.
func turnAdd4(out *[4][]float32, w []float32, rows int, table []float32, stride int, set bool) {
	if !hasAVX512 || rows == 0 {
		turnAdd4Go(out, w, rows, table, stride, set)
		return
	}
	_ = w[4*rows-1]
	_ = table[(rows-1)*stride+ropeChunk-1]
	var p [4]*float32
	for q := range p {
		p[q] = &out[q][:ropeChunk][0]
	}
	s := 0
	if set {
		s = 1
	}
	turnAdd4AVX512(&p, &w[0], rows, &table[0], stride, s)
}
