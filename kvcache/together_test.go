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
					w64 := make([]float64, len(want))
					for j, x := range want {
						w64[j] = float64(x)
					}
					tol := 1e-5
					if format != "f16" {
						tol = 0
					}
					if e := relErr(got[i], w64); !(e <= tol) {
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
