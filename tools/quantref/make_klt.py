#!/usr/bin/python3
"""make_klt.py writes quant/testdata/klt_reference.json.gz, an independent
NumPy reference for the calibrated transform coder (quant/klt.go) that
quant/klt_test.go compares the Go code with:

  codebooks     Lloyd-Max for the unit Gaussian by plain iteration on a fine
                grid (prefix sums of the density, no closed-form moments),
                from the centres of equal-probability cells, until the
                centroids move less than 1e-13 (at most 300000 steps):
                centroids and squared error
  allocation    reverse water-filling in integer bits: np.linalg.eigh of the
                covariance, eigenvalues descending, each bit in turn to the
                component with the largest lam_i * (D(b_i) - D(b_i + 1)),
                at most 8 bits, ties to the lower index
  coder         with an explicit transform T (the eigenvectors, each group of
                equal bits turned by a Haar rotation drawn here), offset T.mean
                and sigma_i^2 the mean eigenvalue of i's group: y = T x - off,
                rho = sqrt(mean of y_i^2 / sigma_i^2 over the components of
                1 bit or more), scale byte
                e = clip(round(8 log2 rho) + 128, 1, 255), indices the nearest
                centroid of y_i / (2^((e-128)/8) sigma_i), decoded
                T^T (off + rho_hat sigma c[idx])
  cases         d = 8, 16 and 64 at the formats' rates (2 to 6 bits), covariances with a spread spectrum (some
                components far below the water level: 0 bits), Gaussian
                vectors of random scale; vectors with a coordinate within 1e-3
                (relative) of a cell boundary or 8 log2 rho within 1e-3 of a
                half-integer are redrawn, so that float32 rounding cannot move
                an index or the scale.

Run with Debian's python3 (it has numpy): /usr/bin/python3 tools/quantref/make_klt.py
"""
import gzip
import json
import os

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "quant", "testdata", "klt_reference.json.gz")

GRID = np.linspace(-10, 10, 4000001)
PDF = np.exp(-GRID ** 2 / 2)
PDF /= PDF.sum()


CUM_P = np.concatenate([[0], np.cumsum(PDF)])
CUM_X = np.concatenate([[0], np.cumsum(PDF * GRID)])
CUM_XX = np.concatenate([[0], np.cumsum(PDF * GRID ** 2)])


STEP = GRID[1] - GRID[0]


def at(cum, t):
    # cum (prefix sums, cum[i] = sum of the first i grid terms) read at the
    # real position t, linearly between grid points
    u = (t - GRID[0]) / STEP + 0.5
    i = np.clip(np.floor(u).astype(int), 0, len(GRID) - 1)
    f = np.clip(u - i, 0, 1)
    return cum[i] + f * (cum[i + 1] - cum[i])


def cell_sums(c):
    # Prefix sums read at the exact boundaries, so that the iteration is a
    # continuous map with no plateaus.
    t = np.concatenate([[GRID[0] - STEP], (c[1:] + c[:-1]) / 2, [GRID[-1] + STEP]])
    return tuple(np.diff(at(cum, t)) for cum in (CUM_P, CUM_X, CUM_XX))


def lloyd_max(b):
    k = 2 ** b
    c = GRID[np.searchsorted(CUM_P[1:], (np.arange(k) + 0.5) / k)]
    for _ in range(300000):
        p, m1, _ = cell_sums(c)
        new = m1 / p
        done = np.max(np.abs(new - c)) < 1e-13
        c = new
        if done:
            break
    p, m1, m2 = cell_sums(c)
    return c, float(np.sum(m2 - 2 * c * m1 + c ** 2 * p))


BOOKS = {b: lloyd_max(b) for b in range(1, 9)}
DIST = [1.0] + [BOOKS[b][1] for b in range(1, 9)]


def allocate(lam, total):
    bits = np.zeros(len(lam), int)
    for _ in range(total):
        g = np.array([lam[i] * (DIST[bits[i]] - DIST[bits[i] + 1]) if bits[i] < 8 else -1 for i in range(len(lam))])
        bits[int(np.argmax(g))] += 1  # argmax: first of the ties
    return bits


def haar(n, rng):
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def case(d, total, rng):
    spec = np.exp(rng.uniform(-7, 1, d))
    basis = haar(d, rng)
    cov = basis @ np.diag(spec) @ basis.T
    cov = (cov + cov.T) / 2
    mean = rng.standard_normal(d) * 0.5
    lam, u = np.linalg.eigh(cov)
    lam, u = lam[::-1], u[:, ::-1]
    bits = allocate(lam, total)
    t = np.zeros((d, d))
    sigma = np.zeros(d)
    lo = 0
    while lo < d:
        hi = lo + 1
        while hi < d and bits[hi] == bits[lo]:
            hi += 1
        m = haar(hi - lo, rng) if hi - lo > 1 else np.ones((1, 1))
        t[lo:hi] = m @ u[:, lo:hi].T
        sigma[lo:hi] = np.sqrt(lam[lo:hi].mean())
        lo = hi
    off = t @ mean
    xs, scales, idxs, decs = [], [], [], []
    root = np.linalg.cholesky(cov)
    while len(xs) < 12:
        x = mean + root @ rng.standard_normal(d) * np.exp(rng.uniform(-1.5, 1.5))
        y = t @ x - off
        coded = bits > 0
        rho = np.sqrt(np.mean(y[coded] ** 2 / sigma[coded] ** 2))
        l8 = 8 * np.log2(rho)
        if abs(l8 - np.floor(l8) - 0.5) < 1e-3:
            continue
        e = int(np.clip(np.round(l8) + 128, 1, 255))
        rh = 2.0 ** ((e - 128) / 8)
        idx, ok, z = [], True, np.zeros(d)
        for i in range(d):
            if bits[i] == 0:
                idx.append(0)
                continue
            c = BOOKS[bits[i]][0]
            v = y[i] / (rh * sigma[i])
            bounds = (c[1:] + c[:-1]) / 2
            if np.min(np.abs(bounds - v)) < 1e-3 * max(1, abs(v)):
                ok = False
                break
            j = int(np.searchsorted(bounds, v))
            idx.append(j)
            z[i] = rh * sigma[i] * c[j]
        if not ok:
            continue
        xs.append(x.tolist())
        scales.append(e)
        idxs.append(idx)
        decs.append((t.T @ (off + z)).tolist())
    return {"d": d, "bits_total": total, "cov": cov.ravel().tolist(), "mean": mean.tolist(),
            "eigenvalues": lam.tolist(), "eigenvectors": u.T.ravel().tolist(), "bits": bits.tolist(),
            "transform": t.ravel().tolist(), "offset": off.tolist(), "sigma": sigma.tolist(),
            "x": xs, "scale": scales, "index": idxs, "decoded": decs}


def main():
    rng = np.random.default_rng(20261203)
    cases = [case(8, 20, rng), case(16, 40, rng), case(16, 56, rng), case(64, 216, rng), case(64, 152, rng)]
    # The plan steps' rates at d = 64 (klt2, klt3, klt4.5, klt6: 8 * (floor(rate * 8) - 1)
    # index bits) and klt4.5 at d = 16, drawn after the first five so that those stay
    # what they were.
    cases += [case(64, 120, rng), case(64, 184, rng), case(64, 280, rng), case(64, 376, rng), case(16, 64, rng)]
    books = {str(b): {"centroids": BOOKS[b][0].tolist(), "mse": BOOKS[b][1]} for b in range(1, 9)}
    with gzip.GzipFile(OUT, "wb", mtime=0) as f:
        f.write(json.dumps({"books": books, "cases": cases}).encode())


if __name__ == "__main__":
    main()
