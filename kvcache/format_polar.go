package kvcache

import "github.com/turbomem/turbomem/quant"

// polar: PolarQuant with levels of [4, 2, 2, 2] bits over blocks of 16
// coordinates and fp16 block radii (3.875 bits at d = 128). Keys are
// scored a chunk at a time through quant.PrepareGroup (groupKeys).
var polarCodec = &codec{
	multiple:   16, // blocks of 2^4
	research:   true,
	tokenBytes: func(d int, _ bool) int { return quant.PolarBytes(d, nil) },
	quantizer: func(d int, _ bool, _ []int, o quant.Options) (quant.Quantizer, error) {
		return quant.NewPolar(d, nil, o)
	},
	keys: func(q quant.Quantizer, _ int) keyStore { return &groupKeys{q: q} },
}
