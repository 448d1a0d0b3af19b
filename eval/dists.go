package eval

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// A dump file holds Dists so that a reference run can be compared with
// later ones (turbomem eval ppl --dump, then --ref). Layout, little
// endian: magic "TMDISTS1", K, vocabulary size and position count as
// uint32, then per position the target id (int32), its log-probability
// (float32), K ids (int32) and K log-probabilities (float32); then the
// SHA-256 of everything before it.

const distsMagic = "TMDISTS1"

// Limits on what a dump may claim, checked before allocating.
const (
	maxDumpK         = 1 << 16
	maxDumpVocab     = 1 << 24
	maxDumpPositions = 1 << 26
)

// ErrCorruptDump reports a dump that fails its checks.
var ErrCorruptDump = errors.New("eval: corrupt distribution dump")

// WriteTo writes d in the dump format.
func (d *Dists) WriteTo(w io.Writer) (int64, error) {
	h := sha256.New()
	bw := bufio.NewWriter(io.MultiWriter(w, h))
	var n int64
	put := func(v any) {
		if err := binary.Write(bw, binary.LittleEndian, v); err == nil {
			n += int64(binary.Size(v))
		}
	}
	bw.WriteString(distsMagic)
	n += int64(len(distsMagic))
	put(uint32(d.K))
	put(uint32(d.Vocab))
	put(uint32(d.Len()))
	for p := range d.Len() {
		put(d.Target[p])
		put(d.TargetLP[p])
		put(d.IDs[p*d.K : (p+1)*d.K])
		put(d.LogP[p*d.K : (p+1)*d.K])
	}
	if err := bw.Flush(); err != nil {
		return n, fmt.Errorf("eval: writing dump: %w", err)
	}
	sum := h.Sum(nil)
	m, err := w.Write(sum)
	return n + int64(m), err
}

// ReadDists reads a dump written by WriteTo, checking its sizes, ids and
// checksum.
func ReadDists(r io.Reader) (*Dists, error) {
	h := sha256.New()
	br := bufio.NewReader(r)
	tr := io.TeeReader(br, h)
	magic := make([]byte, len(distsMagic))
	if _, err := io.ReadFull(tr, magic); err != nil || string(magic) != distsMagic {
		return nil, fmt.Errorf("%w: bad magic", ErrCorruptDump)
	}
	var hdr [3]uint32
	if err := binary.Read(tr, binary.LittleEndian, &hdr); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrCorruptDump, err)
	}
	k, vocab, n := int(hdr[0]), int(hdr[1]), int(hdr[2])
	if k < 1 || k > maxDumpK || vocab < k || vocab > maxDumpVocab || n < 1 || n > maxDumpPositions {
		return nil, fmt.Errorf("%w: K %d, vocabulary %d, %d positions out of range", ErrCorruptDump, k, vocab, n)
	}
	d := &Dists{K: k, Vocab: vocab}
	ids := make([]int32, k)
	lps := make([]float32, k)
	for p := range n {
		var t int32
		var tlp float32
		if err := binary.Read(tr, binary.LittleEndian, &t); err != nil {
			return nil, fmt.Errorf("%w: position %d: %v", ErrCorruptDump, p, err)
		}
		if err := binary.Read(tr, binary.LittleEndian, &tlp); err != nil {
			return nil, fmt.Errorf("%w: position %d: %v", ErrCorruptDump, p, err)
		}
		if err := binary.Read(tr, binary.LittleEndian, ids); err != nil {
			return nil, fmt.Errorf("%w: position %d: %v", ErrCorruptDump, p, err)
		}
		if err := binary.Read(tr, binary.LittleEndian, lps); err != nil {
			return nil, fmt.Errorf("%w: position %d: %v", ErrCorruptDump, p, err)
		}
		if t < 0 || int(t) >= vocab || !(tlp <= 0) {
			return nil, fmt.Errorf("%w: position %d: target %d, log-probability %g", ErrCorruptDump, p, t, tlp)
		}
		for i := range k {
			if ids[i] < 0 || int(ids[i]) >= vocab || !(lps[i] <= 0) {
				return nil, fmt.Errorf("%w: position %d: entry %d (token %d, log-probability %g)", ErrCorruptDump, p, i, ids[i], lps[i])
			}
		}
		d.Target = append(d.Target, t)
		d.TargetLP = append(d.TargetLP, tlp)
		d.IDs = append(d.IDs, ids...)
		d.LogP = append(d.LogP, lps...)
	}
	want := h.Sum(nil)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(br, got); err != nil {
		return nil, fmt.Errorf("%w: checksum missing", ErrCorruptDump)
	}
	if string(got) != string(want) {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorruptDump)
	}
	return d, nil
}
