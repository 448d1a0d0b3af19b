//go:build amd64 && !purego

#include "textflag.h"

// func expandCodesAVX512(dst *float32, rowLen int, n int, groups int, table *[16]float32, codes *byte, stride int, b int, ctrl *[64]byte)
//
// Expands n scaled codes (fp16 scale, then packed b-bit indices, b ≤ 4)
// into rows scale·table[idx] of groups·16 floats, rowLen floats apart:
// the value side of attention on TurboQuant codes (quant/accumulate.go).
// Per group of 16 indices (2b bytes), VPMULTISHIFTQB picks each lane's
// byte from a broadcast 8-byte load (ctrl as for dotCodesAVX512) and one
// VPERMPS looks the 16 entries up in the replicated table (entry k holds
// centroid k mod 2^b, so the bits above an index need no mask). Each
// code's last group may read up to 7 bytes past its indices; the caller
// keeps that inside codes.
TEXT ·expandCodesAVX512(SB), NOSPLIT, $0-72
	MOVQ      dst+0(FP), DI
	MOVQ      rowLen+8(FP), R8
	SHLQ      $2, R8
	MOVQ      n+16(FP), CX
	MOVQ      groups+24(FP), R9
	MOVQ      table+32(FP), AX
	MOVQ      codes+40(FP), BX
	MOVQ      stride+48(FP), R10
	MOVQ      b+56(FP), DX
	ADDQ      DX, DX
	MOVQ      ctrl+64(FP), SI
	VMOVDQU64 (SI), Z15
	VMOVUPS   (AX), Z13
	TESTQ     CX, CX
	JE        done

code:
	MOVWLZX      (BX), SI
	VMOVD        SI, X5
	VCVTPH2PS    X5, X5
	VBROADCASTSS X5, Z5
	LEAQ         2(BX), R11
	MOVQ         DI, R12
	MOVQ         R9, R13

group:
	VPMULTISHIFTQB.BCST (R11), Z15, Z4
	VPERMPS             Z13, Z4, Z4
	VMULPS              Z5, Z4, Z4
	VMOVUPS             Z4, (R12)
	ADDQ                DX, R11
	ADDQ                $64, R12
	DECQ                R13
	JNE                 group

	ADDQ R8, DI
	ADDQ R10, BX
	DECQ CX
	JNE  code

done:
	VZEROUPPER
	RET
