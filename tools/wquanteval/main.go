// Command wquanteval measures quantized model files against their source,
// by both engines: the mean KL divergence of the next-token distributions
// from the source's on held-out text, as turbomem computes it (eval ppl
// --ref) and as llama.cpp's llama-perplexity --kl-divergence does, with
// each file's tensor bytes and bits per weight; it prints a Markdown table
// and draws size against KL.
//
//	go run ./tools/wquanteval -src src-f32.gguf -text eval.txt -llama /path/to/llama.cpp/bin \
//	    -svg kl.svg -json kl.json  'turbomem plan=tm-5.23.gguf' 'llama.cpp Q4_K_M=llama-Q4_K_M.gguf' ...
//
// Each file argument is "SERIES NAME=PATH" (the series is the first word:
// points of one series are joined in the plot) or just a path. Results
// already in -json are kept, so a long run can be resumed. A file that
// turbomem cannot read (a type it does not implement, such as llama.cpp's
// IQ2 types) is scored by llama.cpp alone when -llama is given: its row
// says why, and its turbomem columns are empty.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/plot"
)

// row is one measured file.
type row struct {
	Series      string  `json:"series"`
	Name        string  `json:"name"`
	Path        string  `json:"path"`
	FileBytes   int64   `json:"file_bytes"`
	TensorBytes int64   `json:"tensor_bytes"`
	BPW         float64 `json:"bpw"`
	KL          float64 `json:"kl_turbomem"`
	KLP99       float64 `json:"kl_p99_turbomem"`
	Top1        float64 `json:"top1_turbomem"`
	PPL         float64 `json:"ppl_turbomem"`
	LlamaKL     float64 `json:"kl_llamacpp"`
	LlamaPPL    float64 `json:"ppl_llamacpp"`
	Unread      string  `json:"turbomem_unread,omitempty"` // why turbomem could not score the file
}

func main() {
	src := flag.String("src", "", "the source model file (the reference)")
	text := flag.String("text", "", "held-out text")
	ctxLen := flag.Int("ctx", 512, "window length in tokens")
	chunks := flag.Int("chunks", 16, "windows scored")
	llama := flag.String("llama", "", "directory of llama-perplexity (empty: turbomem's KL only)")
	threads := flag.Int("threads", 2, "threads of both engines")
	svg := flag.String("svg", "", "draw bits per weight against mean KL to this file")
	title := flag.String("title", "Weight quantization: size against KL from the source model", "the plot's title")
	jsonOut := flag.String("json", "", "results file (read first: rows measured before are kept)")
	flag.Parse()
	if err := run(*src, *text, *ctxLen, *chunks, *llama, *threads, *svg, *title, *jsonOut, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "wquanteval:", err)
		os.Exit(1)
	}
}

func run(src, textPath string, ctxLen, chunks int, llama string, threads int, svg, title, jsonOut string, args []string) error {
	if src == "" || textPath == "" || len(args) == 0 {
		return fmt.Errorf("need -src, -text and files")
	}
	b, err := os.ReadFile(textPath)
	if err != nil {
		return err
	}
	var rows []row
	if jsonOut != "" {
		if old, err := os.ReadFile(jsonOut); err == nil {
			if err := json.Unmarshal(old, &rows); err != nil {
				return fmt.Errorf("%s: %w", jsonOut, err)
			}
		}
	}
	done := map[string]bool{}
	for _, r := range rows {
		done[r.Path] = true
	}
	ref, err := model.Open(src, model.Options{Threads: threads})
	if err != nil {
		return err
	}
	tok, err := model.LoadTokenizer(ref.File())
	if err != nil {
		ref.Close()
		return err
	}
	ids := tok.Encode(string(b), true)
	ctx := context.Background()
	// The source's distributions (and llama.cpp's of it), computed when
	// the first file needs them: a run whose files are all measured only
	// prints and draws.
	var base *eval.PPLResult
	kld := ""
	if llama != "" {
		kld = filepath.Join(os.TempDir(), fmt.Sprintf("wquanteval-%d.kld", os.Getpid()))
		defer os.Remove(kld)
	}
	reference := func() error {
		if base != nil {
			return nil
		}
		res, err := eval.Perplexity(ctx, ref, ids, tok.BOS(), eval.PPLOptions{Ctx: ctxLen, MaxChunks: chunks})
		if err != nil {
			return err
		}
		base = &res
		fmt.Fprintf(os.Stderr, "source: perplexity %.4f over %d tokens\n", base.PPL, base.Tokens)
		if llama != "" {
			out, err := llamaPerplexity(llama, src, textPath, ctxLen, chunks, threads, "--kl-divergence-base", kld)
			if err != nil {
				return err
			}
			ppl, _ := grabFloat(out, `Final estimate: PPL = ([0-9.]+)`)
			fmt.Fprintf(os.Stderr, "source: llama.cpp's perplexity %.4f\n", ppl)
		}
		return nil
	}
	defer ref.Close()
	for _, a := range args {
		r := row{Series: "file", Path: a, Name: filepath.Base(a)}
		if label, path, ok := strings.Cut(a, "="); ok {
			r.Path, r.Name = path, label
			r.Series, _, _ = strings.Cut(label, " ")
		}
		if done[r.Path] {
			continue
		}
		if err := reference(); err != nil {
			return err
		}
		start := time.Now()
		if err := measure(ctx, &r, ids, tok.BOS(), base.Dists, ctxLen, chunks, threads, llama != ""); err != nil {
			return fmt.Errorf("%s: %w", r.Path, err)
		}
		if llama != "" {
			out, err := llamaPerplexity(llama, r.Path, "", ctxLen, chunks, threads, "--kl-divergence-base", kld, "--kl-divergence")
			if err != nil {
				return err
			}
			if r.LlamaKL, err = grabFloat(out, `Mean\s+KLD:\s+(-?[0-9.]+)`); err != nil {
				return fmt.Errorf("%s: llama-perplexity: %w; its output ends:\n%s", r.Path, err, tail(out))
			}
			r.LlamaPPL, _ = grabFloat(out, `Mean PPL\(Q\)\s+:\s+([0-9.]+)`)
		}
		if r.Unread != "" {
			fmt.Fprintf(os.Stderr, "%s: %.3f bpw, KL by llama.cpp only %.5f (%s), %.0f s\n", r.Name, r.BPW, r.LlamaKL, r.Unread, time.Since(start).Seconds())
		} else {
			fmt.Fprintf(os.Stderr, "%s: %.3f bpw, KL %.5f (llama.cpp %.5f), %.0f s\n", r.Name, r.BPW, r.KL, r.LlamaKL, time.Since(start).Seconds())
		}
		rows = append(rows, r)
		if jsonOut != "" {
			if err := writeJSON(jsonOut, rows); err != nil {
				return err
			}
		}
	}
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i].Series != rows[j].Series {
			return rows[i].Series < rows[j].Series
		}
		return rows[i].BPW < rows[j].BPW
	})
	printTable(rows)
	if svg != "" {
		return draw(svg, title, rows, llama != "")
	}
	return nil
}

// measure fills r's sizes and turbomem's figures; with orLlama, a file
// whose tensors turbomem does not read gets its sizes and the reason
// (r.Unread) instead, for llama.cpp's figures alone.
func measure(ctx context.Context, r *row, ids []int32, bos int32, ref *eval.Dists, ctxLen, chunks, threads int, orLlama bool) error {
	st, err := os.Stat(r.Path)
	if err != nil {
		return err
	}
	r.FileBytes = st.Size()
	f, err := gguf.Open(r.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	var elems int64
	for _, t := range f.Tensors {
		r.TensorBytes += t.Size
		elems += t.Elements()
	}
	r.BPW = 8 * float64(r.TensorBytes) / float64(elems)
	m, err := model.New(f, model.Options{Threads: threads})
	if orLlama && errors.Is(err, model.ErrUnsupported) {
		r.Unread = err.Error()
		return nil
	}
	if err != nil {
		return err
	}
	res, err := eval.Perplexity(ctx, m, ids, bos, eval.PPLOptions{Ctx: ctxLen, MaxChunks: chunks, Ref: ref})
	if err != nil {
		return err
	}
	r.KL, r.KLP99, r.Top1, r.PPL = res.Agreement.KLMean, res.Agreement.KLP99, res.Agreement.Top1, res.PPL
	return nil
}

// llamaPerplexity runs llama-perplexity on model (with -f text when
// given) and returns its output.
func llamaPerplexity(dir, modelPath, text string, ctxLen, chunks, threads int, extra ...string) (string, error) {
	args := []string{"-m", modelPath, "-c", strconv.Itoa(ctxLen), "--chunks", strconv.Itoa(chunks), "-t", strconv.Itoa(threads)}
	if text != "" {
		args = append(args, "-f", text)
	}
	cmd := exec.Command(filepath.Join(dir, "llama-perplexity"), append(args, extra...)...)
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("llama-perplexity %s: %w\n%s", strings.Join(cmd.Args[1:], " "), err, tail(string(out)))
	}
	return string(out), nil
}

func tail(s string) string {
	if len(s) > 2000 {
		return s[len(s)-2000:]
	}
	return s
}

func grabFloat(s, pattern string) (float64, error) {
	m := regexp.MustCompile(pattern).FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("no %q in the output", pattern)
	}
	return strconv.ParseFloat(m[1], 64)
}

func writeJSON(path string, rows []row) error {
	b, err := json.MarshalIndent(rows, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func printTable(rows []row) {
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	fmt.Fprintln(w, "| file | tensor bytes | file bytes | bpw | mean KL (turbomem) | p99 KL | top-1 | ppl | mean KL (llama.cpp) | ppl (llama.cpp) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		ours := fmt.Sprintf("%.5f | %.4f | %.4f | %.4f", r.KL, r.KLP99, r.Top1, r.PPL)
		if r.Unread != "" {
			ours = "— | — | — | —"
		}
		fmt.Fprintf(w, "| %s | %d | %d | %.3f | %s | %.5f | %.4f |\n", r.Name, r.TensorBytes, r.FileBytes, r.BPW, ours, r.LlamaKL, r.LlamaPPL)
	}
}

// draw plots bits per weight against mean KL, one line per series and
// engine.
func draw(path, title string, rows []row, llama bool) error {
	c := &plot.Chart{Title: title, XLabel: "bits per weight (all tensors)", YLabel: "mean KL (nats)", LogY: true}
	bySeries := map[string][]row{}
	var order []string
	for _, r := range rows {
		if _, ok := bySeries[r.Series]; !ok {
			order = append(order, r.Series)
		}
		bySeries[r.Series] = append(bySeries[r.Series], r)
	}
	for _, s := range order {
		var x, y, lx, ly []float64
		for _, r := range bySeries[s] {
			if r.KL > 0 {
				x, y = append(x, r.BPW), append(y, r.KL)
			}
			if r.LlamaKL > 0 {
				lx, ly = append(lx, r.BPW), append(ly, r.LlamaKL)
			}
		}
		if len(x) > 0 {
			c.Series = append(c.Series, plot.Series{Name: s + " (turbomem KL)", X: x, Y: y})
		}
		if llama && len(lx) > 0 {
			c.Series = append(c.Series, plot.Series{Name: s + " (llama.cpp KL)", X: lx, Y: ly, Dashed: true})
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := c.WriteSVG(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
