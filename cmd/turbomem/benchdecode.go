package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/turbomem/turbomem/bench"
)

func benchDecode(e *env, args []string) error {
	fs := newFlagSet(e, "bench decode", "\n\nPrefills --ctx random tokens, then decodes --n tokens greedily, and reports\nprompt and decode tokens/s; with --peer, runs llama.cpp (node-llama-cpp, see\nbench/peers) on the same file, ids and thread count, in the same run. If\nllama.cpp fails, our rows are still printed (exit status 1).")
	mf := addModelFlags(fs, "")
	ctxList := fs.String("ctx", "128,2048", "comma-separated context lengths to decode at")
	n := fs.Int("n", 32, "tokens to decode at each context")
	peer := fs.String("peer", "", "path to bench/peers/greedy.mjs to run llama.cpp too")
	kvf := addKVFlags(fs)
	format := formatFlag(fs)
	seed := seedFlag(fs, "the random prompt")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *n < 2 || *n > 100000 {
		return usageError{fmt.Errorf("--n %d out of range [2, 100000]", *n)}
	}
	if err := checkFormat(*format); err != nil {
		return err
	}
	ctxs, err := parseInts("--ctx", *ctxList, 1, 1<<24)
	if err != nil {
		return err
	}
	if len(ctxs) == 0 {
		return usageError{errors.New("--ctx: no context length given")}
	}
	if *peer != "" {
		if err := bench.CheckPeer(*peer); err != nil {
			return usageError{fmt.Errorf("--peer: %w", err)}
		}
	}
	l, kv, err := openWithKV(e, mf, kvf)
	if err != nil {
		return err
	}
	defer l.m.Close()
	for _, c := range ctxs {
		if c+*n > l.m.Config.Context {
			return usageError{fmt.Errorf("--ctx %d + --n %d exceeds the model's context %d", c, *n, l.m.Config.Context)}
		}
	}
	th := mf.threadCount()
	rows, runErr := bench.DecodeSpeed(l.m, bench.DecodeOptions{Contexts: ctxs, N: *n, Threads: th, KV: kv, Seed: *seed, Peer: *peer, ModelPath: *mf.model})
	if runErr != nil && !errors.Is(runErr, bench.ErrPeer) {
		return runErr
	}
	if *format == "json" {
		err = json.NewEncoder(e.stdout).Encode(rows)
	} else {
		err = writeDecodeTable(e, rows, modelName(*mf.model), kv.String(), th)
	}
	if runErr != nil {
		return fmt.Errorf("bench decode: %w; the rows above are turbomem's alone", runErr)
	}
	return err
}

// writeDecodeTable prints the rows of bench decode, each llama.cpp row
// after ours at the same context with the ratios and how many greedy
// tokens agree.
func writeDecodeTable(e *env, rows []bench.DecodeResult, name, kv string, threads int) error {
	fmt.Fprintf(e.stdout, "%s, KV cache %s, %d threads\n", name, kv, threads)
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "engine\tcontext\tprompt tok/s\tdecode tok/s\tpeak RSS\tgreedy agree\t")
	for i, row := range rows {
		if row.Engine == "llama.cpp" && i > 0 {
			ours := rows[i-1].Tokens
			k := 0
			for k < len(ours) && k < len(row.Tokens) && ours[k] == row.Tokens[k] {
				k++
			}
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.2f\t%s\t%d/%d\t\n", row.Engine, row.Context, row.PromptTPS, row.DecodeTPS, "", k, len(ours))
			fmt.Fprintf(tw, "ratio ours/llama.cpp\t\t%.2fx\t%.2fx\t\t\t\n", rows[i-1].PromptTPS/row.PromptTPS, rows[i-1].DecodeTPS/row.DecodeTPS)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.2f\t%s\t%s\t\n", row.Engine, row.Context, row.PromptTPS, row.DecodeTPS, humanBytes(row.PeakRSS), "")
	}
	return tw.Flush()
}
