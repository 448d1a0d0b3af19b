//go:build amd64 && !purego

#include "textflag.h"

// The KLT lane kernels: eight codes (stride bytes apart) in the lanes of
// a ymm register, their fields in order (kltStep, 24 bytes: off, shift,
// mask, kind at 0–12, the levels table at 16). A step whose off is not
// negative first gathers the 4 bytes at off of each of the eight codes
// (Y15: the codes' byte offsets 0, stride, …, 7·stride) into Y4; then
// the field is (Y4 >> shift) & mask, and its level is looked up in the
// run's table: one permute of 8 entries (kind 0), two and a blend of 16
// (kind 1), four and three blends of 32 (kind 2), or a gather (kind 3). Each gather may read 3 bytes past the
// last code's index bytes (the caller keeps that inside the codes).

// KLTFIELD(lfield, l16, l32, lgather, lhave) leaves in Y6 the levels of the
// field of step R12 of the eight codes at SI (the labels are the macro's
// own, distinct at each use); AX, BX, R14, Y5, Y7, Y12, Y13, Y14 are
// scratch.
// Y4 and Y6 are zeroed before their gathers, which would otherwise wait
// for the last gather's result (they merge into their destination).
#define KLTFIELD(lfield, l16, l32, lgather, lhave) \
	MOVLQSX      0(R12), AX; \
	TESTQ        AX, AX; \
	JS           lfield; \
	VPCMPEQD     Y13, Y13, Y13; \
	VPXOR        Y4, Y4, Y4; \
	LEAQ         (SI)(AX*1), BX; \
	VPGATHERDD   Y13, (BX)(Y15*1), Y4; \
lfield: \
	VMOVD        4(R12), X14; \
	VPSRLD       X14, Y4, Y5; \
	VPBROADCASTD 8(R12), Y14; \
	VPAND        Y14, Y5, Y5; \
	MOVQ         16(R12), R14; \
	MOVL         12(R12), AX; \
	CMPL         AX, $1; \
	JEQ          l16; \
	JGT          l32; \
	VPERMPS      (R14), Y5, Y6; \
	JMP          lhave; \
l16: \
	VPERMPS      (R14), Y5, Y6; \
	VPERMPS      32(R14), Y5, Y7; \
	VPSLLD       $28, Y5, Y13; \
	VBLENDVPS    Y13, Y7, Y6, Y6; \
	JMP          lhave; \
l32: \
	CMPL         AX, $2; \
	JGT          lgather; \
	VPERMPS      (R14), Y5, Y6; \
	VPERMPS      32(R14), Y5, Y7; \
	VPSLLD       $28, Y5, Y13; \
	VBLENDVPS    Y13, Y7, Y6, Y6; \
	VPERMPS      64(R14), Y5, Y7; \
	VPERMPS      96(R14), Y5, Y12; \
	VBLENDVPS    Y13, Y12, Y7, Y7; \
	VPSLLD       $27, Y5, Y13; \
	VBLENDVPS    Y13, Y7, Y6, Y6; \
	JMP          lhave; \
lgather: \
	VPCMPEQD     Y13, Y13, Y13; \
	VXORPS       Y6, Y6, Y6; \
	VGATHERDPS   Y13, (R14)(Y5*4), Y6; \
lhave:

// KLTQ4(off, a0, a1, a2, a3) adds Y6 times the four queries' floats at
// off(R13) to a0–a3.
#define KLTQ4(off, a0, a1, a2, a3) \
	VBROADCASTSS off+0(R13), Y14; \
	VFMADD231PS  Y14, Y6, a0; \
	VBROADCASTSS off+4(R13), Y14; \
	VFMADD231PS  Y14, Y6, a1; \
	VBROADCASTSS off+8(R13), Y14; \
	VFMADD231PS  Y14, Y6, a2; \
	VBROADCASTSS off+12(R13), Y14; \
	VFMADD231PS  Y14, Y6, a3

// func kltScore4AVX2(dst *float32, blocks int, codes *byte, stride int, steps *kltStep, nsteps int, q *float32, lanes *[8]int32)
//
// For each block of eight codes, the four sums Σ_f q[4f+j]·level_f (j <
// 4, q the four queries interleaved per field) are stored at dst, 32
// floats per block: query 0's eight codes, then 1's, 2's, 3's.
TEXT ·kltScore4AVX2(SB), NOSPLIT, $0-64
	MOVQ    dst+0(FP), DI
	MOVQ    blocks+8(FP), CX
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
	MOVQ   steps+32(FP), R12
	MOVQ   nsteps+40(FP), R11
	MOVQ   q+48(FP), R13

	// Two steps a turn, each into its own four sums (Y0–Y3, Y8–Y11): one
	// chain of multiply-adds per query would wait on their latency.
sstep:
	KLTFIELD(sf0, s160, s320, sg0, sh0)
	KLTQ4(0, Y0, Y1, Y2, Y3)
	ADDQ $24, R12
	ADDQ $16, R13
	DECQ R11
	JZ   sdone
	KLTFIELD(sf1, s161, s321, sg1, sh1)
	KLTQ4(0, Y8, Y9, Y10, Y11)
	ADDQ $24, R12
	ADDQ $16, R13
	DECQ R11
	JNZ  sstep

sdone:
	VADDPS Y8, Y0, Y0
	VADDPS Y9, Y1, Y1
	VADDPS Y10, Y2, Y2
	VADDPS Y11, Y3, Y3
	VMOVUPS Y0, 0(DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	ADDQ    $128, DI
	ADDQ    DX, SI
	DECQ    CX
	JNZ     sblock
	VZEROUPPER
	RET

// func kltAcc4AVX2(accs *[4]*float32, w *float32, blocks int, codes *byte, stride int, steps *kltStep, nsteps int, lanes *[8]int32)
//
// For each block of eight codes, with w its four heads' eight weights
// (32 floats per block, head by head), adds w_j·level_f lane by lane to
// accs[j][8f:8f+8], for every field f.
TEXT ·kltAcc4AVX2(SB), NOSPLIT, $0-64
	MOVQ    accs+0(FP), AX
	MOVQ    0(AX), R8
	MOVQ    8(AX), R9
	MOVQ    16(AX), R10
	MOVQ    24(AX), DI
	MOVQ    blocks+16(FP), CX
	MOVQ    codes+24(FP), SI
	MOVQ    stride+32(FP), DX
	MOVQ    w+8(FP), R15
	MOVQ    lanes+56(FP), AX
	VMOVDQU (AX), Y15
	SHLQ    $3, DX

ablock:
	VMOVUPS 0(R15), Y0
	VMOVUPS 32(R15), Y1
	VMOVUPS 64(R15), Y2
	VMOVUPS 96(R15), Y3
	ADDQ    $128, R15
	MOVQ    steps+40(FP), R12
	MOVQ    nsteps+48(FP), R11
	XORQ    R13, R13

astep:
	KLTFIELD(af, a16, a32, ag, ah)
	VMOVUPS     (R8)(R13*1), Y14
	VFMADD231PS Y0, Y6, Y14
	VMOVUPS     Y14, (R8)(R13*1)
	VMOVUPS     (R9)(R13*1), Y14
	VFMADD231PS Y1, Y6, Y14
	VMOVUPS     Y14, (R9)(R13*1)
	VMOVUPS     (R10)(R13*1), Y14
	VFMADD231PS Y2, Y6, Y14
	VMOVUPS     Y14, (R10)(R13*1)
	VMOVUPS     (DI)(R13*1), Y14
	VFMADD231PS Y3, Y6, Y14
	VMOVUPS     Y14, (DI)(R13*1)
	ADDQ        $24, R12
	ADDQ        $32, R13
	DECQ        R11
	JNZ         astep

	ADDQ DX, SI
	DECQ CX
	JNZ  ablock
	VZEROUPPER
	RET
