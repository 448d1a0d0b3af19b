package wquant

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/model"
)

// startChecked opens path, starts its background check with workers and
// loads the model with it, the model closing both; stopFirst stops the
// background before anything is hashed, so that every first use hashes
// its tensor itself; settled gates the model's output (Settled) instead
// of each first use. A load that fails returns its error (the background
// stopped).
func startChecked(t *testing.T, path string, workers int, stopFirst, settled bool) (*model.Model, *Background, error) {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ReadManifest(f)
	if err == nil {
		err = m.CheckMetadata(f)
	}
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	bg := m.Start(f, BackgroundOptions{Workers: workers, Helpers: 3})
	if stopFirst {
		bg.Stop()
	}
	o := model.Options{FirstUse: bg.Check, OnClose: func() { bg.Stop(); f.Close() }}
	if settled {
		o.Settled = bg.Settled
	}
	mod, err := model.New(f, o)
	if err != nil {
		bg.Stop()
		f.Close()
		return nil, bg, err
	}
	t.Cleanup(func() { mod.Close() })
	return mod, bg, nil
}

// TestBackgroundIntact: an intact file checks clean in the background,
// whether the background or the first uses hash the tensors, and several
// sessions use it at once (run with -race).
func TestBackgroundIntact(t *testing.T) {
	path := sealed(t)
	for _, tt := range []struct {
		name      string
		workers   int
		stopFirst bool
		settled   bool
	}{{"background first", 2, false, false}, {"first uses alone", 1, true, false}, {"output held", 2, false, true}} {
		t.Run(tt.name, func(t *testing.T) {
			mod, bg, err := startChecked(t, path, tt.workers, tt.stopFirst, tt.settled)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for range 3 {
				wg.Go(func() {
					s, err := mod.NewSession(nil, 0)
					if err == nil {
						_, err = s.Forward([]int32{1, 2, 3}, false)
					}
					if err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			// Stopped first, the Forwards checked every tensor themselves.
			if err := bg.Wait(); err != nil {
				t.Errorf("Wait: %v", err)
			}
		})
	}
}

// TestBackgroundFlippedByte flips one byte of one tensor of a real file:
// the background check names that tensor and no other, and the model's
// first use of it fails naming it, so no output is computed from it —
// whether the background hashed it first or the first use did; with the
// output held (Settled), every Forward fails naming it and returns
// nothing, whichever goroutines hashed it.
func TestBackgroundFlippedByte(t *testing.T) {
	path := sealed(t)
	good := readBytes(t, path)
	f := openGGUF(t, path)
	for _, name := range []string{"blk.1.ffn_down.weight", "token_embd.weight", "blk.1.attn_k.weight", "blk.0.attn_norm.weight"} {
		ti, ok := f.Tensor(name)
		if !ok {
			t.Fatalf("no tensor %s", name)
		}
		b := append([]byte(nil), good...)
		b[ti.Offset+ti.Size/3] ^= 0x04
		p := writeBytes(t, b)
		for _, mode := range []struct{ stopFirst, settled bool }{{false, false}, {true, false}, {false, true}} {
			stopFirst := mode.stopFirst
			mod, bg, err := startChecked(t, p, 2, stopFirst, mode.settled)
			if strings.HasSuffix(name, "_norm.weight") {
				// A vector is used as it loads: the load fails.
				if !errors.Is(err, ErrAltered) || !strings.Contains(err.Error(), name) {
					t.Errorf("%s (%+v): load: %v", name, mode, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			s, err := mod.NewSession(nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			// At once: the background may not have reached the tensor.
			for range 2 {
				logits, err := s.Forward([]int32{1, 2, 3}, false)
				if !errors.Is(err, ErrAltered) || !strings.Contains(err.Error(), name) || logits != nil {
					t.Errorf("%s (%+v): Forward: %d logits, %v", name, mode, len(logits), err)
				}
			}
			if !stopFirst {
				err := bg.Wait()
				if !errors.Is(err, ErrAltered) || !strings.Contains(err.Error(), "tensor "+name+":") || strings.Count(err.Error(), "tensor ") != 1 {
					t.Errorf("%s (%+v): background: %v", name, mode, err)
				}
			}
		}
	}
}

// TestBackgroundStopped: Wait and Settled after Stop, with tensors left
// unchecked, say so.
func TestBackgroundStopped(t *testing.T) {
	f := openGGUF(t, sealed(t))
	m, err := ReadManifest(f)
	if err != nil {
		t.Fatal(err)
	}
	bg := m.Start(f, BackgroundOptions{Workers: 1})
	bg.Stop()
	bg.Stop()
	select {
	case <-bg.Done():
		t.Skip("the background finished before Stop")
	default:
	}
	if err := bg.Wait(); !errors.Is(err, ErrStopped) {
		t.Errorf("Wait after Stop: %v", err)
	}
	if err := bg.Settled(); !errors.Is(err, ErrStopped) {
		t.Errorf("Settled after Stop: %v", err)
	}
}

// TestBackgroundOtherBytes: bytes other than the mapping hashed in the
// background (a copy) are hashed at their use, so an altered copy is
// refused even though the file is intact.
func TestBackgroundOtherBytes(t *testing.T) {
	path := sealed(t)
	f := openGGUF(t, path)
	m, err := ReadManifest(f)
	if err != nil {
		t.Fatal(err)
	}
	bg := m.Start(f, BackgroundOptions{Workers: 2})
	defer bg.Stop()
	if err := bg.Wait(); err != nil {
		t.Fatal(err)
	}
	ti, _ := f.Tensor("blk.0.ffn_up.weight")
	data, _ := f.ReadTensor(ti)
	cp := append([]byte(nil), data...)
	if err := bg.Check(ti, cp); err != nil {
		t.Errorf("intact copy: %v", err)
	}
	cp[5] ^= 1
	if err := bg.Check(ti, cp); !errors.Is(err, ErrAltered) || !strings.Contains(err.Error(), ti.Name) {
		t.Errorf("altered copy: %v", err)
	}
	if err := bg.Check(ti, data); err != nil {
		t.Errorf("the mapping itself: %v", err)
	}
	ti.Name = "blk.0.ffn_extra.weight"
	if err := bg.Check(ti, data); !errors.Is(err, ErrAltered) || !strings.Contains(err.Error(), "not in the manifest") {
		t.Errorf("a tensor the manifest lacks: %v", err)
	}
}

// TestUseRank: the embedding first, blocks in numeric order, the rest last.
func TestUseRank(t *testing.T) {
	order := []string{"token_embd.weight", "blk.0.attn_q.weight", "blk.2.ffn_up.weight", "blk.10.attn_k.weight", "output_norm.weight"}
	for i := 1; i < len(order); i++ {
		if a, b := useRank(order[i-1]), useRank(order[i]); a >= b {
			t.Errorf("useRank(%s) = %d, not before useRank(%s) = %d", order[i-1], a, order[i], b)
		}
	}
	for _, odd := range []string{"blk.x.attn_q.weight", "blk.-1.a", "blk.", "output.weight"} {
		if useRank(odd) != useRank("output_norm.weight") {
			t.Errorf("useRank(%s) = %d, want the rest's", odd, useRank(odd))
		}
	}
}

// TestBackgroundSettled: Settled, called at once, hashes what the one
// background worker has not claimed and returns the complete check's
// result, the same on every call and for concurrent callers.
func TestBackgroundSettled(t *testing.T) {
	path := sealed(t)
	good := readBytes(t, path)
	f := openGGUF(t, path)
	ti, _ := f.Tensor("blk.1.attn_v.weight")
	b := append([]byte(nil), good...)
	b[ti.Offset+7] ^= 0x80
	for _, tt := range []struct {
		name string
		file string
		want string // "" for nil
	}{{"intact", path, ""}, {"flipped", writeBytes(t, b), "tensor blk.1.attn_v.weight:"}} {
		t.Run(tt.name, func(t *testing.T) {
			f := openGGUF(t, tt.file)
			m, err := ReadManifest(f)
			if err != nil {
				t.Fatal(err)
			}
			bg := m.Start(f, BackgroundOptions{Workers: 1, Helpers: 3})
			defer bg.Stop()
			errs := make([]error, 4)
			var wg sync.WaitGroup
			for i := range errs {
				wg.Go(func() { errs[i] = bg.Settled() })
			}
			wg.Wait()
			errs = append(errs, bg.Settled(), bg.Wait())
			for i, err := range errs {
				if tt.want == "" && err != nil || tt.want != "" && (!errors.Is(err, ErrAltered) || !strings.Contains(err.Error(), tt.want)) {
					t.Errorf("call %d: %v, want %q", i, err, tt.want)
				}
			}
		})
	}
}
