// Package quant holds vector quantizers for plain []float32 vectors: random
// rotations, Lloyd–Max codebooks, TurboQuant (MSE and inner-product
// variants), QJL sign sketches, PolarQuant, and the uniform/group baselines
// (llama.cpp's q8_0 and q4_0, KIVI-style asymmetric groups) that they are
// measured against. It knows nothing about models or caches.
//
// Every quantizer encodes one vector into a fixed number of bytes (Bytes),
// decodes it back, and scores many encoded vectors against a query prepared
// once (Prepare), without decoding them: this is what lets a KV cache
// compute attention directly on compressed keys.
//
// Randomness (rotations, sketches) comes only from explicit seeds, so two
// quantizers built with the same configuration encode identically.
//
// quant uses package tensor for GGML's block layouts (the q8_0 and q4_0
// baselines are tensor's codecs, bit for bit) and its SIMD row kernels:
// tensor is where those live once (docs/ARCHITECTURE.md).
package quant

import (
	"errors"
	"fmt"
)

// Quantizer encodes fixed-dimension vectors into fixed-size codes.
type Quantizer interface {
	// Name identifies the method and rate, e.g. "turbo-mse/4".
	Name() string
	// Dim returns the dimension of the vectors it encodes.
	Dim() int
	// Bytes returns the exact size of one code, everything included
	// (indices, norms, scales).
	Bytes() int
	// Encode writes the code of x (len Dim) into dst (len Bytes).
	Encode(dst []byte, x []float32) error
	// EncodeBatch encodes the vectors of xs (a multiple of Dim, back to
	// back) into consecutive codes of dst, amortising scratch space.
	EncodeBatch(dst []byte, xs []float32) error
	// Decode reconstructs the vector of code (len Bytes) into dst (len
	// Dim). A code that no Encode can produce (a non-finite scale, say)
	// gives an error.
	Decode(dst []float32, code []byte) error
	// Check returns the error Decode would give for code (a wrong length,
	// or ErrCorrupt: a field no Encode writes) without decoding it: the
	// cheap test of codes read from outside (kvcache's Import).
	Check(code []byte) error
	// Prepare returns a scorer for the query q (len Dim): the work that
	// depends on q alone (rotating it, building lookup tables) is done
	// here, once.
	Prepare(q []float32) (Scorer, error)
}

// Scorer estimates inner products between one prepared query and encoded
// vectors.
type Scorer interface {
	// Score writes into dst[i] the estimate of <q, x_i> for the i-th code
	// in codes, which holds len(dst) codes back to back. It panics if
	// codes is shorter than len(dst) codes: callers own that buffer.
	Score(dst []float32, codes []byte)
}

// ErrCorrupt reports a code that no encoder produces.
var ErrCorrupt = errors.New("quant: corrupt code")

// BitsPerCoord returns the storage cost of q in bits per coordinate.
func BitsPerCoord(q Quantizer) float64 { return float64(8*q.Bytes()) / float64(q.Dim()) }

func checkLen(what string, got, want int) error {
	if got != want {
		return fmt.Errorf("quant: %s has length %d, want %d", what, got, want)
	}
	return nil
}

// batchLen checks a batch of vectors against its code buffer and returns
// the number of vectors.
func batchLen(q Quantizer, dst []byte, xs []float32) (int, error) {
	d := q.Dim()
	if len(xs)%d != 0 {
		return 0, fmt.Errorf("quant: %s: input length %d is not a multiple of dimension %d", q.Name(), len(xs), d)
	}
	n := len(xs) / d
	if len(dst) != n*q.Bytes() {
		return 0, fmt.Errorf("quant: %s: code buffer has %d bytes, want %d for %d vectors", q.Name(), len(dst), n*q.Bytes(), n)
	}
	return n, nil
}
