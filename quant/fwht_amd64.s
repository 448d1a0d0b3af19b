//go:build amd64 && !purego

#include "textflag.h"

// Signs of the in-register butterflies: x·sign + partner gives a+b in the
// lanes that keep the sum and a−b in those that take the difference.
DATA fwhtsigns<>+0(SB)/4, $0x3f800000
DATA fwhtsigns<>+4(SB)/4, $0xbf800000
DATA fwhtsigns<>+8(SB)/4, $0x3f800000
DATA fwhtsigns<>+12(SB)/4, $0xbf800000
DATA fwhtsigns<>+16(SB)/4, $0x3f800000
DATA fwhtsigns<>+20(SB)/4, $0xbf800000
DATA fwhtsigns<>+24(SB)/4, $0x3f800000
DATA fwhtsigns<>+28(SB)/4, $0xbf800000
DATA fwhtsigns<>+32(SB)/4, $0x3f800000
DATA fwhtsigns<>+36(SB)/4, $0x3f800000
DATA fwhtsigns<>+40(SB)/4, $0xbf800000
DATA fwhtsigns<>+44(SB)/4, $0xbf800000
DATA fwhtsigns<>+48(SB)/4, $0x3f800000
DATA fwhtsigns<>+52(SB)/4, $0x3f800000
DATA fwhtsigns<>+56(SB)/4, $0xbf800000
DATA fwhtsigns<>+60(SB)/4, $0xbf800000
DATA fwhtsigns<>+64(SB)/4, $0x3f800000
DATA fwhtsigns<>+68(SB)/4, $0x3f800000
DATA fwhtsigns<>+72(SB)/4, $0x3f800000
DATA fwhtsigns<>+76(SB)/4, $0x3f800000
DATA fwhtsigns<>+80(SB)/4, $0xbf800000
DATA fwhtsigns<>+84(SB)/4, $0xbf800000
DATA fwhtsigns<>+88(SB)/4, $0xbf800000
DATA fwhtsigns<>+92(SB)/4, $0xbf800000
GLOBL fwhtsigns<>(SB), RODATA|NOPTR, $96

// func fwhtAVX2(x *float32, n int)
//
// The unnormalised Walsh–Hadamard transform of x[:n] in place, n a power
// of two ≥ 8: the butterflies of strides 1, 2 and 4 inside each 8-float
// register (partner by VPERMILPS/VPERM2F128, then x·sign + partner, which
// is exactly a+b or a−b), then strides 8, 16, … between registers. Each
// butterfly is the same float32 addition or subtraction as fwhtGo's.
TEXT ·fwhtAVX2(SB), NOSPLIT, $0-16
	MOVQ x+0(FP), DI
	MOVQ n+8(FP), CX
	VMOVUPS fwhtsigns<>+0(SB), Y13  // stride 1
	VMOVUPS fwhtsigns<>+32(SB), Y14 // stride 2
	VMOVUPS fwhtsigns<>+64(SB), Y15 // stride 4

	// strides 1, 2, 4: one register at a time
	MOVQ DI, SI
	MOVQ CX, DX
inreg:
	VMOVUPS (SI), Y0
	VPERMILPS $0xb1, Y0, Y1
	VFMADD213PS Y1, Y13, Y0 // Y0 = Y0·sign1 + Y1
	VPERMILPS $0x4e, Y0, Y1
	VFMADD213PS Y1, Y14, Y0
	VPERM2F128 $0x01, Y0, Y0, Y1
	VFMADD213PS Y1, Y15, Y0
	VMOVUPS Y0, (SI)
	ADDQ $32, SI
	SUBQ $8, DX
	JNZ  inreg

	// strides h = 8, 16, …, n/2 (in bytes: 32, 64, …)
	MOVQ $32, R8       // h in bytes
	MOVQ CX, R9
	SHLQ $2, R9        // n in bytes
stride:
	CMPQ R8, R9
	JGE  done
	MOVQ DI, SI        // block start
block:
	MOVQ SI, R10       // lo
	LEAQ (SI)(R8*1), R11 // hi
	MOVQ R8, DX
pair:
	VMOVUPS (R10), Y0
	VMOVUPS (R11), Y1
	VADDPS  Y1, Y0, Y2
	VSUBPS  Y1, Y0, Y3
	VMOVUPS Y2, (R10)
	VMOVUPS Y3, (R11)
	ADDQ $32, R10
	ADDQ $32, R11
	SUBQ $32, DX
	JNZ  pair
	LEAQ (SI)(R8*2), SI
	LEAQ (DI)(R9*1), R12
	CMPQ SI, R12
	JLT  block
	SHLQ $1, R8
	JMP  stride

done:
	VZEROUPPER
	RET
