//go:build amd64 && !purego

#include "textflag.h"

// Softmax kernels, 8 floats per step (AVX2 + FMA); the pure-Go twins are
// in cache.go. n is a multiple of 8.

// func maxAVX2(s *float32, n int) float32
TEXT ·maxAVX2(SB), NOSPLIT, $0-20
	MOVQ         s+0(FP), DI
	MOVQ         n+8(FP), CX
	VMOVUPS      (DI), Y0
	ADDQ         $32, DI
	SUBQ         $8, CX
	JE           maxdone

maxloop:
	VMAXPS (DI), Y0, Y0
	ADDQ   $32, DI
	SUBQ   $8, CX
	JNE    maxloop

maxdone:
	VEXTRACTF128 $1, Y0, X1
	VMAXPS       X1, X0, X0
	VMOVHLPS     X0, X0, X1
	VMAXPS       X1, X0, X0
	VPSHUFD      $1, X0, X1
	VMAXSS       X1, X0, X0
	VMOVSS       X0, ret+16(FP)
	VZEROUPPER
	RET

// func expSumAVX2(s *float32, n int, m, scale float32, c *[13][8]float32) float32
//
// s[i] = e^(scale·(s[i] − m)), returning the sum: expNeg (Cephes expf) on
// 8 lanes. c holds the constants broadcast to 8 lanes: lower clamp,
// log₂e, 0.5, C1, C2, the six polynomial coefficients, 1, and int32 127.
TEXT ·expSumAVX2(SB), NOSPLIT, $0-36
	MOVQ         s+0(FP), DI
	MOVQ         n+8(FP), CX
	VBROADCASTSS m+16(FP), Y8
	VBROADCASTSS scale+20(FP), Y9
	MOVQ         c+24(FP), SI
	VXORPS       Y15, Y15, Y15

exploop:
	VMOVUPS     (DI), Y0
	VSUBPS      Y8, Y0, Y0
	VMULPS      Y9, Y0, Y0
	VMAXPS      0(SI), Y0, Y0     // clamp at −87.3
	VMULPS      32(SI), Y0, Y1    // x·log₂e
	VADDPS      64(SI), Y1, Y1    // + 0.5
	VROUNDPS    $1, Y1, Y1        // n = floor
	VMULPS      96(SI), Y1, Y2    // n·C1
	VSUBPS      Y2, Y0, Y0
	VMULPS      128(SI), Y1, Y2   // n·C2
	VADDPS      Y2, Y0, Y0        // r
	VMOVUPS     160(SI), Y3
	VFMADD213PS 192(SI), Y0, Y3
	VFMADD213PS 224(SI), Y0, Y3
	VFMADD213PS 256(SI), Y0, Y3
	VFMADD213PS 288(SI), Y0, Y3
	VFMADD213PS 320(SI), Y0, Y3   // p
	VMULPS      Y0, Y0, Y4        // r²
	VMULPS      Y4, Y3, Y3
	VADDPS      Y0, Y3, Y3
	VADDPS      352(SI), Y3, Y3   // e^r = p·r² + r + 1
	VCVTPS2DQ   Y1, Y5
	VPADDD      384(SI), Y5, Y5
	VPSLLD      $23, Y5, Y5       // 2^n
	VMULPS      Y5, Y3, Y3
	VMOVUPS     Y3, (DI)
	VADDPS      Y3, Y15, Y15
	ADDQ        $32, DI
	SUBQ        $8, CX
	JNE         exploop

	VEXTRACTF128 $1, Y15, X1
	VADDPS       X1, X15, X0
	VMOVHLPS     X0, X0, X1
	VADDPS       X1, X0, X0
	VPSHUFD      $1, X0, X1
	VADDSS       X1, X0, X0
	VMOVSS       X0, ret+32(FP)
	VZEROUPPER
	RET

// func scaleAVX2(s *float32, n int, a float32)
TEXT ·scaleAVX2(SB), NOSPLIT, $0-20
	MOVQ         s+0(FP), DI
	MOVQ         n+8(FP), CX
	VBROADCASTSS a+16(FP), Y1

scaleloop:
	VMULPS  (DI), Y1, Y0
	VMOVUPS Y0, (DI)
	ADDQ    $32, DI
	SUBQ    $8, CX
	JNE     scaleloop
	VZEROUPPER
	RET
