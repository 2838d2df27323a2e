package data

import (
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // JPEG images in folders
	_ "image/png"  // PNG images in folders
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/autoprune/autoprune/internal/fileio"
)

// FolderOptions says how LoadFolder turns image files into samples.
type FolderOptions struct {
	// Size is the height and width every image is resized to (bilinear); 0 keeps the size
	// of the first training image, and images of another size are resized to it.
	Size int
	// Channels is 1 (grayscale) or 3 (RGB); 0 takes 3 when the first training image has
	// colour, else 1.
	Channels int
}

// imageExts are the file extensions LoadFolder reads; other files are skipped.
var imageExts = map[string]bool{".png": true, ".jpg": true, ".jpeg": true}

// maxClasses is the most classes a data set can have (labels are bytes).
const maxClasses = 256

// LoadFolder reads images in the torchvision ImageFolder layout: one subfolder per class,
// named by the class, holding PNG or JPEG files; classes are numbered in the sorted order
// of their names. dir either holds the class folders (then a seeded seventh of the images
// becomes the test set) or train/ and test/ folders that each hold them (a val/ folder,
// if any, is the validation split: its images follow the training images and HeldOut
// counts them, so that Split returns them; with val/ and no test/, val/ is the test set). Pixels are scaled to [0,1]. Errors name the
// file; errors about content match ErrFormat.
func LoadFolder(dir string, opt FolderOptions) (train, test *Dataset, err error) {
	if opt.Channels != 0 && opt.Channels != 1 && opt.Channels != 3 {
		return nil, nil, fmt.Errorf("data: image folder %s: %d channels (want 1 or 3)", dir, opt.Channels)
	}
	if opt.Size < 0 || opt.Size > 4096 {
		return nil, nil, fmt.Errorf("data: image folder %s: size %d (want 1..4096, or 0 for the images' own)", dir, opt.Size)
	}
	info, err := os.Stat(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("data: image folder %s: %w", dir, fileio.StripPath(err))
	}
	if !info.IsDir() {
		return nil, nil, fmt.Errorf("data: image folder %s is not a directory", dir)
	}
	isDir := func(name string) bool {
		fi, err := os.Stat(filepath.Join(dir, name))
		return err == nil && fi.IsDir()
	}
	var trainDirs []string
	testDir := ""
	switch {
	case isDir("train") && isDir("test"):
		trainDirs, testDir = []string{filepath.Join(dir, "train")}, filepath.Join(dir, "test")
		if isDir("val") {
			trainDirs = append(trainDirs, filepath.Join(dir, "val"))
		}
	case isDir("train") && isDir("val"):
		trainDirs, testDir = []string{filepath.Join(dir, "train")}, filepath.Join(dir, "val")
	case isDir("train"):
		trainDirs = []string{filepath.Join(dir, "train")}
	default:
		trainDirs = []string{dir}
	}
	classes, err := classNames(trainDirs[0])
	if err != nil {
		return nil, nil, err
	}
	var files []labelled
	heldOut := 0
	for i, d := range trainDirs {
		fs, err := listImages(d, classes, i == 0)
		if err != nil {
			return nil, nil, err
		}
		files = append(files, fs...)
		if i > 0 {
			heldOut = len(fs) // val/, after train/
		}
	}
	first, err := decodeImage(files[0].path)
	if err != nil {
		return nil, nil, err
	}
	if opt.Size == 0 {
		b := first.Bounds()
		if b.Dx() != b.Dy() {
			opt.Size = -1 // keep the first image's own height and width
		} else {
			opt.Size = b.Dx()
		}
	}
	h, w := opt.Size, opt.Size
	if opt.Size == -1 {
		h, w = first.Bounds().Dy(), first.Bounds().Dx()
	}
	if opt.Channels == 0 {
		opt.Channels = 1
		if hasColour(first) {
			opt.Channels = 3
		}
	}
	name := filepath.Base(filepath.Clean(dir))
	train, err = decodeAll(files, len(classes), opt.Channels, h, w)
	if err != nil {
		return nil, nil, err
	}
	if testDir == "" {
		full := train
		full.Name = name
		train, test, err = full.Split(1.0/7, 1)
		if err != nil {
			return nil, nil, err
		}
	} else {
		tf, err := listImages(testDir, classes, false)
		if err != nil {
			return nil, nil, err
		}
		if test, err = decodeAll(tf, len(classes), opt.Channels, h, w); err != nil {
			return nil, nil, err
		}
	}
	train.Name, test.Name = name+"/train", name+"/test"
	train.HeldOut = heldOut
	return train, test, nil
}

// labelled is an image file and its class.
type labelled struct {
	path  string
	label int
}

// classNames lists the class folders of dir, sorted.
func classNames(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("data: image folder %s: %w", dir, fileio.StripPath(err))
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	if len(names) < 2 {
		return nil, fmt.Errorf("data: image folder %s: %w", dir, formatErrorf("%d class folders (want one subfolder per class, at least 2)", len(names)))
	}
	if len(names) > maxClasses {
		return nil, fmt.Errorf("data: image folder %s: %w", dir, formatErrorf("%d class folders (at most %d)", len(names), maxClasses))
	}
	sort.Strings(names)
	return names, nil
}

// listImages lists the image files of every class folder of dir. A training split needs
// every class; a test split may lack some but must not add any.
func listImages(dir string, classes []string, training bool) ([]labelled, error) {
	index := map[string]int{}
	for i, c := range classes {
		index[c] = i
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("data: image folder %s: %w", dir, fileio.StripPath(err))
	}
	var out []labelled
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		label, ok := index[e.Name()]
		if !ok {
			return nil, fmt.Errorf("data: image folder %s: %w", dir, formatErrorf("class folder %q is not among the training classes %v", e.Name(), classes))
		}
		n := 0
		err := filepath.WalkDir(filepath.Join(dir, e.Name()), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && imageExts[strings.ToLower(filepath.Ext(path))] {
				out = append(out, labelled{path, label})
				n++
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("data: image folder %s: %w", dir, fileio.StripPath(err))
		}
		if n == 0 && training {
			return nil, fmt.Errorf("data: image folder %s: %w", filepath.Join(dir, e.Name()), formatErrorf("no PNG or JPEG image in class %q", e.Name()))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("data: image folder %s: %w", dir, formatErrorf("no PNG or JPEG image"))
	}
	return out, nil
}

func decodeImage(path string) (image.Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("data: %s: cannot open: %w", path, fileio.StripPath(err))
	}
	defer f.Close()
	cfg, _, err := image.DecodeConfig(f)
	if err != nil {
		return nil, fmt.Errorf("data: %s: %w", path, &formatError{msg: "not a PNG or JPEG image", err: err})
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width*cfg.Height > 1<<26 {
		return nil, fmt.Errorf("data: %s: %w", path, formatErrorf("image of %dx%d pixels", cfg.Width, cfg.Height))
	}
	if _, err := f.Seek(0, 0); err != nil {
		return nil, fmt.Errorf("data: %s: %w", path, err)
	}
	img, _, err := image.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("data: %s: %w", path, &formatError{msg: "not a PNG or JPEG image", err: err})
	}
	return img, nil
}

// hasColour tells whether an image is stored in colour (its pixels may still be gray).
func hasColour(img image.Image) bool {
	switch img.ColorModel() {
	case color.GrayModel, color.Gray16Model:
		return false
	}
	return true
}

// decodeAll decodes the files into a data set of c x h x w samples, in parallel.
func decodeAll(files []labelled, classes, c, h, w int) (*Dataset, error) {
	if int64(len(files))*int64(c*h*w) > 1<<31 {
		return nil, fmt.Errorf("data: %d images of %dx%dx%d do not fit in memory", len(files), c, h, w)
	}
	d := &Dataset{N: len(files), C: c, H: h, W: w, Classes: classes,
		Images: make([]float32, len(files)*c*h*w), Labels: make([]uint8, len(files))}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  int
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				stop := first != nil
				mu.Unlock()
				if stop || i >= len(files) {
					return
				}
				img, err := decodeImage(files[i].path)
				if err == nil {
					sample(img, d.Images[i*c*h*w:(i+1)*c*h*w], c, h, w)
					d.Labels[i] = uint8(files[i].label)
				}
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}
	return d, nil
}

// sample writes img resized to h x w (bilinear, pixel centres aligned) as c channels in
// [0,1] into dst (CHW): gray is the luminance, RGB the colour channels.
func sample(img image.Image, dst []float32, c, h, w int) {
	b := img.Bounds()
	sh, sw := b.Dy(), b.Dx()
	// Read the source once as RGB in [0,1].
	src := make([]float32, 3*sh*sw)
	for y := 0; y < sh; y++ {
		for x := 0; x < sw; x++ {
			r, g, bl, _ := img.At(b.Min.X+x, b.Min.Y+y).RGBA()
			i := y*sw + x
			src[i], src[sh*sw+i], src[2*sh*sw+i] = float32(r)/65535, float32(g)/65535, float32(bl)/65535
		}
	}
	at := func(ch, y, x int) float32 { return src[ch*sh*sw+y*sw+x] }
	pix := func(ch int, fy, fx float32) float32 {
		if sh == h && sw == w {
			return at(ch, int(fy), int(fx))
		}
		y0, x0 := int(fy), int(fx)
		y1, x1 := min(y0+1, sh-1), min(x0+1, sw-1)
		dy, dx := fy-float32(y0), fx-float32(x0)
		top := at(ch, y0, x0)*(1-dx) + at(ch, y0, x1)*dx
		bot := at(ch, y1, x0)*(1-dx) + at(ch, y1, x1)*dx
		return top*(1-dy) + bot*dy
	}
	for y := 0; y < h; y++ {
		fy := max(0, min(float32(sh-1), (float32(y)+0.5)*float32(sh)/float32(h)-0.5))
		for x := 0; x < w; x++ {
			fx := max(0, min(float32(sw-1), (float32(x)+0.5)*float32(sw)/float32(w)-0.5))
			if c == 1 {
				// ITU-R 601 luma, as image/color's gray conversion.
				dst[y*w+x] = 0.299*pix(0, fy, fx) + 0.587*pix(1, fy, fx) + 0.114*pix(2, fy, fx)
				continue
			}
			for ch := 0; ch < 3; ch++ {
				dst[ch*h*w+y*w+x] = pix(ch, fy, fx)
			}
		}
	}
}
