package quant

import (
	"fmt"
	"slices"
)

// partScorer scores the part of each code that one quantizer owns inside
// a wider code: codes lie at stride, this part at offset off, and the
// result is set into dst or added to it.
type partScorer interface {
	score(dst []float32, codes []byte, stride, off int, add bool)
}

// partQuantizer is a quantizer that can serve as one part of a Split.
type partQuantizer interface {
	Quantizer
	preparePart(q []float32) (partScorer, error)
}

func (t *TurboMSE) preparePart(q []float32) (partScorer, error) {
	s, err := t.Prepare(q)
	if err != nil {
		return nil, err
	}
	return s.(*turboScorer), nil
}

func (t *TurboProd) preparePart(q []float32) (partScorer, error) {
	s, err := t.Prepare(q)
	if err != nil {
		return nil, err
	}
	return s.(*prodScorer), nil
}

func (s *prodScorer) score(dst []float32, codes []byte, stride, off int, add bool) {
	if s.mse != nil {
		s.mse.score(dst, codes, stride, off, add)
		add = true
	}
	s.qjl.score(dst, codes, stride, off+s.t.mseBytes(), add)
}

// Split quantizes a chosen set of outlier channels and the remaining
// channels as two separate vectors, each with its own rotation, norm and
// rate (docs/ALGORITHMS.md §6): 32 of 128 channels at 3 bits and 96 at 2 give
// 2.5 bits per coordinate with both fp16 norms counted. Code layout: the
// outlier part's code, then the rest's.
type Split struct {
	name     string
	d        int
	outliers []int // sorted channel indices
	rest     []int
	hi, lo   partQuantizer
}

// NewTurboSplit returns TurboQuant with an outlier split: the channels in
// outliers get hiBits, the others loBits. With prod set, both parts use
// TurboProd (MSE + QJL residual) instead of TurboMSE.
func NewTurboSplit(d int, outliers []int, hiBits, loBits int, prod bool, o Options) (*Split, error) {
	k := len(outliers)
	if k == 0 || k >= d {
		return nil, fmt.Errorf("quant: turbo split: %d outlier channels of %d; need 0 < k < d", k, d)
	}
	seen := make([]bool, d)
	for _, c := range outliers {
		if c < 0 || c >= d || seen[c] {
			return nil, fmt.Errorf("quant: turbo split: outlier channel %d out of range or repeated", c)
		}
		seen[c] = true
	}
	s := &Split{d: d, outliers: slices.Sorted(slices.Values(outliers))}
	for c := range d {
		if !seen[c] {
			s.rest = append(s.rest, c)
		}
	}
	var err error
	hiOpt, loOpt := o, o
	hiOpt.Seed, loOpt.Seed = o.Seed^0xa5a5, o.Seed^0x5a5a
	if prod {
		if s.hi, err = NewTurboProd(k, hiBits, hiOpt); err != nil {
			return nil, err
		}
		if s.lo, err = NewTurboProd(d-k, loBits, loOpt); err != nil {
			return nil, err
		}
	} else {
		if s.hi, err = NewTurboMSE(k, hiBits, hiOpt); err != nil {
			return nil, err
		}
		if s.lo, err = NewTurboMSE(d-k, loBits, loOpt); err != nil {
			return nil, err
		}
	}
	kind := "turbo"
	if prod {
		kind = "turbo-prod"
	}
	s.name = fmt.Sprintf("%s/%g", kind, BitsPerCoord(s))
	return s, nil
}

// Name returns the method and its stored bits per coordinate, e.g.
// "turbo/2.5".
func (s *Split) Name() string { return s.name }

// Dim returns the vector dimension.
func (s *Split) Dim() int { return s.d }

// Bytes returns the sum of both parts' code sizes.
func (s *Split) Bytes() int { return s.hi.Bytes() + s.lo.Bytes() }

// TurboSplitBytes returns the code size of NewTurboSplit's quantizer with
// k outlier channels of d without making it: both parts' codes.
func TurboSplitBytes(d, k, hiBits, loBits int, prod bool) int {
	if prod {
		return TurboProdBytes(k, hiBits) + TurboProdBytes(d-k, loBits)
	}
	return TurboMSEBytes(k, hiBits) + TurboMSEBytes(d-k, loBits)
}

// Outliers returns the outlier channels, sorted.
func (s *Split) Outliers() []int { return slices.Clone(s.outliers) }

func gather(dst, src []float32, idx []int) {
	for i, c := range idx {
		dst[i] = src[c]
	}
}

func scatter(dst, src []float32, idx []int) {
	for i, c := range idx {
		dst[c] = src[i]
	}
}

// Encode writes the code of x into dst.
func (s *Split) Encode(dst []byte, x []float32) error { return s.EncodeBatch(dst, x) }

// EncodeBatch encodes each vector of xs into consecutive codes of dst.
func (s *Split) EncodeBatch(dst []byte, xs []float32) error { return s.encodeBatch(dst, xs, nil) }

// encodeBatch is EncodeBatch with its buffers taken from sc.
func (s *Split) encodeBatch(dst []byte, xs []float32, sc *Scratch) error {
	n, err := batchLen(s, dst, xs)
	if err != nil {
		return err
	}
	// Gather all vectors' parts, then encode each part as one batch.
	k := len(s.outliers)
	a := sc.floats(n * k)
	b := sc.floats(n * (s.d - k))
	for i := range n {
		x := xs[i*s.d : (i+1)*s.d]
		gather(a[i*k:(i+1)*k], x, s.outliers)
		gather(b[i*(s.d-k):(i+1)*(s.d-k)], x, s.rest)
	}
	ca := sc.bytes(n * s.hi.Bytes())
	cb := sc.bytes(n * s.lo.Bytes())
	if err := encodeBatch(s.hi, ca, a, sc); err != nil {
		return err
	}
	if err := encodeBatch(s.lo, cb, b, sc); err != nil {
		return err
	}
	for i := range n {
		code := dst[i*s.Bytes() : (i+1)*s.Bytes()]
		copy(code, ca[i*s.hi.Bytes():(i+1)*s.hi.Bytes()])
		copy(code[s.hi.Bytes():], cb[i*s.lo.Bytes():(i+1)*s.lo.Bytes()])
	}
	return nil
}

// Decode reconstructs both parts and puts their channels back in place.
func (s *Split) Decode(dst []float32, code []byte) error {
	if err := checkLen(s.name+" output", len(dst), s.d); err != nil {
		return err
	}
	if err := s.Check(code); err != nil {
		return err
	}
	a := make([]float32, len(s.outliers))
	b := make([]float32, len(s.rest))
	if err := s.hi.Decode(a, code[:s.hi.Bytes()]); err != nil {
		return err
	}
	if err := s.lo.Decode(b, code[s.hi.Bytes():]); err != nil {
		return err
	}
	scatter(dst, a, s.outliers)
	scatter(dst, b, s.rest)
	return nil
}

// Check checks the code's length and both parts'.
func (s *Split) Check(code []byte) error {
	if err := checkLen(s.name+" code", len(code), s.Bytes()); err != nil {
		return err
	}
	if err := s.hi.Check(code[:s.hi.Bytes()]); err != nil {
		return err
	}
	return s.lo.Check(code[s.hi.Bytes():])
}

// Prepare splits q like the data and prepares both parts.
func (s *Split) Prepare(q []float32) (Scorer, error) {
	if err := checkLen(s.name+" query", len(q), s.d); err != nil {
		return nil, err
	}
	a := make([]float32, len(s.outliers))
	b := make([]float32, len(s.rest))
	gather(a, q, s.outliers)
	gather(b, q, s.rest)
	hs, err := s.hi.preparePart(a)
	if err != nil {
		return nil, err
	}
	ls, err := s.lo.preparePart(b)
	if err != nil {
		return nil, err
	}
	return &splitScorer{s: s, hi: hs, lo: ls}, nil
}

type splitScorer struct {
	s      *Split
	hi, lo partScorer
}

func (p *splitScorer) Score(dst []float32, codes []byte) {
	p.score(dst, codes, p.s.Bytes(), 0, false)
}

func (p *splitScorer) score(dst []float32, codes []byte, stride, off int, add bool) {
	p.hi.score(dst, codes, stride, off, add)
	p.lo.score(dst, codes, stride, off+p.s.hi.Bytes(), true)
}
