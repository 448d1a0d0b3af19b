//go:build amd64 && !purego

#include "textflag.h"

// Scoring scaled codes (an fp16 scale, then packed b-bit indices, b ≤ 4)
// against a prepared query (ALGORITHMS.md §6): unpack a group of indices
// into vector lanes, look them up in the codebook held in registers with a
// permute, FMA with the query; at the end of a code, a horizontal sum
// times the scale is stored (or added) into dst.
//
// AVX2, 8 coordinates per group (b bytes): a 4-byte load broadcast to 8
// lanes, shifted per lane by j·b and masked, gives 8 indices; VPERMPS
// looks up 8 entries (two VPERMPS and a blend for 16).
// AVX-512 (VBMI), 16 coordinates per group (2b bytes): VPMULTISHIFTQB
// picks each lane's byte straight from the broadcast 8-byte load; one
// VPERMPS covers 16 entries.

// func dotCodes8AVX2(dst *float32, n int, q *float32, groups int, table *[16]float32, codes *byte, stride int, b int, shifts *[8]uint32, flags int)
// func dotCodes16AVX2(...) — same arguments.
// func dotCodesAVX512(dst *float32, n int, q *float32, groups int, table *[16]float32, codes *byte, stride int, b int, ctrl *[64]byte, flags int)
// groups counts 8-coordinate groups (AVX2, a multiple of 4) or
// 16-coordinate groups (AVX-512, even); table is replicated (entry k holds
// centroid k mod 2^b); flags bit 0 = add into dst.

#define LOAD_ARGS \
	MOVQ dst+0(FP), DI; \
	MOVQ n+8(FP), CX; \
	MOVQ q+16(FP), SI; \
	MOVQ groups+24(FP), R8; \
	MOVQ table+32(FP), AX; \
	MOVQ codes+40(FP), BX; \
	MOVQ stride+48(FP), R9; \
	MOVQ b+56(FP), R10; \
	MOVQ flags+72(FP), R14

// SCALE_STORE reduces Y0..Y3 (ymm halves summed already for AVX-512),
// multiplies by the fp16 scale at (BX) and stores or adds into (DI).
#define SCALE_STORE \
	VADDPS Y1, Y0, Y0; \
	VADDPS Y3, Y2, Y2; \
	VADDPS Y2, Y0, Y0; \
	VEXTRACTF128 $1, Y0, X1; \
	VADDPS X1, X0, X0; \
	VMOVHLPS X0, X0, X1; \
	VADDPS X1, X0, X0; \
	VPSHUFD $1, X0, X1; \
	VADDSS X1, X0, X0; \
	MOVWLZX (BX), DX; \
	VMOVD DX, X5; \
	VCVTPH2PS X5, X5; \
	VMULSS X5, X0, X0; \
	TESTQ $1, R14; \
	JE 2(PC); \
	VADDSS (DI), X0, X0; \
	VMOVSS X0, (DI)

// VPERMPS reads only the low 3 bits of each lane; the table is
// replicated (entry k holds centroid k mod 2^b), so the bits of the next
// index above an index need no mask.
#define GROUP8(qoff, T, ACC) \
	VPBROADCASTD (R11), T; \
	ADDQ R10, R11; \
	VPSRLVD Y15, T, T; \
	VPERMPS Y13, T, T; \
	VFMADD231PS qoff(R12), T, ACC

// No mask at b = 4: VPERMPS reads only the low 3 bits of each lane, and
// the shift left by 28 keeps bit 3 alone as the blend's sign bit.
#define GROUP16(off, qoff, T, U, ACC) \
	VPBROADCASTD off(R11), T; \
	VPSRLVD Y15, T, T; \
	VPERMPS Y13, T, U; \
	VPERMPS Y12, T, Y11; \
	VPSLLD $28, T, T; \
	VBLENDVPS T, Y11, U, U; \
	VFMADD231PS qoff(R12), U, ACC

TEXT ·dotCodes8AVX2(SB), NOSPLIT, $0-80
	LOAD_ARGS
	MOVQ    shifts+64(FP), DX
	VMOVDQU (DX), Y15
	VMOVUPS (AX), Y13
	TESTQ   CX, CX
	JE      done8

key8:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	LEAQ   2(BX), R11
	MOVQ   SI, R12
	MOVQ   R8, R13

group8:
	GROUP8(0, Y4, Y0)
	GROUP8(32, Y5, Y1)
	GROUP8(64, Y6, Y2)
	GROUP8(96, Y7, Y3)
	ADDQ $128, R12
	SUBQ $4, R13
	JNE  group8

	SCALE_STORE
	ADDQ $4, DI
	ADDQ R9, BX
	DECQ CX
	JNE  key8

done8:
	VZEROUPPER
	RET

TEXT ·dotCodes16AVX2(SB), NOSPLIT, $0-80
	LOAD_ARGS
	MOVQ    shifts+64(FP), DX
	VMOVDQU (DX), Y15
	VMOVUPS (AX), Y13
	VMOVUPS 32(AX), Y12
	TESTQ   CX, CX
	JE      done16

key16:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	LEAQ   2(BX), R11
	MOVQ   SI, R12
	MOVQ   R8, R13

group16:
	GROUP16(0, 0, Y4, Y5, Y0)
	GROUP16(4, 32, Y6, Y7, Y1)
	GROUP16(8, 64, Y8, Y9, Y2)
	GROUP16(12, 96, Y4, Y5, Y3)
	ADDQ $16, R11
	ADDQ $128, R12
	SUBQ $4, R13
	JNE  group16

	SCALE_STORE
	ADDQ $4, DI
	ADDQ R9, BX
	DECQ CX
	JNE  key16

done16:
	VZEROUPPER
	RET

// VPERMPS on 16 entries reads only the low 4 bits of each lane; with the
// replicated table (entry k holds centroid k mod 2^b) no mask is needed.
// A group of 16 indices occupies 2b bytes.
#define GROUP512(off, qoff, T, ACC) \
	VPMULTISHIFTQB.BCST off(R11), Z15, T; \
	VPERMPS Z13, T, T; \
	VFMADD231PS qoff(R12), T, ACC

TEXT ·dotCodesAVX512(SB), NOSPLIT, $0-80
	LOAD_ARGS
	MOVQ      ctrl+64(FP), DX
	VMOVDQU64 (DX), Z15
	VMOVUPS   (AX), Z13
	TESTQ     CX, CX
	JE        done512

key512:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VPXORD Z20, Z20, Z20
	VPXORD Z21, Z21, Z21
	VPXORD Z22, Z22, Z22
	VPXORD Z23, Z23, Z23
	LEAQ   2(BX), R11
	MOVQ   SI, R12
	MOVQ   R8, R13

	LEAQ (R10)(R10*1), DX // bytes per 16-index group

group512:
	GROUP512(0, 0, Z4, Z20)
	ADDQ DX, R11
	GROUP512(0, 64, Z5, Z21)
	ADDQ DX, R11
	ADDQ $128, R12
	SUBQ $2, R13
	JNE  group512

	VADDPS        Z21, Z20, Z20
	VEXTRACTF64X4 $1, Z20, Y1
	VADDPS        Y1, Y20, Y0
	VXORPS        Y1, Y1, Y1
	SCALE_STORE
	ADDQ $4, DI
	ADDQ R9, BX
	DECQ CX
	JNE  key512

done512:
	VZEROUPPER
	RET

// func dotRowsAVX512(dst *float32, n int, q *float32, d int, keys *float32)
// The fp32 baseline at the AVX-512 level; d a multiple of 32.
TEXT ·dotRowsAVX512(SB), NOSPLIT, $0-40
	MOVQ  dst+0(FP), DI
	MOVQ  n+8(FP), CX
	MOVQ  q+16(FP), SI
	MOVQ  d+24(FP), R8
	MOVQ  keys+32(FP), BX
	TESTQ CX, CX
	JE    doneRows512

keyRows512:
	VPXORD Z20, Z20, Z20
	VPXORD Z21, Z21, Z21
	VPXORD Z22, Z22, Z22
	VPXORD Z23, Z23, Z23
	MOVQ   SI, R12
	MOVQ   R8, R13

rows512:
	VMOVUPS     (BX), Z4
	VMOVUPS     64(BX), Z5
	VFMADD231PS (R12), Z4, Z20
	VFMADD231PS 64(R12), Z5, Z21
	ADDQ        $128, BX
	ADDQ        $128, R12
	SUBQ        $32, R13
	JNE         rows512

	VADDPS        Z21, Z20, Z20
	VEXTRACTF64X4 $1, Z20, Y1
	VADDPS        Y1, Y20, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VMOVHLPS      X0, X0, X1
	VADDPS        X1, X0, X0
	VPSHUFD       $1, X0, X1
	VADDSS        X1, X0, X0
	VMOVSS        X0, (DI)
	ADDQ          $4, DI
	DECQ          CX
	JNE           keyRows512

doneRows512:
	VZEROUPPER
	RET

// func dotCodes4AVX512(dst *float32, n int, q *float32, groups int, table *[16]float32, codes *byte, stride int, b int, ctrl *[64]byte, flags int)
// As dotCodesAVX512, four codes at a time (n a multiple of 4): one load
// of each query chunk serves four codes, four independent accumulators
// hide the FMA latency, and one horizontal reduction and one fp16
// conversion serve four results.
TEXT ·dotCodes4AVX512(SB), NOSPLIT, $0-80
	MOVQ      dst+0(FP), DI
	MOVQ      n+8(FP), CX
	MOVQ      q+16(FP), SI
	MOVQ      groups+24(FP), R8
	MOVQ      table+32(FP), AX
	MOVQ      codes+40(FP), BX
	MOVQ      stride+48(FP), R9
	MOVQ      b+56(FP), R10
	MOVQ      flags+72(FP), R14
	MOVQ      ctrl+64(FP), DX
	VMOVDQU64 (DX), Z15
	VMOVUPS   (AX), Z13
	LEAQ      (R10)(R10*1), R15 // bytes per 16-index group
	SHRQ      $2, CX
	JE        done4

quad:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	LEAQ   2(BX), R11     // code 0's indices; codes 1, 2 at +stride, +2·stride
	LEAQ   (R11)(R9*1), DX // code 1; code 3 = DX + 2·stride
	MOVQ   SI, R12
	MOVQ   R8, R13

quadGroup:
	VMOVUPS             (R12), Z8
	VPMULTISHIFTQB.BCST (R11), Z15, Z4
	VPMULTISHIFTQB.BCST (DX), Z15, Z5
	VPMULTISHIFTQB.BCST (R11)(R9*2), Z15, Z6
	VPMULTISHIFTQB.BCST (DX)(R9*2), Z15, Z7
	VPERMPS             Z13, Z4, Z4
	VPERMPS             Z13, Z5, Z5
	VPERMPS             Z13, Z6, Z6
	VPERMPS             Z13, Z7, Z7
	VFMADD231PS         Z8, Z4, Z0
	VFMADD231PS         Z8, Z5, Z1
	VFMADD231PS         Z8, Z6, Z2
	VFMADD231PS         Z8, Z7, Z3
	ADDQ                R15, R11
	ADDQ                R15, DX
	ADDQ                $64, R12
	DECQ                R13
	JNE                 quadGroup

	// Four 16-lane sums → [s0 s1 s2 s3].
	VEXTRACTF64X4 $1, Z0, Y4
	VEXTRACTF64X4 $1, Z1, Y5
	VEXTRACTF64X4 $1, Z2, Y6
	VEXTRACTF64X4 $1, Z3, Y7
	VADDPS        Y4, Y0, Y0
	VADDPS        Y5, Y1, Y1
	VADDPS        Y6, Y2, Y2
	VADDPS        Y7, Y3, Y3
	VHADDPS       Y1, Y0, Y0
	VHADDPS       Y3, Y2, Y2
	VHADDPS       Y2, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0

	// Four fp16 scales → float32, times the sums.
	MOVWLZX   (BX), DX
	VMOVD     DX, X5
	VPINSRW   $1, (BX)(R9*1), X5, X5
	VPINSRW   $2, (BX)(R9*2), X5, X5
	LEAQ      (BX)(R9*2), DX
	VPINSRW   $3, (DX)(R9*1), X5, X5
	VCVTPH2PS X5, X5
	VMULPS    X5, X0, X0
	TESTQ     $1, R14
	JE        store4
	VADDPS    (DI), X0, X0

store4:
	VMOVUPS X0, (DI)
	ADDQ    $16, DI
	LEAQ    (BX)(R9*4), BX
	DECQ    CX
	JNE     quad

done4:
	VZEROUPPER
	RET
