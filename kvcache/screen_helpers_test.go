package kvcache_test

import (
	"context"
	"testing"

	"github.com/turbomem/turbomem/defaultmodel"
	"github.com/turbomem/turbomem/eval"
	"github.com/turbomem/turbomem/kvcache"
	"github.com/turbomem/turbomem/model"
	"github.com/turbomem/turbomem/suite"
	"github.com/turbomem/turbomem/tokenizer"
)

// screenModel opens the model a screen names (suite.Resolve: default,
// large, mha64, qwen2 or a path) on threads threads and its tokenizer;
// ok false (logged) where the suite's file is absent. The caller closes
// the model.
func screenModel(t *testing.T, name string, threads int) (*model.Model, *tokenizer.Tokenizer, bool) {
	t.Helper()
	path, ok := suite.Resolve(name)
	if !ok {
		t.Log(suite.Absent(path))
		return nil, nil, false
	}
	var m *model.Model
	var err error
	if path == "" {
		m, err = defaultmodel.Load(model.Options{Threads: threads})
	} else {
		m, err = model.Open(path, model.Options{Threads: threads})
	}
	if err != nil {
		t.Fatal(err)
	}
	tok, err := model.LoadTokenizer(m.File())
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	return m, tok, true
}

// screenRun is eval kv's setting for a screen: the held-out text's
// tokens, the f16 reference on its first chunks windows of ctxLen tokens
// and the klt calibration on its last chunks; run scores a Maker against
// the reference.
type screenRun struct {
	ids []int32
	cov *kvcache.Covariances
	run func(kv kvcache.Maker) *eval.Agreement
}

func newScreenRun(t *testing.T, m *model.Model, tok *tokenizer.Tokenizer, ctxLen, chunks int) screenRun {
	t.Helper()
	ctx := context.Background()
	ids := tok.Encode(defaultmodel.HeldOut(), true)
	ref, err := eval.Perplexity(ctx, m, ids, tok.BOS(), eval.PPLOptions{Ctx: ctxLen, MaxChunks: chunks})
	if err != nil {
		t.Fatal(err)
	}
	cov, err := eval.MeasureCovariances(ctx, m, ids[len(ids)-chunks*ctxLen:], tok.BOS(), ctxLen, chunks)
	if err != nil {
		t.Fatal(err)
	}
	return screenRun{ids: ids, cov: cov, run: func(kv kvcache.Maker) *eval.Agreement {
		r, err := eval.Perplexity(ctx, m, ids, tok.BOS(), eval.PPLOptions{Ctx: ctxLen, MaxChunks: chunks, KV: kv, Ref: ref.Dists})
		if err != nil {
			t.Fatal(err)
		}
		return r.Agreement
	}}
}
