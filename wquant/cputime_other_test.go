//go:build !unix

package wquant

import "time"

// CPUTime reports that the CPU time is not known here.
func CPUTime() (time.Duration, bool) { return 0, false }
