// Package suite locates the model suite: GGUF models with other shapes
// than the embedded one (a larger GQA model, a multi-head-attention model
// with head dimension 64, a Qwen2-style model with Q/K/V biases), trained
// by tools/train (see its README.md) and kept outside git, so that claims
// about KV formats can be checked on models they were not tuned on.
package suite

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Names lists the suite's files (without the .gguf suffix), largest first.
var Names = []string{"suite-large", "suite-mha64", "suite-qwen2"}

// EnvDir names the environment variable that overrides Dir.
const EnvDir = "TURBOMEM_SUITE"

// Dir returns the folder that holds the suite's files: $TURBOMEM_SUITE if
// set, else .models in the first folder upward from the working
// directory that holds go.mod (the repository root), else ".models".
func Dir() string {
	if d := os.Getenv(EnvDir); d != "" {
		return d
	}
	wd, err := os.Getwd()
	if err != nil {
		return ".models"
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, ".models")
		}
		if filepath.Dir(d) == d {
			return ".models"
		}
	}
}

// Path returns the file of the suite model name (one of Names) and
// whether it exists.
func Path(name string) (string, bool) {
	p := filepath.Join(Dir(), name+".gguf")
	st, err := os.Stat(p)
	return p, err == nil && st.Mode().IsRegular()
}

// Default names the embedded reference model in a model list (Resolve).
const Default = "default"

// Resolve returns the model file an entry of a model list names, and
// whether it is there to load: Default is the embedded model (path "",
// always there); a suite model by its name ("suite-large") or without the
// prefix ("large", "mha64", "qwen2") is its file in Dir; anything else is
// a path to a GGUF file, as given.
func Resolve(entry string) (path string, ok bool) {
	if entry == Default {
		return "", true
	}
	for _, n := range Names {
		if entry == n || "suite-"+entry == n {
			return Path(n)
		}
	}
	st, err := os.Stat(entry)
	return entry, err == nil && st.Mode().IsRegular()
}

// Absent says that the model file at path is not there and, for a file
// of the suite, how to make it.
func Absent(path string) string {
	if slices.Contains(Names, strings.TrimSuffix(filepath.Base(path), ".gguf")) {
		return fmt.Sprintf("%s absent (set %s or build it: tools/train/README.md, \"Rebuilding the suite\")", path, EnvDir)
	}
	return fmt.Sprintf("%s absent (no such file)", path)
}
