//go:build amd64 && !purego

#include "textflag.h"
#include "hsum_amd64.h"
#include "multirow_amd64.h"

// The K-quant multi-row decode kernels (multirow_k.go) with AVX-512 VNNI.
// Per weight row and super-block of 256 elements, the quants are
// unpacked once to four registers of 64 unsigned bytes in element order
// (Z0-Z3, one per step of 64 elements) and the sub-block scales to four
// registers of int16 words, each word the scale of its element pair
// (Z4-Z7, by VPERMW from the 16 widened scale bytes); then each of the
// pass's nv vectors meets them: VPMADDUBSW sums pairs of weight ×
// activation bytes to words, VPDPWSSD multiplies two words by their
// scales and adds them to an int32 lane (the exact Σ₄ scale·q·xq), the
// lanes are converted and accumulated with scale dw·dx into the vector's
// accumulator (Z16+v). The block's constant terms come from the
// activation's 16 bsums: Q6_K's −32 offset, VPMADDWD of −32·scale with
// them, starts lanes 0-7; Q4_K's mins, VPMADDWD of each sub-block's min
// (two words) with them, are lanes of their own, scaled by dmin·dx and
// subtracted. The vectors of a block lie one after another in the pack,
// multiKVecBytes (320) each: quants, bsums, scale.

// VPERMW indices: for Q6_K step c (64 elements, four sub-blocks of 16),
// word w takes scale 4c + w/8
DATA q6kperm<>+0(SB)/8, $0x0000000000000000
DATA q6kperm<>+8(SB)/8, $0x0000000000000000
DATA q6kperm<>+16(SB)/8, $0x0001000100010001
DATA q6kperm<>+24(SB)/8, $0x0001000100010001
DATA q6kperm<>+32(SB)/8, $0x0002000200020002
DATA q6kperm<>+40(SB)/8, $0x0002000200020002
DATA q6kperm<>+48(SB)/8, $0x0003000300030003
DATA q6kperm<>+56(SB)/8, $0x0003000300030003
DATA q6kperm<>+64(SB)/8, $0x0004000400040004
DATA q6kperm<>+72(SB)/8, $0x0004000400040004
DATA q6kperm<>+80(SB)/8, $0x0005000500050005
DATA q6kperm<>+88(SB)/8, $0x0005000500050005
DATA q6kperm<>+96(SB)/8, $0x0006000600060006
DATA q6kperm<>+104(SB)/8, $0x0006000600060006
DATA q6kperm<>+112(SB)/8, $0x0007000700070007
DATA q6kperm<>+120(SB)/8, $0x0007000700070007
DATA q6kperm<>+128(SB)/8, $0x0008000800080008
DATA q6kperm<>+136(SB)/8, $0x0008000800080008
DATA q6kperm<>+144(SB)/8, $0x0009000900090009
DATA q6kperm<>+152(SB)/8, $0x0009000900090009
DATA q6kperm<>+160(SB)/8, $0x000a000a000a000a
DATA q6kperm<>+168(SB)/8, $0x000a000a000a000a
DATA q6kperm<>+176(SB)/8, $0x000b000b000b000b
DATA q6kperm<>+184(SB)/8, $0x000b000b000b000b
DATA q6kperm<>+192(SB)/8, $0x000c000c000c000c
DATA q6kperm<>+200(SB)/8, $0x000c000c000c000c
DATA q6kperm<>+208(SB)/8, $0x000d000d000d000d
DATA q6kperm<>+216(SB)/8, $0x000d000d000d000d
DATA q6kperm<>+224(SB)/8, $0x000e000e000e000e
DATA q6kperm<>+232(SB)/8, $0x000e000e000e000e
DATA q6kperm<>+240(SB)/8, $0x000f000f000f000f
DATA q6kperm<>+248(SB)/8, $0x000f000f000f000f
GLOBL q6kperm<>(SB), RODATA|NOPTR, $256

// for Q4_K step c (two sub-blocks of 32), word w takes scale 2c + w/16;
// then the mins' words, word g taking min g/2 (word 8 + g/2 of scales
// and mins widened)
DATA q4kperm<>+0(SB)/8, $0x0000000000000000
DATA q4kperm<>+8(SB)/8, $0x0000000000000000
DATA q4kperm<>+16(SB)/8, $0x0000000000000000
DATA q4kperm<>+24(SB)/8, $0x0000000000000000
DATA q4kperm<>+32(SB)/8, $0x0001000100010001
DATA q4kperm<>+40(SB)/8, $0x0001000100010001
DATA q4kperm<>+48(SB)/8, $0x0001000100010001
DATA q4kperm<>+56(SB)/8, $0x0001000100010001
DATA q4kperm<>+64(SB)/8, $0x0002000200020002
DATA q4kperm<>+72(SB)/8, $0x0002000200020002
DATA q4kperm<>+80(SB)/8, $0x0002000200020002
DATA q4kperm<>+88(SB)/8, $0x0002000200020002
DATA q4kperm<>+96(SB)/8, $0x0003000300030003
DATA q4kperm<>+104(SB)/8, $0x0003000300030003
DATA q4kperm<>+112(SB)/8, $0x0003000300030003
DATA q4kperm<>+120(SB)/8, $0x0003000300030003
DATA q4kperm<>+128(SB)/8, $0x0004000400040004
DATA q4kperm<>+136(SB)/8, $0x0004000400040004
DATA q4kperm<>+144(SB)/8, $0x0004000400040004
DATA q4kperm<>+152(SB)/8, $0x0004000400040004
DATA q4kperm<>+160(SB)/8, $0x0005000500050005
DATA q4kperm<>+168(SB)/8, $0x0005000500050005
DATA q4kperm<>+176(SB)/8, $0x0005000500050005
DATA q4kperm<>+184(SB)/8, $0x0005000500050005
DATA q4kperm<>+192(SB)/8, $0x0006000600060006
DATA q4kperm<>+200(SB)/8, $0x0006000600060006
DATA q4kperm<>+208(SB)/8, $0x0006000600060006
DATA q4kperm<>+216(SB)/8, $0x0006000600060006
DATA q4kperm<>+224(SB)/8, $0x0007000700070007
DATA q4kperm<>+232(SB)/8, $0x0007000700070007
DATA q4kperm<>+240(SB)/8, $0x0007000700070007
DATA q4kperm<>+248(SB)/8, $0x0007000700070007
DATA q4kperm<>+256(SB)/8, $0x0009000900080008
DATA q4kperm<>+264(SB)/8, $0x000b000b000a000a
DATA q4kperm<>+272(SB)/8, $0x000d000d000c000c
DATA q4kperm<>+280(SB)/8, $0x000f000f000e000e
GLOBL q4kperm<>(SB), RODATA|NOPTR, $288

// Q4_K's 12 scale bytes as dwords u0 u1 u2: llama.cpp's unpacking
// (kmask1-3) of scales 0-3, 4-7 and mins 0-3, 4-7 in the four dwords of
// (P >> shift) & mask1 | (Q >> 2) & mask2, P = (u0, u2, u1, u2) and
// Q = (u0, u0, u0, u1)
DATA q4kshift<>+0(SB)/4, $0x00000000
DATA q4kshift<>+4(SB)/4, $0x00000000
DATA q4kshift<>+8(SB)/4, $0x00000000
DATA q4kshift<>+12(SB)/4, $0x00000004
GLOBL q4kshift<>(SB), RODATA|NOPTR, $16
DATA q4kmask1<>+0(SB)/4, $0x3f3f3f3f
DATA q4kmask1<>+4(SB)/4, $0x0f0f0f0f
DATA q4kmask1<>+8(SB)/4, $0x3f3f3f3f
DATA q4kmask1<>+12(SB)/4, $0x0f0f0f0f
GLOBL q4kmask1<>(SB), RODATA|NOPTR, $16
DATA q4kmask2<>+0(SB)/4, $0x00000000
DATA q4kmask2<>+4(SB)/4, $0x30303030
DATA q4kmask2<>+8(SB)/4, $0x00000000
DATA q4kmask2<>+12(SB)/4, $0x30303030
GLOBL q4kmask2<>(SB), RODATA|NOPTR, $16

// SCALEWORDS spreads the 16 scale words of Y12 over the four steps'
// scale words Z4-Z7 by the VPERMW indices at perm (Z13 scratch).
#define SCALEWORDS(perm) \
	VMOVDQU64 perm<>+0(SB), Z13; \
	VPERMW Z12, Z13, Z4; \
	VMOVDQU64 perm<>+64(SB), Z13; \
	VPERMW Z12, Z13, Z5; \
	VMOVDQU64 perm<>+128(SB), Z13; \
	VPERMW Z12, Z13, Z6; \
	VMOVDQU64 perm<>+192(SB), Z13; \
	VPERMW Z12, Z13, Z7

// VECS adds each vector of the pass to its accumulator with VEC.
#define VECS(VEC) \
	VEC(0, Z16); \
	VEC(1, Z17); \
	VEC(2, Z18); \
	VEC(3, Z19); \
	VEC(4, Z20); \
	VEC(5, Z21); \
	VEC(6, Z22); \
	VEC(7, Z23); \
	VEC(8, Z24); \
	VEC(9, Z25); \
	VEC(10, Z26); \
	VEC(11, Z27); \
	VEC(12, Z28); \
	VEC(13, Z29); \
	VEC(14, Z30); \
	VEC(15, Z31)

// DOTS4 adds to the int32 lanes Z12 vector v's four steps of the block
// (at 320v(R9)): per step VPMADDUBSW of the quants with the vector's
// bytes, VPDPWSSD of those words with the scale words (Z13, Z14
// scratch).
#define DOTS4(v) \
	VPMADDUBSW (320*v)(R9), Z0, Z13; \
	VPDPWSSD Z4, Z13, Z12; \
	VPMADDUBSW (320*v+64)(R9), Z1, Z14; \
	VPDPWSSD Z5, Z14, Z12; \
	VPMADDUBSW (320*v+128)(R9), Z2, Z13; \
	VPDPWSSD Z6, Z13, Z12; \
	VPMADDUBSW (320*v+192)(R9), Z3, Z14; \
	VPDPWSSD Z7, Z14, Z12

// SCALED adds the int32 lanes I of vector v, converted and times D·dx
// (D a register of the weights' scale, dx the vector's), to ACC with
// FMA (T scratch).
#define SCALED(v, I, D, T, ACC, FMA) \
	VCVTDQ2PS I, I; \
	VMULPS.BCST (320*v+288)(R9), D, T; \
	FMA T, I, ACC

// VECQ6 adds vector v of the block (at 320v(R9)) to ACC (Z12-Z15
// scratch): the lanes start with its −32 offsets; it leaves the block
// after the pass's last vector.
#define VECQ6(v, ACC) \
	VPMADDWD (320*v+256)(R9), Y8, Y12; \
	DOTS4(v); \
	SCALED(v, Z12, Z9, Z15, ACC, VFMADD231PS); \
	CMPQ DX, $(v+1); \
	JEQ stepdone

// Q6HALF unpacks half n of a Q6_K block at SI (ql at 64n, qh at 128+32n)
// into the steps' quants A and B: q = ql nibble | qh pair << 4, the
// pairs of qh's bits 0-1 and 2-3 for A, 4-5 and 6-7 for B.
#define Q6HALF(n, A, B) \
	VMOVDQU64 (64*n)(SI), Z12; \
	VMOVDQU (128+32*n)(SI), Y13; \
	VPSRLW $2, Y13, Y14; \
	VINSERTI64X4 $1, Y14, Z13, Z13; \
	VPANDD Z10, Z12, Z14; \
	VPSLLW $4, Z13, Z15; \
	VPANDD Z11, Z15, Z15; \
	VPORD Z15, Z14, A; \
	VPSRLW $4, Z12, Z14; \
	VPANDD Z10, Z14, Z14; \
	VPANDD Z11, Z13, Z15; \
	VPORD Z15, Z14, B

// AHEAD prefetches the step's block two rows on (BX the row's bytes): at
// 16 vectors a row takes long enough that its weights' stream from memory
// and the arithmetic only overlap where the loads are asked for early.
// Prefetches do not fault past the matrix's end.
#define AHEAD \
	PREFETCHT0 0(SI)(BX*2); \
	PREFETCHT0 64(SI)(BX*2); \
	PREFETCHT0 128(SI)(BX*2); \
	PREFETCHT0 192(SI)(BX*2)

// func dotQ6_KRowsVNNI(w *byte, rowBytes, rows int, x *byte, nv, steps int, out *float32, stride int)
// rows ≥ 1, 1 ≤ nv ≤ 16, steps ≥ 1; out[v·stride + r] for row r, vector v.
TEXT ·dotQ6_KRowsVNNI(SB), NOSPLIT, $0-64
	ARGS(320)
	MOVL $0x0f0f0f0f, AX
	VPBROADCASTD AX, Z10
	MOVL $0x30303030, AX
	VPBROADCASTD AX, Z11
row:
	ROWSTART
step:
	AHEAD
	Q6HALF(0, Z0, Z1)
	Q6HALF(1, Z2, Z3)
	VPMOVSXBW 192(SI), Y12
	SCALEWORDS(q6kperm)
	VPSLLW $5, Y12, Y13
	VPXOR Y8, Y8, Y8
	VPSUBW Y13, Y8, Y8
	MOVWLZX 208(SI), AX
	VMOVD AX, X9
	VCVTPH2PS X9, X9
	VBROADCASTSS X9, Z9
	VECS(VECQ6)
stepdone:
	ADDQ $210, SI
	STEPEND
	OUTS
rowdone:
	ROWEND

// VECQ4 adds vector v of the block (at 320v(R9)) to ACC (Z12-Z15
// scratch): the lanes times dw, less its mins' lanes (Z15) times dmin; it
// leaves the step after the pass's last vector.
#define VECQ4(v, ACC) \
	VPXORD Z12, Z12, Z12; \
	DOTS4(v); \
	VPMADDWD (320*v+256)(R9), Y8, Y15; \
	SCALED(v, Z12, Z9, Z14, ACC, VFMADD231PS); \
	SCALED(v, Z15, Z10, Z14, ACC, VFNMADD231PS); \
	CMPQ DX, $(v+1); \
	JEQ stepdone

// Q4STEP unpacks step c of a Q4_K block at SI (32 bytes of qs at
// 16+32c) into Q: the low nibbles, then the high nibbles.
#define Q4STEP(c, Q) \
	VMOVDQU (16+32*c)(SI), Y13; \
	VPSRLW $4, Y13, Y14; \
	VINSERTI64X4 $1, Y14, Z13, Z13; \
	VPANDD Z11, Z13, Q

// Q5STEP unpacks step c of a Q5_K block at SI (32 bytes of qs at
// 48+32c, and bit 2c of qh for the first 32 elements, 2c+1 for the
// next) into Q, Z10 holding qh in its low half and qh>>1 in its high
// half: the nibbles, then bit 2c of Z10 shifted to bit 4 (SHIFT by N)
// and ORed in
// (VPTERNLOGD 0xf8: Q | (shifted & 0x10)).
#define Q5STEP(c, Q, SHIFT, N) \
	VMOVDQU (48+32*c)(SI), Y13; \
	VPSRLW $4, Y13, Y14; \
	VINSERTI64X4 $1, Y14, Z13, Z13; \
	VPANDD Z11, Z13, Q; \
	SHIFT $N, Z10, Z14; \
	VPTERNLOGD.BCST $0xf8, q5kbit<>+0(SB), Z14, Q

// the bit Q5STEP keeps
DATA q5kbit<>+0(SB)/4, $0x10101010
GLOBL q5kbit<>(SB), RODATA|NOPTR, $4

// func dotK45RowsVNNI(w *byte, rowBytes, rows int, x *byte, nv, steps int, out *float32, stride int, blockBytes int)
// Q4_K rows (blockBytes 144) or Q5_K rows (176): the same but for the
// quants' unpacking. rows ≥ 1, 1 ≤ nv ≤ 16, steps ≥ 1; out[v·stride + r]
// for row r, vector v.
TEXT ·dotK45RowsVNNI(SB), NOSPLIT, $0-72
	ARGS(320)
	MOVQ blockBytes+64(FP), R11
	MOVL $0x0f0f0f0f, AX
	VPBROADCASTD AX, Z11
row:
	ROWSTART
step:
	AHEAD
	CMPQ R11, $144
	JNE q5
	Q4STEP(0, Z0)
	Q4STEP(1, Z1)
	Q4STEP(2, Z2)
	Q4STEP(3, Z3)
	JMP scales
q5:
	VMOVDQU 16(SI), Y10
	VPSRLW $1, Y10, Y14
	VINSERTI64X4 $1, Y14, Z10, Z10
	Q5STEP(0, Z0, VPSLLW, 4)
	Q5STEP(1, Z1, VPSLLW, 2)
	Q5STEP(2, Z2, VPSLLW, 0)
	Q5STEP(3, Z3, VPSRLW, 2)
scales:
	VMOVDQU 4(SI), X12
	VPSHUFD $0x98, X12, X13
	VPSRLVD q4kshift<>+0(SB), X13, X13
	VPAND q4kmask1<>+0(SB), X13, X13
	VPSHUFD $0x40, X12, X14
	VPSRLD $2, X14, X14
	VPAND q4kmask2<>+0(SB), X14, X14
	VPOR X14, X13, X13
	VPMOVZXBW X13, Y12
	SCALEWORDS(q4kperm)
	VMOVDQU q4kperm<>+256(SB), Y13
	VPERMW Y12, Y13, Y8
	MOVL (SI), AX
	VMOVD AX, X9
	VCVTPH2PS X9, X9
	VPSHUFD $0x55, X9, X10
	VBROADCASTSS X10, Z10
	VBROADCASTSS X9, Z9
	VECS(VECQ4)
stepdone:
	ADDQ R11, SI
	STEPEND
	OUTS
rowdone:
	ROWEND

// q6hl: VPERMW indices for the Q6_K panel's unpacking, table 2c+h for
// chunk c's elements 32h to 32h+31: word w takes scale 4c + 2h + w/16.
DATA q6hl<>+0(SB)/8, $0x0000000000000000
DATA q6hl<>+8(SB)/8, $0x0000000000000000
DATA q6hl<>+16(SB)/8, $0x0000000000000000
DATA q6hl<>+24(SB)/8, $0x0000000000000000
DATA q6hl<>+32(SB)/8, $0x0001000100010001
DATA q6hl<>+40(SB)/8, $0x0001000100010001
DATA q6hl<>+48(SB)/8, $0x0001000100010001
DATA q6hl<>+56(SB)/8, $0x0001000100010001
DATA q6hl<>+64(SB)/8, $0x0002000200020002
DATA q6hl<>+72(SB)/8, $0x0002000200020002
DATA q6hl<>+80(SB)/8, $0x0002000200020002
DATA q6hl<>+88(SB)/8, $0x0002000200020002
DATA q6hl<>+96(SB)/8, $0x0003000300030003
DATA q6hl<>+104(SB)/8, $0x0003000300030003
DATA q6hl<>+112(SB)/8, $0x0003000300030003
DATA q6hl<>+120(SB)/8, $0x0003000300030003
DATA q6hl<>+128(SB)/8, $0x0004000400040004
DATA q6hl<>+136(SB)/8, $0x0004000400040004
DATA q6hl<>+144(SB)/8, $0x0004000400040004
DATA q6hl<>+152(SB)/8, $0x0004000400040004
DATA q6hl<>+160(SB)/8, $0x0005000500050005
DATA q6hl<>+168(SB)/8, $0x0005000500050005
DATA q6hl<>+176(SB)/8, $0x0005000500050005
DATA q6hl<>+184(SB)/8, $0x0005000500050005
DATA q6hl<>+192(SB)/8, $0x0006000600060006
DATA q6hl<>+200(SB)/8, $0x0006000600060006
DATA q6hl<>+208(SB)/8, $0x0006000600060006
DATA q6hl<>+216(SB)/8, $0x0006000600060006
DATA q6hl<>+224(SB)/8, $0x0007000700070007
DATA q6hl<>+232(SB)/8, $0x0007000700070007
DATA q6hl<>+240(SB)/8, $0x0007000700070007
DATA q6hl<>+248(SB)/8, $0x0007000700070007
DATA q6hl<>+256(SB)/8, $0x0008000800080008
DATA q6hl<>+264(SB)/8, $0x0008000800080008
DATA q6hl<>+272(SB)/8, $0x0008000800080008
DATA q6hl<>+280(SB)/8, $0x0008000800080008
DATA q6hl<>+288(SB)/8, $0x0009000900090009
DATA q6hl<>+296(SB)/8, $0x0009000900090009
DATA q6hl<>+304(SB)/8, $0x0009000900090009
DATA q6hl<>+312(SB)/8, $0x0009000900090009
DATA q6hl<>+320(SB)/8, $0x000a000a000a000a
DATA q6hl<>+328(SB)/8, $0x000a000a000a000a
DATA q6hl<>+336(SB)/8, $0x000a000a000a000a
DATA q6hl<>+344(SB)/8, $0x000a000a000a000a
DATA q6hl<>+352(SB)/8, $0x000b000b000b000b
DATA q6hl<>+360(SB)/8, $0x000b000b000b000b
DATA q6hl<>+368(SB)/8, $0x000b000b000b000b
DATA q6hl<>+376(SB)/8, $0x000b000b000b000b
DATA q6hl<>+384(SB)/8, $0x000c000c000c000c
DATA q6hl<>+392(SB)/8, $0x000c000c000c000c
DATA q6hl<>+400(SB)/8, $0x000c000c000c000c
DATA q6hl<>+408(SB)/8, $0x000c000c000c000c
DATA q6hl<>+416(SB)/8, $0x000d000d000d000d
DATA q6hl<>+424(SB)/8, $0x000d000d000d000d
DATA q6hl<>+432(SB)/8, $0x000d000d000d000d
DATA q6hl<>+440(SB)/8, $0x000d000d000d000d
DATA q6hl<>+448(SB)/8, $0x000e000e000e000e
DATA q6hl<>+456(SB)/8, $0x000e000e000e000e
DATA q6hl<>+464(SB)/8, $0x000e000e000e000e
DATA q6hl<>+472(SB)/8, $0x000e000e000e000e
DATA q6hl<>+480(SB)/8, $0x000f000f000f000f
DATA q6hl<>+488(SB)/8, $0x000f000f000f000f
DATA q6hl<>+496(SB)/8, $0x000f000f000f000f
DATA q6hl<>+504(SB)/8, $0x000f000f000f000f
GLOBL q6hl<>(SB), RODATA|NOPTR, $512

// Q6CHUNK writes chunk c (64 elements, quants less 32 in QZ/QY) of a
// Q6_K panel row: w = q·scale as words (Z12 the 16 scale words, IL and
// IH the chunk's VPERMW indices), hi = w>>6 at 2048c(DI) and lo = w&63
// (Z8) at 2048c+1024(DI), 64 bytes each; Z16-Z19 scratch.
#define Q6CHUNK(QZ, QY, c, IL, IH) \
	VPSUBB Z9, QZ, QZ; \
	VPMOVSXBW QY, Z16; \
	VEXTRACTI64X4 $1, QZ, Y17; \
	VPMOVSXBW Y17, Z17; \
	VPERMW Z12, IL, Z18; \
	VPERMW Z12, IH, Z19; \
	VPMULLW Z18, Z16, Z16; \
	VPMULLW Z19, Z17, Z17; \
	VPSRAW $6, Z16, Z18; \
	VPSRAW $6, Z17, Z19; \
	VPMOVWB Z18, (2048*c)(DI); \
	VPMOVWB Z19, (2048*c+32)(DI); \
	VPANDD Z8, Z16, Z16; \
	VPANDD Z8, Z17, Z17; \
	VPMOVWB Z16, (2048*c+1024)(DI); \
	VPMOVWB Z17, (2048*c+1056)(DI)

// func unpackQ6_KHiLoVNNI(q *byte, dw *float32, src *byte, supers int, ahead *byte)
// One row of a Q6_K AMX panel (unpackQ6_KHiLoGo's layout; q and dw at the
// row's place): per super-block the four chunks' hi and lo bytes (8 KiB
// apart a super-block) and d (64 bytes apart); each super-block of the
// row at ahead (the next panel's) prefetched. supers ≥ 1.
TEXT ·unpackQ6_KHiLoVNNI(SB), NOSPLIT, $0-40
	MOVQ q+0(FP), DI
	MOVQ dw+8(FP), R8
	MOVQ src+16(FP), SI
	MOVQ supers+24(FP), CX
	MOVQ ahead+32(FP), DX
	MOVL $0x0f0f0f0f, AX
	VPBROADCASTD AX, Z10
	MOVL $0x30303030, AX
	VPBROADCASTD AX, Z11
	MOVL $0x20202020, AX
	VPBROADCASTD AX, Z9
	MOVL $0x003f003f, AX
	VPBROADCASTD AX, Z8
	VMOVDQU64 q6hl<>+0(SB), Z24
	VMOVDQU64 q6hl<>+64(SB), Z25
	VMOVDQU64 q6hl<>+128(SB), Z26
	VMOVDQU64 q6hl<>+192(SB), Z27
	VMOVDQU64 q6hl<>+256(SB), Z28
	VMOVDQU64 q6hl<>+320(SB), Z29
	VMOVDQU64 q6hl<>+384(SB), Z30
	VMOVDQU64 q6hl<>+448(SB), Z31
hilosuper:
	PREFETCHT0 0(DX)
	PREFETCHT0 64(DX)
	PREFETCHT0 128(DX)
	PREFETCHT0 192(DX)
	ADDQ $210, DX
	Q6HALF(0, Z0, Z1)
	Q6HALF(1, Z2, Z3)
	VPMOVSXBW 192(SI), Y12
	MOVWLZX 208(SI), AX
	VMOVD AX, X13
	VCVTPH2PS X13, X13
	VMOVSS X13, (R8)
	Q6CHUNK(Z0, Y0, 0, Z24, Z25)
	Q6CHUNK(Z1, Y1, 1, Z26, Z27)
	Q6CHUNK(Z2, Y2, 2, Z28, Z29)
	Q6CHUNK(Z3, Y3, 3, Z30, Z31)
	ADDQ $210, SI
	ADDQ $8192, DI
	ADDQ $64, R8
	DECQ CX
	JNZ hilosuper
	VZEROUPPER
	RET
