package data

import (
	"bufio"
	"compress/flate"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// ErrFormat is matched (via errors.Is) by every error that reports malformed
// or unsupported content of a data file (IDX, NumPy or image). For IDX: bad magic numbers, unsupported element types or
// dimension counts, zero or oversized dimensions, truncated or trailing data,
// corrupt gzip streams, and dataset-level inconsistencies such as mismatched
// image and label counts or out-of-range labels. I/O failures of the
// underlying reader or file system are not format errors and do not match it.
var ErrFormat = errors.New("data: malformed IDX data")

// MaxIDXBytes is the largest payload, in bytes, that ReadIDX accepts. Headers
// declaring a larger product of dimensions are rejected before any payload
// memory is allocated.
const MaxIDXBytes = 1 << 31

// MaxIDXDims is the largest number of dimensions ReadIDX accepts.
const MaxIDXDims = 4

// idxTypeUbyte is the IDX element-type code for unsigned bytes.
const idxTypeUbyte = 0x08

// preallocLimit is the largest payload that is allocated in one piece before
// reading. Larger payloads are read in growing chunks so that a header that
// declares a large size but is followed by little data cannot force a large
// allocation.
const preallocLimit = 64 << 20

// sinkChunk is the granularity at which a payloadSink is told about newly
// read payload bytes.
const sinkChunk = 1 << 20

// formatError is a malformed-content error. Its message carries no package
// prefix so that callers can add their own context (such as a file path).
type formatError struct {
	msg string
	err error // optional underlying cause
}

func (e *formatError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *formatError) Is(target error) bool { return target == ErrFormat }

func (e *formatError) Unwrap() error { return e.err }

func formatErrorf(format string, args ...any) error {
	return &formatError{msg: fmt.Sprintf(format, args...)}
}

// ReadIDX decodes one IDX file from r. The input may be raw IDX or a gzip
// stream containing IDX; gzip is recognised by its magic bytes 0x1f 0x8b, not
// by any file name.
//
// Only the unsigned-byte element type (0x08) is supported. The header must be
// the magic 0x00 0x00 0x08 ndims with ndims in 1..MaxIDXDims, followed by
// ndims big-endian uint32 sizes, each greater than zero, whose product is at
// most MaxIDXBytes. The payload must be exactly that many bytes: short input
// and bytes after the payload are both errors.
//
// It returns the dimension sizes and the payload in row-major order. Errors
// about the content match ErrFormat; errors from r itself are wrapped as is.
func ReadIDX(r io.Reader) (dims []int, data []byte, err error) {
	dims, data, err = readIDX(r, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("data: %w", err)
	}
	return dims, data, nil
}

// payloadSink is told, as the payload is read, that bytes data[lo:hi] are
// final. data may be a different slice between calls when the payload buffer
// grows; the bytes it reports never change afterwards.
type payloadSink func(data []byte, lo, hi int)

// readIDX is ReadIDX without the package prefix on error messages. If start
// is not nil it is called once the header has been validated; the sink it
// returns (if not nil) receives the payload progressively, so that the
// caller can process it while the rest is still being read and decompressed.
func readIDX(r io.Reader, start func(dims []int) payloadSink) ([]int, []byte, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(2)
	if len(magic) == 0 {
		if err == nil || err == io.EOF {
			return nil, nil, formatErrorf("empty input")
		}
		return nil, nil, fmt.Errorf("reading IDX header: %w", err)
	}
	var src io.Reader = br
	gz := len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b
	if gz {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, classify(err, true, "reading gzip header")
		}
		defer zr.Close()
		src = zr
	}

	var hdr [4]byte
	if n, err := io.ReadFull(src, hdr[:]); err != nil {
		if n == 0 && err == io.EOF {
			if gz {
				return nil, nil, formatErrorf("empty input (after gzip decompression)")
			}
			return nil, nil, formatErrorf("empty input")
		}
		if isEOF(err) {
			return nil, nil, formatErrorf("truncated header: got %d of 4 magic bytes", n)
		}
		return nil, nil, classify(err, gz, "reading IDX header")
	}
	if hdr[0] != 0 || hdr[1] != 0 {
		return nil, nil, formatErrorf("bad magic 0x%02x%02x%02x%02x: the first two bytes must be zero (not an IDX file?)",
			hdr[0], hdr[1], hdr[2], hdr[3])
	}
	if hdr[2] != idxTypeUbyte {
		return nil, nil, formatErrorf("unsupported element type 0x%02x: only unsigned byte (0x08) is supported", hdr[2])
	}
	nd := int(hdr[3])
	if nd < 1 || nd > MaxIDXDims {
		return nil, nil, formatErrorf("unsupported number of dimensions %d: want 1 to %d", nd, MaxIDXDims)
	}

	var dimBuf [4 * MaxIDXDims]byte
	if n, err := io.ReadFull(src, dimBuf[:4*nd]); err != nil {
		if isEOF(err) {
			return nil, nil, formatErrorf("truncated header: got %d of %d dimension bytes for %d dimensions", n, 4*nd, nd)
		}
		return nil, nil, classify(err, gz, "reading IDX header")
	}
	dims := make([]int, nd)
	total := uint64(1)
	tooLarge := false
	for i := range dims {
		b := dimBuf[4*i:]
		d := uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
		if d == 0 {
			return nil, nil, formatErrorf("dimension %d of %d has size zero", i+1, nd)
		}
		dims[i] = int(d)
		// Both factors are at most MaxIDXBytes here, so the product cannot
		// overflow uint64.
		if !tooLarge {
			total *= d
			tooLarge = total > MaxIDXBytes
		}
	}
	if tooLarge || total > math.MaxInt {
		return nil, nil, formatErrorf("declared size %s exceeds the limit of %d bytes", shapeString(dims), uint64(MaxIDXBytes))
	}
	size := int(total)

	var sink payloadSink
	if start != nil {
		sink = start(dims)
	}
	data, n, err := readPayload(src, size, sink)
	if err != nil {
		if isEOF(err) {
			return nil, nil, formatErrorf("truncated: header says %s = %d bytes, got %d", shapeString(dims), size, n)
		}
		return nil, nil, classify(err, gz, "reading IDX data")
	}

	// The payload must be followed by end of input. For gzip this read also
	// makes the decompressor verify the stream checksum.
	var one [1]byte
	k, err := io.ReadFull(src, one[:])
	if k > 0 {
		extra, _ := io.Copy(io.Discard, io.LimitReader(src, 1<<20))
		extra++
		more := ""
		if extra > 1<<20 {
			more = "more than "
			extra = 1 << 20
		}
		return nil, nil, formatErrorf("trailing data: %s%d bytes after the %d-byte payload of %s", more, extra, size, shapeString(dims))
	}
	if err != io.EOF {
		return nil, nil, classify(err, gz, "reading past IDX data")
	}
	return dims, data, nil
}

// readPayload reads exactly size bytes from r. Payloads up to preallocLimit
// are read into one allocation; larger ones grow as data actually arrives.
// If sink is not nil the payload is read in chunks of sinkChunk bytes and
// each is reported as soon as it is complete. It returns the number of bytes
// read before any error.
func readPayload(r io.Reader, size int, sink payloadSink) ([]byte, int, error) {
	step := size
	if sink != nil {
		step = sinkChunk
	}
	data := make([]byte, 0, min(size, preallocLimit))
	for len(data) < size {
		if len(data) == cap(data) {
			grown := make([]byte, len(data), min(size, 2*cap(data)))
			copy(grown, data)
			data = grown
		}
		lo := len(data)
		n, err := io.ReadFull(r, data[lo:min(cap(data), lo+step)])
		data = data[:lo+n]
		if err != nil {
			return nil, len(data), err
		}
		if sink != nil {
			sink(data, lo, lo+n)
		}
	}
	return data, len(data), nil
}

// isEOF reports whether err means the input ended early.
func isEOF(err error) bool {
	return err == io.EOF || err == io.ErrUnexpectedEOF
}

// classify turns a read error into either a format error (truncated or
// corrupt gzip content) or a wrapped I/O error.
func classify(err error, gz bool, what string) error {
	if isEOF(err) {
		if gz {
			return &formatError{msg: "truncated gzip stream while " + what, err: err}
		}
		return &formatError{msg: "truncated input while " + what, err: err}
	}
	var corrupt flate.CorruptInputError
	if gz && (errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) || errors.As(err, &corrupt)) {
		return &formatError{msg: "corrupt gzip stream while " + what, err: err}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// shapeString formats dimension sizes as "60000x28x28".
func shapeString(dims []int) string {
	parts := make([]string, len(dims))
	for i, d := range dims {
		parts[i] = strconv.Itoa(d)
	}
	return strings.Join(parts, "x")
}
