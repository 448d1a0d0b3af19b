package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/wquant"
)

// progressBar draws a bar on stderr when it is a terminal (nothing
// otherwise): set reports progress, finish removes nothing and waits for
// the last frame.
type progressBar struct {
	p    *mpb.Progress
	b    *mpb.Bar
	last int64
}

// newBar starts a bar of total units named name; bytes shows the
// counters as bytes.
func newBar(e *env, name string, total int64, bytes bool) *progressBar {
	if !isTerminal(e.stderr) {
		return &progressBar{}
	}
	p := mpb.New(mpb.WithOutput(e.stderr), mpb.WithWidth(40))
	counters := decor.CountersNoUnit("%d / %d")
	if bytes {
		counters = decor.CountersKibiByte("% .1f / % .1f")
	}
	b := p.AddBar(total, mpb.PrependDecorators(decor.Name(name+" "), counters), mpb.AppendDecorators(decor.Percentage()))
	return &progressBar{p: p, b: b}
}

// set reports done units.
func (pb *progressBar) set(done int64) {
	if pb.b != nil {
		pb.b.IncrInt64(done - pb.last)
		pb.last = done
	}
}

// finish completes the bar.
func (pb *progressBar) finish() {
	if pb.b != nil {
		pb.b.SetTotal(-1, true)
		pb.p.Wait()
	}
}

func runVerify(e *env, args []string) error {
	fs := newFlagSet(e, "verify", " FILE\n\nChecks a GGUF file written by turbomem against the integrity manifest in its\nmetadata: the manifest's own checksum, every metadata value, the tensor list\nand the SHA-256 of every tensor. Names each key or tensor that differs; exit\nstatus 1 when anything does or the file has no manifest.")
	threads := fs.Int("threads", 0, "tensors hashed at once (0: all CPUs)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{fmt.Errorf("verify needs one file, got %d arguments", len(pos))}
	}
	if *threads < 0 || *threads > 4096 {
		return usageError{fmt.Errorf("--threads %d out of range [0, 4096]", *threads)}
	}
	path := pos[0]
	f, err := gguf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var total int64
	for _, t := range f.Tensors {
		total += t.Size
	}
	start := time.Now()
	bar := newBar(e, "verifying", total, true)
	m, err := wquant.Verify(context.Background(), f, wquant.VerifyOptions{Workers: *threads, Progress: func(done, _ int64) { bar.set(done) }})
	bar.finish()
	if errors.Is(err, wquant.ErrNoManifest) {
		return fmt.Errorf("%s: no integrity manifest (not written by turbomem): nothing to check it against", path)
	}
	if m != nil {
		fmt.Fprintf(e.stdout, "%s: written by %s", path, m.Tool)
		if m.Source != "" {
			fmt.Fprintf(e.stdout, " from a source with SHA-256 %s", m.Source)
		}
		secs := time.Since(start).Seconds()
		fmt.Fprintf(e.stdout, "\n%d metadata keys, %d tensors (%s) checked in %.2f s (%.2f GB/s)\n", len(m.Keys), len(m.Tensors), humanBytes(total), secs, float64(total)/secs/1e9)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "OK: every hash matches the manifest")
	return nil
}

// checkVerify checks a --verify value.
func checkVerify(mode string) error {
	for _, m := range wquant.VerifyModes {
		if mode == m {
			return nil
		}
	}
	return usageError{fmt.Errorf("--verify %q: want full, lazy or off", mode)}
}

// openChecked opens the model at path with the integrity check of --verify
// mode (wquant.OpenModel; metadataFirst: OpenOptions.MetadataFirst; cache:
// OpenOptions.CheckedCache; then, if set: OpenOptions.AfterLoad), a
// progress bar drawn while full verifies; with lazy, checked receives the
// background check's result once every tensor is compared.
func openChecked(e *env, path, mode string, metadataFirst bool, cache string, o model.Options, then func(*model.Model) error) (m *model.Model, checked <-chan error, err error) {
	var bar *progressBar
	defer func() {
		if bar != nil {
			bar.finish()
		}
	}()
	ch := make(chan error, 1)
	m, err = wquant.OpenModel(path, o, wquant.OpenOptions{Verify: mode, MetadataFirst: metadataFirst, CheckedCache: cache, AfterLoad: then,
		Progress: func(done, total int64) {
			if bar == nil {
				bar = newBar(e, "verifying", total, true)
			}
			bar.set(done)
		},
		Checked: func(err error) { ch <- err }})
	if errors.Is(err, wquant.ErrAltered) {
		// The error names the file (OpenModel's errors do).
		return nil, nil, fmt.Errorf("%w (--verify=off loads it anyway)", err)
	}
	if mode == "lazy" {
		checked = ch
	}
	return m, checked, err
}
