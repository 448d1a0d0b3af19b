package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tensor"
	"github.com/turbomem/turbomem/wquant"
)

func runQuantize(e *env, args []string) error {
	flags := newFlagSet(e, "quantize", " IN.gguf OUT.gguf\n\nWrites IN's weights in mixed precision: each weight matrix gets the type its\nmeasured sensitivity deserves (the mean KL of the next-token distributions\nwhen only it is quantized, on calibration text) within --bpw or --size, or\nllama.cpp's fixed --recipe. The plan is printed and saved (checksummed), the\noutput is an ordinary GGUF file that llama.cpp loads, sealed with an integrity\nmanifest (turbomem verify). IN should be F32, F16 or BF16; a quantized IN\nworks but its error adds to ours.")
	bpw := flags.Float64("bpw", 0, "bits per weight over all tensors (llama.cpp's figure)")
	size := flags.Int64("size", 0, "bytes of tensor data (the file adds its metadata)")
	sizeOf := flags.String("size-of", "", "as many bytes of tensor data as this GGUF file holds (another quantization of the model, e.g. llama.cpp's Q4_K_M)")
	recipe := flags.String("recipe", "", "llama.cpp's fixed recipe instead of measuring: "+strings.Join(wquant.Recipes(), ", "))
	imPath := flags.String("imatrix", "", "importance matrix (turbomem imatrix, or llama.cpp's imatrix file)")
	typeList := flags.String("types", typeNames(eval.DefaultWeightTypes), "candidate types (each tensor may also keep its own)")
	planPath := flags.String("plan", "", "plan file: used when it exists (allocated again for --bpw/--size), else the plan made is saved there (default: OUT with .plan.json)")
	calib := flags.String("calib", "", "calibration text (default: the embedded held-out text; windows from its end)")
	calibCtx := flags.Int("calib-ctx", 512, "calibration window length in tokens")
	calibChunks := flags.Int("calib-chunks", 4, "calibration windows, from the end of the text")
	threads := flags.Int("threads", 0, "threads (0: all CPUs)")
	pos, err := parseInterleaved(flags, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usageError{fmt.Errorf("quantize needs IN.gguf and OUT.gguf, got %d arguments", len(pos))}
	}
	in, out := pos[0], pos[1]
	types, err := parseTypes(*typeList)
	if err != nil {
		return err
	}
	set := 0
	for _, b := range []bool{*bpw != 0, *size != 0, *sizeOf != "", *recipe != ""} {
		if b {
			set++
		}
	}
	planExists := false
	if *planPath != "" {
		_, err := os.Stat(*planPath)
		planExists = err == nil
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	switch {
	case set > 1:
		return usageError{errors.New("give one of --bpw, --size, --size-of and --recipe")}
	case set == 0 && !planExists:
		return usageError{errors.New("give --bpw, --size, --size-of or --recipe (or an existing --plan)")}
	case *recipe != "" && planExists:
		return usageError{errors.New("--recipe and an existing --plan both choose the types: give one")}
	case *bpw < 0 || *bpw > 32 || *size < 0:
		return usageError{fmt.Errorf("--bpw %g / --size %d out of range", *bpw, *size)}
	case *calibCtx < 4 || *calibChunks < 1 || *threads < 0 || *threads > 4096:
		return usageError{fmt.Errorf("--calib-ctx %d, --calib-chunks %d or --threads %d out of range", *calibCtx, *calibChunks, *threads)}
	}
	if *recipe != "" && !slices.Contains(wquant.Recipes(), *recipe) {
		return usageError{fmt.Errorf("--recipe %q: want one of %s", *recipe, strings.Join(wquant.Recipes(), ", "))}
	}
	if *sizeOf != "" {
		if *size, err = tensorBytes(*sizeOf); err != nil {
			return err
		}
	}
	saveTo := *planPath
	if saveTo == "" || planExists {
		saveTo = strings.TrimSuffix(out, ".gguf") + ".plan.json"
	}
	if err := checkOutputs(out, saveTo); err != nil {
		return err
	}

	src, err := gguf.Open(in)
	if err != nil {
		return err
	}
	defer src.Close()
	sha, err := eval.ModelSHA256(in)
	if err != nil {
		return err
	}
	warnQuantized(e, src)
	var im *wquant.IMatrix
	if *imPath != "" {
		if im, err = wquant.ReadIMatrixFile(*imPath); err != nil {
			return err
		}
		describeIMatrix(e, im, src)
	}
	q := wquant.NewQuantizer(src, im, *threads)
	start := time.Now()
	var plan *wquant.Plan
	switch {
	case *recipe != "":
		plan, err = wquant.Recipe(src, sha, *recipe)
	default:
		plan, err = measuredPlan(e, src, q, sha, *bpw, *size, types, *planPath, *calib, *calibCtx, *calibChunks, *threads)
	}
	if err != nil {
		return err
	}
	fmt.Fprint(e.stdout, plan.Describe())
	if saveTo != *planPath || !planExists {
		if err := eval.SaveFile(saveTo, plan); err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "plan saved to %s\n", saveTo)
	}
	var srcBytes int64
	for _, t := range src.Tensors {
		srcBytes += t.Size
	}
	bar := newBar(e, "quantizing", srcBytes, true)
	err = q.Write(context.Background(), out, plan, wquant.WriteOptions{Tool: "turbomem " + version, SourceSHA256: sha,
		FileType: fileType(plan), Progress: func(_ string, done, _ int64) { bar.set(done) }})
	bar.finish()
	if err != nil {
		return err
	}
	st, err := os.Stat(out)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s: %s, %.3f bits per weight, %.1f s\n", out, humanBytes(st.Size()), plan.BPW(), time.Since(start).Seconds())
	return nil
}

// tensorBytes returns the bytes of tensor data in the GGUF file at path.
func tensorBytes(path string) (int64, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	for _, t := range f.Tensors {
		n += t.Size
	}
	if n == 0 {
		return 0, fmt.Errorf("%s: no tensor data", path)
	}
	return n, nil
}

// typeNames returns the types as a --types list.
func typeNames(types []tensor.DType) string {
	names := make([]string, len(types))
	for i, t := range types {
		names[i] = t.String()
	}
	return strings.Join(names, ",")
}

// parseTypes parses the --types list.
func parseTypes(list string) ([]tensor.DType, error) {
	var out []tensor.DType
	for _, name := range strings.Split(list, ",") {
		t, err := tensor.ParseDType(strings.ToUpper(strings.TrimSpace(name)))
		if err != nil || !(tensor.CanQuantize(t) || t == tensor.F16 || t == tensor.BF16) || !tensor.CanMatVec(t) {
			return nil, usageError{fmt.Errorf("--types: %q is not a type turbomem writes and runs", name)}
		}
		out = append(out, t)
	}
	return out, nil
}

// warnQuantized warns when the source's weight matrices are already
// quantized.
func warnQuantized(e *env, src *gguf.File) {
	seen := map[tensor.DType]bool{}
	for _, t := range src.Tensors {
		if wquant.Quantizable(t) && t.Type != tensor.F32 && t.Type != tensor.F16 && t.Type != tensor.BF16 {
			seen[t.Type] = true
		}
	}
	if len(seen) == 0 {
		return
	}
	var names []string
	for t := range seen {
		names = append(names, t.String())
	}
	fmt.Fprintf(e.stderr, "warning: the source's weights are already quantized (%s): their error adds to ours; quantize from F16/F32 weights when you have them\n", strings.Join(names, ", "))
}

// describeIMatrix says what the importance matrix covers.
func describeIMatrix(e *env, im *wquant.IMatrix, src *gguf.File) {
	used, unused := 0, 0
	for _, name := range im.Names() {
		if t, ok := src.Tensor(name); ok && len(im.Importance(name)) == int(t.Shape[0]) {
			used++
		} else {
			unused++
		}
	}
	check := "manifest checked"
	if !im.Checked {
		check = "no checksum to check (llama.cpp's format)"
	}
	fmt.Fprintf(e.stderr, "imatrix: %d entries for this model's matrices, %d others; %d windows; %s\n", used, unused, im.Chunks, check)
}

// measuredPlan returns the plan of --plan (allocated again for a new
// budget) or one measured on the calibration text.
func measuredPlan(e *env, src *gguf.File, q *wquant.Quantizer, sha string, bpw float64, size int64, types []tensor.DType, planPath, calib string, calibCtx, calibChunks, threads int) (*wquant.Plan, error) {
	budget := size
	if bpw > 0 {
		var err error
		if budget, err = wquant.BudgetForBPW(src, bpw); err != nil {
			return nil, usageError{err}
		}
	}
	m, err := model.New(src, model.Options{Threads: threads})
	if err != nil {
		return nil, err
	}
	tok, err := model.LoadTokenizer(src)
	if err != nil {
		return nil, err
	}
	text, err := readText(calib)
	if err != nil {
		return nil, err
	}
	var bar *progressBar
	o := eval.WeightPlanOptions{Source: sha, File: planPath, Budget: budget, Types: types, CalibCtx: calibCtx, CalibChunks: calibChunks,
		Log: func(msg string) { fmt.Fprintln(e.stderr, msg) },
		Progress: func(done, total int) {
			if bar == nil {
				bar = newBar(e, "measuring", int64(total), false)
			}
			bar.set(int64(done))
		}}
	p, err := eval.PlanWeights(context.Background(), m, src, q, tok.Encode(text, true), tok.BOS(), o)
	if bar != nil {
		bar.finish()
	}
	return p, err
}

// fileType returns the llama.cpp file type to record: the recipe's, or
// that of the type holding the most weights.
func fileType(p *wquant.Plan) uint32 {
	if p.Recipe != "" {
		return wquant.RecipeFileType(p.Recipe)
	}
	weights := map[tensor.DType]int64{}
	for _, c := range p.Tensors {
		weights[c.Type] += c.Elements
	}
	var most tensor.DType
	for t, n := range weights {
		if n > weights[most] || n == weights[most] && t < most {
			most = t
		}
	}
	// LLAMA_FTYPE_* of a file mostly in that type (llama.h).
	return map[tensor.DType]uint32{tensor.F32: 0, tensor.F16: 1, tensor.Q4_0: 2, tensor.Q8_0: 7, tensor.Q2_K: 10,
		tensor.Q3_K: 11, tensor.Q4_K: 14, tensor.Q5_K: 16, tensor.Q6_K: 18, tensor.BF16: 32, tensor.TQ1_0: 36, tensor.TQ2_0: 37}[most]
}
