// Package fileio holds the file handling that model files, ONNX files, plans and data
// share: atomic writes, checks that outputs can be written, and path-free error messages.
package fileio

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// StripPath drops the path from an fs.PathError ("open: permission denied"), for callers
// whose message names the file already.
func StripPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

// CheckWritable tells, by creating and removing a file there, whether files can be
// written in dir: outputs are checked before long work, not after it. Errors do not
// repeat the path.
func CheckWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".autoprune-write-check-*")
	if err != nil {
		return StripPath(err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// WriteAtomic writes path with write: into a temporary file in the same folder, synced and
// renamed over path, so that path never holds a partial file and an existing file is
// replaced only on success. A replaced file keeps its permissions; a new one gets 0644.
// Errors do not repeat the path.
func WriteAtomic(path string, write func(w io.Writer) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if base == "" {
		return errors.New("no file name")
	}
	mode := fs.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		if !fi.Mode().IsRegular() {
			return errors.New("exists and is not a regular file")
		}
		mode = fi.Mode().Perm()
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return StripPath(err)
	}
	tmp := f.Name()
	closed := false
	defer func() {
		if err != nil {
			if !closed {
				f.Close()
			}
			os.Remove(tmp)
		}
	}()
	if err := write(f); err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil {
		return StripPath(err)
	}
	if err := f.Sync(); err != nil {
		return StripPath(err)
	}
	closed = true
	if err := f.Close(); err != nil {
		return StripPath(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return StripPath(err)
	}
	// Make the rename durable; not every platform can sync a directory, so this is best
	// effort.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
