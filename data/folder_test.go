package data

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writePNG saves one channel of a sample (values in [0,1]) as an 8-bit gray PNG.
func writePNG(t testing.TB, path string, px []float32, h, w int) {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i, v := range px {
		img.Pix[i] = uint8(math.Round(float64(v) * 255))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// mnistFolder writes the first n test images of MNIST classes 0..k-1 as an image folder
// with train/ and test/ splits (the first half of each class in train) and returns the
// samples in the order LoadFolder reads them.
func mnistFolder(t testing.TB, dir string, n, k int) *Dataset {
	t.Helper()
	_, test, err := LoadMNIST()
	if err != nil {
		t.Fatal(err)
	}
	var idx []int
	for i := 0; i < test.N && len(idx) < n; i++ {
		if int(test.Labels[i]) < k {
			idx = append(idx, i)
		}
	}
	for j, i := range idx {
		split := "train"
		if j%2 == 1 {
			split = "test"
		}
		writePNG(t, filepath.Join(dir, split, fmt.Sprintf("class-%d", test.Labels[i]), fmt.Sprintf("%05d.png", i)), test.Sample(i), 28, 28)
	}
	return test.Subset(idx)
}

// An image folder of MNIST digits reads back as the same pixels and labels as the IDX
// files, classes numbered by their folder names.
func TestLoadFolderMatchesIDX(t *testing.T) {
	dir := t.TempDir()
	want := mnistFolder(t, dir, 60, 3)
	train, test, err := LoadFolder(dir, FolderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if train.C != 1 || train.H != 28 || train.W != 28 || train.Classes != 3 || train.N+test.N != want.N {
		t.Fatalf("train %dx%dx%d, %d classes, %d+%d samples", train.C, train.H, train.W, train.Classes, train.N, test.N)
	}
	// Match every loaded sample to the original with the same pixels: same label.
	find := func(px []float32) int {
		for i := 0; i < want.N; i++ {
			s := want.Sample(i)
			same := true
			for j := range s {
				if math.Abs(float64(s[j]-px[j])) > 1e-6 {
					same = false
					break
				}
			}
			if same {
				return i
			}
		}
		return -1
	}
	for _, d := range []*Dataset{train, test} {
		for i := 0; i < d.N; i++ {
			j := find(d.Sample(i))
			if j < 0 {
				t.Fatalf("%s sample %d matches no original image", d.Name, i)
			}
			if d.Labels[i] != want.Labels[j] {
				t.Errorf("%s sample %d: label %d, want %d", d.Name, i, d.Labels[i], want.Labels[j])
			}
		}
	}
}

// RGB images are read as three channels, resized to the size asked for; without train/
// and test/ a seventh of the images is the test set.
func TestLoadFolderRGB(t *testing.T) {
	dir := t.TempDir()
	for c, col := range []color.RGBA{{255, 0, 0, 255}, {0, 0, 255, 255}} {
		for i := 0; i < 7; i++ {
			img := image.NewRGBA(image.Rect(0, 0, 32, 32))
			for p := 0; p < 32*32; p++ {
				img.Set(p%32, p/32, col)
			}
			path := filepath.Join(dir, []string{"cat", "dog"}[c], fmt.Sprintf("%d.png", i))
			os.MkdirAll(filepath.Dir(path), 0o755)
			var b bytes.Buffer
			png.Encode(&b, img)
			os.WriteFile(path, b.Bytes(), 0o644)
		}
	}
	train, test, err := LoadFolder(dir, FolderOptions{Size: 16})
	if err != nil {
		t.Fatal(err)
	}
	if train.C != 3 || train.H != 16 || train.W != 16 || train.Classes != 2 || test.N != 2 || train.N != 12 {
		t.Fatalf("%dx%dx%d, %d classes, %d train, %d test", train.C, train.H, train.W, train.Classes, train.N, test.N)
	}
	for i := 0; i < train.N; i++ {
		s := train.Sample(i)
		red, blue := s[0], s[2*256]
		if (train.Labels[i] == 0) != (red == 1 && blue == 0) {
			t.Errorf("sample %d, label %d: red %v blue %v", i, train.Labels[i], red, blue)
		}
	}
	gray, _, err := LoadFolder(dir, FolderOptions{Channels: 1})
	if err != nil || gray.C != 1 || gray.H != 32 {
		t.Fatalf("as gray: %v %+v", err, gray)
	}
}

func TestLoadFolderErrors(t *testing.T) {
	dir := t.TempDir()
	mnistFolder(t, dir, 20, 2)
	bad := filepath.Join(dir, "train", "class-1", "broken.png")
	if err := os.WriteFile(bad, []byte("not an image"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadFolder(dir, FolderOptions{}); err == nil || !strings.Contains(err.Error(), "broken.png") || !errors.Is(err, ErrFormat) {
		t.Errorf("corrupt image: %v", err)
	}
	os.Remove(bad)
	os.MkdirAll(filepath.Join(dir, "test", "class-9"), 0o755)
	if _, _, err := LoadFolder(dir, FolderOptions{}); err == nil || !strings.Contains(err.Error(), `class folder "class-9" is not among the training classes`) {
		t.Errorf("unknown test class: %v", err)
	}
	one := t.TempDir()
	os.MkdirAll(filepath.Join(one, "only"), 0o755)
	if _, _, err := LoadFolder(one, FolderOptions{}); err == nil || !strings.Contains(err.Error(), "1 class folders") {
		t.Errorf("one class: %v", err)
	}
	if _, _, err := LoadFolder(filepath.Join(one, "none"), FolderOptions{}); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing folder: %v", err)
	}
}

// npyBytes encodes an array as a version 1.0 .npy file.
func npyBytes(descr string, shape []int, data any) []byte {
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = fmt.Sprint(d)
	}
	sh := strings.Join(dims, ", ")
	if len(shape) == 1 {
		sh += ","
	}
	h := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, sh)
	h += strings.Repeat(" ", 63-(10+len(h))%64) + "\n"
	var b bytes.Buffer
	b.WriteString("\x93NUMPY\x01\x00")
	binary.Write(&b, binary.LittleEndian, uint16(len(h)))
	b.WriteString(h)
	binary.Write(&b, binary.LittleEndian, data)
	return b.Bytes()
}

func TestLoadNPY(t *testing.T) {
	dir := t.TempDir()
	// Training images as float32 N x C x H x W, test images as uint8 N x H x W.
	trainPx := make([]float32, 4*3*2*2)
	for i := range trainPx {
		trainPx[i] = float32(i) / 100
	}
	files := map[string][]byte{
		npyTrainImages: npyBytes("<f4", []int{4, 3, 2, 2}, trainPx),
		npyTrainLabels: npyBytes("<i8", []int{4}, []int64{0, 1, 2, 1}),
		npyTestImages:  npyBytes("|u1", []int{2, 2, 2}, []uint8{0, 51, 102, 255, 1, 2, 3, 4}),
		npyTestLabels:  npyBytes("<i8", []int{2}, []int64{4, 0}),
	}
	for name, b := range files {
		os.WriteFile(filepath.Join(dir, name), b, 0o644)
	}
	if _, _, err := LoadNPY(dir); err == nil || !strings.Contains(err.Error(), "test images are 1x2x2, training images 3x2x2") {
		t.Fatalf("shape mismatch: %v", err)
	}
	os.WriteFile(filepath.Join(dir, npyTestImages), npyBytes("|u1", []int{2, 3, 2, 2}, make([]uint8, 24)), 0o644)
	train, test, err := LoadNPY(dir)
	if err != nil {
		t.Fatal(err)
	}
	if train.N != 4 || train.C != 3 || train.H != 2 || train.Classes != 5 || test.Classes != 5 || train.Images[7] != 0.07 || train.Labels[2] != 2 {
		t.Errorf("train %+v", train)
	}
	os.WriteFile(filepath.Join(dir, npyTestImages), npyBytes("|u1", []int{2, 1, 2, 2}, []uint8{0, 51, 102, 255, 1, 2, 3, 4}), 0o644)
	os.WriteFile(filepath.Join(dir, npyTrainImages), npyBytes("|u1", []int{4, 1, 2, 2}, make([]uint8, 16)), 0o644)
	if _, test, err = LoadNPY(dir); err != nil || test.Images[1] != 0.2 || test.Images[3] != 1 {
		t.Errorf("uint8 images: %v %v", err, test)
	}
	cases := map[string][]byte{
		"not a .npy file":         []byte("PK\x03\x04 a zip file"),
		"Fortran-ordered":         bytes.Replace(npyBytes("<i8", []int{4}, []int64{0, 1, 2, 1}), []byte("False"), []byte("True "), 1),
		"element type \"<f8\"":    npyBytes("<f8", []int{4}, []float64{0, 1, 2, 1}),
		"bytes of data for shape": npyBytes("<i8", []int{5}, []int64{0, 1, 2, 1}),
		"out of range [0,256)":    npyBytes("<i8", []int{4}, []int64{0, 1, 300, 1}),
		"images but":              npyBytes("<i8", []int{3}, []int64{0, 1, 2}),
	}
	for want, b := range cases {
		os.WriteFile(filepath.Join(dir, npyTrainLabels), b, 0o644)
		_, _, err := LoadNPY(dir)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "train_") {
			t.Errorf("want an error with %q naming the file, got %v", want, err)
		}
	}
}

func TestNormalize(t *testing.T) {
	d := &Dataset{Name: "x", N: 2, C: 2, H: 1, W: 2, Images: []float32{1, 1, 3, 3, 1, 1, 3, 3}}
	if err := d.Normalize([]float32{1, 2}, []float32{0.5, 1}); err != nil {
		t.Fatal(err)
	}
	want := []float32{0, 0, 1, 1, 0, 0, 1, 1}
	for i := range want {
		if d.Images[i] != want[i] {
			t.Fatalf("normalised %v, want %v", d.Images, want)
		}
	}
	if err := d.Normalize([]float32{0, 0, 0}, []float32{1}); err == nil {
		t.Error("3 means for 2 channels accepted")
	}
	if err := d.Normalize([]float32{0}, []float32{0}); err == nil {
		t.Error("zero deviation accepted")
	}
}

// Malformed .npy files never panic and are refused as format errors.
func FuzzReadNPY(f *testing.F) {
	f.Add(npyBytes("<f4", []int{2, 1, 2, 2}, make([]float32, 8)))
	f.Add(npyBytes("<i8", []int{3}, []int64{1, 2, 3}))
	f.Add(npyBytes("|u1", []int{2, 2}, []uint8{1, 2, 3, 4}))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := readNPY(bytes.NewReader(b), true)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v is not a format error", err)
			}
			return
		}
		n := 1
		for _, d := range a.shape {
			n *= d
		}
		if len(a.f32) != n && len(a.ints) != n {
			t.Fatalf("shape %v but %d/%d values", a.shape, len(a.f32), len(a.ints))
		}
	})
}

// Malformed image files never panic: the decoding path refuses them as format errors.
func FuzzDecodeImage(f *testing.F) {
	var b bytes.Buffer
	png.Encode(&b, image.NewGray(image.Rect(0, 0, 3, 2)))
	f.Add(b.Bytes())
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "x.png")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		img, err := decodeImage(path)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v is not a format error", err)
			}
			return
		}
		px := make([]float32, 3*4*5)
		sample(img, px, 3, 4, 5)
		for _, v := range px {
			if !(v >= 0 && v <= 1) {
				t.Fatalf("pixel %v outside [0,1]", v)
			}
		}
	})
}

// A val/ folder beside train/ and test/ is the validation split: Split returns exactly its
// images, whatever the fraction and seed asked for.
func TestLoadFolderValIsTheValidationSplit(t *testing.T) {
	dir := t.TempDir()
	want := mnistFolder(t, dir, 60, 3) // train/ and test/, alternating
	_, test, err := LoadMNIST()
	if err != nil {
		t.Fatal(err)
	}
	// val/: ten more images of classes 0 and 1 (not every class).
	var val []int
	for i := test.N - 1; i >= 0 && len(val) < 10; i-- {
		if test.Labels[i] < 2 {
			val = append(val, i)
			writePNG(t, filepath.Join(dir, "val", fmt.Sprintf("class-%d", test.Labels[i]), fmt.Sprintf("%05d.png", i)), test.Sample(i), 28, 28)
		}
	}
	tr, _, err := LoadFolder(dir, FolderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.HeldOut != 10 || tr.N != want.N/2+10 {
		t.Fatalf("%d training images with %d held out, want %d with 10", tr.N, tr.HeldOut, want.N/2+10)
	}
	for _, frac := range []float64{0, 0.5} {
		a, v, err := tr.Split(frac, 3)
		if err != nil {
			t.Fatal(err)
		}
		if v.N != 10 || a.N != tr.N-10 || v.HeldOut != 0 || a.HeldOut != 0 {
			t.Fatalf("split %v: %d train, %d val", frac, a.N, v.N)
		}
		counts := map[uint8]int{}
		for _, l := range v.Labels {
			counts[l]++
		}
		if counts[2] != 0 || counts[0]+counts[1] != 10 {
			t.Errorf("validation labels %v, want the val/ images of classes 0 and 1", counts)
		}
	}
}
