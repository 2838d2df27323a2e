// Package data loads the MNIST and Fashion-MNIST image classification data
// sets from IDX files and provides splitting and mini-batching helpers.
//
// Images are held in memory once as float32 values in NCHW layout, scaled
// from bytes to [0,1] by dividing by 255. MNIST is embedded in the package;
// Fashion-MNIST is read from a folder, by default the one installed by the
// Debian package dataset-fashion-mnist.
package data

import (
	"fmt"
	"math/bits"
)

// Dataset holds a set of images and their class labels in memory.
type Dataset struct {
	// Name identifies the data, e.g. "mnist/train".
	Name string
	// Images holds N*C*H*W pixel values in NCHW order, each in [0,1] unless
	// normalised (Normalize).
	Images []float32
	// Labels holds the class index of each of the N samples.
	Labels []uint8
	// N is the number of samples; C, H and W are the channels, height and
	// width of each image.
	N, C, H, W int
	// Classes is the number of label classes (10 for MNIST and Fashion-MNIST).
	Classes int
	// HeldOut, when positive, says that the last HeldOut samples are the data's own
	// validation samples (an image folder's val/): Split returns them as the validation
	// part. Subsets and heads hold none.
	HeldOut int
}

// SampleSize returns the number of float32 values per image, C*H*W.
func (d *Dataset) SampleSize() int { return d.C * d.H * d.W }

// Sample returns the pixels of image i as a view into d.Images; it does not
// copy. The returned slice has its capacity limited to one image, so
// appending to it never overwrites the next image. It panics if i is out of
// range.
func (d *Dataset) Sample(i int) []float32 {
	if i < 0 || i >= d.N {
		panic(fmt.Sprintf("data: sample index %d out of range [0,%d)", i, d.N))
	}
	s := d.SampleSize()
	return d.Images[i*s : (i+1)*s : (i+1)*s]
}

// Subset returns a new Dataset holding copies of the samples at the given
// indices, in that order. Indices may repeat. The Name is kept. It panics if
// an index is out of range.
func (d *Dataset) Subset(idx []int) *Dataset {
	s := d.SampleSize()
	out := &Dataset{
		Name:    d.Name,
		Images:  make([]float32, len(idx)*s),
		Labels:  make([]uint8, len(idx)),
		N:       len(idx),
		C:       d.C,
		H:       d.H,
		W:       d.W,
		Classes: d.Classes,
	}
	for j, i := range idx {
		copy(out.Images[j*s:(j+1)*s], d.Sample(i))
		out.Labels[j] = d.Labels[i]
	}
	return out
}

// Split divides d into a training part and a validation part. The samples
// are shuffled with a permutation determined by seed alone; the first
// floor(valFraction*N) samples of the permutation form val and the rest form
// train. The two parts are disjoint copies that together hold every sample.
// Their names are d.Name with ":train" and ":val" appended. It returns an
// error if valFraction is not in [0,1). When d holds its own validation samples
// (HeldOut), they are val and the others train, whatever valFraction and seed.
func (d *Dataset) Split(valFraction float64, seed int64) (train, val *Dataset, err error) {
	if !(valFraction >= 0 && valFraction < 1) {
		return nil, nil, fmt.Errorf("data: %s: validation fraction %v is not in [0,1)", d.Name, valFraction)
	}
	if d.HeldOut > 0 && d.HeldOut < d.N {
		n := d.N - d.HeldOut
		idx := make([]int, d.N)
		for i := range idx {
			idx[i] = i
		}
		train, val = d.Subset(idx[:n]), d.Subset(idx[n:])
		val.Name, train.Name = d.Name+":val", d.Name+":train"
		return train, val, nil
	}
	nVal := int(valFraction * float64(d.N))
	perm := permutation(d.N, seed)
	val = d.Subset(perm[:nVal])
	train = d.Subset(perm[nVal:])
	val.Name = d.Name + ":val"
	train.Name = d.Name + ":train"
	return train, val, nil
}

// Head returns a copy of the first n samples of d. n is clipped to [0,N].
func (d *Dataset) Head(n int) *Dataset {
	n = max(0, min(n, d.N))
	s := d.SampleSize()
	return &Dataset{
		Name:    d.Name,
		Images:  append([]float32(nil), d.Images[:n*s]...),
		Labels:  append([]uint8(nil), d.Labels[:n]...),
		N:       n,
		C:       d.C,
		H:       d.H,
		W:       d.W,
		Classes: d.Classes,
	}
}

// Normalize maps every pixel x of channel c to (x - mean[c]) / std[c], as a model trained
// on normalised images expects; one value in mean or std applies to every channel.
func (d *Dataset) Normalize(mean, std []float32) error {
	pick := func(v []float32, c int) (float32, error) {
		switch len(v) {
		case 1:
			return v[0], nil
		case d.C:
			return v[c], nil
		}
		return 0, fmt.Errorf("data: %s: %d values for %d channels (want 1 or %d)", d.Name, len(v), d.C, d.C)
	}
	hw := d.H * d.W
	for c := 0; c < d.C; c++ {
		m, err := pick(mean, c)
		if err != nil {
			return err
		}
		s, err := pick(std, c)
		if err != nil {
			return err
		}
		if !(s > 0) {
			return fmt.Errorf("data: %s: standard deviation %v of channel %d must be positive", d.Name, s, c)
		}
		for n := 0; n < d.N; n++ {
			px := d.Images[(n*d.C+c)*hw : (n*d.C+c+1)*hw]
			for i := range px {
				px[i] = (px[i] - m) / s
			}
		}
	}
	return nil
}

// ClassCounts returns how many samples carry each label, indexed by label.
func (d *Dataset) ClassCounts() []int {
	counts := make([]int, d.Classes)
	for _, l := range d.Labels {
		if int(l) < len(counts) {
			counts[l]++
		}
	}
	return counts
}

// permutation returns a permutation of 0..n-1 that depends only on seed. It
// uses its own generator and Fisher-Yates shuffle so that the result does not
// change between Go releases.
func permutation(n int, seed int64) []int {
	p := make([]int, n)
	permute(p, seed)
	return p
}

// permute fills p with a permutation of 0..len(p)-1 determined by seed.
func permute(p []int, seed int64) {
	for i := range p {
		p[i] = i
	}
	g := splitMix64{state: uint64(seed)}
	for i := len(p) - 1; i > 0; i-- {
		j := int(g.below(uint64(i + 1)))
		p[i], p[j] = p[j], p[i]
	}
}

// splitMix64 is the SplitMix64 pseudo-random generator.
type splitMix64 struct{ state uint64 }

func (g *splitMix64) next() uint64 {
	g.state += 0x9e3779b97f4a7c15
	z := g.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// below returns a uniform value in [0,n) for n > 0 using Lemire's
// multiply-and-reject method.
func (g *splitMix64) below(n uint64) uint64 {
	hi, lo := bits.Mul64(g.next(), n)
	if lo < n {
		thresh := -n % n
		for lo < thresh {
			hi, lo = bits.Mul64(g.next(), n)
		}
	}
	return hi
}
