#!/usr/bin/env python3
"""Greedy answers of running `turbomem serve`s that differ only in KV
format (the first is the reference, say f16), on the same prompts: the
share of prompts whose next token, and whose whole M-token answer, equal
the reference's.

Prompts are N windows of W words of the embedded held-out text
(defaultmodel/heldout.txt, which the model never saw), sent one at a time
(no batching, so that only the KV format differs). Each prompt is sent
twice per server (max_tokens 1, then M): start the servers with
--prefix-cache-tokens 4096 so that the second reuses the first's prompt.

usage: serve_greedy_compare.py URL_REF,URL_B[,URL_C...] N W M
"""
import json, os, sys, urllib.error, urllib.request

urls, n, w, m = sys.argv[1].split(","), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
words = open(os.path.join(os.path.dirname(__file__), "..", "defaultmodel", "heldout.txt")).read().split()


def complete(url, prompt, k):
    body = json.dumps({"prompt": prompt, "max_tokens": k, "temperature": 0}).encode()
    r = json.load(urllib.request.urlopen(urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"}), timeout=900))
    return r["choices"][0]["text"], r["usage"]["prompt_tokens"]


def fmt(url):
    for line in urllib.request.urlopen(url + "/metrics").read().decode().splitlines():
        if line.startswith("turbomem_kv_bytes_reserved{format="):
            return line.split('"')[1]
    return url


names = [fmt(u) for u in urls]
first = {x: 0 for x in names[1:]}
whole = {x: 0 for x in names[1:]}
tokens = []
for i in range(n):
    at = (i * 7919 * 37) % (len(words) - w)
    prompt = " ".join(words[at:at + w])
    got = []
    try:
        for u in urls:
            t1, p = complete(u, prompt, 1)
            tm, _ = complete(u, prompt, m)
            got.append((t1, tm))
    except urllib.error.HTTPError as e:  # a window that tokenizes past the context
        print(json.dumps({"prompt": i, "skipped": str(e)}), flush=True)
        continue
    tokens.append(p)
    for x, g in zip(names[1:], got[1:]):
        first[x] += g[0] == got[0][0]
        whole[x] += g[1] == got[0][1]
    print(json.dumps({"prompt": i, "prompt_tokens": p, "first_token_equal": {x: g[0] == got[0][0] for x, g in zip(names[1:], got[1:])},
                      "answer_equal": {x: g[1] == got[0][1] for x, g in zip(names[1:], got[1:])}}), flush=True)
n = len(tokens)
print(json.dumps({"reference": names[0], "prompts": n, "prompt_tokens_min": min(tokens), "prompt_tokens_max": max(tokens), "max_tokens": m,
                  "first_token_equal_share": {x: first[x] / n for x in first}, "answer_equal_share": {x: whole[x] / n for x in whole}}))
