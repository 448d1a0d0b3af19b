package kvcache

import (
	"runtime"
	"syscall"
	"testing"
)

// loopCPU runs f b.N times on one locked OS thread and reports, besides
// the wall time, the thread's CPU time per call (cpu-ns/op): on a shared
// machine, time spent waiting for a CPU is left out.
func loopCPU(b *testing.B, f func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu := func() int64 {
		var ru syscall.Rusage
		if err := syscall.Getrusage(1, &ru); err != nil { // RUSAGE_THREAD
			b.Fatal(err)
		}
		return ru.Utime.Nano() + ru.Stime.Nano()
	}
	t0 := cpu()
	for b.Loop() {
		f()
	}
	b.ReportMetric(float64(cpu()-t0)/float64(b.N), "cpu-ns/op")
}
