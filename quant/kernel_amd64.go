//go:build amd64 && !purego

package quant

import "golang.org/x/sys/cpu"

// hasAVX2 gates the assembly kernels; the pure-Go twins in kernel.go run
// elsewhere and are what the tests compare against.
var hasAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// SIMDLevel names the scoring kernels in use ("avx2" or "purego"), for
// benchmark reports.
func SIMDLevel() string {
	if hasAVX2 {
		return "avx2"
	}
	return "purego"
}

//go:noescape
func dotCodes8AVX2(dst *float32, n int, q *float32, groups int, table *[16]float32, codes *byte, stride int, b int, shifts *[8]uint32, mask uint32)

//go:noescape
func dotCodes16AVX2(dst *float32, n int, q *float32, groups int, table *[16]float32, codes *byte, stride int, b int, shifts *[8]uint32, mask uint32)

//go:noescape
func dotRowsAVX2(dst *float32, n int, q *float32, d int, keys *float32)

func dotCodes(dst, q []float32, table *[16]float32, codes []byte, stride, off, b int, add bool) {
	groups := len(q) / 8
	if !hasAVX2 || add || groups%4 != 0 || len(dst) == 0 {
		dotCodesGo(dst, q, table, codes, stride, off, b, add)
		return
	}
	// The kernel loads 4 bytes per group of b bytes: keep 3 bytes of slack
	// inside codes, leaving the last code(s) to the Go twin if needed.
	n := len(dst)
	for n > 0 && (n-1)*stride+off+groups*b+3 > len(codes) {
		n--
	}
	if n < len(dst) {
		dotCodesGo(dst[n:], q, table, codes[n*stride:], stride, off, b, false)
	}
	if n == 0 {
		return
	}
	_ = codes[(n-1)*stride+off+groups*b+3-1] // bounds proof for the assembly
	var shifts [8]uint32
	for j := range shifts {
		shifts[j] = uint32(j * b)
	}
	mask := uint32(1)<<b - 1
	if b == 4 {
		dotCodes16AVX2(&dst[0], n, &q[0], groups, table, &codes[off], stride, b, &shifts, mask)
	} else {
		dotCodes8AVX2(&dst[0], n, &q[0], groups, table, &codes[off], stride, b, &shifts, mask)
	}
}

func dotRows(dst, q, keys []float32) {
	d := len(q)
	if !hasAVX2 || d%32 != 0 || len(dst) == 0 {
		dotRowsGo(dst, q, keys)
		return
	}
	_ = keys[len(dst)*d-1]
	dotRowsAVX2(&dst[0], len(dst), &q[0], d, &keys[0])
}
