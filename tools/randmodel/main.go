// Command randmodel writes a llama-architecture GGUF file with random
// weights in a chosen shape and type, for speed and memory benchmarks
// (its output is gibberish). The tokenizer metadata is copied from another
// GGUF file, so that llama.cpp loads the result too.
//
//	go run ./tools/randmodel -shape tinyllama-1.1b -type Q8_0 -vocab-from testdata/llama-2-tiny-random.gguf -o /tmp/tl-q8.gguf
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/tensor"
)

type shape struct{ layers, hidden, heads, kvHeads, ffn int }

var shapes = map[string]shape{
	"tinyllama-1.1b": {22, 2048, 32, 4, 5632},
	"small-160m":     {12, 768, 12, 4, 2048},
	"hd128-100m":     {8, 1024, 8, 2, 2816},
	// the suite's large model (tools/train: 56.6 M parameters with its
	// tied 12288-token embedding; untied here)
	"suite-large": {6, 1024, 8, 2, 1536},
}

func main() {
	name := flag.String("shape", "small-160m", "model shape: "+strings.Join(shapeNames(), ", "))
	typName := flag.String("type", "Q8_0", "type of the weight matrices (F16, Q8_0, Q4_0, Q4_K, Q6_K, ...)")
	vocabFrom := flag.String("vocab-from", "", "GGUF file whose tokenizer metadata to copy (required)")
	out := flag.String("o", "", "output file (required)")
	seed := flag.Uint64("seed", 1, "random seed")
	flag.Parse()
	if err := run(*name, *typName, *vocabFrom, *out, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "randmodel:", err)
		os.Exit(1)
	}
}

func shapeNames() []string {
	var s []string
	for n := range shapes {
		s = append(s, n)
	}
	return s
}

func run(name, typName, vocabFrom, out string, seed uint64) error {
	sh, ok := shapes[name]
	if !ok {
		return fmt.Errorf("unknown shape %q", name)
	}
	typ, err := tensor.ParseDType(typName)
	if err != nil {
		return err
	}
	if vocabFrom == "" || out == "" {
		return fmt.Errorf("-vocab-from and -o are required")
	}
	src, err := gguf.Open(vocabFrom)
	if err != nil {
		return err
	}
	defer src.Close()
	b := gguf.NewBuilder()
	vocab := 0
	for _, kv := range src.KV {
		if strings.HasPrefix(kv.Key, "tokenizer.") {
			if err := b.Set(kv.Key, kv.Value); err != nil {
				return err
			}
			if kv.Key == "tokenizer.ggml.tokens" {
				vocab = kv.Value.Len()
			}
		}
	}
	if vocab == 0 {
		return fmt.Errorf("%s has no tokenizer.ggml.tokens", vocabFrom)
	}
	hd := sh.hidden / sh.heads
	for _, kv := range []struct {
		k string
		v any
	}{
		{"general.architecture", "llama"},
		{"general.name", "random " + name},
		{"llama.block_count", uint32(sh.layers)},
		{"llama.embedding_length", uint32(sh.hidden)},
		{"llama.feed_forward_length", uint32(sh.ffn)},
		{"llama.attention.head_count", uint32(sh.heads)},
		{"llama.attention.head_count_kv", uint32(sh.kvHeads)},
		{"llama.context_length", uint32(4096)},
		{"llama.rope.dimension_count", uint32(hd)},
		{"llama.rope.freq_base", float32(10000)},
		{"llama.attention.layer_norm_rms_epsilon", float32(1e-5)},
	} {
		if err := b.Set(kv.k, kv.v); err != nil {
			return err
		}
	}
	r := rand.New(rand.NewPCG(seed, 7))
	matrix := func(name string, rows, cols int) error {
		return b.AddTensorFunc(name, typ, []int64{int64(cols), int64(rows)}, func(w io.Writer) error {
			// Values come from r in order; blocks of rows are then encoded
			// on all CPUs (quantizing is the slow part) and written in order.
			const block = 256
			vals := make([]float32, block*cols)
			enc := make([][]byte, block)
			s := math.Sqrt(3 / float64(cols))
			for r0 := 0; r0 < rows; r0 += block {
				n := min(block, rows-r0)
				for i := range vals[:n*cols] {
					vals[i] = float32((2*r.Float64() - 1) * s)
				}
				var wg sync.WaitGroup
				errs := make([]error, n)
				workers := runtime.NumCPU()
				for k := range workers {
					wg.Go(func() {
						for i := k; i < n; i += workers {
							enc[i], errs[i] = tensor.Encode(typ, vals[i*cols:(i+1)*cols])
						}
					})
				}
				wg.Wait()
				for i := range n {
					if errs[i] != nil {
						return errs[i]
					}
					if _, err := w.Write(enc[i]); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
	vector := func(name string, n int) error {
		data := make([]byte, 4*n)
		for i := range n {
			binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(float32(1+0.1*(2*r.Float64()-1))))
		}
		return b.AddTensor(name, tensor.F32, []int64{int64(n)}, data)
	}
	if err := matrix("token_embd.weight", vocab, sh.hidden); err != nil {
		return err
	}
	for l := range sh.layers {
		p := fmt.Sprintf("blk.%d.", l)
		for _, m := range []struct {
			n          string
			rows, cols int
		}{
			{"attn_q.weight", sh.heads * hd, sh.hidden},
			{"attn_k.weight", sh.kvHeads * hd, sh.hidden},
			{"attn_v.weight", sh.kvHeads * hd, sh.hidden},
			{"attn_output.weight", sh.hidden, sh.heads * hd},
			{"ffn_gate.weight", sh.ffn, sh.hidden},
			{"ffn_up.weight", sh.ffn, sh.hidden},
			{"ffn_down.weight", sh.hidden, sh.ffn},
		} {
			if err := matrix(p+m.n, m.rows, m.cols); err != nil {
				return err
			}
		}
		if err := vector(p+"attn_norm.weight", sh.hidden); err != nil {
			return err
		}
		if err := vector(p+"ffn_norm.weight", sh.hidden); err != nil {
			return err
		}
	}
	if err := vector("output_norm.weight", sh.hidden); err != nil {
		return err
	}
	if err := matrix("output.weight", vocab, sh.hidden); err != nil {
		return err
	}
	return b.WriteFile(out)
}
