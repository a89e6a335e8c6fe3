"""``--engine ray``: embed on a Ray cluster with Ray Data (batch inference).

Same contract and same answers as the local engine
(:func:`collapse_audit.embedding.embed_files`): the driver hashes the files, looks
them up in the content-addressed cache and assembles the result in the local
engine's order through the shared :func:`collapse_audit.embedding.embed_cached`;
only cache misses go to Ray, and the features that come back are written to
the cache in the driver as they arrive (an interrupted run resumes).

The Ray Data pipeline, for the files that miss the cache::

    ray.data.from_items([{index, path, mask}, ...])          # index: position in rel_paths
      .map_batches(decode_batch)                             # CPU tasks: decode once + each embedder's preprocessing
      .map_batches(EmbedActor, compute=ActorPoolStrategy(size=workers),
                   num_gpus=1 when the cluster has GPUs)      # one model load per actor
      -> one small row per embedded batch: {shard, payload, n}

A file that fails to decode travels as a row with its reason (the same
reason the local engine records) and never fails the job. The actors never
reserve every CPU of the cluster (each asks for ``min(1, (CPUs - 1) /
workers)``), so at least one CPU stays free for the decode tasks; when the
decode tasks and the actors ask for identical resources (1 CPU each, no GPU)
Ray Data fuses the two steps and each actor decodes its own batches.

Shard layout. Each embedded batch becomes one ``.npz`` shard. With
``shard_dir`` (put it on storage the driver and all workers share) the actor
writes ``{shard_dir}/shard-{first:09d}.npz``, ``first`` being the smallest
input position in the batch (unique, stable across retries; written to a
temporary name and renamed); without it the same bytes travel back through
the object store. A shard holds (``allow_pickle=False``):

- ``index``: int64 (B,), positions in the input list of every row in the batch
- ``rows_<k>``: int64 (m_k,), the positions embedded by embedder number ``k``
  (its place in the ``embedders`` list), aligned with
- ``features_<k>``: float32 (m_k, D_k)
- ``failures``: JSON str, ``[{"index": int, "reason": str}, ...]``
- ``embedder_ids``: JSON str, the embedder ids in ``k`` order
- ``info``: JSON str, ``{"model_calls": [per k], "weights_sha256": [per k],
  "device": str, "pid": int}``

The driver reads the shards in whatever order Ray returns them and places
rows by ``index``, so the result does not depend on scheduling.
"""
from __future__ import annotations

import copy
import io
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import embedding as _embedding  # select_engine returns embedding.embed_files as it is at call time
from . import weights as W
from .cache import FeatureCache
from .embedding import EmbedResult, decode_and_preprocess, embed_cached, resolve_device
from .embedders import Embedder
from .errors import InputError, UsageError
from .progress import ProgressReporter

RAY_MISSING = "--engine ray needs Ray: pip install 'collapse-audit[ray]'"
SHARD_PATTERN = "shard-{first:09d}.npz"


def import_ray():
    """Import ``ray`` and ``ray.data``; a :class:`UsageError` (exit 2, one line) when they are missing."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise UsageError(RAY_MISSING) from None
    return ray


# --------------------------------------------------------------------------- worker side
def _pack(t) -> bytes:
    buf = io.BytesIO()
    np.save(buf, t.numpy() if hasattr(t, "numpy") else np.asarray(t), allow_pickle=False)
    return buf.getvalue()


def _unpack(b: bytes) -> np.ndarray:
    return np.load(io.BytesIO(b), allow_pickle=False)


def decode_batch(batch: dict, *, ids: Sequence[str], preprocess: Sequence, max_pixels: int) -> dict:
    """Ray Data task: decode each file once and apply the preprocessing of every embedder it needs.

    ``batch`` has ``index`` (int64), ``path`` (absolute) and ``mask`` (bit k set:
    embedder k needs this file). Returns ``index``, ``reason`` ("" when the
    file decoded) and one binary column ``x<k>`` per embedder (the ``.npy``
    bytes of the CHW float tensor, empty when not needed or failed). Uses the
    local engine's :func:`collapse_audit.embedding.decode_and_preprocess`, so the
    tensors and failure reasons are the same.
    """
    pre = dict(zip(ids, preprocess))
    out: dict[str, list] = {"index": [], "reason": [], **{f"x{k}": [] for k in range(len(ids))}}
    for i, path, mask in zip(batch["index"], batch["path"], batch["mask"]):
        needs = [ids[k] for k in range(len(ids)) if (int(mask) >> k) & 1]
        tensors, reason = decode_and_preprocess(str(path), needs, pre, max_pixels)
        out["index"].append(int(i))
        out["reason"].append(reason or "")
        for k, eid in enumerate(ids):
            out[f"x{k}"].append(_pack(tensors[eid]) if eid in tensors else b"")
    res = {"index": np.asarray(out["index"], dtype=np.int64), "reason": np.asarray(out["reason"], dtype=object)}
    for k in range(len(ids)):
        col = np.empty(len(out[f"x{k}"]), dtype=object)
        col[:] = out[f"x{k}"]
        res[f"x{k}"] = col
    return res


class EmbedActor:
    """Ray Data actor: holds the embedders (each loaded once, on first use) and turns a decoded batch into a shard."""

    def __init__(self, embedders: Sequence[Embedder], device: str, amp: bool, shard_dir: str | None,
                 preload: Sequence[bool] = ()):
        self.embedders = list(embedders)
        self.device = resolve_device(device)
        self.amp = amp
        self.shard_dir = shard_dir
        for e, needed in zip(self.embedders, preload):
            if needed:  # load while the pool starts, so batches go to actors that are ready
                e.load(self.device, amp=self.amp)

    def __call__(self, batch: dict) -> dict:
        import torch

        index = np.asarray(batch["index"], dtype=np.int64)
        reasons = [str(r) for r in batch["reason"]]
        arrays: dict[str, np.ndarray] = {"index": index}
        calls = []
        for k, e in enumerate(self.embedders):
            col = batch[f"x{k}"]
            rows = [j for j in range(len(index)) if not reasons[j] and col[j] is not None and len(col[j])]
            before = e.model_calls
            if rows:
                x = torch.from_numpy(np.stack([_unpack(col[j]) for j in rows]))
                if not e.loaded:
                    e.load(self.device, amp=self.amp)
                y = e.embed_batch(x)
            else:
                y = np.zeros((0, int(e.dim or 0)), dtype=np.float32)
            arrays[f"rows_{k}"] = index[rows]
            arrays[f"features_{k}"] = np.ascontiguousarray(y, dtype=np.float32)
            calls.append(e.model_calls - before)
        fails = [{"index": int(i), "reason": r} for i, r in zip(index, reasons) if r]
        arrays["failures"] = np.array(json.dumps(fails))
        arrays["embedder_ids"] = np.array(json.dumps([e.id for e in self.embedders]))
        arrays["info"] = np.array(json.dumps({
            "model_calls": calls,
            "weights_sha256": [e.weights_sha256 for e in self.embedders],
            "device": self.device,
            "pid": os.getpid(),
        }))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
        if self.shard_dir:
            path = Path(self.shard_dir) / SHARD_PATTERN.format(first=int(index.min()))
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            return {"shard": np.array([str(path)], dtype=object), "payload": _obj([b""]), "n": np.array([len(index)])}
        return {"shard": np.array([""], dtype=object), "payload": _obj([data]), "n": np.array([len(index)])}


def _obj(items: list) -> np.ndarray:
    a = np.empty(len(items), dtype=object)
    a[:] = items
    return a


# --------------------------------------------------------------------------- driver side
def _portable(e: Embedder) -> Embedder:
    """An unloaded copy of ``e`` that pickles: no model, no progress hook, cache dir resolved."""
    c = copy.copy(e)
    c._model = None
    c.model_calls = 0
    if hasattr(c, "progress"):
        c.progress = None
    if getattr(c, "cache", None) is None and hasattr(c, "cache"):
        c.cache = str(W.cache_dir(None))
    return c


def connect(ray, ray_address: str | None = None, num_cpus: int | None = None) -> bool:
    """Start or join Ray; returns True when this call started (and so must shut down) the instance.

    ``None``: join the instance named by ``RAY_ADDRESS`` / the latest ``ray start`` on
    this machine, else start a local one (``num_cpus`` caps it); ``auto``: join the
    cluster started with ``ray start --head`` (error if none); anything else: that address.
    """
    if ray.is_initialized():
        return False
    kw = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True, "logging_level": logging.ERROR}
    try:
        if ray_address:
            ray.init(address=ray_address, **kw)
        else:
            try:
                ray.init(num_cpus=num_cpus, **kw)
            except ValueError as e:  # an existing cluster was found: it refuses num_cpus
                if "existing cluster" not in str(e):
                    raise
                ray.init(**kw)
    except ConnectionError as e:
        raise InputError(f"--ray-address {ray_address}: cannot connect to a Ray cluster ({str(e).splitlines()[0]}); start one with 'ray start --head'") from None
    return True


def embed_files_ray(
    root: str | os.PathLike,
    rel_paths: Sequence[str],
    embedders: Sequence[Embedder],
    *,
    ray_address: str | None = None,
    workers: int | None = None,
    batch_size: int = 64,
    cache: FeatureCache | None = None,
    device: str = "auto",
    progress: ProgressReporter | None = None,
    shard_dir: str | os.PathLike | None = None,
    amp: bool = False,
    max_pixels: int | None = None,
    num_cpus: int | None = None,
    decode: str = "auto",  # Ray's workers always decode with Pillow (the device path is the local engine's)
) -> EmbedResult:
    """Embed ``rel_paths`` under ``root`` on Ray; same result as :func:`collapse_audit.embedding.embed_files`.

    Ray Data batch inference (see the module docstring for the pipeline and
    the shard layout). ``workers``: size of the embedder actor pool (default:
    one per GPU of the cluster, else one per CPU); ``device``: ``auto`` (GPU
    actors when the cluster has GPUs), ``cpu`` or ``cuda``; ``num_cpus``: CPUs
    of a Ray instance started here (ignored when joining a cluster). Ray is
    started only when some file misses the cache, and shut down afterwards
    if this call started it. Raises :class:`UsageError` when Ray is not installed.
    """
    ray = import_ray()
    embedders = list(embedders)
    ids = [e.id for e in embedders]

    def compute(files, todo_idx, todo_needs, max_pixels, stats):
        t0 = time.perf_counter()
        started = connect(ray, ray_address, num_cpus)
        data_log = logging.getLogger("ray.data")
        level = data_log.level
        data_log.setLevel(logging.ERROR)
        ctx = bars = None
        try:
            res = ray.cluster_resources()
            n_gpu, n_cpu = int(res.get("GPU", 0)), max(1, int(res.get("CPU", 1)))
            dev = (device or "auto").lower()
            if dev.startswith("cuda") and n_gpu == 0:
                raise InputError("--device cuda was asked for but the Ray cluster has no GPUs; use --device cpu or auto")
            if dev not in ("auto", "cpu") and not dev.startswith("cuda"):
                raise InputError(f"unknown device '{device}': use auto, cpu or cuda[:N]")
            use_gpu = n_gpu > 0 and dev != "cpu"
            cap = n_gpu if use_gpu else n_cpu
            size = max(1, min(int(workers) if workers else cap, cap))
            ctx = ray.data.DataContext.get_current()
            bars = ctx.enable_progress_bars
            ctx.enable_progress_bars = False  # our own progress reporter counts the shards
            sdir = None
            if shard_dir is not None:
                sdir = str(Path(shard_dir).resolve())
                Path(sdir).mkdir(parents=True, exist_ok=True)
            items = [
                {"index": int(i), "path": os.path.abspath(files[i]),
                 "mask": sum(1 << ids.index(eid) for eid in need)}
                for i, need in zip(todo_idx, todo_needs)
            ]
            # at least one block per actor (a small folder still keeps every actor busy), at most batch_size files each
            n_blocks = max(1, min(max(math.ceil(len(items) / max(1, batch_size)), min(size, len(items))), 10_000))
            block_batch = max(1, min(int(batch_size), math.ceil(len(items) / n_blocks)))
            size = min(size, n_blocks)  # no idle actors for a handful of files
            ds = ray.data.from_items(items, override_num_blocks=n_blocks)
            ds = ds.map_batches(
                decode_batch, batch_size=block_batch, batch_format="numpy", num_cpus=1 if n_cpu > 1 else 0.5,
                fn_kwargs={"ids": ids, "preprocess": [e.preprocess_fn for e in embedders], "max_pixels": max_pixels},
            )
            # Actors never take every CPU: at least one stays free for the decode tasks
            # (CPU actors that asked for all of them would starve the decode step).
            actor_cpus = min(1.0, (n_cpu - 1) / size) if n_cpu > 1 else 0.5
            actor_kw = {"num_cpus": actor_cpus, **({"num_gpus": 1} if use_gpu else {})}
            needed = {eid for need in todo_needs for eid in need}
            ds = ds.map_batches(
                EmbedActor, batch_size=block_batch, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=2),
                fn_constructor_kwargs={"embedders": [_portable(e) for e in embedders],
                                       "device": "cuda" if use_gpu else "cpu", "amp": amp, "shard_dir": sdir,
                                       "preload": [e.id in needed for e in embedders]},
                **actor_kw,
            )
            n_shards = 0
            pids = set()
            for row in ds.iter_rows():
                n_shards += 1
                src = row["shard"] or io.BytesIO(row["payload"])
                with np.load(src, allow_pickle=False) as z:
                    info = json.loads(str(z["info"]))
                    pids.add(info["pid"])
                    out = {}
                    for k, e in enumerate(embedders):
                        e.model_calls += int(info["model_calls"][k])
                        sha = info["weights_sha256"][k]
                        if sha and not e.weights_sha256:
                            e.weights_sha256 = sha
                        rows = z[f"rows_{k}"]
                        if len(rows):
                            out[e.id] = (rows.tolist(), z[f"features_{k}"])
                    fails = [(int(f["index"]), f["reason"]) for f in json.loads(str(z["failures"]))]
                yield out, fails
            stats["engine"] = "ray"
            stats["ray"] = {
                "address": ray_address or ("local" if started else "joined"),
                "workers": size,
                "gpus_per_worker": 1 if use_gpu else 0,
                "cpus_per_worker": actor_cpus,
                "cluster_cpus": n_cpu,
                "cluster_gpus": n_gpu,
                "n_shards": n_shards,
                "actors_used": len(pids),
                "shard_dir": sdir,
                "seconds": round(time.perf_counter() - t0, 3),
            }
        finally:
            data_log.setLevel(level)
            if ctx is not None:
                ctx.enable_progress_bars = bars
            if started:
                ray.shutdown()

    result = embed_cached(root, rel_paths, embedders, compute, cache=cache, progress=progress, max_pixels=max_pixels)
    result.stats.setdefault("engine", "ray")
    return result


ENGINES = ("local", "ray")


def select_engine(engine: str = "local", *, ray_address: str | None = None, shard_dir: str | os.PathLike | None = None,
                  num_cpus: int | None = None):
    """The embedding function for ``--engine``: a callable with :func:`collapse_audit.embedding.embed_files`'s signature.

    ``local`` -> ``embed_files``; ``ray`` -> :func:`embed_files_ray` bound to
    ``ray_address``/``shard_dir``/``num_cpus``, checking at once that Ray is
    installed (:class:`UsageError`, exit 2, before any work). Anything else is a
    :class:`UsageError`.
    """
    from functools import partial

    name = (engine or "local").strip().lower()
    if name == "local":
        return _embedding.embed_files
    if name == "ray":
        import_ray()
        return partial(embed_files_ray, ray_address=ray_address, shard_dir=shard_dir, num_cpus=num_cpus)
    raise UsageError(f"unknown --engine '{engine}': use {' or '.join(ENGINES)}")
