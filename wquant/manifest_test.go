package wquant

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/model"
)

const testSource = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

// sealedFile is the tiny model quantized with the Q4_K_M recipe, made
// once for all tests (quantizing takes seconds on a busy machine).
var sealedFile struct {
	once sync.Once
	b    []byte
	err  error
}

// sealed returns the path of a fresh copy of sealedFile.
func sealed(t testing.TB) string {
	t.Helper()
	sealedFile.once.Do(func() {
		dir, err := os.MkdirTemp("", "wquant")
		if err != nil {
			sealedFile.err = err
			return
		}
		defer os.RemoveAll(dir)
		src, err := gguf.Open(tinyModel(t, false))
		if err != nil {
			sealedFile.err = err
			return
		}
		defer src.Close()
		plan, err := Recipe(src, testSource, "Q4_K_M")
		if err != nil {
			sealedFile.err = err
			return
		}
		out := filepath.Join(dir, "q.gguf")
		if sealedFile.err = NewQuantizer(src, nil, 2).Write(context.Background(), out, plan, WriteOptions{Tool: "turbomem test", SourceSHA256: testSource}); sealedFile.err == nil {
			sealedFile.b, sealedFile.err = os.ReadFile(out)
		}
	})
	if sealedFile.err != nil {
		t.Fatal(sealedFile.err)
	}
	return writeBytes(t, sealedFile.b)
}

// verifyErr opens path and verifies it, returning the error (an open
// error included).
func verifyErr(t testing.TB, path string) error {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = Verify(context.Background(), f, VerifyOptions{})
	return err
}

// TestVerifyIntact: a file as written verifies, records the tool, source
// and plan, and loads with lazy checks.
func TestVerifyIntact(t *testing.T) {
	path := sealed(t)
	f := openGGUF(t, path)
	var last int64
	m, err := Verify(context.Background(), f, VerifyOptions{Workers: 3, Progress: func(done, total int64) {
		if done < last || done > total {
			t.Errorf("progress %d of %d after %d", done, total, last)
		}
		last = done
	}})
	if err != nil {
		t.Fatal(err)
	}
	if m.Tool != "turbomem test" || m.Source != testSource || !strings.Contains(m.Plan, `"recipe": "Q4_K_M"`) {
		t.Errorf("manifest tool %q, source %q, plan %.60q", m.Tool, m.Source, m.Plan)
	}
	var total int64
	for _, ti := range f.Tensors {
		total += ti.Size
	}
	if last != total {
		t.Errorf("progress ended at %d of %d bytes", last, total)
	}
	if len(m.Tensors) != len(f.Tensors) || len(m.Keys) != len(f.KV)-9 {
		t.Errorf("manifest lists %d tensors and %d keys; the file has %d and %d", len(m.Tensors), len(m.Keys), len(f.Tensors), len(f.KV))
	}
	mod, err := model.Open(path, model.Options{FirstUse: m.Lazy()})
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close()
	s, _ := mod.NewSession(nil, 0)
	if _, err := s.Forward([]int32{1, 2, 3}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadManifest(openGGUF(t, tinyModel(t, false))); !errors.Is(err, ErrNoManifest) {
		t.Errorf("file without a manifest: %v", err)
	}
}

// TestVerifyFlippedByte flips one byte in each tensor in turn: Verify
// and the lazy check refuse the file, naming that tensor and no other.
func TestVerifyFlippedByte(t *testing.T) {
	path := sealed(t)
	good := readBytes(t, path)
	f := openGGUF(t, path)
	m, err := ReadManifest(f)
	if err != nil {
		t.Fatal(err)
	}
	for i, ti := range f.Tensors {
		b := append([]byte(nil), good...)
		b[ti.Offset+int64(i*7919)%ti.Size] ^= 0x10
		p := writeBytes(t, b)
		err := verifyErr(t, p)
		if !errors.Is(err, ErrAltered) || !strings.Contains(err.Error(), "tensor "+ti.Name+":") || strings.Count(err.Error(), "tensor ") != 1 {
			t.Errorf("flip in %s: %v", ti.Name, err)
		}
		g := openGGUF(t, p)
		data, _ := g.ReadTensor(ti)
		if err := m.Lazy()(ti, data); !errors.Is(err, ErrAltered) || !strings.Contains(err.Error(), ti.Name) {
			t.Errorf("lazy check of %s: %v", ti.Name, err)
		}
		if testing.Short() && i > 3 {
			break
		}
	}
}

// TestVerifyAlteredMetadata: a changed, added or removed key, a forged
// manifest field and a truncated file are refused, naming the key, field
// or tensor.
func TestVerifyAlteredMetadata(t *testing.T) {
	path := sealed(t)
	str := func(s string) gguf.Value { v, _ := gguf.ValueOf(s); return v }
	for _, tt := range []struct {
		name string
		edit func(kv gguf.KV) *gguf.KV
		want string
	}{
		{"changed value", func(kv gguf.KV) *gguf.KV {
			if kv.Key == "general.name" {
				kv.Value = str("tiny randon")
			}
			return &kv
		}, "metadata key general.name: value differs"},
		{"removed key", func(kv gguf.KV) *gguf.KV {
			if kv.Key == "llama.rope.freq_base" {
				return nil
			}
			return &kv
		}, "metadata key llama.rope.freq_base is missing"},
		{"added key", func(kv gguf.KV) *gguf.KV {
			if kv.Key == "general.name" {
				// Set keeps the first position of a key: this one goes
				// after the manifest, which the checks must not mind.
				kv.Key = "general.extra"
			}
			return &kv
		}, "metadata key general.extra is not in the manifest"},
		{"forged tensor hash", func(kv gguf.KV) *gguf.KV {
			if kv.Key == keyTensorHashes {
				hs := append([]string(nil), kv.Value.Interface().([]string)...)
				hs[2] = strings.Repeat("0", 64)
				kv.Value, _ = gguf.ValueOf(hs)
			}
			return &kv
		}, "manifest field turbomem.manifest.sha256 does not match"},
		{"forged plan", func(kv gguf.KV) *gguf.KV {
			if kv.Key == keyPlan {
				kv.Value = str(strings.Replace(kv.Value.Interface().(string), "Q6_K", "Q8_0", 1))
			}
			return &kv
		}, "manifest field turbomem.manifest.sha256 does not match"},
		{"manifest checksum removed", func(kv gguf.KV) *gguf.KV {
			if kv.Key == keySelf {
				return nil
			}
			return &kv
		}, "turbomem.manifest.sha256 is missing"},
		{"manifest field removed", func(kv gguf.KV) *gguf.KV {
			if kv.Key == keyTool {
				return nil
			}
			return &kv
		}, "manifest field turbomem.manifest.tool is missing"},
		{"manifest field retyped", func(kv gguf.KV) *gguf.KV {
			if kv.Key == keySource {
				kv.Value, _ = gguf.ValueOf(uint32(7))
			}
			return &kv
		}, "manifest field turbomem.manifest.sha256 does not match"},
	} {
		err := verifyErr(t, rewrite(t, path, tt.edit))
		if !errors.Is(err, ErrAltered) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	b := readBytes(t, path)
	f := openGGUF(t, path)
	last := f.Tensors[len(f.Tensors)-1]
	err := verifyErr(t, writeBytes(t, b[:last.Offset+last.Size/2]))
	if !errors.Is(err, gguf.ErrTruncated) || !strings.Contains(err.Error(), last.Name) {
		t.Errorf("truncated file: %v", err)
	}
}

// FuzzReadManifest feeds altered sealed files to ReadManifest, Verify and
// the lazy check: errors, never panics.
func FuzzReadManifest(f *testing.F) {
	path := sealed(f)
	good := readBytes(f, path)
	f.Add(good, 0, byte(0))
	g := openGGUF(f, path)
	for i, kv := range g.KV {
		if strings.HasPrefix(kv.Key, ManifestPrefix) {
			// Somewhere inside the manifest's keys.
			f.Add(good, int(g.DataOffset)-200*(len(g.KV)-i), byte(0x41))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, at int, x byte) {
		if len(b) == 0 {
			return
		}
		b = append([]byte(nil), b...)
		if at < 0 {
			at = -at
		}
		b[at%len(b)] ^= x
		file, err := gguf.DecodeBytes(b)
		if err != nil {
			return
		}
		m, err := Verify(context.Background(), file, VerifyOptions{Workers: 2})
		if err != nil || m == nil {
			return
		}
		for _, ti := range file.Tensors {
			data, err := file.ReadTensor(ti)
			if err == nil {
				_ = m.Lazy()(ti, data)
			}
		}
	})
}

// refusedNaming reports whether err refuses a file and names what is
// wrong: a GGUF field (gguf.FormatError), or a metadata key, manifest
// field or tensor (ErrAltered).
func refusedNaming(err error) bool {
	var fe *gguf.FormatError
	if errors.As(err, &fe) {
		return fe.Field != ""
	}
	if !errors.Is(err, ErrAltered) {
		return false
	}
	for _, s := range []string{"metadata key ", "manifest field ", "tensor "} {
		if strings.Contains(err.Error(), s) {
			return true
		}
	}
	return false
}

// sameMeaning reports whether two GGUF files hold the same metadata and
// tensors (names, types, shapes, data).
func sameMeaning(t *testing.T, a, b []byte) bool {
	fa, err := gguf.DecodeBytes(a)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := gguf.DecodeBytes(b)
	if err != nil || len(fa.KV) != len(fb.KV) || len(fa.Tensors) != len(fb.Tensors) {
		return false
	}
	for i, kv := range fa.KV {
		va, _ := kv.Value.AppendBinary(nil)
		vb, _ := fb.KV[i].Value.AppendBinary(nil)
		if kv.Key != fb.KV[i].Key || !bytes.Equal(va, vb) {
			return false
		}
	}
	for i, ta := range fa.Tensors {
		tb := fb.Tensors[i]
		da, _ := fa.ReadTensor(ta)
		db, _ := fb.ReadTensor(tb)
		if ta.Name != tb.Name || ta.Type != tb.Type || fmt.Sprint(ta.Shape) != fmt.Sprint(tb.Shape) || !bytes.Equal(da, db) {
			return false
		}
	}
	return true
}

// checkBytes verifies the file b (decoded from memory, as Verify reads a
// memory-mapped file), returning the error.
func checkBytes(b []byte) error {
	f, err := gguf.DecodeBytes(b)
	if err != nil {
		return err
	}
	_, err = Verify(context.Background(), f, VerifyOptions{Workers: 2})
	return err
}

// TestVerifyHeaderFlips flips each byte of the header — magic, counts,
// every metadata key and value (the manifest's among them), the tensor
// directory (names, shapes, types, offsets) — one at a time: each file is
// refused with a message naming the GGUF field, metadata key, manifest
// field or tensor, unless the flip changed nothing the file holds (the
// padding before the data). No flip leaves a file that merely looks
// unsealed.
func TestVerifyHeaderFlips(t *testing.T) {
	good := readBytes(t, sealed(t))
	f, err := gguf.DecodeBytes(good)
	if err != nil {
		t.Fatal(err)
	}
	step := 1
	if testing.Short() {
		step = 37
	}
	passed := 0
	for p := 0; p < int(f.DataOffset); p += step {
		for _, x := range []byte{0x01, 0x80} {
			b := append([]byte(nil), good...)
			b[p] ^= x
			err := checkBytes(b)
			switch {
			case err == nil:
				if !sameMeaning(t, good, b) {
					t.Fatalf("flip %#x at byte %d of the header: accepted, and the file reads differently", x, p)
				}
				passed++
			case errors.Is(err, ErrNoManifest):
				t.Fatalf("flip %#x at byte %d: the file passes for one without a manifest", x, p)
			case !refusedNaming(err):
				t.Fatalf("flip %#x at byte %d: %v: names no field, key or tensor", x, p, err)
			}
		}
	}
	if max := 2 * int(f.Alignment); passed > max {
		t.Errorf("%d flips accepted: more than the padding before the data can explain", passed)
	}
	t.Logf("%d header bytes flipped (every %d), %d flips accepted as changing nothing", int(f.DataOffset)/step, step, passed)
}

// TestVerifyTruncated cuts the sealed file at every length (in steps
// through the data): each is refused with an error naming the field or
// tensor cut, unless only the padding after the last tensor went.
func TestVerifyTruncated(t *testing.T) {
	good := readBytes(t, sealed(t))
	f, err := gguf.DecodeBytes(good)
	if err != nil {
		t.Fatal(err)
	}
	last := f.Tensors[len(f.Tensors)-1]
	for _, ti := range f.Tensors {
		if ti.Offset > last.Offset {
			last = ti
		}
	}
	end := int(last.Offset + last.Size)
	step := 7
	if testing.Short() {
		step = 61
	}
	for n := 0; n < len(good); n++ {
		if n > int(f.DataOffset) && n < end-1 && n%step != 0 {
			continue
		}
		err := checkBytes(good[:n])
		switch {
		case n >= end:
			if err != nil {
				t.Errorf("cut at %d, after the last tensor (ends at %d): %v", n, end, err)
			}
		case !errors.Is(err, gguf.ErrTruncated) || !refusedNaming(err):
			t.Fatalf("cut at %d of %d: %v, want ErrTruncated naming the field or tensor", n, len(good), err)
		case n > int(f.DataOffset) && !strings.Contains(err.Error(), `"`):
			t.Fatalf("cut at %d, inside the data: %v names no tensor", n, err)
		}
	}
}

// TestPairUp: pieces of the same length pair within pairWindow jobs, in
// order, none later than its turn; negative lengths stay alone; every
// piece is in exactly one job.
func TestPairUp(t *testing.T) {
	for _, tt := range []struct {
		lengths []int
		want    [][2]int
	}{
		{nil, nil},
		{[]int{5}, [][2]int{{0, -1}}},
		{[]int{4, 8, 8, 8, 3}, [][2]int{{0, -1}, {1, 2}, {3, -1}, {4, -1}}},
		{[]int{1, 2, 3, 1, 2, 3}, [][2]int{{0, 3}, {1, 4}, {2, 5}}},
	} {
		got := pairUp(len(tt.lengths), func(i int) int { return tt.lengths[i] })
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("pairUp(%v) = %v, want %v", tt.lengths, got, tt.want)
		}
	}
	// Beyond the window: a piece does not reach back more than pairWindow jobs.
	lengths := []int{7}
	for i := range pairWindow {
		lengths = append(lengths, 100+i)
	}
	lengths = append(lengths, 7)
	got := pairUp(len(lengths), func(i int) int { return lengths[i] })
	if got[0] != [2]int{0, -1} || got[len(got)-1] != [2]int{len(lengths) - 1, -1} {
		t.Errorf("a partner %d jobs back was taken: %v", pairWindow+1, got)
	}
}

// TestNewManifestAllocs: NewManifest hashes every key with one hash and
// one buffer: per key it allocates no more than the value's encoding
// (gguf.Value.WriteBinary) does by itself.
func TestNewManifestAllocs(t *testing.T) {
	var kvs []gguf.KV
	for i := range 400 {
		v, err := gguf.ValueOf(fmt.Sprint("value ", i))
		if err != nil {
			t.Fatal(err)
		}
		kvs = append(kvs, gguf.KV{Key: fmt.Sprint("test.key.", i), Value: v})
	}
	allocs := func(n int) float64 {
		return testing.AllocsPerRun(10, func() {
			if _, err := NewManifest(kvs[:n], nil, "test", "", ""); err != nil {
				t.Fatal(err)
			}
		})
	}
	vh := newValueHasher()
	encoding := testing.AllocsPerRun(10, func() { vh.hash(kvs[0].Value) })
	if perKey := (allocs(400) - allocs(200)) / 200; perKey > encoding {
		t.Errorf("NewManifest: %.2f allocations per key, the value's encoding %.0f", perKey, encoding)
	}
}
