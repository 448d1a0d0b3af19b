// Package gguf reads and writes GGUF files, the model format of ggml and
// llama.cpp: typed metadata key/values, a tensor directory, and aligned
// tensor data.
//
// The reader accepts versions 2 and 3 (little-endian) and memory-maps the
// file where it can, so tensor data is served without copying. It trusts
// nothing in the file: every count, length, dimension, type id, offset and
// size is checked against the file's size, with overflow checks, before
// anything is allocated for it, and tensors must be aligned, inside the file
// and disjoint. A malformed file yields a *FormatError naming the field and
// its byte offset.
//
// The writer (Builder) produces version 3 files and streams tensor data from
// the caller's buffers or functions.
//
// The format is specified in ggml's docs/gguf.md. Tensor element types
// and their block sizes are package tensor's DType: GGML's layouts live
// there once, and gguf and quant use them (docs/ARCHITECTURE.md); nothing
// else in the project imports sideways.
package gguf
