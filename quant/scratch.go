package quant

// Scratch holds the working buffers of EncodeBatchScratch from one call
// to the next: one per caller that encodes a few vectors often (a cache
// appending a token each decode step), so that encoding allocates nothing
// once the buffers have grown. The zero Scratch is ready to use; it is
// not safe for concurrent use.
type Scratch struct {
	fs     [][]float32
	bs     [][]byte
	nf, nb int // buffers handed out since the call began
}

// floats returns the next float32 buffer of n values (not zeroed) of
// this call, or a new one for a nil Scratch.
func (s *Scratch) floats(n int) []float32 {
	if s == nil {
		return make([]float32, n)
	}
	if s.nf == len(s.fs) {
		s.fs = append(s.fs, nil)
	}
	if cap(s.fs[s.nf]) < n {
		s.fs[s.nf] = make([]float32, n)
	}
	s.nf++
	return s.fs[s.nf-1][:n]
}

// bytes returns the next byte buffer of n bytes (not zeroed) of this
// call, or a new one for a nil Scratch.
func (s *Scratch) bytes(n int) []byte {
	if s == nil {
		return make([]byte, n)
	}
	if s.nb == len(s.bs) {
		s.bs = append(s.bs, nil)
	}
	if cap(s.bs[s.nb]) < n {
		s.bs[s.nb] = make([]byte, n)
	}
	s.nb++
	return s.bs[s.nb-1][:n]
}

// scratchEncoder is a Quantizer whose EncodeBatch can take its working
// buffers from a Scratch (nil: its own, new ones).
type scratchEncoder interface {
	encodeBatch(dst []byte, xs []float32, sc *Scratch) error
}

// EncodeBatchScratch is q.EncodeBatch(dst, xs), the same codes, with q's
// working buffers taken from sc where q can (TurboMSE, and Split of
// them): sc's buffers are reused from call to call instead of made anew.
func EncodeBatchScratch(q Quantizer, dst []byte, xs []float32, sc *Scratch) error {
	if sc != nil {
		sc.nf, sc.nb = 0, 0
	}
	return encodeBatch(q, dst, xs, sc)
}

// encodeBatch is EncodeBatchScratch within a call: the buffers already
// handed out are not reused.
func encodeBatch(q Quantizer, dst []byte, xs []float32, sc *Scratch) error {
	if e, ok := q.(scratchEncoder); ok {
		return e.encodeBatch(dst, xs, sc)
	}
	return q.EncodeBatch(dst, xs)
}
