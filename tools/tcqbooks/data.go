package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/quant"
)

// modelRates are the klt rates whose designs give a model's sequences:
// the uniform tcq formats'. Their widths reach 1 to 7 bits.
var modelRates = []float64{2.5, 3.5}

// modelSet is one model's klt coder inputs: train from the held-out
// text's last windows (where eval kv calibrates), test from its first
// (where it scores).
type modelSet struct {
	name        string
	train, test []sequence
}

// loadModels records each model's keys and values on the held-out text
// and returns its sequences.
func loadModels(paths []string, tr quant.Trellis, ctx, chunks int) ([]modelSet, error) {
	var sets []modelSet
	for _, p := range paths {
		s, err := loadModel(p, ctx, chunks)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		fmt.Fprintf(os.Stderr, "%s: %d training, %d test sequences\n", s.name, len(s.train), len(s.test))
		sets = append(sets, s)
	}
	return sets, nil
}

func loadModel(path string, ctx, chunks int) (modelSet, error) {
	var (
		m   *model.Model
		err error
	)
	name := path
	if path == "default" {
		m, err = defaultmodel.Load(model.Options{})
	} else {
		m, err = model.Open(path, model.Options{})
		name = filepath.Base(path)
	}
	if err != nil {
		return modelSet{}, err
	}
	defer m.Close()
	tok, err := model.LoadTokenizer(m.File())
	if err != nil {
		return modelSet{}, err
	}
	ids := tok.Encode(defaultmodel.HeldOut(), true)
	if len(ids) < 2*chunks*ctx {
		return modelSet{}, fmt.Errorf("the held-out text has %d tokens, %d windows of %d need %d", len(ids), 2*chunks, ctx, 2*chunks*ctx)
	}
	record := func(from int) ([][]*kvcache.Trace, error) {
		var ws [][]*kvcache.Trace
		for c := range chunks {
			w, err := eval.RecordKV(m, ids[from+c*ctx:from+(c+1)*ctx], -1)
			if err != nil {
				return nil, err
			}
			ws = append(ws, w)
		}
		return ws, nil
	}
	cal, err := record(len(ids) - chunks*ctx)
	if err != nil {
		return modelSet{}, err
	}
	test, err := record(0)
	if err != nil {
		return modelSet{}, err
	}
	cov, err := kvcache.EstimateCovariances(cal)
	if err != nil {
		return modelSet{}, err
	}
	s := modelSet{name: name}
	for l := range cov.Layers {
		for h, hc := range cov.Layers[l] {
			for _, key := range []bool{true, false} {
				for _, rate := range modelRates {
					c, err := newCoderInput(hc, key, rate)
					if err != nil {
						return modelSet{}, fmt.Errorf("layer %d head %d: %w", l, h, err)
					}
					for _, w := range cal {
						s.train = c.sequences(s.train, w[l], h)
					}
					for _, w := range test {
						s.test = c.sequences(s.test, w[l], h)
					}
				}
			}
		}
	}
	return s, nil
}

// coderInput turns a layer's keys or values into the sequences the tcq
// format's Viterbi encoder sees (quant.KLT's encode and encodeTCQ): the
// klt design as kvcache makes it, each vector turned, less the offset,
// each coded component divided by its σᵢ and the vector's scale ρ̂
// (the RMS of those, rounded to the scale byte's eighth of an octave);
// the components of 1 to TCQMaxBits bits in order, weighted by
// Weightᵢ·σᵢ².
type coderInput struct {
	p        quant.KLTParams
	key      bool
	ropeMean []float64
	comps    []int // the TCQ components, in order
	width    []int
	w        []float64
}

func newCoderInput(hc kvcache.HeadCovariance, key bool, rate float64) (*coderInput, error) {
	p, err := hc.Design(key, 8*(quant.KLTBytes(len(hc.K.Mean), rate)-1), 1)
	if err != nil {
		return nil, err
	}
	c := &coderInput{p: p, key: key, ropeMean: f64(hc.RopeMean)}
	for i, b := range p.Bits {
		if b < 1 || b > quant.TCQMaxBits {
			continue
		}
		s := float64(p.Sigma[i])
		wt := 1.0
		if p.Weight != nil {
			wt = float64(p.Weight[i])
		}
		c.comps = append(c.comps, i)
		c.width = append(c.width, int(b))
		c.w = append(c.w, wt*s*s)
	}
	return c, nil
}

// sequences appends head h's vectors of tr (the first token, the
// attention sink, left out as calibration leaves it out) to seqs.
func (c *coderInput) sequences(seqs []sequence, tr *kvcache.Trace, h int) []sequence {
	if len(c.comps) == 0 {
		return seqs
	}
	p := c.p
	d, heads := len(p.Sigma), tr.Shape.KVHeads
	src := tr.V
	if c.key {
		src = tr.K
	}
	x, rm, y := make([]float64, d), make([]float64, d), make([]float64, d)
	for t := 1; t < tr.Len(); t++ {
		for i, v := range src[(t*heads+h)*d : (t*heads+h+1)*d] {
			x[i] = float64(v)
		}
		if c.key { // centred on the mean before RoPE, turned to t
			tr.Shape.Rope.Rotate(rm, c.ropeMean, t)
			for i := range x {
				x[i] -= rm[i]
			}
		}
		var mm float64
		coded := 0
		for r := range d {
			var s float64
			for j := range d {
				s += float64(p.Transform[r*d+j]) * x[j]
			}
			y[r] = (s - float64(p.Offset[r])) / float64(p.Sigma[r])
			if p.Bits[r] > 0 {
				mm += y[r] * y[r]
				coded++
			}
		}
		rho := math.Sqrt(mm / float64(max(coded, 1)))
		if !(rho > 0) {
			continue
		}
		rho = math.Exp2(math.Max(-127, math.Min(127, math.Round(8*math.Log2(rho)))) / 8)
		seq := sequence{x: make([]float64, len(c.comps)), w: c.w, width: c.width}
		for i, r := range c.comps {
			seq.x[i] = y[r] / rho
		}
		seqs = append(seqs, seq)
	}
	return seqs
}

// checkModels prints, per model, the weighted error of its test
// sequences with the old books, the Gaussian-trained ones, books trained
// on its own calibration sequences and books trained on every model's,
// each as a ratio to the old books' error; and the kurtosis of its
// training values per width (3 for a Gaussian).
func checkModels(tr quant.Trellis, sets []modelSet, old, gauss books, cfg trainConfig) error {
	var all []sequence
	for _, s := range sets {
		all = append(all, s.train...)
	}
	pooled, _, _ := train(tr, gauss, all, 0, cfg)
	fmt.Fprintf(os.Stderr, "\nweighted error on the held-out text's first windows, ratio to the old books (klt rates %v):\n%-24s %10s %8s %8s %8s   kurtosis by width 1..%d\n", modelRates, "model", "old", "gauss", "own", "pooled", quant.TCQMaxBits)
	for _, s := range sets {
		own, _, _ := train(tr, gauss, s.train, 0, cfg)
		_, eo := encodeAll(tr, old, s.test, 0)
		_, eg := encodeAll(tr, gauss, s.test, 0)
		_, ew := encodeAll(tr, own, s.test, 0)
		_, ep := encodeAll(tr, pooled, s.test, 0)
		fmt.Fprintf(os.Stderr, "%-24s %10.4g %8.4f %8.4f %8.4f  ", s.name, eo, eg/eo, ew/eo, ep/eo)
		for _, k := range kurtosis(s.train) {
			fmt.Fprintf(os.Stderr, " %5.2f", k)
		}
		fmt.Fprintln(os.Stderr)
	}
	return nil
}

// kurtosis returns E[x⁴]/E[x²]² of the values of each width (0 where
// none).
func kurtosis(seqs []sequence) []float64 {
	var n, m2, m4 [quant.TCQMaxBits + 1]float64
	for _, s := range seqs {
		for t, x := range s.x {
			b := s.width[t]
			n[b]++
			m2[b] += x * x
			m4[b] += x * x * x * x
		}
	}
	out := make([]float64, quant.TCQMaxBits)
	for b := 1; b <= quant.TCQMaxBits; b++ {
		if m2[b] > 0 {
			out[b-1] = n[b] * m4[b] / (m2[b] * m2[b]) // (Σx⁴/n)/(Σx²/n)²
		}
	}
	return out
}

func f64(xs []float32) []float64 {
	out := make([]float64, len(xs))
	for i, v := range xs {
		out[i] = float64(v)
	}
	return out
}
