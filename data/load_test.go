package data

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// loadMNISTOnce shares one decoded copy of MNIST between tests.
var loadMNISTOnce = sync.OnceValues(func() ([2]*Dataset, error) {
	train, test, err := LoadMNIST()
	return [2]*Dataset{train, test}, err
})

// checkDataset verifies the shape, labels and pixel range of a
// 28x28 ten-class data set.
func checkDataset(t *testing.T, d *Dataset, name string, n, firstLabel, minCount, maxCount int) {
	t.Helper()
	if d.Name != name {
		t.Errorf("Name = %q, want %q", d.Name, name)
	}
	if d.N != n || d.C != 1 || d.H != 28 || d.W != 28 || d.Classes != 10 {
		t.Errorf("%s: N,C,H,W,Classes = %d,%d,%d,%d,%d; want %d,1,28,28,10", name, d.N, d.C, d.H, d.W, d.Classes, n)
	}
	if len(d.Images) != n*28*28 || len(d.Labels) != n {
		t.Fatalf("%s: %d pixels and %d labels", name, len(d.Images), len(d.Labels))
	}
	if int(d.Labels[0]) != firstLabel {
		t.Errorf("%s: first label = %d, want %d", name, d.Labels[0], firstLabel)
	}
	for i, c := range d.ClassCounts() {
		if c < minCount || c > maxCount {
			t.Errorf("%s: class %d has %d samples, want %d..%d", name, i, c, minCount, maxCount)
		}
	}
	lo, hi := float32(1), float32(0)
	for _, p := range d.Images {
		lo, hi = min(lo, p), max(hi, p)
	}
	if lo != 0 || hi != 1 {
		t.Errorf("%s: pixel range [%v,%v], want [0,1]", name, lo, hi)
	}
}

func TestLoadMNIST(t *testing.T) {
	ds, err := loadMNISTOnce()
	if err != nil {
		t.Fatal(err)
	}
	checkDataset(t, ds[0], "mnist/train", 60000, 5, 5000, 7000)
	checkDataset(t, ds[1], "mnist/test", 10000, 7, 800, 1200)
	// The first training image is a 5 whose centre row is inked.
	if s := ds[0].Sample(0); s[14*28+14] == 0 && s[14*28+13] == 0 && s[14*28+15] == 0 {
		t.Errorf("first training image looks blank around its centre")
	}
}

func TestLoadFashionMNIST(t *testing.T) {
	if _, err := os.Stat(DefaultFashionMNISTDir); err != nil {
		t.Skipf("Fashion-MNIST is not installed at %s (apt-get install dataset-fashion-mnist): %v", DefaultFashionMNISTDir, err)
	}
	train, test, err := Load("fashion-mnist", "")
	if err != nil {
		t.Fatal(err)
	}
	// Fashion-MNIST is balanced, with 6000 and 1000 samples per class, and
	// both sets start with an ankle boot (class 9).
	checkDataset(t, train, "fashion-mnist/train", 60000, 9, 6000, 6000)
	checkDataset(t, test, "fashion-mnist/test", 10000, 9, 1000, 1000)
}

// TestLoadDir loads a small synthetic data set from a folder, with two files
// stored raw and two gzipped, through each entry point that reads folders.
func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, trainImagesFile, idxBytes([]uint32{4, 28, 28}, seq(4*28*28)))
	writeFile(t, dir, trainLabelsFile, idxBytes([]uint32{4}, []byte{3, 1, 4, 1}))
	writeFile(t, dir, testImagesFile+".gz", gzipBytes(t, idxBytes([]uint32{2, 28, 28}, seq(2*28*28))))
	writeFile(t, dir, testLabelsFile+".gz", gzipBytes(t, idxBytes([]uint32{2}, []byte{5, 9})))

	loaders := map[string]func() (*Dataset, *Dataset, error){
		"Load mnist":         func() (*Dataset, *Dataset, error) { return Load("mnist", dir) },
		"Load fashion":       func() (*Dataset, *Dataset, error) { return Load("fashion", dir) },
		"Load FASHION-MNIST": func() (*Dataset, *Dataset, error) { return Load(" FASHION-MNIST ", dir) },
		"LoadFashionMNIST":   func() (*Dataset, *Dataset, error) { return LoadFashionMNIST(dir) },
	}
	for name, load := range loaders {
		t.Run(name, func(t *testing.T) {
			train, test, err := load()
			if err != nil {
				t.Fatal(err)
			}
			prefix := "fashion-mnist/"
			if name == "Load mnist" {
				prefix = "mnist/"
			}
			if train.Name != prefix+"train" || test.Name != prefix+"test" {
				t.Errorf("names %q, %q", train.Name, test.Name)
			}
			if train.N != 4 || test.N != 2 || !slices.Equal(test.Labels, []uint8{5, 9}) {
				t.Errorf("train N=%d, test N=%d labels %v", train.N, test.N, test.Labels)
			}
			if got, want := test.Images[1], float32(7)/255; got != want {
				t.Errorf("test pixel 1 = %v, want %v", got, want)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	tmp := t.TempDir()
	partial := filepath.Join(tmp, "partial")
	if err := os.Mkdir(partial, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, partial, trainImagesFile, idxBytes([]uint32{1, 1, 1}, []byte{0}))
	notDir := writeFile(t, tmp, "file", []byte("x"))
	missing := filepath.Join(tmp, "nope")

	tests := []struct {
		name     string
		load     func() (*Dataset, *Dataset, error)
		want     []string
		notExist bool
	}{
		{"unknown name", func() (*Dataset, *Dataset, error) { return Load("cifar", "") },
			[]string{`unknown data set "cifar"`, "mnist, fashion-mnist", `"fashion"`}, false},
		{"fashion missing folder hint", func() (*Dataset, *Dataset, error) { return LoadFashionMNIST(missing) },
			[]string{missing, "does not exist", "apt-get install dataset-fashion-mnist", "pass the folder"}, true},
		{"fashion missing given folder", func() (*Dataset, *Dataset, error) { return LoadFashionMNIST(missing) },
			[]string{"fashion-mnist folder " + missing + " does not exist"}, true},
		{"mnist missing folder", func() (*Dataset, *Dataset, error) { return Load("mnist", missing) },
			[]string{"mnist folder " + missing + " does not exist", "embedded copy"}, true},
		{"folder is a file", func() (*Dataset, *Dataset, error) { return LoadFashionMNIST(notDir) },
			[]string{notDir + " is not a directory"}, false},
		{"missing file in folder", func() (*Dataset, *Dataset, error) { return Load("mnist", partial) },
			[]string{"neither " + filepath.Join(partial, trainLabelsFile) + " nor " + filepath.Join(partial, trainLabelsFile) + ".gz exists"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			train, test, err := tt.load()
			if err == nil || train != nil || test != nil {
				t.Fatalf("got %v, %v, %v; want only an error", train, test, err)
			}
			for _, s := range tt.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if got := errors.Is(err, fs.ErrNotExist); got != tt.notExist {
				t.Errorf("errors.Is(err, fs.ErrNotExist) = %v, want %v", got, tt.notExist)
			}
		})
	}
}

func TestEmbeddedErrorNames(t *testing.T) {
	_, err := loadPair(embeddedSource("no-such-file.gz"), embeddedSource(trainLabelsFile+".gz"))
	if err == nil || !strings.HasPrefix(err.Error(), "data: embedded mnist/no-such-file.gz: ") {
		t.Errorf("err = %v, want it to name the embedded file", err)
	}
	// Loading a label file as images is a dimension error naming the file.
	_, err = loadPair(embeddedSource(testLabelsFile+".gz"), embeddedSource(testLabelsFile+".gz"))
	if want := "data: embedded mnist/" + testLabelsFile + ".gz: image file must be 3-D"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("err = %v, want prefix %q", err, want)
	}
}
