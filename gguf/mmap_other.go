//go:build !unix

package gguf

import (
	"errors"
	"os"
)

// mapFile reports that this platform has no memory mapping here, so Open
// reads tensor data through the file instead.
func mapFile(fh *os.File, size int64) ([]byte, func() error, error) {
	return nil, nil, errors.New("gguf: memory mapping not supported on this platform")
}
