package gguf

import (
	"errors"
	"fmt"
	"os"
)

// Open opens and decodes the GGUF file at path. Where the platform allows,
// the file is memory-mapped and TensorData returns slices of the mapping
// without copying; otherwise (or if mapping fails) tensor data is read from
// the open file on demand. The caller must Close the File.
//
// A mapped file must not be truncated while it is open: reading a mapped
// page beyond the new end of file faults.
func Open(path string) (*File, error) { return open(path, true) }

// open is Open, with mapping optional so tests can take the fallback path.
func open(path string, tryMap bool) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("gguf: %w", err)
	}
	size := st.Size()
	if tryMap {
		if data, unmap, err := mapFile(fh, size); err == nil {
			// The mapping outlives the descriptor.
			fh.Close()
			f, err := DecodeBytes(data)
			if err != nil {
				return nil, errors.Join(fmt.Errorf("%s: %w", path, err), unmap())
			}
			f.close, f.info = unmap, st
			return f, nil
		}
	}
	f, err := Decode(fh, size)
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.close, f.info = fh.Close, st
	return f, nil
}
