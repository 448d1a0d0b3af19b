package tokenizer_test

import (
	"fmt"
	"log"

	"github.com/turbomem/turbomem/tokenizer"
)

// Example builds a tiny SentencePiece vocabulary, as a caller would from a
// GGUF file's tokenizer.ggml.* keys, and encodes and decodes with it.
func Example() {
	tok, err := tokenizer.New(tokenizer.Vocab{
		Model:  "llama",
		Tokens: []string{"<unk>", "<s>", "</s>", "▁", "h", "i", "▁h", "hi", "▁hi"},
		Scores: []float32{0, 0, 0, -1, -2, -3, -4, -5, -6},
		Types:  []int32{2, 3, 3, 1, 1, 1, 1, 1, 1},
		BOS:    1, EOS: 2, UNK: 0, PAD: tokenizer.NoToken,
		AddBOS: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	ids := tok.Encode("hi hi</s>", true)
	fmt.Println(ids)
	fmt.Printf("%q\n", tok.Decode(ids))

	// Streaming a continuation keeps its leading space.
	dec := tok.NewDecoder()
	for _, id := range []int32{8, 8} {
		fmt.Printf("%q ", dec.Next(id))
	}
	fmt.Println(tok.IsEOG(2))
	// Output:
	// [1 8 8 2]
	// "<s>hi hi</s>"
	// " hi" " hi" true
}
