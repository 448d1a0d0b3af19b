//go:build !amd64 || purego

package quant

func hasKLTLanes() bool { return false }

func hasKLTLanes512() bool { return false }

func kltScore4AVX2(*float32, int, *byte, int, *kltSeg, int, *float32, *byte) {
	panic("quant: no KLT lane kernel")
}

func kltAcc4AVX2(*[4]*float32, *float32, int, *byte, int, *kltSeg, int, *byte, int) {
	panic("quant: no KLT lane kernel")
}

func kltScore4AVX512(*[4]*float32, *[4]float32, *float32, int, *byte, int, *kltSeg, int, *float32, *byte) {
	panic("quant: no KLT lane kernel")
}

func kltAcc4AVX512(*[4]*float32, *[4]*float32, *float32, int, *byte, int, *kltSeg, int, *byte) {
	panic("quant: no KLT lane kernel")
}
