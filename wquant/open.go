package wquant

import (
	"context"
	"errors"
	"fmt"
	"runtime"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/model"
)

// VerifyModes are the integrity checks OpenModel knows.
var VerifyModes = []string{"full", "lazy", "off"}

// OpenOptions configures OpenModel's integrity check.
type OpenOptions struct {
	// Verify is the check: "full", "lazy" or "off" (VerifyModes).
	Verify string
	// Progress, if set, is called as full verifies, with the bytes hashed
	// so far and the total.
	Progress func(done, total int64)
	// Checked, if set, is called once when lazy's background check has
	// compared every tensor, from another goroutine, with nil or the error
	// that names each tensor that differs; not if the model closes first.
	Checked func(err error)
}

// OpenModel opens the model at path, checking the file against its
// integrity manifest as v.Verify says:
//
//   - full verifies every hash before loading (progress, if set, is
//     called with the bytes hashed and the total);
//   - lazy checks the manifest and the metadata now and hashes the
//     tensors in the background (Manifest.Start), in the order the model
//     first uses them, on one goroutine per CPU that yield to the model's
//     (Background), while it loads, runs and waits for requests. The
//     model computes on the weights as they are checked and holds back
//     its output (model.Options.Settled): each Forward returns only once
//     every tensor has passed, and fails, naming each tensor that
//     differs, if one has not. Sessions whose callbacks see values inside
//     a step (captures, observers), and files that are not memory-mapped,
//     wait instead at each tensor's first use for its own hash;
//   - off checks nothing.
//
// A file without a manifest loads as it is. Either check hashes the
// memory mapping the model reads; Close stops the background and closes
// the file. An error from a check wraps ErrAltered.
func OpenModel(path string, o model.Options, v OpenOptions) (*model.Model, error) {
	mode := v.Verify
	switch mode {
	case "off":
		return model.Open(path, o)
	case "full", "lazy":
	default:
		return nil, fmt.Errorf("wquant: verify mode %q: want full, lazy or off", mode)
	}
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	stop := func() {}
	fail := func(err error) (*model.Model, error) {
		stop()
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if mode == "full" {
		if _, err := Verify(context.Background(), f, VerifyOptions{Progress: v.Progress}); err != nil && !errors.Is(err, ErrNoManifest) {
			return fail(err)
		}
	} else {
		m, err := ReadManifest(f)
		switch {
		case errors.Is(err, ErrNoManifest):
		case err != nil:
			return fail(err)
		default:
			if err := m.CheckMetadata(f); err != nil {
				return fail(err)
			}
			bg := m.Start(f, BackgroundOptions{Workers: runtime.NumCPU()})
			o.FirstUse, stop = bg.Check, bg.Stop
			if f.Mapped() {
				o.Settled = bg.Settled
			}
			if v.Checked != nil {
				go func() {
					if err := bg.Wait(); !errors.Is(err, ErrStopped) {
						v.Checked(err)
					}
				}()
			}
		}
	}
	then := o.OnClose
	o.OnClose = func() {
		stop()
		f.Close()
		if then != nil {
			then()
		}
	}
	mod, err := model.New(f, o)
	if err != nil {
		return fail(err)
	}
	return mod, nil
}
