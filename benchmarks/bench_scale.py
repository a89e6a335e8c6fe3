"""Scaling table of the metrics stage: wall time and peak memory from 10k to 1M samples per side.

    .venv/bin/python benchmarks/bench_scale.py [--sizes 10000,50000,200000] [--dim 512] [--slow] [--scan]
                                               [--data manifold|isotropic] [--n-sub 2000] [--json OUT]

``--slow`` adds N = 1,000,000 (about an hour on 2 cores).  For each N, in
separate subprocesses:

1. *write*: real and generated features (N x D float32 each) are generated in
   65,536-row chunks (seeded) and streamed into ``.npz`` files in a temporary
   directory with :func:`collapse_audit.scale.write_features_streaming`, so
   the writer never holds a whole array;
2. *metrics* (timed; its peak RSS is ``ru_maxrss`` of that process alone, the
   memory-mapped pages it touched included): both files are opened with
   :func:`collapse_audit.features.load_features_mmap`; FID from chunked
   :class:`~collapse_audit.metrics.GaussianStats`; KID (100 subsets of
   1000); PRDC exact (:func:`collapse_audit.metrics.prdc`) or approximate
   (:func:`collapse_audit.scale.approx_prdc_indicators`) as
   :func:`collapse_audit.scale.choose_method` decides, and for approximate
   PRDC the error check against exact search on a subsample
   (:func:`collapse_audit.scale.measure_approx_error`).

3. *scan* (with ``--scan``): the whole ``collapse-audit scan gen.npz --real
   real.npz`` on the same files in a child process (metrics, clusters,
   near-duplicates and near-copies, report), its stage times and peak RSS
   read from its ``results.json`` (``timings``, ``resources``), plus what it
   found: dropped clusters (two of the 20 modes are missing), the
   near-duplicate and near-copy fractions.

Data: 20 Gaussian modes; the generated side drops two of them and is
shifted by 0.02.  ``--data manifold`` (default): each mode is a random
16-dimensional linear manifold plus small isotropic noise (embeddings of real
images have low intrinsic dimension); ``--data isotropic``: full-rank
isotropic modes, the hardest case for an inverted-file index; ``--data
collapsed``: manifold data where 80% of the generated outputs are one and the
same vector (a completely collapsed generator), the worst case for
neighbour search.

Prints the machine, one row per N (method, stage times, peak RSS, the
approximation's error bound) and the growth exponent of the metrics time
fitted by least squares on log(time) = a + b log(N).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_machine.py, also when loaded by path

from _machine import cpu_model  # noqa: E402

SEED = 1234
N_MODES = 20
CHUNK = 65536
MANIFOLD_DIM = 16


# --------------------------------------------------------------------------- data


def _modes(dim: int, data: str):
    rng = np.random.default_rng([SEED, dim])
    centres = rng.normal(0, 1.0, (N_MODES, dim)).astype(np.float32)
    if data in ("manifold", "collapsed"):
        bases = rng.normal(0, 1.0 / np.sqrt(MANIFOLD_DIM), (N_MODES, MANIFOLD_DIM, dim)).astype(np.float32)
    else:
        bases = None
    scales = rng.uniform(0.3, 0.6, N_MODES).astype(np.float32)
    return centres, bases, scales


def feature_chunks(n: int, dim: int, side: str, data: str):
    """Seeded chunks of one side: real from all modes, generated from all but two, shifted by 0.02."""
    centres, bases, scales = _modes(dim, data)
    modes = np.arange(N_MODES) if side == "real" else np.arange(2, N_MODES)
    shift = 0.0 if side == "real" else 0.02
    for i, s in enumerate(range(0, n, CHUNK)):
        b = min(CHUNK, n - s)
        rng = np.random.default_rng([SEED, dim, 0 if side == "real" else 1, i])
        lab = rng.choice(modes, b)
        if bases is None:
            x = rng.standard_normal((b, dim), dtype=np.float32)
            x *= scales[lab, None]
        else:
            z = rng.standard_normal((b, MANIFOLD_DIM), dtype=np.float32) * scales[lab, None]
            x = np.einsum("bm,bmd->bd", z, bases[lab])
            x += 0.05 * rng.standard_normal((b, dim), dtype=np.float32)
        x += centres[lab]
        x += shift
        if data == "collapsed" and side == "gen":  # 80% of the outputs are one and the same image
            x[: int(0.8 * b)] = centres[2] + 0.01
        yield x.astype(np.float32)


# --------------------------------------------------------------------------- children


def child_write(n: int, dim: int, folder: str, data: str) -> dict:
    from collapse_audit.scale import write_features_streaming

    t = time.perf_counter()
    for side in ("real", "gen"):
        write_features_streaming(Path(folder) / f"{side}.npz", feature_chunks(n, dim, side, data), n, dim,
                                 paths=[f"{side}/{i}.png" for i in range(n)], embedder_id="synthetic")
    return {"write_s": time.perf_counter() - t,
            "file_bytes": sum((Path(folder) / f"{s}.npz").stat().st_size for s in ("real", "gen"))}


def child_metrics(folder: str, n_sub: int) -> dict:
    from collapse_audit import metrics as M
    from collapse_audit import scale
    from collapse_audit.features import load_features_mmap

    out: dict = {}
    t0 = time.perf_counter()
    real = load_features_mmap(Path(folder) / "real.npz")
    gen = load_features_mmap(Path(folder) / "gen.npz")
    r, g = real.features, gen.features
    out["memmap"] = isinstance(r, np.memmap) and isinstance(g, np.memmap)
    out["load_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    sr, sg = M.GaussianStats.from_features(r), M.GaussianStats.from_features(g)
    out["fid"] = M.frechet_distance(sr.mean, sr.cov, sg.mean, sg.cov)
    out["fid_s"] = time.perf_counter() - t

    t = time.perf_counter()
    kr = M.kid(r, g, n_subsets=100, subset_size=1000, seed=0)
    out["kid"] = kr.mean
    out["kid_s"] = time.perf_counter() - t

    n, m, d = r.shape[0], g.shape[0], r.shape[1]
    method = scale.choose_method(n, m, d)
    out["method"] = method
    t = time.perf_counter()
    if method == "exact":
        p = M.prdc(r, g, k=5)
        out.update(precision=p.precision, recall=p.recall, density=p.density, coverage=p.coverage)
        out["prdc_s"] = time.perf_counter() - t
        out["check_s"] = 0.0
    else:
        a = scale.approx_prdc_indicators(r, g, k=5)
        out.update(precision=a.precision, recall=a.recall, density=a.density, coverage=a.coverage)
        out["prdc_s"] = time.perf_counter() - t
        out["approx_params"] = a.params
        t = time.perf_counter()
        chk = scale.measure_approx_error(r, g, a, n_sub=n_sub)
        out["check_s"] = time.perf_counter() - t
        out["approximation"] = chk
    out["metrics_s"] = time.perf_counter() - t0
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def run_scan(folder: str, timeout: float) -> dict:
    """The whole ``collapse-audit scan`` on the two feature files (child process); its stage times and findings."""
    out_dir = Path(folder) / "scan-out"
    cmd = [sys.executable, "-m", "collapse_audit", "scan", str(Path(folder) / "gen.npz"), "--real",
           str(Path(folder) / "real.npz"), "--out", str(out_dir)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t
    if proc.returncode not in (0, 1) or not (out_dir / "results.json").exists():
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["failed"]}
    res = json.loads((out_dir / "results.json").read_text())
    t = res["timings"]
    dup = res.get("duplicates") or {}
    return {
        "wall_s": wall,
        "timings": t,
        "peak_rss_bytes": (res.get("resources") or {}).get("peak_rss_bytes"),
        "prdc_method": res["metrics"].get("prdc_method"),
        "dropped_clusters": len((res.get("clusters") or {}).get("dropped") or []),
        "k_clusters": (res.get("clusters") or {}).get("k"),
        "dup_fraction": (dup.get("within_gen") or {}).get("dup_fraction"),
        "memorized_fraction": (dup.get("gen_vs_real") or {}).get("memorized_fraction"),
        "dup_search": dup.get("search"),
        "report_bytes": (out_dir / "report.html").stat().st_size if (out_dir / "report.html").exists() else None,
    }


# --------------------------------------------------------------------------- parent


def machine() -> dict:
    cpu = cpu_model()
    ram = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_bytes": ram, "python": platform.python_version(),
            "numpy": np.__version__}


def _run_child(args: list[str], timeout: float) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["failed"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def growth_exponent(ns, ts) -> float | None:
    """Least-squares slope b of log t = a + b log N."""
    pts = [(np.log(n), np.log(t)) for n, t in zip(ns, ts) if t and t > 0]
    if len(pts) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def print_scan_table(rows: list[dict]) -> None:
    """The whole-scan table: stage times from results.json, peak RSS, and what the scan found."""
    print()
    print("whole scan (collapse-audit scan gen.npz --real real.npz, report included):")
    hdr = (f"{'N':>9} {'total s':>8} {'metrics':>8} {'clusters':>8} {'dups':>8} {'report':>7} {'peak RSS':>9} "
           f"{'dropped':>8} {'dup frac':>8} {'copies':>7}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        sc = r.get("scan")
        if not sc:
            continue
        if "error" in sc:
            print(f"{r['n']:>9} scan failed: {sc['error']}")
            continue
        t = sc["timings"]
        print(f"{r['n']:>9} {sc['wall_s']:>8.1f} {t.get('metrics', 0):>8.1f} {t.get('analysis_clusters', 0):>8.1f} "
              f"{t.get('analysis_duplicates', 0):>8.1f} {t.get('report', 0):>7.1f} "
              f"{(sc['peak_rss_bytes'] or 0) / 2**30:>7.2f} G {sc['dropped_clusters']:>4}/{sc['k_clusters'] or 0:<3} "
              f"{sc['dup_fraction'] or 0:>8.4f} {sc['memorized_fraction'] or 0:>7.4f}")
    ok = [r for r in rows if r.get("scan") and "error" not in r["scan"]]
    b = growth_exponent([r["n"] for r in ok], [r["scan"]["wall_s"] for r in ok])
    if b is not None:
        print(f"growth exponent of the whole scan's time vs N: {b:.2f}")
    print("dropped: clusters of the real set dropped by the generator / clusters (2 of the 20 modes are missing); "
          "dup frac, copies: within-generated near-duplicate and near-copy fractions")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,50000,200000")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--slow", action="store_true", help="add N = 1,000,000")
    ap.add_argument("--scan", action="store_true", help="also time the whole `collapse-audit scan` on the same files")
    ap.add_argument("--data", choices=("manifold", "isotropic", "collapsed"), default="manifold")
    ap.add_argument("--n-sub", type=int, default=2000)
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--tmp", default=None, help="directory for the feature files (default: system temp)")
    ap.add_argument("--timeout", type=float, default=6 * 3600)
    ap.add_argument("--child", choices=("write", "metrics"), help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)

    if a.child == "write":
        print(json.dumps(child_write(a.n, a.dim, a.dir, a.data)))
        return 0
    if a.child == "metrics":
        print(json.dumps(child_metrics(a.dir, a.n_sub), default=float))
        return 0

    sizes = [int(s) for s in a.sizes.split(",") if s]
    if a.slow and 1_000_000 not in sizes:
        sizes.append(1_000_000)
    mach = machine()
    print(f"machine: {mach['cpu']}, {mach['cores']} cores, "
          f"{(mach['ram_bytes'] or 0) / 2**30:.1f} GiB RAM; python {mach['python']}, numpy {mach['numpy']}")
    print(f"data: {a.data}, D = {a.dim}, float32, memory-mapped .npz; approximation check on {a.n_sub} + {a.n_sub} samples",
          flush=True)
    rows = []
    hdr = (f"{'N':>9} {'D':>4} {'method':>6} {'metrics s':>9} {'fid s':>6} {'kid s':>6} {'prdc s':>7} {'check s':>7} "
           f"{'peak RSS':>9} {'prec':>6} {'rec':>6} {'dens':>6} {'cov':>6} {'err<=':>7}")
    print(hdr)
    print("-" * len(hdr), flush=True)
    for n in sizes:
        with tempfile.TemporaryDirectory(dir=a.tmp, prefix=f"bench_scale_{n}_") as folder:
            w = _run_child(["--child", "write", "--n", str(n), "--dim", str(a.dim), "--dir", folder, "--data", a.data],
                           a.timeout)
            if "error" in w:
                print(f"{n:>9} write failed: {w['error']}", flush=True)
                continue
            r = _run_child(["--child", "metrics", "--dir", folder, "--n-sub", str(a.n_sub)], a.timeout)
            if a.scan:
                r["scan"] = run_scan(folder, a.timeout)
        r.update(n=n, dim=a.dim, data=a.data, **w)
        rows.append(r)
        if "error" in r:
            print(f"{n:>9} metrics failed: {r['error']}", flush=True)
            continue
        err = r.get("approximation", {}).get("max_abs_error") if r["method"] == "approx" else 0.0
        print(f"{n:>9} {a.dim:>4} {r['method']:>6} {r['metrics_s']:>9.1f} {r['fid_s']:>6.1f} {r['kid_s']:>6.1f} "
              f"{r['prdc_s']:>7.1f} {r['check_s']:>7.1f} {r['peak_rss_bytes'] / 2**30:>7.2f} G "
              f"{r['precision']:>6.3f} {r['recall']:>6.3f} {r['density']:>6.3f} {r['coverage']:>6.3f} {err:>7.4f}",
              flush=True)
    ok = [r for r in rows if "error" not in r]
    b = growth_exponent([r["n"] for r in ok], [r["metrics_s"] for r in ok])
    ba = growth_exponent([r["n"] for r in ok if r["method"] == "approx"], [r["metrics_s"] for r in ok if r["method"] == "approx"])
    print(f"growth exponent of metrics time vs N (all sizes): {b:.2f}" if b is not None else "growth exponent: n/a")
    if ba is not None:
        print(f"growth exponent over the approximate sizes only: {ba:.2f}")
    print("err<= : upper 95% confidence bound on |approx - exact| over the four PRDC metrics "
          "(metrics.approximation.max_abs_error); 0 for exact PRDC")
    if a.scan:
        print_scan_table(rows)
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": mach, "rows": rows, "growth_exponent": b,
                                            "growth_exponent_approx": ba}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
