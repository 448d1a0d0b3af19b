package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// fakeLlama writes a llama-perplexity that prints the lines wquanteval
// reads, with fixed figures.
func fakeLlama(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	script := "#!/bin/sh\necho 'Final estimate: PPL = 7.5000 +/- 0.1'\necho 'Mean PPL(Q)                   :  12.250000 ±   0.5'\necho 'Mean    KLD:   0.432100 ±   0.01'\n"
	if err := os.WriteFile(filepath.Join(dir, "llama-perplexity"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// unreadable copies the embedded model with the type of one tensor's
// header entry changed to IQ2_XXS, which turbomem does not implement (its
// data, smaller than the Q8_0 bytes, stays inside the file).
func unreadable(t *testing.T, src string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	name := []byte("blk.0.attn_q.weight")
	i := bytes.Index(b, name)
	if i < 0 {
		t.Fatal("no blk.0.attn_q.weight in the model")
	}
	at := i + len(name)
	dims := int(binary.LittleEndian.Uint32(b[at:]))
	at += 4 + 8*dims
	binary.LittleEndian.PutUint32(b[at:], 16) // GGML_TYPE_IQ2_XXS
	path := filepath.Join(t.TempDir(), "iq2.gguf")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestUnreadableByLlamaOnly: a file of a type turbomem does not read is
// scored by llama.cpp alone when llama.cpp is given (its row says why),
// and is an error without it.
func TestUnreadableByLlamaOnly(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the stand-in llama-perplexity is a shell script")
	}
	src := filepath.Join("..", "..", "defaultmodel", "turbomem-default.gguf")
	text := filepath.Join(t.TempDir(), "eval.txt")
	if err := os.WriteFile(text, []byte(strings.Repeat("The quick brown fox jumps over the lazy dog. ", 40)), 0o644); err != nil {
		t.Fatal(err)
	}
	iq2 := unreadable(t, src)
	err := run(src, text, 64, 1, "", 1, "", "", "", []string{"llama.cpp IQ2_XXS=" + iq2})
	if err == nil || !strings.Contains(err.Error(), "unsupported tensor type IQ2_XXS") {
		t.Fatalf("without llama.cpp: err = %v, want the unsupported type", err)
	}
	out := filepath.Join(t.TempDir(), "kl.json")
	svg := filepath.Join(t.TempDir(), "kl.svg")
	if err := run(src, text, 64, 1, fakeLlama(t), 1, svg, "t", out, []string{"llama.cpp IQ2_XXS=" + iq2}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rows []row
	if err := json.Unmarshal(b, &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 {
		t.Fatalf("%d rows, want 1", len(rows))
	}
	r := rows[0]
	if !strings.Contains(r.Unread, "IQ2_XXS") || r.LlamaKL != 0.4321 || r.LlamaPPL != 12.25 || r.KL != 0 || r.BPW <= 0 || r.TensorBytes <= 0 {
		t.Errorf("row %+v: want llama.cpp's KL 0.4321 and ppl 12.25, sizes, no turbomem KL, the reason", r)
	}
	if fi, err := os.Stat(svg); err != nil || fi.Size() == 0 {
		t.Errorf("plot: %v", err)
	}
}
