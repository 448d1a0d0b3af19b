// Macros shared by the multi-row decode kernels (multirow_amd64.s,
// multirow_k_amd64.s): each keeps one float32 accumulator of 16 lanes
// per vector of the pass in Z16-Z31, and stores their sums for a row.

// ARGS loads a kernel's arguments (w, rowBytes, rows, x, nv, out,
// stride): the rows at R14, rowBytes in BX, rows in R8, the pack at DI,
// nv in DX, the outputs at R12, stride·4 in R13, and a step of the pack
// (nv vectors of VB bytes) in R10.
#define ARGS(VB) \
	MOVQ w+0(FP), R14; \
	MOVQ rowBytes+8(FP), BX; \
	MOVQ rows+16(FP), R8; \
	MOVQ x+24(FP), DI; \
	MOVQ nv+32(FP), DX; \
	MOVQ out+48(FP), R12; \
	MOVQ stride+56(FP), R13; \
	SHLQ $2, R13; \
	IMUL3Q $VB, DX, R10

// ROWSTART clears the accumulators and points SI at the row's first
// step, R9 at the pack's, CX counting the steps (a Q8_0 kernel's pairs
// of blocks, a K-quant kernel's super-blocks).
#define ROWSTART \
	ZERO16; \
	MOVQ R14, SI; \
	MOVQ DI, R9; \
	MOVQ steps+40(FP), CX

// STEPEND moves R9 to the pack's next block (SI moved by the caller)
// and loops over the row's blocks.
#define STEPEND \
	ADDQ R10, R9; \
	DECQ CX; \
	JNZ step

// ROWEND moves to the next row and its outputs, and loops over the rows.
#define ROWEND \
	ADDQ $4, R12; \
	ADDQ BX, R14; \
	DECQ R8; \
	JNZ row; \
	VZEROUPPER; \
	RET

// ZERO16 clears the 16 accumulators.
#define ZERO16 \
	VPXORD Z16, Z16, Z16; \
	VPXORD Z17, Z17, Z17; \
	VPXORD Z18, Z18, Z18; \
	VPXORD Z19, Z19, Z19; \
	VPXORD Z20, Z20, Z20; \
	VPXORD Z21, Z21, Z21; \
	VPXORD Z22, Z22, Z22; \
	VPXORD Z23, Z23, Z23; \
	VPXORD Z24, Z24, Z24; \
	VPXORD Z25, Z25, Z25; \
	VPXORD Z26, Z26, Z26; \
	VPXORD Z27, Z27, Z27; \
	VPXORD Z28, Z28, Z28; \
	VPXORD Z29, Z29, Z29; \
	VPXORD Z30, Z30, Z30; \
	VPXORD Z31, Z31, Z31

// OUT stores the sum of ACC's 16 lanes (halves, quarters, pairs) at
// (AX), moves AX to the next vector's output and leaves after the pass's
// last vector.
#define OUT(v, Z, Y, X) \
	SUM16(Z, Y, X, Y2, X2); \
	VMOVSS X, (AX); \
	ADDQ R13, AX; \
	CMPQ DX, $(v+1); \
	JEQ rowdone

// OUTS stores the sums of the DX vectors' accumulators for the row at
// (R12), R13 bytes apart; it leaves for rowdone after the last.
#define OUTS \
	MOVQ R12, AX; \
	OUT(0, Z16, Y16, X16); \
	OUT(1, Z17, Y17, X17); \
	OUT(2, Z18, Y18, X18); \
	OUT(3, Z19, Y19, X19); \
	OUT(4, Z20, Y20, X20); \
	OUT(5, Z21, Y21, X21); \
	OUT(6, Z22, Y22, X22); \
	OUT(7, Z23, Y23, X23); \
	OUT(8, Z24, Y24, X24); \
	OUT(9, Z25, Y25, X25); \
	OUT(10, Z26, Y26, X26); \
	OUT(11, Z27, Y27, X27); \
	OUT(12, Z28, Y28, X28); \
	OUT(13, Z29, Y29, X29); \
	OUT(14, Z30, Y30, X30); \
	OUT(15, Z31, Y31, X31)
