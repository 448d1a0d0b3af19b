//go:build amd64 && !purego

#include "textflag.h"

// func expandCodesAVX512(dst *float32, rowLen int, n int, groups int, table *[16]float32, codes *byte, stride int, b int, ctrl *[64]byte)
//
// Expands n scaled codes (fp16 scale, then packed b-bit indices, b ≤ 4)
// into rows scale·table[idx] of groups·16 floats, rowLen floats apart:
// the value side of attention on TurboQuant codes (quant/accumulate.go).
// Per group of 16 indices (2b bytes), VPMULTISHIFTQB picks each lane's
// byte from a broadcast 8-byte load (ctrl as for dotCodesAVX512) and one
// VPERMPS looks the 16 entries up in the replicated table (entry k holds
// centroid k mod 2^b, so the bits above an index need no mask). Each
// code's last group may read up to 7 bytes past its indices; the caller
// keeps that inside codes.
TEXT ·expandCodesAVX512(SB), NOSPLIT, $0-72
	MOVQ      dst+0(FP), DI
	MOVQ      rowLen+8(FP), R8
	SHLQ      $2, R8
	MOVQ      n+16(FP), CX
	MOVQ      groups+24(FP), R9
	MOVQ      table+32(FP), AX
	MOVQ      codes+40(FP), BX
	MOVQ      stride+48(FP), R10
	MOVQ      b+56(FP), DX
	ADDQ      DX, DX
	MOVQ      ctrl+64(FP), SI
	VMOVDQU64 (SI), Z15
	VMOVUPS   (AX), Z13
	TESTQ     CX, CX
	JE        done

code:
	MOVWLZX      (BX), SI
	VMOVD        SI, X5
	VCVTPH2PS    X5, X5
	VBROADCASTSS X5, Z5
	LEAQ         2(BX), R11
	MOVQ         DI, R12
	MOVQ         R9, R13

group:
	VPMULTISHIFTQB.BCST (R11), Z15, Z4
	VPERMPS             Z13, Z4, Z4
	VMULPS              Z5, Z4, Z4
	VMOVUPS             Z4, (R12)
	ADDQ                DX, R11
	ADDQ                $64, R12
	DECQ                R13
	JNE                 group

	ADDQ R8, DI
	ADDQ R10, BX
	DECQ CX
	JNE  code

done:
	VZEROUPPER
	RET

// func dotCodesGroup4AVX512(dst *float32, n int, q *float32, groups int, table *[16]float32, codes *byte, stride int, b int, ctrl *[64]byte, flags int)
//
// Scores n scaled codes (as dotCodesAVX512) against four queries at once:
// each group of 16 indices is unpacked and looked up once and multiplied
// into four accumulators, one scan of the codes for a grouped-query head
// group. q holds the queries interleaved by 16-coordinate group (group
// g: query 0's 16 values, then query 1's, 2's, 3's: 256 bytes); dst gets
// four scores per code (query 0..3), set or, with flags bit 0, added.
TEXT ·dotCodesGroup4AVX512(SB), NOSPLIT, $0-80
	MOVQ      dst+0(FP), DI
	MOVQ      n+8(FP), CX
	MOVQ      q+16(FP), SI
	MOVQ      groups+24(FP), R10
	MOVQ      table+32(FP), AX
	MOVQ      codes+40(FP), BX
	MOVQ      stride+48(FP), R14
	MOVQ      b+56(FP), DX
	ADDQ      DX, DX
	MOVQ      ctrl+64(FP), R11
	VMOVDQU64 (R11), Z15
	VMOVUPS   (AX), Z13
	MOVQ      flags+72(FP), AX
	TESTQ     CX, CX
	JE        g4done

g4code:
	VXORPS Z0, Z0, Z0
	VXORPS Z1, Z1, Z1
	VXORPS Z2, Z2, Z2
	VXORPS Z3, Z3, Z3
	LEAQ   2(BX), R11
	MOVQ   SI, R12
	MOVQ   R10, R13

g4group:
	VPMULTISHIFTQB.BCST (R11), Z15, Z4
	VPERMPS             Z13, Z4, Z4
	VFMADD231PS         (R12), Z4, Z0
	VFMADD231PS         64(R12), Z4, Z1
	VFMADD231PS         128(R12), Z4, Z2
	VFMADD231PS         192(R12), Z4, Z3
	ADDQ                DX, R11
	ADDQ                $256, R12
	DECQ                R13
	JNE                 g4group

	// Four horizontal sums at once: fold each to 8 lanes, then
	// VHADDPS pairs them down to [s0, s1, s2, s3] in X0.
	VEXTRACTF64X4 $1, Z0, Y4
	VADDPS        Y4, Y0, Y0
	VEXTRACTF64X4 $1, Z1, Y5
	VADDPS        Y5, Y1, Y1
	VEXTRACTF64X4 $1, Z2, Y6
	VADDPS        Y6, Y2, Y2
	VEXTRACTF64X4 $1, Z3, Y7
	VADDPS        Y7, Y3, Y3
	VHADDPS       Y1, Y0, Y0
	VHADDPS       Y3, Y2, Y2
	VHADDPS       Y2, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	MOVWLZX       (BX), R9
	VMOVD         R9, X5
	VCVTPH2PS     X5, X5
	VBROADCASTSS  X5, X5
	VMULPS        X5, X0, X0
	TESTQ         $1, AX
	JE            g4store
	VADDPS        (DI), X0, X0

g4store:
	VMOVUPS X0, (DI)
	ADDQ    $16, DI
	ADDQ    R14, BX
	DECQ    CX
	JNE     g4code

g4done:
	VZEROUPPER
	RET

// func accCodes4AVX512(acc *[4]*float32, w *[4]*float32, n int, groups int, table *[16]float32, codes *byte, idx int, stride int, b int, ctrl *[64]byte)
//
// The value side of attention for four heads at once: for each of n
// scaled codes (fp16 scale at codes + i·stride, a group's 16 packed b-bit
// indices at idx bytes after it, the next group 2b bytes further), the
// group is unpacked and looked up once (as expandCodesAVX512), scaled,
// and added to each head's sum with that head's weight for the code
// (embedded broadcasts of w[j][i]). groups is 1 or 2; the sums of head j
// (16·groups floats at acc[j]) stay in Z0–Z3 (first group) and Z4–Z7
// (second) for the whole pass. Each group may read up to 8 − 2b bytes
// past its indices; the caller keeps that inside codes.
TEXT ·accCodes4AVX512(SB), NOSPLIT, $0-80
	MOVQ      acc+0(FP), DI
	MOVQ      w+8(FP), SI
	MOVQ      n+16(FP), CX
	MOVQ      groups+24(FP), R8
	MOVQ      table+32(FP), AX
	MOVQ      codes+40(FP), BX
	MOVQ      idx+48(FP), R9
	MOVQ      stride+56(FP), R10
	MOVQ      b+64(FP), DX
	ADDQ      DX, DX
	MOVQ      ctrl+72(FP), R11
	VMOVDQU64 (R11), Z15
	VMOVUPS   (AX), Z13
	MOVQ      8(SI), R12
	MOVQ      16(SI), R13
	MOVQ      24(SI), R14
	MOVQ      0(SI), SI
	MOVQ      0(DI), AX
	VMOVUPS   (AX), Z0
	MOVQ      8(DI), AX
	VMOVUPS   (AX), Z1
	MOVQ      16(DI), AX
	VMOVUPS   (AX), Z2
	MOVQ      24(DI), AX
	VMOVUPS   (AX), Z3
	CMPQ      R8, $2
	JNE       a4loop
	MOVQ      0(DI), AX
	VMOVUPS   64(AX), Z4
	MOVQ      8(DI), AX
	VMOVUPS   64(AX), Z5
	MOVQ      16(DI), AX
	VMOVUPS   64(AX), Z6
	MOVQ      24(DI), AX
	VMOVUPS   64(AX), Z7

a4loop:
	MOVWLZX             (BX), AX
	VMOVD               AX, X9
	VCVTPH2PS           X9, X9
	VBROADCASTSS        X9, Z9
	LEAQ                (BX)(R9*1), AX
	VPMULTISHIFTQB.BCST (AX), Z15, Z10
	VPERMPS             Z13, Z10, Z10
	VMULPS              Z9, Z10, Z10
	VFMADD231PS.BCST    (SI), Z10, Z0
	VFMADD231PS.BCST    (R12), Z10, Z1
	VFMADD231PS.BCST    (R13), Z10, Z2
	VFMADD231PS.BCST    (R14), Z10, Z3
	CMPQ                R8, $2
	JNE                 a4next
	ADDQ                DX, AX
	VPMULTISHIFTQB.BCST (AX), Z15, Z11
	VPERMPS             Z13, Z11, Z11
	VMULPS              Z9, Z11, Z11
	VFMADD231PS.BCST    (SI), Z11, Z4
	VFMADD231PS.BCST    (R12), Z11, Z5
	VFMADD231PS.BCST    (R13), Z11, Z6
	VFMADD231PS.BCST    (R14), Z11, Z7

a4next:
	ADDQ $4, SI
	ADDQ $4, R12
	ADDQ $4, R13
	ADDQ $4, R14
	ADDQ R10, BX
	DECQ CX
	JNE  a4loop

	MOVQ    0(DI), AX
	VMOVUPS Z0, (AX)
	MOVQ    8(DI), AX
	VMOVUPS Z1, (AX)
	MOVQ    16(DI), AX
	VMOVUPS Z2, (AX)
	MOVQ    24(DI), AX
	VMOVUPS Z3, (AX)
	CMPQ    R8, $2
	JNE     a4done
	MOVQ    0(DI), AX
	VMOVUPS Z4, 64(AX)
	MOVQ    8(DI), AX
	VMOVUPS Z5, 64(AX)
	MOVQ    16(DI), AX
	VMOVUPS Z6, 64(AX)
	MOVQ    24(DI), AX
	VMOVUPS Z7, 64(AX)

a4done:
	VZEROUPPER
	RET
