"""Benchmark the metrics stage against the reference tools.

    .venv/bin/python benchmarks/bench_metrics.py [--sizes 5000,10000,20000,50000] [--dim 512] [--quick]

For each N (real and generated sets of N points each, D dims, float32, drawn
from a fixed seeded Gaussian mixture, the generated side with two of the
real modes dropped), every contender runs in its own subprocess so that wall
time and peak RSS (``VmHWM``, which includes the interpreter, imports and the
two feature arrays) belong to it alone:

* ours: ``collapse_audit.metrics`` FID (GaussianStats + frechet_distance),
  KID (100 subsets of 1000) and PRDC (k=5), one process;
* pytorch-fid 0.3.0: ``np.mean``/``np.cov`` + ``calculate_frechet_distance``;
* torch-fidelity 0.4.0: ``kid_features_to_metric`` (same seed and subsets);
* prdc 0.2: ``compute_prdc``.  It holds N x N matrices, so it is skipped
  ("cannot run") when its estimated peak exceeds 70% of available memory.

Prints the machine, one row per (N, metric) with times, peaks, the speed
ratio (reference time / our time) and the agreement of the values.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_machine.py, also when loaded by path

from _machine import cores, cpu_model  # noqa: E402

SEED = 1234
N_MODES = 20
K = 5
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


# --------------------------------------------------------------------------- data


def make_features(n: int, dim: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """A fixed Gaussian mixture: real from all N_MODES modes, generated from all but two (partial collapse)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (N_MODES, dim)).astype(np.float32)
    scales = rng.uniform(0.3, 0.6, N_MODES).astype(np.float32)

    def draw(n, modes, shift):
        lab = rng.choice(modes, n)
        x = rng.standard_normal((n, dim), dtype=np.float32)
        x *= scales[lab, None]
        x += centres[lab]
        x += shift
        return x

    real = draw(n, np.arange(N_MODES), 0.0)
    gen = draw(n, np.arange(2, N_MODES), 0.02)
    return real, gen


# --------------------------------------------------------------------------- children


def _vm(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _child(kind: str, data: str, out: str) -> None:
    import contextlib
    import io

    with np.load(data) as z:
        real, gen = z["real"], z["gen"]
    baseline = _vm("VmRSS")
    times: dict[str, float] = {}
    values: dict[str, float] = {}
    if kind == "ours":
        from collapse_audit.metrics import GaussianStats, frechet_distance, kid, prdc

        t = time.perf_counter()
        a, b = GaussianStats.from_features(real), GaussianStats.from_features(gen)
        values["fid"] = frechet_distance(a.mean, a.cov, b.mean, b.cov)
        times["fid"] = time.perf_counter() - t
        t = time.perf_counter()
        r = kid(real, gen, n_subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE, seed=SEED)
        times["kid"] = time.perf_counter() - t
        values["kid"] = r.mean
        t = time.perf_counter()
        p = prdc(real, gen, k=K)
        times["prdc"] = time.perf_counter() - t
        values.update(precision=p.precision, recall=p.recall, density=p.density, coverage=p.coverage)
    elif kind == "pytorch_fid":
        from pytorch_fid.fid_score import calculate_frechet_distance

        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            v = calculate_frechet_distance(
                np.mean(real, axis=0), np.cov(real, rowvar=False), np.mean(gen, axis=0), np.cov(gen, rowvar=False)
            )
        times["fid"] = time.perf_counter() - t
        values["fid"] = float(np.real(v))
    elif kind == "torch_fidelity":
        import torch
        from torch_fidelity.metric_kid import kid_features_to_metric

        torch.set_num_threads(os.cpu_count() or 1)
        t = time.perf_counter()
        o = kid_features_to_metric(
            torch.from_numpy(real),
            torch.from_numpy(gen),
            kid_subsets=KID_SUBSETS,
            kid_subset_size=min(KID_SUBSET_SIZE, len(real), len(gen)),
            rng_seed=SEED,
            verbose=False,
        )
        times["kid"] = time.perf_counter() - t
        values["kid"] = o["kernel_inception_distance_mean"]
    elif kind == "prdc":
        from prdc import compute_prdc

        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            o = compute_prdc(real_features=real, fake_features=gen, nearest_k=K)
        times["prdc"] = time.perf_counter() - t
        values.update({k: float(v) for k, v in o.items()})
    else:
        raise SystemExit(f"unknown child kind {kind}")
    Path(out).write_text(
        json.dumps({"times": times, "values": values, "peak_rss": _vm("VmHWM"), "baseline_rss": baseline})
    )


def run_child(kind: str, data: Path, timeout: float) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    try:
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, "--_child", kind, "--_data", str(data), "--_out", str(out)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            return {"error": f"exit {proc.returncode}: {tail[0][:120]}"}
        res = json.loads(out.read_text())
        res["wall"] = wall
        return res
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    finally:
        out.unlink(missing_ok=True)


# --------------------------------------------------------------------------- machine


def machine() -> dict:
    return {"cpu": cpu_model(), "cores": cores(), "ram": _meminfo("MemTotal"), "available": _meminfo("MemAvailable")}


def _meminfo(key: str) -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def prdc_reference_peak(n_real: int, n_gen: int, dim: int, itemsize: int = 4) -> int:
    """Estimated peak bytes of prdc.compute_prdc (0.2), from its code.

    Radii: a full self-distance matrix (``itemsize`` bytes per entry; float32
    in, float32 out) plus ``np.argpartition`` of it (int64), then the
    N x M real-fake matrix with a bool comparison matrix alive next to it;
    sklearn's float64 upcast tiles add ~10%.  Plus the inputs and a fixed
    512 MiB for the interpreter and sklearn/joblib.
    """
    n = max(n_real, n_gen)
    radii = n * n * (itemsize + 8)
    cross = n_real * n_gen * (itemsize + 2)
    overhead = 512 * 2**20  # interpreter, sklearn/joblib, thread-local upcast tiles
    return int(1.1 * max(radii, cross)) + (n_real + n_gen) * dim * itemsize + overhead


def gib(b: float) -> str:
    return f"{b / 2**30:.2f} GiB"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="5000,10000,20000,50000", help="comma-separated N per side")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--quick", action="store_true", help="smoke test: sizes 2000,5000")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per subprocess")
    ap.add_argument("--mem-fraction", type=float, default=0.7, help="skip prdc above this fraction of available RAM")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    ap.add_argument("--_data", help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        _child(args._child, args._data, args._out)
        return 0

    sizes = [2000, 5000] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]
    mach = machine()
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(
        f"machine: {mach['cpu']}, {mach['cores']} cores, {gib(mach['ram'])} RAM "
        f"({gib(mach['available'])} available); python {platform.python_version()}, numpy {np.__version__}"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_metrics_") as tmp:
        for n in sizes:
            data = Path(tmp) / f"feat_{n}.npz"
            real, gen = make_features(n, args.dim)
            np.savez(data, real=real, gen=gen)
            del real, gen
            console.print(f"N={n}, D={args.dim}: running ours ...", highlight=False)
            ours = run_child("ours", data, args.timeout)
            refs = {}
            for kind in ("pytorch_fid", "torch_fidelity"):
                console.print(f"N={n}: running {kind} ...", highlight=False)
                refs[kind] = run_child(kind, data, args.timeout)
            need = prdc_reference_peak(n, n, args.dim)
            budget = args.mem_fraction * _meminfo("MemAvailable")
            if need > budget:
                refs["prdc"] = {"error": f"cannot run (needs ~{gib(need)})", "estimate": need}
            else:
                console.print(f"N={n}: running prdc (estimated peak {gib(need)}) ...", highlight=False)
                refs["prdc"] = run_child("prdc", data, args.timeout)
                refs["prdc"]["estimate"] = need
            rows.append({"n": n, "dim": args.dim, "ours": ours, "refs": refs})
            data.unlink()

    table = Table(title=f"metrics stage vs references (float32, k={K}, KID {KID_SUBSETS}x{KID_SUBSET_SIZE})")
    for col in ("N", "D", "metric", "ours time", "ours peak", "reference", "ref time", "ref peak", "speed-up", "agreement"):
        table.add_column(col, justify="right" if col not in ("metric", "reference", "agreement") else "left")
    names = {"fid": "pytorch-fid", "kid": "torch-fidelity", "prdc": "prdc"}
    ref_kind = {"fid": "pytorch_fid", "kid": "torch_fidelity", "prdc": "prdc"}
    for row in rows:
        ours = row["ours"]
        for metric in ("fid", "kid", "prdc"):
            ref = row["refs"][ref_kind[metric]]
            o_ok = "error" not in ours
            r_ok = "error" not in ref
            o_t = ours["times"][metric] if o_ok else None
            r_t = ref["times"][metric] if r_ok else None
            agreement = ""
            if o_ok and r_ok:
                keys = ["precision", "recall", "density", "coverage"] if metric == "prdc" else [metric]
                if metric == "prdc":
                    dev = max(abs(ours["values"][k] - ref["values"][k]) for k in keys)
                    agreement = f"{'equal' if dev <= 1e-9 else 'DIFFER'} (max abs diff {dev:.1e})"
                else:
                    a, b = ours["values"][metric], ref["values"][metric]
                    agreement = f"rel diff {abs(a - b) / max(abs(b), 1e-300):.1e}"
            table.add_row(
                str(row["n"]),
                str(row["dim"]),
                metric.upper(),
                f"{o_t:.1f} s" if o_t is not None else ours.get("error", "-"),
                gib(ours["peak_rss"]) if o_ok else "-",
                names[metric],
                f"{r_t:.1f} s" if r_t is not None else ref.get("error", "-"),
                gib(ref["peak_rss"]) if r_ok else "-",
                f"{r_t / o_t:.2f}x" if (o_t and r_t) else "-",
                agreement,
            )
    console.print(table)
    console.print(
        "peak = VmHWM of the subprocess (interpreter, imports and both feature arrays included); "
        "speed-up = reference time / our time; prdc's peak estimated as 1.1 x N^2 x (4 B distances + 8 B argpartition) + inputs + 0.5 GiB."
    )
    for row in rows:
        o, p = row["ours"], row["refs"]["prdc"]
        if "values" in o:
            v = o["values"]
            console.print(
                f"N={row['n']}: ours FID={v['fid']:.4f} KID={v['kid']:.6f} precision={v['precision']:.4f} "
                f"recall={v['recall']:.4f} density={v['density']:.4f} coverage={v['coverage']:.4f}",
                highlight=False,
            )
        if "peak_rss" in p:
            console.print(
                f"N={row['n']}: prdc peak estimated {gib(p['estimate'])}, measured {gib(p['peak_rss'])} "
                f"({gib(p['peak_rss'] - p['baseline_rss'])} above its baseline)",
                highlight=False,
            )
    if args.json:
        args.json.write_text(json.dumps({"machine": mach, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
