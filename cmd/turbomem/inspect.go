package main

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/gguf"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/tensor"
)

func runInspect(e *env, args []string) error {
	fs := newFlagSet(e, "inspect", " [FILE.gguf]\n\nPrints a GGUF file's metadata (FILE or -m; the embedded reference model without\neither), its tensors with types and sizes, and the memory a session of --ctx\ntokens needs with the KV cache the KV flags name.")
	mp := modelPathFlag(fs)
	ctx := fs.Int("ctx", 4096, "context length for the memory plan")
	tensors := fs.Bool("tensors", true, "list every tensor")
	kvf := addKVFlags(fs, "f16")
	files, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(files) > 1 {
		return usageError{fmt.Errorf("unexpected arguments: %s", strings.Join(files[1:], " "))}
	}
	path := ""
	if len(files) == 1 {
		path = files[0]
	}
	if path != "" && *mp != "" && path != *mp {
		return usageError{fmt.Errorf("two files: %s and -m %s", path, *mp)}
	}
	if path == "" {
		path = *mp
	}
	if *ctx < 1 || *ctx > 1<<24 {
		return usageError{fmt.Errorf("--ctx %d out of range [1, 16777216]", *ctx)}
	}
	if err := kvf.validate(); err != nil {
		return err
	}
	f, err := openGGUF(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := e.stdout
	fmt.Fprintf(w, "%s: GGUF v%d, %d metadata keys, %d tensors, %s\n\n", modelName(path), f.Version, len(f.KV), len(f.Tensors), humanBytes(f.Size))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, kv := range f.KV {
		v := kv.Value
		s := v.String()
		if v.Type() == gguf.TypeArray {
			s = fmt.Sprintf("[%d × %s]", v.Len(), v.ElemType())
			if v.Len() <= 8 {
				s = v.String()
			}
		}
		if len(s) > 100 {
			s = s[:97] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", kv.Key, v.Type(), strings.ReplaceAll(s, "\n", `\n`))
	}
	tw.Flush()

	byType := map[tensor.DType][2]int64{}
	var total int64
	if *tensors {
		fmt.Fprintln(w)
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range f.Tensors {
		if *tensors {
			fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", t.Name, t.Type, t.Shape, humanBytes(t.Size))
		}
		c := byType[t.Type]
		byType[t.Type] = [2]int64{c[0] + t.Elements(), c[1] + t.Size}
		total += t.Size
	}
	tw.Flush()
	fmt.Fprintln(w, "\nweights by type:")
	types := make([]tensor.DType, 0, len(byType))
	for t := range byType {
		types = append(types, t)
	}
	sort.Slice(types, func(i, j int) bool { return byType[types[i]][1] > byType[types[j]][1] })
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, t := range types {
		c := byType[t]
		fmt.Fprintf(tw, "  %s\t%d elements\t%s\t%.2f bits/weight\t\n", t, c[0], humanBytes(c[1]), float64(8*c[1])/float64(c[0]))
	}
	tw.Flush()

	m, err := model.New(f, model.Options{})
	if err != nil {
		fmt.Fprintf(w, "\nnot runnable here: %v\n", err)
		return nil
	}
	c := m.Config
	fmt.Fprintf(w, "\nmodel: %s, %d layers, hidden %d, FFN %d, %d heads (%d KV) of %d, vocab %d, context %d\n",
		c.Arch, c.Layers, c.Hidden, c.FFN, c.Heads, c.KVHeads, c.HeadDim, c.Vocab, c.Context)
	kv, err := kvf.config(e, &loaded{m: m}, path, false)
	if err != nil {
		return err
	}
	kvBytes, err := kv.BytesAt(*ctx, m.Config.Layers, m.CacheShape())
	if err != nil {
		return err
	}
	f16, err := kvcache.F16().BytesAt(*ctx, m.Config.Layers, m.CacheShape())
	if err != nil {
		return err
	}
	p := m.PlanKV(*ctx, kvBytes)
	fmt.Fprintf(e.stdout, "memory at %d tokens: weights %s + KV cache (%s, %.0f B/token, %.2fx smaller than f16) %s + scratch %s = %s\n",
		p.Context, humanBytes(p.Weights), kv, p.KVBytesPerToken, float64(f16)/float64(max(p.KVCache, 1)), humanBytes(p.KVCache), humanBytes(p.Scratch), humanBytes(p.Total()))
	return nil
}

// openGGUF opens the GGUF file at path, or the embedded reference model's
// when path is empty.
func openGGUF(path string) (*gguf.File, error) {
	if path == "" {
		return defaultmodel.Open()
	}
	return gguf.Open(path)
}

// humanBytes formats n bytes in binary units, with the exact count.
func humanBytes(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	v := float64(n)
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.2f %s (%d B)", v, units[i], n)
}
