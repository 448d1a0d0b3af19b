//go:build amd64 && !purego

#include "textflag.h"
#include "hsum_amd64.h"
#include "multirow_amd64.h"

// The multi-row decode kernel (multirow.go) with AVX-512 VNNI: for each
// weight row, per step of two Q8_0 blocks the 64 quants are loaded once
// (Z0, offset to unsigned by XOR 0x80) with their two scales widened to
// lanes 0-7 and 8-15 (Z1), and each of the pass's nv vectors meets them:
// its lane offsets −128·Σ₄xq start the integer lanes, VPDPBUSD adds the
// four byte products per lane (the exact Σ₄ w·xq), the lanes are
// converted and accumulated with scale dw·dx into the vector's
// accumulator (Z16+v). The vectors of a step lie one after another in the
// pack, multiVecBytes (192) each: quants, offsets, scales.

// VEC adds vector v of the step (at 192v(R9)) to ACC, I and S scratch;
// it leaves the step after the pass's last vector.
#define VEC(v, I, S, ACC) \
	VMOVDQU32 (192*v+64)(R9), I; \
	VPDPBUSD (192*v)(R9), Z0, I; \
	VCVTDQ2PS I, I; \
	VMULPS (192*v+128)(R9), Z1, S; \
	VFMADD231PS S, I, ACC; \
	CMPQ DX, $(v+1); \
	JEQ stepdone

// the VPERMPS indices that spread two scales over lanes 0-7 and 8-15
DATA multiperm<>+0(SB)/4, $0
DATA multiperm<>+4(SB)/4, $0
DATA multiperm<>+8(SB)/4, $0
DATA multiperm<>+12(SB)/4, $0
DATA multiperm<>+16(SB)/4, $0
DATA multiperm<>+20(SB)/4, $0
DATA multiperm<>+24(SB)/4, $0
DATA multiperm<>+28(SB)/4, $0
DATA multiperm<>+32(SB)/4, $1
DATA multiperm<>+36(SB)/4, $1
DATA multiperm<>+40(SB)/4, $1
DATA multiperm<>+44(SB)/4, $1
DATA multiperm<>+48(SB)/4, $1
DATA multiperm<>+52(SB)/4, $1
DATA multiperm<>+56(SB)/4, $1
DATA multiperm<>+60(SB)/4, $1
GLOBL multiperm<>(SB), RODATA|NOPTR, $64

// func dotQ8_0RowsVNNI(w *byte, rowBytes, rows int, x *byte, nv, steps int, out *float32, stride int)
// rows ≥ 1, 1 ≤ nv ≤ 16, steps ≥ 1; out[v·stride + r] for row r, vector v.
TEXT ·dotQ8_0RowsVNNI(SB), NOSPLIT, $0-64
	ARGS(192)
	MOVL $0x80808080, AX
	VPBROADCASTD AX, Z6
	VMOVDQU32 multiperm<>+0(SB), Z7
row:
	ROWSTART
step:
	VMOVDQU 2(SI), Y0
	VINSERTI64X4 $1, 36(SI), Z0, Z0
	VPXORD Z6, Z0, Z0
	MOVWLZX (SI), AX
	MOVWLZX 34(SI), R11
	SHLL $16, R11
	ORL R11, AX
	VMOVD AX, X1
	VCVTPH2PS X1, X1
	VPERMPS Z1, Z7, Z1
	VEC(0, Z2, Z3, Z16)
	VEC(1, Z4, Z5, Z17)
	VEC(2, Z2, Z3, Z18)
	VEC(3, Z4, Z5, Z19)
	VEC(4, Z2, Z3, Z20)
	VEC(5, Z4, Z5, Z21)
	VEC(6, Z2, Z3, Z22)
	VEC(7, Z4, Z5, Z23)
	VEC(8, Z2, Z3, Z24)
	VEC(9, Z4, Z5, Z25)
	VEC(10, Z2, Z3, Z26)
	VEC(11, Z4, Z5, Z27)
	VEC(12, Z2, Z3, Z28)
	VEC(13, Z4, Z5, Z29)
	VEC(14, Z2, Z3, Z30)
	VEC(15, Z4, Z5, Z31)
stepdone:
	ADDQ $68, SI
	STEPEND
	OUTS
rowdone:
	ROWEND

// func multiPackVNNI(dst *byte, qs *int8, d *float32, steps, stride int)
// Packs one vector (multiPack.setVector): per step its 64 quants, the
// lane offsets −128·Σ₄xq (VPDPBUSD of 128s with the quants, negated) and
// the two block scales spread over lanes 0-7 and 8-15; stride bytes from
// one step's vector to the next's. steps ≥ 1.
TEXT ·multiPackVNNI(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ qs+8(FP), SI
	MOVQ d+16(FP), DX
	MOVQ steps+24(FP), CX
	MOVQ stride+32(FP), BX
	MOVL $0x80808080, AX
	VPBROADCASTD AX, Z6
	VMOVDQU32 multiperm<>+0(SB), Z7
	VPXORD Z5, Z5, Z5
pack:
	VMOVDQU64 (SI), Z0
	VMOVDQU64 Z0, (DI)
	VPXORD Z1, Z1, Z1
	VPDPBUSD Z0, Z6, Z1
	VPSUBD Z1, Z5, Z1
	VMOVDQU32 Z1, 64(DI)
	VMOVSD (DX), X3
	VPERMPS Z3, Z7, Z3
	VMOVUPS Z3, 128(DI)
	ADDQ $64, SI
	ADDQ $8, DX
	ADDQ BX, DI
	DECQ CX
	JNZ pack
	VZEROUPPER
	RET
