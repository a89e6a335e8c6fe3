"""The embeddings file (``.npz``) written by ``collapse-audit embed`` and read by ``scan``.

Arrays (all loadable with ``allow_pickle=False``):

- ``features``: float32, N x D
- ``paths``: str, N (relative to the embedded folder)
- ``shas``: str, N (SHA-256 of each file's bytes; optional)
- ``labels``: str, N (optional)
- ``embedder_id``, ``preprocess_id``, ``weights_sha256``: str scalars
- ``random_weights``: bool scalar
- ``meta``: JSON str scalar: format version, embedder description, root, failures

A user-made file needs only ``features`` (and optionally ``paths``/``labels``);
its embedder is then unknown and a scan says so.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError

FORMAT = "collapse-audit-features/1"
UNKNOWN_EMBEDDER = "unknown"


@dataclass
class FeatureSet:
    """Features of one side plus where they came from."""

    features: np.ndarray
    paths: list[str]
    embedder_id: str = UNKNOWN_EMBEDDER
    preprocess_id: str = ""
    weights_sha256: str | None = None
    random_weights: bool = False
    labels: list[str] | None = None
    shas: list[str] | None = None
    failures: list[dict] = field(default_factory=list)
    embedder: dict = field(default_factory=dict)
    root: str | None = None
    n_files: int | None = None


def save_features(path: str | os.PathLike, fs: FeatureSet) -> Path:
    """Write a :class:`FeatureSet` to ``path`` (``.npz`` appended if missing)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "embedder": fs.embedder,
        "root": fs.root,
        "failures": fs.failures,
        "n_files": fs.n_files,
    }
    arrays = {
        "features": np.ascontiguousarray(fs.features, dtype=np.float32),
        "paths": np.array(fs.paths, dtype=str),
        "embedder_id": np.array(fs.embedder_id),
        "preprocess_id": np.array(fs.preprocess_id),
        "weights_sha256": np.array(fs.weights_sha256 or ""),
        "random_weights": np.array(bool(fs.random_weights)),
        "meta": np.array(json.dumps(meta)),
    }
    if fs.shas is not None:
        arrays["shas"] = np.array(fs.shas, dtype=str)
    if fs.labels is not None:
        arrays["labels"] = np.array(fs.labels, dtype=str)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def load_features(path: str | os.PathLike) -> FeatureSet:
    """Read an embeddings file; raises :class:`InputError` with one line on bad input."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:
        raise InputError(f"{path}: not a readable .npz embeddings file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if "features" not in data:
        raise InputError(f"{path}: has no 'features' array (found: {', '.join(sorted(data)) or 'nothing'})")
    feats = data["features"]
    if feats.ndim != 2 or feats.shape[0] == 0 or feats.shape[1] == 0:
        raise InputError(f"{path}: 'features' must be a non-empty N x D array, got shape {feats.shape}")
    if not np.issubdtype(feats.dtype, np.number):
        raise InputError(f"{path}: 'features' must be numeric, got {feats.dtype}")
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    if not np.isfinite(feats).all():
        bad = int((~np.isfinite(feats)).any(axis=1).sum())
        raise InputError(f"{path}: 'features' has {bad} rows with NaN or infinite values")
    n = feats.shape[0]

    def strs(key):
        if key not in data:
            return None
        v = [str(x) for x in data[key].reshape(-1)]
        if len(v) != n:
            raise InputError(f"{path}: '{key}' has {len(v)} entries but 'features' has {n} rows")
        return v

    def scalar(key, default=""):
        return str(data[key].reshape(())) if key in data else default

    meta = {}
    if "meta" in data:
        try:
            meta = json.loads(scalar("meta"))
        except json.JSONDecodeError:
            meta = {}
    paths = strs("paths") or [f"#{i}" for i in range(n)]
    return FeatureSet(
        features=feats,
        paths=paths,
        embedder_id=scalar("embedder_id", UNKNOWN_EMBEDDER) or UNKNOWN_EMBEDDER,
        preprocess_id=scalar("preprocess_id"),
        weights_sha256=scalar("weights_sha256") or None,
        random_weights=bool(data["random_weights"]) if "random_weights" in data else False,
        labels=strs("labels"),
        shas=strs("shas"),
        failures=list(meta.get("failures") or []),
        embedder=dict(meta.get("embedder") or {}),
        root=meta.get("root"),
        n_files=meta.get("n_files"),
    )
