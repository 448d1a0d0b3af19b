package wquant

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

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
	// MetadataFirst has lazy compare the metadata and tensor directory
	// before loading, as full does, instead of beside the load: for a
	// caller that shows values from the metadata (a model's name) before
	// its first output.
	MetadataFirst bool
	// Checked, if set, is called once when lazy's background check has
	// compared the metadata and every tensor, from another goroutine, with
	// nil or the error that names each key and tensor that differs; not if
	// the model closes first.
	Checked func(err error)
	// CheckedCache, if set, is a directory where lazy remembers each file
	// whose complete check passed, by its identity (device, inode, size,
	// and modification and status-change times in nanoseconds) and its
	// manifest's SHA-256, and skips the check of a file it remembers
	// unchanged (Checked is then called with nil at once). It covers
	// changes made through the file system, not damage that bypasses it
	// (the storage's own bit rot): see DefaultCheckedCache. Full ignores
	// it; so does lazy where the system does not say a file's identity
	// (only Linux does here).
	CheckedCache string
	// AfterLoad, if set, is called with the model once it has loaded, for
	// a step of the open that reads the file's metadata (a tokenizer's
	// load). Its error fails the open (the model closed), replaced, as a
	// failed load's is, by what lazy's comparison of the metadata found
	// if that differs: lazy compares the metadata beside the load, so a
	// value the step trips on may be one that was altered.
	AfterLoad func(m *model.Model) error

	racyMargin time.Duration // for tests: checkedRacyMargin if 0
}

// OpenModel opens the model at path, checking the file against its
// integrity manifest as v.Verify says:
//
//   - full verifies every hash before loading (progress, if set, is
//     called with the bytes hashed and the total);
//   - lazy reads the manifest now, and compares the manifest's own
//     checksum and the metadata and hashes the tensors in the background
//     (Manifest.Start with BackgroundOptions.Metadata), the metadata
//     first and then the tensors in the order the model first uses them,
//     on one goroutine per four CPUs (at least one, LazyWorkers) that
//     yield to the model's (Background), while it loads, runs and waits
//     for requests. The model computes on the weights as they are
//     checked and holds back its output (model.Options.Settled): each
//     Forward returns only once the metadata and every tensor have
//     passed, and fails, naming each key and tensor that differs, if one
//     has not. The vectors the load reads (norm weights), which
//     model.Options.FirstUse would check as they load, are checked once
//     model.New has returned, before OpenModel returns (the background
//     hashes them first): one that differs fails the open. A load that
//     fails (on altered metadata, say), or v.AfterLoad's step, reports
//     what the metadata comparison found if it differs. Sessions whose
//     callbacks see values inside a step (captures, observers) wait
//     instead at each tensor's first use for the metadata and its own
//     hash; files that are not memory-mapped compare the metadata
//     before loading (as v.MetadataFirst has any file do) and wait at
//     each first use;
//   - off checks nothing.
//
// A file without a manifest loads as it is. Either check hashes the
// memory mapping the model reads; Close stops the background and closes
// the file. An error from a check wraps ErrAltered.
func OpenModel(path string, o model.Options, v OpenOptions) (*model.Model, error) {
	mode := v.Verify
	switch mode {
	case "off":
		mod, err := model.Open(path, o)
		if err == nil && v.AfterLoad != nil {
			if err = v.AfterLoad(mod); err != nil {
				mod.Close()
				return nil, fmt.Errorf("%s: %w", path, err)
			}
		}
		return mod, err
	case "full", "lazy":
	default:
		return nil, fmt.Errorf("wquant: verify mode %q: want full, lazy or off", mode)
	}
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	// The checked cache (CheckedCache) knows a file by the identity of
	// what was opened, as the open found it (gguf.File.Info).
	var id fileID
	remember := mode == "lazy" && v.CheckedCache != "" && f.Mapped()
	if remember {
		id, err = infoID(f.Info())
		remember = err == nil
	}
	stop := func() {}
	var bg *Background                    // lazy's check, if the file has a manifest
	loaded := func() error { return nil } // its check of what the load read
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
		// The manifest's own checksum is compared with the metadata
		// (CheckMetadata), beside the load where that is.
		m, err := readManifest(f, false)
		switch {
		case errors.Is(err, ErrNoManifest):
		case err != nil:
			return fail(err)
		default:
			if remember {
				id.manifest, err = f.String(keySelf)
				remember = err == nil
				if remember && isChecked(v.CheckedCache, id) {
					if v.Checked != nil {
						go v.Checked(nil)
					}
					break // checked before, and unchanged since
				}
			}
			began := time.Now()
			if bg, loaded, err = startLazy(f, m, &o, v); err != nil {
				return fail(err)
			}
			stop = bg.Stop
			if !remember && v.Checked == nil {
				break
			}
			// Once the check is complete: remember a file that passed
			// (CheckedCache) and report (Checked). Stop waits for the
			// first, not for the report.
			recorded := make(chan struct{})
			stop = func() {
				bg.Stop()
				<-recorded
			}
			go func() {
				err := bg.Wait()
				if err == nil && remember && sameFile(path, id) {
					if rerr := rememberChecked(v.CheckedCache, id, began, cmp.Or(v.racyMargin, checkedRacyMargin)); rerr != nil {
						slog.Debug("wquant: the checked cache", "file", path, "err", rerr)
					}
				}
				close(recorded)
				if v.Checked != nil && !errors.Is(err, ErrStopped) {
					v.Checked(err)
				}
			}()
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
	if verr := loaded(); verr != nil {
		err = verr // what the load read was altered
	}
	if err == nil && v.AfterLoad != nil {
		err = v.AfterLoad(mod)
	}
	if err != nil && bg != nil {
		if merr := bg.Metadata(); merr != nil {
			err = merr // the metadata (or the manifest itself) was
		}
	}
	switch {
	case err == nil:
		return mod, nil
	case mod != nil:
		mod.Close() // stops the check, closes the file
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return fail(err)
}

// startLazy starts lazy's check of f against m (the metadata compared
// before it returns if f is not mapped or v.MetadataFirst), setting o's
// FirstUse and Settled to it. The tensors the load reads (the vectors)
// are checked not as they load but by loaded, which the caller calls
// once model.New has returned: the background hashes them first (a few
// KB a layer), so the loader seldom has any left to hash, and until
// loaded has returned nothing is shown. loaded returns the first
// vector's error; from then on each tensor's first use waits for the
// metadata too (a session that sees values inside a step).
func startLazy(f *gguf.File, m *Manifest, o *model.Options, v OpenOptions) (bg *Background, loaded func() error, err error) {
	beside := f.Mapped() && !v.MetadataFirst // the metadata compared beside the load
	if !beside {
		if err := m.CheckMetadata(f); err != nil {
			return nil, nil, err
		}
	}
	// One hasher per four CPUs: the load (open, tokenizer, page-in) is
	// serial and leaves the others idle, and fewer hashers disturb it and
	// the prompt's workers less. On the 16-core Xeon (BENCHMARKS.md,
	// "Lazy's hashers on 16 cores") four hashers cost the embedded
	// model's first token 1.4-1.7% at 16 threads where fifteen cost
	// 2.5-4.6%, and still finish before the prompt does.
	bg = m.Start(f, BackgroundOptions{Workers: LazyWorkers(runtime.NumCPU()), Metadata: beside})
	type use struct {
		t    gguf.TensorInfo
		data []byte
	}
	var (
		mu   sync.Mutex
		done bool  // loaded has been called
		read []use // what the load read, checked by loaded
	)
	o.FirstUse = func(t gguf.TensorInfo, data []byte) error {
		mu.Lock()
		if !done {
			read = append(read, use{t, data})
			mu.Unlock()
			return nil
		}
		mu.Unlock()
		if err := bg.Metadata(); err != nil {
			return err
		}
		return bg.Check(t, data)
	}
	loaded = func() error {
		mu.Lock()
		done = true
		mu.Unlock()
		for _, u := range read {
			if err := bg.Check(u.t, u.data); err != nil {
				return err
			}
		}
		return nil
	}
	if f.Mapped() {
		o.Settled = bg.Settled
	}
	return bg, loaded, nil
}

// sameFile reports whether the file at path has identity id (its
// manifest aside).
func sameFile(path string, id fileID) bool {
	now, err := statID(path)
	now.manifest = id.manifest
	return err == nil && now == id
}

// LazyWorkers returns how many background hashers a lazy check runs on a
// machine of cpus CPUs: one per four, at least one.
func LazyWorkers(cpus int) int { return max(cpus/4, 1) }
