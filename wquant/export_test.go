package wquant

import (
	"testing"

	"github.com/turbomem/turbomem/gguf"
)

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
