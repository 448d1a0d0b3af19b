package gguf_test

import (
	"bytes"
	"fmt"
	"log"

	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/tensor"
)

// Example writes a small file with Builder and reads it back.
func Example() {
	b := gguf.NewBuilder()
	for _, kv := range []struct {
		key string
		val any
	}{
		{"general.architecture", "llama"},
		{"llama.block_count", uint32(1)},
		{"llama.attention.layer_norm_rms_epsilon", float32(1e-5)},
		{"tokenizer.ggml.tokens", []string{"<unk>", "<s>", "</s>"}},
	} {
		if err := b.Set(kv.key, kv.val); err != nil {
			log.Fatal(err)
		}
	}
	norm := make([]byte, 4*8) // 8 float32 zeros
	if err := b.AddTensor("output_norm.weight", tensor.F32, []int64{8}, norm); err != nil {
		log.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := b.WriteTo(&buf); err != nil {
		log.Fatal(err)
	}

	// gguf.Open(path) would memory-map a file on disk instead.
	f, err := gguf.DecodeBytes(buf.Bytes())
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	arch, _ := f.Architecture()
	layers, _ := f.Uint("llama.block_count")
	tokens, _ := f.Strings("tokenizer.ggml.tokens")
	_, err = f.Uint("llama.context_length")
	fmt.Println(arch, layers, len(tokens), err)
	for _, t := range f.Tensors {
		data, _ := f.TensorData(t.Name)
		fmt.Println(t.Name, t.Type, t.Shape, t.Offset, len(data))
	}
	// Output:
	// llama 1 3 gguf: key "llama.context_length": not found
	// output_norm.weight F32 [8] 288 32
}
