//go:build amd64 && !purego

#include "textflag.h"
#include "hsum_amd64.h"

// The tiled prefill kernel (gemm.go) with AVX-512 VNNI: per step of 64
// elements, the four panel rows' quants and lane scales are loaded once
// (Z16-Z19, Z20-Z23) and every activation of the group meets all four
// rows: VPDPBUSD sums four unsigned-quant × signed-activation byte
// products per int32 lane (exact), the lane is converted, scaled by the
// row's lane scale and accumulated with the activation's lane scale into
// the pair's float accumulator (Z0-Z15, row·4 + vector). Every 256
// elements the min term adds mg·xg per lane; at the end each accumulator's
// 16 lanes are summed.

// PAIR accumulates step results of activation v (quants at 64v(R9), lane
// scales in Z24) against row W (scales SW) into ACC, D scratch.
#define PAIR(v, W, SW, D, ACC) \
	VPXORD D, D, D; \
	VPDPBUSD (64*v)(R9), W, D; \
	VCVTDQ2PS D, D; \
	VMULPS SW, D, D; \
	VFMADD231PS Z24, D, ACC

#define VEC(v, A0, A1, A2, A3) \
	VMOVUPS (64*v)(R10), Z24; \
	PAIR(v, Z16, Z20, Z25, A0); \
	PAIR(v, Z17, Z21, Z26, A1); \
	PAIR(v, Z18, Z22, Z27, A2); \
	PAIR(v, Z19, Z23, Z28, A3)

#define STEP \
	VMOVDQU32 (SI), Z16; \
	VMOVDQU32 64(SI), Z17; \
	VMOVDQU32 128(SI), Z18; \
	VMOVDQU32 192(SI), Z19; \
	VMOVUPS (DI), Z20; \
	VMOVUPS 64(DI), Z21; \
	VMOVUPS 128(DI), Z22; \
	VMOVUPS 192(DI), Z23; \
	VEC(0, Z0, Z4, Z8, Z12); \
	VEC(1, Z1, Z5, Z9, Z13); \
	VEC(2, Z2, Z6, Z10, Z14); \
	VEC(3, Z3, Z7, Z11, Z15); \
	ADDQ $256, SI; \
	ADDQ $256, DI; \
	ADDQ $256, R9; \
	ADDQ $256, R10

// MINS adds row r's group mins (at 64r(R8)) times activation v's group
// terms (Z29) to ACC.
#define MINS(v, A0, A1, A2, A3) \
	VMOVUPS (64*v)(R11), Z29; \
	VFMADD231PS (R8), Z29, A0; \
	VFMADD231PS 64(R8), Z29, A1; \
	VFMADD231PS 128(R8), Z29, A2; \
	VFMADD231PS 192(R8), Z29, A3

// REDUCE stores the sum of the 16 lanes of Z to off(AX).
#define REDUCE(Z, Y, X, off) \
	SUM16(Z, Y, X, Y30, X30); \
	VMOVSS X, off(AX)

// func gemmKernelVNNI(q *byte, sw, mg *float32, xq *int8, sx, xg *float32, nsb int, out *[16]float32)
// nsb: number of 256-element super-blocks (four steps each).
TEXT ·gemmKernelVNNI(SB), NOSPLIT, $0-64
	MOVQ q+0(FP), SI
	MOVQ sw+8(FP), DI
	MOVQ mg+16(FP), R8
	MOVQ xq+24(FP), R9
	MOVQ sx+32(FP), R10
	MOVQ xg+40(FP), R11
	MOVQ nsb+48(FP), CX
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12
	VPXORD Z13, Z13, Z13
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15
	TESTQ CX, CX
	JZ gemmdone
gemmloop:
	STEP
	STEP
	STEP
	STEP
	MINS(0, Z0, Z4, Z8, Z12)
	MINS(1, Z1, Z5, Z9, Z13)
	MINS(2, Z2, Z6, Z10, Z14)
	MINS(3, Z3, Z7, Z11, Z15)
	ADDQ $256, R8
	ADDQ $256, R11
	DECQ CX
	JNZ gemmloop
gemmdone:
	MOVQ out+56(FP), AX
	REDUCE(Z0, Y0, X0, 0)
	REDUCE(Z1, Y1, X1, 4)
	REDUCE(Z2, Y2, X2, 8)
	REDUCE(Z3, Y3, X3, 12)
	REDUCE(Z4, Y4, X4, 16)
	REDUCE(Z5, Y5, X5, 20)
	REDUCE(Z6, Y6, X6, 24)
	REDUCE(Z7, Y7, X7, 28)
	REDUCE(Z8, Y8, X8, 32)
	REDUCE(Z9, Y9, X9, 36)
	REDUCE(Z10, Y10, X10, 40)
	REDUCE(Z11, Y11, X11, 44)
	REDUCE(Z12, Y12, X12, 48)
	REDUCE(Z13, Y13, X13, 52)
	REDUCE(Z14, Y14, X14, 56)
	REDUCE(Z15, Y15, X15, 60)
	VZEROUPPER
	RET
