package wquant

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/internal/sha256x2"
	"github.com/turbomem/turbomem/tensor"
)

// The manifest's metadata keys (see the package documentation).
const (
	ManifestPrefix  = "turbomem.manifest."
	keyVersion      = ManifestPrefix + "version"
	keyTool         = ManifestPrefix + "tool"
	keySource       = ManifestPrefix + "source_sha256"
	keyPlan         = ManifestPrefix + "plan"
	keyKeys         = ManifestPrefix + "keys"
	keyKeyHashes    = ManifestPrefix + "key_sha256"
	keyTensors      = ManifestPrefix + "tensors"
	keyTensorHashes = ManifestPrefix + "tensor_sha256"
	keySelf         = ManifestPrefix + "sha256"
	manifestVersion = 1
)

// manifestKeys lists the manifest's keys in the order they are written
// and self-hashed.
var manifestKeys = []string{keyVersion, keyTool, keySource, keyPlan, keyKeys, keyKeyHashes, keyTensors, keyTensorHashes}

// Manifest records what a GGUF file held when it was written: the SHA-256
// of every metadata value and of every tensor, the tool that wrote it,
// the file it was made from and the plan that chose its types.
type Manifest struct {
	Tool string
	// Source is the hex SHA-256 of the file the weights were made from,
	// or "".
	Source string
	// Plan is the plan (JSON, as Plan.WriteTo writes it) that chose the
	// tensor types, or "".
	Plan         string
	Keys         []string
	KeyHashes    [][sha256.Size]byte
	Tensors      []string
	TensorHashes [][sha256.Size]byte

	index map[string]int // Tensors' positions
	self  *selfCheck     // the check against its own SHA-256, for one read from a file
}

// Tensor is one tensor as written: its name, type, GGML shape and bytes.
type Tensor struct {
	Name  string
	Type  tensor.DType
	Shape []int64
	Data  []byte
}

// ErrNoManifest is returned by ReadManifest for a file without one.
var ErrNoManifest = errors.New("wquant: the file has no integrity manifest")

// ErrAltered wraps every difference Verify and the checks find between a
// file and its manifest.
var ErrAltered = errors.New("wquant: the file differs from its manifest")

// valueHasher hashes values' encodings (hash) with one hash and one
// buffer for all.
type valueHasher struct {
	h hash.Hash
	w *bufio.Writer
}

// newValueHasher returns a valueHasher.
func newValueHasher() *valueHasher {
	h := sha256.New()
	return &valueHasher{h: h, w: bufio.NewWriter(h)}
}

// hash returns the SHA-256 of a metadata value's GGUF encoding (its type
// id and payload; the key is the manifest's own entry).
func (vh *valueHasher) hash(v gguf.Value) ([sha256.Size]byte, error) {
	var s [sha256.Size]byte
	vh.h.Reset()
	vh.w.Reset(vh.h)
	if err := v.WriteBinary(vh.w); err != nil { // the buffer, taken as its own
		return s, err
	}
	vh.h.Sum(s[:0])
	return s, nil
}

// tensorHeader returns the bytes that precede a tensor's data in its
// hash: the type id (uint32), the number of dimensions (uint32) and each
// dimension (uint64), little endian.
func tensorHeader(t tensor.DType, shape []int64) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(t))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(shape)))
	for _, d := range shape {
		b = binary.LittleEndian.AppendUint64(b, uint64(d))
	}
	return b
}

// HashChunk is the size of the pieces a tensor's data is hashed in.
const HashChunk = 1 << 20

// A tensor's hash is the SHA-256 of its header (tensorHeader) followed by
// the SHA-256 of each HashChunk bytes of its data in order (the last piece
// may be shorter; no data, no pieces): a list of hashes rather than one
// stream, so that the pieces of one large tensor, or of many small ones,
// are hashed on every core at once.

// piece is one HashChunk of one tensor's data, and where its hash goes.
type piece struct {
	data []byte
	sum  *[sha256.Size]byte
}

// hashPieces hashes the pieces on up to workers goroutines, two of the
// same length at a time where it can (pairUp, sumPieces), calling
// progress (if set) with their bytes once they are done; it stops early
// when ctx is done.
func hashPieces(ctx context.Context, ps []piece, workers int, progress func(int64)) {
	jobs := pairUp(len(ps), func(i int) int { return len(ps[i].data) })
	one := func(job [2]int) {
		if ctx.Err() != nil {
			return
		}
		pair := []piece{ps[job[0]]}
		if job[1] >= 0 {
			pair = append(pair, ps[job[1]])
		}
		sumPieces(pair, 0, nil)
		if progress != nil {
			for _, p := range pair {
				progress(int64(len(p.data)))
			}
		}
	}
	if workers <= 1 || len(jobs) < 2 {
		for _, job := range jobs {
			one(job)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, len(jobs)) {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(jobs)); i = next.Add(1) - 1 {
				one(jobs[i])
			}
		})
	}
	wg.Wait()
}

// pairWindow is how many jobs back pairUp looks for a partner.
const pairWindow = 16

// pairUp groups n pieces, in order, into jobs of one or two (the second
// index -1 if none): each piece joins the earliest of the last pairWindow
// jobs that holds one piece of its length, so that pieces of the same
// length are hashed side by side and none later than its turn.
func pairUp(n int, length func(i int) int) [][2]int {
	var jobs [][2]int
	open := map[int]int{} // a length's job with one piece, if any
	for i := range n {
		l := length(i)
		if j, ok := open[l]; ok && len(jobs)-j <= pairWindow {
			jobs[j][1] = i
			delete(open, l)
			continue
		}
		open[l] = len(jobs)
		jobs = append(jobs, [2]int{i, -1})
	}
	return jobs
}

// sumPieces hashes one or two pieces, two of the same length side by
// side on one core (sha256x2), every bytes of each at a time with between
// called after each part but the last (every ≤ 0: at once).
func sumPieces(ps []piece, every int, between func()) {
	if len(ps) == 2 {
		*ps[0].sum, *ps[1].sum = sha256x2.Sum2Every(ps[0].data, ps[1].data, every, between)
		return
	}
	for _, p := range ps {
		if every <= 0 || len(p.data) <= every {
			*p.sum = sha256.Sum256(p.data) // no yield within it: no state to keep
			continue
		}
		*p.sum, _ = sha256x2.Sum2Every(p.data, nil, every, between) // with nothing beside it
	}
}

// split appends data's pieces to ps, their hashes going to sums (which
// must have room for them), and returns ps.
func split(ps []piece, data []byte, sums [][sha256.Size]byte) []piece {
	for i := range sums {
		ps = append(ps, piece{data: data[i*HashChunk : min((i+1)*HashChunk, len(data))], sum: &sums[i]})
	}
	return ps
}

// numPieces returns the number of pieces of n bytes.
func numPieces(n int) int { return (n + HashChunk - 1) / HashChunk }

// combine returns the tensor hash from the pieces' hashes.
func combine(t tensor.DType, shape []int64, sums [][sha256.Size]byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(tensorHeader(t, shape))
	for _, s := range sums {
		h.Write(s[:])
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// tensorHash returns a tensor's hash, computed on up to workers
// goroutines.
func tensorHash(t tensor.DType, shape []int64, data []byte, workers int) [sha256.Size]byte {
	sums := make([][sha256.Size]byte, numPieces(len(data)))
	hashPieces(context.Background(), split(nil, data, sums), workers, nil)
	return combine(t, shape, sums)
}

// NewManifest returns the manifest of a file with metadata kvs (any keys
// under ManifestPrefix are left out) and tensors, in file order.
func NewManifest(kvs []gguf.KV, tensors []Tensor, tool, source, plan string) (*Manifest, error) {
	m := &Manifest{Tool: tool, Source: source, Plan: plan,
		Keys: make([]string, 0, len(kvs)), KeyHashes: make([][sha256.Size]byte, 0, len(kvs)),
		Tensors: make([]string, 0, len(tensors)), TensorHashes: make([][sha256.Size]byte, 0, len(tensors))}
	vh := newValueHasher() // one hash and buffer for every value
	for _, kv := range kvs {
		if strings.HasPrefix(kv.Key, ManifestPrefix) {
			continue
		}
		h, err := vh.hash(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("wquant: manifest: key %q: %w", kv.Key, err)
		}
		m.Keys = append(m.Keys, kv.Key)
		m.KeyHashes = append(m.KeyHashes, h)
	}
	for _, t := range tensors {
		m.Tensors = append(m.Tensors, t.Name)
		m.TensorHashes = append(m.TensorHashes, tensorHash(t.Type, t.Shape, t.Data, runtime.NumCPU()))
	}
	m.reindex()
	return m, nil
}

func hexes(hs [][sha256.Size]byte) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = hex.EncodeToString(h[:])
	}
	return out
}

// fields returns the manifest's metadata values, in manifestKeys' order.
func (m *Manifest) fields() []gguf.KV {
	vals := []any{uint32(manifestVersion), m.Tool, m.Source, m.Plan, m.Keys, hexes(m.KeyHashes), m.Tensors, hexes(m.TensorHashes)}
	kvs := make([]gguf.KV, len(vals))
	for i, v := range vals {
		if s, ok := v.([]string); ok && s == nil {
			v = []string{}
		}
		val, err := gguf.ValueOf(v)
		if err != nil {
			panic(err) // strings, string arrays and a uint32 always convert
		}
		kvs[i] = gguf.KV{Key: manifestKeys[i], Value: val}
	}
	return kvs
}

// selfHash returns the SHA-256 over the manifest's own fields: for each
// key in manifestKeys' order, its length (uint64), the key, and its
// value's GGUF encoding.
func selfHash(fields []gguf.KV) ([sha256.Size]byte, error) {
	h := sha256.New()
	w := bufio.NewWriter(h) // one buffer, which WriteBinary takes as its own
	for _, kv := range fields {
		w.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(kv.Key))))
		w.WriteString(kv.Key)
		if err := kv.Value.WriteBinary(w); err != nil {
			return [sha256.Size]byte{}, err
		}
	}
	var s [sha256.Size]byte
	if err := w.Flush(); err != nil {
		return s, err
	}
	h.Sum(s[:0])
	return s, nil
}

// KVs returns the manifest as metadata, to append after the file's other
// keys: its fields, then the SHA-256 over them.
func (m *Manifest) KVs() []gguf.KV {
	kvs := m.fields()
	self, err := selfHash(kvs)
	if err != nil {
		panic(err) // the fields are strings and a uint32
	}
	v, _ := gguf.ValueOf(hex.EncodeToString(self[:]))
	return append(kvs, gguf.KV{Key: keySelf, Value: v})
}

// ReadManifest reads the manifest of f and checks it against its own
// SHA-256: an edited manifest is an error wrapping ErrAltered that names
// the field. A file without one gives ErrNoManifest.
func ReadManifest(f *gguf.File) (*Manifest, error) { return readManifest(f, true) }

// readManifest is ReadManifest, without the check against its own
// SHA-256 unless self is set: m.checkSelf (and CheckMetadata, first) does
// it then, for a caller that compares the metadata off its critical path.
func readManifest(f *gguf.File, self bool) (*Manifest, error) {
	if _, ok := f.Lookup(keySelf); !ok {
		for _, kv := range f.KV {
			if strings.HasPrefix(kv.Key, ManifestPrefix) {
				return nil, fmt.Errorf("%w: metadata key %s: the manifest's checksum %s is missing", ErrAltered, kv.Key, keySelf)
			}
		}
		return nil, ErrNoManifest
	}
	field := func(key string) (gguf.Value, error) {
		v, ok := f.Lookup(key)
		if !ok {
			return v, fmt.Errorf("%w: manifest field %s is missing", ErrAltered, key)
		}
		return v, nil
	}
	str := func(key string) (string, error) {
		v, err := field(key)
		if err != nil {
			return "", err
		}
		s, ok := v.Interface().(string)
		if !ok {
			return "", fmt.Errorf("%w: manifest field %s is a %s, want a string", ErrAltered, key, v.Type())
		}
		return s, nil
	}
	strs := func(key string) ([]string, error) {
		v, err := field(key)
		if err != nil {
			return nil, err
		}
		s, ok := v.Interface().([]string)
		if !ok {
			return nil, fmt.Errorf("%w: manifest field %s is a %s, want an array of strings", ErrAltered, key, v.Type())
		}
		return s, nil
	}
	m := &Manifest{self: &selfCheck{}}
	for _, k := range manifestKeys {
		v, err := field(k)
		if err != nil {
			return nil, err
		}
		m.self.fields = append(m.self.fields, gguf.KV{Key: k, Value: v})
	}
	var err error
	if m.self.want, err = str(keySelf); err != nil {
		return nil, err
	}
	if self {
		if err := m.checkSelf(); err != nil {
			return nil, err
		}
	}
	if v, _ := f.Lookup(keyVersion); v.Interface() != any(uint32(manifestVersion)) {
		return nil, fmt.Errorf("wquant: manifest version %v, this turbomem reads version %d", v, manifestVersion)
	}
	if m.Tool, err = str(keyTool); err != nil {
		return nil, err
	}
	if m.Source, err = str(keySource); err != nil {
		return nil, err
	}
	if m.Plan, err = str(keyPlan); err != nil {
		return nil, err
	}
	if m.Keys, err = strs(keyKeys); err != nil {
		return nil, err
	}
	if m.Tensors, err = strs(keyTensors); err != nil {
		return nil, err
	}
	for _, p := range []struct {
		key   string
		names []string
		dst   *[][sha256.Size]byte
	}{{keyKeyHashes, m.Keys, &m.KeyHashes}, {keyTensorHashes, m.Tensors, &m.TensorHashes}} {
		hs, err := strs(p.key)
		if err != nil {
			return nil, err
		}
		if len(hs) != len(p.names) {
			return nil, fmt.Errorf("%w: manifest field %s has %d hashes for %d names", ErrAltered, p.key, len(hs), len(p.names))
		}
		for i, s := range hs {
			var h [sha256.Size]byte
			if b, err := hex.DecodeString(s); err != nil || len(b) != sha256.Size {
				return nil, fmt.Errorf("%w: manifest field %s: entry %d (%q) is not a SHA-256", ErrAltered, p.key, i, s)
			} else {
				copy(h[:], b)
			}
			*p.dst = append(*p.dst, h)
		}
	}
	m.reindex()
	if len(m.index) != len(m.Tensors) {
		return nil, fmt.Errorf("%w: manifest field %s names a tensor twice", ErrAltered, keyTensors)
	}
	return m, nil
}

// selfCheck is the comparison of a manifest read from a file with its
// own SHA-256 (keySelf), done once.
type selfCheck struct {
	fields []gguf.KV // the manifest's fields, as selfHash takes them
	want   string    // keySelf's value
	once   sync.Once
	err    error
}

// checkSelf compares the manifest read from a file with its own SHA-256,
// once: nil, or an error wrapping ErrAltered. A manifest made here
// (NewManifest) has nothing to check.
func (m *Manifest) checkSelf() error {
	c := m.self
	if c == nil {
		return nil
	}
	c.once.Do(func() {
		self, err := selfHash(c.fields)
		switch {
		case err != nil:
			c.err = fmt.Errorf("wquant: manifest: %w", err)
		case hex.EncodeToString(self[:]) != c.want:
			c.err = fmt.Errorf("%w: manifest field %s does not match the manifest's fields (a field of the manifest was edited)", ErrAltered, keySelf)
		}
	})
	return c.err
}

// CheckMetadata compares f's metadata and tensor directory with the
// manifest: every key's value, the keys themselves, and the set of
// tensors. It returns nil or an error wrapping ErrAltered that names each
// key or tensor that differs. Tensor data is CheckTensor's.
func (m *Manifest) CheckMetadata(f *gguf.File) error {
	if err := m.checkSelf(); err != nil {
		return err // what the manifest says cannot be trusted
	}
	var problems []string
	want := make(map[string][sha256.Size]byte, len(m.Keys))
	for i, k := range m.Keys {
		want[k] = m.KeyHashes[i]
	}
	seen := map[string]bool{}
	vh := newValueHasher()
	for _, kv := range f.KV {
		if strings.HasPrefix(kv.Key, ManifestPrefix) {
			continue
		}
		seen[kv.Key] = true
		h, ok := want[kv.Key]
		if !ok {
			problems = append(problems, fmt.Sprintf("metadata key %s is not in the manifest (added)", kv.Key))
			continue
		}
		if got, err := vh.hash(kv.Value); err != nil || got != h {
			problems = append(problems, fmt.Sprintf("metadata key %s: value differs from the manifest's (SHA-256 %.16x…, recorded %.16x…)", kv.Key, got, h))
		}
	}
	for _, k := range m.Keys {
		if !seen[k] {
			problems = append(problems, fmt.Sprintf("metadata key %s is missing", k))
		}
	}
	listed := make(map[string]bool, len(m.Tensors))
	for _, name := range m.Tensors {
		listed[name] = true
		if _, ok := f.Tensor(name); !ok {
			problems = append(problems, fmt.Sprintf("tensor %s is missing", name))
		}
	}
	for _, t := range f.Tensors {
		if !listed[t.Name] {
			problems = append(problems, fmt.Sprintf("tensor %s is not in the manifest (added)", t.Name))
		}
	}
	return altered(problems)
}

// altered joins problems into one error wrapping ErrAltered, or nil.
func altered(problems []string) error {
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrAltered, strings.Join(problems, "; "))
}

// tensorIndex returns the position of name in the manifest.
func (m *Manifest) tensorIndex(name string) (int, bool) {
	i, ok := m.index[name]
	return i, ok
}

// reindex builds the index of the tensors' positions.
func (m *Manifest) reindex() {
	m.index = make(map[string]int, len(m.Tensors))
	for i, n := range m.Tensors {
		m.index[n] = i
	}
}

// CheckTensor compares a tensor of the file (as the file describes it)
// and its bytes with the manifest, hashing on every CPU.
func (m *Manifest) CheckTensor(t gguf.TensorInfo, data []byte) error {
	h := tensorHash(t.Type, t.Shape, data, runtime.NumCPU())
	return m.compare(t.Name, h[:])
}

// compare checks a tensor's hash against the manifest's.
func (m *Manifest) compare(name string, sum []byte) error {
	i, ok := m.tensorIndex(name)
	if !ok {
		return fmt.Errorf("%w: tensor %s is not in the manifest", ErrAltered, name)
	}
	if !bytes.Equal(sum, m.TensorHashes[i][:]) {
		return fmt.Errorf("%w: tensor %s: SHA-256 of its type, shape and data is %.16x…, the manifest records %.16x…", ErrAltered, name, sum, m.TensorHashes[i])
	}
	return nil
}

// Lazy returns a check for model.Options.FirstUse: each tensor is hashed
// and compared with the manifest when the model first uses it. It is
// safe for concurrent use.
func (m *Manifest) Lazy() func(t gguf.TensorInfo, data []byte) error { return m.CheckTensor }

// VerifyOptions configures Verify.
type VerifyOptions struct {
	// Workers is the number of tensors hashed at once (0: all CPUs).
	Workers int
	// Progress, if set, is called with the bytes hashed so far and the
	// total, from one goroutine at a time.
	Progress func(done, total int64)
}

// Verify checks all of f against its manifest: the manifest's own
// checksum, every metadata value, the tensor directory and the SHA-256
// of every tensor's data, read (memory-mapped where possible) and hashed
// by several workers. It returns the manifest and nil, or an error that
// wraps ErrAltered and names every key and tensor that differs, or
// ErrNoManifest.
func Verify(ctx context.Context, f *gguf.File, o VerifyOptions) (*Manifest, error) {
	m, err := ReadManifest(f)
	if err != nil {
		return nil, err
	}
	var problems []string
	if err := m.CheckMetadata(f); err != nil {
		problems = append(problems, strings.TrimPrefix(err.Error(), ErrAltered.Error()+": "))
	}
	var todo []gguf.TensorInfo
	var total int64
	for _, name := range m.Tensors {
		if t, ok := f.Tensor(name); ok {
			todo = append(todo, t)
			total += t.Size
		}
	}
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	var mu sync.Mutex
	var done int64
	progress := func(n int64) {
		mu.Lock()
		defer mu.Unlock()
		done += n
		if o.Progress != nil {
			o.Progress(done, total)
		}
	}
	// Every piece of every tensor in one queue, on all workers; the data
	// of a file that is not memory-mapped are read a tensor at a time.
	results := make([]string, len(todo))
	check := func(batch []int) error {
		sums := make([][][sha256.Size]byte, len(batch))
		var ps []piece
		for k, i := range batch {
			data, err := f.ReadTensor(todo[i])
			if err != nil {
				results[i] = fmt.Sprintf("tensor %s: %v", todo[i].Name, err)
				continue
			}
			sums[k] = make([][sha256.Size]byte, numPieces(len(data)))
			ps = split(ps, data, sums[k])
		}
		hashPieces(ctx, ps, workers, progress)
		for k, i := range batch {
			if results[i] != "" {
				continue
			}
			t := todo[i]
			sum := combine(t.Type, t.Shape, sums[k])
			if err := m.compare(t.Name, sum[:]); err != nil {
				results[i] = strings.TrimPrefix(err.Error(), ErrAltered.Error()+": ")
			}
		}
		return ctx.Err()
	}
	if f.Mapped() {
		all := make([]int, len(todo))
		for i := range all {
			all[i] = i
		}
		if err := check(all); err != nil {
			return m, err
		}
	} else {
		for i := range todo {
			if err := check([]int{i}); err != nil {
				return m, err
			}
		}
	}
	for _, r := range results {
		if r != "" {
			problems = append(problems, r)
		}
	}
	return m, altered(problems)
}
