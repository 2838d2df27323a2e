package data

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// idxBytes builds a raw IDX ubyte file from dimension sizes and payload.
func idxBytes(dims []uint32, payload []byte) []byte {
	b := []byte{0, 0, idxTypeUbyte, byte(len(dims))}
	for _, d := range dims {
		b = append(b, byte(d>>24), byte(d>>16), byte(d>>8), byte(d))
	}
	return append(b, payload...)
}

// gzipBytes compresses b with gzip.
func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

func TestReadIDXValid(t *testing.T) {
	tests := []struct {
		name string
		dims []uint32
	}{
		{"1-D", []uint32{5}},
		{"2-D", []uint32{3, 4}},
		{"3-D", []uint32{2, 3, 4}},
		{"4-D", []uint32{2, 1, 3, 2}},
		{"single byte", []uint32{1}},
	}
	for _, tt := range tests {
		n := 1
		want := make([]int, len(tt.dims))
		for i, d := range tt.dims {
			n *= int(d)
			want[i] = int(d)
		}
		payload := seq(n)
		raw := idxBytes(tt.dims, payload)
		inputs := map[string]func() io.Reader{
			"raw":        func() io.Reader { return bytes.NewReader(raw) },
			"gzip":       func() io.Reader { return bytes.NewReader(gzipBytes(t, raw)) },
			"one-byte":   func() io.Reader { return iotest.OneByteReader(bytes.NewReader(raw)) },
			"data-err":   func() io.Reader { return iotest.DataErrReader(bytes.NewReader(raw)) },
			"gzip-1byte": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(gzipBytes(t, raw))) },
		}
		for kind, mk := range inputs {
			t.Run(tt.name+"/"+kind, func(t *testing.T) {
				dims, data, err := ReadIDX(mk())
				if err != nil {
					t.Fatalf("ReadIDX: %v", err)
				}
				if !slices.Equal(dims, want) {
					t.Errorf("dims = %v, want %v", dims, want)
				}
				if !bytes.Equal(data, payload) {
					t.Errorf("data = %v, want %v", data, payload)
				}
			})
		}
	}
}

func TestReadIDXErrors(t *testing.T) {
	valid := idxBytes([]uint32{2, 3}, seq(6))
	gz := gzipBytes(t, valid)

	badChecksum := slices.Clone(gz)
	badChecksum[len(badChecksum)-8] ^= 0xff // first byte of the CRC-32 trailer

	badMethod := slices.Clone(gz)
	badMethod[2] = 0x07 // compression method other than deflate

	// A gzip header followed by a deflate block of the reserved type 3.
	badDeflate := append(slices.Clone(gz[:10]), 0xff, 0xff, 0xff, 0xff)

	tests := []struct {
		name   string
		input  []byte
		want   string // substring of the error message
		format bool   // whether errors.Is(err, ErrFormat)
		is     error  // optional further error the result must match
	}{
		{"empty file", nil, "empty input", true, nil},
		{"one byte", []byte{0}, "truncated header: got 1 of 4 magic bytes", true, nil},
		{"truncated magic", []byte{0, 0, 8}, "truncated header: got 3 of 4 magic bytes", true, nil},
		{"wrong magic", []byte{0x12, 0x34, 8, 1, 0, 0, 0, 1, 0}, "bad magic 0x12340801", true, nil},
		{"text file", []byte("hello, world\n"), "bad magic 0x68656c6c", true, nil},
		{"wrong type byte", []byte{0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0}, "unsupported element type 0x0d", true, nil},
		{"signed byte type", []byte{0, 0, 0x09, 1, 0, 0, 0, 1, 0}, "unsupported element type 0x09", true, nil},
		{"zero dims", []byte{0, 0, 8, 0}, "unsupported number of dimensions 0: want 1 to 4", true, nil},
		{"too many dims", idxBytes([]uint32{1, 1, 1, 1, 1}, []byte{0}), "unsupported number of dimensions 5", true, nil},
		{"zero-sized dimension", idxBytes([]uint32{2, 0, 3}, nil), "dimension 2 of 3 has size zero", true, nil},
		{"truncated dims", []byte{0, 0, 8, 3, 0, 0, 0, 2, 0, 0}, "truncated header: got 6 of 12 dimension bytes for 3 dimensions", true, nil},
		{"truncated data", idxBytes([]uint32{2, 3}, seq(4)), "truncated: header says 2x3 = 6 bytes, got 4", true, nil},
		{"no data", idxBytes([]uint32{2, 3}, nil), "truncated: header says 2x3 = 6 bytes, got 0", true, nil},
		{"trailing bytes", idxBytes([]uint32{3}, seq(5)), "trailing data: 2 bytes after the 3-byte payload of 3", true, nil},
		{"huge dims", idxBytes([]uint32{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, nil),
			"declared size 4294967295x4294967295x4294967295x4294967295 exceeds the limit of 2147483648 bytes", true, nil},
		{"just over the limit", idxBytes([]uint32{65536, 32769}, nil), "declared size 65536x32769 exceeds the limit", true, nil},
		{"gzip bad checksum", badChecksum, "corrupt gzip stream", true, gzip.ErrChecksum},
		{"gzip bad header", badMethod, "corrupt gzip stream while reading gzip header", true, gzip.ErrHeader},
		{"gzip corrupt deflate data", badDeflate, "corrupt gzip stream while reading IDX header: flate: corrupt input", true, nil},
		{"gzip truncated", gz[:len(gz)/2], "truncated", true, nil},
		{"gzip magic only", []byte{0x1f, 0x8b}, "truncated gzip stream while reading gzip header", true, nil},
		{"gzip of empty file", gzipBytes(t, nil), "empty input (after gzip decompression)", true, nil},
		{"gzip of truncated data", gzipBytes(t, valid[:len(valid)-1]), "truncated: header says 2x3 = 6 bytes, got 5", true, nil},
		{"gzip with trailing bytes", gzipBytes(t, append(slices.Clone(valid), 1, 2, 3)), "trailing data: 3 bytes after the 6-byte payload", true, nil},
		{"gzip followed by garbage", append(slices.Clone(gz), "garbage after the gzip member"...), "corrupt gzip stream while reading past IDX data", true, gzip.ErrHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dims, data, err := ReadIDX(bytes.NewReader(tt.input))
			if err == nil {
				t.Fatalf("ReadIDX succeeded with dims %v and %d bytes, want error containing %q", dims, len(data), tt.want)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not contain %q", msg, tt.want)
			}
			if !strings.HasPrefix(msg, "data: ") {
				t.Errorf("error %q lacks the package prefix", msg)
			}
			if got := errors.Is(err, ErrFormat); got != tt.format {
				t.Errorf("errors.Is(err, ErrFormat) = %v, want %v (err: %v)", got, tt.format, err)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(err, %v) = false (err: %v)", tt.is, err)
			}
			if dims != nil || data != nil {
				t.Errorf("got non-nil results with an error")
			}
		})
	}
}

// TestReadIDXHugeHeaderNoAllocation checks that oversized headers are
// rejected before memory for the payload is allocated, and that a large but
// permitted header followed by little data does not allocate its full size.
func TestReadIDXHugeHeaderNoAllocation(t *testing.T) {
	tests := []struct {
		name     string
		input    []byte
		maxAlloc uint64
	}{
		{"over the limit", idxBytes([]uint32{0xffffffff, 0xffffffff, 0xffffffff}, seq(100)), 1 << 20},
		{"at the limit, truncated", idxBytes([]uint32{1 << 15, 1 << 16}, seq(100)), preallocLimit + 1<<20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, _, err := ReadIDX(bytes.NewReader(tt.input))
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("err = %v, want a format error", err)
			}
			if got := after.TotalAlloc - before.TotalAlloc; got > tt.maxAlloc {
				t.Errorf("allocated %d bytes, want at most %d", got, tt.maxAlloc)
			}
		})
	}
}

// TestReadPayloadGrowth exercises the chunked path used for payloads larger
// than preallocLimit, with and without a sink.
func TestReadPayloadGrowth(t *testing.T) {
	size := preallocLimit + 3*sinkChunk + 17
	src := seq(size)
	for _, withSink := range []bool{false, true} {
		var covered int
		var sink payloadSink
		if withSink {
			sink = func(data []byte, lo, hi int) {
				if lo != covered {
					t.Fatalf("sink got [%d,%d), want start %d", lo, hi, covered)
				}
				if !bytes.Equal(data[lo:hi], src[lo:hi]) {
					t.Fatalf("sink data [%d,%d) differs", lo, hi)
				}
				covered = hi
			}
		}
		data, n, err := readPayload(bytes.NewReader(src), size, sink)
		if err != nil || n != size || !bytes.Equal(data, src) {
			t.Fatalf("sink=%v: n=%d err=%v equal=%v", withSink, n, err, bytes.Equal(data, src))
		}
		if withSink && covered != size {
			t.Errorf("sink covered %d bytes, want %d", covered, size)
		}
		covered = 0
		_, n, err = readPayload(bytes.NewReader(src[:size-5]), size, sink)
		if err != io.ErrUnexpectedEOF || n != size-5 {
			t.Errorf("sink=%v: short input gave n=%d err=%v", withSink, n, err)
		}
	}
}

// errAfterReader returns its data and then a non-EOF error.
type errAfterReader struct {
	r   io.Reader
	err error
}

func (e *errAfterReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		return n, e.err
	}
	return n, err
}

func TestReadIDXReaderErrorIsNotFormatError(t *testing.T) {
	boom := errors.New("disk on fire")
	valid := idxBytes([]uint32{2, 3}, seq(6))
	tests := []struct {
		name  string
		input []byte
	}{
		{"before anything", nil},
		{"in header", valid[:6]},
		{"in data", valid[:len(valid)-2]},
		{"gzip", gzipBytes(t, valid)[:20]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ReadIDX(&errAfterReader{bytes.NewReader(tt.input), boom})
			if !errors.Is(err, boom) {
				t.Fatalf("err = %v, want it to wrap %v", err, boom)
			}
			if errors.Is(err, ErrFormat) {
				t.Errorf("I/O error %v matches ErrFormat", err)
			}
		})
	}
}

// writeFile writes b to name in dir and returns the path.
func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadIDXFile(t *testing.T) {
	dir := t.TempDir()
	pixels := []byte{0, 255, 51, 102, 0, 0, 0, 0, 255, 255, 255, 255}
	imgRaw := idxBytes([]uint32{3, 2, 2}, pixels)
	lblRaw := idxBytes([]uint32{3}, []byte{0, 9, 4})
	for _, gz := range []bool{false, true} {
		img, lbl := imgRaw, lblRaw
		suffix := ""
		if gz {
			img, lbl = gzipBytes(t, imgRaw), gzipBytes(t, lblRaw)
			// Gzip is detected by content, so the names need not say so.
			suffix = ".bin"
		}
		ip := writeFile(t, dir, "img"+suffix, img)
		lp := writeFile(t, dir, "lbl"+suffix, lbl)
		d, err := LoadIDXFile(ip, lp)
		if err != nil {
			t.Fatalf("gzip=%v: %v", gz, err)
		}
		if d.N != 3 || d.C != 1 || d.H != 2 || d.W != 2 || d.Classes != 10 || d.Name != ip {
			t.Errorf("gzip=%v: got %+v", gz, *d)
		}
		want := []float32{0, 1, 0.2, 0.4}
		if got := d.Sample(0); !slices.Equal(got, want) {
			t.Errorf("gzip=%v: sample 0 = %v, want %v", gz, got, want)
		}
		if !slices.Equal(d.Labels, []uint8{0, 9, 4}) {
			t.Errorf("gzip=%v: labels = %v", gz, d.Labels)
		}
	}
}

// TestLoadIDXFileLarge covers image payloads above preallocLimit, which are
// scaled after reading instead of while reading.
func TestLoadIDXFileLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates about 350 MB")
	}
	dir := t.TempDir()
	n := preallocLimit/(256*256) + 1
	pixels := make([]byte, n*256*256)
	pixels[len(pixels)-1] = 255
	ip := writeFile(t, dir, "img", idxBytes([]uint32{uint32(n), 256, 256}, pixels))
	lp := writeFile(t, dir, "lbl", idxBytes([]uint32{uint32(n)}, make([]byte, n)))
	d, err := LoadIDXFile(ip, lp)
	if err != nil {
		t.Fatal(err)
	}
	if d.N != n || len(d.Images) != len(pixels) || d.Images[len(pixels)-1] != 1 || d.Images[0] != 0 {
		t.Errorf("N=%d, %d pixels, last pixel %v", d.N, len(d.Images), d.Images[len(d.Images)-1])
	}
}

// TestLoadIDXFileHugeHeader checks that a 3-D image header declaring the
// maximum size, followed by little data, fails without allocating pixel
// memory for the declared size.
func TestLoadIDXFileHugeHeader(t *testing.T) {
	dir := t.TempDir()
	ip := writeFile(t, dir, "img", idxBytes([]uint32{1 << 15, 1 << 8, 1 << 8}, seq(100)))
	lp := writeFile(t, dir, "lbl", idxBytes([]uint32{1 << 15}, make([]byte, 1<<15)))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := LoadIDXFile(ip, lp)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "truncated: header says 32768x256x256") {
		t.Fatalf("err = %v, want a truncation error", err)
	}
	if got, limit := after.TotalAlloc-before.TotalAlloc, uint64(preallocLimit+1<<20); got > limit {
		t.Errorf("allocated %d bytes, want at most %d", got, limit)
	}
}

func TestLoadIDXFileErrors(t *testing.T) {
	dir := t.TempDir()
	goodImg := writeFile(t, dir, "good-images", idxBytes([]uint32{3, 2, 2}, seq(12)))
	goodLbl := writeFile(t, dir, "good-labels", idxBytes([]uint32{3}, []byte{1, 2, 3}))
	twoLbl := writeFile(t, dir, "two-labels", idxBytes([]uint32{2}, []byte{1, 2}))
	badLbl := writeFile(t, dir, "bad-labels", idxBytes([]uint32{3}, []byte{1, 10, 3}))
	flatImg := writeFile(t, dir, "flat-images", idxBytes([]uint32{3, 4}, seq(12)))
	wideLbl := writeFile(t, dir, "wide-labels", idxBytes([]uint32{3, 1}, []byte{1, 2, 3}))
	shortImg := writeFile(t, dir, "short-images.gz", gzipBytes(t, idxBytes([]uint32{3, 28, 28}, seq(1000))))
	missing := filepath.Join(dir, "missing")

	tests := []struct {
		name       string
		img, lbl   string
		wantPath   string
		wantSubstr []string
		format     bool
	}{
		{"count mismatch", goodImg, twoLbl, goodImg, []string{"3 images but " + twoLbl + " has 2 labels"}, true},
		{"label out of range", goodImg, badLbl, badLbl, []string{"label 10 at index 1 is out of range [0,10)"}, true},
		{"images not 3-D", flatImg, goodLbl, flatImg, []string{"image file must be 3-D (N,H,W), got 2-D 3x4"}, true},
		{"labels not 1-D", goodImg, wideLbl, wideLbl, []string{"label file must be 1-D (N), got 2-D 3x1"}, true},
		{"truncated images", shortImg, goodLbl, shortImg, []string{"truncated: header says 3x28x28 = 2352 bytes, got 1000"}, true},
		{"missing images", missing, goodLbl, missing, []string{"cannot open"}, false},
		{"missing labels", goodImg, missing, missing, []string{"cannot open"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := LoadIDXFile(tt.img, tt.lbl)
			if err == nil {
				t.Fatalf("LoadIDXFile succeeded: %+v", d)
			}
			msg := err.Error()
			if prefix := "data: " + tt.wantPath + ": "; !strings.HasPrefix(msg, prefix) {
				t.Errorf("error %q does not start with %q", msg, prefix)
			}
			for _, s := range tt.wantSubstr {
				if !strings.Contains(msg, s) {
					t.Errorf("error %q does not contain %q", msg, s)
				}
			}
			if got := errors.Is(err, ErrFormat); got != tt.format {
				t.Errorf("errors.Is(err, ErrFormat) = %v, want %v", got, tt.format)
			}
			if !tt.format && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("error %v does not match fs.ErrNotExist", err)
			}
		})
	}
}

func FuzzReadIDX(f *testing.F) {
	f.Add(idxBytes([]uint32{4}, seq(4)))
	f.Add(idxBytes([]uint32{2, 2, 3}, seq(12)))
	f.Add(gzipBytes(f, idxBytes([]uint32{3, 2}, seq(6))))
	f.Add(idxBytes([]uint32{2, 3}, seq(5)))
	f.Add([]byte{0, 0, 8, 5})
	f.Fuzz(func(t *testing.T, in []byte) {
		dims, data, err := ReadIDX(bytes.NewReader(in))
		if err != nil {
			// A byte slice cannot fail to read, so every error is about
			// the content.
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error is not a format error: %v", err)
			}
			if !strings.HasPrefix(err.Error(), "data: ") {
				t.Fatalf("error lacks the package prefix: %v", err)
			}
			if dims != nil || data != nil {
				t.Fatalf("non-nil results with error %v", err)
			}
		} else {
			if len(dims) < 1 || len(dims) > MaxIDXDims {
				t.Fatalf("got %d dims", len(dims))
			}
			n := 1
			for _, d := range dims {
				if d <= 0 {
					t.Fatalf("dims %v contain a non-positive size", dims)
				}
				n *= d
			}
			if n != len(data) {
				t.Fatalf("dims %v describe %d bytes, got %d", dims, n, len(data))
			}
		}
		// Reading the same bytes one at a time must give the same result.
		dims2, data2, err2 := ReadIDX(iotest.OneByteReader(bytes.NewReader(in)))
		if (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Fatalf("byte-at-a-time read differs: %v vs %v", err, err2)
		}
		if !slices.Equal(dims, dims2) || !bytes.Equal(data, data2) {
			t.Fatalf("byte-at-a-time read gives different results")
		}
	})
}
