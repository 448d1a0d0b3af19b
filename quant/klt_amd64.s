//go:build amd64 && !purego

#include "textflag.h"

// The KLT lane kernels: eight codes (stride bytes apart) in the lanes of
// a ymm register, their fields in order, segment by segment (kltSeg, 80
// bytes: off, kind at 0 and 4, bits at 8, shift at 16, n at 24, the
// levels table at 32, the mode at 40, the mask repeated eight times at
// 48), two blocks
// of eight codes a pass. Each pass first transposes each block's codes
// into scratch (YTRANS: 32 bytes a dword of the codes); a segment whose
// off is not negative then loads its window, the 4 bytes at off of each
// of the eight codes, from there (two plain loads of a dword and the
// next and two shifts, WINPOS(5) and YWINLOAD), shifted to the segment's
// first field. Each field is then
// Y12 & mask, Y12 shifted on by bits, and its level looked up in the
// run's table: one permute of 8 entries (kind 0), two and a blend of 16
// (kind 1), four and three blends of 32 (kind 2), or a gather (kinds 3
// and 4).
// The transpose may read up to 3 bytes past the last code's index bytes
// (the caller keeps that inside the codes).
//
// Trellis-coded fields (kltSeg's modes, klt_tcq.go) are read the same way
// and their entry is then 2u ⊕ X[s], s the lane's state, moved on to
// 2s | (u&1): one permute of X by the state and a few integer ops a
// field. The AVX2 kernels keep the states of blocks A and B and X in
// their frame (0, 32 and 64(SP)): every ymm register is taken.

// kltdw: the byte offsets of the dwords of 16 bytes.
DATA kltdw<>+0(SB)/4, $0
DATA kltdw<>+4(SB)/4, $4
DATA kltdw<>+8(SB)/4, $8
DATA kltdw<>+12(SB)/4, $12
GLOBL kltdw<>(SB), RODATA|NOPTR, $16

// YTRANS(lloop, lmask, ltr) transposes the eight codes at BX (CX the
// stride) into the scratch at R13: dword d of the eight codes goes to the
// 32 bytes at R13 + 32·d, 16 bytes of each code at a time (the low half
// of a ymm codes 0–3, the high half 4–7). A chunk's loads are plain
// while they end at most 3 bytes past the code's bytes, else masked by
// dword (VPMASKMOVD: a dword is read if it starts inside the code, so
// nothing more than 3 bytes past it; the others are zero). AX, BX, R13,
// R14 and Y0–Y8, Y15 scratch.
#define YTRANS(lloop, lmask, ltr) \
	MOVQ        CX, R14; \
lloop: \
	MOVQ        BX, AX; \
	CMPQ        R14, $13; \
	JLT         lmask; \
	VMOVDQU     (AX), X0; \
	VINSERTI128 $1, (AX)(CX*4), Y0, Y0; \
	ADDQ        CX, AX; \
	VMOVDQU     (AX), X1; \
	VINSERTI128 $1, (AX)(CX*4), Y1, Y1; \
	ADDQ        CX, AX; \
	VMOVDQU     (AX), X2; \
	VINSERTI128 $1, (AX)(CX*4), Y2, Y2; \
	ADDQ        CX, AX; \
	VMOVDQU     (AX), X3; \
	VINSERTI128 $1, (AX)(CX*4), Y3, Y3; \
	JMP         ltr; \
lmask: \
	VMOVQ        R14, X15; \
	VPBROADCASTD X15, X15; \
	VPCMPGTD     kltdw<>(SB), X15, X15; \
	VPMASKMOVD   (AX), X15, X0; \
	VPMASKMOVD   (AX)(CX*4), X15, X4; \
	VINSERTI128  $1, X4, Y0, Y0; \
	ADDQ         CX, AX; \
	VPMASKMOVD   (AX), X15, X1; \
	VPMASKMOVD   (AX)(CX*4), X15, X4; \
	VINSERTI128  $1, X4, Y1, Y1; \
	ADDQ         CX, AX; \
	VPMASKMOVD   (AX), X15, X2; \
	VPMASKMOVD   (AX)(CX*4), X15, X4; \
	VINSERTI128  $1, X4, Y2, Y2; \
	ADDQ         CX, AX; \
	VPMASKMOVD   (AX), X15, X3; \
	VPMASKMOVD   (AX)(CX*4), X15, X4; \
	VINSERTI128  $1, X4, Y3, Y3; \
ltr: \
	VPUNPCKLDQ  Y1, Y0, Y4; \
	VPUNPCKHDQ  Y1, Y0, Y5; \
	VPUNPCKLDQ  Y3, Y2, Y6; \
	VPUNPCKHDQ  Y3, Y2, Y7; \
	VPUNPCKLQDQ Y6, Y4, Y8; \
	VMOVDQU     Y8, 0(R13); \
	VPUNPCKHQDQ Y6, Y4, Y8; \
	VMOVDQU     Y8, 32(R13); \
	VPUNPCKLQDQ Y7, Y5, Y8; \
	VMOVDQU     Y8, 64(R13); \
	VPUNPCKHQDQ Y7, Y5, Y8; \
	VMOVDQU     Y8, 96(R13); \
	ADDQ        $128, R13; \
	ADDQ        $16, BX; \
	SUBQ        $16, R14; \
	JGT         lloop

// WINPOS(lg) leaves, for segment R11 with a window (its off in AX), the
// offset of the window's first dword in the transposed codes (1<<lg
// bytes a dword: 32 for the AVX2 kernels' eight codes, 64 for the
// AVX-512 ones' sixteen) in BX and the shifts that take its bits from
// that dword and the next to the segment's first field in X13 (right)
// and X14 (left); AX, CX scratch.
#define WINPOS(lg) \
	SHLQ  $3, AX; \
	ADDQ  16(R11), AX; \
	MOVQ  AX, BX; \
	ANDQ  $31, AX; \
	SHRQ  $5, BX; \
	SHLQ  $lg, BX; \
	VMOVQ AX, X13; \
	MOVL  $32, CX; \
	SUBQ  AX, CX; \
	VMOVQ CX, X14

// YWINLOAD(y) sets y to the eight codes' window at BX in the transposed
// codes (WINPOS(5)), shifted to its first field; Y15 scratch.
#define YWINLOAD(y) \
	VMOVDQU (BX), y; \
	VPSRLD  X13, y, y; \
	VMOVDQU 32(BX), Y15; \
	VPSLLD  X14, Y15, Y15; \
	VPOR    Y15, y, y

// KLTNEXT leaves the indices of the next field of segment R11 in Y5 and
// moves Y12 on to the one after it.
#define KLTNEXT \
	VPAND  48(R11), Y12, Y5; \
	VPSRLD 8(R11), Y12, Y12

// KLTNEXTB is KLTNEXT for block B's window in Y4.
#define KLTNEXTB \
	VPAND  48(R11), Y4, Y5; \
	VPSRLD 8(R11), Y4, Y4

// TNEXT(win, so) is KLTNEXT for a trellis-coded field of window win, its
// lanes' states at so(SP) and X at 64(SP): Y5 the field's entry 2u ⊕
// X[s], the states moved on to 2s | (u&1); Y7, Y13, Y14 scratch.
#define TNEXT(win, so) \
	VPAND   48(R11), win, Y5; \
	VPSRLD  8(R11), win, win; \
	VMOVDQU so(SP), Y7; \
	VPERMD  64(SP), Y7, Y13; \
	VPADDD  Y7, Y7, Y7; \
	VPSLLD  $31, Y5, Y14; \
	VPSRLD  $31, Y14, Y14; \
	VPOR    Y14, Y7, Y7; \
	VMOVDQU Y7, so(SP); \
	VPADDD  Y5, Y5, Y5; \
	VPXOR   Y13, Y5, Y5

#define TNEXTA TNEXT(Y12, 0)

#define TNEXTB TNEXT(Y4, 32)

// TSTART(win, so) moves the lanes' states at so(SP) on by the path bit
// of window win's first field (a segment of mode kltStart); Y7, Y14
// scratch.
#define TSTART(win, so) \
	VMOVDQU so(SP), Y7; \
	VPADDD  Y7, Y7, Y7; \
	VPSLLD  $31, win, Y14; \
	VPSRLD  $31, Y14, Y14; \
	VPOR    Y14, Y7, Y7; \
	VMOVDQU Y7, so(SP)

// TSTARTS is a kltStart segment for both blocks' states, and keeps its X
// (at R14) at 64(SP).
#define TSTARTS \
	TSTART(Y12, 0); \
	TSTART(Y4, 32); \
	VMOVDQU (R14), Y7; \
	VMOVDQU Y7, 64(SP)

// TZERO sets both blocks' states to 0.
#define TZERO \
	VPXOR   Y7, Y7, Y7; \
	VMOVDQU Y7, 0(SP); \
	VMOVDQU Y7, 32(SP)

// The lookups of the levels of Y5 from the table at R14 into Y6 (Y7,
// Y13, Y14 scratch).
#define LOOK8 \
	VPERMPS (R14), Y5, Y6

#define LOOK16 \
	VPERMPS   (R14), Y5, Y6; \
	VPERMPS   32(R14), Y5, Y7; \
	VPSLLD    $28, Y5, Y13; \
	VBLENDVPS Y13, Y7, Y6, Y6

#define LOOK32 \
	VPERMPS   (R14), Y5, Y6; \
	VPERMPS   32(R14), Y5, Y7; \
	VPSLLD    $28, Y5, Y13; \
	VBLENDVPS Y13, Y7, Y6, Y6; \
	VPERMPS   64(R14), Y5, Y7; \
	VPERMPS   96(R14), Y5, Y14; \
	VBLENDVPS Y13, Y14, Y7, Y7; \
	VPSLLD    $27, Y5, Y13; \
	VBLENDVPS Y13, Y7, Y6, Y6

#define LOOKG \
	VPCMPEQD   Y13, Y13, Y13; \
	VXORPS     Y6, Y6, Y6; \
	VGATHERDPS Y13, (R14)(Y5*4), Y6

// KLTQ4(a0, a1, a2, a3, b0, b1, b2, b3) adds Y15 times the four
// queries' floats at R13 to a0–a3 and Y6 times them to b0–b3 (one
// broadcast for both blocks), and moves R13 to the next field's.
#define KLTQ4(a0, a1, a2, a3, b0, b1, b2, b3) \
	VBROADCASTSS 0(R13), Y14; \
	VFMADD231PS  Y14, Y15, a0; \
	VFMADD231PS  Y14, Y6, b0; \
	VBROADCASTSS 4(R13), Y14; \
	VFMADD231PS  Y14, Y15, a1; \
	VFMADD231PS  Y14, Y6, b1; \
	VBROADCASTSS 8(R13), Y14; \
	VFMADD231PS  Y14, Y15, a2; \
	VFMADD231PS  Y14, Y6, b2; \
	VBROADCASTSS 12(R13), Y14; \
	VFMADD231PS  Y14, Y15, a3; \
	VFMADD231PS  Y14, Y6, b3; \
	ADDQ         $16, R13

// SFIELDS(NA, NB, LOOK, lloop) scores the CX fields of the segment, read
// by NA and NB (KLTNEXT and KLTNEXTB, or TNEXTA and TNEXTB), with lookup
// LOOK for the two blocks (A's window in Y12, B's in Y4) into their sums
// (Y0–Y3, Y8–Y11).
#define SFIELDS(NA, NB, LOOK, lloop) \
lloop: \
	NA; \
	LOOK; \
	VMOVAPS Y6, Y15; \
	NB; \
	LOOK; \
	KLTQ4(Y0, Y1, Y2, Y3, Y8, Y9, Y10, Y11); \
	DECQ CX; \
	JNZ  lloop; \
	JMP  snext

// KINDS(FIELDS, NA, NB, L8, L16, L32, L64, LG, l8, c16, l16, c32, l32, c64, l64, cg, lg)
// runs FIELDS (SFIELDS, AFIELDS, ZSFIELDS or ZAFIELDS) with NA, NB and
// the lookup of the segment's kind (L8 to LG), the labels its own (cg
// is kinds 0 and 1: AX −2 or −1 there).
#define KINDS(FIELDS, NA, NB, L8, L16, L32, L64, LG, l8, c16, l16, c32, l32, c64, l64, cg, lg) \
	MOVL 4(R11), AX; \
	SUBL $2, AX; \
	JLT  cg; \
	JEQ  c32; \
	DECL AX; \
	JEQ  c64; \
	FIELDS(NA, NB, LG, lg); \
cg: \
	INCL AX; \
	JZ   c16; \
	FIELDS(NA, NB, L8, l8); \
c16: \
	FIELDS(NA, NB, L16, l16); \
c32: \
	FIELDS(NA, NB, L32, l32); \
c64: \
	FIELDS(NA, NB, L64, l64)

// SEGMENT(FIELDS, NA, NB, TA, TB, SEG, L8, L16, L32, L64, LG, START) runs
// FIELDS on segment R11 by its mode: scalar fields read by NA and NB,
// trellis-coded ones by TA and TB, after SEG (the segment's registers)
// and with the lookups of KINDS, or a kltStart segment (START); then on
// to the label after it. Labels are the function's: once per kernel.
#define SEGMENT(FIELDS, NA, NB, TA, TB, SEG, L8, L16, L32, L64, LG, START) \
	MOVQ 24(R11), CX; \
	MOVQ 32(R11), R14; \
	MOVQ 40(R11), AX; \
	CMPQ AX, $1; \
	JEQ  trellis; \
	JGT  start; \
	SEG; \
	KINDS(FIELDS, NA, NB, L8, L16, L32, L64, LG, s8loop, s16, s16loop, s32, s32loop, s64, s64loop, sg, sgloop); \
trellis: \
	SEG; \
	KINDS(FIELDS, TA, TB, L8, L16, L32, L64, LG, t8loop, t16, t16loop, t32, t32loop, t64, t64loop, tg, tgloop); \
start: \
	START

// NOSEG: the AVX2 kernels read a segment from memory.
#define NOSEG

// func kltScore4AVX2(dst *float32, blocks int, codes *byte, stride int, segs *kltSeg, nsegs int, q *float32, tr *byte)
//
// For each block of eight codes, the four sums Σ_f q[4f+j]·level_f (j <
// 4, q the four queries interleaved per field) are stored at dst, 32
// floats per block: query 0's eight codes, then 1's, 2's, 3's. Two
// blocks a pass (A, then B 8·stride bytes on; an odd last block's pass
// takes it as both and stores A's sums only).
TEXT ·kltScore4AVX2(SB), NOSPLIT, $96-64
	MOVQ    dst+0(FP), DI
	MOVQ    blocks+8(FP), R8
	MOVQ    codes+16(FP), SI
	MOVQ    stride+24(FP), DX
	MOVQ    tr+56(FP), R10
	ADDQ    $31, R10
	ANDQ    $-32, R10 // block A's transposed codes, 32-byte aligned
	LEAQ    15(DX), R9
	SHRQ    $4, R9
	SHLQ    $7, R9
	ADDQ    $32, R9 // the offset of block B's
	SHLQ    $3, DX // the offset of block B

spair:
	MOVQ    SI, BX
	MOVQ    stride+24(FP), CX
	MOVQ    R10, R13
	YTRANS(stA, stAmask, stAtr)
	MOVQ    R9, R15
	CMPQ    R8, $1
	JNE     stB
	XORQ    R15, R15 // B is A
	JMP     sfull

stB:
	LEAQ    (SI)(DX*1), BX
	MOVQ    stride+24(FP), CX
	LEAQ    (R10)(R9*1), R13
	YTRANS(stBl, stBmask, stBtr)

sfull:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	TZERO
	MOVQ   segs+32(FP), R11
	MOVQ   nsegs+40(FP), R12
	MOVQ   q+48(FP), R13

sseg:
	MOVLQSX 0(R11), AX
	TESTQ   AX, AX
	JS      skeep
	WINPOS(5)
	ADDQ    R10, BX
	YWINLOAD(Y12)
	ADDQ    R15, BX
	YWINLOAD(Y4)

skeep:
	SEGMENT(SFIELDS, KLTNEXT, KLTNEXTB, TNEXTA, TNEXTB, NOSEG, LOOK8, LOOK16, LOOK32, LOOKG, LOOKG, TSTARTS)

snext:
	ADDQ $80, R11
	DECQ R12
	JNZ  sseg

	VMOVUPS Y0, 0(DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	CMPQ    R8, $1
	JEQ     sdone
	VMOVUPS Y8, 128(DI)
	VMOVUPS Y9, 160(DI)
	VMOVUPS Y10, 192(DI)
	VMOVUPS Y11, 224(DI)
	ADDQ    $256, DI
	LEAQ    (SI)(DX*2), SI
	SUBQ    $2, R8
	JGT     spair

sdone:
	VZEROUPPER
	RET

// KLTACC8 adds Y8 times the four heads' weights of block A (Y0–Y3) and
// Y6 times those of block B (at 128(R15)) to their sums at R13 from the
// bases R8, R9, R10, DI, and moves R13 to the next field's.
#define KLTACC8 \
	VMOVUPS     (R8)(R13*1), Y14; \
	VFMADD231PS Y0, Y8, Y14; \
	VFMADD231PS 128(R15), Y6, Y14; \
	VMOVUPS     Y14, (R8)(R13*1); \
	VMOVUPS     (R9)(R13*1), Y14; \
	VFMADD231PS Y1, Y8, Y14; \
	VFMADD231PS 160(R15), Y6, Y14; \
	VMOVUPS     Y14, (R9)(R13*1); \
	VMOVUPS     (R10)(R13*1), Y14; \
	VFMADD231PS Y2, Y8, Y14; \
	VFMADD231PS 192(R15), Y6, Y14; \
	VMOVUPS     Y14, (R10)(R13*1); \
	VMOVUPS     (DI)(R13*1), Y14; \
	VFMADD231PS Y3, Y8, Y14; \
	VFMADD231PS 224(R15), Y6, Y14; \
	VMOVUPS     Y14, (DI)(R13*1); \
	ADDQ        $32, R13

// AFIELDS(NA, NB, LOOK, lloop) sums the CX fields of the segment, read by
// NA and NB as in SFIELDS, with lookup LOOK for the two blocks: A's
// window in Y12, B's in Y4.
#define AFIELDS(NA, NB, LOOK, lloop) \
lloop: \
	NA; \
	LOOK; \
	VMOVAPS Y6, Y8; \
	NB; \
	LOOK; \
	KLTACC8; \
	DECQ CX; \
	JNZ  lloop; \
	JMP  anext

// func kltAcc4AVX2(accs *[4]*float32, w *float32, pairs int, codes *byte, stride int, segs *kltSeg, nsegs int, tr *byte, last int)
//
// For each pair of blocks of eight codes (A, then B 8·stride bytes on;
// B is A again in the last pair when last is 1, its weights zero), with
// w their four heads' eight weights (32 floats per block, head by head,
// A's then B's), adds w_j·level_f lane by lane to accs[j][8f:8f+8], for
// every field f: each sum loaded and stored once per field and pair.
TEXT ·kltAcc4AVX2(SB), NOSPLIT, $96-72
	MOVQ    accs+0(FP), AX
	MOVQ    0(AX), R8
	MOVQ    8(AX), R9
	MOVQ    16(AX), R10
	MOVQ    24(AX), DI
	MOVQ    codes+24(FP), SI
	MOVQ    stride+32(FP), DX
	MOVQ    w+8(FP), R15
	MOVQ    tr+56(FP), AX
	ADDQ    $31, AX
	ANDQ    $-32, AX
	MOVQ    AX, tr+56(FP) // block A's transposed codes, 32-byte aligned
	LEAQ    15(DX), AX
	SHRQ    $4, AX
	SHLQ    $7, AX
	ADDQ    $32, AX
	MOVQ    AX, codes+24(FP) // now the offset of block B's
	SHLQ    $3, DX // the offset of block B

apair:
	MOVQ    SI, BX
	MOVQ    stride+32(FP), CX
	MOVQ    tr+56(FP), R13
	YTRANS(atA, atAmask, atAtr)
	CMPQ    pairs+16(FP), $1
	JNE     atrB
	CMPQ    last+64(FP), $1
	JNE     atrB
	MOVQ    $0, codes+24(FP) // B is A: its transposed codes too
	JMP     afull

atrB:
	LEAQ    (SI)(DX*1), BX
	MOVQ    stride+32(FP), CX
	MOVQ    tr+56(FP), R13
	ADDQ    codes+24(FP), R13
	YTRANS(atB, atBmask, atBtr)

afull:
	VMOVUPS 0(R15), Y0
	VMOVUPS 32(R15), Y1
	VMOVUPS 64(R15), Y2
	VMOVUPS 96(R15), Y3
	TZERO
	MOVQ    segs+40(FP), R11
	MOVQ    nsegs+48(FP), R12
	XORQ    R13, R13

aseg:
	MOVLQSX    0(R11), AX
	TESTQ      AX, AX
	JS         akeep
	WINPOS(5)
	ADDQ       tr+56(FP), BX
	YWINLOAD(Y12)
	ADDQ       codes+24(FP), BX
	YWINLOAD(Y4)

akeep:
	SEGMENT(AFIELDS, KLTNEXT, KLTNEXTB, TNEXTA, TNEXTB, NOSEG, LOOK8, LOOK16, LOOK32, LOOKG, LOOKG, TSTARTS)

anext:
	ADDQ $80, R11
	DECQ R12
	JNZ  aseg

	LEAQ (SI)(DX*2), SI
	ADDQ $256, R15
	DECQ pairs+16(FP)
	JNZ  apair
	VZEROUPPER
	RET

// The AVX-512 kernels: sixteen codes (two blocks of eight, A's in the
// low lanes) in the lanes of a zmm register, over the same segments.
// The codes are not gathered window by window: each pass first loads the
// sixteen codes 64 bytes at a time and transposes them into scratch
// (ZTRANS, 64 bytes a dword of the codes), under a k-mask of the blocks
// left (KMASK) and of the code's bytes, so nothing past the codes nor the
// partner of an odd last block is read (its lanes are zero); a window is
// then two plain loads of that dword and the next and two shifts
// (WINPOS(6), ZWINLOAD). Per segment its mask (broadcast), shift and the first 64 entries
// of its table go into registers (ZSEG); a field's level is then one
// permute of 16 entries (kinds 0 and 1), the two halves of the table in
// one VPERMT2PS (kind 2), its four quarters in two and a blend (kind 3,
// 64 entries: a trellis-coded field of 5 bits), or a gather (kind 4).

// KMASK(k) sets k to the lanes of the blocks left in AX: none (AX ≤ 0),
// the low eight (one block) or all sixteen; AX, BX, CX scratch.
#define KMASK(k) \
	XORL    BX, BX; \
	TESTQ   AX, AX; \
	CMOVQLT BX, AX; \
	MOVL    $2, BX; \
	CMPQ    AX, BX; \
	CMOVQGT BX, AX; \
	SHLQ    $3, AX; \
	MOVQ    AX, CX; \
	MOVL    $1, BX; \
	SHLL    CX, BX; \
	DECL    BX; \
	KMOVW   BX, k

// ZTRANS(k, lloop, lfull) loads the codes of the lanes of k (BX the
// first's, CX the stride), a chunk of 64 bytes of each at a time (masked
// loads: nothing past a code's stride bytes is read, nor the codes of the
// lanes outside k, whose bytes are zero), and transposes them: dword d of
// the sixteen codes goes to the 64 bytes at R13 + 64·d. AX, BX, R11–R14,
// K5–K7 and all the zmm registers scratch.
#define ZTRANS(k, lloop, lfull) \
	KMOVW   k, AX; \
	MOVQ    AX, R12; \
	ANDQ    $1, R12; \
	NEGQ    R12; \
	SHRQ    $8, AX; \
	ANDQ    $1, AX; \
	NEGQ    AX; \
	MOVQ    AX, R11; \
	MOVQ    CX, R14; \
lloop: \
	MOVQ    $-1, AX; \
	CMPQ    R14, $64; \
	JGE     lfull; \
	MOVL    $1, AX; \
	SHLXQ   R14, AX, AX; \
	DECQ    AX; \
lfull: \
	KMOVQ   AX, K7; \
	KMOVQ   R12, K5; \
	KANDQ   K7, K5, K5; \
	KMOVQ   R11, K6; \
	KANDQ   K7, K6, K6; \
	MOVQ    BX, AX; \
	VMOVDQU8.Z (AX), K5, Z0; \
	ADDQ CX, AX; \
	VMOVDQU8.Z (AX), K5, Z1; \
	ADDQ CX, AX; \
	VMOVDQU8.Z (AX), K5, Z2; \
	ADDQ CX, AX; \
	VMOVDQU8.Z (AX), K5, Z3; \
	ADDQ CX, AX; \
	VMOVDQU8.Z (AX), K5, Z4; \
	ADDQ CX, AX; \
	VMOVDQU8.Z (AX), K5, Z5; \
	ADDQ CX, AX; \
	VMOVDQU8.Z (AX), K5, Z6; \
	ADDQ CX, AX; \
	VMOVDQU8.Z (AX), K5, Z7; \
	ADDQ CX, AX; \
	VMOVDQU8.Z (AX), K6, Z8; \
	ADDQ CX, AX; \
	VMOVDQU8.Z (AX), K6, Z9; \
	ADDQ CX, AX; \
	VMOVDQU8.Z (AX), K6, Z10; \
	ADDQ CX, AX; \
	VMOVDQU8.Z (AX), K6, Z11; \
	ADDQ CX, AX; \
	VMOVDQU8.Z (AX), K6, Z12; \
	ADDQ CX, AX; \
	VMOVDQU8.Z (AX), K6, Z13; \
	ADDQ CX, AX; \
	VMOVDQU8.Z (AX), K6, Z14; \
	ADDQ CX, AX; \
	VMOVDQU8.Z (AX), K6, Z15; \
	ADDQ CX, AX; \
	VPUNPCKLDQ Z1, Z0, Z16; \
	VPUNPCKHDQ Z1, Z0, Z17; \
	VPUNPCKLDQ Z3, Z2, Z18; \
	VPUNPCKHDQ Z3, Z2, Z19; \
	VPUNPCKLDQ Z5, Z4, Z20; \
	VPUNPCKHDQ Z5, Z4, Z21; \
	VPUNPCKLDQ Z7, Z6, Z22; \
	VPUNPCKHDQ Z7, Z6, Z23; \
	VPUNPCKLDQ Z9, Z8, Z24; \
	VPUNPCKHDQ Z9, Z8, Z25; \
	VPUNPCKLDQ Z11, Z10, Z26; \
	VPUNPCKHDQ Z11, Z10, Z27; \
	VPUNPCKLDQ Z13, Z12, Z28; \
	VPUNPCKHDQ Z13, Z12, Z29; \
	VPUNPCKLDQ Z15, Z14, Z30; \
	VPUNPCKHDQ Z15, Z14, Z31; \
	VPUNPCKLQDQ Z18, Z16, Z0; \
	VPUNPCKHQDQ Z18, Z16, Z1; \
	VPUNPCKLQDQ Z19, Z17, Z2; \
	VPUNPCKHQDQ Z19, Z17, Z3; \
	VPUNPCKLQDQ Z22, Z20, Z4; \
	VPUNPCKHQDQ Z22, Z20, Z5; \
	VPUNPCKLQDQ Z23, Z21, Z6; \
	VPUNPCKHQDQ Z23, Z21, Z7; \
	VPUNPCKLQDQ Z26, Z24, Z8; \
	VPUNPCKHQDQ Z26, Z24, Z9; \
	VPUNPCKLQDQ Z27, Z25, Z10; \
	VPUNPCKHQDQ Z27, Z25, Z11; \
	VPUNPCKLQDQ Z30, Z28, Z12; \
	VPUNPCKHQDQ Z30, Z28, Z13; \
	VPUNPCKLQDQ Z31, Z29, Z14; \
	VPUNPCKHQDQ Z31, Z29, Z15; \
	VSHUFI32X4 $0x44, Z4, Z0, Z16; \
	VSHUFI32X4 $0xEE, Z4, Z0, Z17; \
	VSHUFI32X4 $0x44, Z12, Z8, Z18; \
	VSHUFI32X4 $0xEE, Z12, Z8, Z19; \
	VSHUFI32X4 $0x44, Z5, Z1, Z20; \
	VSHUFI32X4 $0xEE, Z5, Z1, Z21; \
	VSHUFI32X4 $0x44, Z13, Z9, Z22; \
	VSHUFI32X4 $0xEE, Z13, Z9, Z23; \
	VSHUFI32X4 $0x44, Z6, Z2, Z24; \
	VSHUFI32X4 $0xEE, Z6, Z2, Z25; \
	VSHUFI32X4 $0x44, Z14, Z10, Z26; \
	VSHUFI32X4 $0xEE, Z14, Z10, Z27; \
	VSHUFI32X4 $0x44, Z7, Z3, Z28; \
	VSHUFI32X4 $0xEE, Z7, Z3, Z29; \
	VSHUFI32X4 $0x44, Z15, Z11, Z30; \
	VSHUFI32X4 $0xEE, Z15, Z11, Z31; \
	VSHUFI32X4 $0x88, Z18, Z16, Z0; \
	VMOVDQU32 Z0, 0(R13); \
	VSHUFI32X4 $0xDD, Z18, Z16, Z4; \
	VMOVDQU32 Z4, 256(R13); \
	VSHUFI32X4 $0x88, Z19, Z17, Z8; \
	VMOVDQU32 Z8, 512(R13); \
	VSHUFI32X4 $0xDD, Z19, Z17, Z12; \
	VMOVDQU32 Z12, 768(R13); \
	VSHUFI32X4 $0x88, Z22, Z20, Z1; \
	VMOVDQU32 Z1, 64(R13); \
	VSHUFI32X4 $0xDD, Z22, Z20, Z5; \
	VMOVDQU32 Z5, 320(R13); \
	VSHUFI32X4 $0x88, Z23, Z21, Z9; \
	VMOVDQU32 Z9, 576(R13); \
	VSHUFI32X4 $0xDD, Z23, Z21, Z13; \
	VMOVDQU32 Z13, 832(R13); \
	VSHUFI32X4 $0x88, Z26, Z24, Z2; \
	VMOVDQU32 Z2, 128(R13); \
	VSHUFI32X4 $0xDD, Z26, Z24, Z6; \
	VMOVDQU32 Z6, 384(R13); \
	VSHUFI32X4 $0x88, Z27, Z25, Z10; \
	VMOVDQU32 Z10, 640(R13); \
	VSHUFI32X4 $0xDD, Z27, Z25, Z14; \
	VMOVDQU32 Z14, 896(R13); \
	VSHUFI32X4 $0x88, Z30, Z28, Z3; \
	VMOVDQU32 Z3, 192(R13); \
	VSHUFI32X4 $0xDD, Z30, Z28, Z7; \
	VMOVDQU32 Z7, 448(R13); \
	VSHUFI32X4 $0x88, Z31, Z29, Z11; \
	VMOVDQU32 Z11, 704(R13); \
	VSHUFI32X4 $0xDD, Z31, Z29, Z15; \
	VMOVDQU32 Z15, 960(R13); \
	ADDQ    $1024, R13; \
	ADDQ    $64, BX; \
	SUBQ    $64, R14; \
	JGT     lloop

// ZWINLOAD(z) sets z to the sixteen codes' window at BX in the
// transposed codes (WINPOS(6)), shifted to its first field; Z30 scratch.
#define ZWINLOAD(z) \
	VMOVDQU32 (BX), z; \
	VPSRLD    X13, z, z; \
	VMOVDQU32 64(BX), Z30; \
	VPSLLD    X14, Z30, Z30; \
	VPORD     Z30, z, z

// ZSEG loads segment R11's mask into the lanes of Z24, its bits into
// X25 and the first 64 levels of its table at R14 into Z26–Z29 (a run's
// table has 256 entries; Z28 and Z29 are free while the fields are read).
#define ZSEG \
	VPBROADCASTD 48(R11), Z24; \
	VMOVQ        8(R11), X25; \
	VMOVUPS      (R14), Z26; \
	VMOVUPS      64(R14), Z27; \
	VMOVUPS      128(R14), Z28; \
	VMOVUPS      192(R14), Z29

// ZNEXT(z) leaves the indices of the next field of the segment in window
// z in Z5 and moves z on to the one after it.
#define ZNEXT(z) \
	VPANDD Z24, z, Z5; \
	VPSRLD X25, z, z

// ZTNEXT(z, st, x, tab, one) is ZNEXT for a trellis-coded field, the
// lanes' states in st, X in tab and 1 in every lane of one: Z5 the
// field's entry 2u ⊕ X[s], the states moved on to 2s | (u&1); x scratch.
#define ZTNEXT(z, st, x, tab, one) \
	VPANDD     Z24, z, Z5; \
	VPSRLD     X25, z, z; \
	VPERMD     tab, st, x; \
	VPADDD     st, st, st; \
	VPTERNLOGD $0xF8, one, Z5, st; \
	VPADDD     Z5, Z5, Z5; \
	VPXORD     x, Z5, Z5

// ZTSTART(z, st, tab, one) is a segment of mode kltStart: it moves the
// lanes' states st on by the path bit of window z's first field (st |=
// z & one, VPTERNLOGD's A | B&C), after setting tab to X (at R14) and
// one to 1 in every lane.
#define ZTSTART(z, st, tab, one) \
	VMOVDQU32  (R14), tab; \
	VPTERNLOGD $0xFF, one, one, one; \
	VPSRLD     $31, one, one; \
	VPADDD     st, st, st; \
	VPTERNLOGD $0xF8, one, z, st

// The lookups of the levels of Z5 from the segment's table into Z6.
#define ZLOOK16 \
	VPERMPS Z26, Z5, Z6

#define ZLOOK32 \
	VMOVAPS   Z26, Z6; \
	VPERMT2PS Z27, Z5, Z6

// ZLOOK64: the halves in two VPERMT2PS, blended by bit 5 of the index
// (Z13, Z14 and K2 scratch: the window shifts in X13 and X14 are spent).
#define ZLOOK64 \
	VMOVAPS   Z26, Z6; \
	VPERMT2PS Z27, Z5, Z6; \
	VMOVAPS   Z28, Z13; \
	VPERMT2PS Z29, Z5, Z13; \
	VPSRLD    $5, Z5, Z14; \
	VPTESTMD  Z14, Z14, K2; \
	VBLENDMPS Z13, Z6, K2, Z6

#define ZLOOKG \
	KXNORW     K2, K2, K2; \
	VPXORD     Z6, Z6, Z6; \
	VGATHERDPS (R14)(Z5*4), K2, Z6

// ZQ4(a0, a1, a2, a3) adds Z6 times the four queries' floats at R13 to
// a0–a3 and moves R13 to the next field's.
#define ZQ4(a0, a1, a2, a3) \
	VFMADD231PS.BCST 0(R13), Z6, a0; \
	VFMADD231PS.BCST 4(R13), Z6, a1; \
	VFMADD231PS.BCST 8(R13), Z6, a2; \
	VFMADD231PS.BCST 12(R13), Z6, a3; \
	ADDQ             $16, R13

// ZSFIELDS(NEXT, unused, LOOK, lloop) is SFIELDS for sixteen lanes, the
// fields read by NEXT (ZSNEXT or ZSTNEXT): two sets of sums, Z0–Z3 and
// Z8–Z11.
#define ZSFIELDS(NEXT, unused, LOOK, lloop) \
lloop: \
	NEXT; \
	LOOK; \
	ZQ4(Z0, Z1, Z2, Z3); \
	DECQ CX; \
	JZ   zsnext; \
	NEXT; \
	LOOK; \
	ZQ4(Z8, Z9, Z10, Z11); \
	DECQ CX; \
	JNZ  lloop; \
	JMP  zsnext

// The score kernel's fields: the window in Z12, and for trellis-coded
// ones the states in Z15, X in Z16, ones in Z17.
#define ZSNEXT ZNEXT(Z12)

#define ZSTNEXT ZTNEXT(Z12, Z15, Z18, Z16, Z17)

#define ZSSTART ZTSTART(Z12, Z15, Z16, Z17)

// ZOUT(i, z) sets the 16 floats of query i/8's row (its pointer at
// i(DI)) at R15 to its base (at i/2(R9)) plus the codes' scales (Z28)
// times its sums z, in the lanes of K3.
#define ZOUT(i, z) \
	VBROADCASTSS i/2(R9), Z29; \
	VFMADD213PS  Z29, Z28, z; \
	MOVQ         i(DI), BX; \
	VMOVUPS      z, K3, (BX)(R15*1)

// func kltScore4AVX512(dst *[4]*float32, base *[4]float32, rho *float32, blocks int, codes *byte, stride int, segs *kltSeg, nsegs int, q *float32, tr *byte)
//
// kltScore4AVX2's sums, two blocks of eight codes a pass, finished in
// place: dst[j][v] = base[j] + rho[v]·Σ_f q[4f+j]·level_f(v) for v <
// 8·blocks (rho the codes' scales); nothing past the last block is read
// or written.
TEXT ·kltScore4AVX512(SB), NOSPLIT, $0-80
	MOVQ      dst+0(FP), DI
	MOVQ      base+8(FP), R9
	MOVQ      blocks+24(FP), R8
	MOVQ      codes+32(FP), SI
	MOVQ      stride+40(FP), DX
	MOVQ      tr+72(FP), R10
	ADDQ      $63, R10
	ANDQ      $-64, R10 // the transposed codes, 64-byte aligned
	SHLQ      $4, DX
	XORQ      R15, R15

zsblock:
	MOVQ   R8, AX
	KMASK(K3)
	MOVQ   SI, BX
	MOVQ   stride+40(FP), CX
	MOVQ   R10, R13
	ZTRANS(K3, zstloop, zstfull)
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z15, Z15, Z15
	MOVQ   segs+48(FP), R11
	MOVQ   nsegs+56(FP), R12
	MOVQ   q+64(FP), R13

zsseg:
	MOVLQSX 0(R11), AX
	TESTQ   AX, AX
	JS      zskeep
	WINPOS(6)
	ADDQ    R10, BX
	ZWINLOAD(Z12)

zskeep:
	SEGMENT(ZSFIELDS, ZSNEXT, -, ZSTNEXT, -, ZSEG, ZLOOK16, ZLOOK16, ZLOOK32, ZLOOK64, ZLOOKG, ZSSTART)

zsnext:
	ADDQ $80, R11
	DECQ R12
	JNZ  zsseg

	VADDPS    Z8, Z0, Z0
	VADDPS    Z9, Z1, Z1
	VADDPS    Z10, Z2, Z2
	VADDPS    Z11, Z3, Z3
	MOVQ      rho+16(FP), BX
	VMOVUPS.Z (BX)(R15*1), K3, Z28
	ZOUT(0, Z0)
	ZOUT(8, Z1)
	ZOUT(16, Z2)
	ZOUT(24, Z3)
	ADDQ      $64, R15
	ADDQ      DX, SI
	SUBQ      $2, R8
	JGT       zsblock
	VZEROUPPER
	RET

// ZACC(base, t, wa, wb) adds Z7 times group A's weights wa and Z6 times
// group B's wb to the sixteen sums at R13 from base (t scratch).
#define ZACC(base, t, wa, wb) \
	VMOVUPS     (base)(R13*1), t; \
	VFMADD231PS wa, Z7, t; \
	VFMADD231PS wb, Z6, t; \
	VMOVUPS     t, (base)(R13*1)

// ZAFIELDS(NA, NB, LOOK, lloop) sums the CX fields of the segment, read
// by NA and NB (ZANEXTA and ZANEXTB, or ZATNEXTA and ZATNEXTB), with
// lookup LOOK for the two groups of sixteen codes, A's window in Z12,
// B's in Z4.
#define ZAFIELDS(NA, NB, LOOK, lloop) \
lloop: \
	NA; \
	LOOK; \
	VMOVAPS Z6, Z7; \
	NB; \
	LOOK; \
	ZACC(R8, Z20, Z0, Z16); \
	ZACC(R9, Z21, Z1, Z17); \
	ZACC(R10, Z22, Z2, Z18); \
	ZACC(DI, Z23, Z3, Z19); \
	ADDQ $64, R13; \
	DECQ CX; \
	JNZ  lloop; \
	JMP  zanext

// The accumulator kernel's fields: the windows in Z12 and Z4, and for
// trellis-coded ones the states in Z8 and Z9, X in Z10, ones in Z11.
#define ZANEXTA ZNEXT(Z12)

#define ZANEXTB ZNEXT(Z4)

#define ZATNEXTA ZTNEXT(Z12, Z8, Z15, Z10, Z11)

#define ZATNEXTB ZTNEXT(Z4, Z9, Z15, Z10, Z11)

#define ZASTART \
	ZTSTART(Z12, Z8, Z10, Z11); \
	ZTSTART(Z4, Z9, Z10, Z11)

// ZWEIGHTS(i, wa, wb) sets wa and wb to the weights of head i/8 (its
// pointer at i(AX)) at R15 times the codes' scales: those of group A
// (Z28) and of group B, 16 floats on (Z29); lanes outside K3, K4 zero,
// not read.
#define ZWEIGHTS(i, wa, wb) \
	MOVQ     i(AX), BX; \
	VMULPS.Z (BX)(R15*1), Z28, K3, wa; \
	VMULPS.Z 64(BX)(R15*1), Z29, K4, wb

// func kltAcc4AVX512(accs *[4]*float32, ws *[4]*float32, rho *float32, blocks int, codes *byte, stride int, segs *kltSeg, nsegs int, tr *byte)
//
// For each four blocks of eight codes (group A the first two, B the
// next two; blocks past the last are not read), with ws[j] the codes'
// weights for head j and rho their scales (a float per code each, read
// under the same masks), adds ws[j][v]·rho[v]·level_f lane by lane to
// accs[j][16f:16f+16], for every field f: each sum loaded and stored once
// per field and 32 codes.
TEXT ·kltAcc4AVX512(SB), NOSPLIT, $0-72
	MOVQ      accs+0(FP), AX
	MOVQ      0(AX), R8
	MOVQ      8(AX), R9
	MOVQ      16(AX), R10
	MOVQ      24(AX), DI
	MOVQ      codes+32(FP), SI
	MOVQ      stride+40(FP), DX
	MOVQ      tr+64(FP), AX
	ADDQ      $63, AX
	ANDQ      $-64, AX
	MOVQ      AX, tr+64(FP) // group A's transposed codes, 64-byte aligned
	LEAQ      63(DX), AX
	SHRQ      $6, AX
	SHLQ      $10, AX
	ADDQ      $64, AX
	MOVQ      AX, codes+32(FP) // now the offset of group B's
	SHLQ      $4, DX // the offset of group B
	XORQ      R15, R15

zaquad:
	MOVQ      blocks+24(FP), AX
	KMASK(K3)
	MOVQ      blocks+24(FP), AX
	SUBQ      $2, AX
	KMASK(K4)
	MOVQ      SI, BX
	MOVQ      stride+40(FP), CX
	MOVQ      tr+64(FP), R13
	ZTRANS(K3, zatA, zatAfull)
	LEAQ      (SI)(DX*1), BX
	MOVQ      stride+40(FP), CX
	MOVQ      tr+64(FP), R13
	ADDQ      codes+32(FP), R13
	ZTRANS(K4, zatB, zatBfull)
	MOVQ      rho+16(FP), BX
	VMOVUPS.Z (BX)(R15*1), K3, Z28
	VMOVUPS.Z 64(BX)(R15*1), K4, Z29
	MOVQ      ws+8(FP), AX
	ZWEIGHTS(0, Z0, Z16)
	ZWEIGHTS(8, Z1, Z17)
	ZWEIGHTS(16, Z2, Z18)
	ZWEIGHTS(24, Z3, Z19)
	VPXORD    Z8, Z8, Z8
	VPXORD    Z9, Z9, Z9
	MOVQ      segs+48(FP), R11
	MOVQ      nsegs+56(FP), R12
	XORQ      R13, R13

zaseg:
	MOVLQSX 0(R11), AX
	TESTQ   AX, AX
	JS      zakeep
	WINPOS(6)
	ADDQ    tr+64(FP), BX
	ZWINLOAD(Z12)
	ADDQ    codes+32(FP), BX
	ZWINLOAD(Z4)

zakeep:
	SEGMENT(ZAFIELDS, ZANEXTA, ZANEXTB, ZATNEXTA, ZATNEXTB, ZSEG, ZLOOK16, ZLOOK16, ZLOOK32, ZLOOK64, ZLOOKG, ZASTART)

zanext:
	ADDQ $80, R11
	DECQ R12
	JNZ  zaseg

	LEAQ (SI)(DX*2), SI
	ADDQ $128, R15
	SUBQ $4, blocks+24(FP)
	JGT  zaquad
	VZEROUPPER
	RET
