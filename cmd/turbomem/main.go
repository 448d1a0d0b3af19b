// Command turbomem runs large language models in a fraction of the memory
// they normally need, and measures what each compression costs.
//
// Usage:
//
//	turbomem <command> [flags]
//
// Run "turbomem --help" for the commands and "turbomem <command> --help"
// for a command's flags.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
)

// exitUsage is the exit code for a bad command line, as with flag.
const exitUsage = 2

// command is one subcommand: its name, one line of help, and the function
// that runs it with the remaining arguments.
type command struct {
	name    string
	summary string
	run     func(env *env, args []string) error
}

// env carries what a command may touch, so that tests run commands in
// process.
type env struct {
	stdout, stderr io.Writer
	in             io.Reader // stdin when nil
}

// usageError marks errors in the command line; they exit with code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// commands is the table of commands. A command whose run is nil has
// subcommands, listed in groups.
func commands() []command {
	return []command{
		{"bench", "measure speed", nil},
		{"inspect", "show a GGUF file's metadata, tensors and memory plan", runInspect},
		{"run", "generate text from a prompt", runRun},
		{"chat", "talk with a model interactively", runChat},
		{"serve", "an OpenAI-compatible HTTP server with memory-budget admission", runServe},
		{"eval", "measure accuracy", nil},
		{"imatrix", "collect a model's importance matrix (mean x² of each weight matrix's inputs)", runIMatrix},
		{"quantize", "write a model's weights in mixed precision chosen by measured sensitivity", runQuantize},
		{"verify", "check a GGUF file against its integrity manifest", runVerify},
		{"version", "print the version", runVersion},
	}
}

// groups lists the subcommands of the commands that have them.
func groups() map[string][]command {
	return map[string][]command{
		"eval": {
			{"ppl", "perplexity on held-out text; KL divergence and top-1 agreement against a reference run", evalPPL},
			{"needle", "needle-in-a-haystack retrieval over context lengths × depths", evalNeedle},
			{"kv", "one row per KV cache format: bits, bytes per token, perplexity, KL, top-1, needle", evalKV},
			{"kvdist", "attention error of each KV format per layer, on the model's K/V/q vs random vectors", evalKVDist},
			{"compact", "KV compaction (attention matching, eviction) at several ratios: needle, multi-fact retrieval, KL, bytes", evalCompact},
		},
		"bench": {
			{"quant", "distortion and speed of the vector quantizers on random unit vectors", benchQuant},
			{"decode", "prompt and decode speed of a model, optionally beside llama.cpp", benchDecode},
			{"kv", "attention-step time and decode speed against context for each KV format, optionally beside llama.cpp", benchKV},
			{"serve", "load test of turbomem serve: concurrent streaming clients, TTFT, tokens/s, 429s, peak RSS, drain", benchServe},
		},
	}
}

func runVersion(e *env, args []string) error {
	fs := newFlagSet(e, "version", "")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "turbomem", version)
	return nil
}

// runGroup runs the subcommand of group name that args start with.
func runGroup(e *env, name string, args []string) (string, error) {
	subs := groups()[name]
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintf(e.stderr, "Usage: turbomem %s <what> [flags]\n\nWhat:\n", name)
		for _, c := range subs {
			fmt.Fprintf(e.stderr, "  %-8s %s\n", c.name, c.summary)
		}
		if len(args) == 0 {
			return name, usageError{fmt.Errorf("%s needs a subject", name)}
		}
		return name, nil
	}
	var names []string
	for _, c := range subs {
		if c.name == args[0] {
			return name + " " + c.name, c.run(e, args[1:])
		}
		names = append(names, c.name)
	}
	return name, usageError{fmt.Errorf("unknown subject %q (want %s)", args[0], strings.Join(names, ", "))}
}

const version = "0.1.0-dev"

func numCPU() int { return runtime.NumCPU() }

// flagErrHelp is flag.ErrHelp, named for commands that parse by hand.
var flagErrHelp = flag.ErrHelp

// svgWriter is a chart or heat map of package plot.
type svgWriter interface{ WriteSVG(io.Writer) error }

// writeSVG writes a chart to path.
func writeSVG(path string, c svgWriter) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := c.WriteSVG(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	return runEnv(&env{stdout: stdout, stderr: stderr}, args)
}

// runEnv is run with an explicit environment.
func runEnv(e *env, args []string) int {
	stderr := e.stderr
	switch {
	case len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help":
		printUsage(e.stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return 0
	case args[0] == "--version" || args[0] == "-version":
		args[0] = "version"
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		name, err := c.name, error(nil)
		if c.run == nil {
			name, err = runGroup(e, c.name, args[1:])
		} else {
			err = c.run(e, args[1:])
		}
		return exitCode(stderr, name, err)
	}
	fmt.Fprintf(stderr, "turbomem: unknown command %q; run 'turbomem --help' for the list\n", args[0])
	return exitUsage
}

// exitCode reports err of command name on stderr and returns the exit
// status: 0 for none (or help), 2 for a bad command line, 1 for a failure
// of the run.
func exitCode(stderr io.Writer, name string, err error) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "turbomem %s: %v\n", name, err)
		return exitUsage
	}
	fmt.Fprintf(stderr, "turbomem %s: %v\n", name, err)
	return 1
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "turbomem runs LLMs in a fraction of the memory, and measures what it costs.")
	fmt.Fprintln(w, "\nUsage: turbomem <command> [flags]\n\nCommands:")
	cs := commands()
	sort.Slice(cs, func(i, j int) bool { return cs[i].name < cs[j].name })
	for _, c := range cs {
		if c.run != nil {
			fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
			continue
		}
		for _, s := range groups()[c.name] {
			fmt.Fprintf(w, "  %-14s %s\n", c.name+" "+s.name, s.summary)
		}
	}
	fmt.Fprintln(w, "\nRun 'turbomem <command> --help' for a command's flags, 'turbomem --version' for the version.")
	fmt.Fprintln(w, "Exit status: 0 done, 1 the run failed, 2 a bad command line.")
}

// newFlagSet returns a flag set that reports errors instead of exiting and
// prints its usage to stderr, headed by usage.
func newFlagSet(e *env, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("turbomem "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: turbomem %s [flags]%s\n\nFlags:\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}

// parseInterleaved parses flags and returns the positional arguments,
// which may come before, between or after the flags ("--" ends the
// flags).
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err}
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// parseFlags parses args, turning flag errors into usage errors and
// rejecting stray positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))}
	}
	return nil
}
