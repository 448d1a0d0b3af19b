//go:build amd64 && !purego

#include "textflag.h"

// LSCOORD4 scores one coordinate for four queries: its 16 tokens'
// indices (at R11) turned into levels in Z by the part's codebook (Z13,
// field shifts in Z15), multiplied into the chains A0–A3 by the queries'
// values at off(R12) … off+12(R12); R11 moves on one coordinate.
#define LSCOORD4(Z, off, A0, A1, A2, A3) \
	VPMULTISHIFTQB.BCST (R11), Z15, Z; \
	VPERMPS             Z13, Z, Z; \
	VFMADD231PS.BCST    (off)(R12), Z, A0; \
	VFMADD231PS.BCST    (off+4)(R12), Z, A1; \
	VFMADD231PS.BCST    (off+8)(R12), Z, A2; \
	VFMADD231PS.BCST    (off+12)(R12), Z, A3; \
	ADDQ                R14, R11

// LSCOORD2 is LSCOORD4 for the first two queries only.
#define LSCOORD2(Z, off, A0, A1) \
	VPMULTISHIFTQB.BCST (R11), Z15, Z; \
	VPERMPS             Z13, Z, Z; \
	VFMADD231PS.BCST    (off)(R12), Z, A0; \
	VFMADD231PS.BCST    (off+4)(R12), Z, A1; \
	ADDQ                R14, R11

// func laneScore4AVX512(out *[4]*float32, nq int, blocks int, q *float32, parts *lanePart, nparts int, data *byte, block int)
//
// Scores blocks of 16 tokens laid out by Lanes against four queries, the
// tokens in the lanes: per part (lanePart, 200 bytes: scales, planes,
// dim, step, qoff at 0–32, the replicated table at 48, the
// VPMULTISHIFTQB controls at 112), each coordinate's 16 indices (one
// 8-byte broadcast load) are unpacked and looked up once and weighed by
// the four queries' coordinate (embedded broadcasts, q interleaved four
// per coordinate) into four chains per query (Z4–Z7, Z8–Z11, Z16–Z19,
// Z20–Z23: coordinates 4i, 4i+1, 4i+2, 4i+3, so that the multiply-adds'
// latency is hidden); the part's sums are scaled by its 16 fp16 scales
// into Z0–Z3. Then the first nq of the four rows of 16 scores are
// stored at out[j] + 64·block. With nq ≤ 2 (a KV head of two query
// heads, as GQA models often have) the multiply-adds of queries 3 and 4
// are left out: a third fewer instructions per coordinate, the same sums
// for the first two. dim is a multiple of 4; each load of a
// coordinate's indices may read up to 8 − step bytes past them (the
// caller keeps that inside data).
TEXT ·laneScore4AVX512(SB), NOSPLIT, $0-64
	MOVQ out+0(FP), DI
	MOVQ blocks+16(FP), CX
	MOVQ q+24(FP), SI
	MOVQ data+48(FP), BX
	MOVQ block+56(FP), R10
	MOVQ nq+8(FP), R9
	XORQ R8, R8

lblock:
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	MOVQ   parts+32(FP), AX
	MOVQ   nparts+40(FP), DX

lpart:
	VMOVUPS   48(AX), Z13
	VMOVDQU64 112(AX), Z15
	VPXORD    Z4, Z4, Z4
	VPXORD    Z5, Z5, Z5
	VPXORD    Z6, Z6, Z6
	VPXORD    Z7, Z7, Z7
	VPXORD    Z8, Z8, Z8
	VPXORD    Z9, Z9, Z9
	VPXORD    Z10, Z10, Z10
	VPXORD    Z11, Z11, Z11
	VPXORD    Z16, Z16, Z16
	VPXORD    Z17, Z17, Z17
	VPXORD    Z18, Z18, Z18
	VPXORD    Z19, Z19, Z19
	VPXORD    Z20, Z20, Z20
	VPXORD    Z21, Z21, Z21
	VPXORD    Z22, Z22, Z22
	VPXORD    Z23, Z23, Z23
	MOVQ      8(AX), R11
	ADDQ      BX, R11
	MOVQ      32(AX), R12
	ADDQ      SI, R12
	MOVQ      16(AX), R13
	MOVQ      24(AX), R14
	CMPQ      R9, $2
	JLE       lcoord2

lcoord:
	LSCOORD4(Z12, 0, Z4, Z5, Z6, Z7)
	LSCOORD4(Z14, 16, Z8, Z9, Z10, Z11)
	LSCOORD4(Z24, 32, Z16, Z17, Z18, Z19)
	LSCOORD4(Z25, 48, Z20, Z21, Z22, Z23)
	ADDQ $64, R12
	SUBQ $4, R13
	JNE  lcoord
	JMP  lsum

	// One or two queries: lcoord without the multiply-adds of queries
	// 3 and 4, whose chains stay zero.
lcoord2:
	LSCOORD2(Z12, 0, Z4, Z5)
	LSCOORD2(Z14, 16, Z8, Z9)
	LSCOORD2(Z24, 32, Z16, Z17)
	LSCOORD2(Z25, 48, Z20, Z21)
	ADDQ $64, R12
	SUBQ $4, R13
	JNE  lcoord2

lsum:
	VADDPS      Z8, Z4, Z4
	VADDPS      Z9, Z5, Z5
	VADDPS      Z10, Z6, Z6
	VADDPS      Z11, Z7, Z7
	VADDPS      Z20, Z16, Z16
	VADDPS      Z21, Z17, Z17
	VADDPS      Z22, Z18, Z18
	VADDPS      Z23, Z19, Z19
	VADDPS      Z16, Z4, Z4
	VADDPS      Z17, Z5, Z5
	VADDPS      Z18, Z6, Z6
	VADDPS      Z19, Z7, Z7
	MOVQ        0(AX), R11
	VCVTPH2PS   (BX)(R11*1), Z12
	VFMADD231PS Z12, Z4, Z0
	VFMADD231PS Z12, Z5, Z1
	VFMADD231PS Z12, Z6, Z2
	VFMADD231PS Z12, Z7, Z3
	ADDQ        $200, AX
	DECQ        DX
	JNE         lpart

	MOVQ    nq+8(FP), DX
	MOVQ    0(DI), R11
	VMOVUPS Z0, (R11)(R8*1)
	CMPQ    DX, $2
	JLT     lnext
	MOVQ    8(DI), R11
	VMOVUPS Z1, (R11)(R8*1)
	CMPQ    DX, $3
	JLT     lnext
	MOVQ    16(DI), R11
	VMOVUPS Z2, (R11)(R8*1)
	CMPQ    DX, $4
	JLT     lnext
	MOVQ    24(DI), R11
	VMOVUPS Z3, (R11)(R8*1)

lnext:
	ADDQ $64, R8
	ADDQ R10, BX
	DECQ CX
	JNE  lblock

	VZEROUPPER
	RET

// LQLOOK turns the four coordinates' indices of a block's 16 tokens (at
// R11, R14 bytes apart) into levels in Z18–Z21 (codebook Z16, field
// shifts Z17).
#define LQLOOK \
	MOVQ                R11, R12; \
	VPMULTISHIFTQB.BCST (R12), Z17, Z18; \
	VPERMPS             Z16, Z18, Z18; \
	ADDQ                R14, R12; \
	VPMULTISHIFTQB.BCST (R12), Z17, Z19; \
	VPERMPS             Z16, Z19, Z19; \
	ADDQ                R14, R12; \
	VPMULTISHIFTQB.BCST (R12), Z17, Z20; \
	VPERMPS             Z16, Z20, Z20; \
	ADDQ                R14, R12; \
	VPMULTISHIFTQB.BCST (R12), Z17, Z21; \
	VPERMPS             Z16, Z21, Z21

// LQFMA loads one head's weights of the 16 tokens (off(DI)) into W and
// adds their products with the four coordinates' levels to A0–A3.
#define LQFMA(off, W, A0, A1, A2, A3) \
	VMOVUPS     (off)(DI), W; \
	VFMADD231PS W, Z18, A0; \
	VFMADD231PS W, Z19, A1; \
	VFMADD231PS W, Z20, A2; \
	VFMADD231PS W, Z21, A3

// func laneAcc4AVX512(acc *[4]*float32, nq int, w *[4]*float32, wbuf *float32, nb int, part *lanePart, data *byte, block int)
//
// The value sums of four heads over nb blocks of one part, the tokens in
// the lanes. First the weights times the tokens' scales: wbuf[b][j] =
// w[j][16b:16b+16] · scales of block b (16 floats each). Then per four
// coordinates (Z0–Z15: head j, coordinate c in Z(4j+c)), each
// coordinate's 16 indices of a block are unpacked and looked up once and
// multiplied into the four heads' lanes by their wbuf rows; after the
// last block, each head's four coordinates are summed across the lanes
// (VHADDPS within 128-bit blocks, then the blocks folded) and added to
// acc[j] for the first nq heads; with nq ≤ 2 the multiply-adds of heads
// 3 and 4 are left out (their sums stay zero). dim is a multiple of 4.
TEXT ·laneAcc4AVX512(SB), NOSPLIT, $0-64
	MOVQ part+40(FP), AX
	MOVQ data+48(FP), BX
	MOVQ block+56(FP), R10
	MOVQ w+16(FP), SI
	MOVQ wbuf+24(FP), DI
	MOVQ nb+32(FP), CX
	MOVQ 0(SI), R11
	MOVQ 8(SI), R12
	MOVQ 16(SI), R13
	MOVQ 24(SI), R14
	MOVQ 0(AX), DX
	ADDQ BX, DX

lwprep:
	VCVTPH2PS (DX), Z16
	VMULPS    (R11), Z16, Z17
	VMOVUPS   Z17, (DI)
	VMULPS    (R12), Z16, Z17
	VMOVUPS   Z17, 64(DI)
	VMULPS    (R13), Z16, Z17
	VMOVUPS   Z17, 128(DI)
	VMULPS    (R14), Z16, Z17
	VMOVUPS   Z17, 192(DI)
	ADDQ      $64, R11
	ADDQ      $64, R12
	ADDQ      $64, R13
	ADDQ      $64, R14
	ADDQ      $256, DI
	ADDQ      R10, DX
	DECQ      CX
	JNE       lwprep

	VMOVUPS   48(AX), Z16
	VMOVDQU64 112(AX), Z17
	MOVQ      24(AX), R14
	MOVQ      8(AX), R9
	ADDQ      BX, R9
	MOVQ      16(AX), R8
	XORQ      R13, R13

lquad:
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12
	VPXORD Z13, Z13, Z13
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15
	MOVQ   R9, R11
	MOVQ   wbuf+24(FP), DI
	MOVQ   nb+32(FP), CX
	MOVQ   nq+8(FP), DX
	CMPQ   DX, $2
	JLE    lqblock2

lqblock:
	LQLOOK
	LQFMA(0, Z22, Z0, Z1, Z2, Z3)
	LQFMA(64, Z23, Z4, Z5, Z6, Z7)
	LQFMA(128, Z24, Z8, Z9, Z10, Z11)
	LQFMA(192, Z25, Z12, Z13, Z14, Z15)
	ADDQ $256, DI
	ADDQ R10, R11
	DECQ CX
	JNE  lqblock
	JMP  lqsum

	// One or two heads: lqblock without the multiply-adds of heads 3
	// and 4, whose sums stay zero.
lqblock2:
	LQLOOK
	LQFMA(0, Z22, Z0, Z1, Z2, Z3)
	LQFMA(64, Z23, Z4, Z5, Z6, Z7)
	ADDQ $256, DI
	ADDQ R10, R11
	DECQ CX
	JNE  lqblock2

lqsum:
	// Per head j, the four coordinates' lanes summed into [c0 c1 c2 c3]:
	// each register folded to 256 bits, VHADDPS within 128-bit halves,
	// then the halves of two heads added at once.
	VEXTRACTF64X4 $1, Z0, Y18
	VADDPS        Y18, Y0, Y0
	VEXTRACTF64X4 $1, Z1, Y18
	VADDPS        Y18, Y1, Y1
	VEXTRACTF64X4 $1, Z2, Y18
	VADDPS        Y18, Y2, Y2
	VEXTRACTF64X4 $1, Z3, Y18
	VADDPS        Y18, Y3, Y3
	VEXTRACTF64X4 $1, Z4, Y18
	VADDPS        Y18, Y4, Y4
	VEXTRACTF64X4 $1, Z5, Y18
	VADDPS        Y18, Y5, Y5
	VEXTRACTF64X4 $1, Z6, Y18
	VADDPS        Y18, Y6, Y6
	VEXTRACTF64X4 $1, Z7, Y18
	VADDPS        Y18, Y7, Y7
	VEXTRACTF64X4 $1, Z8, Y18
	VADDPS        Y18, Y8, Y8
	VEXTRACTF64X4 $1, Z9, Y18
	VADDPS        Y18, Y9, Y9
	VEXTRACTF64X4 $1, Z10, Y18
	VADDPS        Y18, Y10, Y10
	VEXTRACTF64X4 $1, Z11, Y18
	VADDPS        Y18, Y11, Y11
	VEXTRACTF64X4 $1, Z12, Y18
	VADDPS        Y18, Y12, Y12
	VEXTRACTF64X4 $1, Z13, Y18
	VADDPS        Y18, Y13, Y13
	VEXTRACTF64X4 $1, Z14, Y18
	VADDPS        Y18, Y14, Y14
	VEXTRACTF64X4 $1, Z15, Y18
	VADDPS        Y18, Y15, Y15
	VHADDPS       Y1, Y0, Y0
	VHADDPS       Y3, Y2, Y2
	VHADDPS       Y2, Y0, Y0
	VHADDPS       Y5, Y4, Y4
	VHADDPS       Y7, Y6, Y6
	VHADDPS       Y6, Y4, Y4
	VHADDPS       Y9, Y8, Y8
	VHADDPS       Y11, Y10, Y10
	VHADDPS       Y10, Y8, Y8
	VHADDPS       Y13, Y12, Y12
	VHADDPS       Y15, Y14, Y14
	VHADDPS       Y14, Y12, Y12
	VPERM2F128    $0x20, Y4, Y0, Y1
	VPERM2F128    $0x31, Y4, Y0, Y2
	VADDPS        Y2, Y1, Y0
	VEXTRACTF128  $1, Y0, X4
	VPERM2F128    $0x20, Y12, Y8, Y9
	VPERM2F128    $0x31, Y12, Y8, Y10
	VADDPS        Y10, Y9, Y8
	VEXTRACTF128  $1, Y8, X12

	MOVQ    acc+0(FP), SI
	MOVQ    nq+8(FP), DX
	MOVQ    0(SI), DI
	VADDPS  (DI)(R13*1), X0, X0
	VMOVUPS X0, (DI)(R13*1)
	CMPQ    DX, $2
	JLT     lqnext
	MOVQ    8(SI), DI
	VADDPS  (DI)(R13*1), X4, X4
	VMOVUPS X4, (DI)(R13*1)
	CMPQ    DX, $3
	JLT     lqnext
	MOVQ    16(SI), DI
	VADDPS  (DI)(R13*1), X8, X8
	VMOVUPS X8, (DI)(R13*1)
	CMPQ    DX, $4
	JLT     lqnext
	MOVQ    24(SI), DI
	VADDPS  (DI)(R13*1), X12, X12
	VMOVUPS X12, (DI)(R13*1)

lqnext:
	ADDQ $16, R13
	MOVQ R14, DX
	SHLQ $2, DX
	ADDQ DX, R9
	SUBQ $4, R8
	JNE  lquad

	VZEROUPPER
	RET

// func laneScore2AVX2(out *[2]*float32, blocks int, q *float32, parts *lanePart, nparts int, data *byte, block int)
//
// laneScore4AVX512 on 256-bit registers for two queries (q points at the
// first one's coordinate 0 in the four-per-coordinate interleaving; the
// second follows it): a block's 16 tokens are two halves of 8 lanes.
// A half's indices of a coordinate are one 4-byte broadcast (token 8h at
// byte h·b of the coordinate's 2b bytes), shifted right per lane by the
// first 8 dwords of the VPMULTISHIFTQB controls (0, b, …, 7b) and looked
// up with VPERMPS in the table's first 8 entries, which is the whole
// codebook replicated for b ≤ 3; 4-bit indices take the second 8
// entries where their bit 3 is set (VBLENDVPS on the index shifted to the
// sign). Sums per part: queries × halves in Y4–Y7, and for b ≤ 3 the odd
// coordinates apart in Y8–Y11 (two chains); scaled by the 16 fp16 scales
// into Y0–Y3 (query 1 halves 0, 1; query 2 halves 0, 1). out[1] nil:
// one query stored. dim is even; a load may read up to 3 bytes past a
// coordinate's indices (laneSlack).
TEXT ·laneScore2AVX2(SB), NOSPLIT, $0-56
	MOVQ out+0(FP), DI
	MOVQ blocks+8(FP), CX
	MOVQ q+16(FP), SI
	MOVQ data+40(FP), BX
	MOVQ block+48(FP), R10
	XORQ R8, R8

sblock:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	MOVQ   parts+24(FP), AX
	MOVQ   nparts+32(FP), DX

spart:
	VXORPS  Y4, Y4, Y4
	VXORPS  Y5, Y5, Y5
	VXORPS  Y6, Y6, Y6
	VXORPS  Y7, Y7, Y7
	VXORPS  Y8, Y8, Y8
	VXORPS  Y9, Y9, Y9
	VXORPS  Y10, Y10, Y10
	VXORPS  Y11, Y11, Y11
	VMOVDQU 112(AX), Y15
	MOVQ    8(AX), R11
	ADDQ    BX, R11
	MOVQ    32(AX), R12
	ADDQ    SI, R12
	MOVQ    16(AX), R13
	MOVQ    24(AX), R14
	MOVQ    R14, R9
	SHRQ    $1, R9
	CMPQ    R9, $4
	JEQ     s4bit

s3bit:
	VPBROADCASTD (R11), Y12
	VPSRLVD      Y15, Y12, Y12
	VPERMPS      48(AX), Y12, Y12
	VPBROADCASTD (R11)(R9*1), Y13
	VPSRLVD      Y15, Y13, Y13
	VPERMPS      48(AX), Y13, Y13
	VBROADCASTSS (R12), Y14
	VFMADD231PS  Y14, Y12, Y4
	VFMADD231PS  Y14, Y13, Y5
	VBROADCASTSS 4(R12), Y14
	VFMADD231PS  Y14, Y12, Y6
	VFMADD231PS  Y14, Y13, Y7
	ADDQ         R14, R11
	VPBROADCASTD (R11), Y12
	VPSRLVD      Y15, Y12, Y12
	VPERMPS      48(AX), Y12, Y12
	VPBROADCASTD (R11)(R9*1), Y13
	VPSRLVD      Y15, Y13, Y13
	VPERMPS      48(AX), Y13, Y13
	VBROADCASTSS 16(R12), Y14
	VFMADD231PS  Y14, Y12, Y8
	VFMADD231PS  Y14, Y13, Y9
	VBROADCASTSS 20(R12), Y14
	VFMADD231PS  Y14, Y12, Y10
	VFMADD231PS  Y14, Y13, Y11
	ADDQ         R14, R11
	ADDQ         $32, R12
	SUBQ         $2, R13
	JNE          s3bit
	VADDPS       Y8, Y4, Y4
	VADDPS       Y9, Y5, Y5
	VADDPS       Y10, Y6, Y6
	VADDPS       Y11, Y7, Y7
	JMP          sscale

s4bit:
	VPBROADCASTD (R11), Y12
	VPSRLVD      Y15, Y12, Y12
	VPERMPS      80(AX), Y12, Y13
	VPSLLD       $28, Y12, Y14
	VPERMPS      48(AX), Y12, Y12
	VBLENDVPS    Y14, Y13, Y12, Y12
	VPBROADCASTD (R11)(R9*1), Y8
	VPSRLVD      Y15, Y8, Y8
	VPERMPS      80(AX), Y8, Y13
	VPSLLD       $28, Y8, Y14
	VPERMPS      48(AX), Y8, Y8
	VBLENDVPS    Y14, Y13, Y8, Y8
	VBROADCASTSS (R12), Y14
	VFMADD231PS  Y14, Y12, Y4
	VFMADD231PS  Y14, Y8, Y5
	VBROADCASTSS 4(R12), Y14
	VFMADD231PS  Y14, Y12, Y6
	VFMADD231PS  Y14, Y8, Y7
	ADDQ         R14, R11
	ADDQ         $16, R12
	DECQ         R13
	JNE          s4bit

sscale:
	MOVQ        0(AX), R11
	VCVTPH2PS   (BX)(R11*1), Y12
	VCVTPH2PS   16(BX)(R11*1), Y13
	VFMADD231PS Y12, Y4, Y0
	VFMADD231PS Y13, Y5, Y1
	VFMADD231PS Y12, Y6, Y2
	VFMADD231PS Y13, Y7, Y3
	ADDQ        $200, AX
	DECQ        DX
	JNE         spart

	MOVQ    0(DI), R11
	VMOVUPS Y0, (R11)(R8*1)
	VMOVUPS Y1, 32(R11)(R8*1)
	MOVQ    8(DI), R11
	TESTQ   R11, R11
	JEQ     snext
	VMOVUPS Y2, (R11)(R8*1)
	VMOVUPS Y3, 32(R11)(R8*1)

snext:
	ADDQ $64, R8
	ADDQ R10, BX
	DECQ CX
	JNE  sblock

	VZEROUPPER
	RET

// LANE3 adds the two halves of one coordinate's block of b-bit indices
// (b ≤ 3; at R12, the second half R9 = b bytes on), looked up in the
// part's table (AX), times head 1's (Y8, Y9) and head 2's (Y10, Y11)
// weighted scales to A and B (laneAcc2AVX2).
#define LANE3(A, B) \
	VPBROADCASTD (R12), Y12; \
	VPSRLVD      Y15, Y12, Y12; \
	VPERMPS      48(AX), Y12, Y12; \
	VPBROADCASTD (R12)(R9*1), Y13; \
	VPSRLVD      Y15, Y13, Y13; \
	VPERMPS      48(AX), Y13, Y13; \
	VFMADD231PS  Y8, Y12, A; \
	VFMADD231PS  Y10, Y12, B; \
	VFMADD231PS  Y9, Y13, A; \
	VFMADD231PS  Y11, Y13, B

// LANE4 is LANE3 for 4-bit indices: the table's second 8 entries where
// an index's bit 3 is set (VBLENDVPS on the index shifted to the sign).
#define LANE4(A, B) \
	VPBROADCASTD (R12), Y12; \
	VPSRLVD      Y15, Y12, Y12; \
	VPERMPS      80(AX), Y12, Y13; \
	VPSLLD       $28, Y12, Y14; \
	VPERMPS      48(AX), Y12, Y12; \
	VBLENDVPS    Y14, Y13, Y12, Y12; \
	VFMADD231PS  Y8, Y12, A; \
	VFMADD231PS  Y10, Y12, B; \
	VPBROADCASTD (R12)(R9*1), Y12; \
	VPSRLVD      Y15, Y12, Y12; \
	VPERMPS      80(AX), Y12, Y13; \
	VPSLLD       $28, Y12, Y14; \
	VPERMPS      48(AX), Y12, Y12; \
	VBLENDVPS    Y14, Y13, Y12, Y12; \
	VFMADD231PS  Y9, Y12, A; \
	VFMADD231PS  Y11, Y12, B

// func laneAcc2AVX2(acc *[2]*float32, w *[2]*float32, wbuf *float32, nb int, part *lanePart, data *byte, block int)
//
// laneAcc4AVX512 on 256-bit registers for two heads. First the weights
// times the tokens' scales, wbuf[32b:32b+32] = head 1's halves 0 and 1,
// then head 2's, of block b. Then per four coordinates (Y0–Y3: head 1,
// Y4–Y7: head 2), each coordinate's two halves of 8 indices of a block
// are unpacked and looked up as in laneScore2AVX2 and multiplied into
// both heads' lanes by their wbuf rows (Y8–Y11); after the last block,
// each head's four coordinates are summed across the lanes and added to
// acc[j] (acc[1] nil: one head). dim is a multiple of 4.
TEXT ·laneAcc2AVX2(SB), NOSPLIT, $0-56
	MOVQ part+32(FP), AX
	MOVQ data+40(FP), BX
	MOVQ block+48(FP), R10
	MOVQ w+8(FP), SI
	MOVQ wbuf+16(FP), DI
	MOVQ nb+24(FP), CX
	MOVQ 0(SI), R11
	MOVQ 8(SI), R12
	MOVQ 0(AX), DX
	ADDQ BX, DX

aprep:
	VCVTPH2PS (DX), Y0
	VCVTPH2PS 16(DX), Y1
	VMULPS    (R11), Y0, Y2
	VMOVUPS   Y2, (DI)
	VMULPS    32(R11), Y1, Y2
	VMOVUPS   Y2, 32(DI)
	VMULPS    (R12), Y0, Y2
	VMOVUPS   Y2, 64(DI)
	VMULPS    32(R12), Y1, Y2
	VMOVUPS   Y2, 96(DI)
	ADDQ      $64, R11
	ADDQ      $64, R12
	ADDQ      $128, DI
	ADDQ      R10, DX
	DECQ      CX
	JNE       aprep

	VMOVDQU 112(AX), Y15
	MOVQ    24(AX), R14
	MOVQ    R14, R9
	SHRQ    $1, R9
	MOVQ    8(AX), R8
	ADDQ    BX, R8
	MOVQ    16(AX), SI
	XORQ    R13, R13

aquad:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	MOVQ   R8, R11
	MOVQ   wbuf+16(FP), DI
	MOVQ   nb+24(FP), CX
	CMPQ   R9, $4
	JEQ    ablk4

ablk3:
	VMOVUPS (DI), Y8
	VMOVUPS 32(DI), Y9
	VMOVUPS 64(DI), Y10
	VMOVUPS 96(DI), Y11
	MOVQ    R11, R12
	LANE3(Y0, Y4)
	ADDQ    R14, R12
	LANE3(Y1, Y5)
	ADDQ    R14, R12
	LANE3(Y2, Y6)
	ADDQ    R14, R12
	LANE3(Y3, Y7)
	ADDQ         $128, DI
	ADDQ         R10, R11
	DECQ         CX
	JNE          ablk3
	JMP          ahsum

ablk4:
	VMOVUPS      (DI), Y8
	VMOVUPS      32(DI), Y9
	VMOVUPS      64(DI), Y10
	VMOVUPS      96(DI), Y11
	MOVQ         R11, R12
	LANE4(Y0, Y4)
	ADDQ         R14, R12
	LANE4(Y1, Y5)
	ADDQ         R14, R12
	LANE4(Y2, Y6)
	ADDQ         R14, R12
	LANE4(Y3, Y7)
	ADDQ         $128, DI
	ADDQ         R10, R11
	DECQ         CX
	JNE          ablk4

ahsum:
	VHADDPS      Y1, Y0, Y0
	VHADDPS      Y3, Y2, Y2
	VHADDPS      Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0
	VHADDPS      Y5, Y4, Y4
	VHADDPS      Y7, Y6, Y6
	VHADDPS      Y6, Y4, Y4
	VEXTRACTF128 $1, Y4, X5
	VADDPS       X5, X4, X4
	MOVQ         acc+0(FP), DX
	MOVQ         0(DX), R11
	VADDPS       (R11)(R13*1), X0, X0
	VMOVUPS      X0, (R11)(R13*1)
	MOVQ         8(DX), R11
	TESTQ        R11, R11
	JEQ          anext
	VADDPS       (R11)(R13*1), X4, X4
	VMOVUPS      X4, (R11)(R13*1)

anext:
	ADDQ $16, R13
	LEAQ (R8)(R14*4), R8
	SUBQ $4, SI
	JNE  aquad

	VZEROUPPER
	RET
