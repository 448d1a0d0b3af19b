package kvcache

import "github.com/turbomem/turbomem/quant"

// Every turbo format stores keys centred on their pre-RoPE mean
// (centered.go).

// turbo3 and turbo4: TurboQuant_mse (random rotation, Lloyd–Max codebook
// of the rotated coordinates) with the norm correction, one fp16 scale:
// 3.125 and 4.125 bits at d = 128. 8 indices pack into b bytes, so d is a
// multiple of 8.
func turboMSE(bits int) *codec {
	return &codec{
		slice:      laneMinSlice,
		multiple:   8,
		center:     true,
		tokenBytes: func(d int, _ bool) int { return quant.TurboMSEBytes(d, bits) },
		quantizer: func(d int, _ bool, _ []int, o quant.Options) (quant.Quantizer, error) {
			return quant.NewTurboMSE(d, bits, o)
		},
		keys:   laneStore,
		values: laneValueStore,
	}
}

// laneStore keeps keys in quant.Lanes' blocks where the quantizer allows
// (segments of multiples of 16 coordinates), else code after code.
func laneStore(q quant.Quantizer, _ int) keyStore {
	if l := quant.NewLanes(q); l != nil {
		return &laneKeys{l}
	}
	return &codeKeys{q: q}
}

// laneValueStore keeps values in quant.Lanes' blocks where the quantizer
// allows, else code after code.
func laneValueStore(q quant.Quantizer, _ int) valueStore {
	if l := quant.NewLanes(q); l != nil {
		return &laneValues{l: l, acc: quant.NewAccumulator(q)}
	}
	return &codeValues{q: q, acc: quant.NewAccumulator(q)}
}

// turbo2.5, turbo3.5 (and turbo3.5p, prod true): a quarter of each head's
// channels, the outliers, at bits+1 and the rest at bits, each part its
// own TurboQuant_mse (TurboQuant_prod: MSE plus a QJL sign sketch of the
// residual) with an fp16 scale. The outliers are chosen per head from the
// first tokens (Compressed); both parts must be multiples of 8 for the
// packed-index kernels, so d is a multiple of 32.
func turboSplit(bits int, prod bool) *codec {
	return &codec{
		slice:    laneMinSlice,
		multiple: 32,
		split:    true,
		center:   true,
		research: prod,
		tokenBytes: func(d int, _ bool) int {
			return quant.TurboSplitBytes(d, d/4, bits+1, bits, prod)
		},
		quantizer: func(d int, _ bool, outliers []int, o quant.Options) (quant.Quantizer, error) {
			return quant.NewTurboSplit(d, outliers, bits+1, bits, prod, o)
		},
		keys:   laneStore,
		values: laneValueStore,
	}
}
