#!/usr/bin/python3
"""NumPy reference for package compact's attention-matching fits.

Writes compact/testdata/amref.json: a small block of keys, values and
reference queries (clustered keys, so that a few of them can stand for
many), and, for several fits, the kept positions, the biases beta and the
fitted values that an independent float64 implementation of the method
(ALGORITHMS.md section 8) gives:

  * highest attention (rms / max / mean of the softmax weights over the
    queries), top t;
  * OMP on the mass with a progressive schedule and a drop cutoff;
  * B = exp(beta): least squares on the mass equations (numpy lstsq),
    clamped to [e^lo, e^hi], then projected-gradient steps of size
    1/||M||_2^2;
  * values: least squares (ridge lambda = r * ||X||_2^2 by the augmented
    system) of softmax(s q C1^T + beta) C2 = softmax(s q K^T) V.

Usage: /usr/bin/python3 tools/compactref/make.py > compact/testdata/amref.json
"""
import json
import sys

import numpy as np


def f32(x):
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def make_block(seed):
    rng = np.random.default_rng(seed)
    T, d, n = 40, 16, 96
    centers = rng.normal(size=(6, d)) * 2.0
    K = centers[rng.integers(0, 6, size=T)] + 0.3 * rng.normal(size=(T, d))
    V = rng.normal(size=(T, d))
    Q = rng.normal(size=(n, d)) * 1.5
    return f32(K), f32(V), f32(Q), 1.0 / np.sqrt(d)


def exp_scores(K, Q, s):
    S = s * (Q @ K.T)
    E = np.exp(S - S.max(axis=1, keepdims=True))
    return E, E.sum(axis=1)


def outputs(K, V, Q, s):
    E, mass = exp_scores(K, Q, s)
    return (E / mass[:, None]) @ V


def top(scores, t):
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], j))
    return sorted(order[:t])


def fit_mass(E, mass, idx, lo, hi, iters):
    M = E[:, idx]
    B = np.linalg.lstsq(M, mass, rcond=None)[0]
    B = np.clip(B, np.exp(lo), np.exp(hi))
    if iters:
        L = np.linalg.norm(M, 2) ** 2
        for _ in range(iters):
            B = np.clip(B - (M.T @ (M @ B - mass)) / L, np.exp(lo), np.exp(hi))
    return B


def fit_values(E, Y, idx, B, ridge):
    W = E[:, idx] * B
    X = W / W.sum(axis=1, keepdims=True)
    if ridge > 0:
        lam = ridge * np.linalg.norm(X, 2) ** 2
        t = X.shape[1]
        X = np.vstack([X, np.sqrt(lam) * np.eye(t)])
        Y = np.vstack([Y, np.zeros((t, Y.shape[1]))])
    return np.linalg.lstsq(X, Y, rcond=None)[0]


def highest(K, V, Q, s, t, how, lo, hi, iters, ridge):
    E, mass = exp_scores(K, Q, s)
    A = E / mass[:, None]
    score = {"rms": np.sqrt((A ** 2).mean(axis=0)), "max": A.max(axis=0), "mean": A.mean(axis=0)}[how]
    idx = top(score, t)
    B = fit_mass(E, mass, idx, lo, hi, iters)
    C2 = fit_values(E, outputs(K, V, Q, s), idx, B, ridge)
    return idx, B, C2


def omp(K, V, Q, s, t, schedule, lo, hi, drop):
    E, mass = exp_scores(K, Q, s)
    T = K.shape[0]
    kept, excluded = [], set()
    B = None
    step = 0
    rounds = 0

    def solve(idx):
        return np.clip(np.linalg.lstsq(E[:, idx], mass, rcond=None)[0], np.exp(lo), np.exp(hi))

    while True:
        if len(kept) < t:
            per, refit = next((p, r) for (u, p, r) in schedule if u == 0 or len(kept) < u)
            cur = E[:, kept] @ B if kept else np.zeros_like(mass)
            corr = E.T @ (mass - cur)
            free = [j for j in range(T) if j not in kept and j not in excluded]
            free.sort(key=lambda j: (-corr[j], j))
            k = min(per, t - len(kept))
            # The choice must not hinge on rounding (Go scores in float32).
            if len(free) > k:
                gap = corr[free[k - 1]] - corr[free[k]]
                assert gap > 1e-3 * abs(corr[free[0]]), "near tie in OMP: pick another seed"
            new = free[:k]
            kept += new
            if B is None or step % refit == 0:
                B = solve(kept)
            else:
                B = np.concatenate([B, np.full(len(new), np.exp(lo))])
            step += 1
            continue
        B = solve(kept)
        if drop >= 0 or rounds == 3:
            break
        bad = [j for j, b in zip(kept, B) if b < np.exp(drop)]
        if not bad:
            break
        rounds += 1
        excluded |= set(bad)
        kept = [j for j in kept if j not in bad]
        B = solve(kept)
    order = np.argsort(kept)
    idx = [kept[i] for i in order]
    B = B[order]
    C2 = fit_values(E, outputs(K, V, Q, s), idx, B, 0)
    return idx, B, C2


def main():
    K, V, Q, s = make_block(7)
    cases = []
    for name, how, t, lo, hi, iters, ridge in [
        ("rms", "rms", 8, -3, 3, 2, 0),
        ("max", "max", 8, -3, 3, 0, 0),
        ("mean", "mean", 10, -3, 3, 5, 0),
        ("rms-ridge", "rms", 8, -3, 3, 2, 1e-3),
    ]:
        idx, B, C2 = highest(K, V, Q, s, t, how, lo, hi, iters, ridge)
        cases.append(dict(name=name, select=how, keys=t, bias_min=lo, bias_max=hi, pgd=iters, ridge=ridge,
                          index=idx, bias=np.log(B).tolist(), values=C2.ravel().tolist()))
    schedule = [(3, 1, 1), (6, 2, 2), (0, 4, 2)]
    lo, hi, drop = float(np.log(1e-12)), 7.0, -7.0
    for t in (6, 12, 24):
        idx, B, C2 = omp(K, V, Q, s, t, schedule, lo, hi, drop)
        cases.append(dict(name=f"omp{t}", select="omp", keys=t, bias_min=lo, bias_max=hi, pgd=0, ridge=0,
                          schedule=[list(x) for x in schedule], drop=drop,
                          index=idx, bias=np.log(B).tolist(), values=C2.ravel().tolist()))
    # Inputs are float32 (9 significant digits give them back exactly),
    # outputs rounded to 10 digits, far below the tests' tolerances.
    def short(xs, digits):
        return [float(f"{x:.{digits}g}") for x in xs]

    for c in cases:
        c["bias"], c["values"] = short(c["bias"], 10), short(c["values"], 10)
    out = dict(dim=K.shape[1], scale=s, keys=short(K.ravel(), 9), values=short(V.ravel(), 9),
               queries=short(Q.ravel(), 9), cases=cases)
    json.dump(out, sys.stdout, indent=None, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
