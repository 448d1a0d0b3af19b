//go:build amd64 && !purego

#include "textflag.h"
#include "hsum_amd64.h"

// AVX2 + FMA + F16C twins of dotF32Go, dotF16Go, dotRowQ8_0Go and the
// integer core of dotRowQ4_KGo. Integer products of int8 pairs use
// llama.cpp's idiom: VPSIGNB moves the sign of one factor onto the other
// so VPMADDUBSW (unsigned × signed bytes, pairwise sums to int16) applies;
// |q| ≤ 128 and |x| ≤ 127 keep the pair sums below 2^15.


// func dotF32AVX2(w *float32, x *float32, n int) float32
// n is a multiple of 32.
TEXT ·dotF32AVX2(SB), NOSPLIT, $0-28
	MOVQ w+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	SHRQ $5, CX
	JZ f32done
f32loop:
	PREFETCHT0 1024(SI)
	VMOVUPS (SI), Y4
	VMOVUPS 32(SI), Y5
	VMOVUPS 64(SI), Y6
	VMOVUPS 96(SI), Y7
	VFMADD231PS (DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ $128, SI
	ADDQ $128, DI
	DECQ CX
	JNZ f32loop
f32done:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	HSUM
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// func dotF16AVX2(w *uint16, x *float32, n int) float32
// n is a multiple of 32.
TEXT ·dotF16AVX2(SB), NOSPLIT, $0-28
	MOVQ w+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	SHRQ $5, CX
	JZ f16done
f16loop:
	PREFETCHT0 512(SI)
	VCVTPH2PS (SI), Y4
	VCVTPH2PS 16(SI), Y5
	VCVTPH2PS 32(SI), Y6
	VCVTPH2PS 48(SI), Y7
	VFMADD231PS (DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ $64, SI
	ADDQ $128, DI
	DECQ CX
	JNZ f16loop
f16done:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	HSUM
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// Q8BLOCK adds the dot product of one Q8_0 weight block at off(SI) with
// the activation block at xoff(DI), scaled by d_w·d_x (d_x at doff(DX)),
// to ACC. VPSIGNB moves the weight signs onto the activation so that
// VPMADDUBSW can multiply |w| (unsigned) by ±x (signed).
#define Q8BLOCK(off, xoff, doff, SX, SY, W, A, X, ACC) \
	MOVWLZX off(SI), AX; \
	VMOVD AX, SX; \
	VCVTPH2PS SX, SX; \
	VMULSS doff(DX), SX, SX; \
	VBROADCASTSS SX, SY; \
	VMOVDQU (off+2)(SI), W; \
	VMOVDQU xoff(DI), X; \
	VPSIGNB W, W, A; \
	VPSIGNB W, X, X; \
	VPMADDUBSW X, A, X; \
	VPMADDWD Y7, X, X; \
	VCVTDQ2PS X, X; \
	VFMADD231PS X, SY, ACC

// func dotQ8_0AVX2(w *byte, xq *int8, xd *float32, nb int) float32
// w: nb Q8_0 blocks (34 bytes); xq, xd: the activation's quants and
// per-block scales. Two blocks per iteration into two accumulators, so
// the FMA latency does not bound the loop.
TEXT ·dotQ8_0AVX2(SB), NOSPLIT, $0-36
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), DX
	MOVQ nb+24(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y8, Y8, Y8
	MOVL $0x00010001, AX
	VMOVD AX, X7
	VPBROADCASTD X7, Y7
	CMPQ CX, $2
	JB q8tail
q8pair:
	PREFETCHT0 512(SI) // weights stream from memory in decode: ask ahead
	Q8BLOCK(0, 0, 0, X1, Y1, Y2, Y4, Y5, Y0)
	Q8BLOCK(34, 32, 4, X9, Y9, Y10, Y12, Y11, Y8)
	ADDQ $68, SI
	ADDQ $64, DI
	ADDQ $8, DX
	SUBQ $2, CX
	CMPQ CX, $2
	JAE q8pair
q8tail:
	TESTQ CX, CX
	JZ q8done
	Q8BLOCK(0, 0, 0, X1, Y1, Y2, Y4, Y5, Y0)
q8done:
	VADDPS Y8, Y0, Y0
	HSUM
	VZEROUPPER
	MOVSS X0, ret+32(FP)
	RET

// Q4K_HALF multiplies the 32 nibbles in Y3 (one sub-block) by the 32
// activation bytes at xoff(DI), weights the pair sums by the int16 scale
// at soff(R8) and adds them to the int32 lanes of Y8.
#define Q4K_HALF(xoff, soff) \
	VPMADDUBSW xoff(DI), Y3, Y5; \
	VPBROADCASTW soff(R8), Y9; \
	VPMADDWD Y9, Y5, Y5; \
	VPADDD Y5, Y8, Y8

#define Q4K_CHUNK(c) \
	VMOVDQU (32*c)(SI), Y2; \
	VPAND Y15, Y2, Y3; \
	Q4K_HALF(64*c, 4*c); \
	VPSRLW $4, Y2, Y3; \
	VPAND Y15, Y3, Y3; \
	Q4K_HALF(64*c+32, 4*c+2)



// func dotQ4_0AVX2(w *byte, xq *int8, xd *float32, nb int) float32
// As dotQ8_0AVX2, the 16 quant bytes unpacked into 32 nibbles (low
// nibbles first, as the elements are stored) less 8.
TEXT ·dotQ4_0AVX2(SB), NOSPLIT, $0-36
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), DX
	MOVQ nb+24(FP), CX
	VXORPS Y0, Y0, Y0
	MOVL $0x00010001, AX
	VMOVD AX, X7
	VPBROADCASTD X7, Y7
	MOVL $0x0f0f0f0f, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15
	MOVL $0x08080808, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
	TESTQ CX, CX
	JZ q40done
q40loop:
	PREFETCHT0 512(SI)
	MOVWLZX (SI), AX
	VMOVD AX, X1
	VCVTPH2PS X1, X1
	VMULSS (DX), X1, X1
	VBROADCASTSS X1, Y1
	VMOVDQU 2(SI), X2
	VPSRLW $4, X2, X3
	VINSERTI128 $1, X3, Y2, Y2
	VPAND Y15, Y2, Y2
	VPSUBB Y14, Y2, Y2
	VMOVDQU (DI), Y3
	VPSIGNB Y2, Y2, Y4
	VPSIGNB Y2, Y3, Y5
	VPMADDUBSW Y5, Y4, Y6
	VPMADDWD Y7, Y6, Y6
	VCVTDQ2PS Y6, Y6
	VFMADD231PS Y6, Y1, Y0
	ADDQ $18, SI
	ADDQ $32, DI
	ADDQ $4, DX
	DECQ CX
	JNZ q40loop
q40done:
	HSUM
	VZEROUPPER
	MOVSS X0, ret+32(FP)
	RET

// Q6K_PART multiplies the 32 unsigned 6-bit quants in Y3 by the
// activation bytes at xoff(DI) and adds the pair sums, weighted by the
// int16 scales at soff(R8) (lanes 0-7) and soff+2(R8) (lanes 8-15), to Y8.
#define Q6K_PART(xoff, soff) \
	VPMADDUBSW xoff(DI), Y3, Y5; \
	VPBROADCASTW soff(R8), X9; \
	VPBROADCASTW (soff+2)(R8), X13; \
	VINSERTI128 $1, X13, Y9, Y9; \
	VPMADDWD Y9, Y5, Y5; \
	VPADDD Y5, Y8, Y8

// Q6K_HALF handles 128 elements: ql at (64n)(SI), qh at (128+32n)(SI).
#define Q6K_HALF(n) \
	VMOVDQU (64*n)(SI), Y10; \
	VMOVDQU (64*n+32)(SI), Y11; \
	VMOVDQU (128+32*n)(SI), Y12; \
	VPAND Y15, Y10, Y3; \
	VPSLLW $4, Y12, Y4; \
	VPAND Y14, Y4, Y4; \
	VPOR Y4, Y3, Y3; \
	Q6K_PART(128*n, 16*n); \
	VPAND Y15, Y11, Y3; \
	VPSLLW $2, Y12, Y4; \
	VPAND Y14, Y4, Y4; \
	VPOR Y4, Y3, Y3; \
	Q6K_PART(128*n+32, 16*n+4); \
	VPSRLW $4, Y10, Y3; \
	VPAND Y15, Y3, Y3; \
	VPAND Y14, Y12, Y4; \
	VPOR Y4, Y3, Y3; \
	Q6K_PART(128*n+64, 16*n+8); \
	VPSRLW $4, Y11, Y3; \
	VPAND Y15, Y3, Y3; \
	VPSRLW $2, Y12, Y4; \
	VPAND Y14, Y4, Y4; \
	VPOR Y4, Y3, Y3; \
	Q6K_PART(128*n+96, 16*n+12)

// func dotQ6_KAVX2(w *byte, xq *int8, sc *int16, d *float32, nb int) float32
// w: nb Q6_K blocks (210-byte stride); sc: the 16 sub-block scales of each
// block as int16; d: d_w·d_x per block. Returns Σ_b d[b]·Σ_g sc[g]·Σ q·x
// with q unsigned (0..63); the -32 offset is the caller's.
TEXT ·dotQ6_KAVX2(SB), NOSPLIT, $0-44
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ sc+16(FP), R8
	MOVQ d+24(FP), DX
	MOVQ nb+32(FP), CX
	VXORPS Y0, Y0, Y0
	MOVL $0x0f0f0f0f, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15
	MOVL $0x30303030, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
	TESTQ CX, CX
	JZ q6kdone
q6kloop:
	PREFETCHT0 640(SI)
	PREFETCHT0 704(SI)
	PREFETCHT0 768(SI)
	PREFETCHT0 832(SI)
	VPXOR Y8, Y8, Y8
	Q6K_HALF(0)
	Q6K_HALF(1)
	VCVTDQ2PS Y8, Y8
	VBROADCASTSS (DX), Y1
	VFMADD231PS Y8, Y1, Y0
	ADDQ $210, SI
	ADDQ $256, DI
	ADDQ $32, R8
	ADDQ $4, DX
	DECQ CX
	JNZ q6kloop
q6kdone:
	HSUM
	VZEROUPPER
	MOVSS X0, ret+40(FP)
	RET

// Q8ACT multiplies the activation block at BX(QP), sign-adjusted by the
// weights (signs in Y2), by |w| (Y4), scales by d_w (X1) · d_x (at (DP))
// and adds to ACC.
#define Q8ACT(QP, DP, ACC) \
	VMOVDQU (QP)(BX*1), Y5; \
	VPSIGNB Y2, Y5, Y5; \
	VPMADDUBSW Y5, Y4, Y5; \
	VPMADDWD Y7, Y5, Y5; \
	VCVTDQ2PS Y5, Y5; \
	VMULSS (DP), X1, X6; \
	VBROADCASTSS X6, Y6; \
	VFMADD231PS Y5, Y6, ACC

// Q8X4STEP runs one weight block against the four activations into the
// accumulators A0–A3 and moves every pointer to the next block.
#define Q8X4STEP(A0, A1, A2, A3) \
	MOVWLZX (SI), AX; \
	VMOVD AX, X1; \
	VCVTPH2PS X1, X1; \
	VMOVDQU 2(SI), Y2; \
	VPSIGNB Y2, Y2, Y4; \
	Q8ACT(R8, R12, A0); \
	Q8ACT(R9, R13, A1); \
	Q8ACT(R10, DX, A2); \
	Q8ACT(R11, DI, A3); \
	ADDQ $34, SI; \
	ADDQ $32, BX; \
	ADDQ $4, R12; \
	ADDQ $4, R13; \
	ADDQ $4, DX; \
	ADDQ $4, DI

// func dotQ8_0x4AVX2(w *byte, xq *[4]*int8, xd *[4]*float32, nb int, out *[4]float32)
// Four activations against one Q8_0 row: each weight block is loaded,
// made absolute and its scale converted once for all four (prefill).
// Each activation's sum is kept as dotQ8_0AVX2 keeps it (even blocks in
// one accumulator, odd ones in another, the last odd block with the
// even ones, the two added at the end), so that a vector gets the same
// bits whether it goes alone or four at a time.
TEXT ·dotQ8_0x4AVX2(SB), NOSPLIT, $0-40
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), AX
	MOVQ 0(AX), R8
	MOVQ 8(AX), R9
	MOVQ 16(AX), R10
	MOVQ 24(AX), R11
	MOVQ xd+16(FP), AX
	MOVQ 0(AX), R12
	MOVQ 8(AX), R13
	MOVQ 16(AX), DX
	MOVQ 24(AX), DI
	MOVQ nb+24(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	VXORPS Y12, Y12, Y12
	VXORPS Y13, Y13, Y13
	VXORPS Y14, Y14, Y14
	MOVL $0x00010001, AX
	VMOVD AX, X7
	VPBROADCASTD X7, Y7
	XORQ BX, BX // byte offset into the activation quants
	CMPQ CX, $2
	JB q8x4tail
q8x4loop:
	Q8X4STEP(Y0, Y8, Y9, Y10)
	Q8X4STEP(Y11, Y12, Y13, Y14)
	SUBQ $2, CX
	CMPQ CX, $2
	JAE q8x4loop
q8x4tail:
	TESTQ CX, CX
	JZ q8x4done
	Q8X4STEP(Y0, Y8, Y9, Y10)
q8x4done:
	VADDPS Y11, Y0, Y0
	VADDPS Y12, Y8, Y8
	VADDPS Y13, Y9, Y9
	VADDPS Y14, Y10, Y10
	MOVQ out+32(FP), AX
	HSUM
	VMOVSS X0, 0(AX)
	VMOVAPS Y8, Y0
	HSUM
	VMOVSS X0, 4(AX)
	VMOVAPS Y9, Y0
	HSUM
	VMOVSS X0, 8(AX)
	VMOVAPS Y10, Y0
	HSUM
	VMOVSS X0, 12(AX)
	VZEROUPPER
	RET

// K45HEAD unpacks the 6-bit scales and mins of the Q4_K/Q5_K block at SI
// (the 12-byte layout scaleMinK4 reads) with word operations: the scales
// as int16s at (R8) for Q4K_HALF, the mins against the activation's
// 32-element sums (BX) into the float32 lanes of Y10 (times dmin·dx), and
// d·dx broadcast in Y4.
#define K45HEAD \
	MOVL 4(SI), AX; \
	MOVL 8(SI), R9; \
	MOVL 12(SI), R10; \
	MOVL AX, R11; \
	ANDL $0x3f3f3f3f, R11; \
	MOVL R10, R12; \
	ANDL $0x0f0f0f0f, R12; \
	MOVL AX, R13; \
	SHRL $6, R13; \
	ANDL $0x03030303, R13; \
	SHLL $4, R13; \
	ORL  R13, R12; \
	MOVL R9, R13; \
	ANDL $0x3f3f3f3f, R13; \
	SHRL $4, R10; \
	ANDL $0x0f0f0f0f, R10; \
	SHRL $6, R9; \
	ANDL $0x03030303, R9; \
	SHLL $4, R9; \
	ORL  R9, R10; \
	VMOVD     R11, X1; \
	VPINSRD   $1, R12, X1, X1; \
	VPMOVZXBW X1, X1; \
	VMOVDQU   X1, (R8); \
	VMOVD     R13, X2; \
	VPINSRD   $1, R10, X2, X2; \
	VPMOVZXBD X2, Y2; \
	VPMULLD   (BX), Y2, Y2; \
	VCVTDQ2PS Y2, Y2; \
	MOVWLZX   2(SI), AX; \
	VMOVD     AX, X3; \
	VCVTPH2PS X3, X3; \
	VMULSS    (DX), X3, X3; \
	VBROADCASTSS X3, Y3; \
	VFMADD231PS Y2, Y3, Y10; \
	MOVWLZX   (SI), AX; \
	VMOVD     AX, X4; \
	VCVTPH2PS X4, X4; \
	VMULSS    (DX), X4, X4; \
	VBROADCASTSS X4, Y4

// func dotQ4_KFullAVX2(w *byte, xq *int8, xd *float32, bs *int32, nb int) float32
// The whole Q4_K row in assembly: per 144-byte block, the 6-bit scales
// and mins are unpacked with word operations (the 12-byte layout scaleMinK4 reads), the
// scales drive the nibble products (Q4K_CHUNK), and the mins meet the
// activation's 32-element sums bs in a vector accumulator subtracted at
// the end: Σ_b d·dx·Σ_j sc_j·(q·x)_j − dmin·dx·Σ_j m_j·bs_j.
TEXT ·dotQ4_KFullAVX2(SB), NOSPLIT, $16-44
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), DX
	MOVQ bs+24(FP), BX
	MOVQ nb+32(FP), CX
	LEAQ sc-16(SP), R8
	VXORPS Y0, Y0, Y0
	VXORPS Y10, Y10, Y10
	MOVL $0x0f0f0f0f, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15
	TESTQ CX, CX
	JZ q4kfdone

q4kfloop:
	// Fetch four blocks ahead: decode streams weights from memory and the
	// scale unpacking below would otherwise wait on each block's first line.
	PREFETCHT0 576(SI)
	PREFETCHT0 640(SI)
	PREFETCHT0 704(SI)
	K45HEAD

	VPXOR Y8, Y8, Y8
	ADDQ  $16, SI
	Q4K_CHUNK(0)
	Q4K_CHUNK(1)
	Q4K_CHUNK(2)
	Q4K_CHUNK(3)
	ADDQ  $128, SI
	VCVTDQ2PS Y8, Y8
	VFMADD231PS Y8, Y4, Y0

	ADDQ $256, DI
	ADDQ $4, DX
	ADDQ $32, BX
	DECQ CX
	JNZ  q4kfloop

q4kfdone:
	VSUBPS Y10, Y0, Y0
	HSUM
	VZEROUPPER
	MOVSS X0, ret+40(FP)
	RET

// Q8ROW adds the dot product of the Q8_0 block at off(R) with the
// activation block in Y1 (scale d_x in X2) to ACC: VPSIGNB moves the
// weight signs onto the activation so that VPMADDUBSW can multiply |w| by
// ±x, as in Q8BLOCK.
#define Q8ROW(R, off, ACC) \
	MOVWLZX off(R), AX; \
	VMOVD AX, X3; \
	VCVTPH2PS X3, X3; \
	VMULSS X2, X3, X3; \
	VBROADCASTSS X3, Y3; \
	VMOVDQU (off+2)(R), Y4; \
	VPSIGNB Y4, Y4, Y5; \
	VPSIGNB Y4, Y1, Y6; \
	VPMADDUBSW Y6, Y5, Y6; \
	VPMADDWD Y7, Y6, Y6; \
	VCVTDQ2PS Y6, Y6; \
	VFMADD231PS Y6, Y3, ACC

// func dotQ8_0R4AVX2(w *byte, stride int, xq *int8, xd *float32, nb int, out *[4]float32)
// Four Q8_0 rows (stride bytes apart) against one activation: each
// activation block is loaded once for the four rows, and one call serves
// four rows (decode, where a row of a small model is only a few blocks).
// Each row sums exactly as dotQ8_0AVX2 does (even blocks in one
// accumulator, odd in another, added at the end), so the results are the
// same bits.
TEXT ·dotQ8_0R4AVX2(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), SI
	MOVQ stride+8(FP), BX
	MOVQ xq+16(FP), DI
	MOVQ xd+24(FP), DX
	MOVQ nb+32(FP), CX
	LEAQ (SI)(BX*1), R8
	LEAQ (R8)(BX*1), R9
	LEAQ (R9)(BX*1), R10
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	VXORPS Y12, Y12, Y12
	VXORPS Y13, Y13, Y13
	VXORPS Y14, Y14, Y14
	VXORPS Y15, Y15, Y15
	MOVL $0x00010001, AX
	VMOVD AX, X7
	VPBROADCASTD X7, Y7
	CMPQ CX, $2
	JB q8r4tail
q8r4pair:
	PREFETCHT0 512(SI)
	PREFETCHT0 512(R8)
	PREFETCHT0 512(R9)
	PREFETCHT0 512(R10)
	VMOVDQU (DI), Y1
	VMOVSS (DX), X2
	Q8ROW(SI, 0, Y8)
	Q8ROW(R8, 0, Y9)
	Q8ROW(R9, 0, Y10)
	Q8ROW(R10, 0, Y11)
	VMOVDQU 32(DI), Y1
	VMOVSS 4(DX), X2
	Q8ROW(SI, 34, Y12)
	Q8ROW(R8, 34, Y13)
	Q8ROW(R9, 34, Y14)
	Q8ROW(R10, 34, Y15)
	ADDQ $68, SI
	ADDQ $68, R8
	ADDQ $68, R9
	ADDQ $68, R10
	ADDQ $64, DI
	ADDQ $8, DX
	SUBQ $2, CX
	CMPQ CX, $2
	JAE q8r4pair
q8r4tail:
	TESTQ CX, CX
	JZ q8r4done
	VMOVDQU (DI), Y1
	VMOVSS (DX), X2
	Q8ROW(SI, 0, Y8)
	Q8ROW(R8, 0, Y9)
	Q8ROW(R9, 0, Y10)
	Q8ROW(R10, 0, Y11)
q8r4done:
	MOVQ out+40(FP), AX
	VADDPS Y12, Y8, Y0
	HSUM
	VMOVSS X0, 0(AX)
	VADDPS Y13, Y9, Y0
	HSUM
	VMOVSS X0, 4(AX)
	VADDPS Y14, Y10, Y0
	HSUM
	VMOVSS X0, 8(AX)
	VADDPS Y15, Y11, Y0
	HSUM
	VMOVSS X0, 12(AX)
	VZEROUPPER
	RET

// The four-row Q8_0 decode kernel with AVX-512 VNNI: two blocks of a row
// per 512-bit register (block b in lanes 0-7, b+1 in lanes 8-15). The
// weight bytes, shifted to unsigned by adding 128 (XOR 0x80), meet the
// activation bytes in VPDPBUSD, whose int32 lanes start from −128·Σx of
// their four activations (computed once per pair of blocks for the four
// rows): each lane ends at Σ₄ w·x exactly, the integer the AVX2 kernels'
// VPMADDUBSW/VPMADDWD give. The scales f16(d_w)·d_x of the four rows'
// two blocks are made in one vector and spread to lanes by VPERMPS.
// Lanes 0-7 then accumulate exactly as dotQ8_0AVX2's even-block
// accumulator, lanes 8-15 as its odd one; an odd last block goes to the
// even half, the odd half is added last and HSUM sums: the same bits.

// the VPERMPS indices of row r: lanes 0-7 take scale 2r, lanes 8-15
// scale 2r+1
DATA q8r4perm<>+0(SB)/4, $0
DATA q8r4perm<>+4(SB)/4, $0
DATA q8r4perm<>+8(SB)/4, $0
DATA q8r4perm<>+12(SB)/4, $0
DATA q8r4perm<>+16(SB)/4, $0
DATA q8r4perm<>+20(SB)/4, $0
DATA q8r4perm<>+24(SB)/4, $0
DATA q8r4perm<>+28(SB)/4, $0
DATA q8r4perm<>+32(SB)/4, $1
DATA q8r4perm<>+36(SB)/4, $1
DATA q8r4perm<>+40(SB)/4, $1
DATA q8r4perm<>+44(SB)/4, $1
DATA q8r4perm<>+48(SB)/4, $1
DATA q8r4perm<>+52(SB)/4, $1
DATA q8r4perm<>+56(SB)/4, $1
DATA q8r4perm<>+60(SB)/4, $1
DATA q8r4perm<>+64(SB)/4, $2
DATA q8r4perm<>+68(SB)/4, $2
DATA q8r4perm<>+72(SB)/4, $2
DATA q8r4perm<>+76(SB)/4, $2
DATA q8r4perm<>+80(SB)/4, $2
DATA q8r4perm<>+84(SB)/4, $2
DATA q8r4perm<>+88(SB)/4, $2
DATA q8r4perm<>+92(SB)/4, $2
DATA q8r4perm<>+96(SB)/4, $3
DATA q8r4perm<>+100(SB)/4, $3
DATA q8r4perm<>+104(SB)/4, $3
DATA q8r4perm<>+108(SB)/4, $3
DATA q8r4perm<>+112(SB)/4, $3
DATA q8r4perm<>+116(SB)/4, $3
DATA q8r4perm<>+120(SB)/4, $3
DATA q8r4perm<>+124(SB)/4, $3
DATA q8r4perm<>+128(SB)/4, $4
DATA q8r4perm<>+132(SB)/4, $4
DATA q8r4perm<>+136(SB)/4, $4
DATA q8r4perm<>+140(SB)/4, $4
DATA q8r4perm<>+144(SB)/4, $4
DATA q8r4perm<>+148(SB)/4, $4
DATA q8r4perm<>+152(SB)/4, $4
DATA q8r4perm<>+156(SB)/4, $4
DATA q8r4perm<>+160(SB)/4, $5
DATA q8r4perm<>+164(SB)/4, $5
DATA q8r4perm<>+168(SB)/4, $5
DATA q8r4perm<>+172(SB)/4, $5
DATA q8r4perm<>+176(SB)/4, $5
DATA q8r4perm<>+180(SB)/4, $5
DATA q8r4perm<>+184(SB)/4, $5
DATA q8r4perm<>+188(SB)/4, $5
DATA q8r4perm<>+192(SB)/4, $6
DATA q8r4perm<>+196(SB)/4, $6
DATA q8r4perm<>+200(SB)/4, $6
DATA q8r4perm<>+204(SB)/4, $6
DATA q8r4perm<>+208(SB)/4, $6
DATA q8r4perm<>+212(SB)/4, $6
DATA q8r4perm<>+216(SB)/4, $6
DATA q8r4perm<>+220(SB)/4, $6
DATA q8r4perm<>+224(SB)/4, $7
DATA q8r4perm<>+228(SB)/4, $7
DATA q8r4perm<>+232(SB)/4, $7
DATA q8r4perm<>+236(SB)/4, $7
DATA q8r4perm<>+240(SB)/4, $7
DATA q8r4perm<>+244(SB)/4, $7
DATA q8r4perm<>+248(SB)/4, $7
DATA q8r4perm<>+252(SB)/4, $7
GLOBL q8r4perm<>(SB), RODATA|NOPTR, $256

// Q8R4ROW adds row R's two blocks (at off(R)) to ACC: W, I, S scratch,
// PERM the row's indices.
#define Q8R4ROW(R, PERM, W, YW, I, S, ACC) \
	VMOVDQU 2(R), YW; \
	VINSERTI64X4 $1, 36(R), W, W; \
	VPXORD Z31, W, W; \
	VMOVDQA64 Z1, I; \
	VPDPBUSD Z0, W, I; \
	VCVTDQ2PS I, I; \
	VPERMPS Z12, PERM, S; \
	VFMADD231PS S, I, ACC

// func dotQ8_0R4VNNI(w *byte, stride int, xq *int8, xd *float32, nb int, out *[4]float32)
TEXT ·dotQ8_0R4VNNI(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), SI
	MOVQ stride+8(FP), BX
	MOVQ xq+16(FP), DI
	MOVQ xd+24(FP), DX
	MOVQ nb+32(FP), CX
	LEAQ (SI)(BX*1), R8
	LEAQ (R8)(BX*1), R9
	LEAQ (R9)(BX*1), R10
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z26, Z26, Z26
	MOVL $0x80808080, AX
	VPBROADCASTD AX, Z31
	VMOVDQU32 q8r4perm<>+0(SB), Z27
	VMOVDQU32 q8r4perm<>+64(SB), Z28
	VMOVDQU32 q8r4perm<>+128(SB), Z29
	VMOVDQU32 q8r4perm<>+192(SB), Z30
	CMPQ CX, $2
	JB q8vtail
q8vpair:
	// 2 KiB ahead in each row: 512 B left the 16-core Xeon's single
	// thread waiting on L3 (the 22M model's decode, 4 threads, +7-16%)
	PREFETCHT0 2048(SI)
	PREFETCHT0 2048(R8)
	PREFETCHT0 2048(R9)
	PREFETCHT0 2048(R10)
	VMOVDQU64 (DI), Z0
	VPXORD Z1, Z1, Z1
	VPDPBUSD Z0, Z31, Z1
	VPSUBD Z1, Z26, Z1
	MOVWLZX (SI), AX
	VMOVD AX, X12
	VPINSRW $1, 34(SI), X12, X12
	VPINSRW $2, (R8), X12, X12
	VPINSRW $3, 34(R8), X12, X12
	VPINSRW $4, (R9), X12, X12
	VPINSRW $5, 34(R9), X12, X12
	VPINSRW $6, (R10), X12, X12
	VPINSRW $7, 34(R10), X12, X12
	VCVTPH2PS X12, Y12
	VBROADCASTSD (DX), Y13
	VMULPS Y13, Y12, Y12
	Q8R4ROW(SI, Z27, Z2, Y2, Z14, Z18, Z8)
	Q8R4ROW(R8, Z28, Z3, Y3, Z15, Z19, Z9)
	Q8R4ROW(R9, Z29, Z4, Y4, Z16, Z20, Z10)
	Q8R4ROW(R10, Z30, Z5, Y5, Z17, Z21, Z11)
	ADDQ $68, SI
	ADDQ $68, R8
	ADDQ $68, R9
	ADDQ $68, R10
	ADDQ $64, DI
	ADDQ $8, DX
	SUBQ $2, CX
	CMPQ CX, $2
	JAE q8vpair
q8vtail:
	// the odd halves out first: the 256-bit operations below clear the
	// upper halves of their registers
	VEXTRACTF64X4 $1, Z8, Y22
	VEXTRACTF64X4 $1, Z9, Y23
	VEXTRACTF64X4 $1, Z10, Y24
	VEXTRACTF64X4 $1, Z11, Y25
	TESTQ CX, CX
	JZ q8vdone
	MOVL $0x00010001, AX
	VMOVD AX, X7
	VPBROADCASTD X7, Y7
	VMOVDQU (DI), Y1
	VMOVSS (DX), X2
	Q8ROW(SI, 0, Y8)
	Q8ROW(R8, 0, Y9)
	Q8ROW(R9, 0, Y10)
	Q8ROW(R10, 0, Y11)
q8vdone:
	MOVQ out+40(FP), AX
	VADDPS Y22, Y8, Y0
	HSUM
	VMOVSS X0, 0(AX)
	VADDPS Y23, Y9, Y0
	HSUM
	VMOVSS X0, 4(AX)
	VADDPS Y24, Y10, Y0
	HSUM
	VMOVSS X0, 8(AX)
	VADDPS Y25, Y11, Y0
	HSUM
	VMOVSS X0, 12(AX)
	VZEROUPPER
	RET

// F16R4ROW adds row R's 32 elements (fp16 at R) times the activation in
// Y0-Y3 to its accumulators A0-A3, as dotF16AVX2's loop does.
#define F16R4ROW(R, A0, A1, A2, A3) \
	VCVTPH2PS (R), Y4; \
	VCVTPH2PS 16(R), Y5; \
	VCVTPH2PS 32(R), Y6; \
	VCVTPH2PS 48(R), Y7; \
	VFMADD231PS Y0, Y4, A0; \
	VFMADD231PS Y1, Y5, A1; \
	VFMADD231PS Y2, Y6, A2; \
	VFMADD231PS Y3, Y7, A3

// F16R4OUT stores the sum of A0-A3, added as dotF16AVX2 adds its
// accumulators, to off(AX).
#define F16R4OUT(A0, A1, A2, A3, off) \
	VMOVAPS A0, Y0; \
	VMOVAPS A1, Y1; \
	VMOVAPS A2, Y2; \
	VMOVAPS A3, Y3; \
	VADDPS Y1, Y0, Y0; \
	VADDPS Y3, Y2, Y2; \
	VADDPS Y2, Y0, Y0; \
	HSUM; \
	VMOVSS X0, off(AX)

// func dotF16R4AVX512(w *uint16, stride int, x *float32, n int, out *[4]float32)
// Four fp16 weight rows (stride bytes apart) against one activation of n
// elements (a multiple of 32): each 32 activation values are loaded once
// for the four rows, whose sixteen accumulators are Y16-Y31 (EVEX); each
// row sums exactly as dotF16AVX2 does, so the results are the same bits.
TEXT ·dotF16R4AVX512(SB), NOSPLIT, $0-40
	MOVQ w+0(FP), SI
	MOVQ stride+8(FP), BX
	MOVQ x+16(FP), DI
	MOVQ n+24(FP), CX
	LEAQ (SI)(BX*1), R8
	LEAQ (R8)(BX*1), R9
	LEAQ (R9)(BX*1), R10
	VPXORD Y16, Y16, Y16
	VPXORD Y17, Y17, Y17
	VPXORD Y18, Y18, Y18
	VPXORD Y19, Y19, Y19
	VPXORD Y20, Y20, Y20
	VPXORD Y21, Y21, Y21
	VPXORD Y22, Y22, Y22
	VPXORD Y23, Y23, Y23
	VPXORD Y24, Y24, Y24
	VPXORD Y25, Y25, Y25
	VPXORD Y26, Y26, Y26
	VPXORD Y27, Y27, Y27
	VPXORD Y28, Y28, Y28
	VPXORD Y29, Y29, Y29
	VPXORD Y30, Y30, Y30
	VPXORD Y31, Y31, Y31
	SHRQ $5, CX
	JZ f16r4done
f16r4loop:
	PREFETCHT0 512(SI)
	PREFETCHT0 512(R8)
	PREFETCHT0 512(R9)
	PREFETCHT0 512(R10)
	VMOVUPS (DI), Y0
	VMOVUPS 32(DI), Y1
	VMOVUPS 64(DI), Y2
	VMOVUPS 96(DI), Y3
	F16R4ROW(SI, Y16, Y17, Y18, Y19)
	F16R4ROW(R8, Y20, Y21, Y22, Y23)
	F16R4ROW(R9, Y24, Y25, Y26, Y27)
	F16R4ROW(R10, Y28, Y29, Y30, Y31)
	ADDQ $64, SI
	ADDQ $64, R8
	ADDQ $64, R9
	ADDQ $64, R10
	ADDQ $128, DI
	DECQ CX
	JNZ f16r4loop
f16r4done:
	MOVQ out+32(FP), AX
	F16R4OUT(Y16, Y17, Y18, Y19, 0)
	F16R4OUT(Y20, Y21, Y22, Y23, 4)
	F16R4OUT(Y24, Y25, Y26, Y27, 8)
	F16R4OUT(Y28, Y29, Y30, Y31, 12)
	VZEROUPPER
	RET

// The row numbers 0 … 7, for the gathers of scalesQ8_0AVX2.
DATA scalesramp<>+0(SB)/4, $0
DATA scalesramp<>+4(SB)/4, $1
DATA scalesramp<>+8(SB)/4, $2
DATA scalesramp<>+12(SB)/4, $3
DATA scalesramp<>+16(SB)/4, $4
DATA scalesramp<>+20(SB)/4, $5
DATA scalesramp<>+24(SB)/4, $6
DATA scalesramp<>+28(SB)/4, $7
GLOBL scalesramp<>(SB), RODATA|NOPTR, $32

// func scalesQ8_0AVX2(dw *float32, w *byte, rowBytes, blocks int)
//
// Per block: two gathers of the 32-bit words at the block's start in rows
// 0–7 and 8–15 (the fp16 scale, then two quants of the same block), their
// low halves packed in row order, converted with F16C and stored as the
// block's 16 floats.
TEXT ·scalesQ8_0AVX2(SB), NOSPLIT, $0-32
	MOVQ dw+0(FP), DI
	MOVQ w+8(FP), SI
	MOVQ rowBytes+16(FP), AX
	MOVQ blocks+24(FP), CX
	MOVQ AX, X0
	VPBROADCASTD X0, Y0
	VPMULLD scalesramp<>(SB), Y0, Y14 // rows 0–7: m·rowBytes
	VPSLLD $3, Y0, Y1
	VPADDD Y1, Y14, Y15               // rows 8–15
	VPCMPEQD Y12, Y12, Y12
	VPSRLD $16, Y12, Y12              // 0x0000ffff in each word

scalesloop:
	VPCMPEQD Y2, Y2, Y2
	VPXOR Y3, Y3, Y3
	VPGATHERDD Y2, (SI)(Y14*1), Y3
	VPCMPEQD Y4, Y4, Y4
	VPXOR Y5, Y5, Y5
	VPGATHERDD Y4, (SI)(Y15*1), Y5
	VPAND Y12, Y3, Y3
	VPAND Y12, Y5, Y5
	VPACKUSDW Y5, Y3, Y6 // lanes: rows 0–3, 8–11 | 4–7, 12–15
	VPERMQ $0xD8, Y6, Y6 // rows 0–15 in order
	VCVTPH2PS X6, Y7
	VEXTRACTI128 $1, Y6, X8
	VCVTPH2PS X8, Y9
	VMOVUPS Y7, (DI)
	VMOVUPS Y9, 32(DI)
	ADDQ $34, SI
	ADDQ $64, DI
	DECQ CX
	JNZ scalesloop
	VZEROUPPER
	RET

// func fromF16AVX2(dst *float32, src *uint16, n int): n a positive
// multiple of 8.
// func toF16AVX2(dst *uint16, src *float32, n int)
// n > 0 a multiple of 8; VCVTPS2PH rounding to nearest even (imm8 0).
TEXT ·toF16AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	CMPQ CX, $32
	JLT  to8

to32:
	VMOVUPS (SI), Y0
	VMOVUPS 32(SI), Y1
	VMOVUPS 64(SI), Y2
	VMOVUPS 96(SI), Y3
	VCVTPS2PH $0, Y0, (DI)
	VCVTPS2PH $0, Y1, 16(DI)
	VCVTPS2PH $0, Y2, 32(DI)
	VCVTPS2PH $0, Y3, 48(DI)
	ADDQ $128, SI
	ADDQ $64, DI
	SUBQ $32, CX
	CMPQ CX, $32
	JGE  to32
	TESTQ CX, CX
	JZ   todone

to8:
	VMOVUPS (SI), Y0
	VCVTPS2PH $0, Y0, (DI)
	ADDQ $32, SI
	ADDQ $16, DI
	SUBQ $8, CX
	JNZ  to8

todone:
	VZEROUPPER
	RET

TEXT ·fromF16AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	CMPQ CX, $32
	JLT  from8

from32:
	VCVTPH2PS (SI), Y0
	VCVTPH2PS 16(SI), Y1
	VCVTPH2PS 32(SI), Y2
	VCVTPH2PS 48(SI), Y3
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	ADDQ $64, SI
	ADDQ $128, DI
	SUBQ $32, CX
	CMPQ CX, $32
	JGE  from32
	TESTQ CX, CX
	JZ   fromdone

from8:
	VCVTPH2PS (SI), Y0
	VMOVUPS Y0, (DI)
	ADDQ $16, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JNZ  from8

fromdone:
	VZEROUPPER
	RET

// TQ2PART adds the products of the 32 codes in bits 2l..2l+1 of Y4 (a
// half block's bytes) with the 32 activation quants at off(DI) to the
// int16 lanes of Y8: VPMADDUBSW multiplies the unsigned codes (0..3) by
// the signed quants, pairs at most 2·3·128 apart, and eight such sums
// stay within int16.
#define TQ2PART(shift, off) \
	VPSRLW     $shift, Y4, Y5; \
	VPAND      Y15, Y5, Y5; \
	VMOVDQU    off(DI), Y6; \
	VPMADDUBSW Y6, Y5, Y5; \
	VPADDW     Y5, Y8, Y8

// func dotTQ2_0AVX2(w *byte, xq *int8, xd *float32, bs *int32, nb int) float32
// TQ2_0 row against a Q8_K activation: per block Σ q·x over the 2-bit
// codes q (int16 lanes, widened to int32 by VPMADDWD), less the
// activation's 32-element sums bs (Σ (q − 1)·x, lane by lane), times
// d·dx, summed in float32 lanes.
TEXT ·dotTQ2_0AVX2(SB), NOSPLIT, $0-44
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), DX
	MOVQ bs+24(FP), BX
	MOVQ nb+32(FP), CX
	VXORPS Y0, Y0, Y0
	MOVL $0x03030303, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15
	MOVL $0x00010001, AX
	VMOVD AX, X7
	VPBROADCASTD X7, Y7
	TESTQ CX, CX
	JZ tq2done

tq2loop:
	PREFETCHT0 264(SI)
	MOVWLZX   64(SI), AX
	VMOVD     AX, X3
	VCVTPH2PS X3, X3
	VMULSS    (DX), X3, X3
	VBROADCASTSS X3, Y3
	VPXOR   Y8, Y8, Y8
	VMOVDQU (SI), Y4
	TQ2PART(0, 0)
	TQ2PART(2, 32)
	TQ2PART(4, 64)
	TQ2PART(6, 96)
	VMOVDQU 32(SI), Y4
	TQ2PART(0, 128)
	TQ2PART(2, 160)
	TQ2PART(4, 192)
	TQ2PART(6, 224)
	VPMADDWD  Y7, Y8, Y8
	VPSUBD    (BX), Y8, Y8
	VCVTDQ2PS Y8, Y8
	VFMADD231PS Y8, Y3, Y0

	ADDQ $66, SI
	ADDQ $256, DI
	ADDQ $4, DX
	ADDQ $32, BX
	DECQ CX
	JNZ  tq2loop

tq2done:
	HSUM
	VZEROUPPER
	MOVSS X0, ret+40(FP)
	RET

// The multipliers of TQ1_0's qh codes: word k (element 240 + k) takes
// code k/4 of byte k%4, brought to the top by 3^(k/4).
DATA tq1qhpow<>+0(SB)/8, $0x0001000100010001
DATA tq1qhpow<>+8(SB)/8, $0x0003000300030003
DATA tq1qhpow<>+16(SB)/8, $0x0009000900090009
DATA tq1qhpow<>+24(SB)/8, $0x001b001b001b001b
GLOBL tq1qhpow<>(SB), RODATA|NOPTR, $32

// TQ1MUL sets the 16 words of Y5 to the bytes in the words of Y4 times
// POW, mod 256: the code wanted is then in the top trit.
#define TQ1MUL(POW) \
	VPMULLW POW, Y4, Y5; \
	VPAND   Y13, Y5, Y5

// TQ1ACC takes the top trit of the 16 words of Y5 ((y·3) >> 8: the code
// 0..2) times the 16 activation quants at off(DI) into the int32 lanes
// of Y8.
#define TQ1ACC(off) \
	VPADDW    Y5, Y5, Y6; \
	VPADDW    Y6, Y5, Y5; \
	VPSRLW    $8, Y5, Y5; \
	VPMOVSXBW off(DI), Y6; \
	VPMADDWD  Y6, Y5, Y5; \
	VPADDD    Y5, Y8, Y8

// TQ1BYTES takes the five codes of the 16 bytes at boff(SI), whose code
// n is element base + n·stride + m (m the byte's place).
#define TQ1BYTES(boff, base, stride) \
	VPMOVZXBW boff(SI), Y4; \
	VMOVDQU   Y4, Y5; \
	TQ1ACC(base); \
	TQ1MUL(Y9); \
	TQ1ACC(base+stride); \
	TQ1MUL(Y10); \
	TQ1ACC(base+2*stride); \
	TQ1MUL(Y11); \
	TQ1ACC(base+3*stride); \
	TQ1MUL(Y12); \
	TQ1ACC(base+4*stride)

// func dotTQ1_0AVX2(w *byte, xq *int8, xd *float32, bs *int32, nb int) float32
// TQ1_0 row against a Q8_K activation: the base-3 codes decoded in 16-bit
// lanes (code n of byte b is ((b·3ⁿ mod 256)·3) >> 8), multiplied with the
// quants by VPMADDWD; per block Σ q·x less the activation's 32-element
// sums bs, times d·dx, summed in float32 lanes.
TEXT ·dotTQ1_0AVX2(SB), NOSPLIT, $0-44
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), DX
	MOVQ bs+24(FP), BX
	MOVQ nb+32(FP), CX
	VXORPS Y0, Y0, Y0
	MOVL $0x00030003, AX
	VMOVD AX, X9
	VPBROADCASTD X9, Y9
	MOVL $0x00090009, AX
	VMOVD AX, X10
	VPBROADCASTD X10, Y10
	MOVL $0x001b001b, AX
	VMOVD AX, X11
	VPBROADCASTD X11, Y11
	MOVL $0x00510051, AX
	VMOVD AX, X12
	VPBROADCASTD X12, Y12
	MOVL $0x00ff00ff, AX
	VMOVD AX, X13
	VPBROADCASTD X13, Y13
	VMOVDQU tq1qhpow<>(SB), Y14
	TESTQ CX, CX
	JZ tq1done

tq1loop:
	PREFETCHT0 216(SI)
	MOVWLZX   52(SI), AX
	VMOVD     AX, X3
	VCVTPH2PS X3, X3
	VMULSS    (DX), X3, X3
	VBROADCASTSS X3, Y3
	VPXOR Y8, Y8, Y8
	TQ1BYTES(0, 0, 32)
	TQ1BYTES(16, 16, 32)
	TQ1BYTES(32, 160, 16)
	MOVL 48(SI), AX
	VMOVD AX, X4
	VPBROADCASTD X4, X4
	VPMOVZXBW X4, Y4
	TQ1MUL(Y14)
	TQ1ACC(240)
	VPSUBD    (BX), Y8, Y8
	VCVTDQ2PS Y8, Y8
	VFMADD231PS Y8, Y3, Y0

	ADDQ $54, SI
	ADDQ $256, DI
	ADDQ $4, DX
	ADDQ $32, BX
	DECQ CX
	JNZ  tq1loop

tq1done:
	HSUM
	VZEROUPPER
	MOVSS X0, ret+40(FP)
	RET

// The VPSHUFB controls that spread Q2_K's scales over a chunk's 16 int16
// lanes: chunk k (32 elements: sub-blocks 2k and 2k+1) takes scale byte 2k
// into words 0-7 (the low 128-bit lane) and 2k+1 into words 8-15 (the
// high lane), each zero-extended (0x80 clears the byte).
DATA q2kshuf<>+0(SB)/8, $0x8000800080008000
DATA q2kshuf<>+8(SB)/8, $0x8000800080008000
DATA q2kshuf<>+16(SB)/8, $0x8001800180018001
DATA q2kshuf<>+24(SB)/8, $0x8001800180018001
DATA q2kshuf<>+32(SB)/8, $0x8002800280028002
DATA q2kshuf<>+40(SB)/8, $0x8002800280028002
DATA q2kshuf<>+48(SB)/8, $0x8003800380038003
DATA q2kshuf<>+56(SB)/8, $0x8003800380038003
DATA q2kshuf<>+64(SB)/8, $0x8004800480048004
DATA q2kshuf<>+72(SB)/8, $0x8004800480048004
DATA q2kshuf<>+80(SB)/8, $0x8005800580058005
DATA q2kshuf<>+88(SB)/8, $0x8005800580058005
DATA q2kshuf<>+96(SB)/8, $0x8006800680068006
DATA q2kshuf<>+104(SB)/8, $0x8006800680068006
DATA q2kshuf<>+112(SB)/8, $0x8007800780078007
DATA q2kshuf<>+120(SB)/8, $0x8007800780078007
DATA q2kshuf<>+128(SB)/8, $0x8008800880088008
DATA q2kshuf<>+136(SB)/8, $0x8008800880088008
DATA q2kshuf<>+144(SB)/8, $0x8009800980098009
DATA q2kshuf<>+152(SB)/8, $0x8009800980098009
DATA q2kshuf<>+160(SB)/8, $0x800a800a800a800a
DATA q2kshuf<>+168(SB)/8, $0x800a800a800a800a
DATA q2kshuf<>+176(SB)/8, $0x800b800b800b800b
DATA q2kshuf<>+184(SB)/8, $0x800b800b800b800b
DATA q2kshuf<>+192(SB)/8, $0x800c800c800c800c
DATA q2kshuf<>+200(SB)/8, $0x800c800c800c800c
DATA q2kshuf<>+208(SB)/8, $0x800d800d800d800d
DATA q2kshuf<>+216(SB)/8, $0x800d800d800d800d
DATA q2kshuf<>+224(SB)/8, $0x800e800e800e800e
DATA q2kshuf<>+232(SB)/8, $0x800e800e800e800e
DATA q2kshuf<>+240(SB)/8, $0x800f800f800f800f
DATA q2kshuf<>+248(SB)/8, $0x800f800f800f800f
GLOBL q2kshuf<>(SB), RODATA|NOPTR, $256

// Q2CHUNK adds chunk k's Σ sc·Σ q·x (codes in bits 2j of Y4, the
// activation's 32 quants at off(DI)) to the int32 lanes of Y8.
#define Q2CHUNK(shift, off, k) \
	VPSRLW     $shift, Y4, Y5; \
	VPAND      Y14, Y5, Y5; \
	VMOVDQU    off(DI), Y6; \
	VPMADDUBSW Y6, Y5, Y5; \
	VPSHUFB    q2kshuf<>+(32*k)(SB), Y2, Y6; \
	VPMADDWD   Y6, Y5, Y5; \
	VPADDD     Y5, Y8, Y8

// func dotQ2_KAVX2(w *byte, xq *int8, xd *float32, bs *int16, nb int) float32
// Q2_K row against a Q8_K activation: per block the 2-bit codes times the
// quants (VPMADDUBSW), weighted by the 4-bit sub-block scales (VPMADDWD
// with the scales spread over the lanes), and the 4-bit mins times the
// activation's 16-element sums bs; d·dx·Σ − dmin·dx·Σ, summed in float32
// lanes (the mins' part in Y10, taken off at the end).
TEXT ·dotQ2_KAVX2(SB), NOSPLIT, $0-44
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), DX
	MOVQ bs+24(FP), BX
	MOVQ nb+32(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y10, Y10, Y10
	MOVL $0x0f0f0f0f, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15
	MOVL $0x03030303, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
	TESTQ CX, CX
	JZ q2kdone

q2kloop:
	PREFETCHT0 336(SI)
	VMOVDQU   (SI), X1
	VPAND     X15, X1, X2
	VPSRLW    $4, X1, X3
	VPAND     X15, X3, X3
	VINSERTI128 $1, X2, Y2, Y2
	VPMOVZXBW X3, Y3
	VPMADDWD  (BX), Y3, Y3
	VCVTDQ2PS Y3, Y3
	MOVWLZX   82(SI), AX
	VMOVD     AX, X1
	VCVTPH2PS X1, X1
	VMULSS    (DX), X1, X1
	VBROADCASTSS X1, Y1
	VFMADD231PS Y3, Y1, Y10

	VPXOR   Y8, Y8, Y8
	VMOVDQU 16(SI), Y4
	Q2CHUNK(0, 0, 0)
	Q2CHUNK(2, 32, 1)
	Q2CHUNK(4, 64, 2)
	Q2CHUNK(6, 96, 3)
	VMOVDQU 48(SI), Y4
	Q2CHUNK(0, 128, 4)
	Q2CHUNK(2, 160, 5)
	Q2CHUNK(4, 192, 6)
	Q2CHUNK(6, 224, 7)
	VCVTDQ2PS Y8, Y8
	MOVWLZX   80(SI), AX
	VMOVD     AX, X1
	VCVTPH2PS X1, X1
	VMULSS    (DX), X1, X1
	VBROADCASTSS X1, Y1
	VFMADD231PS Y8, Y1, Y0

	ADDQ $84, SI
	ADDQ $256, DI
	ADDQ $4, DX
	ADDQ $32, BX
	DECQ CX
	JNZ  q2kloop

q2kdone:
	VSUBPS Y10, Y0, Y0
	HSUM
	VZEROUPPER
	MOVSS X0, ret+40(FP)
	RET

// The VPSHUFB controls that spread Q3_K's signed scale bytes over a
// chunk's 16 int16 lanes: chunk k takes byte 2k into the high byte of
// words 0-7 and 2k+1 into that of words 8-15 (the low bytes cleared), so
// that VPSRAW $8 leaves each scale sign-extended.
DATA q3kshuf<>+0(SB)/8, $0x0080008000800080
DATA q3kshuf<>+8(SB)/8, $0x0080008000800080
DATA q3kshuf<>+16(SB)/8, $0x0180018001800180
DATA q3kshuf<>+24(SB)/8, $0x0180018001800180
DATA q3kshuf<>+32(SB)/8, $0x0280028002800280
DATA q3kshuf<>+40(SB)/8, $0x0280028002800280
DATA q3kshuf<>+48(SB)/8, $0x0380038003800380
DATA q3kshuf<>+56(SB)/8, $0x0380038003800380
DATA q3kshuf<>+64(SB)/8, $0x0480048004800480
DATA q3kshuf<>+72(SB)/8, $0x0480048004800480
DATA q3kshuf<>+80(SB)/8, $0x0580058005800580
DATA q3kshuf<>+88(SB)/8, $0x0580058005800580
DATA q3kshuf<>+96(SB)/8, $0x0680068006800680
DATA q3kshuf<>+104(SB)/8, $0x0680068006800680
DATA q3kshuf<>+112(SB)/8, $0x0780078007800780
DATA q3kshuf<>+120(SB)/8, $0x0780078007800780
DATA q3kshuf<>+128(SB)/8, $0x0880088008800880
DATA q3kshuf<>+136(SB)/8, $0x0880088008800880
DATA q3kshuf<>+144(SB)/8, $0x0980098009800980
DATA q3kshuf<>+152(SB)/8, $0x0980098009800980
DATA q3kshuf<>+160(SB)/8, $0x0a800a800a800a80
DATA q3kshuf<>+168(SB)/8, $0x0a800a800a800a80
DATA q3kshuf<>+176(SB)/8, $0x0b800b800b800b80
DATA q3kshuf<>+184(SB)/8, $0x0b800b800b800b80
DATA q3kshuf<>+192(SB)/8, $0x0c800c800c800c80
DATA q3kshuf<>+200(SB)/8, $0x0c800c800c800c80
DATA q3kshuf<>+208(SB)/8, $0x0d800d800d800d80
DATA q3kshuf<>+216(SB)/8, $0x0d800d800d800d80
DATA q3kshuf<>+224(SB)/8, $0x0e800e800e800e80
DATA q3kshuf<>+232(SB)/8, $0x0e800e800e800e80
DATA q3kshuf<>+240(SB)/8, $0x0f800f800f800f80
DATA q3kshuf<>+248(SB)/8, $0x0f800f800f800f80
GLOBL q3kshuf<>(SB), RODATA|NOPTR, $256

// Q3CHUNK adds chunk k's Σ sc·Σ (q + 4h)·x to the int32 lanes of Y8: the
// low two bits of its 32 codes are bits shift..shift+1 of Y4, the high
// bit h the bit of hmask (Y9) that Y12 holds in every byte (it doubles
// after each chunk); its two sub-blocks' scales come from the signed
// scale bytes in both lanes of Y2. (q + 4h) is 0..7, so VPMADDUBSW takes
// it unsigned; the −4 of every code is taken off per block (Σ 4·sc·bsum).
#define Q3CHUNK(shift, off, k) \
	VPSRLW     $shift, Y4, Y5; \
	VPAND      Y14, Y5, Y5; \
	VPAND      Y12, Y9, Y7; \
	VPCMPEQB   Y12, Y7, Y7; \
	VPAND      Y13, Y7, Y7; \
	VPOR       Y7, Y5, Y5; \
	VPADDB     Y12, Y12, Y12; \
	VMOVDQU    off(DI), Y6; \
	VPMADDUBSW Y6, Y5, Y5; \
	VPSHUFB    q3kshuf<>+(32*k)(SB), Y2, Y6; \
	VPSRAW     $8, Y6, Y6; \
	VPMADDWD   Y6, Y5, Y5; \
	VPADDD     Y5, Y8, Y8

// Q3SCALES sets AX to the four 6-bit scales (as bytes) of sub-blocks
// 4g..4g+3: low nibbles from R8 (bytes 0..7 of the scales, shifted to the
// group), high bits from R9 (bytes 8..11) shifted by 2g.
#define Q3SCALES(loshift, hishift) \
	MOVQ R8, AX; \
	SHRQ $loshift, AX; \
	ANDL $0x0f0f0f0f, AX; \
	MOVL R9, R10; \
	SHRL $hishift, R10; \
	ANDL $0x03030303, R10; \
	SHLL $4, R10; \
	ORL  R10, AX

// func dotQ3_KAVX2(w *byte, xq *int8, xd *float32, bs *int16, nb int) float32
// Q3_K row against a Q8_K activation: per block the codes (q + 4h, 0..7)
// times the quants (VPMADDUBSW), weighted by the sixteen 6-bit scales
// (unpacked here, less 32, spread over the lanes by VPSHUFB), less
// 4·Σ sc·bsum for the codes' −4 (bs: the activation's 16-element sums),
// an exact int32 sum per lane; times d·dx in float32 lanes.
TEXT ·dotQ3_KAVX2(SB), NOSPLIT, $0-44
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), DX
	MOVQ bs+24(FP), BX
	MOVQ nb+32(FP), CX
	VXORPS Y0, Y0, Y0
	MOVL $0x01010101, AX
	VMOVD AX, X11
	VPBROADCASTD X11, Y11
	MOVL $0x04040404, AX
	VMOVD AX, X13
	VPBROADCASTD X13, Y13
	MOVL $0x03030303, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
	MOVL $0x20202020, AX
	VMOVD AX, X15
	VPBROADCASTD X15, X15
	TESTQ CX, CX
	JZ q3kdone

q3kloop:
	PREFETCHT0 440(SI)
	MOVQ 96(SI), R8
	MOVL 104(SI), R9
	Q3SCALES(0, 0)
	VMOVD AX, X2
	Q3SCALES(32, 2)
	VPINSRD $1, AX, X2, X2
	Q3SCALES(4, 4)
	VPINSRD $2, AX, X2, X2
	Q3SCALES(36, 6)
	VPINSRD $3, AX, X2, X2
	VPSUBB  X15, X2, X2
	VPMOVSXBW X2, Y3
	VPMADDWD  (BX), Y3, Y3
	VPSLLD    $2, Y3, Y3
	VINSERTI128 $1, X2, Y2, Y2

	VMOVDQU (SI), Y9
	VMOVDQU Y11, Y12
	VPXOR   Y8, Y8, Y8
	VPSUBD  Y3, Y8, Y8
	VMOVDQU 32(SI), Y4
	Q3CHUNK(0, 0, 0)
	Q3CHUNK(2, 32, 1)
	Q3CHUNK(4, 64, 2)
	Q3CHUNK(6, 96, 3)
	VMOVDQU 64(SI), Y4
	Q3CHUNK(0, 128, 4)
	Q3CHUNK(2, 160, 5)
	Q3CHUNK(4, 192, 6)
	Q3CHUNK(6, 224, 7)
	VCVTDQ2PS Y8, Y8
	MOVWLZX   108(SI), AX
	VMOVD     AX, X1
	VCVTPH2PS X1, X1
	VMULSS    (DX), X1, X1
	VBROADCASTSS X1, Y1
	VFMADD231PS Y8, Y1, Y0

	ADDQ $110, SI
	ADDQ $256, DI
	ADDQ $4, DX
	ADDQ $32, BX
	DECQ CX
	JNZ  q3kloop

q3kdone:
	HSUM
	VZEROUPPER
	MOVSS X0, ret+40(FP)
	RET

// Q5K_HI adds the fifth bit of the 32 codes in Y3 (the bit of qh, Y6,
// that Y12 holds in every byte; it doubles after each sub-block) as 16.
#define Q5K_HI \
	VPAND    Y12, Y6, Y14; \
	VPCMPEQB Y12, Y14, Y14; \
	VPAND    Y13, Y14, Y14; \
	VPOR     Y14, Y3, Y3; \
	VPADDB   Y12, Y12, Y12

#define Q5K_CHUNK(c) \
	VMOVDQU (32*c)(SI), Y2; \
	VPAND Y15, Y2, Y3; \
	Q5K_HI; \
	Q4K_HALF(64*c, 4*c); \
	VPSRLW $4, Y2, Y3; \
	VPAND Y15, Y3, Y3; \
	Q5K_HI; \
	Q4K_HALF(64*c+32, 4*c+2)

// func dotQ5_KFullAVX2(w *byte, xq *int8, xd *float32, bs *int32, nb int) float32
// As dotQ4_KFullAVX2, each 4-bit code gaining its fifth bit from qh
// (bit 2c of qh[l] for element 64c + l, bit 2c+1 for 64c + 32 + l):
// Σ_b d·dx·Σ_j sc_j·(q·x)_j − dmin·dx·Σ_j m_j·bs_j over 176-byte blocks.
TEXT ·dotQ5_KFullAVX2(SB), NOSPLIT, $16-44
	MOVQ w+0(FP), SI
	MOVQ xq+8(FP), DI
	MOVQ xd+16(FP), DX
	MOVQ bs+24(FP), BX
	MOVQ nb+32(FP), CX
	LEAQ sc-16(SP), R8
	VXORPS Y0, Y0, Y0
	VXORPS Y10, Y10, Y10
	MOVL $0x0f0f0f0f, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15
	MOVL $0x01010101, AX
	VMOVD AX, X11
	VPBROADCASTD X11, Y11
	MOVL $0x10101010, AX
	VMOVD AX, X13
	VPBROADCASTD X13, Y13
	TESTQ CX, CX
	JZ q5kfdone

q5kfloop:
	PREFETCHT0 704(SI)
	PREFETCHT0 768(SI)
	PREFETCHT0 832(SI)
	K45HEAD
	VMOVDQU 16(SI), Y6
	VMOVDQU Y11, Y12
	VPXOR Y8, Y8, Y8
	ADDQ  $48, SI
	Q5K_CHUNK(0)
	Q5K_CHUNK(1)
	Q5K_CHUNK(2)
	Q5K_CHUNK(3)
	ADDQ  $128, SI
	VCVTDQ2PS Y8, Y8
	VFMADD231PS Y8, Y4, Y0

	ADDQ $256, DI
	ADDQ $4, DX
	ADDQ $32, BX
	DECQ CX
	JNZ  q5kfloop

q5kfdone:
	VSUBPS Y10, Y0, Y0
	HSUM
	VZEROUPPER
	MOVSS X0, ret+40(FP)
	RET
