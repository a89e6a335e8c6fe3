"""Cost of the metrics added after FID/KID/PRDC, at 10k and 50k samples per side, against their references.

    .venv/bin/python benchmarks/bench_new_metrics.py [--sizes 10000,50000] [--dim 512] [--quick]

For each N (real and generated sets of N float32 points, D dims, a seeded
Gaussian mixture with two of 20 modes dropped on the generated side), wall
time and the result of ours and of the reference where it fits in memory:

* Vendi (order 1, cosine): ours (D x D Gram in float64 blocks) vs the
  reference's ``score_dual`` (``X^T X``, vertaix/Vendi-Score), both per side;
* CMMD: ours (blocked RBF sums) vs google-research's formula with full N x N
  matrices (skipped when those would exceed 40 % of available memory);
* AuthPct: ours (FAISS k-NN) vs dgm-eval's (torch.cdist, N x N; same rule);
* FD-infinity: ours (15 FIDs on generated subsamples), no reference run here
  (dgm-eval's differs only in its sqrtm);
* Inception Score on (N, 1008) logits: ours vs torch-fidelity's
  ``isc_features_to_metric``.

Prints the machine, one row per (N, metric), and the agreement.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_machine.py

from _machine import cores, cpu_model  # noqa: E402

from collapse_audit import metrics as M  # noqa: E402

SEED = 1234


def make(n: int, d: int):
    rng = np.random.default_rng(SEED)
    centres = rng.normal(0, 4.0, size=(20, d))
    r = centres[rng.integers(0, 20, n)] + rng.standard_normal((n, d))
    g = centres[rng.integers(0, 18, n)] + rng.standard_normal((n, d))
    return r.astype(np.float32), g.astype(np.float32)


def avail() -> int:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def timed(fn):
    t = time.perf_counter()
    v = fn()
    return v, time.perf_counter() - t


def ref_vendi(x):
    import scipy.linalg

    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    w = scipy.linalg.eigvalsh(x.T @ x / x.shape[0])
    p = w[w > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def ref_cmmd(x, y, sigma=10, scale=1000):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    xs, ys = (x * x).sum(1), (y * y).sum(1)
    g = 1 / (2 * sigma**2)
    kxx = np.mean(np.exp(-g * (-2 * x @ x.T + xs[:, None] + xs[None, :])))
    kxy = np.mean(np.exp(-g * (-2 * x @ y.T + xs[:, None] + ys[None, :])))
    kyy = np.mean(np.exp(-g * (-2 * y @ y.T + ys[:, None] + ys[None, :])))
    return float(scale * (kxx + kyy - 2 * kxy))


def ref_authpct(r, g):
    import torch

    r, g = torch.from_numpy(r), torch.from_numpy(g)
    rd = torch.cdist(r, r)
    rd.fill_diagonal_(float("inf"))
    gd = torch.cdist(r, g)
    rm, gm = rd.min(axis=0), gd.min(dim=0)
    return float((100 * torch.sum(rm.values[gm.indices] < gm.values) / g.shape[0]).item())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,50000")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--quick", action="store_true", help="sizes 2000 only")
    a = ap.parse_args(argv)
    sizes = [2000] if a.quick else [int(s) for s in a.sizes.split(",")]
    print(f"machine: {cpu_model()}, {cores()} cores, {avail() / 2**30:.1f} GiB available; numpy {np.__version__}")
    print(f"data: N real = N generated per row, D = {a.dim}, float32, seeded Gaussian mixture (2 of 20 modes dropped)")
    print(f"{'N':>7}  {'metric':<14} {'ours s':>8} {'ref s':>8} {'ratio':>7}  {'ours':>12} {'reference':>12}")
    for n in sizes:
        r, g = make(n, a.dim)
        nn_bytes = 3 * n * n * 8
        rows = []
        v, t = timed(lambda: (M.vendi_score(g), M.vendi_score(r)))
        vr, tr = timed(lambda: (ref_vendi(g.astype(np.float64)), ref_vendi(r.astype(np.float64))))
        rows.append(("Vendi (both)", t, tr, f"{v[0]:.4f}", f"{vr[0]:.4f}"))
        c, t = timed(lambda: M.cmmd(r, g))
        if nn_bytes < 0.4 * avail():
            cr, tr = timed(lambda: ref_cmmd(r.astype(np.float64), g.astype(np.float64)))
            rows.append(("CMMD", t, tr, f"{c:.6g}", f"{cr:.6g}"))
        else:
            rows.append(("CMMD", t, None, f"{c:.6g}", f"needs {nn_bytes / 2**30:.0f} GiB"))
        ap_, t = timed(lambda: M.authpct(r, g))
        if n * n * 4 * 2 < 0.4 * avail():
            apr, tr = timed(lambda: ref_authpct(r, g))
            rows.append(("AuthPct", t, tr, f"{ap_:.2f}", f"{apr:.2f}"))
        else:
            rows.append(("AuthPct", t, None, f"{ap_:.2f}", f"needs {n * n * 8 / 2**30:.0f} GiB"))
        f, t = timed(lambda: M.fd_infinity(r, g, seed=0))
        rows.append(("FD-infinity", t, None, f"{f.value:.4f}", "-"))
        logits = np.random.default_rng(1).standard_normal((n, 1008)).astype(np.float32) * 3
        i, t = timed(lambda: M.inception_score(logits))
        try:
            import torch
            from torch_fidelity.metric_isc import isc_features_to_metric

            ir, tr = timed(lambda: isc_features_to_metric(torch.from_numpy(logits), 10, True, 2020))
            rows.append(("IS (1008)", t, tr, f"{i.mean:.5f}", f"{ir['inception_score_mean']:.5f}"))
        except ImportError:
            rows.append(("IS (1008)", t, None, f"{i.mean:.5f}", "not installed"))
        for name, t, tr, ours, ref in rows:
            ratio = f"{tr / t:.2f}x" if tr else "-"
            print(f"{n:>7}  {name:<14} {t:>8.2f} {('%.2f' % tr) if tr else '-':>8} {ratio:>7}  {ours:>12} {ref:>12}", flush=True)
    print("ratio: reference time / our time (above 1: ours is faster).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
