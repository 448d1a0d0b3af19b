package model

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/turbomem/turbomem/kvcache"
)

// TestGreedyMatchesLlamaCpp runs the third-party llama-2-tiny-random.gguf
// (written by llama.cpp's converter: F16 weights, head_dim 4) and compares
// 32 greedily generated tokens with llama.cpp's on the same prompt ids.
// testdata/llamacpp_tiny_random.json is the output of
//
//	node bench/peers/greedy.mjs --model testdata/llama-2-tiny-random.gguf --prompt "Once upon a time" --n 32
//
// (node-llama-cpp 3.22.1, CPU, f16 KV cache).
func TestGreedyMatchesLlamaCpp(t *testing.T) {
	const path = "../testdata/llama-2-tiny-random.gguf"
	var peer struct {
		PromptIDs []int32 `json:"prompt_ids"`
		Tokens    []int32 `json:"tokens"`
	}
	b, err := os.ReadFile("testdata/llamacpp_tiny_random.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &peer); err != nil {
		t.Fatal(err)
	}
	m, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s, err := m.NewSession(kvcache.F16(), 0)
	if err != nil {
		t.Fatal(err)
	}
	logits, err := s.Forward(peer.PromptIDs, false)
	if err != nil {
		t.Fatal(err)
	}
	var got []int32
	for range peer.Tokens {
		next := int32(argmax(logits))
		got = append(got, next)
		if logits, err = s.Forward([]int32{next}, false); err != nil {
			t.Fatal(err)
		}
	}
	agree := 0
	for agree < len(got) && got[agree] == peer.Tokens[agree] {
		agree++
	}
	if agree < len(got) {
		t.Errorf("greedy tokens agree with llama.cpp for %d of %d:\n ours %v\npeer %v", agree, len(got), got, peer.Tokens)
	}
}

// TestTokenizerMatchesLlamaCpp: the prompt ids llama.cpp produced for
// "Once upon a time" (without BOS) on the same file.
func TestTokenizerMatchesLlamaCpp(t *testing.T) {
	const path = "../testdata/llama-2-tiny-random.gguf"
	m, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tok, err := LoadTokenizer(m.File())
	if err != nil {
		t.Fatal(err)
	}
	got := tok.Encode("Once upon a time", false)
	want := []int32{9038, 2501, 263, 931}
	if len(got) != len(want) {
		t.Fatalf("Encode = %v, llama.cpp %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("Encode = %v, llama.cpp %v", got, want)
		}
	}
	if withBOS := tok.Encode("Once upon a time", true); len(withBOS) != 5 || withBOS[0] != 1 {
		t.Errorf("Encode with BOS = %v, want BOS (1) first", withBOS)
	}
}
