package kvcache

import (
	"github.com/turbomem/turbomem/quant"
	"github.com/turbomem/turbomem/tensor"
)

// q8_0 and q4_0: llama.cpp's cache types, blocks of 32 coordinates with
// an fp16 scale (8.5 and 4.5 bits). Keys are scored by dequantizing a
// chunk of tokens with tensor's llama.cpp decoder (blockKeys).
var (
	q8_0Codec = ggmlCodec(tensor.Q8_0, quant.Q8_0Bytes, func(d int) (quant.Quantizer, error) { return quant.NewQ8_0(d) })
	q4_0Codec = ggmlCodec(tensor.Q4_0, quant.Q4_0Bytes, func(d int) (quant.Quantizer, error) { return quant.NewQ4_0(d) })
)

func ggmlCodec(typ tensor.DType, bytes func(d int) int, newQ func(d int) (quant.Quantizer, error)) *codec {
	return &codec{
		multiple:   32, // whole blocks
		tokenBytes: func(d int, _ bool) int { return bytes(d) },
		quantizer:  func(d int, _ bool, _ []int, _ quant.Options) (quant.Quantizer, error) { return newQ(d) },
		keys:       func(q quant.Quantizer, _ int) keyStore { return &blockKeys{q: q, typ: typ} },
	}
}

// q4_0h: q4_0 after the fixed Walsh–Hadamard rotation that llama.cpp
// applies to queries, keys and values when its cache is quantized
// (quant.NewQ4_0H: keys in blocks of the largest power of two dividing
// the head dimension, values in blocks of 64), the strongest q4_0 to
// measure against; 4.5 bits, the code is q4_0's. Keys are scored by
// expanding a chunk of codes once and dotting it with the group's
// rotated queries (groupKeys), values summed in the rotated basis and
// rotated back once.
var q4_0hCodec = &codec{
	multiple:   64,
	tokenBytes: func(d int, _ bool) int { return quant.Q4_0Bytes(d) },
	quantizer: func(d int, key bool, _ []int, _ quant.Options) (quant.Quantizer, error) {
		return quant.NewQ4_0H(d, key)
	},
	keys: func(q quant.Quantizer, _ int) keyStore { return &groupKeys{q: q} },
}
