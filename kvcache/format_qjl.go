package kvcache

import "github.com/turbomem/turbomem/quant"

// qjl: the QJL sign sketch, m = 2d sign bits and an fp16 norm (2.125 bits
// at d = 128). It estimates inner products without bias but cannot
// reconstruct vectors, so it serves keys only. m/8 whole bytes need d a
// multiple of 4.
var qjlCodec = &codec{
	multiple:   4,
	keysOnly:   true,
	research:   true,
	tokenBytes: func(d int, _ bool) int { return quant.QJLBytes(2 * d) },
	quantizer: func(d int, _ bool, _ []int, o quant.Options) (quant.Quantizer, error) {
		return quant.NewQJL(d, 2*d, o.Seed)
	},
}
