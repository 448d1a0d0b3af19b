#!/usr/bin/env python3
"""How many sessions a running `turbomem serve` admits at once.

Sends N concurrent completions, each a prompt of P random token ids and
max_tokens M (a conversation of P+M tokens), then reads /metrics for a few
seconds and prints the most requests running and queued at once. Admission
happens before any prompt is computed, so the count shows at once; the
requests are abandoned (the caller stops the server).

With SHARED > 0, every prompt starts with the same SHARED token ids (a
system prompt): one request with that prompt is completed first, so that
the prefix cache holds it, and the cache's bytes and the reused prompt
tokens are printed too.

usage: serve_admission.py URL N P M [SECONDS] [SHARED]
"""
import json, random, re, sys, threading, time, urllib.request

url, n, p, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
secs = float(sys.argv[5]) if len(sys.argv) > 5 else 5
shared = int(sys.argv[6]) if len(sys.argv) > 6 else 0
system = [random.Random(-1).randrange(100, 12000) for _ in range(shared)]


def send(i, tokens=p, max_tokens=m, quiet=True):
    rng = random.Random(i)
    body = json.dumps({"prompt": system + [rng.randrange(100, 12000) for _ in range(tokens - shared)],
                       "max_tokens": max_tokens, "temperature": 0}).encode()
    try:
        urllib.request.urlopen(urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"}), timeout=600).read()
    except Exception:
        if not quiet:
            raise


def metric(text, name):
    v = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    return int(float(v.group(1))) if v else None


if shared:
    send(-1, shared + 1, 1, False)
for i in range(n):
    threading.Thread(target=send, args=(i,), daemon=True).start()
peak = {"running": 0, "queued": 0}
end = time.time() + secs
while time.time() < end:
    text = urllib.request.urlopen(url + "/metrics").read().decode()
    for k in peak:
        v = re.search(r"^turbomem_requests_%s (\S+)$" % k, text, re.M)
        if v:
            peak[k] = max(peak[k], int(float(v.group(1))))
    time.sleep(0.1)
budget = re.search(r'^turbomem_memory_budget_bytes\{part="sequences"\} (\S+)$', text, re.M).group(1)
reserved = re.search(r'^turbomem_kv_bytes_reserved\{format="([^"]+)"\} (\S+)$', text, re.M)
out = {"format": reserved.group(1), "admitted": peak["running"], "queued": peak["queued"],
       "reserved_bytes": int(float(reserved.group(2))), "sequences_budget_bytes": int(float(budget))}
if shared:
    out["prefix_cache_bytes"] = metric(text, "turbomem_prefix_cache_bytes")
    out["prefix_tokens_reused"] = metric(text, 'turbomem_prefix_tokens_total{kind="reused"}')
print(json.dumps(out))
