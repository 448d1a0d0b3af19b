#!/usr/bin/python3
"""make_walsh.py writes quant/testdata/walsh_reference.json.gz, an independent
NumPy reference for q4_0h (quant/walsh.go), llama.cpp's q4_0 after the fixed
Walsh-Hadamard rotation it applies to quantized KV caches, that
quant/walsh_test.go compares the Go quantizer with:

  the rotation  H_b[i][j] = (-1)^popcount(i & j) / sqrt(b) written out as a
                dense matrix (no fast transform), applied to each run of b
                coordinates in float64
  q4_0          per block of 32 rotated coordinates: m the element of largest
                magnitude (sign kept), scale d = m / -8 rounded to fp16,
                nibbles q = min(15, trunc(x / d + 8.5)) in float32 as llama.cpp
                computes them, decoded (q - 8) * d and rotated back
  cases         d = 128 keys (b = 128), d = 128 values (b = 64), d = 192 keys
                (b = 64, the largest power of two dividing 192); vectors
                Gaussian of random norm, some with a few outlier channels.
                Vectors whose x / d + 8.5 comes within 1e-3 of an integer are
                redrawn, so that float32 rounding differences between a fast
                transform and this dense one cannot move a nibble.

Run with Debian's python3 (it has numpy): /usr/bin/python3 tools/quantref/make_walsh.py
"""
import gzip
import json
import os

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "quant", "testdata", "walsh_reference.json.gz")


def hadamard(b):
    i = np.arange(b)
    pop = np.vectorize(lambda v: bin(v).count("1"))(i[:, None] & i[None, :])
    return np.where(pop % 2 == 0, 1.0, -1.0) / np.sqrt(b)


def rotate(x, b):
    h = hadamard(b)
    return np.concatenate([h @ x[o:o + b] for o in range(0, len(x), b)])


def q4_0(y):
    """Nibbles, fp16 scales and the decoded vector, or None when a nibble is
    within 1e-3 of a rounding boundary."""
    y32 = y.astype(np.float32)
    nibbles, scales, dec = [], [], []
    for o in range(0, len(y32), 32):
        blk = y32[o:o + 32]
        m = blk[np.argmax(np.abs(blk))]
        d = np.float32(m / np.float32(-8))
        inv = np.float32(1) / d if d != 0 else np.float32(0)
        t = blk * inv + np.float32(8.5)
        frac = t - np.floor(t)
        if np.any((np.minimum(frac, 1 - frac) < 1e-3) & (t < 15)):
            return None
        q = np.minimum(15, np.trunc(t)).astype(int)
        d16 = np.float16(d)
        nibbles += q.tolist()
        scales.append(float(d16))
        dec.append((q - 8).astype(np.float64) * float(d16))
    return nibbles, scales, np.concatenate(dec)


def main():
    rng = np.random.default_rng(20261203)
    cases = []
    for d, b, key in [(128, 128, True), (128, 64, False), (192, 64, True)]:
        made = 0
        while made < 4:
            x = rng.standard_normal(d)
            if made % 2 == 1:
                x[rng.choice(d, 3, replace=False)] *= 12
            x *= np.exp(rng.uniform(-2, 3))
            x = x.astype(np.float32).astype(np.float64)
            y = rotate(x, b)
            r = q4_0(y)
            if r is None:
                continue
            nib, scales, dec = r
            cases.append({
                "d": d, "block": b, "key": key,
                "x": x.tolist(),
                "rotated": y.tolist(),
                "nibbles": nib, "scales": scales,
                "decoded": rotate(dec, b).tolist(),
            })
            made += 1
    with gzip.GzipFile(OUT, "wb", mtime=0) as f:
        f.write(json.dumps({"cases": cases}).encode())


if __name__ == "__main__":
    main()
