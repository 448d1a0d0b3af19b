package wquant

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/model"
)

// firstOutput opens path with the check of mode and runs a prompt
// through it, returning the logits and the first error: the open's or
// the Forward's.
func firstOutput(t *testing.T, path, mode string) ([]float32, error) {
	t.Helper()
	mod, err := OpenModel(path, model.Options{Threads: 2}, OpenOptions{Verify: mode})
	if err != nil {
		return nil, err
	}
	defer mod.Close()
	s, err := mod.NewSession(nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	return s.Forward([]int32{1, 2, 3}, false)
}

// TestOpenModelRefuses: with --verify=lazy (the metadata compared in the
// background beside the load) and =full, a file with a flipped byte in
// any tensor, a changed metadata value (one the load trips on, one it
// does not), a forged manifest and a truncated file give no output: the
// open or the first Forward fails with an error naming the tensor, key or
// field; the intact file runs.
func TestOpenModelRefuses(t *testing.T) {
	path := sealed(t)
	good := readBytes(t, path)
	f := openGGUF(t, path)
	setKV := func(key string, v any) func(kv gguf.KV) *gguf.KV {
		return func(kv gguf.KV) *gguf.KV {
			if kv.Key == key {
				kv.Value, _ = gguf.ValueOf(v)
			}
			return &kv
		}
	}
	type bad struct{ name, path, want string }
	cases := []bad{
		{"rope base changed (loads)", rewrite(t, path, setKV("llama.rope.freq_base", float32(10001))), "metadata key llama.rope.freq_base: value differs"},
		{"width changed (load fails)", rewrite(t, path, setKV("llama.embedding_length", uint32(48))), "metadata key llama.embedding_length: value differs"},
		{"forged tensor hash", rewrite(t, path, func(kv gguf.KV) *gguf.KV {
			if kv.Key == keyTensorHashes {
				hs := append([]string(nil), kv.Value.Interface().([]string)...)
				hs[1] = strings.Repeat("0", 64)
				kv.Value, _ = gguf.ValueOf(hs)
			}
			return &kv
		}), "manifest field turbomem.manifest.sha256 does not match"},
	}
	last := f.Tensors[len(f.Tensors)-1]
	cases = append(cases, bad{"truncated", writeBytes(t, good[:last.Offset+last.Size/2]), last.Name})
	for i, ti := range f.Tensors {
		if testing.Short() && i%3 != 0 {
			continue
		}
		b := append([]byte(nil), good...)
		b[ti.Offset+int64(i*7919)%ti.Size] ^= 0x10
		cases = append(cases, bad{"flip in " + ti.Name, writeBytes(t, b), "tensor " + ti.Name + ":"})
	}
	for _, mode := range []string{"lazy", "full"} {
		if logits, err := firstOutput(t, path, mode); err != nil || len(logits) == 0 {
			t.Fatalf("intact file, --verify=%s: %d logits, %v", mode, len(logits), err)
		}
		for _, c := range cases {
			logits, err := firstOutput(t, c.path, mode)
			if logits != nil || err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s, --verify=%s: %d logits, %v; want an error naming %q", c.name, mode, len(logits), err, c.want)
			}
			if strings.HasPrefix(c.name, "flip") && strings.Count(err.Error(), "tensor ") != 1 {
				t.Errorf("%s, --verify=%s: %v names another tensor too", c.name, mode, err)
			}
			if !errors.Is(err, ErrAltered) && !errors.Is(err, gguf.ErrTruncated) {
				t.Errorf("%s, --verify=%s: %v is neither ErrAltered nor ErrTruncated", c.name, mode, err)
			}
		}
	}
}

// renamed returns a sealed file whose metadata value general.name
// differs from its manifest's (nameDiffers).
func renamed(t *testing.T) string {
	t.Helper()
	return rewrite(t, sealed(t), func(kv gguf.KV) *gguf.KV {
		if kv.Key == "general.name" {
			kv.Value, _ = gguf.ValueOf("tiny randon")
		}
		return &kv
	})
}

// nameDiffers is what a check of renamed's file reports.
const nameDiffers = "metadata key general.name: value differs"

// TestBackgroundMetadata: with BackgroundOptions.Metadata the background
// compares the metadata first; Metadata, Settled and Wait report a
// changed key, and Check (a tensor's first use) does not wait for it.
func TestBackgroundMetadata(t *testing.T) {
	path := renamed(t)
	for _, workers := range []int{0, 1, 3, -1} {
		f := openGGUF(t, path)
		if workers < 0 {
			// Not memory-mapped: no tensor hashed in the background, the
			// metadata still compared there.
			fh, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer fh.Close()
			st, _ := fh.Stat()
			if f, err = gguf.Decode(fh, st.Size()); err != nil || f.Mapped() {
				t.Fatalf("decoded from a reader: mapped %v, %v", f != nil && f.Mapped(), err)
			}
		}
		m, err := ReadManifest(f)
		if err != nil {
			t.Fatal(err)
		}
		bg := m.Start(f, BackgroundOptions{Workers: workers, Metadata: true})
		ti, _ := f.Tensor("blk.0.attn_q.weight")
		data, _ := f.ReadTensor(ti)
		if err := bg.Check(ti, data); err != nil {
			t.Errorf("%d workers: Check of an intact tensor: %v", workers, err)
		}
		for name, check := range map[string]func() error{"Metadata": bg.Metadata, "Settled": bg.Settled, "Wait": bg.Wait} {
			if err := check(); !errors.Is(err, ErrAltered) || !strings.Contains(err.Error(), nameDiffers) || strings.Contains(err.Error(), "tensor ") {
				t.Errorf("%d workers: %s: %v, want %q alone", workers, name, err, nameDiffers)
			}
		}
		bg.Stop()
	}
}

// TestBackgroundMetadataStopped: the metadata comparison is a step of its
// own, begun by whichever worker or caller comes first: stopped before
// the workers began, Metadata still compares it (here), every time with
// the same result, and Wait reports the stop unless the check was done.
func TestBackgroundMetadataStopped(t *testing.T) {
	path := renamed(t)
	f := openGGUF(t, path)
	m, err := ReadManifest(f)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		bg := m.Start(f, BackgroundOptions{Workers: 2, Metadata: true})
		bg.Stop()
		for range 2 {
			if err := bg.Metadata(); !errors.Is(err, ErrAltered) || !strings.Contains(err.Error(), nameDiffers) {
				t.Fatalf("Metadata after Stop: %v, want %q", err, nameDiffers)
			}
		}
		if err := bg.Wait(); !errors.Is(err, ErrStopped) && (!errors.Is(err, ErrAltered) || !strings.Contains(err.Error(), nameDiffers)) {
			t.Errorf("Wait after Stop: %v", err)
		}
	}
}

// TestOpenModelAfterLoad: AfterLoad runs once with the loaded model in
// every mode; its error fails the open, closing the model, and with
// --verify=lazy is replaced by the metadata comparison's when a value
// differs (a step that read an altered value), as a failed load's is,
// without a second comparison by the caller.
func TestOpenModelAfterLoad(t *testing.T) {
	intact := sealed(t)
	altered := renamed(t)
	stepErr := errors.New("the step failed")
	for _, tt := range []struct {
		mode, file string
		fail       bool
		want       string // in the error; "" for none
	}{
		{"off", "intact", false, ""},
		{"full", "intact", false, ""},
		{"lazy", "intact", false, ""},
		{"off", "intact", true, stepErr.Error()},
		{"lazy", "intact", true, stepErr.Error()},
		{"off", "altered", true, stepErr.Error()},
		{"lazy", "altered", true, nameDiffers},
	} {
		path := map[string]string{"intact": intact, "altered": altered}[tt.file]
		calls, closed := 0, 0
		mod, err := OpenModel(path, model.Options{Threads: 2, OnClose: func() { closed++ }}, OpenOptions{Verify: tt.mode,
			AfterLoad: func(m *model.Model) error {
				if calls++; m == nil || m.File() == nil {
					t.Errorf("%s: AfterLoad got no model", tt.mode)
				}
				if tt.fail {
					return stepErr
				}
				return nil
			}})
		name := fmt.Sprintf("--verify=%s, %s file, step fails %v", tt.mode, tt.file, tt.fail)
		if calls != 1 {
			t.Errorf("%s: AfterLoad called %d times", name, calls)
		}
		if tt.want == "" {
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			mod.Close()
			continue
		}
		if mod != nil || err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: model %v, %v; want an error naming the file and %q", name, mod != nil, err, tt.want)
		}
		if closed != 1 {
			t.Errorf("%s: the model closed %d times", name, closed)
		}
	}
}

// TestOpenModelLazyVectors: under --verify=lazy a vector the load reads
// (a norm's weights) is checked before OpenModel returns, so one that
// differs fails the open itself, naming it; a weight matrix that differs
// lets the open succeed and fails the first Forward instead (the output
// held until it has passed).
func TestOpenModelLazyVectors(t *testing.T) {
	path := sealed(t)
	good := readBytes(t, path)
	f := openGGUF(t, path)
	for _, tt := range []struct {
		name   string
		atOpen bool
	}{{"blk.0.attn_norm.weight", true}, {"output_norm.weight", true}, {"blk.1.ffn_down.weight", false}} {
		ti, ok := f.Tensor(tt.name)
		if !ok {
			t.Fatalf("no tensor %s", tt.name)
		}
		b := append([]byte(nil), good...)
		b[ti.Offset+ti.Size/2] ^= 0x08
		mod, err := OpenModel(writeBytes(t, b), model.Options{Threads: 2}, OpenOptions{Verify: "lazy"})
		if tt.atOpen {
			if mod != nil || !errors.Is(err, ErrAltered) || !strings.Contains(err.Error(), "tensor "+tt.name+":") {
				t.Errorf("%s altered: open: model %v, %v; want the open to fail naming it", tt.name, mod != nil, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s altered: open: %v; want it to succeed", tt.name, err)
		}
		s, err := mod.NewSession(nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		if logits, err := s.Forward([]int32{1, 2, 3}, false); logits != nil || !errors.Is(err, ErrAltered) || !strings.Contains(err.Error(), "tensor "+tt.name+":") {
			t.Errorf("%s altered: Forward: %d logits, %v", tt.name, len(logits), err)
		}
		mod.Close()
	}
}
