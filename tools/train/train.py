#!/usr/bin/env python3
"""Train turbomem's default model: a small Llama (RMSNorm, SwiGLU, RoPE, GQA,
head_dim 128) on the Debian corpus of prepare_corpus.sh plus synthetic
long-context retrieval sequences. Runs on one GPU (bf16 autocast, SDPA).

One call of this script fits in one 10-minute device command:
  phase 1: python3 tools/train/train.py --phase 1 --out $OUT
           trains the tokenizer (HF tokenizers, byte-level BPE, the llama-bpe
           pre-tokenizer regex), then the model for --train-seconds.
  phase 2: python3 tools/train/train.py --phase 2 --resume DIR --out $OUT
           resumes (from /tmp/turbomem_ckpt/full.pt if the machine is the same,
           else from the bf16 weight chunks in DIR, restarting Adam), trains mostly
           at 4096 tokens with the learning rate decaying to 10%, then measures
           held-out perplexity, the needle grid and samples, and writes the
           reference logits for the Go test.
Outputs (each <= 16 MB): tokenizer.json, weights-NN.safetensors (bf16, HF
LlamaForCausalLM names), state.json, results.json, reflogits.f32/.json, log.
"""
import argparse, json, lzma, math, os, random, re, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

T0 = time.time()
CFG = dict(vocab_size=12288, hidden_size=512, intermediate_size=1280, num_hidden_layers=6,
           num_attention_heads=4, num_key_value_heads=1, head_dim=128, rope_theta=10000.0,
           rms_norm_eps=1e-5, max_position_embeddings=4096, tie_word_embeddings=True)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Llama-3's pre-tokenizer regex, tokenizer.ggml.pre = "llama-bpe": digits in groups of 1-3.
LLAMA_BPE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CKPT = "/tmp/turbomem_ckpt/full.pt"


def log(*a):
    print(f"[{time.time()-T0:7.1f}s]", *a, flush=True)


# ---------------------------------------------------------------- model
class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight.to(x.dtype)


def rope_cache(L, hd, theta, device):
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd))
    f = torch.outer(torch.arange(L, device=device, dtype=torch.float32), inv)
    emb = torch.cat([f, f], -1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], -1)


class Attn(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, hd = c["hidden_size"], c["head_dim"]
        self.nh, self.nkv, self.hd = c["num_attention_heads"], c["num_key_value_heads"], hd
        self.q_proj = nn.Linear(d, self.nh * hd, bias=False)
        self.k_proj = nn.Linear(d, self.nkv * hd, bias=False)
        self.v_proj = nn.Linear(d, self.nkv * hd, bias=False)
        self.o_proj = nn.Linear(self.nh * hd, d, bias=False)

    def forward(self, x, cos, sin):
        B, L, _ = x.shape
        q = self.q_proj(x).view(B, L, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, L, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, L, self.nkv, self.hd).transpose(1, 2)
        cos, sin = cos[:L].to(q.dtype), sin[:L].to(q.dtype)
        q = q * cos + rotate_half(q) * sin  # HF rotate-half RoPE
        k = k * cos + rotate_half(k) * sin
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self.o_proj(o.transpose(1, 2).reshape(B, L, self.nh * self.hd))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, f = c["hidden_size"], c["intermediate_size"]
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = Attn(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = MLP(c)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Inner(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([Layer(c) for _ in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class Llama(nn.Module):
    """State-dict names are LlamaForCausalLM's (tied lm_head left out)."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = Inner(c)
        cos, sin = rope_cache(c["max_position_embeddings"], c["head_dim"], c["rope_theta"], "cpu")
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        std = 0.02
        for n, p in self.named_parameters():
            if p.dim() == 2:
                s = std / math.sqrt(2 * c["num_hidden_layers"]) if n.endswith(("o_proj.weight", "down_proj.weight")) else std
                nn.init.normal_(p, 0.0, s)

    def forward(self, ids):
        x = self.model.embed_tokens(ids)
        for l in self.model.layers:
            x = l(x, self.cos, self.sin)
        x = self.model.norm(x)
        return F.linear(x, self.model.embed_tokens.weight)


# ---------------------------------------------------------------- data
def read_docs(path):
    with lzma.open(path, "rt", encoding="utf-8") as f:
        t = f.read()
    return [d for d in t.split("\n\x1e\n") if d.strip()]


def train_tokenizer(docs, path):
    from tokenizers import Tokenizer, Regex, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA_BPE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=CFG["vocab_size"], special_tokens=SPECIAL, min_frequency=2,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer=tr)
    tok.save(path)
    return tok


def encode_all(tok, docs, eos):
    out = []
    B = 2000
    for i in range(0, len(docs), B):
        for e in tok.encode_batch(docs[i:i + B], add_special_tokens=False):
            out.append(np.asarray(e.ids, dtype=np.uint16))
            out.append(np.asarray([eos], dtype=np.uint16))
    return np.concatenate(out)


WORDS = ("apple river stone cloud tiger violet harbor lantern maple comet falcon velvet meadow copper "
         "orchid glacier pepper saddle thunder walnut canyon ember fossil garnet island jasmine kettle "
         "lemon marble nectar oyster pebble quartz raven silver tulip umbrella willow yarrow zephyr anchor "
         "badger candle dolphin engine feather ginger hazel iris juniper kayak ladder mango nickel olive").split()


class Retrieval:
    """Synthetic long-context retrieval: facts buried at random depths of corpus
    filler, questions at the end with the answers after them."""

    def __init__(self, tok, rng):
        self.tok, self.rng = tok, rng
        self.cache = {}

    def enc(self, s):
        return self.tok.encode(s, add_special_tokens=False).ids

    def number(self):
        return str(self.rng.randint(10 ** (self.rng.choice([4, 5, 6]) ), 10 ** 7 - 1))

    def make(self, filler, L):
        """filler: np array of >= L tokens. Returns L token ids."""
        r = self.rng
        kind = r.random()
        facts, qas = [], []
        if kind < 0.4:  # pass key, the needle of the eval harness
            n = self.number()
            facts.append(f" The pass key is {n}. Remember it. {n} is the pass key. ")
            qas.append(("What is the pass key? The pass key is", f" {n}."))
        else:  # several key -> value facts, some asked
            k = r.randint(2, 8)
            keys = r.sample(WORDS, k)
            vals = [self.number() for _ in keys]
            for w, v in zip(keys, vals):
                if r.random() < 0.5:
                    facts.append(f" The special magic number for {w} is {v}. ")
                else:
                    facts.append(f" The code of the {w} is {v}. ")
                qas.append((w, v, facts[-1]))
            asked = r.sample(qas, r.randint(1, min(3, k)))
            qas = []
            for w, v, f in asked:
                if "magic" in f:
                    qas.append((f"What is the special magic number for {w}? The special magic number for {w} is", f" {v}."))
                else:
                    qas.append((f"What is the code of the {w}? The code of the {w} is", f" {v}."))
        fids = [self.enc(f) for f in facts]
        qids = [self.enc("\n\n" + q) + self.enc(a) for q, a in qas]
        tail = sum(len(q) for q in qids)
        body = L - tail - sum(len(f) for f in fids)
        if body < 16:
            return None
        hay = filler[:body].tolist()
        pos = sorted(r.randint(0, body) for _ in fids)
        out, prev = [], 0
        for p, f in zip(pos, fids):
            out += hay[prev:p] + f
            prev = p
        out += hay[prev:]
        for q in qids:
            out += q
        return out[:L]


def needle_example(tok, filler, L, depth, n):
    """Exact pass-key needle: returns (ids, answer_start, answer_ids)."""
    enc = lambda s: tok.encode(s, add_special_tokens=False).ids
    needle = enc(f" The pass key is {n}. Remember it. {n} is the pass key. ")
    q = enc("\n\nWhat is the pass key? The pass key is")
    a = enc(f" {n}.")
    body = L - len(needle) - len(q) - len(a)
    p = int(round(depth * body))
    ids = filler[:p].tolist() + needle + filler[p:body].tolist() + q
    return ids + a, len(ids), a


# ---------------------------------------------------------------- checkpoints
def save_chunks(model, out, limit=15 * 2**20):
    from safetensors.torch import save_file
    os.makedirs(out, exist_ok=True)
    sd = {k: v.detach().to(torch.bfloat16).contiguous().cpu() for k, v in model.state_dict().items()}
    chunks, cur, size = [], {}, 0
    for k in sorted(sd):
        nb = sd[k].numel() * 2
        if cur and size + nb > limit:
            chunks.append(cur); cur, size = {}, 0
        cur[k] = sd[k]; size += nb
    if cur:
        chunks.append(cur)
    for i, c in enumerate(chunks):
        save_file(c, os.path.join(out, f"weights-{i:02d}.safetensors"), metadata={"config": json.dumps(CFG)})
    return len(chunks)


def save_resume_int8(model, out, limit=15 * 2**20):
    """Compact resume weights (int8 per-row absmax, ~1 byte/param) so that the
    checkpoint and the corpus together fit the 64 MiB a device call carries."""
    from safetensors.torch import save_file
    os.makedirs(out, exist_ok=True)
    chunks, cur, size = [], {}, 0
    for k, v in sorted(model.state_dict().items()):
        v = v.detach().float().cpu()
        if v.dim() == 2:
            sc = v.abs().amax(1, keepdim=True).clamp(min=1e-12) / 127
            parts = {k + ".q": torch.round(v / sc).to(torch.int8), k + ".s": sc.squeeze(1).contiguous()}
        else:
            parts = {k: v.contiguous()}
        nb = sum(t.numel() * t.element_size() for t in parts.values())
        if cur and size + nb > limit:
            chunks.append(cur); cur, size = {}, 0
        cur.update(parts); size += nb
    chunks.append(cur)
    for i, c in enumerate(chunks):
        save_file(c, os.path.join(out, f"resume-{i:02d}.safetensors"))
    return len(chunks)


def load_resume_int8(model, d):
    from safetensors.torch import load_file
    raw = {}
    for f in sorted(os.listdir(d)):
        if f.startswith("resume-") and f.endswith(".safetensors"):
            raw.update(load_file(os.path.join(d, f)))
    sd = {}
    for k, v in raw.items():
        if k.endswith(".q"):
            sd[k[:-2]] = v.float() * raw[k[:-2] + ".s"][:, None]
        elif not k.endswith(".s"):
            sd[k] = v.float()
    model.load_state_dict(sd)


def load_chunks(model, d):
    from safetensors.torch import load_file
    sd = {}
    for f in sorted(os.listdir(d)):
        if f.startswith("weights-") and f.endswith(".safetensors"):
            sd.update(load_file(os.path.join(d, f)))
    model.load_state_dict({k: v.float() for k, v in sd.items()})


# ---------------------------------------------------------------- eval
@torch.no_grad()
def perplexity(model, ids, L=1024, max_windows=200):
    """Non-overlapping windows of L tokens, each starting with EOS/BOS, all tokens scored."""
    model.eval()
    nll, n = 0.0, 0
    step = L - 1
    for w, s in enumerate(range(0, len(ids) - step, step)):
        if w >= max_windows:
            break
        x = torch.tensor([0] + ids[s:s + step].tolist(), device="cuda").long()[None]
        with torch.autocast("cuda", torch.bfloat16):
            lg = model(x[:, :-1]).float()
        nll += F.cross_entropy(lg[0], x[0, 1:], reduction="sum").item()
        n += x.shape[1] - 1
    model.train()
    return math.exp(nll / n), n


@torch.no_grad()
def needle_grid(model, tok, filler_ids, lengths, depths, trials, seed=1234):
    model.eval()
    r = random.Random(seed)
    grid = {}
    for L in lengths:
        row = []
        for d in depths:
            ok = 0
            for t in range(trials):
                n = str(r.randint(10000, 9999999))
                off = r.randint(0, len(filler_ids) - L - 1)
                ids, a0, a = needle_example(tok, filler_ids[off:off + L], L, d, n)
                x = torch.tensor([0] + ids, device="cuda").long()[None]
                with torch.autocast("cuda", torch.bfloat16):
                    lg = model(x[:, :-1])
                pred = lg[0, a0:a0 + len(a)].argmax(-1).tolist()  # logits at i predict token i+1 of x = ids[i]
                ok += int(pred == a)
            row.append(ok / trials)
        grid[L] = row
    model.train()
    return grid


@torch.no_grad()
def generate(model, tok, prompt, n=60, temp=0.0, seed=0):
    model.eval()
    g = torch.Generator(device="cuda").manual_seed(seed)
    ids = [0] + tok.encode(prompt, add_special_tokens=False).ids
    for _ in range(n):
        x = torch.tensor(ids, device="cuda")[None]
        lg = model(x)[0, -1].float()
        if temp == 0:
            nxt = int(lg.argmax())
        else:
            nxt = int(torch.multinomial(F.softmax(lg / temp, -1), 1, generator=g))
        ids.append(nxt)
        if nxt == 0:
            break
    model.train()
    return tok.decode(ids[1:])


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase", type=int, required=True)
    ap.add_argument("--corpus", default=".train/corpus")
    ap.add_argument("--resume", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--train-seconds", type=float, default=420)
    ap.add_argument("--batch-tokens", type=int, default=131072)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--retrieval", type=float, default=0.35)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--final", action="store_true", help="evaluate and write reference logits at the end")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(a.seed + a.phase)
    np_rng = np.random.default_rng(a.seed + 10 * a.phase)
    rng = random.Random(a.seed + 100 * a.phase)
    torch.backends.cuda.matmul.allow_tf32 = True

    docs = read_docs(os.path.join(a.corpus, "train.txt.xz"))
    hdocs = read_docs(os.path.join(a.corpus, "heldout.txt.xz"))
    log(f"docs {len(docs)} ({sum(map(len, docs))/1e6:.1f} M chars), heldout {len(hdocs)}")
    from tokenizers import Tokenizer
    tokp = os.path.join(a.out, "tokenizer.json")
    if a.resume and os.path.exists(os.path.join(a.resume, "tokenizer.json")):
        tok = Tokenizer.from_file(os.path.join(a.resume, "tokenizer.json"))
        tok.save(tokp)
    else:
        sample = random.Random(7).sample(docs, len(docs))
        keep, n = [], 0
        for d in sample:  # a 40M-character sample is plenty for a 12k vocabulary
            keep.append(d); n += len(d)
            if n > 40_000_000:
                break
        tok = train_tokenizer(keep, tokp)
        log("tokenizer trained, vocab", tok.get_vocab_size())
    assert tok.token_to_id("<|endoftext|>") == 0
    cache = "/tmp/turbomem_ckpt/tokens.npz"  # same machine, same tokenizer: skip re-encoding
    if a.resume and os.path.exists(cache):
        z = np.load(cache)
        data, held = z["data"], z["held"]
    else:
        data = encode_all(tok, docs, 0)
        held = encode_all(tok, hdocs, 0)
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        np.savez(cache, data=data, held=held)
    log(f"tokens: train {len(data)/1e6:.2f} M, heldout {len(held)/1e6:.3f} M")

    model = Llama(CFG).cuda()
    nparams = sum(p.numel() for p in model.parameters())
    log(f"params {nparams/1e6:.2f} M")
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    nodecay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
    state = {"step": 0, "tokens": 0, "phase_log": []}
    warm = 300
    if a.resume:
        if os.path.exists(CKPT):
            ck = torch.load(CKPT, map_location="cuda")
            model.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"]); state = ck["state"]
            warm = 0
            log("resumed full checkpoint (same machine), step", state["step"])
        else:
            load_resume_int8(model, a.resume)
            state = json.load(open(os.path.join(a.resume, "state.json")))
            warm = 50  # Adam moments restart
            log("resumed bf16 weights, Adam restarted, step", state["step"])

    ret = Retrieval(tok, rng)
    if a.phase == 1:
        lens = [(1024, 0.45), (2048, 0.35), (4096, 0.20)]
    else:
        lens = [(2048, 0.25), (4096, 0.75)]

    def batch():
        L = rng.choices([l for l, _ in lens], [w for _, w in lens])[0]
        B = a.batch_tokens // L
        rows = []
        for _ in range(B):
            off = int(np_rng.integers(0, len(data) - 2 * L - 2))
            if rng.random() < a.retrieval:
                s = ret.make(data[off:off + 2 * L], L + 1)
                if s is not None and len(s) == L + 1:
                    rows.append(np.asarray(s, dtype=np.int64))
                    continue
            rows.append(data[off:off + L + 1].astype(np.int64))
        x = torch.from_numpy(np.stack(rows)).cuda(non_blocking=True)
        return x[:, :-1], x[:, 1:], L

    # Preflight: run every path (eval, needle, sample, save) on the untrained model so a bug shows in seconds.
    if state["step"] == 0:
        needle_grid(model, tok, held, [512], [0.5], 1)
        perplexity(model, held, 512, 2)
        generate(model, tok, "Hello", 3)
        save_chunks(model, "/tmp/preflight")
        save_resume_int8(model, "/tmp/preflight")
        load_resume_int8(model, "/tmp/preflight")
        log("preflight ok")

    t_start = time.time()
    model.train()
    step0, last = state["step"], time.time()
    loss_acc, n_acc = 0.0, 0
    while True:
        el = time.time() - t_start
        if el > a.train_seconds:
            break
        frac = el / a.train_seconds
        s = state["step"] - step0
        lr = a.lr * min(1.0, (s + 1) / warm) if warm else a.lr
        if a.phase == 2 and frac > 0.45:  # linear decay to 10% over the last 55% of phase 2
            lr *= 1.0 - 0.9 * (frac - 0.45) / 0.55
        for g in opt.param_groups:
            g["lr"] = lr
        x, y, L = batch()
        with torch.autocast("cuda", torch.bfloat16):
            lg = model(x)
        loss = F.cross_entropy(lg.float().view(-1, lg.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        state["step"] += 1
        state["tokens"] += x.numel()
        loss_acc += loss.item() if state["step"] % 25 == 0 else 0.0
        n_acc += 1 if state["step"] % 25 == 0 else 0
        if state["step"] % 200 == 0:
            dt = time.time() - last
            last = time.time()
            log(f"step {state['step']} L {L} loss {loss_acc/max(n_acc,1):.3f} lr {lr:.2e} "
                f"tokens {state['tokens']/1e6:.1f} M  {200*a.batch_tokens/dt/1e6:.2f} M tok/s")
            state["phase_log"].append([state["step"], round(loss_acc / max(n_acc, 1), 4), L])
            loss_acc, n_acc = 0.0, 0
    state.setdefault("train_seconds", {})[str(a.phase)] = time.time() - t_start
    log(f"trained phase {a.phase}: steps {state['step']}, tokens {state['tokens']/1e6:.1f} M")

    # Round to bf16 once: what is saved is exactly what is evaluated and exported.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    if a.final:
        nchunks = save_chunks(model, a.out)
    else:
        nchunks = save_resume_int8(model, a.out)
    json.dump(state, open(os.path.join(a.out, "state.json"), "w"))
    if not a.final:
        os.makedirs(os.path.dirname(CKPT), exist_ok=True)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state}, CKPT)
    log(f"saved {nchunks} weight chunks")

    res = {"config": CFG, "params": nparams, "train_tokens_corpus": int(len(data)), "heldout_tokens": int(len(held)),
           "steps": state["step"], "tokens_seen": state["tokens"], "train_seconds": state["train_seconds"]}
    ppl, n = perplexity(model, held, 1024, 400)
    res["heldout_ppl_1024"] = ppl
    res["heldout_ppl_tokens"] = n
    log(f"held-out ppl (1024-token windows, {n} tokens): {ppl:.3f}")
    depths = [i / 10 for i in range(11)]
    trials = 10 if a.final else 3
    grid = needle_grid(model, tok, held, [512, 1024, 2048, 4096], depths, trials)
    res["needle"] = {"depths": depths, "trials": trials, "grid": grid,
                     "mean": float(np.mean([v for r in grid.values() for v in r]))}
    for L, row in grid.items():
        log(f"needle {L:5d}: " + " ".join(f"{v:.1f}" for v in row))
    log(f"needle mean {res['needle']['mean']:.3f}")
    res["samples"] = []
    for i, p in enumerate(["Once upon a time", "The kernel", "A dictionary is", "To install the package,"]):
        s = generate(model, tok, p, 60, temp=0.0 if i % 2 == 0 else 0.8, seed=i)
        res["samples"].append({"prompt": p, "temperature": 0.0 if i % 2 == 0 else 0.8, "text": s})
        log("sample:", repr(s))
    if a.final:
        reference_logits(model, tok, a.out, res)
    json.dump(res, open(os.path.join(a.out, "results.json"), "w"), indent=1)
    log("done")


def reference_logits(model, tok, out, res):
    """Float32 logits of transformers' LlamaForCausalLM with the saved (bf16) weights."""
    from transformers import LlamaConfig, LlamaForCausalLM
    text = "The quick brown fox jumps over the lazy dog. In Python, a list is a mutable sequence; the kernel"
    ids = [0] + tok.encode(text, add_special_tokens=False).ids
    ids = (ids + list(range(100, 200)))[:32]
    cfg = LlamaConfig(**CFG, bos_token_id=0, eos_token_id=0, attention_bias=False, mlp_bias=False,
                      hidden_act="silu")
    hf = LlamaForCausalLM(cfg).cuda().float().eval()
    sd = {k: v.float() for k, v in model.state_dict().items()}
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    missing = hf.load_state_dict(sd, strict=False)
    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.no_grad():
        x = torch.tensor(ids, device="cuda")[None]
        lg = hf(x).logits[0].float()
        own = model.float()(x)[0].float()
    d = (lg - own).abs().max().item()
    res["hf_vs_own_maxdiff"] = d
    res["hf_missing"] = str(missing)
    log(f"transformers vs own module, fp32: max |diff| {d:.2e}; {missing}")
    lg.cpu().numpy().astype("<f4").tofile(os.path.join(out, "reflogits.f32"))
    res["reflogits"] = {"ids": ids, "rows": len(ids), "vocab": CFG["vocab_size"], "text": text,
                        "note": "transformers LlamaForCausalLM, float32, weights = weights-*.safetensors (bf16)"}


if __name__ == "__main__":
    main()
