//go:build amd64 && !purego

package tensor

import "golang.org/x/sys/cpu"

// hasGEMM selects the AVX-512 VNNI tiled kernel for prefill; read-only
// after initialisation. Without it, MatMul keeps to the row kernels.
var hasGEMM = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512VNNI

//go:noescape
func gemmKernelVNNI(q *byte, sw, mg *float32, xq *int8, sx, xg *float32, nsb int, out *[gemmRows * gemmCols]float32)

func gemmKernel(p *gemmPanel, g *gemmActs, steps int, out *[gemmRows * gemmCols]float32) {
	if !hasGEMM {
		gemmKernelGo(p, g, steps, out)
		return
	}
	gemmKernelVNNI(&p.q[0], &p.sw[0], &p.mg[0], &g.xq[0], &g.sx[0], &g.xg[0], steps/4, out)
}
