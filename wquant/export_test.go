package wquant

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/model"
)

// LazyVariants are the ways of scheduling lazy's background hashers that
// OpenModelVariant knows, for an A/B in BenchmarkFirstTokenLazy: "" is
// OpenModel's own; "all" runs one hasher per CPU but one (the default before
// the 16-core A/B; OpenModel's own is one per four CPUs, LazyWorkers);
// "half" one per two CPUs; "yield16k" and "yield256k" yield every 16 or
// 256 KiB instead of every YieldEvery (64 KiB): how long a stop of the world (a garbage
// collection's start and end) may wait for a hasher against how often
// the hashers enter the scheduler; "nopreempt" lets a stop of the world
// stop a hasher only where it yields (every 64 KiB; lazy: every
// PreemptEvery, 16 KiB, at a function call); "pread" has each hasher
// read its pieces through a descriptor of its own (the file opened again
// by its path, checked to be the mapped one: gguf.File.Info) with pread
// into buffers of its own instead of reading the mapping the loader pages
// in, so that the hashers' page faults do not contend with the loader's;
// "pread-fadvise" is pread with the descriptors advised sequential
// (POSIX_FADV_SEQUENTIAL).
var LazyVariants = []string{"", "all", "half", "yield16k", "yield256k", "nopreempt", "pread", "pread-fadvise"}

// OpenModelVariant is OpenModel whose lazy check schedules its hashers as
// variant (one of LazyVariants) says.
func OpenModelVariant(path string, o model.Options, v OpenOptions, variant string) (*model.Model, error) {
	var tune func(*BackgroundOptions)
	switch variant {
	case "":
	case "half":
		tune = func(bo *BackgroundOptions) { bo.Workers = max(runtime.NumCPU()/2, 1) }
	case "nopreempt":
		tune = func(bo *BackgroundOptions) { bo.v.noPreempt = true }
	case "yield16k":
		tune = func(bo *BackgroundOptions) { bo.v.every = 16 << 10 }
	case "yield256k":
		tune = func(bo *BackgroundOptions) { bo.v.every = 256 << 10 }
	case "all":
		tune = func(bo *BackgroundOptions) { bo.Workers = max(runtime.NumCPU()-1, 1) }
	case "pread", "pread-fadvise":
		tune = func(bo *BackgroundOptions) { bo.v.pread, bo.v.fadvise = path, variant == "pread-fadvise" }
	default:
		return nil, fmt.Errorf("lazy variant %q: want one of %q", variant, LazyVariants)
	}
	return openModel(path, o, v, tune)
}

// ReadManifestUnchecked is ReadManifest without the check against the
// manifest's own SHA-256, as lazy reads it (CheckMetadata makes that
// check, beside the load).
func ReadManifestUnchecked(f *gguf.File) (*Manifest, error) { return readManifest(f, false) }

// TestLazyWorkers: one hasher per four CPUs, never none.
func TestLazyWorkers(t *testing.T) {
	for _, c := range []struct{ cpus, want int }{{1, 1}, {2, 1}, {4, 1}, {7, 1}, {8, 2}, {16, 4}, {64, 16}} {
		if got := LazyWorkers(c.cpus); got != c.want {
			t.Errorf("LazyWorkers(%d) = %d, want %d", c.cpus, got, c.want)
		}
	}
}
