package data

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/autoprune/autoprune/internal/fileio"
)

// The NumPy files of a data set in a folder (see LoadNPY).
const (
	npyTrainImages = "train_images.npy"
	npyTrainLabels = "train_labels.npy"
	npyTestImages  = "test_images.npy"
	npyTestLabels  = "test_labels.npy"
)

// maxNPYValues bounds the number of values one .npy file may declare.
const maxNPYValues = 1 << 31

// npyArray is a decoded .npy array: its shape and its values as float64 (exact for every
// type read here).
type npyArray struct {
	shape []int
	descr string
	f32   []float32 // float32 and uint8 images
	ints  []int64   // integer labels
}

var (
	npyDescrRe = regexp.MustCompile(`'descr'\s*:\s*'([^']*)'`)
	npyOrderRe = regexp.MustCompile(`'fortran_order'\s*:\s*(True|False)`)
	npyShapeRe = regexp.MustCompile(`'shape'\s*:\s*\(([^)]*)\)`)
)

// readNPY decodes a NumPy .npy file (format versions 1 to 3, C order) holding float32,
// uint8, int32 or int64 values. uint8 values are scaled to [0,1] when scale is set.
func readNPY(r io.Reader, scale bool) (*npyArray, error) {
	br := bufio.NewReader(r)
	var pre [8]byte
	if _, err := io.ReadFull(br, pre[:]); err != nil {
		return nil, formatErrorf("not a .npy file: %v", err)
	}
	if string(pre[:6]) != "\x93NUMPY" {
		return nil, formatErrorf("not a .npy file (no \\x93NUMPY magic)")
	}
	var hlen int
	switch pre[6] {
	case 1:
		var b [2]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return nil, formatErrorf("truncated header")
		}
		hlen = int(binary.LittleEndian.Uint16(b[:]))
	case 2, 3:
		var b [4]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return nil, formatErrorf("truncated header")
		}
		hlen = int(binary.LittleEndian.Uint32(b[:]))
	default:
		return nil, formatErrorf(".npy format version %d.%d", pre[6], pre[7])
	}
	if hlen > 1<<16 {
		return nil, formatErrorf("header of %d bytes", hlen)
	}
	header := make([]byte, hlen)
	if _, err := io.ReadFull(br, header); err != nil {
		return nil, formatErrorf("truncated header")
	}
	h := string(header)
	m := npyDescrRe.FindStringSubmatch(h)
	if m == nil {
		return nil, formatErrorf("header without 'descr': %q", h)
	}
	a := &npyArray{descr: m[1]}
	if o := npyOrderRe.FindStringSubmatch(h); o == nil || o[1] != "False" {
		return nil, formatErrorf("Fortran-ordered or unknown order (save a C-ordered array: np.ascontiguousarray)")
	}
	s := npyShapeRe.FindStringSubmatch(h)
	if s == nil {
		return nil, formatErrorf("header without 'shape': %q", h)
	}
	n := 1
	for _, f := range strings.Split(s[1], ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		d, err := strconv.Atoi(f)
		if err != nil || d < 0 || d > maxNPYValues {
			return nil, formatErrorf("shape (%s)", s[1])
		}
		a.shape = append(a.shape, d)
		if d > 0 && n > maxNPYValues/d {
			return nil, formatErrorf("shape (%s) is too large", s[1])
		}
		n *= d
	}
	var size int
	switch a.descr {
	case "<f4", "|u1", "<u1", "|i1", "<i4", "<i8", "<u8", "<u4":
		size, _ = strconv.Atoi(a.descr[2:])
	default:
		return nil, formatErrorf("element type %q (want float32 '<f4' or uint8 '|u1' images, integer labels)", a.descr)
	}
	// Read in chunks so that a header cannot force a large allocation without the data.
	raw := make([]byte, 0, min(n*size, preallocLimit))
	chunk := make([]byte, 1<<16)
	for len(raw) < n*size {
		k, err := io.ReadFull(br, chunk[:min(len(chunk), n*size-len(raw))])
		raw = append(raw, chunk[:k]...)
		if err != nil {
			return nil, formatErrorf("%d bytes of data for shape (%s) of %s, want %d", len(raw), s[1], a.descr, n*size)
		}
	}
	switch a.descr {
	case "<f4":
		a.f32 = make([]float32, n)
		for i := range a.f32 {
			v := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, formatErrorf("value %d is not finite", i)
			}
			a.f32[i] = v
		}
	case "|u1", "<u1":
		a.f32 = make([]float32, n)
		a.ints = make([]int64, n)
		for i, b := range raw {
			a.ints[i] = int64(b)
			a.f32[i] = float32(b)
			if scale {
				a.f32[i] = pixelScale[b]
			}
		}
	default:
		a.ints = make([]int64, n)
		for i := range a.ints {
			switch size {
			case 1:
				a.ints[i] = int64(int8(raw[i]))
			case 4:
				a.ints[i] = int64(int32(binary.LittleEndian.Uint32(raw[4*i:])))
			case 8:
				a.ints[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
			}
		}
	}
	return a, nil
}

// npyPair reads an images file and a labels file into a data set. Images are
// (N, C, H, W) or (N, H, W), float32 as they are or uint8 scaled to [0,1]; labels (N)
// integers in [0, 256).
func npyPair(imagesPath, labelsPath string) (*Dataset, error) {
	read := func(path string, scale bool) (*npyArray, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("data: %s: cannot open: %w", path, fileio.StripPath(err))
		}
		defer f.Close()
		a, err := readNPY(f, scale)
		if err != nil {
			return nil, fmt.Errorf("data: %s: %w", path, err)
		}
		return a, nil
	}
	im, err := read(imagesPath, true)
	if err != nil {
		return nil, err
	}
	if im.f32 == nil {
		return nil, fmt.Errorf("data: %s: %w", imagesPath, formatErrorf("images of type %q (want float32 or uint8)", im.descr))
	}
	d := &Dataset{Name: imagesPath, Images: im.f32}
	switch len(im.shape) {
	case 3:
		d.N, d.C, d.H, d.W = im.shape[0], 1, im.shape[1], im.shape[2]
	case 4:
		d.N, d.C, d.H, d.W = im.shape[0], im.shape[1], im.shape[2], im.shape[3]
	default:
		return nil, fmt.Errorf("data: %s: %w", imagesPath, formatErrorf("images of shape %v (want N x C x H x W, or N x H x W)", im.shape))
	}
	if d.N == 0 || d.C == 0 || d.H == 0 || d.W == 0 || d.C > 64 {
		return nil, fmt.Errorf("data: %s: %w", imagesPath, formatErrorf("images of shape %v (want N, H, W > 0 and 1..64 channels)", im.shape))
	}
	lb, err := read(labelsPath, false)
	if err != nil {
		return nil, err
	}
	if lb.ints == nil || len(lb.shape) != 1 {
		return nil, fmt.Errorf("data: %s: %w", labelsPath, formatErrorf("labels of type %q and shape %v (want N integers)", lb.descr, lb.shape))
	}
	if lb.shape[0] != d.N {
		return nil, fmt.Errorf("data: %s: %w", imagesPath, formatErrorf("%d images but %s has %d labels", d.N, labelsPath, lb.shape[0]))
	}
	d.Labels = make([]uint8, d.N)
	for i, l := range lb.ints {
		if l < 0 || l > 255 {
			return nil, fmt.Errorf("data: %s: %w", labelsPath, formatErrorf("label %d at index %d is out of range [0,256)", l, i))
		}
		d.Labels[i] = uint8(l)
		d.Classes = max(d.Classes, int(l)+1)
	}
	return d, nil
}

// LoadNPY reads a data set saved with NumPy in dir: train_images.npy, train_labels.npy,
// test_images.npy and test_labels.npy. Images are N x C x H x W (or N x H x W, one
// channel), float32 as they are or uint8 scaled to [0,1]; labels are N integers (int64,
// int32 or uint8) in [0, 256). The class count is the largest label plus one. Errors name
// the file; errors about content match ErrFormat.
func LoadNPY(dir string) (train, test *Dataset, err error) {
	if train, err = npyPair(filepath.Join(dir, npyTrainImages), filepath.Join(dir, npyTrainLabels)); err != nil {
		return nil, nil, err
	}
	if test, err = npyPair(filepath.Join(dir, npyTestImages), filepath.Join(dir, npyTestLabels)); err != nil {
		return nil, nil, err
	}
	if test.C != train.C || test.H != train.H || test.W != train.W {
		return nil, nil, fmt.Errorf("data: %s: %w", test.Name, formatErrorf("test images are %dx%dx%d, training images %dx%dx%d",
			test.C, test.H, test.W, train.C, train.H, train.W))
	}
	train.Classes = max(train.Classes, test.Classes)
	test.Classes = train.Classes
	train.Name, test.Name = "npy/train", "npy/test"
	return train, test, nil
}
