//go:build amd64 && !purego

#include "textflag.h"
#include "hsum_amd64.h"

// func axpyF32AVX2(y *float32, a float32, x *float32, n int)
// y[i] += a·x[i] for n a multiple of 16.
TEXT ·axpyF32AVX2(SB), NOSPLIT, $0-32
	MOVQ         y+0(FP), DI
	VBROADCASTSS a+8(FP), Y0
	MOVQ         x+16(FP), SI
	MOVQ         n+24(FP), CX
	SHRQ         $4, CX
	JE           doneF32

loopF32:
	VMOVUPS     (DI), Y1
	VMOVUPS     32(DI), Y2
	VFMADD231PS (SI), Y0, Y1
	VFMADD231PS 32(SI), Y0, Y2
	VMOVUPS     Y1, (DI)
	VMOVUPS     Y2, 32(DI)
	ADDQ        $64, DI
	ADDQ        $64, SI
	DECQ        CX
	JNE         loopF32

doneF32:
	VZEROUPPER
	RET

// func axpyF16AVX2(y *float32, a float32, w *uint16, n int)
// y[i] += a·float32(w[i]) for fp16 w, n a multiple of 16.
TEXT ·axpyF16AVX2(SB), NOSPLIT, $0-32
	MOVQ         y+0(FP), DI
	VBROADCASTSS a+8(FP), Y0
	MOVQ         w+16(FP), SI
	MOVQ         n+24(FP), CX
	SHRQ         $4, CX
	JE           doneF16

loopF16:
	VCVTPH2PS   (SI), Y3
	VCVTPH2PS   16(SI), Y4
	VMOVUPS     (DI), Y1
	VMOVUPS     32(DI), Y2
	VFMADD231PS Y3, Y0, Y1
	VFMADD231PS Y4, Y0, Y2
	VMOVUPS     Y1, (DI)
	VMOVUPS     Y2, 32(DI)
	ADDQ        $64, DI
	ADDQ        $32, SI
	DECQ        CX
	JNE         loopF16

doneF16:
	VZEROUPPER
	RET

// func dotRowsF16AVX2(dst *float32, n int, q *float32, d int, rows *uint16)
// dst[t] = <q, row t> for n fp16 rows of d elements, d a multiple of 32.
TEXT ·dotRowsF16AVX2(SB), NOSPLIT, $0-40
	MOVQ  dst+0(FP), DI
	MOVQ  n+8(FP), CX
	MOVQ  q+16(FP), SI
	MOVQ  d+24(FP), R8
	MOVQ  rows+32(FP), BX
	TESTQ CX, CX
	JE    doneRowsF16

rowF16:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	MOVQ   SI, R12
	MOVQ   R8, R13

colF16:
	VCVTPH2PS   (BX), Y4
	VCVTPH2PS   16(BX), Y5
	VCVTPH2PS   32(BX), Y6
	VCVTPH2PS   48(BX), Y7
	VFMADD231PS (R12), Y4, Y0
	VFMADD231PS 32(R12), Y5, Y1
	VFMADD231PS 64(R12), Y6, Y2
	VFMADD231PS 96(R12), Y7, Y3
	ADDQ        $64, BX
	ADDQ        $128, R12
	SUBQ        $32, R13
	JNE         colF16

	HSUM4
	VMOVSS       X0, (DI)
	ADDQ         $4, DI
	DECQ         CX
	JNE          rowF16

doneRowsF16:
	VZEROUPPER
	RET

// func dotRowsF32AVX2(dst *float32, n int, q *float32, d int, rows *float32)
// dst[t] = <q, row t> for n float32 rows of d elements, d a multiple of 32.
TEXT ·dotRowsF32AVX2(SB), NOSPLIT, $0-40
	MOVQ  dst+0(FP), DI
	MOVQ  n+8(FP), CX
	MOVQ  q+16(FP), SI
	MOVQ  d+24(FP), R8
	MOVQ  rows+32(FP), BX
	TESTQ CX, CX
	JE    doneRowsF32

rowF32:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	MOVQ   SI, R12
	MOVQ   R8, R13

colF32:
	VMOVUPS     (BX), Y4
	VMOVUPS     32(BX), Y5
	VMOVUPS     64(BX), Y6
	VMOVUPS     96(BX), Y7
	VFMADD231PS (R12), Y4, Y0
	VFMADD231PS 32(R12), Y5, Y1
	VFMADD231PS 64(R12), Y6, Y2
	VFMADD231PS 96(R12), Y7, Y3
	ADDQ        $128, BX
	ADDQ        $128, R12
	SUBQ        $32, R13
	JNE         colF32

	HSUM4
	VMOVSS       X0, (DI)
	ADDQ         $4, DI
	DECQ         CX
	JNE          rowF32

doneRowsF32:
	VZEROUPPER
	RET

// func weightedSumF16AVX2(acc *float32, d int, w *float32, n int, rows *uint16)
// acc[0:d] += Σ_t w[t]·row t for n fp16 rows of d elements, d a multiple
// of 32: 32 columns at a time stay in four registers over all rows.
TEXT ·weightedSumF16AVX2(SB), NOSPLIT, $0-40
	MOVQ acc+0(FP), DI
	MOVQ d+8(FP), R8
	MOVQ w+16(FP), SI
	MOVQ n+24(FP), R9
	MOVQ rows+32(FP), BX
	LEAQ (R8)(R8*1), R10 // row stride in bytes
	TESTQ R9, R9
	JE    doneWF16

chunkWF16:
	VMOVUPS (DI), Y0
	VMOVUPS 32(DI), Y1
	VMOVUPS 64(DI), Y2
	VMOVUPS 96(DI), Y3
	MOVQ    BX, R11
	MOVQ    SI, R12
	MOVQ    R9, CX

rowWF16:
	VBROADCASTSS (R12), Y8
	VCVTPH2PS    (R11), Y4
	VCVTPH2PS    16(R11), Y5
	VCVTPH2PS    32(R11), Y6
	VCVTPH2PS    48(R11), Y7
	VFMADD231PS  Y4, Y8, Y0
	VFMADD231PS  Y5, Y8, Y1
	VFMADD231PS  Y6, Y8, Y2
	VFMADD231PS  Y7, Y8, Y3
	ADDQ         R10, R11
	ADDQ         $4, R12
	DECQ         CX
	JNE          rowWF16

	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	ADDQ    $128, DI
	ADDQ    $64, BX
	SUBQ    $32, R8
	JNE     chunkWF16

doneWF16:
	VZEROUPPER
	RET

// func weightedSumF32AVX2(acc *float32, d int, w *float32, n int, rows *float32)
// As weightedSumF16AVX2 for float32 rows.
TEXT ·weightedSumF32AVX2(SB), NOSPLIT, $0-40
	MOVQ acc+0(FP), DI
	MOVQ d+8(FP), R8
	MOVQ w+16(FP), SI
	MOVQ n+24(FP), R9
	MOVQ rows+32(FP), BX
	LEAQ (R8*4), R10 // row stride in bytes
	TESTQ R9, R9
	JE    doneWF32

chunkWF32:
	VMOVUPS (DI), Y0
	VMOVUPS 32(DI), Y1
	VMOVUPS 64(DI), Y2
	VMOVUPS 96(DI), Y3
	MOVQ    BX, R11
	MOVQ    SI, R12
	MOVQ    R9, CX

rowWF32:
	VBROADCASTSS (R12), Y8
	VFMADD231PS  (R11), Y8, Y0
	VFMADD231PS  32(R11), Y8, Y1
	VFMADD231PS  64(R11), Y8, Y2
	VFMADD231PS  96(R11), Y8, Y3
	ADDQ         R10, R11
	ADDQ         $4, R12
	DECQ         CX
	JNE          rowWF32

	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	ADDQ    $128, DI
	ADDQ    $128, BX
	SUBQ    $32, R8
	JNE     chunkWF32

doneWF32:
	VZEROUPPER
	RET

// DOT2 adds query Q's 32 elements (QLO, QHI) times the two rows' converted
// 32 elements (Z0-Z1 row 0, Z2-Z3 row 1) into the query's accumulators:
// RA/RB row 0's, SA/SB row 1's.
#define DOT2(QLO, QHI, RA, RB, SA, SB) \
	VFMADD231PS QLO, Z0, RA; \
	VFMADD231PS QHI, Z1, RB; \
	VFMADD231PS QLO, Z2, SA; \
	VFMADD231PS QHI, Z3, SB

// PAIRSUM leaves in S, for one query, [row 0's | row 1's] sum of its
// accumulators as HSUM4 adds them before it folds the lanes: (a0 + a1) +
// (a2 + a3), RA holding [a0 | a1] and RB [a2 | a3] of row 0, SA and SB
// row 1's (Z0-Z3 scratch).
#define PAIRSUM(RA, RB, SA, SB, S) \
	VSHUFF64X2 $0x44, SA, RA, Z0; \
	VSHUFF64X2 $0xEE, SA, RA, Z1; \
	VADDPS     Z1, Z0, Z0; \
	VSHUFF64X2 $0x44, SB, RB, Z2; \
	VSHUFF64X2 $0xEE, SB, RB, Z3; \
	VADDPS     Z3, Z2, Z2; \
	VADDPS     Z2, Z0, S

// func dotRowsF16x4AVX512(dst *float32, stride int, n int, q *float32, d int, rows *uint16)
// dst[j·stride + t] = <q[j·d:(j+1)·d], row t> for four queries and n
// fp16 rows of d elements (d a multiple of 32): one pass over the rows
// for the four query heads of a KV head, two rows at a time, each dot
// product summed exactly as dotRowsF16AVX2 sums it, so the results are
// the same bits. Each of its four 8-lane accumulators is half of a
// 16-lane one here (Z16-Z31: query j's [a0 | a1] and [a2 | a3] of the
// two rows), and HSUM4's additions are made for the eight dot products
// at once: the halves (a0 + a1, a2 + a3) paired by VSHUFF64X2, then the
// 128-bit halves, the pairs and the last two lanes of every sum, in
// HSUM4's order, by shuffles that keep the eight sums apart. A last odd
// row is run as a pair with itself (row stride 0), its first sums kept.
TEXT ·dotRowsF16x4AVX512(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ stride+8(FP), DX
	SHLQ $2, DX
	MOVQ n+16(FP), CX
	MOVQ q+24(FP), SI
	MOVQ d+32(FP), R8
	MOVQ rows+40(FP), BX
	LEAQ (SI)(R8*4), R9
	LEAQ (R9)(R8*4), R10
	LEAQ (R10)(R8*4), R11
	LEAQ (DX)(DX*2), R12
	LEAQ (R8)(R8*1), R14 // row bytes: the second row's offset
	SHLQ $2, R8          // query bytes
	TESTQ CX, CX
	JE   d2done
	CMPQ CX, $1
	JNE  d2pair
	XORQ R14, R14

d2pair:
	VPXORD Z16, Z16, Z16
	VPXORD Z17, Z17, Z17
	VPXORD Z18, Z18, Z18
	VPXORD Z19, Z19, Z19
	VPXORD Z20, Z20, Z20
	VPXORD Z21, Z21, Z21
	VPXORD Z22, Z22, Z22
	VPXORD Z23, Z23, Z23
	VPXORD Z24, Z24, Z24
	VPXORD Z25, Z25, Z25
	VPXORD Z26, Z26, Z26
	VPXORD Z27, Z27, Z27
	VPXORD Z28, Z28, Z28
	VPXORD Z29, Z29, Z29
	VPXORD Z30, Z30, Z30
	VPXORD Z31, Z31, Z31
	XORQ AX, AX
	MOVQ BX, R13

d2col:
	// 2 KiB ahead (four pairs of rows): on the Xeon one core's stream
	// from L3 kept up with the kernel only that far ahead
	PREFETCHT0 2048(R13)
	PREFETCHT0 2048(R13)(R14*1)
	VCVTPH2PS (R13), Z0
	VCVTPH2PS 32(R13), Z1
	VCVTPH2PS (R13)(R14*1), Z2
	VCVTPH2PS 32(R13)(R14*1), Z3
	VMOVUPS   (SI)(AX*1), Z4
	VMOVUPS   64(SI)(AX*1), Z5
	VMOVUPS   (R9)(AX*1), Z6
	VMOVUPS   64(R9)(AX*1), Z7
	VMOVUPS   (R10)(AX*1), Z8
	VMOVUPS   64(R10)(AX*1), Z9
	VMOVUPS   (R11)(AX*1), Z10
	VMOVUPS   64(R11)(AX*1), Z11
	DOT2(Z4, Z5, Z16, Z17, Z18, Z19)
	DOT2(Z6, Z7, Z20, Z21, Z22, Z23)
	DOT2(Z8, Z9, Z24, Z25, Z26, Z27)
	DOT2(Z10, Z11, Z28, Z29, Z30, Z31)
	ADDQ $64, R13
	ADDQ $128, AX
	CMPQ AX, R8
	JNE  d2col

	// S_j = [u(j, row 0) | u(j, row 1)], u the 8 lanes HSUM folds
	PAIRSUM(Z16, Z17, Z18, Z19, Z4)
	PAIRSUM(Z20, Z21, Z22, Z23, Z5)
	PAIRSUM(Z24, Z25, Z26, Z27, Z6)
	PAIRSUM(Z28, Z29, Z30, Z31, Z7)
	// 128-bit halves added: [v(0,0) v(0,1) v(1,0) v(1,1)], queries 2-3 likewise
	VSHUFF32X4 $0x88, Z5, Z4, Z0
	VSHUFF32X4 $0xDD, Z5, Z4, Z1
	VADDPS     Z1, Z0, Z0
	VSHUFF32X4 $0x88, Z7, Z6, Z2
	VSHUFF32X4 $0xDD, Z7, Z6, Z3
	VADDPS     Z3, Z2, Z2
	// lanes 0+2 and 1+3, then their sum, per 128-bit block: queries 0-1
	// in element 0, queries 2-3 in element 2
	VSHUFPS   $0x44, Z2, Z0, Z1
	VSHUFPS   $0xEE, Z2, Z0, Z3
	VADDPS    Z3, Z1, Z1
	VSHUFPS   $0xB1, Z1, Z1, Z3
	VADDPS    Z3, Z1, Z1
	VMOVDQU32 dot2perm<>(SB), Z2
	VPERMPS   Z1, Z2, Z12 // [q0r0 q0r1 q1r0 q1r1 q2r0 q2r1 q3r0 q3r1]
	VEXTRACTF128 $1, Y12, X13
	CMPQ CX, $1
	JE   d2single
	VMOVLPS X12, (DI)
	VMOVHPS X12, (DI)(DX*1)
	VMOVLPS X13, (DI)(DX*2)
	VMOVHPS X13, (DI)(R12*1)
	ADDQ $8, DI
	LEAQ (BX)(R14*2), BX
	SUBQ $2, CX
	JE   d2done
	CMPQ CX, $1
	JNE  d2pair
	XORQ R14, R14
	JMP  d2pair

d2single:
	VMOVSS     X12, (DI)
	VEXTRACTPS $2, X12, (DI)(DX*1)
	VMOVSS     X13, (DI)(DX*2)
	VEXTRACTPS $2, X13, (DI)(R12*1)

d2done:
	VZEROUPPER
	RET

// where the eight dot products of a pair of rows are after the folding
DATA dot2perm<>+0(SB)/4, $0
DATA dot2perm<>+4(SB)/4, $4
DATA dot2perm<>+8(SB)/4, $8
DATA dot2perm<>+12(SB)/4, $12
DATA dot2perm<>+16(SB)/4, $2
DATA dot2perm<>+20(SB)/4, $6
DATA dot2perm<>+24(SB)/4, $10
DATA dot2perm<>+28(SB)/4, $14
DATA dot2perm<>+32(SB)/4, $0
DATA dot2perm<>+36(SB)/4, $0
DATA dot2perm<>+40(SB)/4, $0
DATA dot2perm<>+44(SB)/4, $0
DATA dot2perm<>+48(SB)/4, $0
DATA dot2perm<>+52(SB)/4, $0
DATA dot2perm<>+56(SB)/4, $0
DATA dot2perm<>+60(SB)/4, $0
GLOBL dot2perm<>(SB), RODATA|NOPTR, $64

// LOADACC4/STOREACC4 move 64 columns (from column R9) of the accumulator
// at offset P of the [4]*float32 at R8 to and from A0-A3, AX scratch;
// LOADACC2/STOREACC2 32 columns to and from A0-A1.
#define LOADACC4(P, A0, A1, A2, A3) \
	MOVQ    P(R8), AX; \
	VMOVUPS (AX)(R9*4), A0; \
	VMOVUPS 64(AX)(R9*4), A1; \
	VMOVUPS 128(AX)(R9*4), A2; \
	VMOVUPS 192(AX)(R9*4), A3

#define STOREACC4(P, A0, A1, A2, A3) \
	MOVQ    P(R8), AX; \
	VMOVUPS A0, (AX)(R9*4); \
	VMOVUPS A1, 64(AX)(R9*4); \
	VMOVUPS A2, 128(AX)(R9*4); \
	VMOVUPS A3, 192(AX)(R9*4)

#define LOADACC2(P, A0, A1) \
	MOVQ    P(R8), AX; \
	VMOVUPS (AX)(R9*4), A0; \
	VMOVUPS 64(AX)(R9*4), A1

#define STOREACC2(P, A0, A1) \
	MOVQ    P(R8), AX; \
	VMOVUPS A0, (AX)(R9*4); \
	VMOVUPS A1, 64(AX)(R9*4)

// WEIGHTS broadcasts the current row's weight of each query to Z4-Z7.
#define WEIGHTS \
	VBROADCASTSS (SI), Z4; \
	VBROADCASTSS (SI)(DX*1), Z5; \
	VBROADCASTSS (SI)(DX*2), Z6; \
	VBROADCASTSS (SI)(R12*1), Z7

// RESTOREW moves the weight pointer back over the block's R14 rows.
#define RESTOREW \
	MOVQ R14, AX; \
	SHLQ $2, AX; \
	SUBQ AX, SI

// func weightedSumF16x4AVX512(acc *[4]*float32, w *float32, wstride int, n int, rows *uint16, d int)
// acc[j][c] += Σ_t w[j·wstride + t]·row t[c] over n fp16 rows of d
// elements (d a multiple of 32) for four queries: each row converted
// once for the four, every element's sum taken in weightedSumF16AVX2's
// order (one multiply-add per row, rows in order), so the results are the
// same bits. The rows go by blocks of 32, and each block by 64 columns
// (16 accumulators, Z16-Z31; a last 32 in half of them), so that the
// values are read block by block, in order, rather than in one strided
// pass over all n rows per 32 columns.
TEXT ·weightedSumF16x4AVX512(SB), NOSPLIT, $0-48
	MOVQ acc+0(FP), R8
	MOVQ w+8(FP), SI
	MOVQ wstride+16(FP), DX
	SHLQ $2, DX
	LEAQ (DX)(DX*2), R12
	MOVQ n+24(FP), CX
	MOVQ rows+32(FP), DI
	MOVQ d+40(FP), R10
	LEAQ (R10)(R10*1), BX // row bytes
	TESTQ CX, CX
	JE   wsdone

wsblock:
	MOVQ   $32, R14
	CMPQ   CX, R14
	CMOVQLT CX, R14
	XORQ   R9, R9

wschunk:
	MOVQ R10, AX
	SUBQ R9, AX
	CMPQ AX, $64
	JLT  wshalf
	LOADACC4(0, Z16, Z17, Z18, Z19)
	LOADACC4(8, Z20, Z21, Z22, Z23)
	LOADACC4(16, Z24, Z25, Z26, Z27)
	LOADACC4(24, Z28, Z29, Z30, Z31)
	LEAQ (DI)(R9*2), AX
	MOVQ R14, R13

wsrow:
	// the chunk's lines eight rows ahead (see d2col)
	PREFETCHT0  2048(AX)
	PREFETCHT0  2112(AX)
	VCVTPH2PS   (AX), Z0
	VCVTPH2PS   32(AX), Z1
	VCVTPH2PS   64(AX), Z2
	VCVTPH2PS   96(AX), Z3
	WEIGHTS
	VFMADD231PS Z4, Z0, Z16
	VFMADD231PS Z4, Z1, Z17
	VFMADD231PS Z4, Z2, Z18
	VFMADD231PS Z4, Z3, Z19
	VFMADD231PS Z5, Z0, Z20
	VFMADD231PS Z5, Z1, Z21
	VFMADD231PS Z5, Z2, Z22
	VFMADD231PS Z5, Z3, Z23
	VFMADD231PS Z6, Z0, Z24
	VFMADD231PS Z6, Z1, Z25
	VFMADD231PS Z6, Z2, Z26
	VFMADD231PS Z6, Z3, Z27
	VFMADD231PS Z7, Z0, Z28
	VFMADD231PS Z7, Z1, Z29
	VFMADD231PS Z7, Z2, Z30
	VFMADD231PS Z7, Z3, Z31
	ADDQ        BX, AX
	ADDQ        $4, SI
	DECQ        R13
	JNE         wsrow

	RESTOREW
	STOREACC4(0, Z16, Z17, Z18, Z19)
	STOREACC4(8, Z20, Z21, Z22, Z23)
	STOREACC4(16, Z24, Z25, Z26, Z27)
	STOREACC4(24, Z28, Z29, Z30, Z31)
	ADDQ $64, R9
	CMPQ R9, R10
	JNE  wschunk
	JMP  wsnext

wshalf:
	LOADACC2(0, Z16, Z17)
	LOADACC2(8, Z20, Z21)
	LOADACC2(16, Z24, Z25)
	LOADACC2(24, Z28, Z29)
	LEAQ (DI)(R9*2), AX
	MOVQ R14, R13

wshrow:
	VCVTPH2PS   (AX), Z0
	VCVTPH2PS   32(AX), Z1
	WEIGHTS
	VFMADD231PS Z4, Z0, Z16
	VFMADD231PS Z4, Z1, Z17
	VFMADD231PS Z5, Z0, Z20
	VFMADD231PS Z5, Z1, Z21
	VFMADD231PS Z6, Z0, Z24
	VFMADD231PS Z6, Z1, Z25
	VFMADD231PS Z7, Z0, Z28
	VFMADD231PS Z7, Z1, Z29
	ADDQ        BX, AX
	ADDQ        $4, SI
	DECQ        R13
	JNE         wshrow

	RESTOREW
	STOREACC2(0, Z16, Z17)
	STOREACC2(8, Z20, Z21)
	STOREACC2(16, Z24, Z25)
	STOREACC2(24, Z28, Z29)

wsnext:
	// the next block: weights and rows R14 further on
	MOVQ  R14, AX
	SHLQ  $2, AX
	ADDQ  AX, SI
	MOVQ  R14, AX
	IMULQ BX, AX
	ADDQ  AX, DI
	SUBQ  R14, CX
	JNE   wsblock

wsdone:
	VZEROUPPER
	RET
