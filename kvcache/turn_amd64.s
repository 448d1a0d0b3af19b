//go:build amd64 && !purego

#include "textflag.h"

// The 512-bit kernels keep four queries' sums of 64 positions in
// Z0–Z15 (query j in Z(4j)…Z(4j+3)). ROW4Z(step) adds the row of 64
// floats at (DX) times each query's weight at (SI), (R9), (R10), (R11)
// and steps the row by step bytes and the weights by one (Z16–Z23
// scratch); LOAD4Z(x)
// and STORE4Z(x) read and write the sums at byte offset x of the four
// outputs *DI (R12 scratch).
#define ROW4Z(step) \
	VMOVUPS      (DX), Z16; \
	VMOVUPS      64(DX), Z17; \
	VMOVUPS      128(DX), Z18; \
	VMOVUPS      192(DX), Z19; \
	VBROADCASTSS (SI), Z20; \
	VBROADCASTSS (R9), Z21; \
	VBROADCASTSS (R10), Z22; \
	VBROADCASTSS (R11), Z23; \
	VFMADD231PS  Z16, Z20, Z0; \
	VFMADD231PS  Z17, Z20, Z1; \
	VFMADD231PS  Z18, Z20, Z2; \
	VFMADD231PS  Z19, Z20, Z3; \
	VFMADD231PS  Z16, Z21, Z4; \
	VFMADD231PS  Z17, Z21, Z5; \
	VFMADD231PS  Z18, Z21, Z6; \
	VFMADD231PS  Z19, Z21, Z7; \
	VFMADD231PS  Z16, Z22, Z8; \
	VFMADD231PS  Z17, Z22, Z9; \
	VFMADD231PS  Z18, Z22, Z10; \
	VFMADD231PS  Z19, Z22, Z11; \
	VFMADD231PS  Z16, Z23, Z12; \
	VFMADD231PS  Z17, Z23, Z13; \
	VFMADD231PS  Z18, Z23, Z14; \
	VFMADD231PS  Z19, Z23, Z15; \
	ADDQ         step, DX; \
	ADDQ         $4, SI; \
	ADDQ         $4, R9; \
	ADDQ         $4, R10; \
	ADDQ         $4, R11

#define LOAD4Z(x) \
	MOVQ    0(DI), R12; \
	VMOVUPS (R12)(x*1), Z0; \
	VMOVUPS 64(R12)(x*1), Z1; \
	VMOVUPS 128(R12)(x*1), Z2; \
	VMOVUPS 192(R12)(x*1), Z3; \
	MOVQ    8(DI), R12; \
	VMOVUPS (R12)(x*1), Z4; \
	VMOVUPS 64(R12)(x*1), Z5; \
	VMOVUPS 128(R12)(x*1), Z6; \
	VMOVUPS 192(R12)(x*1), Z7; \
	MOVQ    16(DI), R12; \
	VMOVUPS (R12)(x*1), Z8; \
	VMOVUPS 64(R12)(x*1), Z9; \
	VMOVUPS 128(R12)(x*1), Z10; \
	VMOVUPS 192(R12)(x*1), Z11; \
	MOVQ    24(DI), R12; \
	VMOVUPS (R12)(x*1), Z12; \
	VMOVUPS 64(R12)(x*1), Z13; \
	VMOVUPS 128(R12)(x*1), Z14; \
	VMOVUPS 192(R12)(x*1), Z15

#define STORE4Z(x) \
	MOVQ    0(DI), R12; \
	VMOVUPS Z0, (R12)(x*1); \
	VMOVUPS Z1, 64(R12)(x*1); \
	VMOVUPS Z2, 128(R12)(x*1); \
	VMOVUPS Z3, 192(R12)(x*1); \
	MOVQ    8(DI), R12; \
	VMOVUPS Z4, (R12)(x*1); \
	VMOVUPS Z5, 64(R12)(x*1); \
	VMOVUPS Z6, 128(R12)(x*1); \
	VMOVUPS Z7, 192(R12)(x*1); \
	MOVQ    16(DI), R12; \
	VMOVUPS Z8, (R12)(x*1); \
	VMOVUPS Z9, 64(R12)(x*1); \
	VMOVUPS Z10, 128(R12)(x*1); \
	VMOVUPS Z11, 192(R12)(x*1); \
	MOVQ    24(DI), R12; \
	VMOVUPS Z12, (R12)(x*1); \
	VMOVUPS Z13, 64(R12)(x*1); \
	VMOVUPS Z14, 128(R12)(x*1); \
	VMOVUPS Z15, 192(R12)(x*1)

// The 256-bit kernels keep four queries' sums of 16 positions in Y0–Y7
// (query j in Y(2j), Y(2j+1)) and share these steps. ROW4Y(r) adds the
// row of 16 floats at (r) times each query's weight at (SI), (R9), (R10),
// (R11) + R13 (Y8–Y13 scratch); LOAD4Y and STORE4Y read and write the
// sums at byte offset AX of the four outputs *DI (R12 scratch); ZERO8Y
// clears them.
#define ROW4Y(r) \
	VMOVUPS      (r), Y8; \
	VMOVUPS      32(r), Y9; \
	VBROADCASTSS (SI)(R13*1), Y10; \
	VFMADD231PS  Y10, Y8, Y0; \
	VFMADD231PS  Y10, Y9, Y1; \
	VBROADCASTSS (R9)(R13*1), Y11; \
	VFMADD231PS  Y11, Y8, Y2; \
	VFMADD231PS  Y11, Y9, Y3; \
	VBROADCASTSS (R10)(R13*1), Y12; \
	VFMADD231PS  Y12, Y8, Y4; \
	VFMADD231PS  Y12, Y9, Y5; \
	VBROADCASTSS (R11)(R13*1), Y13; \
	VFMADD231PS  Y13, Y8, Y6; \
	VFMADD231PS  Y13, Y9, Y7

#define LOAD4Y \
	MOVQ    0(DI), R12; \
	VMOVUPS (R12)(AX*1), Y0; \
	VMOVUPS 32(R12)(AX*1), Y1; \
	MOVQ    8(DI), R12; \
	VMOVUPS (R12)(AX*1), Y2; \
	VMOVUPS 32(R12)(AX*1), Y3; \
	MOVQ    16(DI), R12; \
	VMOVUPS (R12)(AX*1), Y4; \
	VMOVUPS 32(R12)(AX*1), Y5; \
	MOVQ    24(DI), R12; \
	VMOVUPS (R12)(AX*1), Y6; \
	VMOVUPS 32(R12)(AX*1), Y7

#define STORE4Y \
	MOVQ    0(DI), R12; \
	VMOVUPS Y0, (R12)(AX*1); \
	VMOVUPS Y1, 32(R12)(AX*1); \
	MOVQ    8(DI), R12; \
	VMOVUPS Y2, (R12)(AX*1); \
	VMOVUPS Y3, 32(R12)(AX*1); \
	MOVQ    16(DI), R12; \
	VMOVUPS Y4, (R12)(AX*1); \
	VMOVUPS Y5, 32(R12)(AX*1); \
	MOVQ    24(DI), R12; \
	VMOVUPS Y6, (R12)(AX*1); \
	VMOVUPS Y7, 32(R12)(AX*1)

#define ZERO8Y \
	VXORPS Y0, Y0, Y0; \
	VXORPS Y1, Y1, Y1; \
	VXORPS Y2, Y2, Y2; \
	VXORPS Y3, Y3, Y3; \
	VXORPS Y4, Y4, Y4; \
	VXORPS Y5, Y5, Y5; \
	VXORPS Y6, Y6, Y6; \
	VXORPS Y7, Y7, Y7

// func turnAdd4AVX512(out *[4]*float32, w *float32, rows int, table *float32, stride int, set int)
//
// out[q][j] (+)= Σ_{k<rows} w[q·rows + k] · table[k·stride + j] for the
// four queries q < 4 and the 64 positions j of a chunk (Rope.meanScores;
// the pure-Go twin is turnAdd4Go). The 16 sums stay in Z0–Z15 while the
// table's rows stream by, four 16-float loads per row shared by the four
// queries; they start from out's values unless set is 1. rows ≥ 1.
TEXT ·turnAdd4AVX512(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DI
	MOVQ w+8(FP), SI
	MOVQ rows+16(FP), CX
	MOVQ table+24(FP), DX
	MOVQ stride+32(FP), BX
	SHLQ $2, BX
	MOVQ CX, R8
	SHLQ $2, R8
	LEAQ (SI)(R8*1), R9
	LEAQ (R9)(R8*1), R10
	LEAQ (R10)(R8*1), R11
	XORQ R14, R14 // LOAD4Z's and STORE4Z's offset
	MOVQ set+40(FP), AX
	TESTQ AX, AX
	JNE  zero
	LOAD4Z(R14)
	JMP  loop

zero:
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

loop:
	ROW4Z(BX)
	DECQ         CX
	JNZ          loop

	STORE4Z(R14)
	VZEROUPPER
	RET

// func turnAdd4AVX2(out *[4]*float32, w *float32, rows int, table *float32, stride int, set int)
//
// turnAdd4AVX512 on 256-bit registers: the 64 positions of the chunk in
// four passes of 16, each keeping the four queries' sums in Y0–Y7 while
// the table's rows stream by (two 8-float loads a row, shared by the four
// queries' broadcast weights). rows ≥ 1.
TEXT ·turnAdd4AVX2(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DI
	MOVQ w+8(FP), SI
	MOVQ rows+16(FP), CX
	MOVQ table+24(FP), DX
	MOVQ stride+32(FP), BX
	SHLQ $2, BX
	MOVQ CX, R8
	SHLQ $2, R8
	LEAQ (SI)(R8*1), R9
	LEAQ (R9)(R8*1), R10
	LEAQ (R10)(R8*1), R11
	XORQ AX, AX

tpass:
	MOVQ  set+40(FP), R12
	TESTQ R12, R12
	JNE   tzero
	LOAD4Y
	JMP     trows

tzero:
	ZERO8Y

trows:
	LEAQ (DX)(AX*1), R12
	XORQ R13, R13
	MOVQ CX, R14

trow:
	ROW4Y(R12)
	ADDQ         BX, R12
	ADDQ         $4, R13
	DECQ         R14
	JNE          trow

	STORE4Y
	ADDQ    $64, AX
	CMPQ    AX, $256
	JNE     tpass

	VZEROUPPER
	RET

// func meanAdd4AVX512(out, ew *[4]*float32, erows int, nw *[4]*float32, table *float32, stride int)
//
// out[q][j] += Σ_{k<erows} ew[q][k]·table[k·stride + j] +
// Σ_{k<6} nw[q][k]·table[(erows+k)·stride + j] for the four slots q and
// the 64 positions j of a chunk (meanPlan.add; the pure-Go twin is
// meanAdd4Go): turnAdd4AVX512's loop over the exact pairs' rows with
// each slot's span weights, then over the ropeNodes = 6 node rows with
// its chunk's node sums.
TEXT ·meanAdd4AVX512(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DI
	MOVQ ew+8(FP), AX
	MOVQ erows+16(FP), CX
	MOVQ nw+24(FP), R8
	MOVQ table+32(FP), DX
	MOVQ stride+40(FP), BX
	SHLQ $2, BX
	XORQ R14, R14 // LOAD4Z's and STORE4Z's offset
	LOAD4Z(R14)
	TESTQ CX, CX
	JZ    mnodes
	MOVQ 0(AX), SI
	MOVQ 8(AX), R9
	MOVQ 16(AX), R10
	MOVQ 24(AX), R11

mexact:
	ROW4Z(BX)
	DECQ         CX
	JNZ          mexact

mnodes:
	MOVQ 0(R8), SI
	MOVQ 8(R8), R9
	MOVQ 16(R8), R10
	MOVQ 24(R8), R11
	MOVQ $6, CX

mnode:
	ROW4Z(BX)
	DECQ         CX
	JNZ          mnode

	STORE4Z(R14)
	VZEROUPPER
	RET

// func meanAdd4AVX2(out, ew *[4]*float32, erows int, nw *[4]*float32, table *float32, stride int)
//
// meanAdd4AVX512 on 256-bit registers, as turnAdd4AVX2: the 64 positions
// of the chunk in four passes of 16, each over the exact pairs' rows,
// then the 6 node rows.
TEXT ·meanAdd4AVX2(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DI
	MOVQ table+32(FP), DX
	MOVQ stride+40(FP), BX
	SHLQ $2, BX
	XORQ AX, AX

apass:
	LOAD4Y
	LEAQ  (DX)(AX*1), R12
	MOVQ  erows+16(FP), R14
	TESTQ R14, R14
	JZ    anodes
	MOVQ  ew+8(FP), R8
	MOVQ 0(R8), SI
	MOVQ 8(R8), R9
	MOVQ 16(R8), R10
	MOVQ 24(R8), R11
	XORQ  R13, R13

aexact:
	ROW4Y(R12)
	ADDQ         BX, R12
	ADDQ         $4, R13
	DECQ         R14
	JNE          aexact

anodes:
	MOVQ nw+24(FP), R8
	MOVQ 0(R8), SI
	MOVQ 8(R8), R9
	MOVQ 16(R8), R10
	MOVQ 24(R8), R11
	XORQ R13, R13
	MOVQ $6, R14

anode:
	ROW4Y(R12)
	ADDQ         BX, R12
	ADDQ         $4, R13
	DECQ         R14
	JNE          anode

	STORE4Y
	ADDQ $64, AX
	CMPQ AX, $256
	JNE  apass

	VZEROUPPER
	RET

// func spanWeightsAVX512(w, z, turns *float32, pe, nq int)
//
// For nq queries j and pe pairs e (pe ≥ 1, nq ≥ 1), with zr, zi the
// query's Re z and Im z (2·pe floats a query from z) and c, s the
// turns' cos and sin: w[j][e] = zr·c − zi·s and w[j][pe+e] = −zr·s −
// zi·c (spanWeights; the pure-Go twin is spanWeightsGo), 16 pairs a
// step, the last step masked.
TEXT ·spanWeightsAVX512(SB), NOSPLIT, $0-40
	MOVQ w+0(FP), DI
	MOVQ z+8(FP), SI
	MOVQ turns+16(FP), DX
	MOVQ pe+24(FP), BX
	MOVQ nq+32(FP), R8
	MOVQ BX, R9
	SHLQ $2, R9 // pe in bytes

wquery:
	XORQ AX, AX

wpairs:
	MOVQ         BX, CX
	SUBQ         AX, CX
	CMPQ         CX, $16
	JLE          wmask
	MOVQ         $16, CX

wmask:
	MOVL         $1, R10
	SHLL         CX, R10
	DECL         R10
	KMOVW        R10, K1
	LEAQ         (SI)(AX*4), R11
	VMOVUPS.Z    (R11), K1, Z0
	VMOVUPS.Z    (R11)(R9*1), K1, Z1
	LEAQ         (DX)(AX*4), R12
	VMOVUPS.Z    (R12), K1, Z2
	VMOVUPS.Z    (R12)(R9*1), K1, Z3
	VMULPS       Z1, Z3, Z4
	VFMSUB231PS  Z0, Z2, Z4
	VMULPS       Z1, Z2, Z5
	VFNMSUB231PS Z0, Z3, Z5
	LEAQ         (DI)(AX*4), R13
	VMOVUPS      Z4, K1, (R13)
	VMOVUPS      Z5, K1, (R13)(R9*1)
	ADDQ         $16, AX
	CMPQ         AX, BX
	JLT          wpairs

	LEAQ (SI)(R9*2), SI
	LEAQ (DI)(R9*2), DI
	DECQ R8
	JNZ  wquery

	VZEROUPPER
	RET

// func meanRunAVX512(out *[4]*float32, ew *float32, ewStep, erows int, nw *float32, nwStride int, table *float32, col0, chunks int)
//
// meanAdd4AVX512 over a run of chunks ≥ 1 of one group of four queries
// (meanRun; the pure-Go twin is meanRunGo): chunk i adds to
// out[q][64i:64i+64] the table's rows at column col0+i of the span
// (taken in turn, 0 or 1; rows of ropeSpan = 128 floats) weighed by the
// exact weights of its span (ew, the next span's ewStep floats on; a
// query's erows after the last's) and its node sums (nw, 6 floats on per
// chunk; a query's nwStride floats after the last's).
TEXT ·meanRunAVX512(SB), NOSPLIT, $0-72
	MOVQ out+0(FP), DI
	MOVQ ew+8(FP), R8
	MOVQ nw+32(FP), R13
	MOVQ col0+56(FP), BX
	MOVQ chunks+64(FP), AX
	XORQ R14, R14

rchunk:
	LOAD4Z(R14)
	MOVQ table+48(FP), DX
	MOVQ BX, R12
	SHLQ $8, R12
	ADDQ R12, DX
	MOVQ  erows+24(FP), CX
	TESTQ CX, CX
	JZ    rnodes
	MOVQ  CX, R12
	SHLQ  $2, R12
	MOVQ  R8, SI
	LEAQ  (SI)(R12*1), R9
	LEAQ  (R9)(R12*1), R10
	LEAQ  (R10)(R12*1), R11

rexact:
	ROW4Z($512)
	DECQ         CX
	JNZ          rexact

rnodes:
	MOVQ nwStride+40(FP), R12
	SHLQ $2, R12
	MOVQ R13, SI
	LEAQ (SI)(R12*1), R9
	LEAQ (R9)(R12*1), R10
	LEAQ (R10)(R12*1), R11
	MOVQ $6, CX

rnode:
	ROW4Z($512)
	DECQ         CX
	JNZ          rnode

	STORE4Z(R14)
	ADDQ $256, R14
	ADDQ $24, R13
	INCQ BX
	CMPQ BX, $2
	JNE  rnext
	XORQ BX, BX
	MOVQ ewStep+16(FP), R12
	SHLQ $2, R12
	ADDQ R12, R8

rnext:
	DECQ AX
	JNZ  rchunk

	VZEROUPPER
	RET

// func turnTiles4AVX512(out *[4]*float32, w *float32, rows int, tiles *float32)
//
// out[q][16t + j] = Σ_{k<rows} w[q·rows + k]·tiles[(t·rows + k)·16 + j]
// for the four queries q and the 16 columns j of two tiles t (turnTiles4;
// the pure-Go twin is turnTiles4Go): the 8 sums in Z0–Z7 while both
// tiles' rows stream by, one 16-float load each a row. rows ≥ 1.
TEXT ·turnTiles4AVX512(SB), NOSPLIT, $0-32
	MOVQ out+0(FP), DI
	MOVQ w+8(FP), SI
	MOVQ rows+16(FP), CX
	MOVQ tiles+24(FP), DX
	MOVQ CX, R8
	SHLQ $2, R8
	LEAQ (SI)(R8*1), R9
	LEAQ (R9)(R8*1), R10
	LEAQ (R10)(R8*1), R11
	MOVQ CX, R12
	SHLQ $6, R12
	ADDQ DX, R12 // the second tile
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7

tloop:
	VMOVUPS      (DX), Z16
	VMOVUPS      (R12), Z17
	VBROADCASTSS (SI), Z20
	VBROADCASTSS (R9), Z21
	VBROADCASTSS (R10), Z22
	VBROADCASTSS (R11), Z23
	VFMADD231PS  Z16, Z20, Z0
	VFMADD231PS  Z17, Z20, Z1
	VFMADD231PS  Z16, Z21, Z2
	VFMADD231PS  Z17, Z21, Z3
	VFMADD231PS  Z16, Z22, Z4
	VFMADD231PS  Z17, Z22, Z5
	VFMADD231PS  Z16, Z23, Z6
	VFMADD231PS  Z17, Z23, Z7
	ADDQ         $64, DX
	ADDQ         $64, R12
	ADDQ         $4, SI
	ADDQ         $4, R9
	ADDQ         $4, R10
	ADDQ         $4, R11
	DECQ         CX
	JNZ          tloop

	MOVQ    0(DI), R12
	VMOVUPS Z0, (R12)
	VMOVUPS Z1, 64(R12)
	MOVQ    8(DI), R12
	VMOVUPS Z2, (R12)
	VMOVUPS Z3, 64(R12)
	MOVQ    16(DI), R12
	VMOVUPS Z4, (R12)
	VMOVUPS Z5, 64(R12)
	MOVQ    24(DI), R12
	VMOVUPS Z6, (R12)
	VMOVUPS Z7, 64(R12)
	VZEROUPPER
	RET

// func turnTiles4AVX2(out *[4]*float32, w *float32, rows int, tiles *float32)
//
// turnTiles4AVX512 on 256-bit registers: a tile a pass, the four queries'
// sums of its 16 columns in Y0–Y7 while its rows stream by. rows ≥ 1.
TEXT ·turnTiles4AVX2(SB), NOSPLIT, $0-32
	MOVQ out+0(FP), DI
	MOVQ w+8(FP), SI
	MOVQ rows+16(FP), CX
	MOVQ tiles+24(FP), DX
	MOVQ CX, R8
	SHLQ $2, R8
	LEAQ (SI)(R8*1), R9
	LEAQ (R9)(R8*1), R10
	LEAQ (R10)(R8*1), R11
	XORQ AX, AX // the pass's byte offset in out

upass:
	ZERO8Y
	XORQ R13, R13
	MOVQ CX, R14

urow:
	ROW4Y(DX)
	ADDQ         $64, DX
	ADDQ         $4, R13
	DECQ         R14
	JNE          urow

	STORE4Y
	ADDQ    $64, AX
	CMPQ    AX, $128
	JNE     upass

	VZEROUPPER
	RET
