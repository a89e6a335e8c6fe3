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


def npz_member_memmap(path: str | os.PathLike, name: str = "features") -> np.memmap | None:
    """Memory-map one array of an uncompressed ``.npz`` file read-only, or return None.

    ``np.savez`` stores each array as a ``NAME.npy`` member of a ZIP archive
    without compression (``ZIP_STORED``), so the raw bytes of the array lie
    contiguously in the file: the member's local file header (PKWARE
    APPNOTE 4.3.7: 30 fixed bytes, then the file name and the *local* extra
    field, whose lengths are the little-endian uint16 at offsets 26 and 28)
    starts at ``ZipInfo.header_offset``; the ``.npy`` header (NEP 1, read
    with ``np.lib.format.read_magic`` / ``read_array_header_1_0|2_0``)
    follows; the C-ordered data follow that.  Returns None (the caller then
    loads normally) when the member is missing, compressed or encrypted, in
    Fortran order, holds objects, or is not float32 (a cast would copy it
    anyway).
    """
    import zipfile

    member = name if name.endswith(".npy") else name + ".npy"
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            return None
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
            if len(local) != 30 or local[:4] != b"PK\x03\x04":
                return None
            n_name = int.from_bytes(local[26:28], "little")
            n_extra = int.from_bytes(local[28:30], "little")
            f.seek(info.header_offset + 30 + n_name + n_extra)
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:  # pragma: no cover - future .npy versions
                return None
            offset = f.tell()
    except (KeyError, OSError, ValueError, zipfile.BadZipFile):
        return None
    if fortran or dtype != np.dtype(np.float32) or len(shape) != 2 or 0 in shape:
        return None
    if offset + int(np.prod(shape)) * dtype.itemsize > os.path.getsize(path):
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape), order="C")


def _bad_rows(feats: np.ndarray, chunk: int = 65536) -> int:
    """Rows with NaN or inf, counted in chunks (no N x D temporary for a memory map)."""
    bad = 0
    for s in range(0, feats.shape[0], chunk):
        block = feats[s : s + chunk]
        if not np.isfinite(block).all():
            bad += int((~np.isfinite(block)).any(axis=1).sum())
    return bad


def load_features_mmap(path: str | os.PathLike) -> FeatureSet:
    """:func:`load_features` with the ``features`` array memory-mapped read-only from the file.

    For files written by :func:`save_features` (``np.savez``, uncompressed)
    the returned ``features`` is a read-only ``np.memmap`` into the ``.npz``
    itself (see :func:`npz_member_memmap`): pages are read on first use, so
    a 1M x 512 float32 side costs no heap memory until touched.  Compressed
    files, or feature arrays that are not C-ordered float32, fall back to a
    normal in-memory load (same result, same checks).
    """
    return load_features(path, mmap=True)


def load_features(path: str | os.PathLike, *, mmap: bool = False) -> FeatureSet:
    """Read an embeddings file; raises :class:`InputError` with one line on bad input.

    ``mmap=True``: memory-map ``features`` instead of reading it (see
    :func:`load_features_mmap`); other arrays are read normally.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    mapped = npz_member_memmap(path) if mmap else None
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files if not (mapped is not None and k == "features")}
    except Exception as e:
        raise InputError(f"{path}: not a readable .npz embeddings file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if mapped is not None:
        data["features"] = mapped
    if "features" not in data:
        raise InputError(f"{path}: has no 'features' array (found: {', '.join(sorted(data)) or 'nothing'})")
    feats = data["features"]
    if feats.ndim != 2 or feats.shape[0] == 0 or feats.shape[1] == 0:
        raise InputError(f"{path}: 'features' must be a non-empty N x D array, got shape {feats.shape}")
    if not np.issubdtype(feats.dtype, np.number):
        raise InputError(f"{path}: 'features' must be numeric, got {feats.dtype}")
    if mapped is None:
        feats = np.ascontiguousarray(feats, dtype=np.float32)
    bad = _bad_rows(feats)
    if bad:
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
