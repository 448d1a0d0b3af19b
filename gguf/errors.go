package gguf

import (
	"errors"
	"fmt"
)

// Errors that callers may test for with errors.Is. Every error that reports
// a malformed file is a *FormatError, which also matches ErrMalformed.
var (
	// ErrNotGGUF means the file does not start with the GGUF magic.
	ErrNotGGUF = errors.New("not a GGUF file (bad magic)")
	// ErrUnsupportedVersion means the file is GGUF but of a version (or
	// byte order) this package does not read: v1, or newer than v3, or
	// big-endian.
	ErrUnsupportedVersion = errors.New("unsupported GGUF version")
	// ErrTruncated means the file ends inside a field or tensor.
	ErrTruncated = errors.New("unexpected end of file")
	// ErrMalformed matches every *FormatError.
	ErrMalformed = errors.New("malformed GGUF file")
	// ErrNotFound means a metadata key or tensor is absent.
	ErrNotFound = errors.New("not found")
	// ErrWrongType means a metadata value does not have the type asked for.
	ErrWrongType = errors.New("wrong value type")
)

// A FormatError reports a malformed GGUF file: which field was wrong, where
// it starts in the file, and what was wrong with it.
type FormatError struct {
	Offset int64  // byte offset in the file at which the field starts
	Field  string // the field, such as `tensor 3 "blk.0.attn_q.weight" offset`
	Err    error  // what is wrong; may wrap ErrTruncated, ErrNotGGUF, ErrUnsupportedVersion
}

// Error returns "gguf: FIELD at byte OFFSET: ERR".
func (e *FormatError) Error() string {
	return fmt.Sprintf("gguf: %s at byte %d: %v", e.Field, e.Offset, e.Err)
}

// Unwrap returns e.Err.
func (e *FormatError) Unwrap() error { return e.Err }

// Is reports whether target is ErrMalformed, which every FormatError matches.
func (e *FormatError) Is(target error) bool { return target == ErrMalformed }
