package kvcache

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// The covariance file: the calibration of the klt and tcq formats, saved
// so that a model's caches can be set up without measuring it again.
// Little-endian throughout:
//
//	magic    [8]byte  "TMKVCOV1"
//	source   uint32 length, then that many bytes (what the caller
//	         measured them on; at most covMaxSource)
//	layers   uint32 (1 … maxPlanLayers)
//	heads    uint32 KV heads per layer (1 … covMaxHeads)
//	d        uint32 head dimension (1 … covMaxDim)
//	tokens   uint64 calibration tokens per layer
//	per layer, per KV head:
//	         flags uint8 (bit 0: the queries' second moment follows;
//	         bit 1: the attention profile follows)
//	         RopeMean, K.Mean [d]float32; K.Cov [d·d]float32;
//	         V.Mean [d]float32; V.Cov [d·d]float32; Q [d·d]float32 if flagged;
//	         if flagged, ages uint32 (1 … maxProfileAge), Attn [ages]float32
//	sum      [32]byte SHA-256 of every byte before it
//
// A reader allocates as it reads (one head at a time), so a header that
// claims more than the file holds costs no more memory than the file.
const covMagic = "TMKVCOV1"

// Bounds of a covariance file's header.
const (
	covMaxSource = 4096
	covMaxHeads  = 1024
	covMaxDim    = 1024
)

// ErrCovFile marks a covariance file that is not one CovarianceFile.WriteTo
// wrote: a wrong magic, a header out of bounds, a truncated body, a
// checksum that does not match, or moments that are not finite.
var ErrCovFile = errors.New("kvcache: covariance file")

// CovarianceFile is the contents of a covariance file: the covariances
// and their source (at most 4096 bytes), what they were measured on, for
// the reader to check.
type CovarianceFile struct {
	Cov    *Covariances
	Source string
}

// WriteTo writes f in the covariance file format.
func (f CovarianceFile) WriteTo(w io.Writer) (int64, error) {
	c, source := f.Cov, f.Source
	if len(source) > covMaxSource {
		return 0, fmt.Errorf("kvcache: covariance file: source of %d bytes, at most %d", len(source), covMaxSource)
	}
	if c == nil || len(c.Layers) == 0 || len(c.Layers) > maxPlanLayers || len(c.Layers[0]) == 0 || len(c.Layers[0]) > covMaxHeads {
		return 0, fmt.Errorf("kvcache: covariance file: nothing to write, or layers and heads out of bounds")
	}
	heads, d := len(c.Layers[0]), len(c.Layers[0][0].K.Mean)
	if d < 1 || d > covMaxDim {
		return 0, fmt.Errorf("kvcache: covariance file: head dimension %d out of bounds", d)
	}
	for l := range c.Layers {
		if err := c.check(l, Shape{QHeads: heads, KVHeads: heads, HeadDim: d}); err != nil {
			return 0, err
		}
	}
	h := sha256.New()
	bw := bufio.NewWriter(io.MultiWriter(w, h))
	var n int64
	var err error
	put := func(v any) {
		if err == nil {
			if err = binary.Write(bw, binary.LittleEndian, v); err == nil {
				n += int64(binary.Size(v))
			}
		}
	}
	put([]byte(covMagic))
	put(uint32(len(source)))
	put([]byte(source))
	put(uint32(len(c.Layers)))
	put(uint32(heads))
	put(uint32(d))
	put(uint64(c.Tokens))
	for _, hs := range c.Layers {
		for _, hc := range hs {
			var flags uint8
			if hc.Q != nil {
				flags = 1
			}
			if len(hc.Attn) > 0 {
				flags |= 2
			}
			put(flags)
			for _, xs := range [][]float32{hc.RopeMean, hc.K.Mean, hc.K.Cov, hc.V.Mean, hc.V.Cov, hc.Q} {
				if xs != nil {
					put(xs)
				}
			}
			if len(hc.Attn) > 0 {
				put(uint32(len(hc.Attn)))
				put(hc.Attn)
			}
		}
	}
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		var k int
		k, err = w.Write(h.Sum(nil))
		n += int64(k)
	}
	if err != nil {
		return n, fmt.Errorf("kvcache: covariance file: %w", err)
	}
	return n, nil
}

// ReadCovariances reads a covariance file that CovarianceFile.WriteTo
// wrote. Anything else, altered or cut short, is an error wrapping
// ErrCovFile.
func ReadCovariances(r io.Reader) (CovarianceFile, error) {
	h := sha256.New()
	cr := &covReader{r: io.TeeReader(bufio.NewReader(r), h)}
	cr.fields = fields{cr.bytes}
	magic := cr.bytes(len(covMagic))
	if cr.err == nil && string(magic) != covMagic {
		return CovarianceFile{}, fmt.Errorf("%w: not one (magic %q)", ErrCovFile, magic)
	}
	n := cr.u32()
	if cr.err == nil && n > covMaxSource {
		return CovarianceFile{}, fmt.Errorf("%w: source of %d bytes, at most %d", ErrCovFile, n, covMaxSource)
	}
	source := string(cr.bytes(int(n)))
	layers, heads, d, tokens := cr.u32(), cr.u32(), cr.u32(), cr.u64()
	if cr.err != nil {
		return CovarianceFile{}, cr.fail()
	}
	if layers < 1 || layers > maxPlanLayers || heads < 1 || heads > covMaxHeads || d < 1 || d > covMaxDim || tokens < 1 || tokens > math.MaxInt32 {
		return CovarianceFile{}, fmt.Errorf("%w: %d layers of %d KV heads of dimension %d from %d tokens: out of bounds", ErrCovFile, layers, heads, d, tokens)
	}
	c := &Covariances{Layers: make([][]HeadCovariance, 0, min(layers, 64)), Tokens: int(tokens)}
	dd := int(d)
	for range layers {
		hs := make([]HeadCovariance, heads)
		for i := range hs {
			flags := cr.u8()
			if cr.err != nil {
				return CovarianceFile{}, cr.fail()
			}
			if flags&^3 != 0 {
				return CovarianceFile{}, fmt.Errorf("%w: layer %d head %d: flags %#x", ErrCovFile, len(c.Layers), i, flags)
			}
			hc := &hs[i]
			hc.RopeMean, hc.K.Mean, hc.K.Cov = cr.f32s(dd), cr.f32s(dd), cr.f32s(dd*dd)
			hc.V.Mean, hc.V.Cov = cr.f32s(dd), cr.f32s(dd*dd)
			if flags&1 != 0 {
				hc.Q = cr.f32s(dd * dd)
			}
			if flags&2 != 0 {
				ages := cr.u32()
				if cr.err == nil && (ages < 1 || ages > maxProfileAge) {
					return CovarianceFile{}, fmt.Errorf("%w: layer %d head %d: an attention profile of %d ages, want 1 to %d", ErrCovFile, len(c.Layers), i, ages, maxProfileAge)
				}
				hc.Attn = cr.f32s(int(ages))
			}
			if cr.err != nil {
				return CovarianceFile{}, cr.fail()
			}
		}
		c.Layers = append(c.Layers, hs)
	}
	want := h.Sum(nil)
	sum := make([]byte, sha256.Size+1)
	switch n, err := io.ReadFull(cr.r, sum); {
	case n < sha256.Size:
		return CovarianceFile{}, fmt.Errorf("%w: cut short before its checksum", ErrCovFile)
	case n > sha256.Size:
		return CovarianceFile{}, fmt.Errorf("%w: bytes after its checksum", ErrCovFile)
	case !bytes.Equal(sum[:sha256.Size], want):
		return CovarianceFile{}, fmt.Errorf("%w: checksum does not match: the file was altered", ErrCovFile)
	case err != nil && !errors.Is(err, io.ErrUnexpectedEOF):
		return CovarianceFile{}, fmt.Errorf("%w: %w", ErrCovFile, err)
	}
	for l, hs := range c.Layers {
		for i, hc := range hs {
			for _, xs := range [][]float32{hc.RopeMean, hc.K.Mean, hc.K.Cov, hc.V.Mean, hc.V.Cov, hc.Q} {
				for _, x := range xs {
					if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
						return CovarianceFile{}, fmt.Errorf("%w: layer %d head %d: a moment is not finite", ErrCovFile, l, i)
					}
				}
			}
			for _, x := range hc.Attn {
				if !(x >= 0) || math.IsInf(float64(x), 0) {
					return CovarianceFile{}, fmt.Errorf("%w: layer %d head %d: the attention profile holds %g, want finite weights of 0 or more", ErrCovFile, l, i, x)
				}
			}
		}
	}
	return CovarianceFile{c, source}, nil
}

// covReader reads a covariance file's fields, keeping the first error.
type covReader struct {
	fields
	r   io.Reader
	err error
}

func (cr *covReader) bytes(n int) []byte {
	if cr.err != nil {
		return nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(cr.r, b); err != nil {
		cr.err = err
		return nil
	}
	return b
}

func (cr *covReader) f32s(n int) []float32 {
	b := cr.bytes(4 * n)
	if b == nil {
		return nil
	}
	xs := make([]float32, n)
	for i := range xs {
		xs[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return xs
}

// fail returns the error that stopped a read.
func (cr *covReader) fail() error {
	if errors.Is(cr.err, io.EOF) || errors.Is(cr.err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: cut short", ErrCovFile)
	}
	return fmt.Errorf("%w: %w", ErrCovFile, cr.err)
}
