package defaultmodel

import (
	"encoding/json"
	"os"
	"slices"
	"testing"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// TestGreedyMatchesLlamaCpp: llama.cpp loads the embedded GGUF (written by
// our own writer) and generates the same 48 greedy tokens as we do.
// testdata/llamacpp_greedy.json is the output of
//
//	node bench/peers/greedy.mjs --model defaultmodel/turbomem-default.gguf --prompt "The kernel" --n 48
//
// (node-llama-cpp 3.22.1, CPU, f16 KV cache; the prompt tokenized by
// llama.cpp without BOS). It also checks that our tokenizer gives
// llama.cpp's prompt ids.
func TestGreedyMatchesLlamaCpp(t *testing.T) {
	var peer struct {
		PromptIDs []int32 `json:"prompt_ids"`
		Tokens    []int32 `json:"tokens"`
	}
	b, err := os.ReadFile("testdata/llamacpp_greedy.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &peer); err != nil {
		t.Fatal(err)
	}
	m, err := Load(model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := model.LoadTokenizer(m.File())
	if err != nil {
		t.Fatal(err)
	}
	if ids := tok.Encode("The kernel", false); !slices.Equal(ids, peer.PromptIDs) {
		t.Errorf("Encode(\"The kernel\") = %v, llama.cpp %v", ids, peer.PromptIDs)
	}
	s, err := m.NewSession(kvcache.F16(), 0)
	if err != nil {
		t.Fatal(err)
	}
	logits, err := s.Forward(peer.PromptIDs, false)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range peer.Tokens {
		best := 0
		for j, v := range logits {
			if v > logits[best] {
				best = j
			}
		}
		if int32(best) != want {
			t.Fatalf("greedy token %d: %d, llama.cpp %d (agreement for %d tokens)", i, best, want, i)
		}
		if logits, err = s.Forward([]int32{int32(best)}, false); err != nil {
			t.Fatal(err)
		}
	}
}
