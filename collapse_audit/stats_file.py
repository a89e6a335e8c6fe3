"""Mergeable state for sharded runs, and the FID reference statistics file.

Shards embedded anywhere (Ray workers, separate machines, separate days)
combine exactly when every quantity is an accumulator with ``update`` and
``merge`` (the torchmetrics pattern):

- FID statistics: :class:`collapse_audit.metrics.GaussianStats` (count, mean
  and centred scatter matrix in float64, merged with Chan, Golub & LeVeque 1979);
- class and cluster counts: :class:`CountAccumulator` (a multiset: merge is
  addition, so any split in any order gives the single-pass counts);
- failure records: :class:`FailureLog` (a set of ``{path, reason, ...}``
  records, listed sorted by side and path whatever the shard order).

The statistics file (``collapse-audit embed --stats-out``) is a reusable FID
reference, like clean-fid's precomputed reference statistics (Parmar et al.
2022): the Gaussian fit of one image set under one embedder, without the
features. An ``.npz`` (``allow_pickle=False``) holding

- ``kind``: ``"stats"`` (an embeddings file has no ``kind``; this is how
  ``scan`` tells them apart, see :func:`is_stats_file`)
- ``format``: ``"collapse-audit-stats/1"``
- ``mu``: float64 (D,), the mean
- ``sigma``: float64 (D, D), the unbiased covariance (``np.cov(x, rowvar=False)``,
  as pytorch-fid and clean-fid store it)
- ``n``: int64, the number of feature vectors
- ``embedder_id``: str, the embedder's id (weights and preprocessing), so a
  scan refuses statistics from another embedder
- ``meta``: JSON str, free-form description (embedder, root, failures, ...)

Only FID can be computed from it; KID, precision/recall/density/coverage,
cluster dropout and duplicates need the features themselves.

pytorch-fid's statistics (``python -m pytorch_fid --save-stats``: an ``.npz``
with ``mu`` and ``sigma`` only; clean-fid's custom statistics look the same)
are read too (:data:`FOREIGN_SOURCE`): their count and embedder are unknown,
so a scan must say that the FID is comparable only when the generated side
was embedded with the same network and preprocessing.
"""
from __future__ import annotations

import io
import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import InputError
from .features import inspect_npz, read_npz
from .metrics import GaussianStats
from .outputs import write_npz_atomic

STATS_FORMAT = "collapse-audit-stats/1"
STATS_KIND = "stats"
#: metrics that need full features and are skipped when a side is given as statistics only
NEEDS_FEATURES = ("kid", "precision", "recall", "density", "coverage", "clusters", "duplicates")

__all__ = [
    "NEEDS_FEATURES",
    "CountAccumulator",
    "FailureLog",
    "FOREIGN_SOURCE",
    "OWN_SOURCE",
    "StatsFile",
    "check_moments",
    "gaussian_stats_from_moments",
    "is_stats_file",
    "read_stats_file",
    "write_stats_file",
]


# --------------------------------------------------------------------------- counts
class CountAccumulator:
    """Counts of labels (class names, cluster ids) that merge exactly across shards.

    A multiset: ``update(labels)`` adds one per label, ``merge(other)`` adds
    the other's counts. Counting is associative and commutative, so the merged
    counts of any split equal the single-pass ``collections.Counter``.
    """

    def __init__(self, counts: Mapping | None = None):
        self._c: Counter = Counter()
        if counts:
            for k, v in counts.items():
                if int(v) < 0:
                    raise ValueError(f"negative count for {k!r}: {v}")
                self._c[_key(k)] += int(v)

    def update(self, labels: Iterable) -> CountAccumulator:
        """Add one count per label (numpy arrays of ints or strings are fine). Returns self."""
        if isinstance(labels, np.ndarray):
            labels = labels.reshape(-1).tolist()
        self._c.update(_key(x) for x in labels)
        return self

    def merge(self, other: CountAccumulator) -> CountAccumulator:
        """Add another accumulator's counts (another shard). Returns self."""
        self._c.update(other._c)
        return self

    @property
    def total(self) -> int:
        """Number of labels seen."""
        return int(sum(self._c.values()))

    def as_dict(self) -> dict:
        """``{label: count}``, labels sorted (ints numerically, then strings)."""
        return {k: int(self._c[k]) for k in sorted(self._c, key=lambda k: (isinstance(k, str), k))}

    def __getitem__(self, label) -> int:
        return int(self._c.get(_key(label), 0))

    def __eq__(self, other) -> bool:
        return isinstance(other, CountAccumulator) and self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        return f"CountAccumulator({self.as_dict()!r})"


def _key(x):
    """JSON-ready label: numpy ints -> int, everything else -> str."""
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return int(x)
    return str(x)


# --------------------------------------------------------------------------- failures
class FailureLog:
    """Failure records (``{"path", "reason", ...}``, e.g. ``side``) of many shards, merged.

    A set: a record seen twice (a retried shard) is kept once; a path that
    failed with different reasons keeps each. :meth:`as_list` is sorted by
    ``(side, path, reason)``, so the merge of any split in any order lists the
    same records in the same order.
    """

    def __init__(self, records: Iterable[Mapping] | None = None):
        self._recs: dict[tuple, dict] = {}
        if records:
            self.update(records)

    def update(self, records: Iterable[Mapping]) -> FailureLog:
        """Add records; each needs ``path`` and ``reason``. Returns self."""
        for r in records:
            if "path" not in r or "reason" not in r:
                raise ValueError(f"a failure record needs 'path' and 'reason', got {dict(r)!r}")
            rec = {k: r[k] for k in r}
            rec["path"], rec["reason"] = str(rec["path"]), str(rec["reason"])
            self._recs.setdefault(_rec_key(rec), rec)
        return self

    def merge(self, other: FailureLog) -> FailureLog:
        """Add another log's records (another shard). Returns self."""
        for k, rec in other._recs.items():
            self._recs.setdefault(k, dict(rec))
        return self

    def __len__(self) -> int:
        return len(self._recs)

    def as_list(self) -> list[dict]:
        """The records sorted by ``(side, path, reason)``."""
        return [dict(self._recs[k]) for k in sorted(self._recs)]


def _rec_key(rec: Mapping) -> tuple:
    extra = tuple(sorted((k, json.dumps(v, sort_keys=True, default=str)) for k, v in rec.items()
                         if k not in ("side", "path", "reason")))
    return (str(rec.get("side", "")), rec["path"], rec["reason"], extra)


# --------------------------------------------------------------------------- statistics file
#: ``StatsFile.source`` of a file written by :func:`write_stats_file`
OWN_SOURCE = "collapse-audit statistics file"
#: ``StatsFile.source`` of an ``.npz`` holding only ``mu`` and ``sigma`` (pytorch-fid's ``--save-stats``;
#: clean-fid's custom statistics have the same two arrays)
FOREIGN_SOURCE = "pytorch-fid statistics file"
#: relative tolerance of the symmetry check of ``sigma`` (``max |S - S^T| <= tol * max |S|``)
SYMMETRY_RTOL = 1e-5


class StatsFile(NamedTuple):
    """What :func:`read_stats_file` returns: ``stats, embedder_id, meta = read_stats_file(p)``.

    For a pytorch-fid / clean-fid file (``mu`` and ``sigma`` only) the image
    count and the embedder are unknown: :attr:`n` is None, ``embedder_id``
    is ``"unknown"``, :attr:`source` is :data:`FOREIGN_SOURCE`, and
    ``stats`` carries a nominal count of 2 (so that ``stats.cov`` is
    ``sigma`` exactly); do not merge it with other shards.
    """

    stats: GaussianStats
    embedder_id: str
    meta: dict

    @property
    def mu(self) -> np.ndarray:
        return self.stats.mean

    @property
    def sigma(self) -> np.ndarray:
        return self.stats.cov

    @property
    def n(self) -> int | None:
        """Number of feature vectors, None when the file does not say (pytorch-fid, clean-fid)."""
        if self.meta.get("source") == FOREIGN_SOURCE:
            return None
        return self.stats.n

    @property
    def source(self) -> str:
        """:data:`OWN_SOURCE` or :data:`FOREIGN_SOURCE`."""
        return FOREIGN_SOURCE if self.meta.get("source") == FOREIGN_SOURCE else OWN_SOURCE

    @property
    def embedder_known(self) -> bool:
        return self.embedder_id not in ("", "unknown")

    @property
    def notes(self) -> list[str]:
        """One-line warnings a scan should add to its notes (empty for a collapse-audit file)."""
        if self.source != FOREIGN_SOURCE:
            return []
        return [
            f"the real side is a {FOREIGN_SOURCE} (mu and sigma only; clean-fid's look the same): the embedder, the "
            "preprocessing and the image count are unknown; its FID is comparable only when the generated images were "
            "embedded with the same network and preprocessing (pytorch-fid's: --embedder inception:pytorch-fid)"
        ]


def gaussian_stats_from_moments(n: int, mean: np.ndarray, cov: np.ndarray) -> GaussianStats:
    """A :class:`GaussianStats` with count ``n``, mean ``mean`` and unbiased covariance ``cov``.

    The scatter matrix is ``M2 = cov * (n - 1)`` (the inverse of
    ``GaussianStats.cov``), so the result merges with other shards exactly as
    the accumulator it was written from (up to one rounding of ``cov``).
    """
    mean = np.asarray(mean, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    n = int(n)
    if n < 2:
        raise ValueError(f"statistics need n >= 2, got {n}")
    if mean.ndim != 1 or cov.shape != (mean.shape[0], mean.shape[0]):
        raise ValueError(f"mean must be (D,) and cov (D, D); got {mean.shape} and {cov.shape}")
    buf = io.BytesIO()
    np.savez(buf, n=np.int64(n), mean=mean, m2=cov * (n - 1))
    buf.seek(0)
    return GaussianStats.from_npz(buf)


def write_stats_file(path: str | os.PathLike, stats: GaussianStats, embedder_id: str, meta: dict | None = None) -> Path:
    """Write FID reference statistics (mean, unbiased covariance, count, embedder id) to ``path``.

    The layout is in the module docstring; ``.npz`` is appended if missing.
    Written to a temporary file and renamed, so a reader never sees half a file.
    """
    if stats.n < 2:
        raise InputError(f"{path}: statistics need at least 2 embedded images, got {stats.n}")
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_npz_atomic(path, dict(
        kind=np.array(STATS_KIND),
        format=np.array(STATS_FORMAT),
        mu=stats.mean,
        sigma=stats.cov,
        n=np.int64(stats.n),
        embedder_id=np.array(str(embedder_id)),
        meta=np.array(json.dumps(meta or {}, sort_keys=True, default=str)),
    ), what="the statistics file")


def _is_foreign(names) -> bool:
    """mu and sigma, no kind and no features: pytorch-fid's / clean-fid's statistics layout."""
    names = set(names)
    return {"mu", "sigma"} <= names and "kind" not in names and "features" not in names


def _str_scalar(a: np.ndarray) -> str | None:
    if a.size != 1 or a.dtype.kind not in "US":
        return None
    v = a.reshape(())[()]
    return bytes(v).decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def is_stats_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is an ``.npz`` of FID statistics: written by :func:`write_stats_file`
    (``kind == "stats"``), or pytorch-fid's / clean-fid's (``mu`` and ``sigma``, no ``features``).

    Reads the ZIP directory and at most the small ``kind`` member (size-checked), never the arrays.
    """
    try:
        members = inspect_npz(path)
        if "kind" in members:
            kind = read_npz(path, only=("kind",), members=members)["kind"]
            return _str_scalar(kind) == STATS_KIND
        return _is_foreign(members)
    except Exception:  # noqa: BLE001 - any unreadable file is simply not a statistics file
        return False


def check_moments(path, mu: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate FID moments; returns float64 ``(mu, sigma)`` with ``sigma`` symmetrised.

    ``mu`` must be a real 1-D array of length D >= 1, ``sigma`` real D x D,
    both finite; ``sigma`` symmetric within :data:`SYMMETRY_RTOL` of its
    largest entry, with a non-negative diagonal (variances). Anything else
    is a one-line :class:`InputError` naming ``path``.
    """
    for key, a in (("mu", mu), ("sigma", sigma)):
        if a.dtype.kind not in "fiu":
            raise InputError(f"{path}: '{key}' must be a real float array, got {a.dtype}")
    if mu.ndim != 1 or mu.shape[0] == 0 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise InputError(f"{path}: 'mu' must be (D,) and 'sigma' (D, D); got {mu.shape} and {sigma.shape}")
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise InputError(f"{path}: statistics contain NaN or infinite values")
    scale = float(np.abs(sigma).max())
    asym = float(np.abs(sigma - sigma.T).max())
    if asym > SYMMETRY_RTOL * scale:
        raise InputError(f"{path}: 'sigma' is not a covariance matrix: not symmetric (max |sigma - sigma^T| = {asym:.3g}, "
                         f"largest entry {scale:.3g})")
    diag = np.diag(sigma)
    if (diag < -SYMMETRY_RTOL * scale).any():
        raise InputError(f"{path}: 'sigma' is not a covariance matrix: {int((diag < -SYMMETRY_RTOL * scale).sum())} "
                         f"negative variances on its diagonal (min {float(diag.min()):.3g})")
    return mu, (sigma + sigma.T) / 2


def read_stats_file(path: str | os.PathLike) -> StatsFile:
    """Read a statistics file: ``(GaussianStats, embedder_id, meta)``; one-line :class:`InputError` on bad input.

    Accepts the files of :func:`write_stats_file` and pytorch-fid's /
    clean-fid's ``mu``/``sigma`` files (see :class:`StatsFile` for what is
    unknown then: ``meta`` is ``{"source": FOREIGN_SOURCE, "n": None}``).
    Arrays are read size-checked (:func:`collapse_audit.features.read_npz`)
    and validated by :func:`check_moments`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    what = ".npz statistics file"
    members = inspect_npz(path, what=what)
    if _is_foreign(members):
        data = read_npz(path, only=("mu", "sigma"), what=what, members=members)
        mu, sigma = check_moments(path, data["mu"], data["sigma"])
        st = GaussianStats()
        st._combine(2, mu, sigma.copy())  # nominal count 2: cov = M2 / (2 - 1) = sigma exactly
        return StatsFile(st, "unknown", {"source": FOREIGN_SOURCE, "n": None})
    if "kind" not in members:
        raise InputError(f"{path}: not a statistics file (no kind='stats', nor pytorch-fid's mu and sigma; "
                         "an embeddings file has features, not statistics)")
    data = read_npz(path, what=what, members=members)
    if _str_scalar(data["kind"]) != STATS_KIND:
        raise InputError(f"{path}: not a statistics file (no kind='stats'; an embeddings file has features, not statistics)")
    fmt = _str_scalar(data["format"]) if "format" in data else ""
    if (fmt or "").split("/")[0] != STATS_FORMAT.split("/")[0]:
        raise InputError(f"{path}: unknown statistics format '{fmt}' (expected {STATS_FORMAT})")
    missing = [k for k in ("mu", "sigma", "n") if k not in data]
    if missing:
        raise InputError(f"{path}: statistics file lacks {', '.join(missing)}")
    mu, sigma = check_moments(path, data["mu"], data["sigma"])
    n_arr = data["n"]
    if n_arr.size != 1 or n_arr.dtype.kind not in "iu":
        raise InputError(f"{path}: 'n' must be a single integer count, got a {n_arr.dtype} array of shape {n_arr.shape}")
    try:
        stats = gaussian_stats_from_moments(int(n_arr.reshape(())), mu, sigma)
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None
    meta: dict = {}
    if "meta" in data:
        text = _str_scalar(data["meta"])
        try:
            meta = json.loads(text) if text is not None else None
        except (json.JSONDecodeError, RecursionError):
            meta = None
        if not isinstance(meta, dict):
            raise InputError(f"{path}: 'meta' must be a JSON object string")
        # fields a scan reads: drop those of the wrong type rather than crash on them later
        if "embedder" in meta and not isinstance(meta["embedder"], dict):
            del meta["embedder"]
        if "root" in meta and not isinstance(meta["root"], str):
            del meta["root"]
        nf = meta.get("n_files")
        if "n_files" in meta and (isinstance(nf, bool) or not isinstance(nf, int) or nf < 0):
            del meta["n_files"]
    eid = _str_scalar(data["embedder_id"]) if "embedder_id" in data else "unknown"
    if eid is None:
        raise InputError(f"{path}: 'embedder_id' must be a single string")
    return StatsFile(stats, eid or "unknown", meta)
