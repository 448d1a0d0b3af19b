package kvcache

import "github.com/turbomem/turbomem/quant"

// kivi2: KIVI at 2 bits. Keys per channel over blocks of kiviBlock tokens
// (their outliers sit in fixed channels), values per token in groups of
// 32 channels; an fp16 scale and min per group (3 bits per coordinate at
// d = 128 either way). The cache moves keys out of its window a block at
// a time.
var kivi2Codec = &codec{
	multiple: 32, // groups of 32 channels
	keyBlock: kiviBlock,
	research: true,
	tokenBytes: func(d int, key bool) int {
		if key {
			// A block's parameters shared out over its tokens (exact for
			// d a multiple of 32).
			return quant.KIVIChannelBytes(d, 2, kiviBlock) / kiviBlock
		}
		return quant.KIVIBytes(d, 2, 32)
	},
	quantizer: func(d int, _ bool, _ []int, _ quant.Options) (quant.Quantizer, error) { return quant.NewKIVI(d, 2, 32) },
	keys:      func(q quant.Quantizer, _ int) keyStore { return &kiviKeys{k: q.(*quant.KIVI)} },
}
