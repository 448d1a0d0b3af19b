package model

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/turbomem/turbomem/tensor"
)

// TestKVRopeMatchesModel: the rotary embedding the model gives its caches
// (CacheShape, for centred keys) turns a key exactly as the model's
// own RoPE does, for adjacent pairs (llama), Llama-3 frequency factors
// and halves (Qwen2). Tolerance 1e-5 relative: the model rotates in
// float32.
func TestKVRopeMatchesModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, name := range []string{"llama_hd128_short", "llama3_gqa4_short", "qwen2_hd64_short"} {
		t.Run(name, func(t *testing.T) {
			var meta refMeta
			readJSON(t, "testdata/reflogits/"+name+".json", &meta)
			m, err := Open(buildGGUF(t, meta, tensor.F32), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			d := m.Config.HeadDim
			s, err := m.NewSession(nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			x := make([]float32, d)
			x64 := make([]float64, d)
			got := make([]float64, d)
			for _, pos := range []int{0, 3, 517, 4000} {
				for i := range x {
					x[i] = float32(r.NormFloat64())
					x64[i] = float64(x[i])
				}
				m.kvRope.Rotate(got, x64, pos)
				s.pos = pos
				s.ropeTable(1)
				s.ropeRow(0)
				s.rope(x, 1, 0)
				for i := range x {
					if math.Abs(got[i]-float64(x[i])) > 1e-5*(1+math.Abs(got[i])) {
						t.Fatalf("position %d, coordinate %d: cache rope %g, model %g", pos, i, got[i], x[i])
					}
				}
			}
		})
	}
}
