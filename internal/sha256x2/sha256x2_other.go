//go:build !amd64 || purego

package sha256x2

// useAsm is false: Sum2 hashes each string with crypto/sha256.
const useAsm = false

// blocks2 is never called without the assembly.
func blocks2(sa, sb *[8]uint32, a, b *byte, n int) { panic("sha256x2: no assembly") }
