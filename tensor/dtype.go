// Package tensor holds the element types of model tensors (the GGML block
// formats among them), their exact dequantization, and the matrix-vector
// kernels that run a model on them. It is the one home of GGML's block
// layouts: package gguf uses its DTypes for tensor sizes and package quant
// its codecs and row kernels (docs/ARCHITECTURE.md).
package tensor

import (
	"fmt"
	"math/bits"
)

// DType is a tensor element type, numbered as in GGML and GGUF files.
type DType uint32

// The GGML type ids. Gaps are ids that GGML has retired.
const (
	F32     DType = 0
	F16     DType = 1
	Q4_0    DType = 2
	Q4_1    DType = 3
	Q5_0    DType = 6
	Q5_1    DType = 7
	Q8_0    DType = 8
	Q8_1    DType = 9
	Q2_K    DType = 10
	Q3_K    DType = 11
	Q4_K    DType = 12
	Q5_K    DType = 13
	Q6_K    DType = 14
	Q8_K    DType = 15
	IQ2_XXS DType = 16
	IQ2_XS  DType = 17
	IQ3_XXS DType = 18
	IQ1_S   DType = 19
	IQ4_NL  DType = 20
	IQ3_S   DType = 21
	IQ2_S   DType = 22
	IQ4_XS  DType = 23
	I8      DType = 24
	I16     DType = 25
	I32     DType = 26
	I64     DType = 27
	F64     DType = 28
	IQ1_M   DType = 29
	BF16    DType = 30
	TQ1_0   DType = 34
	TQ2_0   DType = 35
	MXFP4   DType = 39
)

// QK_K is the number of elements in a K-quant super-block.
const QK_K = 256

type dtypeInfo struct {
	name       string
	blockSize  int // elements per block
	blockBytes int // bytes per block
}

// dtypes lists the layout of every type a GGUF file may name. Sizes follow
// the block structs of ggml-common.h.
var dtypes = map[DType]dtypeInfo{
	F32:     {"F32", 1, 4},
	F16:     {"F16", 1, 2},
	Q4_0:    {"Q4_0", 32, 18},
	Q4_1:    {"Q4_1", 32, 20},
	Q5_0:    {"Q5_0", 32, 22},
	Q5_1:    {"Q5_1", 32, 24},
	Q8_0:    {"Q8_0", 32, 34},
	Q8_1:    {"Q8_1", 32, 36},
	Q2_K:    {"Q2_K", QK_K, 84},
	Q3_K:    {"Q3_K", QK_K, 110},
	Q4_K:    {"Q4_K", QK_K, 144},
	Q5_K:    {"Q5_K", QK_K, 176},
	Q6_K:    {"Q6_K", QK_K, 210},
	Q8_K:    {"Q8_K", QK_K, 292},
	IQ2_XXS: {"IQ2_XXS", QK_K, 66},
	IQ2_XS:  {"IQ2_XS", QK_K, 74},
	IQ3_XXS: {"IQ3_XXS", QK_K, 98},
	IQ1_S:   {"IQ1_S", QK_K, 50},
	IQ4_NL:  {"IQ4_NL", 32, 18},
	IQ3_S:   {"IQ3_S", QK_K, 110},
	IQ2_S:   {"IQ2_S", QK_K, 82},
	IQ4_XS:  {"IQ4_XS", QK_K, 136},
	I8:      {"I8", 1, 1},
	I16:     {"I16", 1, 2},
	I32:     {"I32", 1, 4},
	I64:     {"I64", 1, 8},
	F64:     {"F64", 1, 8},
	IQ1_M:   {"IQ1_M", QK_K, 56},
	BF16:    {"BF16", 1, 2},
	TQ1_0:   {"TQ1_0", QK_K, 54},
	TQ2_0:   {"TQ2_0", QK_K, 66},
	MXFP4:   {"MXFP4", 32, 17},
}

// Known reports whether t is a type id that GGML defines.
func (t DType) Known() bool { _, ok := dtypes[t]; return ok }

// String returns the GGML name of t, or "DType(N)" for an unknown id.
func (t DType) String() string {
	if info, ok := dtypes[t]; ok {
		return info.name
	}
	return fmt.Sprintf("DType(%d)", uint32(t))
}

// BlockSize returns the number of elements in one block of t (1 for plain
// types), or 0 if t is unknown.
func (t DType) BlockSize() int { return dtypes[t].blockSize }

// BlockBytes returns the number of bytes in one block of t, or 0 if t is
// unknown.
func (t DType) BlockBytes() int { return dtypes[t].blockBytes }

// BitsPerWeight returns the storage cost of t in bits per element.
func (t DType) BitsPerWeight() float64 {
	info, ok := dtypes[t]
	if !ok {
		return 0
	}
	return float64(8*info.blockBytes) / float64(info.blockSize)
}

// ParseDType returns the type named name (as String prints it).
func ParseDType(name string) (DType, error) {
	for t, info := range dtypes {
		if info.name == name {
			return t, nil
		}
	}
	return 0, fmt.Errorf("tensor: unknown type %q", name)
}

// RowBytes returns the bytes that n elements of type t occupy. It fails if
// t is unknown, n is negative or not a whole number of blocks, or the size
// overflows.
func (t DType) RowBytes(n int64) (int64, error) {
	info, ok := dtypes[t]
	if !ok {
		return 0, fmt.Errorf("tensor: unknown type id %d", uint32(t))
	}
	if n < 0 {
		return 0, fmt.Errorf("tensor: %s: negative element count %d", info.name, n)
	}
	if n%int64(info.blockSize) != 0 {
		return 0, fmt.Errorf("tensor: %s: %d elements is not a multiple of the block size %d", info.name, n, info.blockSize)
	}
	hi, lo := bits.Mul64(uint64(n/int64(info.blockSize)), uint64(info.blockBytes))
	if hi != 0 || lo > 1<<62 {
		return 0, fmt.Errorf("tensor: %s: size of %d elements overflows", info.name, n)
	}
	return int64(lo), nil
}
