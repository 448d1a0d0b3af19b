#!/usr/bin/env python3
"""Reference logits from Hugging Face transformers for turbomem's model tests.

Builds small LlamaForCausalLM / Qwen2ForCausalLM models whose weights are a
fixed formula of (tensor name, element index) -- splitmix64 of the FNV-1a
hash of the name plus the index, mapped to a uniform value -- so that the Go
test can rebuild the very same weights, convert them to GGUF with our own
writer and compare our logits with these. The forward pass runs in float64.

Usage (on the GPU machine, or anywhere with torch + transformers):
    python3 tools/reflogits/make.py --out DIR
Writes DIR/<name>.json (config, token ids, logits shape) and
DIR/<name>.f32 (logits, little-endian float32, row after row).
"""
import argparse, json, os, sys

import numpy as np
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

MASK = (1 << 64) - 1


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h ^= b
        h = (h * 0x100000001B3) & MASK
    return h


def formula(name, shape, scale, offset=0.0):
    """offset + scale*u, u uniform in [-1, 1), from splitmix64(hash(name) + (i+1)*golden)."""
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(fnv1a64(name)) + (i + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)
    v = (offset + (2.0 * u - 1.0) * scale).astype(np.float32)
    return v.reshape(shape)


def scale_for(name, cfg):
    if name.endswith("norm.weight"):
        return 0.1, 1.0  # around 1
    if name.endswith(".bias"):
        return 0.2, 0.0
    if "embed_tokens" in name or "lm_head" in name:
        return 1.0, 0.0
    # Keep activations O(1): uniform(-s, s) has variance s^2/3; fan-in 'in'.
    fan_in = cfg["hidden_size"] if not name.endswith("down_proj.weight") else cfg["intermediate_size"]
    if name.endswith("o_proj.weight"):
        fan_in = cfg["num_attention_heads"] * cfg["head_dim"]
    return float(np.sqrt(3.0 / fan_in)), 0.0


MODELS = [
    # name, class, config
    ("llama_hd128", "llama", dict(vocab_size=256, hidden_size=256, intermediate_size=384, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1, head_dim=128, rope_theta=10000.0,
                                   rms_norm_eps=1e-5, max_position_embeddings=512, tie_word_embeddings=False)),
    ("llama3_gqa4", "llama", dict(vocab_size=256, hidden_size=512, intermediate_size=256, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=1, head_dim=128, rope_theta=500000.0,
                                   rms_norm_eps=1e-5, max_position_embeddings=512, tie_word_embeddings=True,
                                   rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
    ("qwen2_hd64", "qwen2", dict(vocab_size=256, hidden_size=256, intermediate_size=384, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=64, rope_theta=1000000.0,
                                  rms_norm_eps=1e-6, max_position_embeddings=512, tie_word_embeddings=True)),
]

INPUTS = {
    "short": [(i * 37 + 11) % 256 for i in range(20)],
    "long": [(i * 101 + 7) % 256 for i in range(300)],
}


def build(kind, cfg):
    if kind == "llama":
        c = LlamaConfig(**cfg, attention_bias=False, mlp_bias=False)
        m = LlamaForCausalLM(c)
    else:
        c = Qwen2Config(**{k: v for k, v in cfg.items() if k != "head_dim"})
        m = Qwen2ForCausalLM(c)
    c._attn_implementation = "eager"
    sd = {}
    for name, p in m.state_dict().items():
        src = name
        if name == "lm_head.weight" and cfg.get("tie_word_embeddings"):
            src = "model.embed_tokens.weight"  # one shared tensor: one formula
        s, off = scale_for(src, cfg)
        sd[name] = torch.from_numpy(formula(src, tuple(p.shape), s, off))
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    return m.double().eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, kind, cfg in MODELS:
        m = build(kind, cfg)
        names = sorted(m.state_dict().keys())
        for inp, ids in INPUTS.items():
            if inp == "long" and name != "llama_hd128":
                continue
            with torch.no_grad():
                logits = m(torch.tensor([ids])).logits[0]
            keep = logits if inp == "short" else logits[-4:]
            arr = keep.to(torch.float32).numpy()
            tag = f"{name}_{inp}"
            arr.astype("<f4").tofile(os.path.join(args.out, tag + ".f32"))
            meta = dict(arch=kind, config=cfg, ids=ids, logits_rows=int(arr.shape[0]),
                        logits_first_position=len(ids) - int(arr.shape[0]), vocab=int(arr.shape[1]),
                        tensors=names, transformers=transformers.__version__, torch=torch.__version__,
                        check=dict(first=float(arr[0, 0]), absmax=float(np.abs(arr).max())))
            with open(os.path.join(args.out, tag + ".json"), "w") as f:
                json.dump(meta, f, indent=1)
            print(tag, arr.shape, "absmax", float(np.abs(arr).max()))
    # A self-check of the weight formula, for the Go test to compare with.
    probe = formula("model.layers.0.self_attn.q_proj.weight", (4,), 1.0)
    with open(os.path.join(args.out, "formula_probe.json"), "w") as f:
        json.dump(dict(name="model.layers.0.self_attn.q_proj.weight", scale=1.0, values=[float(x) for x in probe]), f)


if __name__ == "__main__":
    sys.exit(main())
