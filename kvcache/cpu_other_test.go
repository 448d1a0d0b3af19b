//go:build !linux

package kvcache

import "testing"

// loopCPU runs f b.N times (the thread's CPU time is measured on Linux
// only).
func loopCPU(b *testing.B, f func()) {
	for b.Loop() {
		f()
	}
}
