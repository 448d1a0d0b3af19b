//go:build amd64 && !purego

#include "textflag.h"

// tcqperm: the permutations of viterbi8AVX512, eight qwords each: the
// predecessors p0 = s'>>1 and p1 = p0 | 4 of states s' = 0…7, then the
// subsets of their branches (ungerboeck8Labels), indices into the step's
// four errors.
DATA tcqperm<>+0(SB)/8, $0
DATA tcqperm<>+8(SB)/8, $0
DATA tcqperm<>+16(SB)/8, $1
DATA tcqperm<>+24(SB)/8, $1
DATA tcqperm<>+32(SB)/8, $2
DATA tcqperm<>+40(SB)/8, $2
DATA tcqperm<>+48(SB)/8, $3
DATA tcqperm<>+56(SB)/8, $3
DATA tcqperm<>+64(SB)/8, $4
DATA tcqperm<>+72(SB)/8, $4
DATA tcqperm<>+80(SB)/8, $5
DATA tcqperm<>+88(SB)/8, $5
DATA tcqperm<>+96(SB)/8, $6
DATA tcqperm<>+104(SB)/8, $6
DATA tcqperm<>+112(SB)/8, $7
DATA tcqperm<>+120(SB)/8, $7
DATA tcqperm<>+128(SB)/8, $0
DATA tcqperm<>+136(SB)/8, $2
DATA tcqperm<>+144(SB)/8, $2
DATA tcqperm<>+152(SB)/8, $0
DATA tcqperm<>+160(SB)/8, $1
DATA tcqperm<>+168(SB)/8, $3
DATA tcqperm<>+176(SB)/8, $3
DATA tcqperm<>+184(SB)/8, $1
DATA tcqperm<>+192(SB)/8, $2
DATA tcqperm<>+200(SB)/8, $0
DATA tcqperm<>+208(SB)/8, $0
DATA tcqperm<>+216(SB)/8, $2
DATA tcqperm<>+224(SB)/8, $3
DATA tcqperm<>+232(SB)/8, $1
DATA tcqperm<>+240(SB)/8, $1
DATA tcqperm<>+248(SB)/8, $3
GLOBL tcqperm<>(SB), RODATA|NOPTR, $256

// func viterbi8AVX512(dist *float64, n int, cost *[8]float64, back *uint64)
//
// The eight costs in one zmm register; a step is two permutes of them
// (to the predecessors), two adds of the step's errors permuted to the
// branches' subsets (off the chain of dependences), a VMINPD, whose
// MIN(B, A) = B < A ? B : A is viterbi8's select, and a compare B < A
// for the decisions: the same float operations as viterbi8.
TEXT ·viterbi8AVX512(SB), NOSPLIT, $0-32
	MOVQ      dist+0(FP), SI
	MOVQ      n+8(FP), CX
	MOVQ      cost+16(FP), DX
	MOVQ      back+24(FP), DI
	VMOVUPD   (DX), Z0
	VMOVDQU64 tcqperm<>+0(SB), Z10
	VMOVDQU64 tcqperm<>+64(SB), Z11
	VMOVDQU64 tcqperm<>+128(SB), Z12
	VMOVDQU64 tcqperm<>+192(SB), Z13
	TESTQ     CX, CX
	JLE       done

loop:
	VBROADCASTF64X4 (SI), Z1
	VPERMPD         Z1, Z12, Z2
	VPERMPD         Z1, Z13, Z3
	VPERMPD         Z0, Z10, Z4
	VPERMPD         Z0, Z11, Z5
	VADDPD          Z2, Z4, Z4
	VADDPD          Z3, Z5, Z5
	VCMPPD          $1, Z4, Z5, K1
	VMINPD          Z4, Z5, Z0
	KMOVW           K1, AX
	MOVQ            AX, (DI)
	ADDQ            $32, SI
	ADDQ            $8, DI
	DECQ            CX
	JNZ             loop

done:
	VMOVUPD Z0, (DX)
	VZEROUPPER
	RET
