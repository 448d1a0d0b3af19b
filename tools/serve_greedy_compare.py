#!/usr/bin/env python3
"""Greedy answers of two running `turbomem serve`s (say f16 and turbo3.5
KV) on the same prompts: the share that are equal token for token.

Prompts are N windows of W words of the embedded held-out text
(defaultmodel/heldout.txt, which the model never saw), sent one at a
time (no batching, so that only the KV format differs), M tokens each.

usage: serve_greedy_compare.py URL_A URL_B N W M
"""
import json, os, sys, urllib.request

a, b, n, w, m = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
words = open(os.path.join(os.path.dirname(__file__), "..", "defaultmodel", "heldout.txt")).read().split()


def complete(url, prompt):
    body = json.dumps({"prompt": prompt, "max_tokens": m, "temperature": 0}).encode()
    r = json.load(urllib.request.urlopen(urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"}), timeout=900))
    return r["choices"][0]["text"], r["usage"]["prompt_tokens"]


equal, tokens = 0, []
for i in range(n):
    at = (i * 7919 * 37) % (len(words) - w)
    prompt = " ".join(words[at:at + w])
    ta, pa = complete(a, prompt)
    tb, _ = complete(b, prompt)
    equal += ta == tb
    tokens.append(pa)
    print(json.dumps({"prompt": i, "prompt_tokens": pa, "equal": ta == tb}), flush=True)
print(json.dumps({"prompts": n, "equal": equal, "share": equal / n, "prompt_tokens_min": min(tokens), "prompt_tokens_max": max(tokens), "max_tokens": m}))
