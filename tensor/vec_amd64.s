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

// GROUP4 adds the 32 fp16 elements at (BX), converted (Y4-Y7), times the
// 32 query elements at AX into query q's four accumulators A0-A3.
#define GROUP4(Q, A0, A1, A2, A3) \
	VFMADD231PS (Q)(AX*1), Y4, A0; \
	VFMADD231PS 32(Q)(AX*1), Y5, A1; \
	VFMADD231PS 64(Q)(AX*1), Y6, A2; \
	VFMADD231PS 96(Q)(AX*1), Y7, A3

// STOREDOT writes HSUM4 of the accumulators A0-A3 to off(DI).
#define STOREDOT(A0, A1, A2, A3, off) \
	VMOVAPS A0, Y0; \
	VMOVAPS A1, Y1; \
	VMOVAPS A2, Y2; \
	VMOVAPS A3, Y3; \
	HSUM4; \
	VMOVSS X0, off

// func dotRowsF16x4AVX512(dst *float32, stride int, n int, q *float32, d int, rows *uint16)
// dst[j·stride + t] = <q[j·d:(j+1)·d], row t> for four queries and n
// fp16 rows of d elements (d a multiple of 32): one pass over the rows
// for the four query heads of a KV head, each dot product summed exactly
// as dotRowsF16AVX2 sums it (four accumulators over 32-element columns,
// HSUM4), so the results are the same bits. The sixteen accumulators are
// Y16-Y31 (EVEX).
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
	TESTQ CX, CX
	JE g4done
g4row:
	VPXORD Y16, Y16, Y16
	VPXORD Y17, Y17, Y17
	VPXORD Y18, Y18, Y18
	VPXORD Y19, Y19, Y19
	VPXORD Y20, Y20, Y20
	VPXORD Y21, Y21, Y21
	VPXORD Y22, Y22, Y22
	VPXORD Y23, Y23, Y23
	VPXORD Y24, Y24, Y24
	VPXORD Y25, Y25, Y25
	VPXORD Y26, Y26, Y26
	VPXORD Y27, Y27, Y27
	VPXORD Y28, Y28, Y28
	VPXORD Y29, Y29, Y29
	VPXORD Y30, Y30, Y30
	VPXORD Y31, Y31, Y31
	XORQ AX, AX
	MOVQ R8, R13
g4col:
	VCVTPH2PS (BX), Y4
	VCVTPH2PS 16(BX), Y5
	VCVTPH2PS 32(BX), Y6
	VCVTPH2PS 48(BX), Y7
	GROUP4(SI, Y16, Y17, Y18, Y19)
	GROUP4(R9, Y20, Y21, Y22, Y23)
	GROUP4(R10, Y24, Y25, Y26, Y27)
	GROUP4(R11, Y28, Y29, Y30, Y31)
	ADDQ $64, BX
	ADDQ $128, AX
	SUBQ $32, R13
	JNE g4col
	STOREDOT(Y16, Y17, Y18, Y19, (DI))
	STOREDOT(Y20, Y21, Y22, Y23, (DI)(DX*1))
	STOREDOT(Y24, Y25, Y26, Y27, (DI)(DX*2))
	STOREDOT(Y28, Y29, Y30, Y31, (DI)(R12*1))
	ADDQ $4, DI
	DECQ CX
	JNE g4row
g4done:
	VZEROUPPER
	RET

// WROW4 adds weight (W)(R12) times the converted row chunk (Y4-Y7) to
// query accumulators A0-A3, B the broadcast register.
#define WROW4(W, B, A0, A1, A2, A3) \
	VBROADCASTSS (W)(R12*1), B; \
	VFMADD231PS Y4, B, A0; \
	VFMADD231PS Y5, B, A1; \
	VFMADD231PS Y6, B, A2; \
	VFMADD231PS Y7, B, A3

// LOADACC/STOREACC move query accumulator chunk P (a pointer in memory,
// at the argument offset) to and from A0-A3.
#define LOADACC(P, A0, A1, A2, A3) \
	MOVQ P, AX; \
	VMOVUPS (AX), A0; \
	VMOVUPS 32(AX), A1; \
	VMOVUPS 64(AX), A2; \
	VMOVUPS 96(AX), A3

#define STOREACC(P, A0, A1, A2, A3) \
	MOVQ P, AX; \
	VMOVUPS A0, (AX); \
	VMOVUPS A1, 32(AX); \
	VMOVUPS A2, 64(AX); \
	VMOVUPS A3, 96(AX)

// func weightedSumF16x4AVX512(a0, a1, a2, a3 *float32, w *float32, wstride int, n int, rows *uint16, rowStride int)
// For one 32-element column chunk: a_j[0:32] += Σ_t w[j·wstride + t]·row t
// (fp16 rows rowStride bytes apart, rows pointing at the chunk) for four
// queries: each row chunk converted once for the four, each sum taken
// in weightedSumF16AVX2's order (one FMA per row into the chunk's four
// accumulators), so the results are the same bits.
TEXT ·weightedSumF16x4AVX512(SB), NOSPLIT, $0-72
	LOADACC(a0+0(FP), Y16, Y17, Y18, Y19)
	LOADACC(a1+8(FP), Y20, Y21, Y22, Y23)
	LOADACC(a2+16(FP), Y24, Y25, Y26, Y27)
	LOADACC(a3+24(FP), Y28, Y29, Y30, Y31)
	MOVQ w+32(FP), SI
	MOVQ wstride+40(FP), DX
	SHLQ $2, DX
	LEAQ (SI)(DX*1), R8
	LEAQ (R8)(DX*1), R9
	LEAQ (R9)(DX*1), R10
	MOVQ n+48(FP), CX
	MOVQ rows+56(FP), R11
	MOVQ rowStride+64(FP), BX
	XORQ R12, R12
	TESTQ CX, CX
	JE ws4done
ws4row:
	VCVTPH2PS (R11), Y4
	VCVTPH2PS 16(R11), Y5
	VCVTPH2PS 32(R11), Y6
	VCVTPH2PS 48(R11), Y7
	WROW4(SI, Y8, Y16, Y17, Y18, Y19)
	WROW4(R8, Y9, Y20, Y21, Y22, Y23)
	WROW4(R9, Y10, Y24, Y25, Y26, Y27)
	WROW4(R10, Y11, Y28, Y29, Y30, Y31)
	ADDQ BX, R11
	ADDQ $4, R12
	DECQ CX
	JNE ws4row
ws4done:
	STOREACC(a0+0(FP), Y16, Y17, Y18, Y19)
	STOREACC(a1+8(FP), Y20, Y21, Y22, Y23)
	STOREACC(a2+16(FP), Y24, Y25, Y26, Y27)
	STOREACC(a3+24(FP), Y28, Y29, Y30, Y31)
	VZEROUPPER
	RET
