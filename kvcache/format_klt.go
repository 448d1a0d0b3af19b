package kvcache

import (
	"fmt"

	"github.com/turbomem/turbomem/quant"
)

// klt2.5 and klt3.5: a transform coder calibrated per layer and KV head
// (quant.KLT: the Karhunen–Loève basis of the calibration keys or values,
// reverse water-filling of integer bits, Gaussian Lloyd–Max codebooks
// scaled by each component's spread, one scale byte per vector): rate
// bits per coordinate all in, ⌊rate·d/8⌋ bytes per vector, so d is a
// multiple of 16. Keys are centred on their calibrated mean before RoPE
// (centered.go). The transforms come from Spec.Cov (Covariances), shared
// by every cache of a model like its weights: per layer and KV head, two
// d×d float32 matrices and a few vectors, which Bytes does not count
// (Covariances.Bytes does).
func kltFormat(rate float64) *codec {
	return &codec{
		multiple:   16,
		rate:       rate,
		tokenBytes: func(d int, _ bool) int { return quant.KLTBytes(d, rate) },
		quantizer: func(int, bool, []int, quant.Options) (quant.Quantizer, error) {
			return nil, fmt.Errorf("kvcache: klt formats are made per layer and head from covariances")
		},
	}
}

// calibrated reports whether the format needs Spec.Cov.
func (f Format) calibrated() bool { return f.c.rate > 0 }

// Calibrated reports whether the format is designed from covariances
// measured on calibration text (the klt formats; Spec.Cov).
func (f Format) Calibrated() bool { return f.Valid() && f.calibrated() }

// kltStores sets head i's key and value stores for the spec's klt
// formats from its covariances: keys centred on the calibrated pre-RoPE
// mean.
func (c *Compressed) kltStores(i int, h *head) error {
	s, d := c.spec, c.shape.HeadDim
	seed := c.seed ^ uint64(i+1)*0xbf58476d1ce4e5b9
	if s.K.calibrated() {
		q, err := s.Cov.klt(c.layer, i, true, 8*(s.K.c.tokenBytes(d, true)-1), seed^1)
		if err != nil {
			return err
		}
		ck := centeredOn(c.shape.Rope, s.Cov.Layers[c.layer][i].RopeMean)
		ck.inner = s.K.keyStore(q, d)
		h.keys = ck // the mean is the calibration's, shared: not in Bytes
	}
	if s.V.calibrated() {
		q, err := s.Cov.klt(c.layer, i, false, 8*(s.V.c.tokenBytes(d, false)-1), seed^2)
		if err != nil {
			return err
		}
		h.values = s.V.valueStore(q, d)
	}
	return nil
}
