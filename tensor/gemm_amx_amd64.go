//go:build linux && !purego

package tensor

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/cpu"
)

// hasAMX selects the AMX kernel for prefill: the CPU has AMX tiles with
// 8-bit products (and the AVX-512 the kernel scales with), and Linux lets
// this process use them. Read-only after initialisation.
var hasAMX = cpu.X86.HasAMXTile && cpu.X86.HasAMXInt8 && hasGEMM && amxPermission()

// amxPermission asks Linux for the tile data state, which a process must
// request once before its first tile instruction
// (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), Linux 5.16 and
// later); it reports whether the kernel agreed.
func amxPermission() bool {
	const (
		archReqXCompPerm  = 0x1023
		xfeatureXTileData = 18
	)
	_, _, errno := syscall.RawSyscall(syscall.SYS_ARCH_PRCTL, archReqXCompPerm, xfeatureXTileData, 0)
	return errno == 0
}

// amxConfig is the tile configuration (palette 1) both kernels load:
// tmm0 and tmm3 the C tiles (16 rows of 16 int32), tmm1 and tmm4 the A
// tiles (16 rows of 32 bytes), tmm2 and tmm5 the B tiles (8 rows of 64
// bytes). Layout: byte 0 the palette, bytes 16+2i tile i's bytes per row,
// byte 48+i its rows.
var amxConfig = amxTiles(amxBlock)

// amxConfigQ6 is the Q6_K kernel's tile configuration: every tile 16
// rows of 64 bytes (tmm0, tmm3 the hi and lo sums; tmm1, tmm4 the hi and
// lo bytes; tmm2 the activations).
var amxConfigQ6 = amxTiles(amxQ6Chunk)

// amxTiles returns the tile configuration for blocks of k elements.
func amxTiles(k int) (c [64]byte) {
	c[0] = 1
	for i, shape := range [6][2]int{{16, 64}, {16, k}, {k / 4, 64}, {16, 64}, {16, k}, {k / 4, 64}} {
		c[16+2*i] = byte(shape[1])
		c[48+i] = byte(shape[0])
	}
	return c
}

// The kernels: one panel against every group of acts, two blocks per
// loop step (tiles 0-2 the even block, 3-5 the odd one), results to out
// ([group][16][16] float32); tmp holds the two stored C tiles (512
// int32). Each configures the tiles, computes and releases them within
// the one call, so no goroutine switch sees live tiles. Q8 multiplies
// signed quants without mins, Q4K unsigned quants with mins (mw, xs).
//
//go:noescape
func amxDotQ8(cfg *[64]byte, a *byte, stride, step int, dw, mw *float32, xb *int8, dx, xs *float32, blocks, groups int, tmp *int32, out *float32)

// amxDotQ6K is the Q6_K kernel (amxOperand's hilo layout): per
// super-block of each group, four 64-element chunks of hi and lo tiles
// against the chunk's activation tile, then per row 64·hi + lo converted,
// times the group's dx of the super-block, times the row's d, added.
//
//go:noescape
func amxDotQ6K(cfg *[64]byte, a *byte, dw *float32, xb *int8, dx *float32, supers, groups int, tmp *int32, out *float32)

//go:noescape
func amxDotQ4K(cfg *[64]byte, a *byte, stride, step int, dw, mw *float32, xb *int8, dx, xs *float32, blocks, groups int, tmp *int32, out *float32)

// amxDot runs the kernel for op against every group of g into pan.out.
func amxDot(op *amxOperand, g *amxActs, pan *amxPanel) {
	if !hasAMX {
		amxDotTwin(op, g, pan)
		return
	}
	pan.tmp = growI32(pan.tmp, 2*amxRows*amxCols+16)
	tmp := pan.tmp[(64-uintptr(unsafe.Pointer(&pan.tmp[0]))%64)/4%16:] // 64-byte aligned
	if op.hilo {
		amxDotQ6K(&amxConfigQ6, &op.a[0], &op.dw[0], &g.xb[0], &g.dx[0], g.blocks*g.k/QK_K, g.groups, &tmp[0], &pan.out[0])
		return
	}
	f, cfg := amxDotQ4K, &amxConfig
	var mw *float32
	if op.signed {
		f = amxDotQ8
	} else {
		mw = &op.mw[0]
	}
	f(cfg, &op.a[0], op.stride, op.step, &op.dw[0], mw, &g.xb[0], &g.dx[0], &g.xs[0], g.blocks, g.groups, &tmp[0], &pan.out[0])
}

func growI32(b []int32, n int) []int32 {
	if cap(b) < n {
		return make([]int32, n)
	}
	return b[:n]
}
