package bench

import (
	"errors"
	"testing"
)

// TestParseLlamaBench reads llama-bench's JSON (the fields it writes, as
// tools/llama-bench prints them) and picks llama.cpp's best of flash
// attention off and on.
func TestParseLlamaBench(t *testing.T) {
	out := []byte(`[
  {"build_commit": "de3ff81", "n_threads": 4, "flash_attn": 0, "n_prompt": 512, "n_gen": 0, "n_depth": 0, "avg_ts": 328.5, "stddev_ts": 2.1},
  {"build_commit": "de3ff81", "n_threads": 4, "flash_attn": 1, "n_prompt": 512, "n_gen": 0, "n_depth": 0, "avg_ts": 301.0, "stddev_ts": 1.0},
  {"build_commit": "de3ff81", "n_threads": 4, "flash_attn": 0, "n_prompt": 0, "n_gen": 32, "n_depth": 16384, "avg_ts": 65.0, "stddev_ts": 0.5},
  {"build_commit": "de3ff81", "n_threads": 4, "flash_attn": 1, "n_prompt": 0, "n_gen": 32, "n_depth": 16384, "avg_ts": 37.0, "stddev_ts": 0.4}
]`)
	rows, err := parseLlamaBench(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 || rows[0].Test != "pp" || rows[0].Tokens != 512 || rows[3].Test != "tg" || rows[3].Depth != 16384 || !rows[3].FlashAttn {
		t.Fatalf("rows %+v", rows)
	}
	if b, ok := LlamaBest(rows, "pp", 0, 4); !ok || b.TPS != 328.5 || b.FlashAttn {
		t.Errorf("best pp: %+v %v", b, ok)
	}
	if b, ok := LlamaBest(rows, "tg", 16384, 4); !ok || b.TPS != 65 {
		t.Errorf("best tg: %+v %v", b, ok)
	}
	if _, ok := LlamaBest(rows, "tg", 16384, 16); ok {
		t.Error("a thread count that did not run was found")
	}
	if _, err := parseLlamaBench([]byte("llama-bench: error")); !errors.Is(err, ErrPeer) {
		t.Errorf("bad output: %v", err)
	}
	if _, err := LlamaBench(LlamaBenchOptions{Path: "/nonexistent/llama-bench", Model: "m.gguf", Threads: []int{1}, PromptThreads: []int{1}, Prompt: 8}); !errors.Is(err, ErrPeer) {
		t.Errorf("missing binary: %v", err)
	}
}
