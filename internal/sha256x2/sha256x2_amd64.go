//go:build amd64 && !purego

package sha256x2

import "golang.org/x/sys/cpu"

//go:generate sh -c "python3 gen.py > sha256x2_amd64.s"

// useAsm says whether blocks2 can run: the SHA extensions (CPUID leaf 7,
// which AVX2's presence implies, EBX bit 29) with AVX, SSSE3 and SSE4.1.
// Read-only after initialisation.
var useAsm = cpu.X86.HasAVX && cpu.X86.HasAVX2 && cpu.X86.HasSSSE3 && cpu.X86.HasSSE41 && cpuid7ebx()&(1<<29) != 0

// blocks2 compresses the n bytes (a multiple of 64) at a into sa and the
// n bytes at b into sb.
//
//go:noescape
func blocks2(sa, sb *[8]uint32, a, b *byte, n int)

// cpuid7ebx returns EBX of CPUID leaf 7, subleaf 0.
func cpuid7ebx() uint32
