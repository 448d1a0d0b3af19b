//go:build unix

package wquant

import (
	"syscall"
	"time"
)

// CPUTime returns the CPU time (user and system) the test process has
// used so far, for benchmarks on a shared machine where wall time says
// more about the neighbours than about the code; ok is false where the
// system cannot tell.
func CPUTime() (d time.Duration, ok bool) {
	var r syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &r); err != nil {
		return 0, false
	}
	return time.Duration(r.Utime.Nano() + r.Stime.Nano()), true
}
