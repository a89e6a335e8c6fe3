"""Embed a folder of images: discover -> hash -> cache look-up -> decode (workers) -> model -> cache.

Each file is decoded at most once per run, whatever the number of embedders:
a DataLoader worker decodes it and applies every embedder's preprocessing
that still needs it; the main process runs the models batch by batch on one
device and writes new features to the content-addressed cache as it goes, so
an interrupted run resumes where it stopped.

The result lists, in discovery order, the files that were embedded and those
that failed with their reason; one bad file never stops the run.

Failures are cached per cause (see :mod:`collapse_audit.cache`): a decode
failure under the decoder id, shared by all embedders; a preprocessing
failure under (decoder id, embedder id), so that a file one embedder's
preprocessing rejects is still embedded by another embedder. A file is
reported failed when any embedder of the run fails on it, with the reason of
the first such embedder in the run's order, as a run without the cache would.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from . import decode as D
from .cache import PREPROCESS_FAILURE_PREFIX, FeatureCache, preprocess_failure_key
from .device_decode import DeviceDecodeDataset, device_batches, keep_items
from .discover import discover
from .embedders import Embedder
from .errors import CollapseAuditWarning, InputError, UsageError
from .progress import ProgressReporter

DECODER_ID = "pillow-rgb-v2"  # v2: Netpbm decoded, extreme aspect ratios refused (v1 failures are retried)


@dataclass
class EmbedResult:
    """Features of one folder for one or more embedders.

    ``paths`` (relative to ``root``) and ``shas`` are aligned with the rows of
    every array in ``features`` (embedder id -> float32 N x D). ``failures``
    holds ``{"path", "reason"}`` for files that could not be used.
    """

    root: str
    paths: list[str]
    shas: list[str]
    features: dict[str, np.ndarray]
    failures: list[dict]
    embedders: list[Embedder]
    n_files: int
    stats: dict = field(default_factory=dict)


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'."""
    import torch

    device = (device or "auto").lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise InputError(f"unknown device '{device}': use auto, cpu or cuda[:N]")
    return device


class _DecodeDataset:
    """Map-style dataset: item -> (index, {embedder id: CHW tensor}, failure reason or None)."""

    def __init__(self, files: Sequence[str], indices: Sequence[int], needs: Sequence[tuple[str, ...]], preprocess: dict, max_pixels: int):
        self.files = list(files)
        self.indices = list(indices)
        self.needs = list(needs)
        self.preprocess = preprocess
        self.max_pixels = max_pixels

    def __len__(self):
        return len(self.files)

    def __getitem__(self, k):
        out, reason = decode_and_preprocess(self.files[k], self.needs[k], self.preprocess, self.max_pixels)
        return self.indices[k], out, reason


def decode_and_preprocess(path: str, needs: Sequence[str], preprocess: dict, max_pixels: int) -> tuple[dict, str | None]:
    """Decode one file once and apply each needed embedder's preprocessing.

    Returns ``({embedder id: CHW tensor}, None)`` or ``({}, reason)``; shared by
    the local engine's DataLoader workers and the Ray engine's decode tasks.
    """
    try:
        img = D.load_rgb(path, max_pixels=max_pixels)
    except D.DecodeFailure as e:
        return {}, e.reason
    out = {}
    for eid in needs:
        try:
            out[eid] = preprocess[eid](img)
        except Exception as e:  # a preprocessing bug must not lose the run
            return {}, f"{PREPROCESS_FAILURE_PREFIX}{eid}: {_one_line(e)}"
    return out, None


def _one_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__


def _collate(items):
    import torch

    idx_by_e: dict[str, list[int]] = {}
    tens_by_e: dict[str, list] = {}
    fails = []
    for idx, tensors, reason in items:
        if reason is not None:
            fails.append((idx, reason))
            continue
        for eid, t in tensors.items():
            idx_by_e.setdefault(eid, []).append(idx)
            tens_by_e.setdefault(eid, []).append(t)
    batches = {eid: (idx_by_e[eid], torch.stack(tens_by_e[eid])) for eid in tens_by_e}
    return batches, fails


def default_workers(device: str = "cuda") -> int:
    """Decoding worker processes by default: min(8, CPUs) for a GPU; on CPU a quarter of the cores (at least 1).

    On CPU the model is the bottleneck (Inception-v3 ~100 ms per image per core,
    decoding and resizing a 512 px JPEG ~7 ms), so the workers get few cores
    and the model keeps all of its threads (``make bench-embed`` measures it).
    """
    n = os.cpu_count() or 1
    if str(device).startswith("cuda"):
        return max(0, min(8, n))
    return max(1, min(8, n // 4))


def embed_files(
    root: str | os.PathLike,
    rel_paths: Sequence[str],
    embedders: Sequence[Embedder],
    *,
    device: str = "auto",
    batch_size: int = 64,
    workers: int | None = None,
    cache: FeatureCache | None = None,
    progress: ProgressReporter | None = None,
    amp: bool = False,
    max_pixels: int | None = None,
    rehash: bool | None = None,
    decode: str = "auto",
) -> EmbedResult:
    """Embed ``rel_paths`` under ``root`` with every embedder; see module docstring.

    ``rehash=True`` hashes every file again instead of trusting the cache's
    stat shortcut (``None``: the cache's setting, then ``$COLLAPSE_AUDIT_REHASH``).
    ``decode``: ``"pil"`` (decode and preprocess in the workers with Pillow),
    ``"device"`` (JPEGs decoded and resized on the model's device,
    :mod:`collapse_audit.device_decode`; needs every embedder to have a device
    preprocessing) or ``"auto"`` (``device`` on CUDA when it can, else ``pil``).
    """
    tag_precision(embedders, device, amp)
    on_device = use_device_decode(decode, resolve_device(device), embedders)

    def compute(files, todo_idx, todo_needs, max_pixels, stats):
        import torch

        dev = resolve_device(device)
        by_id = {e.id: e for e in embedders}
        pre = {e.id: e.preprocess_fn for e in embedders}
        sub = [files[i] for i in todo_idx]
        if on_device:
            ds = DeviceDecodeDataset(sub, todo_idx, todo_needs, pre, max_pixels, decode_and_preprocess)
            collate = keep_items
        else:
            ds = _DecodeDataset(sub, todo_idx, todo_needs, pre, max_pixels)
            collate = _collate
        nw = default_workers(dev) if workers is None else max(0, int(workers))
        nw = min(nw, max(0, len(ds) // max(1, batch_size // 4)))  # no pool for a handful of files
        loader = torch.utils.data.DataLoader(
            ds, batch_size=batch_size, shuffle=False, num_workers=nw, collate_fn=collate,
            pin_memory=dev.startswith("cuda") and not on_device, persistent_workers=False,
            prefetch_factor=4 if nw > 0 else None,
        )
        # On CPU the model keeps every thread: decoding and resizing cost a few ms per image against ~100 ms
        # of Inception per image per core, so the workers are mostly idle. (Before, the model gave the workers
        # their cores: on 2 cores with 2 workers it ran on one thread, at half of pytorch-fid's speed.)
        file_of = {i: files[i] for i in todo_idx} if on_device else None
        for item in loader:
            if on_device:  # the loader handed over bytes and Pillow-path tensors: decode and resize here
                batches, fails = device_batches(item, file_of, by_id, dev, max_pixels, decode_and_preprocess, stats)
            else:
                batches, fails = item
            out = {}
            for eid, (idxs, x) in batches.items():
                e = by_id[eid]
                if not e.loaded:
                    e.load(dev, amp=amp)
                out[eid] = (idxs, e.embed_batch(x))
            yield out, fails

    return embed_cached(root, rel_paths, embedders, compute, cache=cache, progress=progress, max_pixels=max_pixels,
                        rehash=rehash)


def _failure_key(reason: str, decoder_id: str, embedder_ids: Sequence[str]) -> str:
    """Cache key of a failure reason: the failing embedder's preprocessing key, else the decoder's."""
    if reason.startswith(PREPROCESS_FAILURE_PREFIX):
        rest = reason[len(PREPROCESS_FAILURE_PREFIX):]
        match = [eid for eid in embedder_ids if rest.startswith(f"{eid}:")]
        if match:
            return preprocess_failure_key(decoder_id, max(match, key=len))
    return decoder_id


def embed_cached(
    root: str | os.PathLike,
    rel_paths: Sequence[str],
    embedders: Sequence[Embedder],
    compute,
    *,
    cache: FeatureCache | None = None,
    progress: ProgressReporter | None = None,
    max_pixels: int | None = None,
    rehash: bool | None = None,
) -> EmbedResult:
    """The engine-independent part of embedding: hash, cache look-up, assembly, cache writes.

    ``compute(files, todo_idx, todo_needs, max_pixels, stats)`` is called only
    when some file misses the cache; it yields ``({embedder id: (indices,
    features B x D)}, [(index, failure reason)])`` in any order and may add
    engine figures to ``stats``. Features are written to the cache here, in
    the calling process, as they arrive. ``rehash``: see :func:`embed_files`.
    """
    t0 = time.perf_counter()
    progress = progress or ProgressReporter()
    root = str(root)
    max_pixels = max_pixels or D.DEFAULT_MAX_PIXELS
    files = [os.path.join(root, p) for p in rel_paths]
    own_cache = cache is None
    cache = cache or FeatureCache(":memory:")
    decoder_id = f"{DECODER_ID}:max{max_pixels}"
    engine_stats: dict = {}
    try:
        shas = cache.hash_files(files, workers=max(2, default_workers()), rehash=rehash)
        n = len(files)
        failures: dict[int, str] = {}
        for i, s in enumerate(shas):
            if s is None:
                failures[i] = "unreadable file (permission denied or vanished)"
        # Decode failures are shared by every embedder; older versions also stored
        # preprocessing failures under the decoder id: those are not decode failures.
        known_fail = cache.get_failures(decoder_id, shas)
        for i, s in enumerate(shas):
            if s in known_fail and i not in failures and not known_fail[s].startswith(PREPROCESS_FAILURE_PREFIX):
                failures[i] = known_fail[s]
        live = [s for i, s in enumerate(shas) if i not in failures]
        known_pre = {e.id: cache.get_failures(preprocess_failure_key(decoder_id, e.id), live) for e in embedders}

        feats = {e.id: np.zeros((n, e.dim), dtype=np.float32) if e.dim else None for e in embedders}
        have = {e.id: np.zeros(n, dtype=bool) for e in embedders}
        for e in embedders:
            hits = cache.get_features(e.id, live, dim=e.dim or None)
            if hits and feats[e.id] is None:
                feats[e.id] = np.zeros((n, len(next(iter(hits.values())))), dtype=np.float32)
            for i, s in enumerate(shas):
                if i not in failures and s in hits:
                    feats[e.id][i] = hits[s]
                    have[e.id][i] = True

        # Per file, in embedder order: cached features are skipped; the first cached
        # preprocessing failure ends the walk (the file fails with that reason unless an
        # embedder before it, still to be computed, fails first, as without the cache).
        todo_idx, todo_needs = [], []
        pending: dict[int, str] = {}
        for i in range(n):
            if i in failures:
                continue
            need = []
            for e in embedders:
                if have[e.id][i]:
                    continue
                reason = known_pre[e.id].get(shas[i])
                if reason is not None:
                    pending[i] = reason
                    break
                need.append(e.id)
            if need:
                todo_idx.append(i)
                todo_needs.append(tuple(need))
            elif i in pending:
                failures[i] = pending.pop(i)
        todo_set = set(todo_idx)
        by_id = {e.id: e for e in embedders}
        ids = list(by_id)
        new_fail: dict[str, list[tuple[str, str]]] = {}
        if todo_idx:
            with progress.task("embedding", total=len(todo_idx)) as advance:
                for batches, fails in compute(files, todo_idx, todo_needs, max_pixels, engine_stats):
                    for idx, reason in fails:
                        failures[idx] = reason
                        new_fail.setdefault(_failure_key(reason, decoder_id, ids), []).append((shas[idx], reason))
                    done = len(fails)
                    for eid, (idxs, y) in batches.items():
                        e = by_id[eid]
                        if feats[eid] is None or feats[eid].shape[1] != y.shape[1]:
                            feats[eid] = np.zeros((n, y.shape[1]), dtype=np.float32)
                            e.dim = int(y.shape[1])
                        feats[eid][idxs] = y
                        have[eid][idxs] = True
                        cache.put_features(eid, [shas[i] for i in idxs], y)
                    done += len({i for idxs, _ in batches.values() for i in idxs})
                    advance(done)
            for key, items in new_fail.items():
                cache.put_failures(key, items)
        for i, reason in pending.items():
            failures.setdefault(i, reason)

        ok = [i for i in range(n) if i not in failures]
        result_feats = {}
        for e in embedders:
            arr = feats[e.id]
            if arr is None:
                arr = np.zeros((n, e.dim), dtype=np.float32)
            result_feats[e.id] = np.ascontiguousarray(arr[ok])
        return EmbedResult(
            root=root,
            paths=[rel_paths[i] for i in ok],
            shas=[shas[i] for i in ok],
            features=result_feats,
            failures=[{"path": rel_paths[i], "reason": failures[i]} for i in sorted(failures)],
            embedders=list(embedders),
            n_files=n,
            stats={
                "n_files": n,
                "n_embedded": len(ok),
                "n_failed": len(failures),
                "n_from_cache": sum(1 for i in ok if i not in todo_set),
                "n_computed": sum(1 for i in ok if i in todo_set),
                "model_calls": {e.id: e.model_calls for e in embedders},
                "seconds": round(time.perf_counter() - t0, 3),
                **engine_stats,
            },
        )
    finally:
        if own_cache:
            cache.close()


DECODE_MODES = ("auto", "pil", "device")


def use_device_decode(decode: str, device: str, embedders: Sequence[Embedder]) -> bool:
    """Whether :func:`embed_files` decodes on the device (see its ``decode``); refuses an impossible ``device``."""
    mode = (decode or "auto").strip().lower()
    if mode not in DECODE_MODES:
        raise UsageError(f"--decode {decode}: use auto, pil or device")
    able = all(e.device_preprocess() is not None for e in embedders)
    if mode == "device" and not able:
        names = ", ".join(e.name for e in embedders if e.device_preprocess() is None)
        raise UsageError(f"--decode device: {names} has no device preprocessing (only Inception has); use --decode pil or auto")
    return mode == "device" or (mode == "auto" and able and device.startswith("cuda"))


def tag_precision(embedders: Sequence[Embedder], device: str, amp: bool) -> None:
    """Put ``--amp``'s arithmetic on this device into every embedder's id (before any cache lookup)."""
    dev = resolve_device(device)
    for e in embedders:
        e.set_precision(bool(amp), dev)


def embed_folder(root: str | os.PathLike, embedders: Sequence[Embedder], *, engine=None,
                 rehash: bool | None = None, **kw) -> EmbedResult:
    """Discover the images under ``root`` (recursively) and embed them.

    ``engine`` is a callable with :func:`embed_files`' signature (default: the
    local engine; :func:`collapse_audit.engine_ray.select_engine` gives Ray's).
    ``rehash=True`` hashes every file again instead of trusting the cache's
    stat shortcut (any engine; ``None``: the cache's setting, then
    ``$COLLAPSE_AUDIT_REHASH``).
    """
    tag_precision(embedders, kw.get("device", "auto"), kw.get("amp", False))
    found = discover(root)
    rel = found.files
    if not rel:
        raise InputError(found.empty_message(root))
    if found.skipped_folders:
        import warnings

        warnings.warn(f"{root}: {len(found.skipped_folders)} sub-folder(s) could not be opened and were skipped "
                      f"(first: {found.skipped_folders[0]})", CollapseAuditWarning, stacklevel=2)
    fn = engine or embed_files
    if rehash is None:
        return found.merge_into(fn(root, rel, embedders, **kw))
    if fn is embed_files:
        return found.merge_into(fn(root, rel, embedders, rehash=rehash, **kw))
    cache = kw.get("cache")
    if cache is None:  # no persistent cache: every file is hashed anyway
        return found.merge_into(fn(root, rel, embedders, **kw))
    saved, cache.rehash = cache.rehash, rehash  # engines without the keyword hash through this cache
    try:
        return found.merge_into(fn(root, rel, embedders, **kw))
    finally:
        cache.rehash = saved
