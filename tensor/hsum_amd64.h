// HSUM leaves the sum of the 8 lanes of Y0 in X0 (X1 is scratch).
#define HSUM \
	VEXTRACTF128 $1, Y0, X1; \
	VADDPS X1, X0, X0; \
	VMOVHLPS X0, X0, X1; \
	VADDPS X1, X0, X0; \
	VPSHUFD $1, X0, X1; \
	VADDSS X1, X0, X0

// HSUM4 leaves the sum of all lanes of Y0..Y3 in X0.
#define HSUM4 \
	VADDPS Y1, Y0, Y0; \
	VADDPS Y3, Y2, Y2; \
	VADDPS Y2, Y0, Y0; \
	HSUM

// SUM16 leaves the sum of the 16 lanes of Z (Y, X its lower halves) in
// X: halves, quarters, pairs (TY, TX scratch). It is HSUM for AVX-512,
// whose EVEX forms reach registers 16-31.
#define SUM16(Z, Y, X, TY, TX) \
	VEXTRACTF64X4 $1, Z, TY; \
	VADDPS TY, Y, Y; \
	VEXTRACTF32X4 $1, Y, TX; \
	VADDPS TX, X, X; \
	VMOVHLPS X, X, TX; \
	VADDPS TX, X, X; \
	VPSHUFD $1, X, TX; \
	VADDSS TX, X, X
