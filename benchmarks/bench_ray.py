"""Embedding throughput: the local engine vs the Ray engine with 1 and 2 workers, same folder, same run.

    .venv/bin/python benchmarks/bench_ray.py [--images 200] [--size 64x48]

Random-weight Inception on CPU (no weights download), no feature cache, so
every engine decodes and embeds every image. Ray's start-up time is reported
separately and not counted in its throughput.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.1f} GiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--size", default="64x48")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    import ray
    from rich.console import Console
    from rich.table import Table

    from collapse_audit.discover import discover_images
    from collapse_audit.embedding import embed_files
    from collapse_audit.engine_ray import embed_files_ray
    from collapse_audit.pipeline import build_embedders
    from conftest import write_images

    w, h = (int(v) for v in args.size.split("x"))
    folder = Path(tempfile.mkdtemp()) / "imgs"
    write_images(folder, args.images, size=(w, h), seed=0)
    rel = discover_images(folder)
    rows = []

    def run(name, fn):
        embs = build_embedders(["inception"], ["random"])
        t = time.perf_counter()
        r = fn(embs)
        dt = time.perf_counter() - t
        rows.append((name, len(r.paths), dt))
        return r

    local = run("local (2 DataLoader workers)", lambda e: embed_files(folder, rel, e, device="cpu", batch_size=args.batch_size, workers=2))
    t = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t
    diffs = []
    for nw in (1, 2):
        r = run(f"ray ({nw} worker{'s' if nw > 1 else ''})", lambda e: embed_files_ray(folder, rel, e, device="cpu", batch_size=args.batch_size, workers=nw))
        k = next(iter(r.features))
        diffs.append(float(np.abs(r.features[k] - local.features[k]).max()))
    ray.shutdown()
    base = rows[0][2]
    t = Table(title=f"Embedding throughput - {machine()} - {args.images} images {args.size}, random Inception, CPU; ray start-up {ray_start:.1f}s (not counted)")
    for c in ("engine", "images", "seconds", "images/s", "vs local", "max |diff| vs local"):
        t.add_column(c, justify="right" if c != "engine" else "left")
    for i, (name, n, dt) in enumerate(rows):
        t.add_row(name, str(n), f"{dt:.1f}", f"{n / dt:.2f}", f"{base / dt:.2f}x", "-" if i == 0 else f"{diffs[i - 1]:.1e}")
    Console(width=160).print(t)


if __name__ == "__main__":
    main()
