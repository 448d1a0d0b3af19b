//go:build linux

// Package guardpage gives tests memory that ends where an inaccessible
// page begins, so that a kernel reading or writing one byte past a slice
// faults instead of passing unnoticed.
package guardpage

import (
	"syscall"
	"testing"
)

// Bytes returns a slice of n bytes whose end is the start of a page that
// can be neither read nor written, unmapped when the test ends. It skips
// the test where the memory cannot be mapped or protected.
func Bytes(t testing.TB, n int) []byte {
	t.Helper()
	page := syscall.Getpagesize()
	size := (n + page - 1) / page * page
	mem, err := syscall.Mmap(-1, 0, size+page, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Skipf("guardpage: mmap: %v", err)
	}
	t.Cleanup(func() { syscall.Munmap(mem) })
	if err := syscall.Mprotect(mem[size:], syscall.PROT_NONE); err != nil {
		t.Skipf("guardpage: mprotect: %v", err)
	}
	return mem[size-n : size : size]
}
