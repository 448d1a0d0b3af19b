//go:build amd64 && !purego

#include "textflag.h"

// Scoring packed b-bit indices against a rotated query (ALGORITHMS.md §6):
// each group of 8 coordinates occupies b bytes; a 4-byte load broadcast
// to 8 lanes, shifted per lane by j·b and masked, yields the 8 indices;
// VPERMPS looks them up in the codebook held in a register (two registers
// and a blend for 16 entries), and an FMA with the query accumulates.
// Four groups per iteration feed four independent accumulators.

#define GROUP8(off, qoff, T, ACC) \
	VPBROADCASTD off(R11), T; \
	VPSRLVD Y15, T, T; \
	VPAND Y14, T, T; \
	VPERMPS Y13, T, T; \
	VFMADD231PS qoff(R12), T, ACC

#define GROUP16(off, qoff, T, U, ACC) \
	VPBROADCASTD off(R11), T; \
	VPSRLVD Y15, T, T; \
	VPAND Y14, T, T; \
	VPERMPS Y13, T, U; \
	VPERMPS Y12, T, Y11; \
	VPSLLD $28, T, T; \
	VBLENDVPS T, Y11, U, U; \
	VFMADD231PS qoff(R12), U, ACC

#define HSUM_STORE \
	VADDPS Y1, Y0, Y0; \
	VADDPS Y3, Y2, Y2; \
	VADDPS Y2, Y0, Y0; \
	VEXTRACTF128 $1, Y0, X1; \
	VADDPS X1, X0, X0; \
	VMOVHLPS X0, X0, X1; \
	VADDPS X1, X0, X0; \
	VPSHUFD $1, X0, X1; \
	VADDSS X1, X0, X0; \
	VMOVSS X0, (DI)

#define LOAD_ARGS \
	MOVQ dst+0(FP), DI; \
	MOVQ n+8(FP), CX; \
	MOVQ q+16(FP), SI; \
	MOVQ groups+24(FP), R8; \
	MOVQ table+32(FP), AX; \
	MOVQ codes+40(FP), BX; \
	MOVQ stride+48(FP), R9; \
	MOVQ b+56(FP), R10; \
	MOVQ shifts+64(FP), DX; \
	VMOVUPS (AX), Y13; \
	VMOVUPS 32(AX), Y12; \
	VMOVDQU (DX), Y15; \
	VPBROADCASTD mask+72(FP), Y14

// func dotCodes8AVX2(dst *float32, n int, q *float32, groups int, table *[16]float32, codes *byte, stride int, b int, shifts *[8]uint32, mask uint32)
TEXT ·dotCodes8AVX2(SB), NOSPLIT, $0-76
	LOAD_ARGS
	TESTQ CX, CX
	JE    done8

key8:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	MOVQ   BX, R11
	MOVQ   SI, R12
	MOVQ   R8, R13

group8:
	GROUP8(0, 0, Y4, Y0)
	ADDQ R10, R11
	GROUP8(0, 32, Y5, Y1)
	ADDQ R10, R11
	GROUP8(0, 64, Y6, Y2)
	ADDQ R10, R11
	GROUP8(0, 96, Y7, Y3)
	ADDQ R10, R11
	ADDQ $128, R12
	SUBQ $4, R13
	JNE  group8

	HSUM_STORE
	ADDQ $4, DI
	ADDQ R9, BX
	DECQ CX
	JNE  key8

done8:
	VZEROUPPER
	RET

// func dotCodes16AVX2(dst *float32, n int, q *float32, groups int, table *[16]float32, codes *byte, stride int, b int, shifts *[8]uint32, mask uint32)
TEXT ·dotCodes16AVX2(SB), NOSPLIT, $0-76
	LOAD_ARGS
	TESTQ CX, CX
	JE    done16

key16:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	MOVQ   BX, R11
	MOVQ   SI, R12
	MOVQ   R8, R13

group16:
	GROUP16(0, 0, Y4, Y5, Y0)
	GROUP16(4, 32, Y6, Y7, Y1)
	GROUP16(8, 64, Y8, Y9, Y2)
	GROUP16(12, 96, Y4, Y5, Y3)
	ADDQ $16, R11
	ADDQ $128, R12
	SUBQ $4, R13
	JNE  group16

	HSUM_STORE
	ADDQ $4, DI
	ADDQ R9, BX
	DECQ CX
	JNE  key16

done16:
	VZEROUPPER
	RET

// func dotRowsAVX2(dst *float32, n int, q *float32, d int, keys *float32)
// The fp32 baseline: dst[i] = <q, keys[i·d : (i+1)·d]>, d a multiple of 32.
TEXT ·dotRowsAVX2(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ n+8(FP), CX
	MOVQ q+16(FP), SI
	MOVQ d+24(FP), R8
	MOVQ keys+32(FP), BX
	TESTQ CX, CX
	JE    doneRows

keyRows:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	MOVQ   SI, R12
	MOVQ   R8, R13

rows:
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
	JNE         rows

	HSUM_STORE
	ADDQ $4, DI
	DECQ CX
	JNE  keyRows

doneRows:
	VZEROUPPER
	RET
