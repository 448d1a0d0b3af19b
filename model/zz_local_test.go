package model_test

import (
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
)

func cpuNow() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func TestCPUDecode(t *testing.T) {
	th, _ := strconv.Atoi(os.Getenv("TH"))
	if th == 0 {
		t.Skip()
	}
	m := benchModel(&testing.B{}, th)
	ids := make([]int32, 512)
	for i := range ids {
		ids[i] = int32(7 + 31*i%1000)
	}
	best := time.Hour
	for rep := 0; rep < 5; rep++ {
		s, err := m.NewSession(nil, 4096)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Forward(ids, false); err != nil {
			t.Fatal(err)
		}
		tok := []int32{42}
		const n = 100
		c0 := cpuNow()
		for i := 0; i < n; i++ {
			if _, err := s.Forward(tok, false); err != nil {
				t.Fatal(err)
			}
		}
		best = min(best, (cpuNow()-c0)/n)
	}
	t.Logf("CPU per token (best of 5 × 100): %v", best)
}
