//go:build amd64 && !purego

#include "textflag.h"

// The KLT lane kernels: eight codes (stride bytes apart) in the lanes of
// a ymm register, their fields in order, segment by segment (kltSeg, 80
// bytes: off, kind at 0 and 4, bits at 8, shift at 16, n at 24, the
// levels table at 32, the mask repeated eight times at 48). A segment is
// n fields of one run lying in one 4-byte window; where its off is not
// negative, the window's 4 bytes at off of each of the eight codes are
// first gathered into Y12 (Y15: the codes' byte offsets 0, stride, …,
// 7·stride) and shifted to the segment's first field. Each field is then
// Y12 & mask, Y12 shifted on by bits, and its level looked up in the
// run's table: one permute of 8 entries (kind 0), two and a blend of 16
// (kind 1), four and three blends of 32 (kind 2), or a gather (kind 3).
// Each gather may read 3 bytes past the last code's index bytes (the
// caller keeps that inside the codes).

// KLTNEXT leaves the indices of the next field of segment R11 in Y5 and
// moves Y12 on to the one after it.
#define KLTNEXT \
	VPAND  48(R11), Y12, Y5; \
	VPSRLD 8(R11), Y12, Y12

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

// KLTWINDOW gathers segment R11's window of the eight codes at SI into
// Y12 where it has one (Y12 zeroed first: a gather merges into its
// destination and would wait for the last one), shifted to its first
// field; AX, BX, Y13 scratch.
#define KLTWINDOW(lkeep) \
	MOVLQSX    0(R11), AX; \
	TESTQ      AX, AX; \
	JS         lkeep; \
	VPCMPEQD   Y13, Y13, Y13; \
	VPXOR      Y12, Y12, Y12; \
	LEAQ       (SI)(AX*1), BX; \
	VPGATHERDD Y13, (BX)(Y15*1), Y12; \
	VPSRLD     16(R11), Y12, Y12; \
lkeep:

// KLTQ4(a0, a1, a2, a3) adds Y6 times the four queries' floats at R13 to
// a0–a3 and moves R13 to the next field's.
#define KLTQ4(a0, a1, a2, a3) \
	VBROADCASTSS 0(R13), Y14; \
	VFMADD231PS  Y14, Y6, a0; \
	VBROADCASTSS 4(R13), Y14; \
	VFMADD231PS  Y14, Y6, a1; \
	VBROADCASTSS 8(R13), Y14; \
	VFMADD231PS  Y14, Y6, a2; \
	VBROADCASTSS 12(R13), Y14; \
	VFMADD231PS  Y14, Y6, a3; \
	ADDQ         $16, R13

// SFIELDS(LOOK, lloop, ldone) scores the CX fields of the segment with
// lookup LOOK, two a turn into the two sets of sums (Y0–Y3, Y8–Y11: one
// chain of multiply-adds per query would wait on their latency).
#define SFIELDS(LOOK, lloop) \
lloop: \
	KLTNEXT; \
	LOOK; \
	KLTQ4(Y0, Y1, Y2, Y3); \
	DECQ CX; \
	JZ   snext; \
	KLTNEXT; \
	LOOK; \
	KLTQ4(Y8, Y9, Y10, Y11); \
	DECQ CX; \
	JNZ  lloop; \
	JMP  snext

// func kltScore4AVX2(dst *float32, blocks int, codes *byte, stride int, segs *kltSeg, nsegs int, q *float32, lanes *[8]int32)
//
// For each block of eight codes, the four sums Σ_f q[4f+j]·level_f (j <
// 4, q the four queries interleaved per field) are stored at dst, 32
// floats per block: query 0's eight codes, then 1's, 2's, 3's.
TEXT ·kltScore4AVX2(SB), NOSPLIT, $0-64
	MOVQ    dst+0(FP), DI
	MOVQ    blocks+8(FP), R8
	MOVQ    codes+16(FP), SI
	MOVQ    stride+24(FP), DX
	MOVQ    lanes+56(FP), AX
	VMOVDQU (AX), Y15
	SHLQ    $3, DX

sblock:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	MOVQ   segs+32(FP), R11
	MOVQ   nsegs+40(FP), R12
	MOVQ   q+48(FP), R13

sseg:
	KLTWINDOW(skeep)
	MOVQ 24(R11), CX
	MOVQ 32(R11), R14
	MOVL 4(R11), AX
	TESTL AX, AX
	JNE  s16
	SFIELDS(LOOK8, s8loop)

s16:
	CMPL AX, $1
	JNE  s32
	SFIELDS(LOOK16, s16loop)

s32:
	CMPL AX, $2
	JNE  sg
	SFIELDS(LOOK32, s32loop)

sg:
	SFIELDS(LOOKG, sgloop)

snext:
	ADDQ $80, R11
	DECQ R12
	JNZ  sseg

	VADDPS  Y8, Y0, Y0
	VADDPS  Y9, Y1, Y1
	VADDPS  Y10, Y2, Y2
	VADDPS  Y11, Y3, Y3
	VMOVUPS Y0, 0(DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	ADDQ    $128, DI
	ADDQ    DX, SI
	DECQ    R8
	JNZ     sblock
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

// AFIELDS(LOOK, lloop) sums the CX fields of the segment with lookup LOOK
// for the two blocks: A's window in Y12, B's in Y4.
#define AFIELDS(LOOK, lloop) \
lloop: \
	KLTNEXT; \
	LOOK; \
	VMOVAPS Y6, Y8; \
	VPAND   48(R11), Y4, Y5; \
	VPSRLD  8(R11), Y4, Y4; \
	LOOK; \
	KLTACC8; \
	DECQ CX; \
	JNZ  lloop; \
	JMP  anext

// func kltAcc4AVX2(accs *[4]*float32, w *float32, pairs int, codes *byte, stride int, segs *kltSeg, nsegs int, lanes *[8]int32, last int)
//
// For each pair of blocks of eight codes (A, then B 8·stride bytes on;
// B is A again in the last pair when last is 1, its weights zero), with
// w their four heads' eight weights (32 floats per block, head by head,
// A's then B's), adds w_j·level_f lane by lane to accs[j][8f:8f+8], for
// every field f: each sum loaded and stored once per field and pair.
TEXT ·kltAcc4AVX2(SB), NOSPLIT, $0-72
	MOVQ    accs+0(FP), AX
	MOVQ    0(AX), R8
	MOVQ    8(AX), R9
	MOVQ    16(AX), R10
	MOVQ    24(AX), DI
	MOVQ    codes+24(FP), SI
	MOVQ    stride+32(FP), DX
	MOVQ    w+8(FP), R15
	MOVQ    lanes+56(FP), AX
	VMOVDQU (AX), Y15
	SHLQ    $3, DX
	MOVQ    DX, stride+32(FP) // now the offset of block B

apair:
	CMPQ    pairs+16(FP), $1
	JNE     afull
	CMPQ    last+64(FP), $1
	JNE     afull
	MOVQ    $0, stride+32(FP)

afull:
	VMOVUPS 0(R15), Y0
	VMOVUPS 32(R15), Y1
	VMOVUPS 64(R15), Y2
	VMOVUPS 96(R15), Y3
	MOVQ    segs+40(FP), R11
	MOVQ    nsegs+48(FP), R12
	XORQ    R13, R13

aseg:
	MOVLQSX    0(R11), AX
	TESTQ      AX, AX
	JS         akeep
	VPCMPEQD   Y13, Y13, Y13
	VPXOR      Y12, Y12, Y12
	LEAQ       (SI)(AX*1), BX
	VPGATHERDD Y13, (BX)(Y15*1), Y12
	VPSRLD     16(R11), Y12, Y12
	VPCMPEQD   Y13, Y13, Y13
	VPXOR      Y4, Y4, Y4
	ADDQ       stride+32(FP), BX
	VPGATHERDD Y13, (BX)(Y15*1), Y4
	VPSRLD     16(R11), Y4, Y4

akeep:
	MOVQ  24(R11), CX
	MOVQ  32(R11), R14
	MOVL  4(R11), AX
	TESTL AX, AX
	JNE   a16
	AFIELDS(LOOK8, a8loop)

a16:
	CMPL AX, $1
	JNE  a32
	AFIELDS(LOOK16, a16loop)

a32:
	CMPL AX, $2
	JNE  ag
	AFIELDS(LOOK32, a32loop)

ag:
	AFIELDS(LOOKG, agloop)

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
