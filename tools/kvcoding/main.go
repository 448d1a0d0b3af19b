// Command kvcoding measures how much better than the klt formats' coder
// other scalar coders of the same transformed K/V would do, on a model's
// own keys and values: a feasibility study for the klt formats at low
// rates, not a format.
//
//	go run ./tools/kvcoding [-m model.gguf] [-ctx 2048] [-bpc 2.5,3.5] [-tcq 8,32,256]
//
// The model runs over two windows of ctx tokens of the embedded held-out
// text: the first calibrates (kvcache.EstimateCovariances, then the klt
// design of each layer and KV head at the rate, as a cache would make
// it: keys centred on their mean before RoPE and weighted by the
// queries' second moment), the second is coded. For every layer, keys
// and values, it prints the coder's error on the second window (keys:
// E[Δkᵀ·Q·Δk], the logit error; values: E‖Δv‖²; first token of each
// window left out) and, beside it, as ratios or rates:
//
//   - books: each coded component's Lloyd–Max codebook trained on the
//     calibration window's normalised coefficients (yᵢ/(ρ̂·σᵢ)), one per
//     component, instead of the unit Gaussian's; same bits, same code;
//   - shared: one trained codebook per index width (the components of a
//     width share one table, as the lane kernels' runs do);
//   - pred: the bits per coded component that predicting each
//     coefficient from the previous token's (one factor per component,
//     fitted on the calibration window) would save at high rate;
//   - ecsq: a uniform quantizer on yᵢ/ρ̂ of one step for every coded
//     component, its indices entropy-coded with probabilities counted on
//     the calibration window (cross-entropy on the coded one): the bits
//     per coordinate, the scale byte included, at the coder's error.
//
// A ratio below 1 is less error at the same bits; an ecsq rate below the
// format's is bits saved at the same error (variable-length codes: an
// estimate of what entropy coding could give, not a layout).
//
// Then fixed-rate vector quantization at the same bits (-tcq, trellis
// sizes; tcq.go, tcqcoder.go): trellis-coded quantization of each vector
// alone, as the cache appends it, b bits a component exactly (a path bit
// and b−1 bits of index in one of four subsets of a union codebook of
// 2^(b+1) levels for a unit Gaussian: the doubled Lloyd–Max alphabet
// refined by the TCQ Lloyd iteration on Gaussian samples); tail-biting
// trellises, so no bit goes to a start state; components of 8 bits keep
// the scalar code:
//
//   - tcq8run: 8 states, the trellis along each run of components of
//     equal bits (at least 4) alone;
//   - tcqN: N states, one trellis path along all the vector's coded
//     components in order, each with its width's codebook;
//   - tcq+sh: the largest, with one union codebook per width trained on
//     the calibration window (as "shared");
//   - +bpc: for tcq+sh, the bits per coordinate the scalar klt coder
//     needs beyond the format's to reach the same error (designs a byte
//     larger at a time, log-linear between them).
//
// The summary gives each column's geometric mean and −½·log₂ of it, the
// bits per coded component the ratio is worth at high rate (an
// approximation; +bpc is the measured equivalent).
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/quant"
)

func main() {
	path := flag.String("m", "", "GGUF model (default: the embedded reference model)")
	ctx := flag.Int("ctx", 2048, "tokens per window (calibration, then coded)")
	rates := flag.String("bpc", "2.5,3.5", "comma-separated klt rates, bits per coordinate all in")
	states := flag.String("tcq", "8,32,256", "comma-separated trellis sizes for the TCQ columns (4 to 256 states; empty: none)")
	flag.Parse()
	if err := run(*path, *ctx, *rates, *states); err != nil {
		slog.Error("kvcoding", "err", err)
		os.Exit(1)
	}
}

func run(path string, n int, rates, states string) error {
	var trs []quant.Trellis
	for _, s := range strings.Split(states, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		v, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("-tcq: %q is not a number of states", s)
		}
		tr, err := quant.NewTrellis(v)
		if err != nil {
			return fmt.Errorf("-tcq: %w", err)
		}
		trs = append(trs, tr)
	}
	var bpcs []float64
	for _, s := range strings.Split(rates, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || !(v > 1 && v <= 8) {
			return fmt.Errorf("-bpc: %q is not a rate in (1, 8]", s)
		}
		bpcs = append(bpcs, v)
	}
	if n < 256 {
		return fmt.Errorf("-ctx %d: want at least 256 tokens", n)
	}
	var (
		m   *model.Model
		err error
	)
	if path == "" {
		m, err = defaultmodel.Load(model.Options{})
	} else {
		m, err = model.Open(path, model.Options{})
	}
	if err != nil {
		return err
	}
	defer m.Close()
	tok, err := model.LoadTokenizer(m.File())
	if err != nil {
		return err
	}
	ids := tok.Encode(defaultmodel.HeldOut(), false)
	if len(ids) < 2*n {
		return fmt.Errorf("-ctx %d: the held-out text has %d tokens, two windows need %d", n, len(ids), 2*n)
	}
	if n > m.Config.Context {
		return fmt.Errorf("-ctx %d: the model's context is %d", n, m.Config.Context)
	}
	cal, err := eval.RecordKV(m, ids[:n], -1)
	if err != nil {
		return err
	}
	test, err := eval.RecordKV(m, ids[n:2*n], -1)
	if err != nil {
		return err
	}
	cov, err := kvcache.EstimateCovariances([][]*kvcache.Trace{cal})
	if err != nil {
		return err
	}
	books, err := gaussianTCQBooks(append([]quant.Trellis{trellis8}, trs...))
	if err != nil {
		return err
	}
	for _, bpc := range bpcs {
		fmt.Printf("\nklt at %g bits per coordinate, %d + %d tokens\n", bpc, n, n)
		fmt.Printf("%-6s %-4s %12s %8s %8s %10s %8s", "layer", "part", "error", "books", "shared", "ecsq bpc", "pred")
		names := tcqColumns(trs)
		for _, name := range names {
			fmt.Printf(" %8s", name)
		}
		if len(trs) > 0 {
			fmt.Printf(" %8s", "+bpc")
		}
		fmt.Println()
		var logBooks, logShared, saved, pred float64
		logTCQ, bitsTCQ := make([]float64, len(names)), make([]float64, len(names))
		var runLens []int
		scalar := 0
		var logPart [2][]float64 // keys, values: log ratio of each TCQ column
		logPart[0], logPart[1] = make([]float64, len(names)), make([]float64, len(names))
		var cntPart [2]int
		cnt := 0
		// The layers, heads and parts are measured on all cores, printed
		// in order.
		type job struct {
			l, h int
			key  bool
			r    result
			err  error
			done chan struct{}
		}
		var jobs []*job
		for l := range cal {
			for h := range cal[l].Shape.KVHeads {
				for _, key := range []bool{true, false} {
					jobs = append(jobs, &job{l: l, h: h, key: key, done: make(chan struct{})})
				}
			}
		}
		queue := make(chan *job, len(jobs))
		for _, j := range jobs {
			queue <- j
		}
		close(queue)
		for range min(runtime.GOMAXPROCS(0), len(jobs)) {
			go func() {
				for j := range queue {
					j.r, j.err = measure(cal[j.l], test[j.l], cov.Layers[j.l][j.h], j.h, j.key, bpc, trs, books)
					close(j.done)
				}
			}()
		}
		for _, j := range jobs {
			<-j.done
		}
		for _, j := range jobs {
			l, h, key := j.l, j.h, j.key
			r, err := j.r, j.err
			if err != nil {
				return fmt.Errorf("layer %d head %d: %w", l, h, err)
			}
			part := "V"
			if key {
				part = "K"
			}
			if cal[l].Shape.KVHeads > 1 {
				part += strconv.Itoa(h)
			}
			fmt.Printf("%-6d %-4s %12.4g %8.3f %8.3f %10.3f %8.3f", l, part, r.err, r.books, r.shared, r.ecsq, r.pred)
			pi := 1
			if key {
				pi = 0
			}
			for i, t := range r.tcq {
				fmt.Printf(" %8.3f", t)
				logTCQ[i] += math.Log(t)
				logPart[pi][i] += math.Log(t)
				bitsTCQ[i] += r.tcqBits[i]
			}
			if len(r.tcqBits) > 0 {
				fmt.Printf(" %8.3f", r.tcqBits[len(r.tcqBits)-1])
			}
			cntPart[pi]++
			runLens = append(runLens, r.runs...)
			scalar += r.scalar
			fmt.Println()
			logBooks += math.Log(r.books)
			logShared += math.Log(r.shared)
			saved += r.bpc - r.ecsq
			pred += r.pred
			cnt++
		}
		fmt.Printf("geometric mean: books %.3f, shared %.3f; on average ecsq saves %.3f bits per coordinate (format %.3f), pred %.3f per coded component\n",
			math.Exp(logBooks/float64(cnt)), math.Exp(logShared/float64(cnt)), saved/float64(cnt), bpc, pred/float64(cnt))
		if len(trs) > 0 && len(runLens) > 0 {
			slices.Sort(runLens)
			fmt.Printf("TCQ along a whole vector codes %.1f sequences a vector, %d to %d components (median %d); %.1f coded components a vector left to the scalar code\n",
				float64(len(runLens))/float64(cnt), runLens[0], runLens[len(runLens)-1], runLens[len(runLens)/2], float64(scalar)/float64(cnt))
		}
		if len(trs) > 0 {
			// High-rate equivalence: error ∝ 2^(−2b), so a ratio r is
			// worth Δb = −½·log₂ r bits per coded component (an
			// approximation at these rates).
			fmt.Printf("TCQ error ratio, geometric mean (keys; values); the bits per coded component it is worth at high rate, -1/2*log2(ratio) (an approximation); the mean bits per coordinate the scalar klt needs beyond %g for the same error (+bpc):\n", bpc)
			for i, name := range names {
				g := math.Exp(logTCQ[i] / float64(cnt))
				fmt.Printf("  %-7s %.3f (K %.3f; V %.3f)  %.3f bit  +bpc %.3f\n", name, g,
					math.Exp(logPart[0][i]/float64(max(cntPart[0], 1))), math.Exp(logPart[1][i]/float64(max(cntPart[1], 1))), -0.5*math.Log2(g), bitsTCQ[i]/float64(cnt))
			}
		}
	}
	return nil
}

// tcqColumns names the TCQ columns: 8 states per run of equal bits,
// each trellis along the whole vector, the largest with union codebooks
// trained per width.
func tcqColumns(trs []quant.Trellis) []string {
	if len(trs) == 0 {
		return nil
	}
	names := []string{"tcq8run"}
	for _, tr := range trs {
		names = append(names, fmt.Sprintf("tcq%d", tr.States()))
	}
	return append(names, "tcq+sh")
}

type result struct {
	err, books, shared, ecsq, bpc, pred float64
	// tcq is the error ratio of each TCQ column (tcqColumns).
	tcq []float64
	// tcqBits is, for each, the bits per coordinate the scalar klt coder
	// needs beyond the format's to reach the same error.
	tcqBits []float64
	// runs are the lengths of the sequences TCQ codes along a whole
	// vector; scalar the coded components it leaves to the scalar code.
	runs   []int
	scalar int
}

// coded is one vector as the cache takes it (x: keys centred) and in the
// KLT's basis (y = T·x − off), with its scale.
type coded struct {
	x   []float32
	y   []float64
	rho float64
}

// measure codes head h's keys (key) or values of test with the klt at
// bpc designed on hc, and the alternatives trained on cal.
func measure(cal, test *kvcache.Trace, hc kvcache.HeadCovariance, h int, key bool, bpc float64, trs []quant.Trellis, gbooks map[tcqKey][]float64) (result, error) {
	d := len(hc.V.Mean)
	if key {
		d = len(hc.K.Mean)
	}
	return measureBytes(cal, test, hc, h, key, quant.KLTBytes(d, bpc), trs, gbooks, true)
}

// measureBytes is measure for a code of bytes bytes; with full false it
// returns the klt coder's error alone.
func measureBytes(cal, test *kvcache.Trace, hc kvcache.HeadCovariance, h int, key bool, bytes int, trs []quant.Trellis, gbooks map[tcqKey][]float64, full bool) (result, error) {
	d := len(hc.K.Mean)
	p, err := hc.Design(key, (bytes-1)*8, 1)
	if err != nil {
		return result{}, err
	}
	var weight []float64 // the keys' metric, as the design weighed them
	if key && hc.Q != nil {
		weight = toF64(hc.Q)
	}
	k, err := quant.NewKLT(p)
	if err != nil {
		return result{}, err
	}
	gauss := map[int][]float64{}
	for _, b := range p.Bits {
		if b > 0 && gauss[int(b)] == nil {
			cb, err := quant.LloydMaxGaussian(int(b), 1)
			if err != nil {
				return result{}, err
			}
			gauss[int(b)] = toF64(cb.Centroids)
		}
	}
	// The error's metric in the KLT basis: keys weigh Δk by Q (Δkᵀ·Q·Δk
	// = Δyᵀ·(T·Q·Tᵀ)·Δy), values by the identity.
	var metric []float64
	if weight != nil {
		metric = make([]float64, d*d)
		tq := make([]float64, d*d) // T·Q
		for i := range d {
			for j := range d {
				var s float64
				for r := range d {
					s += float64(p.Transform[i*d+r]) * weight[r*d+j]
				}
				tq[i*d+j] = s
			}
		}
		for i := range d {
			for j := range d {
				var s float64
				for r := range d {
					s += tq[i*d+r] * float64(p.Transform[j*d+r])
				}
				metric[i*d+j] = s
			}
		}
	}
	vecs := func(tr *kvcache.Trace) []coded {
		sh := tr.Shape
		heads := sh.KVHeads
		src := tr.V
		if key {
			src = tr.K
		}
		var out []coded
		x, rm, ropeMean := make([]float64, d), make([]float64, d), toF64(hc.RopeMean)
		for t := 1; t < tr.Len(); t++ {
			for i, v := range src[(t*heads+h)*d : (t*heads+h+1)*d] {
				x[i] = float64(v)
			}
			if key { // centred on the mean before RoPE, turned to t
				sh.Rope.Rotate(rm, ropeMean, t)
				for i := range x {
					x[i] -= rm[i]
				}
			}
			y := make([]float64, d)
			var mm float64
			nc := 0
			for r := range d {
				var s float64
				for c := range d {
					s += float64(p.Transform[r*d+c]) * x[c]
				}
				y[r] = s - float64(p.Offset[r])
				if p.Bits[r] > 0 {
					z := y[r] / float64(p.Sigma[r])
					mm += z * z
					nc++
				}
			}
			rho := 0.0
			if r := math.Sqrt(mm / float64(max(nc, 1))); r > 0 {
				e := math.Max(1, math.Min(255, math.Round(8*math.Log2(r))+128))
				rho = math.Exp2((e - 128) / 8)
			}
			x32 := make([]float32, d)
			for i, v := range x {
				x32[i] = float32(v)
			}
			out = append(out, coded{x32, y, rho})
		}
		return out
	}
	cv, tv := vecs(cal), vecs(test)
	errOf := func(dy []float64) float64 {
		if metric == nil {
			var s float64
			for _, v := range dy {
				s += v * v
			}
			return s
		}
		var s float64
		for i := range d {
			var r float64
			for j := range d {
				r += metric[i*d+j] * dy[j]
			}
			s += dy[i] * r
		}
		return s
	}
	// total is the mean error of the test vectors coded with book(r) for
	// component r (ascending centroids of the normalised coefficient).
	total := func(book func(r int) []float64) float64 {
		var s float64
		dy := make([]float64, d)
		for _, v := range tv {
			for r := range d {
				dy[r] = v.y[r]
				if p.Bits[r] == 0 || v.rho == 0 {
					continue
				}
				sc := v.rho * float64(p.Sigma[r])
				cb := book(r)
				dy[r] -= cb[nearest(cb, v.y[r]/sc)] * sc
			}
			s += errOf(dy)
		}
		return s / float64(len(tv))
	}
	base := total(func(r int) []float64 { return gauss[int(p.Bits[r])] })
	// The simulation is the coder at each vector's RMS scale byte, where
	// the coder's search for the best byte starts (quant's fitted scale):
	// check that Encode/Decode is no worse, and not far better (the
	// search gains 5-15% of the error on real keys and values).
	if real, err := realError(k, tv, p, errOf); err != nil {
		return result{}, err
	} else if real > base*(1+1e-3) || real < 0.7*base {
		return result{}, fmt.Errorf("simulated error %.6g at the RMS scale byte, the coder's %.6g", base, real)
	}
	if !full {
		return result{err: base}, nil
	}
	norm := func(vs []coded, r int) []float64 {
		zs := make([]float64, 0, len(vs))
		for _, v := range vs {
			if v.rho > 0 {
				zs = append(zs, v.y[r]/(v.rho*float64(p.Sigma[r])))
			}
		}
		return zs
	}
	per := make([][]float64, d)
	byWidth := map[int][]float64{}
	for r := range d {
		if b := int(p.Bits[r]); b > 0 {
			zs := norm(cv, r)
			per[r] = lloyd(zs, gauss[b])
			byWidth[b] = append(byWidth[b], zs...)
		}
	}
	shared := map[int][]float64{}
	for b, zs := range byWidth {
		shared[b] = lloyd(zs, gauss[b])
	}
	books := total(func(r int) []float64 { return per[r] })
	sh := total(func(r int) []float64 { return shared[int(p.Bits[r])] })
	rate := ecsqRate(cv, tv, p, errOf, base)
	res := result{err: base, books: books / base, shared: sh / base,
		ecsq: rate + 8/float64(d), bpc: float64(bytes*8) / float64(d), pred: predictionGain(cv, tv, p)}
	if len(trs) > 0 {
		diag := make([]float64, d)
		for r := range d {
			diag[r] = 1
			if metric != nil {
				diag[r] = metric[r*d+r]
			}
		}
		tc := tcqCoder{p: p, diag: diag, gauss: gauss}
		// First 8 states per run of equal bits, then each trellis along
		// the whole vector.
		cols := []struct {
			tr    quant.Trellis
			whole bool
		}{{trellis8, false}}
		for _, tr := range trs {
			cols = append(cols, struct {
				tr    quant.Trellis
				whole bool
			}{tr, true})
		}
		for _, col := range cols {
			tc.whole = col.whole
			set, err := tc.quantizers(col.tr, gbooks)
			if err != nil {
				return result{}, err
			}
			res.tcq = append(res.tcq, tc.total(tv, set, errOf)/base)
		}
		tc.whole = true
		for _, seq := range tc.seqs() {
			res.runs = append(res.runs, len(seq))
		}
		for _, b := range p.Bits {
			if b > 0 {
				res.scalar++
			}
		}
		for _, n := range res.runs {
			res.scalar -= n
		}
		set, err := tc.quantizers(trs[len(trs)-1], gbooks)
		if err != nil {
			return result{}, err
		}
		tc.train(cv, set, 6)
		res.tcq = append(res.tcq, tc.total(tv, set, errOf)/base)
		// The klt rate of equal error: the scalar coder's error a byte
		// at a time above the format, log-linear between bytes.
		errs := []float64{base}
		for k := 1; k <= 16 && errs[k-1] > base*slices.Min(res.tcq) && bytes+k <= quant.KLTBytes(d, 8); k++ {
			r, err := measureBytes(cal, test, hc, h, key, bytes+k, nil, nil, false)
			if err != nil {
				return result{}, err
			}
			errs = append(errs, r.err)
		}
		for _, ratio := range res.tcq {
			res.tcqBits = append(res.tcqBits, equalRate(errs, base*ratio)*8/float64(d))
		}
	}
	return res, nil
}

// equalRate returns the bytes above the first of errs (the scalar coder's
// error at 0, 1, … bytes more, decreasing) at which the error is target,
// interpolating log-linearly; the last step is extrapolated beyond the
// end.
func equalRate(errs []float64, target float64) float64 {
	if len(errs) < 2 || target >= errs[0] {
		return 0
	}
	k := 1
	for k < len(errs)-1 && errs[k] > target {
		k++
	}
	l0, l1 := math.Log(errs[k-1]), math.Log(errs[k])
	return float64(k-1) + (l0-math.Log(target))/(l0-l1)
}

// realError is the mean error of the test vectors through the coder
// itself (Encode, then Decode), in the basis of p.
func realError(k *quant.KLT, tv []coded, p quant.KLTParams, errOf func([]float64) float64) (float64, error) {
	d := len(p.Sigma)
	code := make([]byte, k.Bytes())
	dec := make([]float32, d)
	dy := make([]float64, d)
	var s float64
	for _, v := range tv {
		x := v.x
		if err := k.Encode(code, x); err != nil {
			return 0, err
		}
		if err := k.Decode(dec, code); err != nil {
			return 0, err
		}
		for r := range d {
			var t float64
			for c := range d {
				t += float64(p.Transform[r*d+c]) * float64(dec[c]-x[c])
			}
			dy[r] = -t
		}
		s += errOf(dy)
	}
	return s / float64(len(tv)), nil
}

// ecsqRate returns the bits per coordinate (indices only) of one uniform
// step on yᵢ/ρ̂ for every coded component, entropy-coded with the
// calibration's counts, at the step whose error on the test vectors is
// target.
func ecsqRate(cv, tv []coded, p quant.KLTParams, errOf func([]float64) float64, target float64) float64 {
	d := len(p.Sigma)
	at := func(step float64) (errMean, bpc float64) {
		counts := make([]map[int]float64, d)
		for r := range d {
			if p.Bits[r] == 0 {
				continue
			}
			counts[r] = map[int]float64{}
			for _, v := range cv {
				if v.rho > 0 {
					counts[r][int(math.Round(v.y[r]/v.rho/step))]++
				}
			}
		}
		dy := make([]float64, d)
		var e, bits float64
		for _, v := range tv {
			for r := range d {
				dy[r] = v.y[r]
				if p.Bits[r] == 0 || v.rho == 0 {
					continue
				}
				q := int(math.Round(v.y[r] / v.rho / step))
				dy[r] -= float64(q) * step * v.rho
				c := counts[r]
				pr := (c[q] + 0.5) / (float64(len(cv)) + 0.5*float64(len(c)+1))
				bits -= math.Log2(pr)
			}
			e += errOf(dy)
		}
		return e / float64(len(tv)), bits / float64(len(tv)) / float64(d)
	}
	lo, hi := 1e-4, 1e2
	var rate float64
	for range 50 {
		step := math.Sqrt(lo * hi)
		e, r := at(step)
		rate = r
		if e > target {
			hi = step
		} else {
			lo = step
		}
	}
	return rate
}

// predictionGain returns the bits per coded component that predicting
// each coefficient from the previous token's (yᵢ − aᵢ·yᵢ', aᵢ fitted on
// the calibration window) would save at high rate on the test window:
// the mean over coded components of ½·log₂(var yᵢ / var residualᵢ),
// negative where the prediction adds error.
func predictionGain(cv, tv []coded, p quant.KLTParams) float64 {
	var sum float64
	n := 0
	for r, b := range p.Bits {
		if b == 0 {
			continue
		}
		var xy, yy float64
		for t := 1; t < len(cv); t++ {
			xy += cv[t].y[r] * cv[t-1].y[r]
			yy += cv[t-1].y[r] * cv[t-1].y[r]
		}
		a := xy / yy
		var v, e, mean float64
		for _, c := range tv {
			mean += c.y[r] / float64(len(tv))
		}
		for t := 1; t < len(tv); t++ {
			dv := tv[t].y[r] - mean
			de := tv[t].y[r] - a*tv[t-1].y[r] - (1-a)*mean
			v += dv * dv
			e += de * de
		}
		sum += 0.5 * math.Log2(v/e)
		n++
	}
	return sum / float64(max(n, 1))
}

// lloyd returns the Lloyd–Max codebook of the samples zs, started from
// init (ascending) and kept ascending.
func lloyd(zs, init []float64) []float64 {
	cb := slices.Clone(init)
	sum, num := make([]float64, len(cb)), make([]float64, len(cb))
	for range 40 {
		clear(sum)
		clear(num)
		for _, z := range zs {
			i := nearest(cb, z)
			sum[i] += z
			num[i]++
		}
		for i := range cb {
			if num[i] > 0 {
				cb[i] = sum[i] / num[i]
			}
		}
		slices.Sort(cb)
	}
	return cb
}

// nearest returns the index of the centroid of cb (ascending) nearest v.
func nearest(cb []float64, v float64) int {
	i, _ := slices.BinarySearch(cb, v)
	switch {
	case i == len(cb):
		return i - 1
	case i > 0 && v-cb[i-1] < cb[i]-v:
		return i - 1
	}
	return i
}

func toF64[T float32 | float64](xs []T) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = float64(x)
	}
	return out
}
