"""Glue between the command line and the stages: build embedders, open the cache, run, save.

These functions take plain values (paths, names, flags) and return results;
they do not print and do not exit, so Python users can call them directly.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from . import weights as W
from .cache import FeatureCache, open_feature_cache
from .embedders import (
    DEFAULT_CLIP,
    Embedder,
    WeightsChoice,
    make_clip,
    make_embedder,
    parse_embedder_name,
    parse_weights_options,
)
from .embedding import EmbedResult, embed_folder
from .engine_ray import select_engine
from .errors import InputError, UsageError, WeightsError
from .features import FeatureSet, save_features
from .metrics import GaussianStats
from .outputs import check_output_file
from .progress import default_reporter
from .stats_file import write_stats_file


def open_cache(cache_dir=None, use_cache: bool = True, *, rehash: bool | None = None) -> FeatureCache | None:
    """The feature cache under ``cache_dir``, or ``None`` with ``use_cache=False`` or when it cannot be used.

    A location that cannot be used (a file, a read-only or uncreatable folder)
    is reported by one :class:`~collapse_audit.errors.CollapseAuditWarning`
    and the run goes on without the cache; a corrupt database is moved aside
    and replaced (see :mod:`collapse_audit.cache`). ``rehash=True`` makes the
    cache hash every file again (``None``: ``$COLLAPSE_AUDIT_REHASH``).
    """
    if not use_cache:
        return None
    return open_feature_cache(W.cache_dir(cache_dir) / "features.sqlite", rehash=rehash)


def _download_progress(reporter):
    """Adapter from byte counts to a progress task (created lazily)."""
    state = {}

    def hook(done: int, total: int | None):
        # The plain reporter ignores this; rich shows a bar per download.
        if "adv" not in state:
            state["cm"] = reporter.task("downloading weights", total=total, unit="B")
            state["adv"] = state["cm"].__enter__()
            state["last"] = 0
        state["adv"](done - state["last"])
        state["last"] = done
        if total is not None and done >= total:
            state["cm"].__exit__(None, None, None)

    return hook


def build_embedders(
    names: Sequence[str],
    weights: Sequence[str] | None = None,
    *,
    seed: int = 0,
    cache_dir=None,
    offline: bool = False,
    progress: bool | None = None,
) -> list[Embedder]:
    """Embedders (not loaded yet) for the command-line names and ``--weights`` values."""
    choices = parse_weights_options(weights, seed=seed)
    reporter = default_reporter(progress)
    embs = [
        make_embedder(n, choices, cache=cache_dir, allow_download=not offline, progress=_download_progress(reporter))
        for n in names
    ]
    ids = [e.id for e in embs]
    if len(set(ids)) != len(ids):
        raise UsageError(f"the same embedder was given twice: {', '.join(ids)}")
    return embs


def embed_to_file(
    folder,
    output,
    *,
    embedder: str = "inception",
    weights: Sequence[str] | None = None,
    seed: int = 0,
    device: str = "auto",
    batch_size: int = 64,
    workers: int | None = None,
    amp: bool = False,
    decode: str = "auto",
    cache_dir=None,
    use_cache: bool = True,
    offline: bool = False,
    progress: bool | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    shard_dir: str | None = None,
    stats_out=None,
    rehash: bool | None = None,
) -> tuple[EmbedResult, Path]:
    """``collapse-audit embed``: embed ``folder`` with one embedder and write an ``.npz``
    (and, with ``stats_out``, a reusable FID statistics file: mean, covariance, count, embedder id)."""
    folder = Path(folder)
    output = Path(output)
    if output.suffix != ".npz" and not output.is_dir():
        output = output.with_name(output.name + ".npz")
    check_output_file(output, what="the embeddings file", option="-o")
    if stats_out:
        check_output_file(stats_out, what="the statistics file", option="--stats-out")
    engine_fn = select_engine(engine, ray_address=ray_address, shard_dir=shard_dir)
    embs = build_embedders([embedder], weights, seed=seed, cache_dir=cache_dir, offline=offline, progress=progress)
    cache = open_cache(cache_dir, use_cache, rehash=rehash)
    try:
        res = embed_folder(
            folder, embs, engine=engine_fn, device=device, batch_size=batch_size, workers=workers, cache=cache,
            progress=default_reporter(progress), amp=amp, decode=decode,
        )
    finally:
        if cache is not None:
            cache.close()
    e = embs[0]
    if not res.paths:
        raise InputError(f"{folder}: none of the {res.n_files} image files could be read (first: {res.failures[0]['path']}: {res.failures[0]['reason']})")
    path = save_features(
        output,
        FeatureSet(
            features=res.features[e.id],
            paths=res.paths,
            embedder_id=e.id,
            preprocess_id=e.preprocess_id,
            weights_sha256=e.weights_sha256,
            random_weights=e.random_weights,
            shas=res.shas,
            failures=res.failures,
            embedder=e.describe(),
            root=str(folder),
            n_files=res.n_files,
        ),
    )
    if stats_out:
        write_stats_file(stats_out, GaussianStats.from_features(res.features[e.id]), e.id,
                         meta={"embedder": e.describe(), "root": str(folder), "n_files": res.n_files,
                               "n_failed": len(res.failures)})
    return res, path


# --------------------------------------------------------------------------- weights commands
def fetch_weights(name: str, cache_dir=None) -> Path:
    family, variant = parse_embedder_name(name)
    if family == "inception":
        reporter = default_reporter()
        path, _ = W.fetch("inception", cache_dir, progress=_download_progress(reporter))
        return path
    if family == "clip":
        e = make_embedder(name, None, cache=cache_dir)
        e._build()  # open_clip downloads into <cache>/open_clip and verifies
        return W.cache_dir(cache_dir) / "open_clip"
    raise UsageError(f"unknown model '{name}': use inception or clip:ARCH/PRETRAINED")


def import_weights(name: str, file, cache_dir=None) -> tuple[Path, str]:
    family, variant = parse_embedder_name(name)
    if family == "inception":
        return W.import_file("inception", file, cache_dir)
    if family == "clip":
        import shutil

        e = make_embedder(name, None, cache=cache_dir)
        src = Path(file)
        if not src.is_file():
            raise WeightsError(f"{src}: no such file")
        # Validate by loading it into the architecture before accepting it.
        probe = make_clip(variant, WeightsChoice("file", str(src)), cache_dir)
        probe._build()
        dest_dir = W.weights_dir(cache_dir) / "clip" / e.arch / e.pretrained
        dest_dir.mkdir(parents=True, exist_ok=True)
        for old in dest_dir.iterdir():
            old.unlink()
        dest = dest_dir / src.name
        shutil.copyfile(src, dest)
        return dest, probe.weights_sha256
    raise UsageError(f"unknown model '{name}': use inception or clip:ARCH/PRETRAINED")


def weights_path(name: str, cache_dir=None) -> Path:
    family, variant = parse_embedder_name(name)
    if family == "inception":
        return W.expected_path("inception", cache_dir)
    if family == "clip":
        arch, _, tag = (variant or DEFAULT_CLIP).partition("/")
        return W.weights_dir(cache_dir) / "clip" / arch / (tag or "openai")
    raise UsageError(f"unknown model '{name}': use inception or clip:ARCH/PRETRAINED")


# --------------------------------------------------------------------------- scan
def resource_usage() -> dict:
    """Peak resident memory of this process so far (``ru_maxrss``; memory-mapped pages it touched count) and CPUs."""
    out = {"peak_rss_bytes": None, "cpu_count": os.cpu_count()}
    try:
        import resource
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["peak_rss_bytes"] = int(rss if sys.platform == "darwin" else rss * 1024)  # bytes on macOS, KiB on Linux
    except (ImportError, OSError):  # pragma: no cover - Windows
        pass
    return out
