package kvcache

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/turbomem/turbomem/tensor"
)

// TestAttendTogether: AttendTogether over forks of one compacted context
// (with biases; heads keeping different numbers of tokens, none at all
// for one; some forks inside Recorders, each with its own tokens) and
// other caches beside them (an unrelated f16 cache, a recorded one)
// gives what each cache's own Attend gives, within float32 rounding
// (1e-5 relative: the products sum in another order), and the recorders
// record the same queries; for forks of a turbo3.5 context, whose part is
// compressed, exactly what their own Attend gives. On one thread and on a
// pool of 3, the f16 part's panels made on the first attention or before
// the forks (PreparePanels, which a compressed part refuses).
func TestAttendTogether(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	sh := Shape{QHeads: 8, KVHeads: 2, HeadDim: 64}
	for _, format := range []string{"f16", "turbo3.5"} {
		for _, x := range []struct {
			threads int
			prepare bool // the panels made before the forks (PreparePanels)
		}{{1, false}, {3, false}, {3, true}} {
			threads := x.threads
			t.Run(fmt.Sprintf("%s/%d/prepare=%t", format, threads, x.prepare), func(t *testing.T) {
				pool := tensor.NewPool(threads)
				defer pool.Close()
				spec, err := ParseSpec(format, format)
				if err != nil {
					t.Fatal(err)
				}
				cfg := Uniform(spec)
				kept := []int{300, 0}
				if format != "f16" {
					kept = []int{300, 40}
				}
				keys, bias, values := compactedInput(r, sh, kept)
				base, err := cfg.NewCompacted(0, sh, keys, bias, values)
				if err != nil {
					t.Fatal(err)
				}
				if x.prepare {
					if ok := base.PreparePanels(); ok != (format == "f16") {
						t.Fatalf("PreparePanels of a %s part: %t", format, ok)
					}
				}
				var caches, refs []Cache
				var recs []*Recorder
				for f := range 5 {
					inner, _ := NewF16(sh)
					fk, err := base.Fork(inner)
					if err != nil {
						t.Fatal(err)
					}
					var c Cache = fk
					if f%2 == 1 {
						rec := NewRecorder(fk, sh)
						recs = append(recs, rec)
						c = rec.Recording()
					}
					ks, vs := kvData(r, sh, f+1, false)
					for i := range ks {
						if err := c.Append(ks[i], vs[i]); err != nil {
							t.Fatal(err)
						}
					}
					caches = append(caches, c)
				}
				other, _ := NewF16(sh)
				rec := NewRecorder(other, sh)
				recs = append(recs, rec)
				ks, vs := kvData(r, sh, 20, false)
				for i := range ks {
					if err := rec.Append(ks[i], vs[i]); err != nil {
						t.Fatal(err)
					}
				}
				caches = append(caches, rec.Recording())
				for _, c := range caches {
					UsePool(c, pool)
					refs = append(refs, c)
				}
				qs, got := make([][]float32, len(caches)), make([][]float32, len(caches))
				for i := range caches {
					qs[i], got[i] = randQuery(r, sh), make([]float32, sh.QHeads*sh.HeadDim)
				}
				AttendTogether(caches, got, qs, 0.125, pool)
				recorded := make([][]float32, len(recs))
				for i, rc := range recs {
					recorded[i] = slices.Clone(rc.Trace.Q)
				}
				for i, c := range refs {
					want := make([]float32, len(got[i]))
					c.Attend(want, qs[i], 0.125)
					tol := 1e-5
					if format != "f16" {
						tol = 0
					}
					if e := relErr32(got[i], want); !(e <= tol) {
						t.Errorf("cache %d: relative error %g from its own Attend", i, e)
					}
				}
				for i, rc := range recs {
					if n := len(recorded[i]); n != sh.QHeads*sh.HeadDim || !slices.Equal(recorded[i], rc.Trace.Q[:n]) {
						t.Errorf("recorder %d: recorded %d query values, not the query", i, n)
					}
				}
			})
		}
	}
}

// TestAttendTogetherThreads: forks of one f16 context whose heads keep
// several chunks of positions (and one a chunk and a bit) get the same
// bits from AttendTogether on any number of threads (the chunks merge in
// a fixed order), few forks (a task per chunk) or many, and agree with
// their own Attend within float32 rounding.
func TestAttendTogetherThreads(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	sh := Shape{QHeads: 4, KVHeads: 2, HeadDim: 32}
	keys, bias, values := compactedInput(r, sh, []int{3*togetherKeys + 17, togetherKeys + 1})
	base, err := F16().NewCompacted(0, sh, keys, bias, values)
	if err != nil {
		t.Fatal(err)
	}
	for _, forks := range []int{1, 13} {
		var caches []Cache
		for f := range forks {
			inner, _ := NewF16(sh)
			fk, err := base.Fork(inner)
			if err != nil {
				t.Fatal(err)
			}
			ks, vs := kvData(r, sh, f%3+1, false)
			for i := range ks {
				if err := fk.Append(ks[i], vs[i]); err != nil {
					t.Fatal(err)
				}
			}
			caches = append(caches, fk)
		}
		qs := make([][]float32, forks)
		for i := range qs {
			qs[i] = randQuery(r, sh)
		}
		var ref [][]float32
		for _, threads := range []int{1, 2, 5} {
			pool := tensor.NewPool(threads)
			got := make([][]float32, forks)
			for i := range got {
				got[i] = make([]float32, sh.QHeads*sh.HeadDim)
			}
			AttendTogether(caches, got, qs, 0.2, pool)
			pool.Close()
			if ref == nil {
				ref = got
				for i, c := range caches {
					want := make([]float32, len(got[i]))
					c.Attend(want, qs[i], 0.2)
					if e := relErr32(got[i], want); !(e <= 1e-5) {
						t.Errorf("%d forks: fork %d: relative error %g from its own Attend", forks, i, e)
					}
				}
				continue
			}
			for i := range got {
				if !slices.Equal(got[i], ref[i]) {
					t.Errorf("%d forks, %d threads: fork %d differs from one thread's", forks, threads, i)
				}
			}
		}
	}
}

// BenchmarkAttendTogether: one step of forks of a 3957-token f16 context
// (the embedded model's shape: 4 query heads on one KV head of 128) on
// the machine's threads, 1, 3 and 32 forks (the self-study's groups
// early and late), each fork with 8 tokens of its own.
func BenchmarkAttendTogether(b *testing.B) {
	r := rand.New(rand.NewPCG(51, 52))
	sh := Shape{QHeads: 4, KVHeads: 1, HeadDim: 128}
	keys, bias, values := compactedInput(r, sh, []int{3957})
	base, err := F16().NewCompacted(0, sh, keys, bias, values)
	if err != nil {
		b.Fatal(err)
	}
	base.PreparePanels()
	pool := tensor.NewPool(0)
	defer pool.Close()
	for _, forks := range []int{1, 3, 32} {
		b.Run(fmt.Sprintf("forks=%d", forks), func(b *testing.B) {
			caches, qs, out := make([]Cache, forks), make([][]float32, forks), make([][]float32, forks)
			for f := range caches {
				inner, _ := NewF16(sh)
				fk, err := base.Fork(inner)
				if err != nil {
					b.Fatal(err)
				}
				ks, vs := kvData(r, sh, 8, false)
				for i := range ks {
					if err := fk.Append(ks[i], vs[i]); err != nil {
						b.Fatal(err)
					}
				}
				caches[f], qs[f], out[f] = fk, randQuery(r, sh), make([]float32, sh.QHeads*sh.HeadDim)
			}
			for b.Loop() {
				AttendTogether(caches, out, qs, 0.0884, pool)
			}
		})
	}
}
