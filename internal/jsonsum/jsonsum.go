// Package jsonsum writes and reads JSON files that carry a checksum of
// their own content, so that a file edited or damaged after it was
// written is refused: the checksum field holds the hex SHA-256 of the
// value's compact encoding by encoding/json.Marshal with that field
// empty. kvcache's KV plans and wquant's weight plans are such files.
package jsonsum

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ErrMismatch is returned by Check for a file whose checksum field does
// not match its content.
var ErrMismatch = errors.New("checksum mismatch (the file was edited or damaged)")

// Sum returns the checksum of v, whose checksum field is *field: the hex
// SHA-256 of json.Marshal(v) with *field empty. *field is left as it was.
func Sum(v any, field *string) (string, error) {
	saved := *field
	*field = ""
	b, err := json.Marshal(v)
	*field = saved
	if err != nil {
		return "", err
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:]), nil
}

// Marshal sets *field to v's checksum and returns v as indented JSON
// (two spaces) ending in a newline.
func Marshal(v any, field *string) ([]byte, error) {
	sum, err := Sum(v, field)
	if err != nil {
		return nil, err
	}
	*field = sum
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Decode reads one JSON value from r into v: at most max bytes, no field
// v does not have, nothing but white space after it. It does not check
// the checksum: Check does, once the caller has looked at what it
// needs first (a format version).
func Decode(r io.Reader, max int, v any) error {
	b, err := io.ReadAll(io.LimitReader(r, int64(max)+1))
	if err != nil {
		return err
	}
	if len(b) > max {
		return fmt.Errorf("larger than %d bytes", max)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}

// Format describes one kind of file: its name in messages, its current
// version and its largest size.
type Format struct {
	Name     string
	Version  int
	MaxBytes int
}

// Read reads a file of format f into v (Decode), then refuses another
// version than f's (v's version field is *version) and a checksum that
// does not match (Check, *sum being v's checksum field). Errors say
// which: "not a NAME file: …", "version N, want M", ErrMismatch.
func (f Format) Read(r io.Reader, v any, version *int, sum *string) error {
	if err := Decode(r, f.MaxBytes, v); err != nil {
		return fmt.Errorf("not a %s file: %w", f.Name, err)
	}
	if *version != f.Version {
		return fmt.Errorf("version %d, want %d", *version, f.Version)
	}
	return Check(v, sum)
}

// Check returns ErrMismatch unless *field holds v's checksum.
func Check(v any, field *string) error {
	sum, err := Sum(v, field)
	if err != nil {
		return err
	}
	if sum != *field {
		return ErrMismatch
	}
	return nil
}
