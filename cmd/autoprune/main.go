// Command autoprune trains, inspects, evaluates and prunes neural networks, and searches
// per-layer pruning ratios for a latency or size budget on a target device.
//
// Run "autoprune help" for the list of sub-commands and "autoprune CMD --help" for each.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/autoprune/autoprune/internal/fileio"
)

// Exit codes, in one place.
const (
	exitOK        = 0
	exitFailure   = 1   // the work itself failed (I/O, numerical trouble)
	exitUsage     = 2   // bad command line, config, model file or dataset
	exitInterrupt = 130 // Ctrl-C / SIGTERM
)

// command is one sub-command.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// usageError marks a mistake in what the user gave us (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// asUsage marks err as a user mistake, keeping its message.
func asUsage(err error) error {
	if err == nil {
		return nil
	}
	return usageError{err}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	limitMemory(ctx, 2*time.Second)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		if len(args) > 1 {
			if c, ok := commands[args[1]]; ok {
				return finish(c.run(ctx, []string{"--help"}, stdout, stderr), stderr, ctx)
			}
		}
		printUsage(stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "autoprune: unknown command %q\n\n", args[0])
		printUsage(stderr)
		return exitUsage
	}
	return finish(c.run(ctx, args[1:], stdout, stderr), stderr, ctx)
}

func finish(err error, stderr io.Writer, ctx context.Context) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		fmt.Fprintln(stderr, "autoprune: interrupted")
		return exitInterrupt
	}
	fmt.Fprintf(stderr, "autoprune: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailure
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `autoprune: find a pruned network that meets a latency or size budget on a target device.

Usage:
  autoprune COMMAND [flags] [args]

Commands:
`)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, commands[n].summary)
	}
	fmt.Fprint(w, `
Run "autoprune COMMAND --help" for the flags of a command.
Exit codes: 0 success, 1 failure, 2 bad usage or input, 130 interrupted.
`)
}

// newFlags makes a flag set that prints a teaching usage text and returns errors instead of
// exiting.
func newFlags(name, synopsis, description string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: autoprune %s\n\n%s\n\nFlags:\n", synopsis, strings.TrimSpace(description))
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags, allowing flags after positional arguments, and turns flag errors into
// usage errors.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// writableFile refuses, before any long work, an output file whose folder cannot be
// written (a missing folder included), naming the flag.
func writableFile(what, path string) error {
	dir := filepath.Dir(path)
	if err := fileio.CheckWritable(dir); err != nil {
		return usagef("%s %s: cannot write in folder %s: %v", what, path, dir, err)
	}
	return nil
}

// flagSet tells whether the command line set the named flag, so that an explicit zero is
// told from a flag left out.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// writableDir makes dir if it is missing and checks that files can be written in it, so
// that an output folder is refused before the long work, not after it.
func writableDir(what, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return usagef("%s %s: %v", what, dir, fileio.StripPath(err))
	}
	if err := fileio.CheckWritable(dir); err != nil {
		return usagef("%s %s: cannot write in this folder: %v", what, dir, err)
	}
	return nil
}
