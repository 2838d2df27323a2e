package data

import (
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// The four MNIST IDX files, gzipped, as distributed with the data set.
//
//go:embed mnist/*.gz
var mnistFS embed.FS

// Names lists the data set names accepted by Load. "fashion" is also
// accepted as an alias for "fashion-mnist". "folder" reads an image folder
// (LoadFolder) and "npy" NumPy arrays (LoadNPY) from the folder given.
var Names = []string{"mnist", "fashion-mnist", "folder", "npy"}

// DefaultFashionMNISTDir is where the Debian package dataset-fashion-mnist
// installs the Fashion-MNIST IDX files.
const DefaultFashionMNISTDir = "/usr/share/datasets/fashion-mnist"

// The standard IDX file names shared by MNIST and Fashion-MNIST.
const (
	trainImagesFile = "train-images-idx3-ubyte"
	trainLabelsFile = "train-labels-idx1-ubyte"
	testImagesFile  = "t10k-images-idx3-ubyte"
	testLabelsFile  = "t10k-labels-idx1-ubyte"
)

// numClasses is the number of label classes in MNIST and Fashion-MNIST.
const numClasses = 10

// source is a named, openable IDX input. The name is used in error messages.
type source struct {
	name string
	open func() (io.ReadCloser, error)
}

func fileSource(path string) source {
	return source{name: path, open: func() (io.ReadCloser, error) { return os.Open(path) }}
}

func embeddedSource(file string) source {
	return source{
		name: "embedded mnist/" + file,
		open: func() (io.ReadCloser, error) { return mnistFS.Open("mnist/" + file) },
	}
}

// read opens and decodes the source, passing start on to readIDX. Errors
// name the source.
func (s source) read(start func(dims []int) payloadSink) ([]int, []byte, error) {
	rc, err := s.open()
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, nil, fmt.Errorf("data: %s: cannot open: %w", s.name, err)
	}
	defer rc.Close()
	dims, raw, err := readIDX(rc, start)
	if err != nil {
		return nil, nil, fmt.Errorf("data: %s: %w", s.name, err)
	}
	return dims, raw, nil
}

// LoadIDXFile reads an image file and a label file in IDX format (raw or
// gzipped) and returns them as a Dataset with one channel. The image file
// must be 3-D (N,H,W), the label file 1-D (N), the counts must agree and
// every label must be below 10. Every error names the offending file; errors
// about file content match ErrFormat. The Dataset's Name is imagesPath.
func LoadIDXFile(imagesPath, labelsPath string) (*Dataset, error) {
	d, err := loadPair(fileSource(imagesPath), fileSource(labelsPath))
	if err != nil {
		return nil, err
	}
	d.Name = imagesPath
	return d, nil
}

// pixelScale maps a byte to its float32 value in [0,1].
var pixelScale = func() (t [256]float32) {
	for i := range t {
		t[i] = float32(i) / 255
	}
	return t
}()

// startScaling starts a goroutine that sets dst[i] = data[i]/255 for each
// span reported to the returned sink. wait must be called once the payload
// has been read (or reading failed); it returns when every reported span has
// been converted.
func startScaling(dst []float32) (sink payloadSink, wait func()) {
	type span struct {
		data   []byte
		lo, hi int
	}
	// Room for every chunk, so the reader never waits for the converter.
	spans := make(chan span, len(dst)/sinkChunk+1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for s := range spans {
			out := dst[s.lo:s.hi:s.hi]
			for i, b := range s.data[s.lo:s.hi] {
				out[i] = pixelScale[b]
			}
		}
	}()
	sink = func(data []byte, lo, hi int) { spans <- span{data, lo, hi} }
	wait = func() {
		close(spans)
		<-done
	}
	return sink, wait
}

// loadPair reads and validates one image source and one label source.
func loadPair(images, labels source) (*Dataset, error) {
	// Pixels are scaled by a second goroutine while the rest of the image
	// file is still being decompressed. The destination is allocated from
	// the header only for sizes that readIDX itself would preallocate, so
	// a header cannot force a large allocation without supplying the data.
	var pixels []float32
	var wait func()
	idims, ibytes, err := images.read(func(dims []int) payloadSink {
		n := 1
		for _, d := range dims {
			n *= d
		}
		if len(dims) != 3 || n > preallocLimit {
			return nil
		}
		pixels = make([]float32, n)
		var sink payloadSink
		sink, wait = startScaling(pixels)
		return sink
	})
	if wait != nil {
		wait()
	}
	if err != nil {
		return nil, err
	}
	if len(idims) != 3 {
		return nil, fmt.Errorf("data: %s: %w", images.name,
			formatErrorf("image file must be 3-D (N,H,W), got %d-D %s", len(idims), shapeString(idims)))
	}
	if pixels == nil {
		pixels = make([]float32, len(ibytes))
		for i, b := range ibytes {
			pixels[i] = pixelScale[b]
		}
	}
	ldims, lbytes, err := labels.read(nil)
	if err != nil {
		return nil, err
	}
	if len(ldims) != 1 {
		return nil, fmt.Errorf("data: %s: %w", labels.name,
			formatErrorf("label file must be 1-D (N), got %d-D %s", len(ldims), shapeString(ldims)))
	}
	if idims[0] != ldims[0] {
		return nil, fmt.Errorf("data: %s: %w", images.name,
			formatErrorf("%d images but %s has %d labels", idims[0], labels.name, ldims[0]))
	}
	for i, l := range lbytes {
		if l >= numClasses {
			return nil, fmt.Errorf("data: %s: %w", labels.name,
				formatErrorf("label %d at index %d is out of range [0,%d)", l, i, numClasses))
		}
	}
	return &Dataset{
		Images:  pixels,
		Labels:  lbytes,
		N:       idims[0],
		C:       1,
		H:       idims[1],
		W:       idims[2],
		Classes: numClasses,
	}, nil
}

// loadTrainTest loads the training and test pairs concurrently and names
// them name+"/train" and name+"/test".
func loadTrainTest(name string, trainImages, trainLabels, testImages, testLabels source) (train, test *Dataset, err error) {
	var wg sync.WaitGroup
	var testErr error
	wg.Go(func() { test, testErr = loadPair(testImages, testLabels) })
	train, err = loadPair(trainImages, trainLabels)
	wg.Wait()
	if err == nil {
		err = testErr
	}
	if err != nil {
		return nil, nil, err
	}
	train.Name = name + "/train"
	test.Name = name + "/test"
	return train, test, nil
}

// LoadMNIST returns the MNIST training set (60000 images) and test set
// (10000 images) of 28x28 handwritten digits, decoded from the copy embedded
// in this package. The data sets are named "mnist/train" and "mnist/test".
func LoadMNIST() (train, test *Dataset, err error) {
	return loadTrainTest("mnist",
		embeddedSource(trainImagesFile+".gz"), embeddedSource(trainLabelsFile+".gz"),
		embeddedSource(testImagesFile+".gz"), embeddedSource(testLabelsFile+".gz"))
}

// LoadFashionMNIST returns the Fashion-MNIST training set (60000 images) and
// test set (10000 images) of 28x28 clothing pictures, read from the IDX files
// in dir. An empty dir means DefaultFashionMNISTDir. Each of the four
// standard file names is looked up as is and then with a ".gz" suffix. The
// data sets are named "fashion-mnist/train" and "fashion-mnist/test".
func LoadFashionMNIST(dir string) (train, test *Dataset, err error) {
	if dir == "" {
		dir = DefaultFashionMNISTDir
	}
	return loadDir("fashion-mnist", dir, fashionHint)
}

// fashionHint tells the user how to obtain Fashion-MNIST.
const fashionHint = "install it with `apt-get install dataset-fashion-mnist` (which fills " +
	DefaultFashionMNISTDir + ") or pass the folder that holds the Fashion-MNIST IDX files"

// mnistHint tells the user what a folder for MNIST must hold.
const mnistHint = "pass the folder that holds the MNIST IDX files, or an empty folder name to use the embedded copy"

// loadDir loads the four standard IDX files from dir. hint is appended to
// the error when dir does not exist.
func loadDir(name, dir, hint string) (train, test *Dataset, err error) {
	info, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("data: %s folder %s does not exist: %s: %w", name, dir, hint, fs.ErrNotExist)
		}
		return nil, nil, fmt.Errorf("data: %s folder: %w", name, err)
	}
	if !info.IsDir() {
		return nil, nil, fmt.Errorf("data: %s folder %s is not a directory: %s", name, dir, hint)
	}
	var srcs [4]source
	for i, f := range []string{trainImagesFile, trainLabelsFile, testImagesFile, testLabelsFile} {
		path, err := findIDXFile(dir, f)
		if err != nil {
			return nil, nil, fmt.Errorf("data: %s: %w", name, err)
		}
		srcs[i] = fileSource(path)
	}
	return loadTrainTest(name, srcs[0], srcs[1], srcs[2], srcs[3])
}

// findIDXFile returns dir/file if it exists, else dir/file.gz if that
// exists, else an error naming both.
func findIDXFile(dir, file string) (string, error) {
	plain := filepath.Join(dir, file)
	for _, p := range []string{plain, plain + ".gz"} {
		_, err := os.Stat(p)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
	}
	return "", fmt.Errorf("neither %s nor %s exists: %w", plain, plain+".gz", fs.ErrNotExist)
}

// Load returns the training and test sets of the named data set: "mnist",
// "fashion-mnist" or its alias "fashion" (case is ignored), "folder" (an image
// folder, see LoadFolder) or "npy" (NumPy arrays, see LoadNPY). dir is the
// folder holding the files; for "mnist" an empty dir means the embedded copy,
// and for Fashion-MNIST it means DefaultFashionMNISTDir. An unknown name
// gives an error listing the valid names.
func Load(name, dir string) (train, test *Dataset, err error) {
	return LoadWith(name, dir, FolderOptions{})
}

// LoadWith is Load with the options of an image folder.
func LoadWith(name, dir string, opt FolderOptions) (train, test *Dataset, err error) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "mnist":
		if dir == "" {
			return LoadMNIST()
		}
		return loadDir("mnist", dir, mnistHint)
	case "fashion-mnist", "fashion":
		return LoadFashionMNIST(dir)
	case "folder", "npy":
		if dir == "" {
			return nil, nil, fmt.Errorf("data: data set %q needs a folder", name)
		}
		if strings.EqualFold(strings.TrimSpace(name), "npy") {
			return LoadNPY(dir)
		}
		return LoadFolder(dir, opt)
	}
	return nil, nil, fmt.Errorf("data: unknown data set %q: valid names are %s (or \"fashion\" for fashion-mnist)",
		name, strings.Join(Names, ", "))
}
