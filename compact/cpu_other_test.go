//go:build !linux

package compact

// processCPU returns 0: the process's CPU time is read on Linux only.
func processCPU() float64 { return 0 }
