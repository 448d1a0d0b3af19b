package main

import (
	"flag"
	"fmt"
	"strings"

	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
)

// kvFlags are the KV cache options every model command shares.
type kvFlags struct {
	kv, k, v *string
	window   *int
}

func addKVFlags(fs *flag.FlagSet) kvFlags {
	names := strings.Join(kvcache.FormatNames(), ", ")
	return kvFlags{
		kv:     fs.String("kv", "f16", "KV cache format for keys and values: "+names),
		k:      fs.String("kv-k", "", "key format (overrides --kv)"),
		v:      fs.String("kv-v", "", "value format (overrides --kv)"),
		window: fs.Int("kv-window", 0, fmt.Sprintf("recent tokens kept in fp16 by compressed formats (0: %d; -1: none)", kvcache.DefaultWindow)),
	}
}

// spec returns the cache configuration the flags name.
func (f kvFlags) spec() (kvcache.Spec, error) {
	k, v := *f.k, *f.v
	if k == "" {
		k = *f.kv
	}
	if v == "" {
		v = *f.kv
	}
	s, err := kvcache.ParseSpec(k, v)
	if err != nil {
		return s, usageError{err}
	}
	if *f.window < -1 || *f.window > 1<<16 {
		return s, usageError{fmt.Errorf("--kv-window %d out of range [-1, 65536]", *f.window)}
	}
	s.Window = *f.window
	return s, nil
}

// newCache checks the spec against the model before any work starts and
// returns the cache constructor for its sessions.
func (f kvFlags) newCache(m *model.Model) (kvcache.Spec, model.NewCache, error) {
	s, err := f.spec()
	if err != nil {
		return s, nil, err
	}
	if err := s.Check(m.CacheShape()); err != nil {
		return s, nil, usageError{err}
	}
	return s, s.NewCache, nil
}

// openWithKV validates the KV flags, loads the model the generation flags
// name and checks the KV spec against it, all before any work: the
// common start of every model command. The caller closes l.m.
func openWithKV(e *env, g genFlags, kvf kvFlags) (*loaded, kvcache.Spec, model.NewCache, error) {
	if _, err := kvf.spec(); err != nil {
		return nil, kvcache.Spec{}, nil, err
	}
	l, err := g.load(e)
	if err != nil {
		return nil, kvcache.Spec{}, nil, err
	}
	spec, nc, err := kvf.newCache(l.m)
	if err != nil {
		l.m.Close()
		return nil, spec, nil, err
	}
	return l, spec, nc, nil
}
