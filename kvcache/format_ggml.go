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
		quantizer:  func(d int, _ []int, _ quant.Options) (quant.Quantizer, error) { return newQ(d) },
		keys:       func(q quant.Quantizer, _ int) keyStore { return &blockKeys{q: q, typ: typ} },
	}
}
