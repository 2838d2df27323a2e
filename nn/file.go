package nn

// The model file is a safetensors file:
//
//	8 bytes    little-endian uint64 N, the header length
//	N bytes    UTF-8 JSON header, padded with trailing spaces so that 8+N is a multiple of 8
//	rest       data buffer: the tensors, little-endian float32, packed without holes
//
// The header maps "<layer name>.<param name>" (e.g. "conv1.weight", "conv1.bn.running_mean")
// to {"dtype":"F32","shape":[...],"data_offsets":[begin,end]}, offsets relative to the start
// of the data buffer. Its "__metadata__" entry holds the strings "format" ("autoprune"),
// "version" (FileVersion), "architecture" (Model.Architecture), "sha256" (hex SHA-256 of
// the data buffer) and, from version 2, "architecture_sha256" (hex SHA-256 of the
// architecture string), so that a changed hyper-parameter is caught like a changed weight.
// Tensors are written in layer order, then in Params order.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/autoprune/autoprune/internal/fileio"
)

// FileVersion is the version of the model file format written by Encode. Decode also reads
// version 1, whose checksum covers the data only.
const FileVersion = 2

// Limits that Decode enforces before allocating memory, and that Encode enforces so that it
// never writes a file Decode would refuse.
const (
	// MaxHeaderBytes caps the length of the JSON header of a model file.
	MaxHeaderBytes = 16 << 20
	// MaxDataBytes caps the size of the data buffer (all tensors) of a model file.
	MaxDataBytes = 1 << 30
	// MaxLayers caps the number of layers of a model stored in a file.
	MaxLayers = 1 << 12
)

// ErrFormat is wrapped by every error Decode and Load return about the content of a model
// file. Errors about a model that decodes but is inconsistent (bad wiring, unknown layer
// kind, non-finite weights, bad masks) wrap ErrInvalid as well.
var ErrFormat = errors.New("not a valid autoprune model file")

const (
	maxInput    = 1 << 28 // values per sample; Shapes applies the same bound to layer outputs
	formatName  = "autoprune"
	metadataKey = "__metadata__"
	archSumKey  = "architecture_sha256"
	dtypeF32    = "F32"
)

// tensorInfo is one entry of a safetensors header.
type tensorInfo struct {
	Dtype       string   `json:"dtype"`
	Shape       []int64  `json:"shape"`
	DataOffsets []uint64 `json:"data_offsets"`
}

// slot is one parameter tensor of a model, as stored in a file.
type slot struct {
	name  string // tensor name, "<layer>.<param>"
	layer *Layer
	param Param
	n     int64 // number of float32 values
	begin uint64
	end   uint64
}

func formatErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrFormat}, args...)...)
}

// modelErr wraps an error about the decoded model (which already wraps ErrInvalid) so that
// it also wraps ErrFormat.
func modelErr(err error) error {
	return fmt.Errorf("%w: %w", ErrFormat, err)
}

// slots lists the parameter tensors of a model whose architecture has been checked by
// Shapes, with the shapes given by Params, and fails once their total size exceeds
// MaxDataBytes.
func slots(m *Model, shapes []Shape) ([]slot, int64, error) {
	index := make(map[string]int, len(m.Layers))
	for i, l := range m.Layers {
		index[l.Name] = i
	}
	var out []slot
	var total int64
	for _, l := range m.Layers {
		c := 0
		if len(l.Inputs) > 0 {
			if j, ok := index[l.Inputs[0]]; ok {
				c = shapes[j].C
			} else {
				c = m.Input.C
			}
		}
		for _, p := range l.Params(c) {
			n := int64(1)
			for _, d := range p.Shape {
				n *= int64(d)
			}
			total += 4 * n
			if total > MaxDataBytes {
				return nil, 0, fmt.Errorf("parameters take more than %d bytes (limit of the file format)", int64(MaxDataBytes))
			}
			out = append(out, slot{name: l.Name + "." + p.Name, layer: l, param: p, n: n})
		}
	}
	return out, total, nil
}

// Encode writes the model to w in the model file format. It validates the model first and
// refuses an invalid one (the error wraps ErrInvalid), or one too large for the format.
// Only the parameter tensors listed by Layer.Params are stored. The same model always gives
// the same bytes.
func Encode(w io.Writer, m *Model) error {
	if m == nil {
		return fmt.Errorf("%w: nil model", ErrInvalid)
	}
	if err := m.Validate(); err != nil {
		return err
	}
	if err := checkUTF8(m); err != nil {
		return err
	}
	if err := checkInput(m); err != nil {
		return err
	}
	if len(m.Layers) > MaxLayers {
		return fmt.Errorf("model has %d layers, over the limit of %d of the file format", len(m.Layers), MaxLayers)
	}
	shapes, err := m.Shapes()
	if err != nil {
		return err
	}
	ts, _, err := slots(m, shapes)
	if err != nil {
		return fmt.Errorf("model %q: %w", m.Name, err)
	}
	arch, err := m.Architecture()
	if err != nil {
		return fmt.Errorf("model %q: encoding the architecture: %w", m.Name, err)
	}

	h := sha256.New()
	if err := writeData(h, ts); err != nil {
		return err
	}
	header, err := encodeHeader(ts, map[string]string{
		"format":       formatName,
		"version":      strconv.Itoa(FileVersion),
		"architecture": string(arch),
		"sha256":       hex.EncodeToString(h.Sum(nil)),
		archSumKey:     archSum(string(arch)),
	})
	if err != nil {
		return fmt.Errorf("model %q: %w", m.Name, err)
	}

	bw := bufio.NewWriterSize(w, 1<<16)
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(header)))
	bw.Write(n[:])
	bw.Write(header)
	if err := writeData(bw, ts); err != nil {
		return err
	}
	return bw.Flush()
}

// checkUTF8 refuses names that JSON cannot carry unchanged.
func checkUTF8(m *Model) error {
	if !utf8.ValidString(m.Name) {
		return fmt.Errorf("%w: model name %q is not valid UTF-8", ErrInvalid, m.Name)
	}
	for _, l := range m.Layers {
		if !utf8.ValidString(l.Name) {
			return fmt.Errorf("%w: layer name %q is not valid UTF-8", ErrInvalid, l.Name)
		}
	}
	return nil
}

// encodeHeader returns the JSON header, metadata first and tensors in the order given,
// padded with spaces to a multiple of 8 bytes.
func encodeHeader(ts []slot, meta map[string]string) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`{"` + metadataKey + `":`)
	mb, err := json.Marshal(meta)
	if err != nil {
		return nil, err
	}
	b.Write(mb)
	var off uint64
	for _, t := range ts {
		shape := make([]int64, len(t.param.Shape))
		for i, d := range t.param.Shape {
			shape[i] = int64(d)
		}
		end := off + 4*uint64(t.n)
		key, err := json.Marshal(t.name)
		if err != nil {
			return nil, err
		}
		info, err := json.Marshal(tensorInfo{Dtype: dtypeF32, Shape: shape, DataOffsets: []uint64{off, end}})
		if err != nil {
			return nil, err
		}
		b.WriteByte(',')
		b.Write(key)
		b.WriteByte(':')
		b.Write(info)
		off = end
	}
	b.WriteByte('}')
	for b.Len()%8 != 0 {
		b.WriteByte(' ')
	}
	if b.Len() > MaxHeaderBytes {
		return nil, fmt.Errorf("header takes %d bytes, over the limit of %d of the file format", b.Len(), MaxHeaderBytes)
	}
	return b.Bytes(), nil
}

// writeData writes the tensors as little-endian float32.
func writeData(w io.Writer, ts []slot) error {
	buf := make([]byte, 0, 1<<15)
	for _, t := range ts {
		for _, v := range *t.param.Data {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
			if len(buf) == cap(buf) {
				if _, err := w.Write(buf); err != nil {
					return err
				}
				buf = buf[:0]
			}
		}
	}
	if len(buf) > 0 {
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// Decode reads a model file. It is strict: the file must be a well-formed safetensors file
// written for this format version, with exactly the tensors the architecture calls for, of
// the right dtype and shapes, packed without holes, with no trailing bytes and a matching
// checksum; the decoded model must pass Validate. Sizes are checked against MaxHeaderBytes,
// MaxDataBytes and MaxLayers before memory is allocated for them. Every error about the
// content wraps ErrFormat (and ErrInvalid too for an inconsistent model); errors from r
// itself are returned wrapped as they are.
func Decode(r io.Reader) (*Model, error) {
	var lenBuf [8]byte
	if k, err := io.ReadFull(r, lenBuf[:]); err != nil {
		if isEOF(err) {
			return nil, formatErr("file too short: %d bytes, want at least 8 for the header length", k)
		}
		return nil, fmt.Errorf("reading the header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > MaxHeaderBytes {
		return nil, formatErr("header length %d exceeds the limit of %d bytes", n, MaxHeaderBytes)
	}
	if n < 2 {
		return nil, formatErr("header length %d is too small for a JSON object", n)
	}
	header, err := readN(r, int64(n))
	if err != nil {
		if isEOF(err) {
			return nil, formatErr("truncated header: got %d of %d bytes", len(header), n)
		}
		return nil, fmt.Errorf("reading the header: %w", err)
	}

	keys, entries, err := parseHeader(header)
	if err != nil {
		return nil, err
	}
	meta, err := parseMetadata(entries)
	if err != nil {
		return nil, err
	}
	m, err := decodeArchitecture(meta["architecture"])
	if err != nil {
		return nil, err
	}
	shapes, err := m.Shapes()
	if err != nil {
		return nil, modelErr(fmt.Errorf("architecture: %w", err))
	}
	// A valid architecture that is not the one written (a hyper-parameter changed by hand
	// or by corruption) would load silently and compute something else.
	if sum, ok := meta[archSumKey]; ok && sum != archSum(meta["architecture"]) {
		return nil, formatErr("architecture checksum mismatch: the header was changed or is corrupt")
	}

	// Masks are optional: a Conv2D or Linear layer has one when the file has its tensor.
	for _, l := range m.Layers {
		if l.Kind == Conv2D || l.Kind == Linear {
			if _, ok := entries[l.Name+".mask"]; ok {
				l.Mask = []float32{}
			}
		}
	}
	ts, total, err := slots(m, shapes)
	if err != nil {
		return nil, formatErr("%v", err)
	}
	if err := matchTensors(ts, keys, entries); err != nil {
		return nil, err
	}
	if err := checkLayout(ts, total); err != nil {
		return nil, err
	}

	data, err := readN(r, total)
	if err != nil {
		if isEOF(err) {
			return nil, formatErr("truncated data buffer: got %d of %d bytes", len(data), total)
		}
		return nil, fmt.Errorf("reading the data buffer: %w", err)
	}
	var one [1]byte
	if k, err := io.ReadFull(r, one[:]); k > 0 {
		return nil, formatErr("trailing bytes after the data buffer of %d bytes", total)
	} else if !isEOF(err) {
		return nil, fmt.Errorf("reading past the data buffer: %w", err)
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != meta["sha256"] {
		return nil, formatErr("data checksum mismatch: file is corrupt")
	}

	for _, t := range ts {
		vals := make([]float32, t.n)
		src := data[t.begin:t.end]
		for i := range vals {
			vals[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
		*t.param.Data = vals
	}
	if err := m.Validate(); err != nil {
		return nil, modelErr(err)
	}
	return m, nil
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// readN reads exactly n bytes. Memory grows with the bytes actually read, so that a length
// announced by a hostile file costs nothing unless the bytes are there.
func readN(r io.Reader, n int64) ([]byte, error) {
	const chunk = 1 << 20
	buf := make([]byte, 0, min(n, chunk))
	for int64(len(buf)) < n {
		step := int(min(n-int64(len(buf)), max(int64(len(buf)), chunk)))
		buf = slices.Grow(buf, step)
		k, err := io.ReadFull(r, buf[len(buf):len(buf)+step])
		buf = buf[:len(buf)+k]
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// parseHeader checks that the header is a JSON object, optionally followed by spaces, with
// no duplicate keys, and returns its keys in order with their raw values.
func parseHeader(header []byte) ([]string, map[string]json.RawMessage, error) {
	if !utf8.Valid(header) {
		return nil, nil, formatErr("header is not valid UTF-8")
	}
	if header[0] != '{' {
		return nil, nil, formatErr("header is not valid JSON: it does not start with '{'")
	}
	keys, entries, rest, err := parseObject(header)
	if err != nil {
		return nil, nil, formatErr("header is not valid JSON: %v", err)
	}
	if strings.Trim(string(rest), " ") != "" {
		return nil, nil, formatErr("header is not valid JSON: unexpected bytes after the object")
	}
	return keys, entries, nil
}

// parseObject parses a JSON object, refusing duplicate keys, and returns its keys in order,
// their raw values and the bytes after the object.
func parseObject(data []byte) ([]string, map[string]json.RawMessage, []byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, nil, nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, nil, nil, errors.New("not a JSON object")
	}
	var keys []string
	entries := make(map[string]json.RawMessage)
	for dec.More() {
		tok, err := dec.Token()
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return nil, nil, nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, nil, nil, fmt.Errorf("object key is %v, not a string", tok)
		}
		if _, dup := entries[key]; dup {
			return nil, nil, nil, fmt.Errorf("duplicate key %q", key)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, nil, err
		}
		keys = append(keys, key)
		entries[key] = raw
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, nil, nil, err
	}
	return keys, entries, data[dec.InputOffset():], nil
}

// parseMetadata checks the "__metadata__" entry: an autoprune file of the supported version,
// with an architecture and a well-formed checksum. Other metadata keys are ignored.
func parseMetadata(entries map[string]json.RawMessage) (map[string]string, error) {
	const notOurs = "a safetensors file but not an autoprune model"
	raw, ok := entries[metadataKey]
	if !ok {
		return nil, formatErr(notOurs + " (no architecture metadata)")
	}
	_, fields, _, err := parseObject(raw)
	if err != nil {
		return nil, formatErr("%s is not a JSON object of strings: %v", metadataKey, err)
	}
	meta := make(map[string]string, len(fields))
	for k, v := range fields {
		var s string
		if len(v) == 0 || v[0] != '"' || json.Unmarshal(v, &s) != nil {
			return nil, formatErr("%s entry %q is not a string", metadataKey, k)
		}
		meta[k] = s
	}
	format, ok := meta["format"]
	if !ok {
		return nil, formatErr(notOurs + " (no architecture metadata)")
	}
	if format != formatName {
		return nil, formatErr(notOurs+" (format %q)", format)
	}
	version, ok := meta["version"]
	if !ok {
		return nil, formatErr("metadata has no format version; this build reads version %d", FileVersion)
	}
	if version != "1" && version != strconv.Itoa(FileVersion) {
		return nil, formatErr("unsupported file format version %q: this build reads versions 1 to %d", version, FileVersion)
	}
	if _, ok := meta["architecture"]; !ok {
		return nil, formatErr("metadata has no architecture")
	}
	if _, ok := meta[archSumKey]; !ok && version != "1" {
		return nil, formatErr("metadata has no %s checksum", archSumKey)
	}
	sum, ok := meta["sha256"]
	if !ok {
		return nil, formatErr("metadata has no sha256 checksum")
	}
	if b, err := hex.DecodeString(sum); err != nil || len(b) != sha256.Size || sum != strings.ToLower(sum) {
		return nil, formatErr("metadata sha256 %q is not a lower-case hex SHA-256", sum)
	}
	return meta, nil
}

// archSum is the hex SHA-256 of the architecture string.
func archSum(arch string) string {
	sum := sha256.Sum256([]byte(arch))
	return hex.EncodeToString(sum[:])
}

// checkInput bounds the input size, which Shapes does not (it bounds every layer output),
// so that a hostile input shape cannot overflow size computations.
func checkInput(m *Model) error {
	if in := m.Input; in.C > 0 && in.H > 0 && in.W > 0 &&
		(in.C > maxInput || in.H > maxInput/in.C || in.W > maxInput/(in.C*in.H)) {
		return fmt.Errorf("%w: input shape %v is larger than %d values", ErrInvalid, in, maxInput)
	}
	return nil
}

// decodeArchitecture decodes the architecture JSON, refusing unknown fields, and checks the
// layer count and kinds.
func decodeArchitecture(arch string) (*Model, error) {
	dec := json.NewDecoder(strings.NewReader(arch))
	dec.DisallowUnknownFields()
	m := new(Model)
	if err := dec.Decode(m); err != nil {
		return nil, formatErr("architecture does not decode: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, formatErr("architecture does not decode: unexpected data after the JSON object")
	}
	if len(m.Layers) > MaxLayers {
		return nil, formatErr("architecture has %d layers, over the limit of %d", len(m.Layers), MaxLayers)
	}
	if err := checkInput(m); err != nil {
		return nil, modelErr(err)
	}
	for _, l := range m.Layers {
		if l != nil && !slices.Contains(Kinds, l.Kind) {
			return nil, fmt.Errorf("%w: %w: layer %q has unknown kind %q (this build knows %v)",
				ErrFormat, ErrInvalid, l.Name, l.Kind, Kinds)
		}
	}
	return m, nil
}

// matchTensors checks that the header lists exactly the model's tensors, as F32 with the
// expected shapes and byte sizes, and records their offsets in ts.
func matchTensors(ts []slot, keys []string, entries map[string]json.RawMessage) error {
	want := make(map[string]bool, len(ts))
	for i := range ts {
		t := &ts[i]
		want[t.name] = true
		raw, ok := entries[t.name]
		if !ok {
			return formatErr("missing tensor %q (layer %q, %s %v)", t.name, t.layer.Name, t.param.Name, t.param.Shape)
		}
		var info tensorInfo
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&info); err != nil {
			return formatErr("tensor %q: bad header entry: %v", t.name, err)
		}
		if info.Dtype != dtypeF32 {
			return formatErr("tensor %q has dtype %q, want %s", t.name, info.Dtype, dtypeF32)
		}
		if info.Shape == nil {
			return formatErr("tensor %q has no shape", t.name)
		}
		if !sameShape(info.Shape, t.param.Shape) {
			return formatErr("layer %q: %s has shape %v, want %v", t.layer.Name, t.param.Name, info.Shape, t.param.Shape)
		}
		if len(info.DataOffsets) != 2 {
			return formatErr("tensor %q: data_offsets has %d values, want 2", t.name, len(info.DataOffsets))
		}
		t.begin, t.end = info.DataOffsets[0], info.DataOffsets[1]
		if t.end < t.begin {
			return formatErr("tensor %q: data_offsets [%d, %d] end before they begin", t.name, t.begin, t.end)
		}
		if t.end-t.begin != 4*uint64(t.n) {
			return formatErr("tensor %q: data_offsets [%d, %d] span %d bytes, want %d for shape %v",
				t.name, t.begin, t.end, t.end-t.begin, 4*t.n, t.param.Shape)
		}
	}
	for _, k := range keys {
		if k != metadataKey && !want[k] {
			return formatErr("unexpected tensor %q: the architecture has no such parameter", k)
		}
	}
	return nil
}

func sameShape(got []int64, want []int) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != int64(want[i]) {
			return false
		}
	}
	return true
}

// checkLayout checks that the tensors tile the data buffer [0, total) without holes or
// overlaps.
func checkLayout(ts []slot, total int64) error {
	order := make([]*slot, len(ts))
	for i := range ts {
		if t := &ts[i]; t.end > uint64(total) {
			return formatErr("tensor %q: data_offsets [%d, %d] are out of range: the tensors take %d bytes",
				t.name, t.begin, t.end, total)
		}
		order[i] = &ts[i]
	}
	slices.SortStableFunc(order, func(a, b *slot) int {
		if a.begin != b.begin {
			return cmpU64(a.begin, b.begin)
		}
		return cmpU64(a.end, b.end)
	})
	var pos uint64
	prev := "the start of the data buffer"
	for i, t := range order {
		if i > 0 {
			prev = strconv.Quote(order[i-1].name)
		}
		switch {
		case t.begin < pos:
			return formatErr("tensors %s and %q overlap: bytes [%d, %d) are claimed twice",
				prev, t.name, t.begin, min(pos, t.end))
		case t.begin > pos:
			return formatErr("hole in the data buffer: bytes [%d, %d) between %s and %q belong to no tensor",
				pos, t.begin, prev, t.name)
		}
		pos = t.end
	}
	if pos != uint64(total) {
		// Unreachable when every tensor has its expected size; kept as a guard.
		return formatErr("tensors cover %d bytes of data, want %d", pos, total)
	}
	return nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Save writes the model to path atomically: it encodes into a temporary file in the same
// folder, syncs it and renames it over path, so that path never holds a partial file and an
// existing file is replaced only on success. A replaced file keeps its permissions; a new
// one gets 0644. Errors start with "model file <path>:".
func Save(path string, m *Model) error {
	if err := save(path, m); err != nil {
		return fmt.Errorf("model file %s: %w", path, err)
	}
	return nil
}

func save(path string, m *Model) error {
	return fileio.WriteAtomic(path, func(w io.Writer) error { return Encode(w, m) })
}

// Load reads a model file written by Save or Encode. Errors start with
// "model file <path>:"; those about the file's content wrap ErrFormat (see Decode), and a
// missing file gives an error that wraps fs.ErrNotExist.
func Load(path string) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("model file %s: %w", path, fileio.StripPath(err))
	}
	defer f.Close()
	m, err := Decode(bufio.NewReaderSize(f, 1<<16))
	if err != nil {
		return nil, fmt.Errorf("model file %s: %w", path, err)
	}
	return m, nil
}
