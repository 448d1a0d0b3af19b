#!/usr/bin/python3
"""make_fixture.py writes quant/testdata/turbo_reference.json.gz, an
independent NumPy reference for TurboQuant_mse (ALGORITHMS.md §1-3) that
quant/reference_test.go compares the Go quantizer with:

  codebooks   Lloyd-Max centroids for the exact density of one coordinate of
              a uniform point on the sphere S^(d-1), solved on a fine grid by
              plain Lloyd iterations (no code shared with quant/codebook.go)
  cases       vectors of random norms (Gaussian, and Gaussian with a few
              outlier channels), the signs of a Hadamard rotation Π = H·D,
              and for every bit width and correction mode the centroid
              indices, the stored scale (rounded to fp16) and the decoded
              vector scale·Πᵀc[idx]
  distortion  E‖x − x̃‖²/‖x‖² over 20,000 Gaussian vectors with Haar-random
              rotations (QR of a Gaussian matrix, sign-fixed), per bit width
              and correction, for d = 128

Run with Debian's python3 (it has numpy): /usr/bin/python3 tools/quantref/make_fixture.py
"""
import gzip
import json
import os

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "quant", "testdata", "turbo_reference.json.gz")
CORRECTIONS = ["none", "norm", "proj"]


def sphere_grid(d, n=400001):
    """Grid points t and the cumulative integrals of f(t) and t·f(t)
    (trapezoid rule) for the density of one coordinate of a uniform point on
    S^(d-1): f(t) ∝ (1 - t²)^((d-3)/2) on [-1, 1]."""
    a = min(1.0, 14.0 / np.sqrt(d))  # f(14σ) < e^-98: nothing beyond matters
    t = np.linspace(-a, a, n)
    with np.errstate(divide="ignore"):
        logf = (d - 3) / 2 * np.log1p(-t * t)
    f = np.exp(logf - logf.max())
    h = t[1] - t[0]
    cw = np.concatenate([[0], np.cumsum((f[1:] + f[:-1]) / 2 * h)])
    tf = t * f
    ct = np.concatenate([[0], np.cumsum((tf[1:] + tf[:-1]) / 2 * h)])
    return t, cw / cw[-1], ct / cw[-1]


def lloyd_max(d, bits):
    """The fixed point of Lloyd's conditions (boundaries at midpoints,
    centroids at their cells' conditional means), found by Newton's method
    on the map c -> conditional means, started from Lloyd's iteration. The
    cumulative integrals are interpolated linearly, so the map is smooth."""
    t, cw, ct = sphere_grid(d)
    k = 1 << bits

    def means(c):
        b = np.concatenate([[t[0]], (c[:-1] + c[1:]) / 2, [t[-1]]])
        return np.diff(np.interp(b, t, ct)) / np.diff(np.interp(b, t, cw))

    c = np.interp((np.arange(k) + 0.5) / k, cw, t)
    for _ in range(200):  # Lloyd: into Newton's basin
        c = means(c)
    eps = 1e-7 / np.sqrt(d)
    for _ in range(50):
        r = means(c) - c
        if np.max(np.abs(r)) < 1e-15:
            break
        jac = np.empty((k, k))
        for j in range(k):
            e = np.zeros(k)
            e[j] = eps
            jac[:, j] = ((means(c + e) - (c + e)) - (means(c - e) - (c - e))) / (2 * eps)
        c = c - np.linalg.solve(jac, r)
        c = (c - c[::-1]) / 2  # the density is even: keep the codebook symmetric
    b = (c[:-1] + c[1:]) / 2
    # MSE = E[t²] - Σ mass_i·c_i² at the fixed point (centroids are the means).
    tt = t * t * np.gradient(cw, t)
    e2 = float(np.sum((tt[1:] + tt[:-1]) / 2 * np.diff(t)))
    edges = np.concatenate([[t[0]], b, [t[-1]]])
    mass = np.diff(np.interp(edges, t, cw))
    return c, e2 - float(np.sum(mass * c * c))


def hadamard(d):
    h = np.array([[1.0]])
    while h.shape[0] < d:
        h = np.block([[h, h], [h, -h]])
    return h / np.sqrt(d)


def quantize(y, c):
    """Nearest centroid of each coordinate (ties to the lower index)."""
    bounds = (c[:-1] + c[1:]) / 2
    return np.searchsorted(bounds, y, side="left")


def scale_for(corr, n, u, chat):
    """u = Π(x/‖x‖), chat = c[idx]: the scale stored instead of ‖x‖."""
    if corr == "none":
        return n
    if corr == "norm":  # ‖x̃‖ = ‖x‖
        return n / np.sqrt(np.sum(chat * chat))
    yc = np.sum(u * chat)  # <x, x̃> = ‖x‖²
    return n / yc if yc > 0 else n


def vectors(rng, d, count):
    xs = []
    for i in range(count):
        x = rng.standard_normal(d)
        if i % 2 == 1:  # a few outlier channels, as real keys have
            ch = rng.choice(d, 4, replace=False)
            x[ch] *= 12
        x *= np.exp(rng.uniform(np.log(1e-2), np.log(1e2))) / np.linalg.norm(x)
        xs.append(x.astype(np.float32).astype(np.float64))
    return xs


def haar(rng, d):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def main():
    rng = np.random.default_rng(20261202)
    out = {"codebooks": [], "cases": [], "distortion": []}
    books = {}
    for d in (32, 64, 96, 128):
        for b in (1, 2, 3, 4):
            c, mse = lloyd_max(d, b)
            books[(d, b)] = c
            out["codebooks"].append({"d": d, "bits": b, "centroids": c.tolist(), "mse_per_coord": mse})
            print(f"codebook d={d} b={b}: d*mse = {d*mse:.5f}")
    for d in (64, 128):
        signs = rng.choice([-1.0, 1.0], d)
        pi = hadamard(d) * signs  # Π = H·D: column j of H times signs[j]
        for x in vectors(rng, d, 12):
            n = np.linalg.norm(x)
            u = pi @ (x / n)
            case = {"d": d, "signs": signs.tolist(), "x": x.tolist(), "bits": []}
            for b in (1, 2, 3, 4):
                c = books[(d, b)]
                idx = quantize(u, c)
                chat = c[idx]
                row = {"bits": b, "idx": idx.tolist(), "scale": {}, "decoded": {}}
                for corr in CORRECTIONS:
                    s = float(np.float16(scale_for(corr, n, u, chat)))
                    row["scale"][corr] = s
                    row["decoded"][corr] = (s * (pi.T @ chat)).tolist()
                case["bits"].append(row)
            out["cases"].append(case)
    d, count = 128, 20000
    for b in (1, 2, 3, 4):
        c = books[(d, b)]
        errs = {k: [] for k in CORRECTIONS}
        for blk in range(count // 500):
            pi = haar(rng, d)
            x = rng.standard_normal((500, d)) * np.exp(rng.uniform(-3, 3, (500, 1)))
            n = np.linalg.norm(x, axis=1, keepdims=True)
            u = (x / n) @ pi.T
            chat = c[quantize(u, c)]
            for corr in CORRECTIONS:
                if corr == "none":
                    s = n
                elif corr == "norm":
                    s = n / np.linalg.norm(chat, axis=1, keepdims=True)
                else:
                    s = n / np.sum(u * chat, axis=1, keepdims=True)
                xt = (s * chat) @ pi
                errs[corr].append(np.sum((x - xt) ** 2, axis=1) / n[:, 0] ** 2)
        for corr in CORRECTIONS:
            e = np.concatenate(errs[corr])
            out["distortion"].append({"d": d, "bits": b, "correction": corr, "mean": float(e.mean()),
                                      "stderr": float(e.std() / np.sqrt(len(e))), "n": len(e)})
            print(f"distortion d={d} b={b} {corr}: {e.mean():.5f} ± {e.std()/np.sqrt(len(e)):.5f}")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with gzip.open(OUT, "wt") as f:
        json.dump(out, f, separators=(",", ":"))
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
