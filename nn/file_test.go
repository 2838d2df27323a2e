package nn_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/zoo"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the FuzzDecode seed corpus in testdata/fuzz/FuzzDecode")

var mnist = nn.Shape{C: 1, H: 28, W: 28}

func build(t testing.TB, name string) *nn.Model {
	t.Helper()
	m, err := zoo.Build(name, mnist, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// tinyModel is a two-layer model (flatten, then a masked linear layer) small enough for the
// fuzz seed corpus.
func tinyModel(t testing.TB) *nn.Model {
	t.Helper()
	m := &nn.Model{Name: "tiny", Input: nn.Shape{C: 1, H: 2, W: 2}, Layers: []*nn.Layer{
		{Name: "flatten", Kind: nn.Flatten, Inputs: []string{nn.InputName}},
		{Name: "fc", Kind: nn.Linear, Inputs: []string{"flatten"}, In: 4, Out: 2, HasBias: true},
	}}
	if err := m.Init(1); err != nil {
		t.Fatal(err)
	}
	fc := m.Layers[1]
	fc.Mask = []float32{1, 0, 1, 1, 0, 1, 1, 0}
	for i, v := range fc.Mask {
		fc.Weight[i] *= v
	}
	fc.Bias = []float32{0.5, -0.25}
	return m
}

// mask sets a random 0/1 mask on the named layer and zeroes the masked weights.
func mask(t testing.TB, m *nn.Model, name string, rng *rand.Rand) {
	t.Helper()
	l := m.Layer(name)
	if l == nil {
		t.Fatalf("no layer %q", name)
	}
	l.Mask = make([]float32, len(l.Weight))
	for i := range l.Mask {
		if rng.Intn(2) == 1 {
			l.Mask[i] = 1
		} else {
			l.Weight[i] = 0
		}
	}
}

func encode(t testing.TB, m *nn.Model) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := nn.Encode(&b, m); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// sameModel checks that two models have the same architecture JSON and bit-identical
// parameters, with the same nil-ness.
func sameModel(t testing.TB, want, got *nn.Model) {
	t.Helper()
	wa, err := want.Architecture()
	if err != nil {
		t.Fatal(err)
	}
	ga, err := got.Architecture()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(wa, ga) {
		t.Fatalf("architecture differs:\nwant %s\n got %s", wa, ga)
	}
	for i, wl := range want.Layers {
		gl := got.Layers[i]
		for _, p := range []struct {
			name      string
			want, got []float32
		}{
			{"weight", wl.Weight, gl.Weight}, {"bias", wl.Bias, gl.Bias}, {"mask", wl.Mask, gl.Mask},
			{"gamma", wl.Gamma, gl.Gamma}, {"beta", wl.Beta, gl.Beta},
			{"running_mean", wl.Mean, gl.Mean}, {"running_var", wl.Var, gl.Var},
		} {
			if (p.want == nil) != (p.got == nil) || len(p.want) != len(p.got) {
				t.Fatalf("layer %q %s: want %d values (nil %v), got %d (nil %v)",
					wl.Name, p.name, len(p.want), p.want == nil, len(p.got), p.got == nil)
			}
			for k := range p.want {
				if math.Float32bits(p.want[k]) != math.Float32bits(p.got[k]) {
					t.Fatalf("layer %q %s[%d]: want %v, got %v", wl.Name, p.name, k, p.want[k], p.got[k])
				}
			}
		}
	}
}

func TestRoundTripZoo(t *testing.T) {
	dir := t.TempDir()
	models := map[string]*nn.Model{}
	for _, name := range zoo.Names {
		models[name] = build(t, name)
	}
	rng := rand.New(rand.NewSource(3))
	masked := build(t, "lenet5")
	mask(t, masked, "conv2", rng)
	mask(t, masked, "fc1", rng)
	masked.Name = "lenet5-masked"
	models[masked.Name] = masked
	resMasked := build(t, "resnet-small")
	mask(t, resMasked, "layer2.conv1", rng)
	mask(t, resMasked, "fc", rng)
	resMasked.Name = "resnet-small-masked"
	models[resMasked.Name] = resMasked
	models["tiny"] = tinyModel(t)

	for name, m := range models {
		t.Run(name, func(t *testing.T) {
			b := encode(t, m)
			got, err := nn.Decode(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			sameModel(t, m, got)

			path := filepath.Join(dir, name+".safetensors")
			if err := nn.Save(path, m); err != nil {
				t.Fatal(err)
			}
			onDisk, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(onDisk, b) {
				t.Error("Save wrote other bytes than Encode")
			}
			loaded, err := nn.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			sameModel(t, m, loaded)
			t.Logf("%s: %d bytes", name, len(b))
		})
	}
}

// TestDecodeByteAtATime reads through a reader that returns one byte per call.
func TestDecodeByteAtATime(t *testing.T) {
	m := build(t, "lenet5")
	got, err := nn.Decode(iotest.OneByteReader(bytes.NewReader(encode(t, m))))
	if err != nil {
		t.Fatal(err)
	}
	sameModel(t, m, got)
}

func TestEncodeDeterministic(t *testing.T) {
	for _, name := range zoo.Names {
		a := encode(t, build(t, name))
		b := encode(t, build(t, name))
		if !bytes.Equal(a, b) {
			t.Errorf("%s: two encodings of the same model differ", name)
		}
		m, err := nn.Decode(bytes.NewReader(a))
		if err != nil {
			t.Fatal(err)
		}
		if c := encode(t, m); !bytes.Equal(a, c) {
			t.Errorf("%s: re-encoding a decoded model changed the bytes", name)
		}
	}
}

// TestLayout checks the file against the safetensors layout independently of Decode.
func TestLayout(t *testing.T) {
	m := build(t, "vgg-small")
	b := encode(t, m)
	f := parse(t, b)
	n := binary.LittleEndian.Uint64(b[:8])
	if (8+n)%8 != 0 {
		t.Errorf("data starts at %d, not a multiple of 8", 8+n)
	}
	if !bytes.HasPrefix(b[8:], []byte(`{"__metadata__":`)) {
		t.Errorf("header does not start with the metadata: %.40q", b[8:])
	}
	for k, want := range map[string]string{"format": "autoprune", "version": "2"} {
		if f.meta[k] != want {
			t.Errorf("metadata %s = %q, want %q", k, f.meta[k], want)
		}
	}
	arch, _ := m.Architecture()
	if f.meta["architecture"] != string(arch) {
		t.Error("metadata architecture differs from Model.Architecture")
	}
	sum := sha256.Sum256(f.data)
	if f.meta["sha256"] != hex.EncodeToString(sum[:]) {
		t.Error("metadata sha256 is not the hash of the data buffer")
	}
	// Tensors in layer order, then Params order, packed from offset 0.
	shapes, err := m.Shapes()
	if err != nil {
		t.Fatal(err)
	}
	var off uint64
	count := 0
	for _, l := range m.Layers {
		c := m.Input.C
		if j := m.Index(l.Inputs[0]); j >= 0 {
			c = shapes[j].C
		}
		for _, p := range l.Params(c) {
			name := l.Name + "." + p.Name
			e, ok := f.tensors[name]
			if !ok {
				t.Fatalf("no tensor %q", name)
			}
			if e.DataOffsets[0] != off {
				t.Errorf("%s starts at %d, want %d", name, e.DataOffsets[0], off)
			}
			off = e.DataOffsets[1]
			count++
		}
	}
	if count != len(f.tensors) || off != uint64(len(f.data)) {
		t.Errorf("%d tensors ending at %d; file has %d tensors and %d data bytes", count, off, len(f.tensors), len(f.data))
	}
	for _, name := range []string{"conv1.bn.gamma", "conv1.bn.beta", "conv1.bn.running_mean", "conv1.bn.running_var"} {
		if e, ok := f.tensors[name]; !ok || e.Dtype != "F32" || len(e.Shape) != 1 || e.Shape[0] != 32 {
			t.Errorf("tensor %q: %+v", name, e)
		}
	}
	w := f.tensors["conv1.weight"]
	first := math.Float32frombits(binary.LittleEndian.Uint32(f.data[w.DataOffsets[0]:]))
	if first != m.Layers[0].Weight[0] {
		t.Errorf("conv1.weight[0] stored as %v, want %v", first, m.Layers[0].Weight[0])
	}
}

func TestEncodeRefusesInvalid(t *testing.T) {
	m := build(t, "lenet5")
	m.Layers[0].Weight[3] = float32(math.Inf(1))
	if err := nn.Encode(io.Discard, m); !errors.Is(err, nn.ErrInvalid) {
		t.Errorf("Encode of a model with an Inf weight: %v, want ErrInvalid", err)
	}
	if err := nn.Encode(io.Discard, nil); !errors.Is(err, nn.ErrInvalid) {
		t.Errorf("Encode(nil): %v, want ErrInvalid", err)
	}
	huge := &nn.Model{Name: "huge", Input: nn.Shape{C: 1 << 32, H: 1 << 32, W: 1},
		Layers: []*nn.Layer{{Name: "relu", Kind: nn.ReLU, Inputs: []string{nn.InputName}}}}
	if err := nn.Encode(io.Discard, huge); !errors.Is(err, nn.ErrInvalid) || !strings.Contains(err.Error(), "input shape") {
		t.Errorf("Encode with an overflowing input shape: %v", err)
	}
	m = build(t, "lenet5")
	m.Layers[0].Name = "conv\xff"
	m.Layers[1].Inputs = []string{"conv\xff"}
	if err := nn.Encode(io.Discard, m); !errors.Is(err, nn.ErrInvalid) || !strings.Contains(err.Error(), "UTF-8") {
		t.Errorf("Encode with a non-UTF-8 layer name: %v", err)
	}
}

// file is a parsed safetensors file, for building broken inputs.
type file struct {
	meta    map[string]string
	tensors map[string]*entry
	data    []byte
}

type entry struct {
	Dtype       string   `json:"dtype"`
	Shape       []int64  `json:"shape"`
	DataOffsets []uint64 `json:"data_offsets"`
}

func parse(t testing.TB, b []byte) *file {
	t.Helper()
	n := binary.LittleEndian.Uint64(b[:8])
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &raw); err != nil {
		t.Fatal(err)
	}
	f := &file{tensors: map[string]*entry{}, data: append([]byte(nil), b[8+n:]...)}
	for k, v := range raw {
		if k == "__metadata__" {
			if err := json.Unmarshal(v, &f.meta); err != nil {
				t.Fatal(err)
			}
			continue
		}
		e := new(entry)
		if err := json.Unmarshal(v, e); err != nil {
			t.Fatal(err)
		}
		f.tensors[k] = e
	}
	return f
}

// bytes assembles the file, with a fresh checksum when fixSum is set.
func (f *file) bytes(t testing.TB, fixSum bool) []byte {
	t.Helper()
	if fixSum && f.meta != nil {
		sum := sha256.Sum256(f.data)
		f.meta["sha256"] = hex.EncodeToString(sum[:])
	}
	h := map[string]any{}
	for k, v := range f.tensors {
		h[k] = v
	}
	if f.meta != nil {
		h["__metadata__"] = f.meta
	}
	header, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	return withHeader(header, f.data)
}

// withHeader assembles a file from a header (padded here) and a data buffer.
func withHeader(header, data []byte) []byte {
	for len(header)%8 != 0 {
		header = append(header, ' ')
	}
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

func headerOf(b []byte) []byte {
	n := binary.LittleEndian.Uint64(b[:8])
	return append([]byte(nil), b[8:8+n]...)
}

func dataOf(b []byte) []byte {
	n := binary.LittleEndian.Uint64(b[:8])
	return b[8+n:]
}

func setLen(b []byte, n uint64) []byte {
	c := append([]byte(nil), b...)
	binary.LittleEndian.PutUint64(c, n)
	return c
}

func TestDecodeBad(t *testing.T) {
	good := encode(t, build(t, "lenet5"))
	hlen := int(binary.LittleEndian.Uint64(good[:8]))
	mutate := func(edit func(f *file), fixSum bool) []byte {
		f := parse(t, good)
		edit(f)
		return f.bytes(t, fixSum)
	}
	arch := func(old, new string) func(f *file) {
		return func(f *file) {
			a := f.meta["architecture"]
			if !strings.Contains(a, old) {
				t.Fatalf("architecture has no %q", old)
			}
			f.meta["architecture"] = strings.Replace(a, old, new, 1)
		}
	}
	setFloat := func(name string, i int, v float32) func(f *file) {
		return func(f *file) {
			off := f.tensors[name].DataOffsets[0] + 4*uint64(i)
			binary.LittleEndian.PutUint32(f.data[off:], math.Float32bits(v))
		}
	}
	last, lastEnd := "", uint64(0) // the tensor at the end of the data buffer
	for name, e := range parse(t, good).tensors {
		if e.DataOffsets[1] > lastEnd {
			last, lastEnd = name, e.DataOffsets[1]
		}
	}
	if last != "fc3.bias" {
		t.Fatalf("last tensor of lenet5 is %q, want fc3.bias", last)
	}
	foreign := withHeader([]byte(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`), make([]byte, 4))
	dupHeader := bytes.Replace(headerOf(good), []byte(`"conv1.bias":`),
		[]byte(`"conv1.bias":{"dtype":"F32","shape":[6],"data_offsets":[600,624]},"conv1.bias":`), 1)

	for _, tc := range []struct {
		name    string
		in      []byte
		invalid bool // wraps ErrInvalid as well as ErrFormat
		msg     string
	}{
		{"empty", nil, false, "file too short: 0 bytes"},
		{"truncated length", good[:5], false, "file too short: 5 bytes"},
		{"truncated header", good[:8+hlen/2], false, "truncated header"},
		{"truncated before data", good[:8+hlen], false, "truncated data buffer: got 0 of"},
		{"truncated mid data", good[:len(good)/2], false, "truncated data buffer"},
		{"truncated last byte", good[:len(good)-1], false, "truncated data buffer"},
		{"header length over cap", setLen(good, 1<<40), false, "header length 1099511627776 exceeds the limit"},
		{"header length zero", setLen(good, 0), false, "header length 0 is too small"},
		{"header length short", setLen(good, uint64(hlen-8)), false, "header is not valid JSON: unexpected EOF"},
		{"header length long", setLen(good, uint64(hlen+8)), false, "header is not valid"},
		{"non-JSON header", withHeader([]byte("hello, world"), nil), false, "header is not valid JSON"},
		{"header not an object", withHeader([]byte(`{"a":1`), nil), false, "header is not valid JSON"},
		{"header array", withHeader([]byte(`[1,2]`), nil), false, "header is not valid JSON: it does not start with '{'"},
		{"header junk after object", withHeader([]byte(`{}  x`), nil), false, "unexpected bytes after the object"},
		{"header not UTF-8", withHeader([]byte("{\"\xff\":1}"), nil), false, "header is not valid UTF-8"},
		{"duplicate key", withHeader(dupHeader, dataOf(good)), false, `duplicate key "conv1.bias"`},
		{"foreign safetensors", foreign, false, "a safetensors file but not an autoprune model (no architecture metadata)"},
		{"foreign format", mutate(func(f *file) { f.meta["format"] = "pt" }, false), false, `not an autoprune model (format "pt")`},
		{"metadata not strings", withHeader([]byte(`{"__metadata__":{"format":1}}`), nil), false, `__metadata__ entry "format" is not a string`},
		{"metadata null", withHeader([]byte(`{"__metadata__":null}`), nil), false, "__metadata__ is not a JSON object of strings"},
		{"version 99", mutate(func(f *file) { f.meta["version"] = "99" }, false), false,
			`unsupported file format version "99": this build reads versions 1 to 2`},
		{"changed hyper-parameter", mutate(arch(`"pad":2`, `"pad":3`), false), false, "architecture checksum mismatch: the header was changed"},
		{"no architecture checksum", mutate(func(f *file) { delete(f.meta, "architecture_sha256") }, false), false, "metadata has no architecture_sha256 checksum"},
		{"version 1 (control)", mutate(func(f *file) { f.meta["version"] = "1"; delete(f.meta, "architecture_sha256") }, false), false, ""},
		{"no version", mutate(func(f *file) { delete(f.meta, "version") }, false), false, "metadata has no format version"},
		{"no architecture", mutate(func(f *file) { delete(f.meta, "architecture") }, false), false, "metadata has no architecture"},
		{"no checksum", mutate(func(f *file) { delete(f.meta, "sha256") }, false), false, "metadata has no sha256 checksum"},
		{"malformed checksum", mutate(func(f *file) { f.meta["sha256"] = "abc" }, false), false, `metadata sha256 "abc" is not a lower-case hex SHA-256`},
		{"architecture not JSON", mutate(func(f *file) { f.meta["architecture"] = "{" }, false), false, "architecture does not decode"},
		{"architecture unknown field", mutate(arch(`"name":"conv1"`, `"name":"conv1","color":"red"`), false), false,
			`architecture does not decode: json: unknown field "color"`},
		{"architecture unchanged (control)", mutate(arch(`"layers"`, `"layers"`), false), false, ""},
		{"architecture trailing data", mutate(func(f *file) { f.meta["architecture"] += " {}" }, false), false,
			"architecture does not decode: unexpected data after the JSON object"},
		{"unknown layer kind", mutate(arch(`"kind":"relu"`, `"kind":"gelu"`), false), true, `layer "relu1" has unknown kind "gelu"`},
		{"architecture inconsistent", mutate(arch(`"inputs":["conv1"]`, `"inputs":["nope"]`), false), true,
			`architecture: invalid model: layer "relu1": input "nope" is not defined before it`},
		{"input too large", mutate(arch(`"input":{"c":1,"h":28,"w":28}`, `"input":{"c":4294967296,"h":4294967296,"w":1}`), false), true,
			"input shape 4294967296x4294967296x1 is larger than"},
		{"wrong shape", mutate(func(f *file) { f.tensors["conv1.weight"].Shape = []int64{6, 1, 25, 1} }, false), false,
			`layer "conv1": weight has shape [6 1 25 1], want [6 1 5 5]`},
		{"F16 dtype", mutate(func(f *file) { f.tensors["conv1.weight"].Dtype = "F16" }, false), false,
			`tensor "conv1.weight" has dtype "F16", want F32`},
		{"missing tensor", mutate(func(f *file) {
			f.data = f.data[:f.tensors[last].DataOffsets[0]]
			delete(f.tensors, last)
		}, true), false, `missing tensor "fc3.bias" (layer "fc3", bias [10])`},
		{"extra tensor", mutate(func(f *file) {
			n := uint64(len(f.data))
			f.tensors["relu1.weight"] = &entry{"F32", []int64{1}, []uint64{n, n + 4}}
			f.data = append(f.data, 0, 0, 0, 0)
		}, true), false, `unexpected tensor "relu1.weight": the architecture has no such parameter`},
		{"bad entry", mutate(func(f *file) { f.tensors["fc1.bias"].DataOffsets = []uint64{1, 2, 3} }, false), false,
			`tensor "fc1.bias": data_offsets has 3 values, want 2`},
		{"offsets reversed", mutate(func(f *file) {
			o := f.tensors["fc1.bias"].DataOffsets
			o[0], o[1] = o[1], o[0]
		}, false), false, `tensor "fc1.bias": data_offsets [`},
		{"offsets wrong size", mutate(func(f *file) { f.tensors["fc1.bias"].DataOffsets[1] += 4 }, false), false,
			`tensor "fc1.bias": data_offsets`},
		{"overlapping offsets", mutate(func(f *file) {
			o := f.tensors[last].DataOffsets
			o[0], o[1] = o[0]-4, o[1]-4
		}, true), false, `tensors "fc3.weight" and "fc3.bias" overlap: bytes [`},
		{"hole", mutate(func(f *file) {
			o := f.tensors["fc3.weight"].DataOffsets
			o[0], o[1] = o[0]+4, o[1]+4
		}, true), false, `hole in the data buffer: bytes [243424, 243428) between "fc2.bias" and "fc3.weight" belong to no tensor`},
		{"offsets out of range", mutate(func(f *file) {
			o := f.tensors[last].DataOffsets
			o[0], o[1] = o[0]+1<<40, o[1]+1<<40
		}, false), false, `tensor "fc3.bias": data_offsets [1099511874560, 1099511874600] are out of range: the tensors take 246824 bytes`},
		{"trailing bytes", append(append([]byte(nil), good...), 0), false, "trailing bytes after the data buffer"},
		{"flipped data byte", mutate(func(f *file) { f.data[100] ^= 0x10 }, false), false, "data checksum mismatch: file is corrupt"},
		{"NaN weight", mutate(setFloat("conv2.weight", 7, float32(math.NaN())), true), true, `layer "conv2": weight[7] is NaN`},
		{"bad mask", mutate(func(f *file) {
			n := uint64(len(f.data))
			f.tensors["fc3.mask"] = &entry{"F32", []int64{10, 84}, []uint64{n, n + 4*840}}
			mask := make([]byte, 4*840)
			binary.LittleEndian.PutUint32(mask[4*5:], math.Float32bits(2))
			f.data = append(f.data, mask...)
		}, true), true, `layer "fc3": mask[5] is 2, want 0 or 1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := nn.Decode(bytes.NewReader(tc.in))
			if tc.msg == "" { // a control case: the edit must keep the file valid
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			if m != nil {
				t.Error("a model returned with the error")
			}
			if !errors.Is(err, nn.ErrFormat) {
				t.Errorf("error does not wrap ErrFormat: %v", err)
			}
			if errors.Is(err, nn.ErrInvalid) != tc.invalid {
				t.Errorf("errors.Is(err, ErrInvalid) = %v, want %v: %v", !tc.invalid, tc.invalid, err)
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not contain %q", err, tc.msg)
			}
		})
	}
}

// TestDecodeHostileSizes checks that sizes announced by a file cost no memory unless the
// bytes are there, and that the caps hold.
func TestDecodeHostileSizes(t *testing.T) {
	linear := func(in, out int) []byte {
		arch := fmt.Sprintf(`{"name":"big","input":{"c":%d,"h":1,"w":1},"layers":[`+
			`{"name":"fc","kind":"linear","inputs":["input"],"in":%d,"out":%d}]}`, in, in, out)
		f := &file{
			meta: map[string]string{"format": "autoprune", "version": "1", "architecture": arch,
				"sha256": strings.Repeat("0", 64)},
			tensors: map[string]*entry{"fc.weight": {"F32", []int64{int64(out), int64(in)},
				[]uint64{0, 4 * uint64(in) * uint64(out)}}},
		}
		return f.bytes(t, false)
	}
	for _, tc := range []struct {
		name string
		in   []byte
		msg  string
	}{
		{"header at the cap", setLen(make([]byte, 100), nn.MaxHeaderBytes), "truncated header: got 92 of 16777216 bytes"},
		{"half a GiB of missing data", linear(1<<17, 1<<10), "truncated data buffer: got 0 of 536870912 bytes"},
		{"parameters over the cap", linear(1<<26, 1<<20), "parameters take more than 1073741824 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := nn.Decode(bytes.NewReader(tc.in))
			runtime.ReadMemStats(&after)
			if !errors.Is(err, nn.ErrFormat) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %v, want one containing %q", err, tc.msg)
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 8<<20 {
				t.Errorf("Decode allocated %d bytes", n)
			}
		})
	}
}

func TestDecodeReaderError(t *testing.T) {
	good := encode(t, build(t, "lenet5"))
	boom := errors.New("boom")
	for _, n := range []int{0, 3, 8, 100, len(good) - 10} {
		r := io.MultiReader(bytes.NewReader(good[:n]), iotest.ErrReader(boom))
		_, err := nn.Decode(r)
		if !errors.Is(err, boom) || errors.Is(err, nn.ErrFormat) {
			t.Errorf("after %d bytes: %v, want the reader's error, not ErrFormat", n, err)
		}
	}
}

func TestSaveAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.safetensors")
	m := build(t, "lenet5")
	if err := nn.Save(path, m); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	bad := m.Clone()
	bad.Layers[len(bad.Layers)-1].Weight[0] = float32(math.NaN())
	err = nn.Save(path, bad)
	if err == nil {
		t.Fatal("Save of an invalid model succeeded")
	}
	if !errors.Is(err, nn.ErrInvalid) || !strings.HasPrefix(err.Error(), "model file "+path+": ") {
		t.Errorf("Save error: %v", err)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("failed Save changed the existing file")
	}
	if _, err := nn.Load(path); err != nil {
		t.Errorf("old file no longer loads: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("folder holds %d entries after a failed Save, want 1", len(entries))
	}

	// A successful Save replaces the file and keeps its permissions.
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	m2 := build(t, "mlp")
	if err := nn.Save(path, m2); err != nil {
		t.Fatal(err)
	}
	got, err := nn.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	sameModel(t, m2, got)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode after Save: %v, %v; want 0600", fi.Mode(), err)
	}
	entries, _ = os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("folder holds %d entries after Save, want 1", len(entries))
	}

	if err := nn.Save(filepath.Join(dir, "no", "such", "dir", "m.safetensors"), m); err == nil {
		t.Error("Save into a missing folder succeeded")
	}
	if err := nn.Save(dir, m); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Save over a folder: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.safetensors")
	_, err := nn.Load(missing)
	if err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "model file "+missing+": ") {
		t.Errorf("Load of a missing file: %v", err)
	}
	garbage := filepath.Join(dir, "garbage.safetensors")
	if err := os.WriteFile(garbage, []byte("definitely not a model"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = nn.Load(garbage)
	if err == nil || !errors.Is(err, nn.ErrFormat) || !strings.HasPrefix(err.Error(), "model file "+garbage+": ") {
		t.Errorf("Load of a garbage file: %v", err)
	}
}

// corpus is the deliberate seed corpus of FuzzDecode: a valid tiny model and broken ones.
func corpus(t testing.TB) map[string][]byte {
	good := encode(t, tinyModel(t))
	f := parse(t, good)
	f.meta["version"] = "99"
	v99 := f.bytes(t, false)
	f = parse(t, good)
	f.tensors["fc.mask"].Dtype = "F16"
	f16 := f.bytes(t, false)
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)-3] ^= 1
	return map[string][]byte{
		"valid-tiny":     good,
		"truncated-tiny": good[:len(good)-9],
		"checksum-tiny":  flipped,
		"version99-tiny": v99,
		"f16-tiny":       f16,
		"foreign":        withHeader([]byte(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`), make([]byte, 4)),
	}
}

func corpusFile(b []byte) []byte {
	return []byte("go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n")
}

// TestFuzzCorpus checks that the committed seed corpus matches what the current encoder
// writes; run with -update-corpus to rewrite it.
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	seeds := corpus(t)
	m, err := nn.Decode(bytes.NewReader(seeds["valid-tiny"]))
	if err != nil {
		t.Fatalf("valid seed does not decode: %v", err)
	}
	sameModel(t, tinyModel(t), m)
	for name, b := range seeds {
		path := filepath.Join(dir, name)
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, corpusFile(b), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, corpusFile(b)) {
			t.Errorf("%s is stale: run go test ./nn/ -run TestFuzzCorpus -update-corpus", path)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(encode(f, tinyModel(f)))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := nn.Decode(bytes.NewReader(b))
		if err != nil {
			if m != nil {
				t.Fatal("model returned with an error")
			}
			if !errors.Is(err, nn.ErrFormat) {
				t.Fatalf("error does not wrap ErrFormat: %v", err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("decoded model does not validate: %v", err)
		}
		var e1 bytes.Buffer
		if err := nn.Encode(&e1, m); err != nil {
			t.Fatalf("decoded model does not encode: %v", err)
		}
		m2, err := nn.Decode(bytes.NewReader(e1.Bytes()))
		if err != nil {
			t.Fatalf("re-encoded model does not decode: %v", err)
		}
		sameModel(t, m, m2)
		var e2 bytes.Buffer
		if err := nn.Encode(&e2, m2); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(e1.Bytes(), e2.Bytes()) {
			t.Fatal("encoding is not stable across a round trip")
		}
	})
}

func ExampleEncode() {
	m := &nn.Model{Name: "tiny", Input: nn.Shape{C: 1, H: 2, W: 2}, Layers: []*nn.Layer{
		{Name: "flatten", Kind: nn.Flatten, Inputs: []string{nn.InputName}},
		{Name: "fc", Kind: nn.Linear, Inputs: []string{"flatten"}, In: 4, Out: 2, HasBias: true},
	}}
	if err := m.Init(1); err != nil {
		fmt.Println(err)
		return
	}
	var buf bytes.Buffer
	if err := nn.Encode(&buf, m); err != nil {
		fmt.Println(err)
		return
	}
	back, err := nn.Decode(&buf)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(back.Name, len(back.Layers), back.Layers[1].Weight[0] == m.Layers[1].Weight[0])
	// Output: tiny 2 true
}

func ExampleSave() {
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	m, err := zoo.Build("lenet5", nn.Shape{C: 1, H: 28, W: 28}, 10, 1)
	if err != nil {
		fmt.Println(err)
		return
	}
	path := filepath.Join(dir, "lenet5.safetensors")
	if err := nn.Save(path, m); err != nil {
		fmt.Println(err)
		return
	}
	back, err := nn.Load(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(back.Name, len(back.Layers), back.Hash() == m.Hash())
	_, err = nn.Load(filepath.Join(dir, "missing.safetensors"))
	fmt.Println(errors.Is(err, fs.ErrNotExist))
	// Output:
	// lenet5 12 true
	// true
}

// TestMaxLayers checks the layer cap on both sides: a model at the cap round-trips, one over
// it is refused by Encode and Decode.
func TestMaxLayers(t *testing.T) {
	chain := func(n int) *nn.Model {
		m := &nn.Model{Name: "deep", Input: nn.Shape{C: 1, H: 1, W: 1}}
		prev := nn.InputName
		for i := 0; i < n; i++ {
			name := fmt.Sprintf("l%d", i)
			m.Layers = append(m.Layers, &nn.Layer{Name: name, Kind: nn.ReLU, Inputs: []string{prev}})
			prev = name
		}
		return m
	}
	m := chain(nn.MaxLayers)
	got, err := nn.Decode(bytes.NewReader(encode(t, m)))
	if err != nil {
		t.Fatal(err)
	}
	sameModel(t, m, got)

	over := chain(nn.MaxLayers + 1)
	if err := nn.Encode(io.Discard, over); err == nil || !strings.Contains(err.Error(), "over the limit") {
		t.Errorf("Encode of %d layers: %v", len(over.Layers), err)
	}
	arch, err := over.Architecture()
	if err != nil {
		t.Fatal(err)
	}
	f := &file{meta: map[string]string{"format": "autoprune", "version": "1", "architecture": string(arch)}}
	_, err = nn.Decode(bytes.NewReader(f.bytes(t, true)))
	if want := fmt.Sprintf("architecture has %d layers, over the limit of %d", nn.MaxLayers+1, nn.MaxLayers); !errors.Is(err, nn.ErrFormat) || !strings.Contains(err.Error(), want) {
		t.Errorf("Decode of %d layers: %v, want %q", len(over.Layers), err, want)
	}
}
