//go:build unix

package gguf

import (
	"errors"
	"os"
	"syscall"
)

// mapFile maps the first size bytes of fh read-only and returns the mapping
// and the function that releases it.
func mapFile(fh *os.File, size int64) ([]byte, func() error, error) {
	if size <= 0 || int64(int(size)) != size {
		return nil, nil, errors.New("gguf: size not mappable")
	}
	data, err := syscall.Mmap(int(fh.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return data, func() error { return syscall.Munmap(data) }, nil
}
