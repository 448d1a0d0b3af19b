package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/turbomem/turbomem/bench"
)

func benchDecode(e *env, args []string) error {
	fs := newFlagSet(e, "bench decode", "\n\nPrefills --ctx random tokens once per --kv format (on --threads threads), then\n"+
		"decodes --n tokens greedily at each --decode-threads count, the formats and\n"+
		"thread counts taking turns for --repeat rounds; reports prompt tok/s and the\n"+
		"decode rate (median step; median and range over the rounds). With\n"+
		"--llama-bench, runs llama.cpp's native llama-bench on the same file, threads\n"+
		"and depths with flash attention off and on, and prints the ratio to its best;\n"+
		"with --peer, llama.cpp through node-llama-cpp (bench/peers) for greedy-token\n"+
		"agreement. If llama.cpp fails, our rows are still printed (exit status 1).")
	mf := addModelFlags(fs, " for the prefill")
	ctxList := fs.String("ctx", "128,2048", "comma-separated context lengths to decode at")
	n := fs.Int("n", 32, "tokens to decode at each context, thread count and round")
	decThreads := fs.String("decode-threads", "", "comma-separated thread counts to decode at (default: --threads)")
	repeat := fs.Int("repeat", 1, "rounds of decoding (median and range reported)")
	llamaBench := fs.String("llama-bench", "", "path to a natively built llama-bench to run on the same file")
	llamaPrompt := fs.Int("llama-prompt", 512, "with --llama-bench: prompt length of its prompt test, on --threads (0: none)")
	peer := fs.String("peer", "", "path to bench/peers/greedy.mjs to run llama.cpp too (greedy-token agreement)")
	kvf := addKVListFlags(fs, "f16", "")
	format := formatFlag(fs)
	seed := seedFlag(fs, "the random prompt")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile (go tool pprof) of our decoding, the prefills left out, to this file (one --ctx)")
	if err := parseOutputFlags(fs, args, format, cpuProfile); err != nil {
		return err
	}
	if *n < 2 || *n > 100000 {
		return usageError{fmt.Errorf("--n %d out of range [2, 100000]", *n)}
	}
	if *repeat < 1 || *repeat > 1000 {
		return usageError{fmt.Errorf("--repeat %d out of range [1, 1000]", *repeat)}
	}
	if *llamaPrompt < 0 || *llamaPrompt > 1<<20 {
		return usageError{fmt.Errorf("--llama-prompt %d out of range [0, %d]", *llamaPrompt, 1<<20)}
	}
	if err := mf.check(); err != nil {
		return err
	}
	ctxs, err := parseInts("--ctx", *ctxList, 1, 1<<24)
	if err != nil {
		return err
	}
	if len(ctxs) == 0 {
		return usageError{errors.New("--ctx: no context length given")}
	}
	if *cpuProfile != "" && len(ctxs) != 1 {
		return usageError{fmt.Errorf("--cpuprofile needs a single --ctx, have %d", len(ctxs))}
	}
	th := mf.threadCount()
	threads, err := parseInts("--decode-threads", *decThreads, 1, 4096)
	if err != nil {
		return err
	}
	if len(threads) == 0 {
		threads = []int{th}
	}
	configs, err := kvf.configs(false)
	if err != nil {
		return err
	}
	if *peer != "" {
		if err := bench.CheckPeer(*peer); err != nil {
			return usageError{fmt.Errorf("--peer: %w", err)}
		}
	}
	l, err := mf.load(e)
	if err != nil {
		return err
	}
	defer l.m.Close()
	if err := checkConfigs(l.m, configs...); err != nil {
		return err
	}
	for _, c := range ctxs {
		if need := c + *repeat*len(threads)**n; need > l.m.Config.Context {
			fmt.Fprintf(e.stderr, "bench decode: %d tokens at --ctx %d are beyond the model's training context of %d: speed is measured, the text is meaningless\n", need, c, l.m.Config.Context)
		}
	}
	var profile io.Writer // nil, or the open --cpuprofile file
	var profFile *os.File
	if *cpuProfile != "" {
		if profFile, err = os.Create(*cpuProfile); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer profFile.Close()
		profile = profFile
	}
	rows, runErr := bench.DecodeSpeed(l.m, bench.DecodeOptions{Contexts: ctxs, N: *n, Threads: th, DecodeThreads: threads,
		Configs: configs, Repeat: *repeat, Seed: *seed, Peer: *peer, ModelPath: *mf.model, CPUProfile: profile})
	if profFile != nil {
		if err := profFile.Close(); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
	}
	if runErr != nil && !errors.Is(runErr, bench.ErrPeer) {
		return runErr
	}
	if *format != "json" {
		// Ours first: a slow or failing llama-bench loses nothing.
		if err := writeDecodeTable(e, rows, modelName(*mf.model), th); err != nil {
			return err
		}
	}
	var llama []bench.LlamaBenchRow
	if *llamaBench != "" && runErr == nil {
		file, cleanup, err := bench.ModelFile(*mf.model)
		if err != nil {
			return err
		}
		defer cleanup()
		llama, runErr = bench.LlamaBench(bench.LlamaBenchOptions{Path: *llamaBench, Model: file, Threads: threads,
			PromptThreads: []int{th}, Depths: ctxs, Prompt: *llamaPrompt, Gen: *n, Repeat: *repeat})
	}
	if *format == "json" {
		err = json.NewEncoder(e.stdout).Encode(struct {
			Rows  []bench.DecodeResult  `json:"rows"`
			Llama []bench.LlamaBenchRow `json:"llama_bench,omitempty"`
		}{rows, llama})
	} else if len(llama) > 0 {
		err = writeLlamaTable(e, rows, llama, th, *llamaPrompt)
	}
	if runErr != nil {
		return fmt.Errorf("bench decode: %w; the rows above are turbomem's alone", runErr)
	}
	return err
}

// writeDecodeTable prints the rows of bench decode, a node peer's row
// after ours with how many greedy tokens agree.
func writeDecodeTable(e *env, rows []bench.DecodeResult, name string, threads int) error {
	fmt.Fprintf(e.stdout, "%s, prefill on %d threads\n", name, threads)
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "engine\tKV\tcontext\tthreads\tprompt tok/s\tdecode tok/s\tmin–max\tpeak RSS\tgreedy agree\t")
	var ours []int32
	for _, row := range rows {
		if row.Engine == "llama.cpp" {
			k := 0
			for k < len(ours) && k < len(row.Tokens) && ours[k] == row.Tokens[k] {
				k++
			}
			fmt.Fprintf(tw, "%s (node)\tf16\t%d\t%d\t%.1f\t%.2f\t\t\t%d/%d\t\n", row.Engine, row.Context, row.Threads, row.PromptTPS, row.DecodeTPS, k, len(ours))
			continue
		}
		if row.Threads == threads && ours == nil {
			ours = row.Tokens
		}
		prompt, spread := "", ""
		if row.PromptTPS > 0 {
			prompt = fmt.Sprintf("%.1f", row.PromptTPS)
		}
		if row.Rounds > 1 {
			spread = fmt.Sprintf("%.2f–%.2f", row.DecodeMin, row.DecodeMax)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%.2f\t%s\t%s\t\t\n", row.Engine, row.Format, row.Context, row.Threads, prompt, row.DecodeTPS, spread, humanBytes(row.PeakRSS))
	}
	return tw.Flush()
}

// writeLlamaTable prints our rows beside llama-bench's best (flash
// attention off or on) at the same depth and threads, and our prefill
// beside its prompt test.
func writeLlamaTable(e *env, rows []bench.DecodeResult, llama []bench.LlamaBenchRow, threads, llamaPrompt int) error {
	fmt.Fprintln(e.stdout, "\nbeside llama-bench (llama.cpp built natively, same file, best of -fa 0,1):")
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "KV\tcontext\tthreads\tours tok/s\tllama.cpp tok/s\tfa\tratio\t")
	for _, row := range rows {
		if row.Engine != "turbomem" {
			continue
		}
		if b, ok := bench.LlamaBest(llama, "tg", row.Context, row.Threads); ok {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%.2f\t%s\t%.2fx\t\n", row.Format, row.Context, row.Threads, row.DecodeTPS, b.TPS, b.FlashAttnName(), row.DecodeTPS/b.TPS)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if b, ok := bench.LlamaBest(llama, "pp", 0, threads); ok {
		fmt.Fprintf(e.stdout, "prompt: llama.cpp pp%d on %d threads %.1f tok/s (fa %s)\n", llamaPrompt, threads, b.TPS, b.FlashAttnName())
		for _, row := range rows {
			if row.Engine == "turbomem" && row.PromptTPS > 0 {
				fmt.Fprintf(e.stdout, "  ours, %s, %d-token prompt: %.1f tok/s, %.2fx\n", row.Format, row.Context-1, row.PromptTPS, row.PromptTPS/b.TPS)
			}
		}
	}
	return nil
}
