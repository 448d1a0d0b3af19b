package wquant

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/model"
)

// LazyVariants are the ways of scheduling lazy's background hashers that
// OpenModelVariant knows, for an A/B in BenchmarkFirstTokenLazy: "" is
// OpenModel's own; "direct" starts every hasher from the loader (as
// before the first hasher started the others); "noyield" never yields
// the CPU; "populate" maps each job's pages in one madvise before
// hashing them; "cores" runs one hasher per physical core but one (SMT
// siblings counted once); "all" one per CPU but one (the default before
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
var LazyVariants = []string{"", "direct", "noyield", "populate", "cores", "all", "half", "yield16k", "yield256k", "nopreempt", "pread", "pread-fadvise"}

// OpenModelVariant is OpenModel whose lazy check schedules its hashers as
// variant (one of LazyVariants) says.
func OpenModelVariant(path string, o model.Options, v OpenOptions, variant string) (*model.Model, error) {
	var tune func(*BackgroundOptions)
	switch variant {
	case "":
	case "direct":
		tune = func(bo *BackgroundOptions) { bo.v.direct = true }
	case "noyield":
		tune = func(bo *BackgroundOptions) { bo.v.noYield = true }
	case "populate":
		tune = func(bo *BackgroundOptions) { bo.v.populate = true }
	case "cores":
		tune = func(bo *BackgroundOptions) { bo.Workers = max(physicalCores()-1, 1) }
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

// physicalCores returns the number of CPUs this process may use counting
// SMT siblings once, from Linux's sysfs (runtime.NumCPU where it cannot
// tell): the CPUs' distinct sibling lists, scaled to the CPUs the process
// may use.
func physicalCores() int {
	lists, _ := filepath.Glob("/sys/devices/system/cpu/cpu[0-9]*/topology/thread_siblings_list")
	cores := map[string]bool{}
	for _, l := range lists {
		if b, err := os.ReadFile(l); err == nil {
			cores[string(b)] = true
		}
	}
	n := runtime.NumCPU()
	if len(cores) == 0 || len(lists) < n {
		return n
	}
	return max(n*len(cores)/len(lists), 1)
}

// TestPhysicalCores: between one and every CPU.
func TestPhysicalCores(t *testing.T) {
	if n := physicalCores(); n < 1 || n > runtime.NumCPU() {
		t.Errorf("physicalCores() = %d, want 1..%d", n, runtime.NumCPU())
	}
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
