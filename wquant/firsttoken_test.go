package wquant_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/wquant"
)

// BenchmarkFirstToken measures the first token's latency of the embedded
// model, sealed with a manifest (a copy, its Q8_0 tensors as they are):
// open the file, load the model, run a prompt of 16 or 256 tokens — with
// no check, with --verify=lazy's (each tensor hashed at its first use,
// the hashing spread over every CPU) and with --verify=full's (every hash
// before loading). lazy/off − 1 is what lazy checking costs; cpu-ms/op,
// the process's CPU time per first token, is what a busy machine
// disturbs less.
func BenchmarkFirstToken(b *testing.B) {
	src, err := defaultmodel.Open()
	if err != nil {
		b.Fatal(err)
	}
	plan, err := wquant.Recipe(src, defaultmodel.SHA256, "Q8_0")
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "sealed.gguf")
	if err := wquant.NewQuantizer(src, nil, 0).Write(context.Background(), path, plan, wquant.WriteOptions{Tool: "bench"}); err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{16, 256} {
		prompt := make([]int32, n)
		for i := range prompt {
			prompt[i] = int32(100 + 7*i)
		}
		for _, mode := range []string{"off", "lazy", "full"} {
			b.Run(mode+"/prompt-"+map[int]string{16: "16", 256: "256"}[n], func(b *testing.B) {
				cpu0, ok := wquant.CPUTime()
				defer func() {
					if cpu1, _ := wquant.CPUTime(); ok {
						b.ReportMetric(1000*(cpu1-cpu0).Seconds()/float64(b.N), "cpu-ms/op")
					}
				}()
				for b.Loop() {
					var o model.Options
					if mode != "off" {
						f, err := gguf.Open(path)
						if err != nil {
							b.Fatal(err)
						}
						if mode == "full" {
							_, err = wquant.Verify(context.Background(), f, wquant.VerifyOptions{})
						} else {
							var man *wquant.Manifest
							if man, err = wquant.ReadManifest(f); err == nil {
								err = man.CheckMetadata(f)
								o.FirstUse = man.Lazy()
							}
						}
						f.Close()
						if err != nil {
							b.Fatal(err)
						}
					}
					m, err := model.Open(path, o)
					if err != nil {
						b.Fatal(err)
					}
					s, err := m.NewSession(nil, 512)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := s.Forward(prompt, false); err != nil {
						b.Fatal(err)
					}
					m.Close()
				}
			})
		}
	}
}
