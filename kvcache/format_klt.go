package kvcache

import (
	"fmt"

	"github.com/turbomem/turbomem/quant"
)

// klt2, klt2.5, klt3, klt3.5, klt4, klt4.5, klt5 and klt6: a transform
// coder calibrated per layer and KV head (quant.KLT: the Karhunen–Loève
// basis of the calibration keys or values, reverse water-filling of
// integer bits, Gaussian Lloyd–Max codebooks scaled by each component's
// spread, one scale byte per vector): rate bits per coordinate all in,
// ⌊rate·d/8⌋ bytes per vector, so d is a multiple of 16. The rate is only
// the bits the water-filling hands out; the rates besides 2.5 and 3.5 are
// the steps per-layer plans choose among. Keys are centred on their calibrated mean before RoPE
// (centered.go). The transforms come from Spec.Cov (Covariances), shared
// by every cache of a model like its weights: per layer and KV head, two
// d×d float32 matrices and a few vectors, which Bytes does not count
// (Covariances.Bytes does). Attention reads the codes directly: the
// queries turned once per step, each chunk of codes unpacked once for the
// whole query group (kltKeys; the values by quant's KLT accumulator).
func kltFormat(rate float64) *codec {
	return &codec{
		slice:      laneMinSlice,
		multiple:   16,
		rate:       rate,
		tokenBytes: func(d int, _ bool) int { return quant.KLTBytes(d, rate) },
		quantizer: func(int, bool, []int, quant.Options) (quant.Quantizer, error) {
			return nil, fmt.Errorf("kvcache: klt formats are made per layer and head from covariances")
		},
	}
}

// tcq2, tcq2.5, tcq3, tcq3.5, tcq4, tcq4.5, tcq5 and tcq6: the klt
// format of the same rate (design, bits, scale byte, code size) with the
// components of 1 to 7 bits coded by 8-state trellis-coded quantization
// (quant.KLTParams.Trellis: one tail-biting Viterbi path along each
// vector, unit-Gaussian union codebooks), about 0.7x the scalar code's
// squared error and 0.52–0.64x its KL at the same bytes. Encoding is a
// Viterbi pass per token (about 1.2x klt's time) and attention reads the
// codes on klt's lane kernels (1.3–1.8x klt's time); auto's default
// candidates (eval.DefaultKVCandidates) are these rates, not klt's.
func tcqFormat(rate float64) *codec {
	c := kltFormat(rate)
	c.trellis = tcqStates
	return c
}

// tcqStates is the tcq formats' trellis: 8 states, whose encoder finds
// the best tail-biting path exactly (quant.TCQ.Encode), on the lane
// kernels' trellis (at most 8 states; tools/kvcoding measured 32 and 256
// states a little better at 8 and 36 times the encoding time).
const tcqStates = 8

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
	design := func(cd *codec, key bool, seed uint64) (*quant.KLT, error) {
		return s.Cov.klt(c.layer, i, key, 8*(cd.tokenBytes(d, key)-1), cd.trellis, seed)
	}
	if s.K.calibrated() {
		q, err := design(s.K.c, true, seed^1)
		if err != nil {
			return err
		}
		ck := centeredOn(c.shape.Rope, s.Cov.Layers[c.layer][i].RopeMean)
		ck.inner = &kltKeys{codeKeys: codeKeys{q: q}, k: q}
		if s.K.tiered() {
			lq, err := design(s.K.lo, true, seed^1) // the plain format's seed: one design per rate
			if err != nil {
				return err
			}
			tk := newTieredKeys(q, lq, s.headSpan(s.K, c.layer, i))
			ck.inner, h.tk = tk, &tk.tiers
		}
		h.keys = ck // the mean is the calibration's, shared: not in Bytes
	}
	if s.V.calibrated() {
		q, err := design(s.V.c, false, seed^2)
		if err != nil {
			return err
		}
		h.values = s.V.valueStore(q, d)
		if s.V.tiered() {
			lq, err := design(s.V.lo, false, seed^2)
			if err != nil {
				return err
			}
			tv := newTieredValues(q, lq, s.headSpan(s.V, c.layer, i))
			h.values, h.tv = tv, &tv.tiers
		}
	}
	return nil
}

// kltKeys holds klt keys as codes back to back. An attention step turns
// the group's queries once (quant.KLT.PrepareQueries) and every slice of
// positions scores them on the codes, each chunk unpacked once for the
// whole group (quant.KLT.ScoreQueries); codeKeys.score, each query's own
// scorer, is the reference the tests compare with.
type kltKeys struct {
	codeKeys
	k *quant.KLT
}

func (s *kltKeys) begin(*queryPrep) {}

// prepare turns the whole group's queries for j = 0.
func (s *kltKeys) prepare(p *queryPrep, j int) {
	if j > 0 {
		return
	}
	if err := s.k.PrepareQueries(&p.klt, p.qs); err != nil {
		panic(err) // lengths are the cache's own: a bug
	}
}

func (s *kltKeys) scoreWith(dst [][]float32, p *queryPrep, t0 int) {
	if err := s.k.ScoreQueries(dst, &p.klt, withSlack(s.codes, t0*s.k.Bytes())); err != nil {
		panic(err)
	}
}

// score is scoreWith with queries set up for this call alone.
func (s *kltKeys) score(dst, qs [][]float32, t0 int) {
	p := queryPrep{qs: qs}
	prepareKeys(s, &p)
	s.scoreWith(dst, &p, t0)
}
