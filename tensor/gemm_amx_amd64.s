//go:build linux && !purego

#include "textflag.h"

// The AMX kernels of gemm_amx.go. Go's assembler has no AMX mnemonics, so
// the tile instructions are written out as bytes (VEX-encoded, map 0F38,
// W0), with fixed registers: tile A rows at SI (even block) and AX (odd
// block), DX bytes apart; tile B at DI and DI+512, 64 bytes apart (BX);
// the C tiles stored at CX and CX+1024, 64 bytes apart.
//
//	LDTILECFG (AX)             C4 E2 78 49 00
//	TILERELEASE                C4 E2 78 49 C0
//	TILEZERO tmm0 / tmm3       C4 E2 7B 49 C0 / D8
//	TILELOADD tmm1, (SI)(DX*1) C4 E2 7B 4B 0C 16
//	TILELOADD tmm4, (AX)(DX*1) C4 E2 7B 4B 24 10
//	TILELOADD tmm2, (DI)(BX*1) C4 E2 7B 4B 14 1F
//	TILELOADD tmm5, 512(DI)(BX*1)   C4 E2 7B 4B AC 1F 00 02 00 00
//	TILESTORED (CX)(BX*1), tmm0     C4 E2 7A 4B 04 19
//	TILESTORED 1024(CX)(BX*1), tmm3 C4 E2 7A 4B 9C 19 00 04 00 00
//	TDPBSSD tmm0, tmm1, tmm2   C4 E2 6B 5E C1   (C += A·B, both signed)
//	TDPBSSD tmm3, tmm4, tmm5   C4 E2 53 5E DC
//	TDPBUSD (A unsigned) the same with VEX byte 2 = 69 / 51.
#define LDTILECFG_AX BYTE $0xC4; BYTE $0xE2; BYTE $0x78; BYTE $0x49; BYTE $0x00
#define TILERELEASE BYTE $0xC4; BYTE $0xE2; BYTE $0x78; BYTE $0x49; BYTE $0xC0
#define TILEZERO_C BYTE $0xC4; BYTE $0xE2; BYTE $0x7B; BYTE $0x49; BYTE $0xC0; BYTE $0xC4; BYTE $0xE2; BYTE $0x7B; BYTE $0x49; BYTE $0xD8
#define TILELOAD_A0 BYTE $0xC4; BYTE $0xE2; BYTE $0x7B; BYTE $0x4B; BYTE $0x0C; BYTE $0x16
#define TILELOAD_A1 BYTE $0xC4; BYTE $0xE2; BYTE $0x7B; BYTE $0x4B; BYTE $0x24; BYTE $0x10
#define TILELOAD_B0 BYTE $0xC4; BYTE $0xE2; BYTE $0x7B; BYTE $0x4B; BYTE $0x14; BYTE $0x1F
#define TILELOAD_B1 BYTE $0xC4; BYTE $0xE2; BYTE $0x7B; BYTE $0x4B; BYTE $0xAC; BYTE $0x1F; BYTE $0x00; BYTE $0x02; BYTE $0x00; BYTE $0x00
#define TILESTORE_C0 BYTE $0xC4; BYTE $0xE2; BYTE $0x7A; BYTE $0x4B; BYTE $0x04; BYTE $0x19
#define TILESTORE_C1 BYTE $0xC4; BYTE $0xE2; BYTE $0x7A; BYTE $0x4B; BYTE $0x9C; BYTE $0x19; BYTE $0x00; BYTE $0x04; BYTE $0x00; BYTE $0x00
#define TDPBSSD_C0 BYTE $0xC4; BYTE $0xE2; BYTE $0x6B; BYTE $0x5E; BYTE $0xC1
#define TDPBSSD_C1 BYTE $0xC4; BYTE $0xE2; BYTE $0x53; BYTE $0x5E; BYTE $0xDC
#define TDPBUSD_C0 BYTE $0xC4; BYTE $0xE2; BYTE $0x69; BYTE $0x5E; BYTE $0xC1
#define TDPBUSD_C1 BYTE $0xC4; BYTE $0xE2; BYTE $0x51; BYTE $0x5E; BYTE $0xDC

// ROW8 adds row m of the stored C tile at off(CX), converted, times the
// block's activation scales (Z16) and the row's weight scale, to Z.
#define ROW8(off, m, Z) \
	VCVTDQ2PS (off+64*m)(CX), Z18; \
	VMULPS Z16, Z18, Z18; \
	VFMADD231PS.BCST (off/16+4*m)(R8), Z18, Z

// ROWK is ROW8 plus the row's min times the block's min terms (Z17).
#define ROWK(off, m, Z) \
	ROW8(off, m, Z); \
	VFMADD231PS.BCST (off/16+4*m)(R9), Z17, Z

#define SCALE8(off) \
	VMOVUPS (off/16)(R10), Z16; \
	ROW8(off, 0, Z0); ROW8(off, 1, Z1); ROW8(off, 2, Z2); ROW8(off, 3, Z3); \
	ROW8(off, 4, Z4); ROW8(off, 5, Z5); ROW8(off, 6, Z6); ROW8(off, 7, Z7); \
	ROW8(off, 8, Z8); ROW8(off, 9, Z9); ROW8(off, 10, Z10); ROW8(off, 11, Z11); \
	ROW8(off, 12, Z12); ROW8(off, 13, Z13); ROW8(off, 14, Z14); ROW8(off, 15, Z15)

#define SCALEK(off) \
	VMOVUPS (off/16)(R10), Z16; \
	VMOVUPS (off/16)(R11), Z17; \
	ROWK(off, 0, Z0); ROWK(off, 1, Z1); ROWK(off, 2, Z2); ROWK(off, 3, Z3); \
	ROWK(off, 4, Z4); ROWK(off, 5, Z5); ROWK(off, 6, Z6); ROWK(off, 7, Z7); \
	ROWK(off, 8, Z8); ROWK(off, 9, Z9); ROWK(off, 10, Z10); ROWK(off, 11, Z11); \
	ROWK(off, 12, Z12); ROWK(off, 13, Z13); ROWK(off, 14, Z14); ROWK(off, 15, Z15)

// START loads the tile configuration and the fixed registers.
#define START \
	MOVQ cfg+0(FP), AX; \
	LDTILECFG_AX; \
	MOVQ stride+16(FP), DX; \
	MOVQ xb+48(FP), DI; \
	MOVQ $64, BX; \
	MOVQ tmp+88(FP), CX; \
	MOVQ dx+56(FP), R10; \
	MOVQ xs+64(FP), R11; \
	MOVQ step+24(FP), R13; \
	SHLQ $1, R13

// GROUP starts a group: the panel's first block, scales and mins, zero
// accumulators, R12 the count of block pairs.
#define GROUP \
	MOVQ a+8(FP), SI; \
	MOVQ SI, AX; \
	ADDQ step+24(FP), AX; \
	MOVQ dw+32(FP), R8; \
	MOVQ mw+40(FP), R9; \
	MOVQ blocks+72(FP), R12; \
	SHRQ $1, R12; \
	VPXORD Z0, Z0, Z0; VPXORD Z1, Z1, Z1; VPXORD Z2, Z2, Z2; VPXORD Z3, Z3, Z3; \
	VPXORD Z4, Z4, Z4; VPXORD Z5, Z5, Z5; VPXORD Z6, Z6, Z6; VPXORD Z7, Z7, Z7; \
	VPXORD Z8, Z8, Z8; VPXORD Z9, Z9, Z9; VPXORD Z10, Z10, Z10; VPXORD Z11, Z11, Z11; \
	VPXORD Z12, Z12, Z12; VPXORD Z13, Z13, Z13; VPXORD Z14, Z14, Z14; VPXORD Z15, Z15, Z15

// LOADS zeroes the C tiles and loads both blocks' A and B tiles.
#define LOADS \
	TILEZERO_C; \
	TILELOAD_A0; \
	TILELOAD_B0; \
	TILELOAD_A1; \
	TILELOAD_B1

// NEXT moves to the next pair of blocks.
#define NEXT \
	ADDQ R13, SI; \
	ADDQ R13, AX; \
	ADDQ $1024, DI; \
	ADDQ $128, R8; \
	ADDQ $128, R9; \
	ADDQ $128, R10; \
	ADDQ $128, R11

// DONE stores the group's results and moves out to the next group.
#define DONE \
	MOVQ out+96(FP), R12; \
	VMOVUPS Z0, 0(R12); VMOVUPS Z1, 64(R12); VMOVUPS Z2, 128(R12); VMOVUPS Z3, 192(R12); \
	VMOVUPS Z4, 256(R12); VMOVUPS Z5, 320(R12); VMOVUPS Z6, 384(R12); VMOVUPS Z7, 448(R12); \
	VMOVUPS Z8, 512(R12); VMOVUPS Z9, 576(R12); VMOVUPS Z10, 640(R12); VMOVUPS Z11, 704(R12); \
	VMOVUPS Z12, 768(R12); VMOVUPS Z13, 832(R12); VMOVUPS Z14, 896(R12); VMOVUPS Z15, 960(R12); \
	ADDQ $1024, R12; \
	MOVQ R12, out+96(FP)

// func amxDotQ8(cfg *[64]byte, a *byte, stride, step int, dw, mw *float32, xb *int8, dx, xs *float32, blocks, groups int, tmp *int32, out *float32)
TEXT ·amxDotQ8(SB), NOSPLIT, $0-104
	START
q8group:
	GROUP
q8pair:
	LOADS
	TDPBSSD_C0
	TDPBSSD_C1
	TILESTORE_C0
	TILESTORE_C1
	SCALE8(0)
	SCALE8(1024)
	NEXT
	DECQ R12
	JNZ q8pair
	DONE
	DECQ groups+80(FP)
	JNZ q8group
	TILERELEASE
	VZEROUPPER
	RET

// func amxDotQ4K(cfg *[64]byte, a *byte, stride, step int, dw, mw *float32, xb *int8, dx, xs *float32, blocks, groups int, tmp *int32, out *float32)
TEXT ·amxDotQ4K(SB), NOSPLIT, $0-104
	START
q4kgroup:
	GROUP
q4kpair:
	LOADS
	TDPBUSD_C0
	TDPBUSD_C1
	TILESTORE_C0
	TILESTORE_C1
	SCALEK(0)
	SCALEK(1024)
	NEXT
	DECQ R12
	JNZ q4kpair
	DONE
	DECQ groups+80(FP)
	JNZ q4kgroup
	TILERELEASE
	VZEROUPPER
	RET

// The Q6_K kernel's own tile instructions: the hi tile tmm1 at (SI) and
// the lo tile tmm4 at 1024(SI), 64-byte rows (BX); the lo sums tmm3 from
// tmm4 and the activation tile tmm2.
//
//	TILELOADD tmm1, (SI)(BX*1)       C4 E2 7B 4B 0C 1E
//	TILELOADD tmm4, 1024(SI)(BX*1)   C4 E2 7B 4B A4 1E 00 04 00 00
//	TDPBSSD tmm3, tmm4, tmm2         C4 E2 6B 5E DC
#define TILELOAD_HI BYTE $0xC4; BYTE $0xE2; BYTE $0x7B; BYTE $0x4B; BYTE $0x0C; BYTE $0x1E
#define TILELOAD_LO BYTE $0xC4; BYTE $0xE2; BYTE $0x7B; BYTE $0x4B; BYTE $0xA4; BYTE $0x1E; BYTE $0x00; BYTE $0x04; BYTE $0x00; BYTE $0x00
#define TDPBSSD_LO BYTE $0xC4; BYTE $0xE2; BYTE $0x6B; BYTE $0x5E; BYTE $0xDC

// Q6TILES adds a 64-element chunk: hi and lo tiles (SI) against the
// activation tile (DI), then moves both on.
#define Q6TILES \
	TILELOAD_HI; \
	TILELOAD_LO; \
	TILELOAD_B0; \
	TDPBSSD_C0; \
	TDPBSSD_LO; \
	ADDQ $2048, SI; \
	ADDQ $1024, DI

// ROWQ6 adds row m of the stored sums (hi at CX, lo at 1024(CX)):
// 64·hi + lo, converted, times dx (Z16), times the row's d (R8), to Z.
#define ROWQ6(m, Z) \
	VMOVDQU32 (64*m)(CX), Z18; \
	VPSLLD $6, Z18, Z18; \
	VPADDD (1024+64*m)(CX), Z18, Z18; \
	VCVTDQ2PS Z18, Z18; \
	VMULPS Z16, Z18, Z18; \
	VFMADD231PS.BCST (4*m)(R8), Z18, Z

// func amxDotQ6K(cfg *[64]byte, a *byte, dw *float32, xb *int8, dx *float32, supers, groups int, tmp *int32, out *float32)
TEXT ·amxDotQ6K(SB), NOSPLIT, $0-72
	MOVQ cfg+0(FP), AX
	LDTILECFG_AX
	MOVQ xb+24(FP), DI
	MOVQ dx+32(FP), R10
	MOVQ tmp+56(FP), CX
	MOVQ $64, BX
q6group:
	MOVQ a+8(FP), SI
	MOVQ dw+16(FP), R8
	MOVQ supers+40(FP), R12
	VPXORD Z0, Z0, Z0; VPXORD Z1, Z1, Z1; VPXORD Z2, Z2, Z2; VPXORD Z3, Z3, Z3
	VPXORD Z4, Z4, Z4; VPXORD Z5, Z5, Z5; VPXORD Z6, Z6, Z6; VPXORD Z7, Z7, Z7
	VPXORD Z8, Z8, Z8; VPXORD Z9, Z9, Z9; VPXORD Z10, Z10, Z10; VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12; VPXORD Z13, Z13, Z13; VPXORD Z14, Z14, Z14; VPXORD Z15, Z15, Z15
q6super:
	TILEZERO_C
	Q6TILES
	Q6TILES
	Q6TILES
	Q6TILES
	TILESTORE_C0
	TILESTORE_C1
	VMOVUPS (R10), Z16
	ROWQ6(0, Z0); ROWQ6(1, Z1); ROWQ6(2, Z2); ROWQ6(3, Z3)
	ROWQ6(4, Z4); ROWQ6(5, Z5); ROWQ6(6, Z6); ROWQ6(7, Z7)
	ROWQ6(8, Z8); ROWQ6(9, Z9); ROWQ6(10, Z10); ROWQ6(11, Z11)
	ROWQ6(12, Z12); ROWQ6(13, Z13); ROWQ6(14, Z14); ROWQ6(15, Z15)
	ADDQ $64, R8
	ADDQ $256, R10
	DECQ R12
	JNZ q6super
	MOVQ out+64(FP), R12
	VMOVUPS Z0, 0(R12); VMOVUPS Z1, 64(R12); VMOVUPS Z2, 128(R12); VMOVUPS Z3, 192(R12)
	VMOVUPS Z4, 256(R12); VMOVUPS Z5, 320(R12); VMOVUPS Z6, 384(R12); VMOVUPS Z7, 448(R12)
	VMOVUPS Z8, 512(R12); VMOVUPS Z9, 576(R12); VMOVUPS Z10, 640(R12); VMOVUPS Z11, 704(R12)
	VMOVUPS Z12, 768(R12); VMOVUPS Z13, 832(R12); VMOVUPS Z14, 896(R12); VMOVUPS Z15, 960(R12)
	ADDQ $1024, R12
	MOVQ R12, out+64(FP)
	DECQ groups+48(FP)
	JNZ q6group
	TILERELEASE
	VZEROUPPER
	RET
