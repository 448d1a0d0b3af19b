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

func commands() []command {
	return []command{
		{"bench", "measure speed and accuracy (bench quant|decode)", runBench},
		{"inspect", "show a GGUF file's metadata, tensors and memory plan", runInspect},
		{"run", "generate text from a prompt", runRun},
		{"chat", "talk with a model interactively", runChat},
		{"eval", "measure accuracy (eval ppl|needle)", runEval},
		{"version", "print the version", func(e *env, args []string) error {
			fs := newFlagSet(e, "version", "")
			if err := parseFlags(fs, args); err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, "turbomem", version)
			return nil
		}},
	}
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
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(e.stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(e, args[1:])
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.As(err, new(usageError)):
			fmt.Fprintf(stderr, "turbomem %s: %v\n", c.name, err)
			return exitUsage
		default:
			fmt.Fprintf(stderr, "turbomem %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "turbomem: unknown command %q; run 'turbomem --help' for the list\n", args[0])
	return exitUsage
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "turbomem runs LLMs in a fraction of the memory, and measures what it costs.")
	fmt.Fprintln(w, "\nUsage: turbomem <command> [flags]\n\nCommands:")
	cs := commands()
	sort.Slice(cs, func(i, j int) bool { return cs[i].name < cs[j].name })
	for _, c := range cs {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'turbomem <command> --help' for a command's flags.")
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
