package main

import (
	"context"
	"fmt"
	"time"

	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/wquant"
)

func runIMatrix(e *env, args []string) error {
	fs := newFlagSet(e, "imatrix", "\n\nRuns the model over calibration text and writes its importance matrix: per\nweight matrix, the mean of x² of each input column (llama.cpp's definition),\nas a GGUF file in llama.cpp's imatrix layout (llama-quantize reads it) sealed\nwith an integrity manifest. turbomem quantize --imatrix reads it, and\nllama.cpp's imatrix files too.")
	mf := addModelFlags(fs, "")
	out := fs.String("o", "imatrix.dat", "output file")
	calib := fs.String("calib", "", "calibration text (default: the embedded held-out text; windows from its end)")
	ctxLen := fs.Int("ctx", 512, "window length in tokens")
	chunks := fs.Int("chunks", 8, "windows, taken from the end of the text (0: the whole text)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := mf.check(); err != nil {
		return err
	}
	if *ctxLen < 2 || *chunks < 0 {
		return usageError{fmt.Errorf("--ctx %d / --chunks %d out of range (≥ 2, ≥ 0)", *ctxLen, *chunks)}
	}
	if err := checkOutputs(*out); err != nil {
		return err
	}
	text, err := readText(*calib)
	if err != nil {
		return err
	}
	l, err := mf.load(e)
	if err != nil {
		return err
	}
	defer l.m.Close()
	sha, err := eval.ModelSHA256(*mf.model)
	if err != nil {
		return err
	}
	ids := l.tok.Encode(text, true)
	if need := *ctxLen * *chunks; *chunks > 0 && len(ids) > need {
		ids = ids[len(ids)-need:]
	}
	dataset := *calib
	if dataset == "" {
		dataset = "embedded held-out text"
	}
	n := len(ids) / *ctxLen
	fmt.Fprintf(e.stderr, "collecting the importance matrix over %d windows of %d tokens\n", n, *ctxLen)
	bar := newBar(e, "windows", int64(n), false)
	start := time.Now()
	im, err := wquant.CollectIMatrix(context.Background(), l.m, ids, l.tok.BOS(), wquant.CollectOptions{
		Ctx: *ctxLen, Dataset: dataset, Progress: func(done, _ int) { bar.set(int64(done)) }})
	bar.finish()
	if err != nil {
		return err
	}
	if err := im.WriteFile(*out, "turbomem "+version, sha); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s: %d matrices, %d windows of %d tokens, %.1f s\n", *out, len(im.Entries), im.Chunks, im.ChunkSize, time.Since(start).Seconds())
	return nil
}
