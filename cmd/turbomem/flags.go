package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/wquant"
)

// The flags several commands share are declared here, once.

// modelFlags are the flags of every command that loads a model.
type modelFlags struct {
	model   *string
	threads *int
	// verify is --verify, for the commands that have it (nil: off).
	verify *string
	// verifyCache is --verify-cache (nil: off).
	verifyCache *bool
	// metadataFirst has --verify=lazy compare the metadata before the
	// load rather than beside it (a server, whose start nobody waits on,
	// shows nothing from unchecked metadata).
	metadataFirst bool
}

// addVerifyFlag adds --verify and --verify-cache to the model flags.
func (f *modelFlags) addVerifyFlag(fs *flag.FlagSet) {
	f.verify = fs.String("verify", "lazy", "check a turbomem file's integrity manifest: full (every tensor before loading), lazy (hashed in the background, on one CPU in four, as the model loads and runs; no token is shown before every tensor has passed) or off; files without a manifest load as they are")
	f.verifyCache = fs.Bool("verify-cache", false, "with --verify=lazy, remember in the user's cache directory each file whose check passed (device, inode, size, mtime, ctime, manifest) and skip the hashing while it is unchanged: catches any change made through the file system, not the storage's own bit rot (see the wquant package documentation)")
}

// checkedCache returns the checked cache's directory with --verify-cache,
// "" without.
func (f modelFlags) checkedCache() (string, error) {
	if f.verifyCache == nil || !*f.verifyCache {
		return "", nil
	}
	return wquant.DefaultCheckedCache()
}

// addModelFlags adds -m and --threads (threadsHelp: what more to say of
// them, or "").
func addModelFlags(fs *flag.FlagSet, threadsHelp string) modelFlags {
	return modelFlags{
		model:   modelPathFlag(fs),
		threads: fs.Int("threads", 0, "threads (0: all CPUs)"+threadsHelp),
	}
}

// modelPathFlag adds -m.
func modelPathFlag(fs *flag.FlagSet) *string {
	return fs.String("m", "", "GGUF model file (default: the embedded reference model)")
}

// threadCount returns --threads, all CPUs for 0.
func (f modelFlags) threadCount() int {
	if *f.threads == 0 {
		return numCPU()
	}
	return *f.threads
}

// check checks --threads and --verify.
func (f modelFlags) check() error {
	if *f.threads < 0 || *f.threads > 4096 {
		return usageError{fmt.Errorf("--threads %d out of range [0, 4096]", *f.threads)}
	}
	if f.verify != nil {
		return checkVerify(*f.verify)
	}
	return nil
}

// seedFlag adds --seed; what says what it seeds.
func seedFlag(fs *flag.FlagSet, what string) *uint64 {
	return fs.Uint64("seed", 1, "seed of "+what+" (same seed, same result)")
}

// formatFlag adds the --format flag of the commands that print a table or
// JSON.
func formatFlag(fs *flag.FlagSet) *string {
	return fs.String("format", "table", "output format: table or json")
}

// parseOutputFlags parses args, then checks --format and that every
// output path (the flags' values) can be written, before any work.
func parseOutputFlags(fs *flag.FlagSet, args []string, format *string, outputs ...*string) error {
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkFormat(*format); err != nil {
		return err
	}
	for _, o := range outputs {
		if err := checkOutputs(*o); err != nil {
			return err
		}
	}
	return nil
}

// checkFormat checks a --format value before any work.
func checkFormat(f string) error {
	if f != "table" && f != "json" {
		return usageError{fmt.Errorf("--format %q: want table or json", f)}
	}
	return nil
}

// plotFlag adds --plot; what says what is drawn.
func plotFlag(fs *flag.FlagSet, what string) *string {
	return fs.String("plot", "", "draw "+what+" to this SVG file")
}

// windowFlag adds --kv-window.
func windowFlag(fs *flag.FlagSet) *int {
	return fs.Int("kv-window", 0, fmt.Sprintf("recent tokens kept in fp16 by compressed formats (0: %d; -1: none)", kvcache.DefaultWindow))
}

// candidatesFlag adds --kv-candidates; usage says what chooses among them.
func candidatesFlag(fs *flag.FlagSet, usage string) *string {
	return fs.String("kv-candidates", eval.DefaultKVCandidates, usage+" (f16 is always one)")
}

// calibChunksFlag adds --kv-calib-chunks.
func calibChunksFlag(fs *flag.FlagSet, usage string) *int {
	return fs.Int("kv-calib-chunks", 4, usage)
}

// kvListFlags are the KV flags of the commands that compare several cache
// configurations: a list and the recent window of all.
type kvListFlags struct {
	list   *string
	window *int
}

// addKVListFlags adds --kv (a list, with default def; usage says more)
// and --kv-window.
func addKVListFlags(fs *flag.FlagSet, def, usage string) kvListFlags {
	return kvListFlags{
		list:   fs.String("kv", def, "comma-separated formats (K/V pairs as K:V)"+usage),
		window: windowFlag(fs),
	}
}

// configs parses the list; auto allows auto:B plans.
func (f kvListFlags) configs(auto bool) ([]kvcache.Config, error) {
	return parseKVList(*f.list, *f.window, auto)
}

// checkOutputs checks, before any work, that every non-empty path can be
// written: its directory exists and a file can be made there (a file made
// only for the check is removed again, an existing one left as it is).
// Hours of measuring are not lost to a mistyped --plot directory.
func checkOutputs(paths ...string) error {
	for _, p := range paths {
		if p == "" {
			continue
		}
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return usageError{fmt.Errorf("output %s is a directory", p)}
		}
		_, statErr := os.Stat(p)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			return usageError{fmt.Errorf("output %s cannot be written: %w", p, unwrapPath(err))}
		}
		f.Close()
		if errors.Is(statErr, fs.ErrNotExist) {
			os.Remove(p)
		}
	}
	return nil
}

// createFlagFile creates the file that flag --name names: nil where path
// is empty (closing a nil *os.File only returns an error), a usage error
// where it cannot be made.
func createFlagFile(name, path string) (*os.File, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, usageError{fmt.Errorf("--%s cannot be written: %w", name, err)}
	}
	return f, nil
}

// unwrapPath drops the path from a *fs.PathError (the message names it).
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// parseInts parses a comma-separated list of integers in [lo, hi] for
// flag name; an empty list is none.
func parseInts(name, list string, lo, hi int) ([]int, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(list, ",") {
		var n int
		if _, err := fmt.Sscan(strings.TrimSpace(f), &n); err != nil || n < lo || n > hi || strings.TrimSpace(f) != fmt.Sprint(n) {
			return nil, usageError{fmt.Errorf("%s: %q is not a number in [%d, %d]", name, f, lo, hi)}
		}
		out = append(out, n)
	}
	return out, nil
}
