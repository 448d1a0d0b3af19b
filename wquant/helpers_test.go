package wquant

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/internal/tinymodel"
)

// tinyModel writes the tiny random model (tinymodel) and returns its
// path.
func tinyModel(t testing.TB, untied bool) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := tinymodel.Write(path, tinymodel.Options{Untied: untied}); err != nil {
		t.Fatal(err)
	}
	return path
}

// openGGUF opens path and closes it when the test ends.
func openGGUF(t testing.TB, path string) *gguf.File {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// rewrite writes a copy of the GGUF file at path with edit applied to its
// metadata (a nil result drops the key) and returns the copy's path.
func rewrite(t testing.TB, path string, edit func(kv gguf.KV) *gguf.KV) string {
	t.Helper()
	f := openGGUF(t, path)
	b := gguf.NewBuilder()
	for _, kv := range f.KV {
		if e := edit(kv); e != nil {
			if err := b.Set(e.Key, e.Value); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, ti := range f.Tensors {
		d, err := f.ReadTensor(ti)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.AddTensor(ti.Name, ti.Type, ti.Shape, d); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "rewritten.gguf")
	if err := b.WriteFile(out); err != nil {
		t.Fatal(err)
	}
	return out
}

// readBytes returns the bytes of path.
func readBytes(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeBytes writes b to a new file and returns its path.
func writeBytes(t testing.TB, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f.gguf")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
