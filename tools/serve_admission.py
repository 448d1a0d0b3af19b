#!/usr/bin/env python3
"""How many sessions a running `turbomem serve` admits at once.

Sends N concurrent completions, each a prompt of P random token ids and
max_tokens M (a conversation of P+M tokens), then reads /metrics for a few
seconds and prints the most requests running and queued at once. Admission
happens before any prompt is computed, so the count shows at once; the
requests are abandoned (the caller stops the server).

usage: serve_admission.py URL N P M [SECONDS]
"""
import json, random, re, sys, threading, time, urllib.request

url, n, p, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
secs = float(sys.argv[5]) if len(sys.argv) > 5 else 5


def send(i):
    rng = random.Random(i)
    body = json.dumps({"prompt": [rng.randrange(100, 12000) for _ in range(p)], "max_tokens": m, "temperature": 0}).encode()
    try:
        urllib.request.urlopen(urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"}), timeout=600).read()
    except Exception:
        pass


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
print(json.dumps({"format": reserved.group(1), "admitted": peak["running"], "queued": peak["queued"],
                  "reserved_bytes": int(float(reserved.group(2))), "sequences_budget_bytes": int(float(budget))}))
