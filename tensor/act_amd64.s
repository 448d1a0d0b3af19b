//go:build amd64 && !purego

#include "textflag.h"

// func quantQ8_0AVX512(x *float32, qs *int8, d *float32, nb int)
// The Q8_0 activation rule of activation.set for nb blocks of 32: d =
// max|x|/127, q = x·(1/d) rounded to nearest, ties to even (VCVTPS2DQ
// under the default rounding mode, as nearestInt), 1/d taken as 0 for
// d = 0. Every operation is the Go code's, one IEEE operation each, so
// the bytes and scales are the same.
TEXT ·quantQ8_0AVX512(SB), NOSPLIT, $0-32
	MOVQ x+0(FP), SI
	MOVQ qs+8(FP), DI
	MOVQ d+16(FP), DX
	MOVQ nb+24(FP), CX
	MOVL $0x7fffffff, AX
	VPBROADCASTD AX, Z7
	MOVL $0x42fe0000, AX // 127
	VMOVD AX, X6
	MOVL $0x3f800000, AX // 1
	VMOVD AX, X8
	VXORPS X9, X9, X9
	TESTQ CX, CX
	JZ q8adone
q8aloop:
	VMOVUPS (SI), Z0
	VMOVUPS 64(SI), Z1
	VPANDD Z7, Z0, Z2
	VPANDD Z7, Z1, Z3
	VMAXPS Z3, Z2, Z2
	VEXTRACTF64X4 $1, Z2, Y3
	VMAXPS Y3, Y2, Y2
	VEXTRACTF128 $1, Y2, X3
	VMAXPS X3, X2, X2
	VMOVHLPS X2, X2, X3
	VMAXPS X3, X2, X2
	VPSHUFD $1, X2, X3
	VMAXSS X3, X2, X2
	VDIVSS X6, X2, X2
	VMOVSS X2, (DX)
	VXORPS X4, X4, X4
	VUCOMISS X9, X2
	JE q8azero
	VDIVSS X2, X8, X4
q8azero:
	VBROADCASTSS X4, Z4
	VMULPS Z4, Z0, Z0
	VMULPS Z4, Z1, Z1
	VCVTPS2DQ Z0, Z0
	VCVTPS2DQ Z1, Z1
	VPMOVDB Z0, (DI)
	VPMOVDB Z1, 16(DI)
	ADDQ $128, SI
	ADDQ $32, DI
	ADDQ $4, DX
	DECQ CX
	JNZ q8aloop
q8adone:
	VZEROUPPER
	RET

// func swiGLUAVX512(gs, u *float32, n int)
// g[i] = z/(1 + Exp(−z))·u[i] for n a multiple of 16, z = g[i], with
// Exp's operations one by one in its order (no fused multiply-add; the
// floor by VRNDSCALEPS): the same bits as swiGLUGo.
TEXT ·swiGLUAVX512(SB), NOSPLIT, $0-24
	MOVQ gs+0(FP), DI
	MOVQ u+8(FP), SI
	MOVQ n+16(FP), CX
	SHRQ $4, CX
	JZ sgdone
	MOVL $0x80000000, AX
	VPBROADCASTD AX, Z20 // sign bit
	MOVL $0xc2ae999a, AX // -87.3
	VPBROADCASTD AX, Z21
	MOVL $0x42b0999a, AX // 88.3
	VPBROADCASTD AX, Z22
	MOVL $0x3fb8aa3b, AX // log₂e
	VPBROADCASTD AX, Z23
	MOVL $0x3f000000, AX // 0.5
	VPBROADCASTD AX, Z24
	MOVL $0x3f318000, AX // 0.693359375
	VPBROADCASTD AX, Z25
	MOVL $0x395e8083, AX // 2.12194440e-4
	VPBROADCASTD AX, Z26
	MOVL $0x39506967, AX // 1.9875691500e-4
	VPBROADCASTD AX, Z27
	MOVL $0x3ab743ce, AX // 1.3981999507e-3
	VPBROADCASTD AX, Z28
	MOVL $0x3c088908, AX // 8.3334519073e-3
	VPBROADCASTD AX, Z29
	MOVL $0x3d2aa9c1, AX // 4.1665795894e-2
	VPBROADCASTD AX, Z30
	MOVL $0x3e2aaaaa, AX // 1.6666665459e-1
	VPBROADCASTD AX, Z31
	MOVL $0x3f000000, AX // 5.0000001201e-1
	VPBROADCASTD AX, Z19
	MOVL $0x3f800000, AX // 1
	VPBROADCASTD AX, Z18
	MOVL $127, AX
	VPBROADCASTD AX, Z17
sgloop:
	VMOVUPS (DI), Z0 // z
	VPXORD Z20, Z0, Z1 // x = −z
	VMAXPS Z21, Z1, Z1
	VMINPS Z22, Z1, Z1
	VMULPS Z23, Z1, Z2
	VADDPS Z24, Z2, Z2
	VRNDSCALEPS $9, Z2, Z2 // n = floor(x·log₂e + 0.5)
	VMULPS Z25, Z2, Z3
	VSUBPS Z3, Z1, Z3 // x − n·C1
	VMULPS Z26, Z2, Z4
	VADDPS Z4, Z3, Z3 // r
	VMULPS Z27, Z3, Z4
	VADDPS Z28, Z4, Z4
	VMULPS Z3, Z4, Z4
	VADDPS Z29, Z4, Z4
	VMULPS Z3, Z4, Z4
	VADDPS Z30, Z4, Z4
	VMULPS Z3, Z4, Z4
	VADDPS Z31, Z4, Z4
	VMULPS Z3, Z4, Z4
	VADDPS Z19, Z4, Z4 // p
	VMULPS Z3, Z4, Z4
	VMULPS Z3, Z4, Z4
	VADDPS Z3, Z4, Z4
	VADDPS Z18, Z4, Z4 // e = p·r·r + r + 1
	VCVTPS2DQ Z2, Z5
	VPADDD Z17, Z5, Z5
	VPSLLD $23, Z5, Z5
	VMULPS Z5, Z4, Z4 // Exp(−z)
	VADDPS Z18, Z4, Z4
	VDIVPS Z4, Z0, Z0
	VMULPS (SI), Z0, Z0
	VMOVUPS Z0, (DI)
	ADDQ $64, DI
	ADDQ $64, SI
	DECQ CX
	JNZ sgloop
sgdone:
	VZEROUPPER
	RET

// func quantQ8_KAVX512(x *float32, qs *int8, d *float32, bsums *int16, nb int)
// The Q8_K activation rule of activation.set for nb blocks of 256: mx
// the first element of largest magnitude, iscale = −127/mx, q =
// min(127, x·iscale rounded to nearest, ties to even), d = 1/iscale, the
// sums of every 16 quants; an all-zero block gives zeros. One IEEE
// operation per Go operation: the same bytes, scales and sums.
TEXT ·quantQ8_KAVX512(SB), NOSPLIT, $0-40
	MOVQ x+0(FP), SI
	MOVQ qs+8(FP), DI
	MOVQ d+16(FP), DX
	MOVQ bsums+24(FP), R8
	MOVQ nb+32(FP), CX
	MOVL $0x7fffffff, AX
	VPBROADCASTD AX, Z7
	MOVL $127, AX
	VPBROADCASTD AX, Z6
	MOVL $0xc2fe0000, AX // −127
	VMOVD AX, X5
	MOVL $0x3f800000, AX // 1
	VMOVD AX, X8
	VXORPS X9, X9, X9
	TESTQ CX, CX
	JZ q8kdone
q8kblock:
	// amax over the 16 registers of the block
	VPANDD (SI), Z7, Z0
	MOVQ $1, R9
q8kmax:
	MOVQ R9, R10
	SHLQ $6, R10
	VPANDD (SI)(R10*1), Z7, Z1
	VMAXPS Z1, Z0, Z0
	INCQ R9
	CMPQ R9, $16
	JB q8kmax
	VEXTRACTF64X4 $1, Z0, Y1
	VMAXPS Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VMAXPS X1, X0, X0
	VMOVHLPS X0, X0, X1
	VMAXPS X1, X0, X0
	VPSHUFD $1, X0, X1
	VMAXSS X1, X0, X0
	VUCOMISS X9, X0
	JE q8kzero
	// mx: the first element whose magnitude is amax
	VBROADCASTSS X0, Z2
	XORQ R9, R9
q8kfind:
	MOVQ R9, R10
	SHLQ $6, R10
	VPANDD (SI)(R10*1), Z7, Z1
	VCMPPS $0, Z2, Z1, K1
	KMOVW K1, AX
	TESTL AX, AX
	JNZ q8kfound
	INCQ R9
	JMP q8kfind
q8kfound:
	BSFL AX, AX
	SHLQ $4, R9
	ADDQ AX, R9
	VMOVSS (SI)(R9*4), X3
	VDIVSS X3, X5, X4 // iscale = −127/mx
	VDIVSS X4, X8, X3 // d = 1/iscale
	VMOVSS X3, (DX)
	VBROADCASTSS X4, Z4
	XORQ R9, R9
q8kquant:
	MOVQ R9, R10
	SHLQ $6, R10
	VMULPS (SI)(R10*1), Z4, Z1
	VCVTPS2DQ Z1, Z1
	VPMINSD Z6, Z1, Z1
	MOVQ R9, R10
	SHLQ $4, R10
	VPMOVDB Z1, (DI)(R10*1)
	VEXTRACTI64X4 $1, Z1, Y2
	VPADDD Y2, Y1, Y1
	VEXTRACTI128 $1, Y1, X2
	VPADDD X2, X1, X1
	VPSHUFD $0x4e, X1, X2
	VPADDD X2, X1, X1
	VPSHUFD $0xb1, X1, X2
	VPADDD X2, X1, X1
	VMOVD X1, AX
	MOVW AX, (R8)(R9*2)
	INCQ R9
	CMPQ R9, $16
	JB q8kquant
	JMP q8knext
q8kzero:
	VMOVSS X9, (DX)
	VPXORD Z1, Z1, Z1
	VMOVDQU64 Z1, (DI)
	VMOVDQU64 Z1, 64(DI)
	VMOVDQU64 Z1, 128(DI)
	VMOVDQU64 Z1, 192(DI)
	VMOVDQU64 Y1, (R8)
q8knext:
	ADDQ $1024, SI
	ADDQ $256, DI
	ADDQ $4, DX
	ADDQ $32, R8
	DECQ CX
	JNZ q8kblock
q8kdone:
	VZEROUPPER
	RET
