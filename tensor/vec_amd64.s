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
