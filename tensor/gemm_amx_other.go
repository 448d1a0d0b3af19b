//go:build !linux || !amd64 || purego

package tensor

// hasAMX is false without the AMX assembly: MatMul keeps to the other
// kernels.
const hasAMX = false

func amxDot(op *amxOperand, g *amxActs, pan *amxPanel) { amxDotTwin(op, g, pan) }
