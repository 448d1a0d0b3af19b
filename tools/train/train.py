#!/usr/bin/env python3
"""Train turbomem's default model: a small Llama (RMSNorm, SwiGLU, RoPE, GQA,
head_dim 128) on the Debian corpus of prepare_corpus.sh plus synthetic
long-context retrieval sequences. Runs on one GPU (bf16 autocast, SDPA).
--config picks one of CONFIGS (the default model or a suite model: see
README.md, "The model suite"); --device cpu runs a smoke test without a GPU.

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
# CONFIGS: the default model and the model suite (models the KV formats were not tuned on).
# "architecture" and "attention_bias" go into the checkpoint's config for tools/export.
CONFIGS = {
    "default": dict(CFG, architecture="llama"),
    # 56.6 M parameters, head_dim 128, GQA 4:1.
    "large": dict(CFG, architecture="llama", hidden_size=1024, intermediate_size=1536,
                  num_attention_heads=8, num_key_value_heads=2),
    # 7.9 M parameters, head_dim 64, multi-head attention (n_kv = n_head).
    "mha64": dict(CFG, architecture="llama", hidden_size=256, intermediate_size=768,
                  num_attention_heads=4, num_key_value_heads=4, head_dim=64),
    # Qwen2-style: Q/K/V biases, NeoX RoPE with base 1e6, eps 1e-6; head_dim 64, GQA 2:1.
    "qwen2": dict(CFG, architecture="qwen2", attention_bias=True, hidden_size=256, intermediate_size=768,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=64, rope_theta=1e6, rms_norm_eps=1e-6),
    # Seconds-long CPU smoke test of the whole pipeline (train, save, export).
    "tiny": dict(CFG, architecture="qwen2", attention_bias=True, hidden_size=64, intermediate_size=256,
                 num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=32),
}
DEV = "cuda"  # --device
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


def attention(q, k, v):
    """Causal attention, GQA-aware: SDPA where this PyTorch has it (2.5+), else
    the plain formula (CPU smoke tests on older PyTorch)."""
    if hasattr(F, "scaled_dot_product_attention") and tuple(map(int, torch.__version__.split(".")[:2])) >= (2, 5):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    s = (q @ k.transpose(-1, -2)).float() / math.sqrt(q.shape[-1])
    L = q.shape[2]
    s = s.masked_fill(torch.ones(L, L, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return (s.softmax(-1).to(v.dtype)) @ v


class Attn(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, hd = c["hidden_size"], c["head_dim"]
        self.nh, self.nkv, self.hd = c["num_attention_heads"], c["num_key_value_heads"], hd
        bias = bool(c.get("attention_bias"))  # Qwen2: Q, K and V have biases, the output does not
        self.q_proj = nn.Linear(d, self.nh * hd, bias=bias)
        self.k_proj = nn.Linear(d, self.nkv * hd, bias=bias)
        self.v_proj = nn.Linear(d, self.nkv * hd, bias=bias)
        self.o_proj = nn.Linear(self.nh * hd, d, bias=False)

    def forward(self, x, cos, sin):
        B, L, _ = x.shape
        q = self.q_proj(x).view(B, L, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, L, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, L, self.nkv, self.hd).transpose(1, 2)
        cos, sin = cos[:L].to(q.dtype), sin[:L].to(q.dtype)
        q = q * cos + rotate_half(q) * sin  # HF rotate-half RoPE
        k = k * cos + rotate_half(k) * sin
        o = attention(q, k, v)
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
            if n.endswith(".bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:
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


def tokenizer_from_vocab(path):
    """The tokenizer of an existing GGUF model (tools/vocab's JSON): the same
    BPE vocabulary, merges and llama-bpe pre-tokenizer as train_tokenizer
    builds, so models trained with it read the same token ids."""
    from tokenizers import Tokenizer, Regex, decoders, models, pre_tokenizers
    v = json.load(open(path, encoding="utf-8"))
    if v["model"] != "gpt2" or v["pre"] != "llama-bpe":
        raise SystemExit(f"{path}: tokenizer {v['model']}/{v['pre']}, want gpt2/llama-bpe")
    vocab = {t: i for i, t in enumerate(v["tokens"])}
    merges = [tuple(m.split(" ")) for m in v["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA_BPE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([t for t, ty in zip(v["tokens"], v["types"]) if ty == 3])
    if v.get("check_ids"):
        got = tok.encode(v["check_text"], add_special_tokens=False).ids
        same = sum(a == b for a, b in zip(got, v["check_ids"]))
        log(f"tokenizer check: {len(got)} ids here, {len(v['check_ids'])} from turbomem, first {same} equal")
        if got != v["check_ids"]:  # train anyway: a rare difference costs less than a lost run
            log("WARNING: tokenizer differs from turbomem's on the check text at id", same)
    return tok


class ByteTokenizer:
    """Stand-in for a BPE tokenizer when the tokenizers package is missing
    (--device cpu smoke tests only): bytes + 3 special ids."""

    class Enc:
        def __init__(self, ids):
            self.ids = ids

    def encode(self, s, add_special_tokens=False):
        return self.Enc([3 + b for b in s.encode("utf-8")])

    def encode_batch(self, docs, add_special_tokens=False):
        return [self.encode(d) for d in docs]

    def decode(self, ids):
        return bytes(i - 3 for i in ids if 3 <= i < 259).decode("utf-8", "replace")

    def token_to_id(self, s):
        return SPECIAL.index(s) if s in SPECIAL else None

    def get_vocab_size(self):
        return 259

    def save(self, path):
        json.dump({"note": "byte stand-in, smoke test only"}, open(path, "w"))


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
def save_file(tensors, path, metadata=None):
    """Writes a safetensors file (8-byte header length, JSON header, raw
    little-endian data) without the safetensors package."""
    names = {torch.bfloat16: "BF16", torch.float32: "F32", torch.int8: "I8"}
    hdr, blobs, off = {}, [], 0
    if metadata:
        hdr["__metadata__"] = metadata
    for k in sorted(tensors):
        t = tensors[k].contiguous().cpu()
        raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        hdr[k] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def load_file(path):
    """Reads what save_file writes."""
    dt = {"BF16": (np.int16, torch.bfloat16), "F32": (np.float32, None), "I8": (np.int8, None)}
    with open(path, "rb") as f:
        b = f.read()
    n = int.from_bytes(b[:8], "little")
    hdr = json.loads(b[8:8 + n])
    out = {}
    for k, t in hdr.items():
        if k == "__metadata__":
            continue
        lo, hi = t["data_offsets"]
        npt, view = dt[t["dtype"]]
        x = torch.from_numpy(np.frombuffer(b, dtype=npt, count=(hi - lo) // np.dtype(npt).itemsize,
                                           offset=8 + n + lo).copy()).reshape(t["shape"])
        out[k] = x.view(view) if view is not None else x
    return out


def save_chunks(model, out, limit=15 * 2**20):
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
        save_file(c, os.path.join(out, f"weights-{i:02d}.safetensors"), metadata={"config": json.dumps(model.c)})
    return len(chunks)


def save_resume_int8(model, out, limit=15 * 2**20):
    """Compact resume weights (int8 per-row absmax, ~1 byte/param) so that the
    checkpoint and the corpus together fit the 64 MiB a device call carries."""
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
        x = torch.tensor([0] + ids[s:s + step].tolist(), device=DEV).long()[None]
        with torch.autocast(DEV, torch.bfloat16):
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
                x = torch.tensor([0] + ids, device=DEV).long()[None]
                with torch.autocast(DEV, torch.bfloat16):
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
    g = torch.Generator(device=DEV).manual_seed(seed)
    ids = [0] + tok.encode(prompt, add_special_tokens=False).ids
    for _ in range(n):
        x = torch.tensor(ids, device=DEV)[None]
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
    global DEV
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase", type=int, default=1, help="default model: 1 (from scratch) or 2 (resume, decay, final)")
    ap.add_argument("--config", default="default", choices=sorted(CONFIGS))
    ap.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    ap.add_argument("--corpus", default=".train/corpus")
    ap.add_argument("--tokenizer-vocab", default="", help="tools/vocab JSON: reuse that model's tokenizer instead of training one")
    ap.add_argument("--tokens-cache", default="/tmp/turbomem_ckpt/tokens.npz")
    ap.add_argument("--prepare-only", action="store_true", help="tokenize the corpus into --tokens-cache, then stop")
    ap.add_argument("--resume", default="")
    ap.add_argument("--resume-full", default="", help="full checkpoint (weights + Adam) to continue from, if it exists")
    ap.add_argument("--save-full", default="", help="write a full checkpoint here when the decay begins (at the end without decay)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--train-seconds", type=float, default=420)
    ap.add_argument("--train-until", type=float, default=0, help="unix time at which training stops (overrides --train-seconds)")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (smoke tests)")
    ap.add_argument("--decay-frac", type=float, default=-1,
                    help="linear decay to 10%% of --lr over this last fraction of the run (default 0.55 in phase 2, else 0)")
    ap.add_argument("--lengths", default="", help="sequence lengths and weights, L:w,L:w (default by phase)")
    ap.add_argument("--batch-tokens", type=int, default=131072)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--retrieval", type=float, default=0.35)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--eval-scale", type=float, default=1.0, help="fraction of the final evaluation's windows and needle trials")
    ap.add_argument("--needle-lengths", default="512,1024,2048,4096", help="context lengths of the final needle grid")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads of PyTorch (0: its default)")
    ap.add_argument("--final", action="store_true", help="evaluate and write reference logits at the end")
    a = ap.parse_args()
    DEV = a.device
    cfg = dict(CONFIGS[a.config])
    os.makedirs(a.out, exist_ok=True)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed + a.phase)
    np_rng = np.random.default_rng(a.seed + 10 * a.phase)
    rng = random.Random(a.seed + 100 * a.phase)
    torch.backends.cuda.matmul.allow_tf32 = True

    from_vocab = bool(a.tokenizer_vocab)
    cache = a.tokens_cache
    have_cache = os.path.exists(cache) and (a.resume or from_vocab)  # same tokenizer: skip re-encoding
    docs = [] if have_cache else read_docs(os.path.join(a.corpus, "train.txt.xz"))
    hdocs = [] if have_cache else read_docs(os.path.join(a.corpus, "heldout.txt.xz"))
    if docs:
        log(f"docs {len(docs)} ({sum(map(len, docs))/1e6:.1f} M chars), heldout {len(hdocs)}")
    tokp = os.path.join(a.out, "tokenizer.json")
    if from_vocab:
        try:
            tok = tokenizer_from_vocab(a.tokenizer_vocab)
        except ImportError:
            if DEV != "cpu":
                raise
            log("tokenizers package missing: byte stand-in (smoke test)")
            tok = ByteTokenizer()
        tok.save(tokp)
    elif a.resume and os.path.exists(os.path.join(a.resume, "tokenizer.json")):
        from tokenizers import Tokenizer
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
    if have_cache:
        z = np.load(cache)
        data, held = z["data"], z["held"]
    else:
        data = encode_all(tok, docs, 0)
        held = encode_all(tok, hdocs, 0)
        os.makedirs(os.path.dirname(cache) or ".", exist_ok=True)
        tmp = cache + f".{os.getpid()}.npz"
        np.savez(tmp, data=data, held=held)
        os.replace(tmp, cache)  # whole or absent for the processes that read it
    del docs, hdocs
    log(f"tokens: train {len(data)/1e6:.2f} M, heldout {len(held)/1e6:.3f} M")
    if a.prepare_only:
        return

    model = Llama(cfg).to(DEV)
    nparams = sum(p.numel() for p in model.parameters())
    log(f"config {a.config}: {json.dumps(cfg)}; params {nparams/1e6:.2f} M")
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    nodecay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8, **({"fused": True} if DEV == "cuda" else {}))
    state = {"step": 0, "tokens": 0, "phase_log": []}
    warm = a.warmup
    if a.resume_full and os.path.exists(a.resume_full):
        ck = torch.load(a.resume_full, map_location=DEV)
        model.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"]); state = ck["state"]
        warm = 0
        log("resumed full checkpoint", a.resume_full, "step", state["step"], "tokens", state["tokens"])
    elif a.resume:
        if os.path.exists(CKPT):
            ck = torch.load(CKPT, map_location=DEV)
            model.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"]); state = ck["state"]
            warm = 0
            log("resumed full checkpoint (same machine), step", state["step"])
        else:
            load_resume_int8(model, a.resume)
            state = json.load(open(os.path.join(a.resume, "state.json")))
            warm = 50  # Adam moments restart
            log("resumed bf16 weights, Adam restarted, step", state["step"])

    ret = Retrieval(tok, rng)
    if a.lengths:
        lens = [(int(l), float(w)) for l, w in (x.split(":") for x in a.lengths.split(","))]
    elif a.phase == 1:
        lens = [(1024, 0.45), (2048, 0.35), (4096, 0.20)]
    else:
        lens = [(2048, 0.25), (4096, 0.75)]

    def batch():
        L = rng.choices([l for l, _ in lens], [w for _, w in lens])[0]
        B = max(1, a.batch_tokens // L)
        rows = []
        for _ in range(B):
            off = int(np_rng.integers(0, len(data) - 2 * L - 2))
            if rng.random() < a.retrieval:
                s = ret.make(data[off:off + 2 * L], L + 1)
                if s is not None and len(s) == L + 1:
                    rows.append(np.asarray(s, dtype=np.int64))
                    continue
            rows.append(data[off:off + L + 1].astype(np.int64))
        x = torch.from_numpy(np.stack(rows)).to(DEV, non_blocking=True)
        return x[:, :-1], x[:, 1:], L

    # Preflight: run every path (eval, needle, sample, save) on the untrained model so a bug shows in seconds.
    if state["step"] == 0:
        import tempfile
        pre = tempfile.mkdtemp(prefix="preflight-")
        needle_grid(model, tok, held, [512], [0.5], 1)
        perplexity(model, held, 512, 2)
        generate(model, tok, "Hello", 3)
        save_chunks(model, pre)
        save_resume_int8(model, pre)
        load_resume_int8(model, pre)
        load_chunks(model, pre)
        log("preflight ok")

    decay_frac = a.decay_frac if a.decay_frac >= 0 else (0.55 if a.phase == 2 else 0.0)
    t_start = time.time()
    deadline = a.train_until if a.train_until else t_start + a.train_seconds
    run_seconds = max(deadline - t_start, 1e-3)
    log(f"training for {run_seconds:.0f} s, lengths {lens}, decay over the last {decay_frac:.0%}")
    model.train()
    step0, last = state["step"], time.time()
    loss_acc, n_acc = 0.0, 0
    every = 1 if a.max_steps else 200
    saved_full = False

    def save_full():
        os.makedirs(os.path.dirname(a.save_full) or ".", exist_ok=True)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state}, a.save_full)
        log("full checkpoint", a.save_full, "at step", state["step"])

    while True:
        el = time.time() - t_start
        s = state["step"] - step0
        if el > run_seconds or (a.max_steps and s >= a.max_steps):
            break
        frac = max(el / run_seconds, s / a.max_steps if a.max_steps else 0.0)
        lr = a.lr * min(1.0, (s + 1) / warm) if warm else a.lr
        if decay_frac > 0 and frac > 1 - decay_frac:  # linear decay to 10% over the last decay_frac
            if a.save_full and not saved_full:
                save_full()  # the constant-rate state: a later run continues from here
                saved_full = True
            lr *= 1.0 - 0.9 * (frac - (1 - decay_frac)) / decay_frac
        for g in opt.param_groups:
            g["lr"] = lr
        x, y, L = batch()
        with torch.autocast(DEV, torch.bfloat16):
            lg = model(x)
        loss = F.cross_entropy(lg.float().view(-1, lg.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        state["step"] += 1
        state["tokens"] += x.numel()
        loss_acc += loss.item() if state["step"] % 25 == 0 or every == 1 else 0.0
        n_acc += 1 if state["step"] % 25 == 0 or every == 1 else 0
        if state["step"] % every == 0:
            dt = time.time() - last
            last = time.time()
            log(f"step {state['step']} L {L} loss {loss_acc/max(n_acc,1):.3f} lr {lr:.2e} "
                f"tokens {state['tokens']/1e6:.1f} M  {every*a.batch_tokens/dt/1e6:.2f} M tok/s")
            state["phase_log"].append([state["step"], round(loss_acc / max(n_acc, 1), 4), L])
            loss_acc, n_acc = 0.0, 0
    state.setdefault("train_seconds", {})[str(a.phase)] = state.get("train_seconds", {}).get(str(a.phase), 0) + time.time() - t_start
    log(f"trained {a.config} phase {a.phase}: steps {state['step']}, tokens {state['tokens']/1e6:.1f} M")
    if a.save_full and not saved_full:
        save_full()

    # Round to bf16 once: what is saved is exactly what is evaluated and exported.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    if a.final:
        nchunks = save_chunks(model, a.out)
    else:
        nchunks = save_resume_int8(model, a.out)
    json.dump(state, open(os.path.join(a.out, "state.json"), "w"))
    if not a.final and not a.save_full:
        os.makedirs(os.path.dirname(CKPT), exist_ok=True)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state}, CKPT)
    log(f"saved {nchunks} weight chunks")

    res = {"config_name": a.config, "config": cfg, "params": nparams, "train_tokens_corpus": int(len(data)),
           "heldout_tokens": int(len(held)), "steps": state["step"], "tokens_seen": state["tokens"],
           "train_seconds": state["train_seconds"]}
    ppl, n = perplexity(model, held, 1024, max(1, int(400 * a.eval_scale)))
    res["heldout_ppl_1024"] = ppl
    res["heldout_ppl_tokens"] = n
    log(f"held-out ppl (1024-token windows, {n} tokens): {ppl:.3f}")
    depths = [i / 10 for i in range(11)]
    trials = max(1, round((10 if a.final else 3) * a.eval_scale))
    grid = needle_grid(model, tok, held, [int(x) for x in a.needle_lengths.split(",")], depths, trials)
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
        try:
            reference_logits(model, tok, a.out, res)
        except Exception as e:  # a suite model is still useful without transformers' cross-check
            if a.config == "default":
                raise
            res["reflogits_error"] = repr(e)
            log("reference logits failed:", repr(e))
    json.dump(res, open(os.path.join(a.out, "results.json"), "w"), indent=1)
    log("done")


def reference_logits(model, tok, out, res):
    """Float32 logits of transformers' LlamaForCausalLM (Qwen2ForCausalLM for
    qwen2 configs) with the saved (bf16) weights."""
    import transformers
    c = model.c
    text = "The quick brown fox jumps over the lazy dog. In Python, a list is a mutable sequence; the kernel"
    ids = [0] + tok.encode(text, add_special_tokens=False).ids
    ids = (ids + list(range(100, 200)))[:32]
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "rope_theta", "rms_norm_eps", "max_position_embeddings",
            "tie_word_embeddings")
    kw = {k: c[k] for k in keys}
    if c.get("architecture") == "qwen2":
        cls, hcfg = transformers.Qwen2ForCausalLM, transformers.Qwen2Config(**kw, bos_token_id=0, eos_token_id=0,
                                                                            hidden_act="silu", use_sliding_window=False)
    else:
        cls, hcfg = transformers.LlamaForCausalLM, transformers.LlamaConfig(**kw, bos_token_id=0, eos_token_id=0,
                                                                            attention_bias=False, mlp_bias=False,
                                                                            hidden_act="silu")
    hf = cls(hcfg).to(DEV).float().eval()
    sd = {k: v.float() for k, v in model.state_dict().items()}
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    missing = hf.load_state_dict(sd, strict=False)
    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.no_grad():
        x = torch.tensor(ids, device=DEV)[None]
        lg = hf(x).logits[0].float()
        own = model.float()(x)[0].float()
    d = (lg - own).abs().max().item()
    res["hf_vs_own_maxdiff"] = d
    res["hf_missing"] = str(missing)
    log(f"transformers {cls.__name__} vs own module, fp32: max |diff| {d:.2e}; {missing}")
    lg.cpu().numpy().astype("<f4").tofile(os.path.join(out, "reflogits.f32"))
    res["reflogits"] = {"ids": ids, "rows": len(ids), "vocab": c["vocab_size"], "text": text,
                        "note": f"transformers {cls.__name__}, float32, weights = weights-*.safetensors (bf16)"}


if __name__ == "__main__":
    main()
