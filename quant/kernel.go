package quant

import (
	"encoding/binary"

	"github.com/turbomem/turbomem/half"
	"github.com/turbomem/turbomem/tensor"
)

// A scaled code is an fp16 scale followed by packed b-bit indices (b ≤ 4),
// the layout of TurboMSE and QJL codes. Scoring one against a prepared
// query q is scale·Σⱼ q[j]·table[idxⱼ]; dotCodes does it for many codes at
// once, in assembly where the CPU allows, else in dotCodesGo.

// kernelLevel selects the kernels dotCodes and dotRows use; tests and
// benchmarks pass a lower level to compare the SIMD generations. levels()
// lists those the CPU and build offer.
type kernelLevel int

const (
	levelGo kernelLevel = iota
	levelAVX2
	levelAVX512
)

func (l kernelLevel) String() string { return [...]string{"purego", "avx2", "avx512"}[l] }

// dotCodesGo is the pure-Go twin of the SIMD scorers. For each of the
// len(dst) codes at codes[i·stride+off:], it sets (or, with add, adds to)
// dst[i] the code's fp16 scale times Σ_{j<len(q)} q[j]·table[idx_j], where
// idx_j are the packed b-bit indices that follow the scale. len(q) is a
// multiple of 8.
func dotCodesGo(dst, q []float32, table *[16]float32, codes []byte, stride, off, b int, add bool) {
	groups := len(q) / 8
	mask := uint32(1)<<b - 1
	for i := range dst {
		code := codes[i*stride+off : i*stride+off+2+groups*b]
		c := code[2:]
		var s0, s1 float32
		for g := range groups {
			var w uint32
			switch b {
			case 1:
				w = uint32(c[g])
			case 2:
				w = uint32(binary.LittleEndian.Uint16(c[2*g:]))
			case 3:
				w = uint32(c[3*g]) | uint32(c[3*g+1])<<8 | uint32(c[3*g+2])<<16
			case 4:
				w = binary.LittleEndian.Uint32(c[4*g:])
			}
			qq := q[8*g : 8*g+8]
			s0 += qq[0]*table[w&mask] + qq[2]*table[w>>(2*b)&mask] + qq[4]*table[w>>(4*b)&mask] + qq[6]*table[w>>(6*b)&mask]
			s1 += qq[1]*table[w>>b&mask] + qq[3]*table[w>>(3*b)&mask] + qq[5]*table[w>>(5*b)&mask] + qq[7]*table[w>>(7*b)&mask]
		}
		v := half.F16ToF32(half.F16(binary.LittleEndian.Uint16(code))) * (s0 + s1)
		if add {
			dst[i] += v
		} else {
			dst[i] = v
		}
	}
}

// dotRowsGo is the fp32 baseline scan below AVX-512: dst[i] =
// <q, keys[i·len(q):(i+1)·len(q)]>, with tensor's row kernel (AVX2, or
// pure Go under the purego tag).
func dotRowsGo(dst, q, keys []float32) { tensor.DotRowsF32(dst, q, keys) }
