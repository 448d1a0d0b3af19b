package eval

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tensor"
)

// SensitivityOptions configures KVSensitivity.
type SensitivityOptions struct {
	// Ctx and MaxChunks are the windows scored, as in PPLOptions.
	Ctx, MaxChunks int
	// Window and Seed are those of the compressed parts' Spec.
	Window int
	Seed   uint64
	// Cov is the calibration of klt candidates (nil: none is one).
	Cov *kvcache.Covariances
	// Progress, if set, is called after each measurement.
	Progress func(done, total int)
}

// KVSensitivity measures how much compressing each part of the KV cache
// on its own costs: for every layer's keys and every layer's values, and
// every candidate format, the mean KL divergence of the next-token
// distributions from those with the f16 cache, when only that part is
// stored in that format and all others stay f16. The windows and scored
// positions are those of Perplexity (top-64 reference distributions), and
// the numbers equal what Perplexity with such a cache and Ref gives. The
// layers before the compressed one compute what the f16 run computed, so
// each measurement starts from the hidden states the f16 run recorded at
// its layer's input: on average about half a forward pass. Formats that
// cannot serve a part (qjl for values) get loss −1; f16 gets 0 without
// measuring.
func KVSensitivity(ctx context.Context, m *model.Model, ids []int32, bos int32, formats []kvcache.Format, o SensitivityOptions) (kvcache.Sensitivity, error) {
	sh := m.CacheShape()
	layers := m.Config.Layers
	s := kvcache.Sensitivity{Formats: formats, Loss: make([][]float64, 2*layers)}
	for p := range s.Loss {
		s.Loss[p] = make([]float64, len(formats))
	}
	f16, _ := kvcache.ParseFormat("f16")
	for _, f := range formats {
		if err := f.Check(sh.HeadDim, true); err != nil {
			return s, err
		}
	}
	// What each part costs in each format is measured iff it can serve.
	measured := func(p, j int) bool {
		return formats[j] != f16 && formats[j].Check(sh.HeadDim, p%2 == 0) == nil
	}
	var probes []probe
	var where [][2]int // part and format of each probe
	for p := range s.Loss {
		layer, key := p/2, p%2 == 0
		for j, f := range formats {
			switch {
			case measured(p, j):
				// Every layer f16 but this part, in f.
				only := &kvcache.Plan{Window: o.Window, Seed: o.Seed, Cov: o.Cov, Layers: slices.Repeat([]kvcache.LayerFormats{{K: f16, V: f16}}, layers)}
				if key {
					only.Layers[layer].K = f
				} else {
					only.Layers[layer].V = f
				}
				probes = append(probes, probe{from: layer, what: fmt.Sprintf("layer %d %s at %s", layer, partName(key), f),
					open: func() (*model.Model, kvcache.Maker, error) { return m, only, nil }})
				where = append(where, [2]int{p, j})
			case formats[j] != f16:
				s.Loss[p][j] = -1
			}
		}
	}
	kl, err := probeKL(ctx, m, ids, bos, o, probes)
	for i, w := range where {
		s.Loss[w[0]][w[1]] = kl[i]
	}
	return s, err
}

// ErrSkip, returned (wrapped) by WeightSensitivity's encode, marks a type
// a tensor cannot take: its loss is −1, not measured.
var ErrSkip = errors.New("eval: not measured")

// probe is one change to a model whose cost probeKL measures.
type probe struct {
	// from is the first layer the change touches: the run starts from
	// the hidden states the unchanged model recorded at its input; −1
	// (the embeddings change) starts from the tokens.
	from int
	// open returns the changed model and its caches; it is called once
	// per probe, just before the probe's runs.
	open func() (*model.Model, kvcache.Maker, error)
	what string // for errors
}

// probeKL measures each probe on its own: the mean KL divergence of its
// next-token distributions from the unchanged model's (f16 caches), over
// the windows and scored positions of Perplexity (top-64 reference
// distributions), as Perplexity with Ref gives it. The unchanged runs of
// every window are recorded first (distributions, and the hidden states
// at the input of each layer a probe starts from: windows × those layers
// × Ctx × Hidden float32s), then each probe is opened once and run on
// every window. On error the losses measured so far are returned.
func probeKL(ctx context.Context, m *model.Model, ids []int32, bos int32, o SensitivityOptions, probes []probe) ([]float64, error) {
	kl := make([]float64, len(probes))
	layers, vocab := m.Config.Layers, m.Config.Vocab
	ws, err := windows(m, ids, bos, o.Ctx, o.MaxChunks)
	if err != nil {
		return kl, err
	}
	chunks := len(ws)
	starts := make([]bool, layers)
	for _, p := range probes {
		if p.from >= layers {
			return kl, fmt.Errorf("eval: %s: layer %d of %d", p.what, p.from, layers)
		}
		if p.from >= 0 {
			starts[p.from] = true
		}
	}
	type reference struct {
		window []int32
		hidden [][]float32 // per layer, where a probe starts
		dists  *Dists
	}
	refs := make([]reference, chunks)
	for c, window := range ws {
		sess, err := m.NewSession(nil, o.Ctx)
		if err != nil {
			return kl, err
		}
		r := reference{window: window, hidden: make([][]float32, layers), dists: &Dists{K: 64, Vocab: vocab}}
		sess.SetCapture(func(l int, x []float32) {
			if starts[l] {
				r.hidden[l] = append(r.hidden[l], x...)
			}
		})
		logits, err := scoredLogits(sess, window)
		if err != nil {
			return kl, err
		}
		scored(logits, window, vocab, func(lp []float64, target int32) error {
			r.dists.add(lp, target, r.dists.K)
			return nil
		})
		refs[c] = r
	}
	total := len(probes) * chunks
	for i, p := range probes {
		if err := ctx.Err(); err != nil {
			return kl, err
		}
		pm, kv, err := p.open()
		if errors.Is(err, ErrSkip) {
			kl[i] = -1
			if o.Progress != nil {
				o.Progress((i+1)*chunks, total)
			}
			continue
		}
		if err != nil {
			return kl, fmt.Errorf("eval: %s: %w", p.what, err)
		}
		var acc agreementAcc
		for c, r := range refs {
			sess, err := pm.NewSession(kv, o.Ctx)
			if err != nil {
				return kl, err
			}
			var logits []float32
			if p.from < 0 {
				logits, err = scoredLogits(sess, r.window)
			} else {
				logits, err = sess.ForwardFrom(p.from, r.hidden[p.from], ScoredPerWindow(o.Ctx))
			}
			if err != nil {
				return kl, fmt.Errorf("eval: sensitivity of %s: %w", p.what, err)
			}
			pos := 0
			scored(logits, r.window, vocab, func(lp []float64, _ int32) error {
				acc.add(r.dists, pos, lp)
				pos++
				return nil
			})
			if o.Progress != nil {
				o.Progress(i*chunks+c+1, total)
			}
		}
		// The top-K bound can round below 0 when nothing changed.
		kl[i] = max(acc.result().KLMean, 0)
	}
	return kl, nil
}

func partName(key bool) string {
	if key {
		return "keys"
	}
	return "values"
}

// WeightSensitivity measures how much storing each weight matrix in a
// cheaper type costs on its own: for every tensor named in tensors and
// every type in types, the mean KL divergence of the next-token
// distributions from m's own when only that tensor is stored in that
// type (what encode returns for it: the quantizer under test), with f16
// caches, over the windows and scored positions of Perplexity. Each
// measurement starts at the tensor's layer from the hidden states m's run
// recorded there (blk.N.*: layer N; output.weight: the last layer), or
// from the tokens for token_embd.weight (tied embeddings change at both
// ends). Loss[i][j] is tensors[i] in types[j]. encode is called once per
// tensor and type, tensor after tensor; an error wrapping ErrSkip leaves
// that loss −1.
func WeightSensitivity(ctx context.Context, m *model.Model, ids []int32, bos int32, tensors []string, types []tensor.DType, encode func(name string, t tensor.DType) ([]byte, error), o SensitivityOptions) ([][]float64, error) {
	loss := make([][]float64, len(tensors))
	var probes []probe
	for i, name := range tensors {
		loss[i] = make([]float64, len(types))
		from, err := tensorLayer(name, m.Config.Layers)
		if err != nil {
			return loss, err
		}
		for _, t := range types {
			probes = append(probes, probe{from: from, what: fmt.Sprintf("%s in %s", name, t),
				open: func() (*model.Model, kvcache.Maker, error) {
					data, err := encode(name, t)
					if err != nil {
						return nil, nil, err
					}
					changed, err := m.WithTensor(name, t, data)
					return changed, nil, err
				}})
		}
	}
	kl, err := probeKL(ctx, m, ids, bos, o, probes)
	for i := range tensors {
		copy(loss[i], kl[i*len(types):(i+1)*len(types)])
	}
	return loss, err
}

// tensorLayer returns the first layer a weight matrix takes part in, by
// its GGUF name: N for blk.N.*, the last layer for output.weight (it
// follows them all) and −1 for token_embd.weight.
func tensorLayer(name string, layers int) (int, error) {
	switch name {
	case "token_embd.weight":
		return -1, nil
	case "output.weight":
		return layers - 1, nil
	}
	var l int
	if _, err := fmt.Sscanf(name, "blk.%d.", &l); err != nil || l < 0 || l >= layers {
		return 0, fmt.Errorf("eval: tensor %q: not a weight of one of the %d layers", name, layers)
	}
	return l, nil
}
