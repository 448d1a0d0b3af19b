package kvcache

import "github.com/turbomem/turbomem/quant"

// f32 and f16: uncompressed keys and values. A cache whose keys and values
// share one of them is Dense; with a compressed format on the other side,
// the Compressed cache keeps this side's rows as they are.
var (
	f32Codec = &codec{
		multiple:   1,
		elem:       4,
		tokenBytes: func(d int, _ bool) int { return 4 * d },
		keys:       func(_ quant.Quantizer, d int) keyStore { return &f32Keys{d: d} },
		values:     func(_ quant.Quantizer, d int) valueStore { return &f32Values{d: d} },
		quantizer:  noQuantizer,
	}
	f16Codec = &codec{
		multiple:   1,
		elem:       2,
		tokenBytes: func(d int, _ bool) int { return 2 * d },
		keys:       func(_ quant.Quantizer, d int) keyStore { return &f16Keys{d: d} },
		values:     func(_ quant.Quantizer, d int) valueStore { return &f16Values{d: d} },
		quantizer:  noQuantizer,
	}
)

// noQuantizer is the quantizer of an uncompressed format: none.
func noQuantizer(int, bool, []int, quant.Options) (quant.Quantizer, error) { return nil, nil }
