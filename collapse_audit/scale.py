"""Metrics and nearest-neighbour analyses at a million samples per side, with bounded memory.

The exact PRDC of :func:`collapse_audit.metrics.prdc` scans every (real,
generated) pair: ~2 N M D flops, ~3 min at 50k x 50k x 512 on 2 cores, ~18 h
at 1M x 1M.  Above a size threshold (:func:`choose_method`) this module
answers the same questions with an inverted-file (IVF) search instead
(:func:`approx_prdc_indicators`), and measures what the approximation costs
against exact search on a random subsample (:func:`measure_approx_error`),
so ``results.json`` can say how far the approximate numbers may be from the
exact ones (``metrics.approximation``).

Index: **IVF-Flat** (Jegou, Douze & Schmid 2011, "Product quantization for
nearest neighbor search", TPAMI, the inverted-file part; Johnson, Douze &
Jegou 2019, "Billion-scale similarity search with GPUs"), chosen over HNSW
(Malkov & Yashunin 2018) because

* it is deterministic: seeded k-means cells, then exact float32 distances to
  every point in the visited cells (HNSW's multi-threaded build is not
  reproducible run to run);
* it keeps the raw vectors, so a neighbour it finds has its true distance,
  and with every cell visited it *is* exact search (a built-in check);
* it builds in a minute on 2 cores (k-means on ~50 points per cell); memory
  is one float32 copy of the vectors;
* balls of a given radius (what PRDC counts) are a plain scan of the
  visited cells, and ``faiss.IndexIVFFlat.search`` serves the
  near-duplicate search (:func:`build_index`).

Defaults: ``nlist = round(4 sqrt(N + M))`` cells (:func:`default_nlist`;
FAISS's guideline is 4-16 sqrt(N)), a two-level seeded FAISS k-means on
``50 nlist`` points drawn from both sets; every point visits ``nprobe = 32``
cells (its own and the nearest).  At 1M + 1M that is 5,657 cells of ~350
points and ~11k distances per search instead of 1M.  The visited cells are
evaluated as dense float32 GEMMs per cell (all queries that visit a cell
against its points), which on 2 cores ran ~8x faster than FAISS's
per-query list scanning and does radii and balls in one sweep per side.
Memory: one cell-sorted float32 copy of both sets plus O(N) per-point
state; the feature arrays themselves can be ``np.memmap`` s
(:func:`collapse_audit.features.load_features_mmap`).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from . import metrics as M
from .analysis.stats import wilson_interval
from .config import EXACT_MAX_PAIRS
from . import index as _index
from .index import _check_magnitude, _faiss_threads, normalise_rows  # noqa: F401  (normalise_rows: its old home)
from .metrics import PRDCIndicators
from .progress import ProgressReporter

__all__ = [
    "ApproxPRDC",
    "DEFAULT_EXACT_MAX_PAIRS",
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_NPROBE",
    "approx_prdc",
    "approx_prdc_indicators",
    "build_index",
    "choose_method",
    "DEDUP_MAX_COPIES",
    "default_nlist",
    "distinct_rows",
    "estimate_prdc_memory",
    "identical_row_codes",
    "ip_index_builder",
    "measure_approx_error",
    "normalise_rows",
    "prdc",
    "PRDC_METHODS",
    "write_features_streaming",
]

#: Exact PRDC up to this many (real x generated) pairs: 50k x 50k, ~3 min on 2 cores.
DEFAULT_EXACT_MAX_PAIRS = EXACT_MAX_PAIRS
#: Memory the metric stage may use (the issue's target for 1M x 512 per side).
DEFAULT_MEMORY_BUDGET = 16 * 2**30
#: IVF cells visited per point.
DEFAULT_NPROBE = 32
#: k-means training points per IVF cell.
TRAIN_POINTS_PER_LIST = 50
#: FAISS wants at least this many training points per list (it warns below).
_MIN_POINTS_PER_LIST = 39
_ADD_CHUNK = 65536


# =========================================================================== index


def default_nlist(n: int) -> int:
    """Default number of IVF lists for ``n`` base points: ``round(4 sqrt(n))``, at most ``n // 39``, at least 1.

    FAISS's guideline (wiki "Guidelines to choose an index") is 4 sqrt(N) to
    16 sqrt(N) lists; the low end keeps the k-means training cheap on a few
    cores and the lists long enough (~sqrt(N)/4 points) for good recall at
    ``nprobe = 32``.  The cap gives every list the 39 training points FAISS
    asks for (1,000 -> 25, 20,000 -> 512, 1M -> 4,000).
    """
    n = int(n)
    return max(1, min(int(round(4 * math.sqrt(max(n, 1)))), n // _MIN_POINTS_PER_LIST))


_f32 = _index.as_f32


def build_index(
    x: np.ndarray,
    *,
    metric: str = "l2",
    approx: bool = True,
    nlist: int | None = None,
    nprobe: int | None = None,
    train_size: int | None = None,
    seed: int = 0,
    chunk: int = _ADD_CHUNK,
):
    """A FAISS index over the rows of ``x``: exact flat, or IVF-Flat (Jegou et al. 2011) when ``approx``.

    Parameters
    ----------
    x : (N, D) array or ``np.memmap``; added in ``chunk``-row float32 pieces,
        so a memory map is never copied whole (FAISS keeps its own copy of
        the vectors: N x D x 4 bytes).
    metric : ``"l2"`` (squared Euclidean, ``IndexFlatL2`` / ``METRIC_L2``) or
        ``"ip"`` (inner product, for cosine on L2-normalised rows).
    approx : False -> ``IndexFlatL2`` / ``IndexFlatIP`` (exact search);
        True -> ``IndexIVFFlat`` with ``nlist`` lists (default
        :func:`default_nlist`) whose coarse quantiser is trained by FAISS
        k-means (seed ``seed``, 10 iterations) on ``train_size`` rows
        (default ``50 nlist``) drawn without replacement by
        ``np.random.default_rng(seed)``; ``nprobe`` (default 32, capped at
        ``nlist``) lists are visited per query.
    """
    import faiss

    x_shape = np.shape(x)
    if len(x_shape) != 2 or x_shape[0] == 0:
        raise ValueError(f"x must be a non-empty 2-D array; got shape {x_shape}")
    n, d = x_shape
    if metric not in ("l2", "ip"):
        raise ValueError(f"metric must be 'l2' or 'ip', got {metric!r}")
    mt = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    if not approx:
        index = faiss.IndexFlatL2(d) if metric == "l2" else faiss.IndexFlatIP(d)
    else:
        nl = default_nlist(n) if nlist is None else max(1, min(int(nlist), n))
        quantizer = faiss.IndexFlatL2(d) if metric == "l2" else faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nl, mt)
        index.cp.seed = int(seed)
        index.cp.min_points_per_centroid = 1  # small sets: no FAISS warning on stderr
        ts = min(n, TRAIN_POINTS_PER_LIST * nl if train_size is None else int(train_size))
        index.cp.max_points_per_centroid = max(1, -(-ts // nl))  # FAISS must not subsample again
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(n, ts, replace=False)) if ts < n else np.arange(n)
        index.train(_f32(x[rows]))
        index.nprobe = max(1, min(int(DEFAULT_NPROBE if nprobe is None else nprobe), nl))
    for s in range(0, n, chunk):
        index.add(_f32(x[s : s + chunk]))
    return index


def index_params(index) -> dict:
    """JSON description of an index built by :func:`build_index`."""
    import faiss

    if isinstance(index, faiss.IndexIVFFlat):
        return {"type": "IVFFlat", "nlist": int(index.nlist), "nprobe": int(index.nprobe), "ntotal": int(index.ntotal)}
    return {"type": type(index).__name__, "ntotal": int(index.ntotal)}


def ip_index_builder(*, approx: bool = True, nlist: int | None = None, nprobe: int | None = None, seed: int = 0):
    """A ``x -> faiss index`` callable for cosine search on L2-normalised rows (IVF-Flat inner product when ``approx``).

    For :mod:`collapse_audit.analysis.duplicates`, whose ``_ip_index(x)``
    builds an exact ``IndexFlatIP``; the IVF index answers the same
    ``search`` calls (see the module's wiring notes).
    """
    def build(x: np.ndarray):
        return build_index(x, metric="ip", approx=approx, nlist=nlist, nprobe=nprobe, seed=seed)

    return build


# =========================================================================== approximate PRDC


@dataclass
class ApproxPRDC:
    """Approximate PRDC: the four metrics, their per-sample terms, and what produced them.

    ``indicators`` has the same meaning as :class:`collapse_audit.metrics.PRDCIndicators`;
    ``real_radii`` / ``gen_radii`` are the approximate k-NN radii (float32);
    ``real_knn`` / ``gen_knn`` the approximate neighbour ids (self excluded),
    kept for :func:`measure_approx_error`; ``params`` describes the index.
    """

    precision: float
    recall: float
    density: float
    coverage: float
    k: int
    n_real: int
    n_gen: int
    indicators: PRDCIndicators
    real_radii: np.ndarray
    gen_radii: np.ndarray
    real_knn: np.ndarray
    gen_knn: np.ndarray
    params: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-ready ``{precision, recall, density, coverage, k, n_real, n_gen, params}``."""
        return {
            "precision": float(self.precision),
            "recall": float(self.recall),
            "density": float(self.density),
            "coverage": float(self.coverage),
            "k": int(self.k),
            "n_real": int(self.n_real),
            "n_gen": int(self.n_gen),
            "params": dict(self.params),
        }


def _check_pair(real, gen, k: int) -> tuple[int, int, int]:
    rs, gs = np.shape(real), np.shape(gen)
    if len(rs) != 2 or len(gs) != 2 or rs[1] != gs[1]:
        raise ValueError(f"real {rs} and gen {gs} must be 2-D with the same number of columns")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    for name, s in (("real", rs), ("gen", gs)):
        if s[0] <= k:
            raise ValueError(f"PRDC with k={k} needs more than {k} {name} samples, got {s[0]}")
    _check_magnitude(real, "real", np.float32)  # float32 search: squared distances must stay finite
    _check_magnitude(gen, "gen", np.float32)
    return rs[0], gs[0], rs[1]


def _auto_threads(n_threads: int | str | None) -> int | None:
    """``"auto"``: 1 on machines with at most 4 cores (see :func:`approx_prdc_indicators`), else None (library default)."""
    if n_threads == "auto":
        return 1 if (os.cpu_count() or 1) <= 4 else None
    return None if n_threads is None else int(n_threads)


# FAISS's OpenMP thread count is set temporarily with collapse_audit.index._faiss_threads. The quantiser's
# k-means and assignment calls are small; on a loaded machine FAISS's OpenMP barriers made them
# 3-6x slower with 2 threads than with 1, so approx_prdc_indicators runs them on one thread.


@contextlib.contextmanager
def _blas_threads(n_threads: int | None):
    """Temporarily limit BLAS threads with ``threadpoolctl`` (a scikit-learn dependency); None: leave alone."""
    if n_threads is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        yield
        return
    with threadpool_limits(limits=int(n_threads), user_api="blas"):
        yield


def _kmeans(x: np.ndarray, k: int, seed: int, niter: int) -> np.ndarray:
    """FAISS k-means (Lloyd, seeded) centroids of the rows of ``x``; the mean when ``k == 1``."""
    return _index.kmeans(x, k, seed=seed, niter=niter)


def _nearest(centroids: np.ndarray, x: np.ndarray) -> np.ndarray:
    return _index.nearest_centroid(centroids, x)[0]


class _Cells:
    """A two-level k-means partition (an IVF coarse quantiser) of the union of both sets.

    ``n_top ~ sqrt(nlist)`` top clusters, each split into leaves in
    proportion to its share of the training sample, so a point is assigned
    with ``~2 sqrt(nlist)`` distance computations instead of ``nlist``
    (the two-level quantiser of Babenko & Lempitsky 2012, "The inverted
    multi-index", in its simplest hierarchical form).  All coordinates are
    shifted by ``shift`` (a sample mean) so that float32 expansions
    ``||a||^2 + ||b||^2 - 2 a.b`` stay accurate.
    """

    def __init__(self, sample: np.ndarray, nlist: int, seed: int):
        self.shift = sample.astype(np.float64).mean(axis=0).astype(np.float32)
        xs = sample - self.shift
        n_top = max(1, min(int(round(math.sqrt(nlist))), xs.shape[0]))
        top = _kmeans(xs, n_top, seed, 20)
        lab = _nearest(top, xs)
        counts = np.bincount(lab, minlength=top.shape[0])
        keep = np.nonzero(counts)[0]
        self.top = np.ascontiguousarray(top[keep])
        lab = np.searchsorted(keep, lab)
        counts = counts[keep]
        alloc = np.minimum(np.maximum(1, np.round(nlist * counts / counts.sum())).astype(int), counts)
        leaves, self.ranges = [], []
        start = 0
        for i in range(self.top.shape[0]):
            c = _kmeans(xs[lab == i], int(alloc[i]), seed + 1 + i, 10)
            leaves.append(c)
            self.ranges.append((start, start + c.shape[0]))
            start += c.shape[0]
        self.centroids = np.ascontiguousarray(np.concatenate(leaves, axis=0))
        self.nlist = self.centroids.shape[0]

    def assign(self, x: np.ndarray, chunk: int = _ADD_CHUNK) -> np.ndarray:
        """Leaf id of every row of ``x`` (nearest top centroid, then nearest of its leaves)."""
        import faiss

        top_index = faiss.IndexFlatL2(self.top.shape[1])
        top_index.add(self.top)
        leaf_index = []
        for a, b in self.ranges:
            li = faiss.IndexFlatL2(self.centroids.shape[1])
            li.add(self.centroids[a:b])
            leaf_index.append(li)
        out = np.empty(x.shape[0], dtype=np.int64)
        for s in range(0, x.shape[0], chunk):
            xb = _f32(x[s : s + chunk]) - self.shift
            t = top_index.search(xb, 1)[1][:, 0]
            for i in np.unique(t):
                rows = np.nonzero(t == i)[0]
                out[s + rows] = self.ranges[i][0] + leaf_index[i].search(xb[rows], 1)[1][:, 0]
        return out

    def neighbours(self, m: int) -> np.ndarray:
        """(nlist, m) the ``m`` leaves whose centroids are nearest each leaf's centroid, the leaf itself first."""
        import faiss

        m = min(int(m), self.nlist)
        index = faiss.IndexFlatL2(self.centroids.shape[1])
        index.add(self.centroids)
        p = index.search(self.centroids, m)[1]
        own = np.arange(self.nlist)
        has = (p == own[:, None]).any(axis=1)
        p[~has, -1] = own[~has]  # duplicate centroids: make sure the leaf itself is there
        first = np.argmax(p == own[:, None], axis=1)
        p[np.arange(self.nlist), first] = p[:, 0]
        p[:, 0] = own
        return p


class _Sorted:
    """One side's rows, shifted and stored contiguously cell by cell (float32), with their squared norms."""

    def __init__(self, x: np.ndarray, cells: _Cells, chunk: int = _ADD_CHUNK):
        n, d = x.shape
        lab = cells.assign(x, chunk)
        self.order = np.argsort(lab, kind="stable")  # sorted position -> original row
        self.home = lab[self.order]  # cell of each sorted position
        inv = np.empty(n, dtype=np.int64)
        inv[self.order] = np.arange(n)
        self.starts = np.concatenate([[0], np.cumsum(np.bincount(lab, minlength=cells.nlist))]).astype(np.int64)
        self.x = np.empty((n, d), dtype=np.float32)
        for s in range(0, n, chunk):
            self.x[inv[s : s + chunk]] = _f32(x[s : s + chunk]) - cells.shift
        self.norms = np.einsum("ij,ij->i", self.x, self.x)

    def probes(self, cells: _Cells, nprobe: int, cand: np.ndarray) -> np.ndarray:
        """(n, nprobe) int32 cells each row visits: its own cell, then the nearest centroids among ``cand[home]``.

        ``cand`` (from :meth:`_Cells.neighbours`) lists, per cell, the
        ``2 nprobe`` cells nearest its centroid; each point ranks those by
        its own distance to their centroids (IVF probing per query, as
        FAISS does, at ``2 nprobe`` instead of ``nlist`` distances per point).
        """
        n = self.x.shape[0]
        nprobe = min(nprobe, cand.shape[1])
        out = np.empty((n, nprobe), dtype=np.int32)
        cn = np.einsum("ij,ij->i", cells.centroids, cells.centroids)
        for c in range(cells.nlist):
            a, b = int(self.starts[c]), int(self.starts[c + 1])
            if b == a:
                continue
            cc = cand[c]
            d2 = self.x[a:b] @ cells.centroids[cc].T
            d2 *= -2.0
            d2 += cn[cc][None, :]
            d2[:, 0] = -np.inf  # own cell first
            sel = np.argpartition(d2, nprobe - 1, axis=1)[:, :nprobe] if nprobe < cc.size else \
                np.broadcast_to(np.arange(cc.size), d2.shape)
            out[a:b] = cc[sel]
        return out


def _by_cell(probes: np.ndarray, nlist: int):
    """Invert a (q, nprobe) probe table: for each cell, the (ascending) query rows that visit it."""
    flat = probes.ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(nlist + 1))
    q = order // probes.shape[1]
    for c in range(nlist):
        if bounds[c + 1] > bounds[c]:
            yield c, q[bounds[c] : bounds[c + 1]]


def _cell_scan(Q: _Sorted, qs: int, probes: np.ndarray, B: _Sorted, nlist: int, block: int, visit) -> float:
    """For every cell of ``B``, the squared distances (float32, clipped at 0) from the chunk's queries that probe
    it to the cell's points, by one GEMM per cell (split so a tile stays under ``block`` entries);
    ``visit(cell, query rows in chunk, tile, first position of the cell)``.  Returns the flops spent."""
    flops = 0.0
    for c, qi in _by_cell(probes, nlist):
        ba, bb = int(B.starts[c]), int(B.starts[c + 1])
        if bb == ba:
            continue
        base = B.x[ba:bb]
        nn = B.norms[ba:bb]
        step = max(1, int(block) // (bb - ba))
        for s in range(0, qi.size, step):
            rows = qi[s : s + step]
            q = Q.x[qs + rows]
            d2 = q @ base.T
            d2 *= -2.0
            d2 += Q.norms[qs + rows][:, None]
            d2 += nn[None, :]
            np.maximum(d2, 0, out=d2)
            visit(c, rows, d2, ba)
            flops += 2.0 * rows.size * (bb - ba) * base.shape[1]
    return flops


def _exact_sq(xa: np.ndarray, ia: np.ndarray, xb: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Squared distances ``||xa[ia] - xb[ib]||^2`` (broadcast index arrays), summed in float64 and
    rounded to float32 as sklearn rounds its float64 squared distances of float32 input."""
    ia, ib = np.broadcast_arrays(ia, ib)
    out = np.empty(ia.shape, dtype=np.float64)
    fa, fb, fo = ia.ravel(), ib.ravel(), out.reshape(-1)
    step = 65536
    for s in range(0, fa.size, step):
        diff = xa[fa[s : s + step]].astype(np.float64)
        diff -= xb[fb[s : s + step]]
        fo[s : s + step] = np.einsum("ij,ij->i", diff, diff)
    return out.astype(np.float32)


def _fix_missing(x, radii, knn, k):
    """Rows whose probed cells held fewer than k other points: exact radius and neighbours by a blocked scan."""
    bad = np.nonzero(~np.isfinite(radii))[0]
    if bad.size:
        shift = np.asarray(x[: min(x.shape[0], 4096)], dtype=np.float64).mean(axis=0)
        r, nb = _exact_knn_rows(x, bad, k, shift, 8192)
        radii[bad] = r
        knn[bad] = nb
    return int(bad.size)


def approx_prdc_indicators(
    real: np.ndarray,
    gen: np.ndarray,
    *,
    k: int = 5,
    nlist: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
    block: int = 1 << 22,
    chunk: int = 1 << 18,
    quantizer_threads: int | str | None = "auto",
    blas_threads: int | str | None = "auto",
    progress: Any = None,
) -> ApproxPRDC:
    """Precision/recall (Kynkaanniemi et al. 2019) and density/coverage (Naeem et al. 2020) by IVF search.

    Same definitions as :func:`collapse_audit.metrics.prdc` (strict ``<`` on
    float32 Euclidean distances; radius = distance to the k-th neighbour in
    the own set, self excluded, exact duplicates counting), with every
    neighbour search restricted by an inverted file (IVF-Flat; Jegou, Douze
    & Schmid 2011; Johnson, Douze & Jegou 2019):

    1. A coarse quantiser (:class:`_Cells`: two-level FAISS k-means, seeded,
       trained on ``50 nlist`` rows drawn from both sets) cuts the union of
       both sets into ``nlist`` cells (default :func:`default_nlist` of
       N + M).  Each point visits ``nprobe`` cells (default 32): its own and
       those whose centroids are nearest to it.
    2. Radii: the k-th nearest point of the own set among the visited cells
       (self excluded).
    3. Balls, searched as they are defined: the generated points inside each
       real ball ``B(x, r(x))`` among the cells x visits (density counts,
       precision = count > 0, coverage = ball not empty), and the real
       points inside each generated ball (recall).  (A fixed list of 32
       nearest candidates per point instead undercounted density by 0.31 at
       20k x 64-d in our tests: in high dimension a point lies in the balls
       of many farther points.)

    Searches are evaluated cell by cell as dense float32 GEMMs (all queries
    that visit a cell against all of its points), the same candidates FAISS's
    ``IndexIVFFlat`` would scan, at BLAS speed.  The only approximation is
    the probing: a neighbour in an unvisited cell is missed, so a radius can
    only grow (counts up) and a ball can miss points (counts down); with
    ``nprobe >= nlist`` the search is exhaustive and equals the exact one up
    to float32 rounding.  :func:`measure_approx_error` measures the net
    error.  Distances are ``sqrt(max(||a||^2 + ||b||^2 - 2 a.b, 0))`` in
    float32 on data shifted by a common mean (relative error ~1e-6), so
    near-ties at that level may fall differently from the float64 path of
    :func:`collapse_audit.metrics.prdc`.

    Memory: a cell-sorted float32 copy of both sets ((N + M) x D x 4 bytes),
    per point its radius, k neighbour ids and ``nprobe`` cell ids for one
    ``chunk`` of queries, and one distance tile of at most ``block`` float32
    entries.  Time: ~``4 (N + M) nprobe (N + M) / (2 nlist) D`` flops of
    GEMM (each point is a query twice, once for its radius and once for its
    ball).  ``quantizer_threads``: FAISS threads for the small k-means and
    assignment calls; ``blas_threads``: BLAS threads for the cell GEMMs
    (``threadpoolctl``, restored afterwards); None leaves either alone;
    ``"auto"`` (default) is 1 on machines with at most 4 cores, else None.
    The cell GEMMs are medium-sized (~1000 x 200 x D): on the 2-core
    reference machine, shared with other jobs, one thread ran them 3-6x
    faster than two (OpenBLAS / OpenMP barriers).  Thread counts change
    speed only, not results beyond float32 rounding.

    Returns
    -------
    :class:`ApproxPRDC`.
    """
    k = int(k)
    n, m, d = _check_pair(real, gen, k)
    t0 = time.perf_counter()
    plan_r, plan_g = _dedup_plan(real), _dedup_plan(gen)
    t_dedup = time.perf_counter() - t0
    rx = real if plan_r is None else _rows(real, plan_r[0])
    gx = gen if plan_g is None else _rows(gen, plan_g[0])
    core = _approx_core(rx, gx, k=k, nlist=nlist, nprobe=nprobe, seed=seed, block=block, chunk=chunk,
                        quantizer_threads=quantizer_threads, blas_threads=blas_threads, progress=progress,
                        w_real=None if plan_r is None else plan_r[2], w_gen=None if plan_g is None else plan_g[2])
    del rx, gx
    r_real, knn_real, counts, covered, in_gen, r_gen, knn_gen, info = core
    # distinct vectors -> rows: every copy shares its vector's radius, ball and counts
    if plan_r is not None:
        ur, inv, _ = plan_r
        r_real, covered, in_gen = r_real[inv], covered[inv], in_gen[inv]
        knn_real = _knn_with_copies(knn_real[inv], inv, k)
    if plan_g is not None:
        ug, inv, _ = plan_g
        r_gen, counts = r_gen[inv], counts[inv]
        knn_gen = _knn_with_copies(knn_gen[inv], inv, k)
    nl, npb, ts, flops, timings = info["nlist"], info["nprobe"], info["train_size"], info["flops"], info["timings"]
    # points whose visited cells held fewer than k others: exact radius and ball by a full scan
    bad_r = np.nonzero(~np.isfinite(r_real))[0]
    bad_g = np.nonzero(~np.isfinite(r_gen))[0]
    fallback = _fix_missing(real, r_real, knn_real, k) + _fix_missing(gen, r_gen, knn_gen, k)
    if fallback:
        _recount(real, gen, r_real, r_gen, bad_r, bad_g, counts, covered, in_gen)

    ind = PRDCIndicators(
        in_real=(counts > 0).astype(np.float64),
        density_terms=counts.astype(np.float64) / float(k),
        in_gen=in_gen.astype(np.float64),
        covered=covered.astype(np.float64),
    )
    params = {
        "method": "ivf-flat",
        "index": "IVF-Flat cells over real + generated (two-level FAISS k-means), probed per point, GEMM-evaluated",
        "k": k,
        "nlist": int(nl),
        "nprobe": int(npb),
        "train_size": int(ts),
        "seed": int(seed),
        "exhaustive": bool(npb >= nl),
        "exact_fallback_rows": int(fallback),
        "gflop": round(flops / 1e9, 1),
    }
    params["distinct_vectors"] = {"real": int(n if plan_r is None else plan_r[0].size),
                                  "gen": int(m if plan_g is None else plan_g[0].size)}
    params["seconds"] = round(time.perf_counter() - t0, 3)
    timings["dedup"] = round(t_dedup, 3)
    timings["finish"] = round(params["seconds"] - timings["cells"] - timings["search"] - t_dedup, 3)
    params["timings"] = timings
    return ApproxPRDC(
        precision=float(ind.in_real.mean()),
        recall=float(ind.in_gen.mean()),
        density=float(ind.density_terms.mean()),
        coverage=float(ind.covered.mean()),
        k=k,
        n_real=int(n),
        n_gen=int(m),
        indicators=ind,
        real_radii=r_real,
        gen_radii=r_gen,
        real_knn=knn_real,
        gen_knn=knn_gen,
        params=params,
    )


def _dedup_plan(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Distinct vectors of ``x`` with their copies (:func:`distinct_rows`),
    or None when there are few exact duplicates: approximate PRDC then runs on distinct vectors with
    multiplicities."""
    return distinct_rows(identical_row_codes(x))


def _rows(x: np.ndarray, rows: np.ndarray, chunk: int = _ADD_CHUNK) -> np.ndarray:
    """``x[rows]`` as float32, gathered ``chunk`` rows at a time (a memory map is never read whole at once)."""
    out = np.empty((rows.size, x.shape[1]), dtype=np.float32)
    for s in range(0, rows.size, chunk):
        out[s : s + chunk] = x[rows[s : s + chunk]]
    return out


def _knn_with_copies(knn: np.ndarray, inv: np.ndarray, k: int, chunk: int = 65536) -> np.ndarray:
    """Row neighbour lists from distinct-vector lists: the row's other copies first (distance 0), then every
    copy of each neighbouring vector in order, the first ``k`` of them.

    ``knn``: (rows, k) ids of distinct vectors (-1: none), already one line per row; ``inv``: the distinct
    vector of each row.
    """
    n = inv.size
    order = np.argsort(inv, kind="stable")  # rows grouped by vector, ascending within a vector
    starts = np.searchsorted(inv[order], np.arange(int(inv.max()) + 2))
    j = np.arange(k + 1)[None, :]

    def copies(vec: np.ndarray) -> np.ndarray:  # (r, c) vectors -> (r, c * (k + 1)) rows, -1 padded
        v = np.maximum(vec, 0)[..., None]
        size = np.where(vec >= 0, starts[v[..., 0] + 1] - starts[v[..., 0]], 0)[..., None]
        pos = starts[v] + j
        return np.where(j < size, order[np.minimum(pos, n - 1)], -1).reshape(vec.shape[0], -1)

    out = np.empty((n, k), dtype=np.int64)
    for s in range(0, n, chunk):
        r = np.arange(s, min(n, s + chunk))
        own = copies(inv[r][:, None])
        own[own == r[:, None]] = -1  # not the row itself
        merged = np.concatenate([own, copies(knn[r])], axis=1)
        o = np.argsort(merged < 0, axis=1, kind="stable")  # keep the order, drop the -1 gaps
        out[r] = np.take_along_axis(merged, o, axis=1)[:, :k]
    return out


def _approx_core(real, gen, *, k, nlist, nprobe, seed, block, chunk, quantizer_threads, blas_threads, progress,
                 w_real=None, w_gen=None):
    """The IVF search of :func:`approx_prdc_indicators` on (distinct) rows with multiplicities ``w_*`` (None: 1).

    A vector with ``w`` copies has ``w - 1`` neighbours at distance 0 in its own set, so its radius is the
    ``(k - w + 1)``-th distance to the other vectors counted with their copies (0 when ``w > k``), and its
    ball counts for ``w`` balls.  Returns per-vector arrays in input order and a dict of parameters.
    """
    from contextlib import nullcontext

    n, m = real.shape[0], gen.shape[0]
    t0 = time.perf_counter()
    nu = n + m
    nl = default_nlist(nu) if nlist is None else max(1, min(int(nlist), nu))
    npb = DEFAULT_NPROBE if nprobe is None else max(1, int(nprobe))

    def task(desc, total, unit="pt"):
        if progress is None:
            return nullcontext(lambda n=1: None)
        return progress.task(desc, total=total, unit=unit)

    with task("approximate PRDC: IVF cells", None), _faiss_threads(_auto_threads(quantizer_threads)):
        rng = np.random.default_rng(seed)
        ts = min(nu, TRAIN_POINTS_PER_LIST * nl)
        pick = np.sort(rng.choice(nu, ts, replace=False))
        pr, pg = pick[pick < n], pick[pick >= n] - n
        sample = np.concatenate([_f32(real[pr]), _f32(gen[pg])], axis=0)
        cells = _Cells(sample, nl, seed)
        del sample
        R = _Sorted(real, cells)
        G = _Sorted(gen, cells)
        nl = cells.nlist
        npb = min(npb, nl)
        cand = cells.neighbours(nl if npb >= nl else min(nl, 2 * npb))
    timings = {"cells": round(time.perf_counter() - t0, 3)}

    flops = 0.0
    out = {}
    with task("approximate PRDC: IVF search", 2 * nu) as advance, _blas_threads(_auto_threads(blas_threads)):
        for name, Q, other, wq_in in (("real", R, G, w_real), ("gen", G, R, w_gen)):
            nq = Q.x.shape[0]
            wq = None if wq_in is None else np.asarray(wq_in, np.int64)[Q.order]  # copies, by sorted position
            radius = np.full(nq, np.inf, dtype=np.float32)
            knn = np.full((nq, k), -1, dtype=np.int64)
            hit_other = np.zeros(other.x.shape[0], dtype=np.int64)  # balls of Q containing each other point
            hit_q = np.zeros(nq, dtype=bool)  # Q's ball contains some other point
            probes_all = Q.probes(cells, npb, cand)
            for qs in range(0, nq, chunk):
                qe = min(qs + chunk, nq)
                probes = probes_all[qs:qe]
                keep = k + 2  # two spare candidates, re-ranked on exact distances below
                best_d = np.full((qe - qs, keep), np.inf, dtype=np.float32)
                best_i = np.full((qe - qs, keep), -1, dtype=np.int64)

                def radii_visit(c, rows, d2, ba):
                    own = np.nonzero(Q.home[qs + rows] == c)[0]
                    if own.size:  # the query itself: never its own neighbour
                        d2[own, qs + rows[own] - ba] = np.inf
                    kk = min(keep, d2.shape[1])
                    part = np.argpartition(d2, kk - 1, axis=1)[:, :kk] if kk < d2.shape[1] else \
                        np.broadcast_to(np.arange(d2.shape[1]), d2.shape)
                    cd = np.concatenate([best_d[rows], np.take_along_axis(d2, part, axis=1)], axis=1)
                    ci = np.concatenate([best_i[rows], part + ba], axis=1)
                    sel = np.argpartition(cd, keep - 1, axis=1)[:, :keep]
                    best_d[rows] = np.take_along_axis(cd, sel, axis=1)
                    best_i[rows] = np.take_along_axis(ci, sel, axis=1)

                flops += _cell_scan(Q, qs, probes, Q, nl, block, radii_visit)
                # exact distances of the kept candidates (float64 on the shifted rows, rounded like sklearn)
                found = np.isfinite(best_d)
                ex = _exact_sq(Q.x, np.arange(qs, qe)[:, None], Q.x, np.maximum(best_i, 0))
                ex[~found] = np.inf
                o = np.argsort(ex, axis=1, kind="stable")
                ex = np.take_along_axis(ex, o, axis=1)
                cand_i = np.take_along_axis(best_i, o, axis=1)
                knn[qs:qe] = cand_i[:, :k]
                if wq is None:
                    rad = np.sqrt(ex[:, k - 1])  # inf when fewer than k were found
                else:  # k-th neighbour counting copies: w - 1 of its own at 0, the others with their weights
                    need = k - (wq[qs:qe] - 1)
                    cum = np.cumsum(np.where(np.isfinite(ex), wq[np.maximum(cand_i, 0)], 0), axis=1)
                    pos = np.argmax(cum >= need[:, None], axis=1)
                    rad = np.sqrt(ex[np.arange(qe - qs), pos])
                    rad[cum[:, -1] < need] = np.inf
                    rad[need <= 0] = 0.0
                radius[qs:qe] = rad
                # rows with fewer than k neighbours in their cells: ball left empty here, done exactly later
                r2 = np.where(np.isfinite(rad), rad * rad, np.float32(-1.0)).astype(np.float32)

                def balls_visit(c, rows, d2, ba):
                    nb = d2.shape[1]
                    # float32 expansion error: well under 1e-5 (||q||^2 + ||b||^2); pairs that close to
                    # the radius are decided on exact distances (ties of copied points included)
                    tol = Q.norms[qs + rows][:, None] + other.norms[ba : ba + nb][None, :]
                    tol *= 1e-5
                    rr = r2[rows][:, None]
                    sure = d2 < rr - tol
                    band = (d2 < rr + tol) & ~sure
                    a, b = np.nonzero(band)
                    if a.size:
                        exd = np.sqrt(_exact_sq(Q.x, qs + rows[a], other.x, ba + b))
                        ok = exd < rad[rows[a]]
                        sure[a[ok], b[ok]] = True
                    a, b = np.nonzero(sure)
                    if a.size:
                        hit_q[qs + rows[a]] = True
                        if wq is None:
                            hit_other[ba : ba + nb] += np.bincount(b, minlength=nb)
                        else:  # a vector's ball counts once per copy
                            hit_other[ba : ba + nb] += np.bincount(b, weights=wq[qs + rows[a]], minlength=nb).astype(np.int64)

                flops += _cell_scan(Q, qs, probes, other, nl, block, balls_visit)
                advance(2 * (qe - qs))
            del probes_all
            out[name] = (radius, knn, hit_other, hit_q)
    timings["search"] = round(time.perf_counter() - t0 - timings["cells"], 3)

    # sorted positions -> original rows
    def unsort(side: _Sorted, a: np.ndarray) -> np.ndarray:
        res = np.empty_like(a)
        res[side.order] = a
        return res

    r_real, knn_real, counts_gen, covered = out["real"]
    r_gen, knn_gen, in_gen_count, _ = out["gen"]
    r_real, r_gen = unsort(R, r_real), unsort(G, r_gen)
    knn_real = unsort(R, np.where(knn_real >= 0, R.order[np.maximum(knn_real, 0)], -1))
    knn_gen = unsort(G, np.where(knn_gen >= 0, G.order[np.maximum(knn_gen, 0)], -1))
    counts = unsort(G, counts_gen)
    covered = unsort(R, covered)
    in_gen = unsort(R, in_gen_count > 0)
    del R, G, out
    info = {"nlist": int(nl), "nprobe": int(npb), "train_size": int(ts), "flops": flops, "timings": timings}
    return r_real, knn_real, counts, covered, in_gen, r_gen, knn_gen, info


def _recount(real, gen, r_real, r_gen, bad_r, bad_g, counts, covered, in_gen, block: int = 8192):
    """Ball contents of the few points whose radius needed the exact fallback (blocked, float32)."""
    shift = np.asarray(real[: min(real.shape[0], 4096)], dtype=np.float64).mean(axis=0)
    if bad_r.size:
        q = np.asarray(real[bad_r], dtype=np.float32)
        r2 = r_real[bad_r].astype(np.float32) ** 2
        for s, e, d2, _ in _Screen(gen, shift, block).tiles(q, with_tol=False):
            np.maximum(d2, 0, out=d2)
            inside = d2 < r2[:, None]
            covered[bad_r] |= inside.any(axis=1)
            counts[s:e] += inside.sum(axis=0)
    if bad_g.size:
        q = np.asarray(gen[bad_g], dtype=np.float32)
        r2 = r_gen[bad_g].astype(np.float32) ** 2
        for s, e, d2, _ in _Screen(real, shift, block).tiles(q, with_tol=False):
            np.maximum(d2, 0, out=d2)
            in_gen[s:e] |= (d2 < r2[:, None]).any(axis=0)


def approx_prdc(
    real: np.ndarray,
    gen: np.ndarray,
    *,
    k: int = 5,
    nlist: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
    block: int = 1 << 22,
    progress: Any = None,
) -> dict:
    """Approximate precision/recall/density/coverage (Kynkaanniemi et al. 2019; Naeem et al. 2020) as a JSON dict.

    :func:`approx_prdc_indicators` followed by :meth:`ApproxPRDC.summary`:
    ``{precision, recall, density, coverage, k, n_real, n_gen, params}``.
    """
    return approx_prdc_indicators(real, gen, k=k, nlist=nlist, nprobe=nprobe, seed=seed, block=block,
                                  progress=progress).summary()


# =========================================================================== exact check on a subsample


def _pair_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Float32 Euclidean distances of row pairs on sklearn's path (float64 ``aa - 2ab + bb``, cast, clip, sqrt).

    The arithmetic of ``sklearn.metrics.pairwise_distances`` that
    :mod:`collapse_audit.index` reproduces for :func:`collapse_audit.metrics.prdc`.
    """
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    s = -2.0 * np.einsum("ij,ij->i", a64, b64)
    s += np.einsum("ij,ij->i", a64, a64)
    s += np.einsum("ij,ij->i", b64, b64)
    d = s.astype(np.float32)
    np.maximum(d, 0, out=d)
    return np.sqrt(d)


class _TopK:
    """Running ``keep`` smallest values (and their column ids) per row over a stream of tiles."""

    def __init__(self, rows: int, keep: int):
        self.keep = keep
        self.d = np.full((rows, 0), np.inf, dtype=np.float32)
        self.ids = np.zeros((rows, 0), dtype=np.int64)

    def push(self, tile: np.ndarray, offset: int) -> None:
        kk = min(self.keep, tile.shape[1])
        part = np.argpartition(tile, kk - 1, axis=1)[:, :kk] if kk < tile.shape[1] else \
            np.broadcast_to(np.arange(tile.shape[1]), tile.shape)
        d = np.concatenate([self.d, np.take_along_axis(tile, part, axis=1)], axis=1)
        ids = np.concatenate([self.ids, part + offset], axis=1)
        if d.shape[1] > self.keep:
            part = np.argpartition(d, self.keep - 1, axis=1)[:, : self.keep]
            d = np.take_along_axis(d, part, axis=1)
            ids = np.take_along_axis(ids, part, axis=1)
        self.d, self.ids = d, ids


class _Screen:
    """Blocked float32 screening of queries against a whole base set (one pass over the base).

    Distances come from one float32 GEMM per tile on centred data
    (``||q - b||^2 = ||q||^2 + ||b||^2 - 2 q.b``, shifting both sets by the
    same vector so the norms stay small); every decision taken on them keeps
    a margin of ``tol`` in squared distance, and whatever lies within the
    margin is recomputed on the exact path.
    """

    def __init__(self, base: np.ndarray, shift: np.ndarray, block: int):
        self.base = base
        self.shift = shift.astype(np.float32)
        self.block = block

    def tiles(self, q: np.ndarray, with_tol: bool = True) -> Iterable[tuple[int, int, np.ndarray, np.ndarray | None]]:
        qc = np.asarray(q, dtype=np.float32) - self.shift
        qq = np.einsum("ij,ij->i", qc, qc)
        n = self.base.shape[0]
        for s in range(0, n, self.block):
            e = min(s + self.block, n)
            bc = np.asarray(self.base[s:e], dtype=np.float32) - self.shift
            bb = np.einsum("ij,ij->i", bc, bc)
            d2 = qc @ bc.T
            d2 *= -2.0
            d2 += qq[:, None]
            d2 += bb[None, :]
            # float32 rounding of the expansion: a few ulps of the norms (generous margin)
            tol = 1e-5 * (qq[:, None] + bb[None, :]) + 1e-30 if with_tol else None
            yield s, e, d2, tol


def _exact_knn_rows(x: np.ndarray, rows: np.ndarray, k: int, shift: np.ndarray, block: int,
                    margin: int = 16, q_chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact prdc radius (k-th neighbour, self excluded, sklearn's distances) and neighbour ids of ``x[rows]``.

    Float32 screening keeps the ``k + 1 + margin`` smallest per row over a
    full pass of ``x``; those are recomputed with :func:`_pair_dist`, the own
    entry set to 0 (sklearn zeroes the diagonal), and the row's ``k``-th
    entry after the own 0 is the radius, as ``prdc.compute_nearest_neighbour_distances``.
    """
    n = x.shape[0]
    keep = min(n, k + 1 + margin)
    radii = np.empty(rows.size, dtype=np.float32)
    nbrs = np.empty((rows.size, k), dtype=np.int64)
    scr = _Screen(x, shift, block)
    for qs in range(0, rows.size, q_chunk):
        r = rows[qs : qs + q_chunk]
        q = np.asarray(x[r], dtype=np.float32)
        top = _TopK(r.size, keep)
        for s, e, d2, _ in scr.tiles(q, with_tol=False):
            own = (r >= s) & (r < e)
            d2[np.nonzero(own)[0], r[own] - s] = -1.0  # the own entry always survives screening
            top.push(d2, s)
        cand = top.ids
        dist = _pair_dist(np.repeat(q, cand.shape[1], axis=0), x[cand.ravel()]).reshape(cand.shape)
        dist[cand == r[:, None]] = 0.0
        order = np.argsort(dist, axis=1, kind="stable")
        dist = np.take_along_axis(dist, order, axis=1)
        cand = np.take_along_axis(cand, order, axis=1)
        radii[qs : qs + r.size] = dist[:, k]
        # neighbour ids: the sorted candidates without the own row
        for j in range(r.size):
            ids = cand[j][cand[j] != r[j]]
            nbrs[qs + j] = ids[:k]
    return radii, nbrs


def _discordance_interval(b: int, c: int, n: int, alpha: float) -> tuple[float, float]:
    """Interval for ``(b - c) / n``, the paired difference of two proportions from its discordant counts.

    ``b`` = approx 1 / exact 0, ``c`` = approx 0 / exact 1.  Bonferroni
    combination of two Wilson (1927) score intervals at level ``alpha / 2``:
    ``[L_b - U_c, U_b - L_c]``; covers with probability >= 1 - alpha, and
    keeps a width of ~``3.7 / n`` when no discordant pair was seen.
    """
    lb, ub = wilson_interval(b, n, alpha / 2)
    lc, uc = wilson_interval(c, n, alpha / 2)
    return float(lb - uc), float(ub - lc)


def _binary_report(a: np.ndarray, e: np.ndarray, alpha: float) -> dict:
    a = a > 0
    e = e > 0
    n = int(a.size)
    b = int((a & ~e).sum())
    c = int((~a & e).sum())
    lo, hi = _discordance_interval(b, c, n, alpha)
    dlo, dhi = wilson_interval(b + c, n, alpha)
    return {
        "approx": float(a.mean()),
        "exact": float(e.mean()),
        "error": (b - c) / n,
        "error_ci": [lo, hi],
        "disagreement": (b + c) / n,
        "disagreement_ci": [float(dlo), float(dhi)],
        "n_approx_only": b,
        "n_exact_only": c,
        "n": n,
    }


def _mean_report(a: np.ndarray, e: np.ndarray, unit: float, alpha: float) -> dict:
    """Paired mean difference of a non-binary term (density): normal interval; below 10 disagreements,
    at least the Wilson bound of the disagreement rate times the largest difference (or ``unit``)."""
    from scipy.stats import norm

    diff = a - e
    n = int(diff.size)
    z = float(norm.ppf(1 - alpha / 2))
    se = float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else float("inf")
    nz = int(np.count_nonzero(diff))
    half = z * se
    if nz < 10:
        # too few disagreements for the normal interval: at least the Wilson upper bound
        # of the disagreement rate times the largest seen (or a one-ball) difference
        u = float(wilson_interval(nz, n, alpha)[1][()])
        half = max(half, u * max(float(np.abs(diff).max()) if nz else 0.0, unit))
    mean = float(diff.mean())
    dlo, dhi = wilson_interval(nz, n, alpha)
    return {
        "approx": float(a.mean()),
        "exact": float(e.mean()),
        "error": mean,
        "error_ci": [mean - half, mean + half],
        "disagreement": nz / n,
        "disagreement_ci": [float(dlo), float(dhi)],
        "n": n,
    }


def measure_approx_error(
    real: np.ndarray,
    gen: np.ndarray,
    approx: ApproxPRDC,
    *,
    k: int | None = None,
    n_sub: int = 2000,
    n_knn: int = 500,
    seed: int = 0,
    alpha: float = 0.05,
    block: int = 8192,
    blas_threads: int | str | None = "auto",
) -> dict:
    """Error of approximate PRDC against exact search, measured on a random subsample.

    Every PRDC metric is a mean of per-sample terms (precision and density
    over generated samples, recall and coverage over real ones), so the mean
    over a uniform random subsample of ``approx_term - exact_term`` is an
    unbiased estimate of ``approx_metric - exact_metric`` on the full sets.
    For ``n_sub`` generated and ``n_sub`` real samples (seeded), the exact
    terms are those of :func:`collapse_audit.metrics.prdc`:

    1. One blocked pass of the subsample against the whole other set (float32
       GEMM screening, ~``2 n_sub N D`` flops) lists, for each query, the
       base points whose *approximate* ball may contain it (an approximate
       k-NN list can only miss neighbours, so approximate radii are never
       smaller than exact ones and nothing is missed; margins of 1e-4 of the
       squared radius and 1e-5 of the squared norms cover float32 rounding)
       and, for real queries, the 8 nearest generated points.
    2. Exact k-NN radii of exactly those base points (and of the real
       queries, for coverage), by a blocked pass over the whole set:
       ~``2 n_sub (1 + k density) N D`` flops per side (~5 min per side at
       1M x 512 on 2 cores with ``n_sub = 2000``).
    3. Exact distances of the listed pairs on sklearn's path, strict ``<``.

    The approximate k-NN lists are checked against the exact ones on
    ``n_knn`` of the subsampled points per side (``knn_recall_at_k`` = mean
    share of the exact k neighbours the index found; ``radius_ratio_median``
    = median approximate / exact radius).

    Returns the ``metrics.approximation`` section of ``results.json``::

        {"method": "ivf-flat", "k": 5, "params": {nlist, nprobe, train_size, seed, timings, ...},
         "check": str, "n_sub": {"gen": int, "real": int}, "seed": int, "confidence": 0.95,
         "metrics": {"precision" | "recall" | "density" | "coverage": {
             "approx": float, "exact": float,        # subsample means of either method
             "error": float, "error_ci": [lo, hi],   # approx - exact, estimated, with interval
             "disagreement": float, "disagreement_ci": [lo, hi], "n": int,
             "n_approx_only": int, "n_exact_only": int}},   # (binary metrics only)
         "max_abs_error": float,                     # max over metrics of |error_ci| ends
         "knn_recall_at_k": {"real": float, "gen": float, "n": int},
         "radius_ratio_median": {"real": float, "gen": float},
         "exact_radii_computed": {"real": int, "gen": int}, "seconds": float}

    ``error_ci`` has level ``1 - alpha`` per metric (binary terms:
    Bonferroni combination of Wilson (1927) intervals of the two discordant
    proportions; density: normal interval of the paired mean difference,
    floored below 10 disagreements).  ``max_abs_error`` is therefore a
    per-metric bound, not a simultaneous one over the four.
    ``blas_threads`` as in :func:`approx_prdc_indicators`.
    """
    with _blas_threads(_auto_threads(blas_threads)):
        return _measure(real, gen, approx, k=k, n_sub=n_sub, n_knn=n_knn, seed=seed, alpha=alpha, block=block)


def _measure(real, gen, approx: ApproxPRDC, *, k, n_sub, n_knn, seed, alpha, block) -> dict:
    t0 = time.perf_counter()
    k = approx.k if k is None else int(k)
    n, m, d = _check_pair(real, gen, k)
    if (n, m) != (approx.n_real, approx.n_gen):
        raise ValueError("approx was computed on sets of a different size")
    rng = np.random.default_rng(seed)
    gs = np.sort(rng.choice(m, min(int(n_sub), m), replace=False))
    rs = np.sort(rng.choice(n, min(int(n_sub), n), replace=False))
    shift = np.asarray(real[np.sort(rng.choice(n, min(n, 4096), replace=False))], dtype=np.float64).mean(axis=0)

    # 1. screening passes -------------------------------------------------------------
    def screen_balls(q: np.ndarray, base: np.ndarray, base_r: np.ndarray, nearest: int = 0):
        """Pairs (query row, base id) with d < approx radius (with margin); plus the ``nearest`` closest base ids."""
        r2 = (base_r.astype(np.float64) ** 2 * (1 + 1e-4)).astype(np.float32)
        qi, bi = [], []
        top = _TopK(q.shape[0], nearest) if nearest else None
        for s, e, d2, tol in _Screen(base, shift, block).tiles(q):
            tol += r2[None, s:e]
            a, b = np.nonzero(d2 < tol)
            qi.append(a)
            bi.append(b + s)
            if top is not None:
                top.push(d2, s)
        return np.concatenate(qi), np.concatenate(bi), (top.ids if top is not None else None)

    qg = np.asarray(gen[gs], dtype=np.float32)
    qr = np.asarray(real[rs], dtype=np.float32)
    g_q, g_b, _ = screen_balls(qg, real, approx.real_radii)  # gen queries vs real balls
    r_q, r_b, r_nn = screen_balls(qr, gen, approx.gen_radii, nearest=8)  # real queries vs gen balls, + NN

    # 2. exact radii of the base points that matter -----------------------------------
    knn_r_rows = np.sort(rng.choice(rs, min(int(n_knn), rs.size), replace=False))
    knn_g_rows = np.sort(rng.choice(gs, min(int(n_knn), gs.size), replace=False))
    need_real = np.unique(np.concatenate([g_b, rs]))
    need_gen = np.unique(np.concatenate([r_b, knn_g_rows]))
    rad_real, _ = _exact_knn_rows(real, need_real, k, shift, block)
    rad_gen, _ = _exact_knn_rows(gen, need_gen, k, shift, block)

    def lookup(need, values, ids):
        return values[np.searchsorted(need, ids)]

    # 3. exact indicators -------------------------------------------------------------
    ex_count = np.zeros(gs.size, dtype=np.int64)
    if g_q.size:
        dd = _pair_dist(qg[g_q], real[g_b])
        inside = dd < lookup(need_real, rad_real, g_b)
        np.add.at(ex_count, g_q[inside], 1)
    ex_in_gen = np.zeros(rs.size, dtype=bool)
    if r_q.size:
        dd = _pair_dist(qr[r_q], gen[r_b])
        inside = dd < lookup(need_gen, rad_gen, r_b)
        ex_in_gen[r_q[inside]] = True
    nn_d = _pair_dist(np.repeat(qr, r_nn.shape[1], axis=0), gen[r_nn.ravel()]).reshape(r_nn.shape).min(axis=1)
    ex_covered = nn_d < lookup(need_real, rad_real, rs)

    ind = approx.indicators
    metrics = {
        "precision": _binary_report(ind.in_real[gs], (ex_count > 0).astype(np.float64), alpha),
        "density": _mean_report(ind.density_terms[gs], ex_count / float(k), 1.0 / k, alpha),
        "recall": _binary_report(ind.in_gen[rs], ex_in_gen.astype(np.float64), alpha),
        "coverage": _binary_report(ind.covered[rs], ex_covered.astype(np.float64), alpha),
    }

    def knn_recall(rows, approx_knn, need, rad, x):
        """Share of the approximate neighbours that are true k-NN: distance <= the exact k-th distance.

        Judged by distance, not by id, so that among tied neighbours (exact copies) any is right."""
        if rows.size == 0:
            return None
        exact_r = rad[np.searchsorted(need, rows)].astype(np.float64)
        found = approx_knn[rows]
        ok = (found >= 0) & (found != rows[:, None])
        q = np.asarray(x[rows], dtype=np.float32)
        dist = _pair_dist(np.repeat(q, found.shape[1], axis=0), x[np.maximum(found, 0).ravel()]).reshape(found.shape)
        hits = ok & (dist.astype(np.float64) <= exact_r[:, None] * (1 + 1e-6))
        return float(hits.sum(axis=1).mean() / k)

    def radius_ratio(rows, approx_r, need, rad):
        ex = rad[np.searchsorted(need, rows)].astype(np.float64)
        ap = approx_r[rows].astype(np.float64)
        ok = ex > 0
        return float(np.median(ap[ok] / ex[ok])) if ok.any() else None

    return {
        "method": approx.params.get("method"),
        "k": int(k),
        "params": dict(approx.params),
        "check": "exact blocked search (sklearn distances, strict <) on a seeded random subsample",
        "n_sub": {"gen": int(gs.size), "real": int(rs.size)},
        "seed": int(seed),
        "confidence": 1 - float(alpha),
        "metrics": metrics,
        "max_abs_error": float(max(max(abs(v["error_ci"][0]), abs(v["error_ci"][1])) for v in metrics.values())),
        "knn_recall_at_k": {
            "real": knn_recall(knn_r_rows, approx.real_knn, need_real, rad_real, real),
            "gen": knn_recall(knn_g_rows, approx.gen_knn, need_gen, rad_gen, gen),
            "n": int(max(knn_r_rows.size, knn_g_rows.size)),
        },
        "radius_ratio_median": {
            "real": radius_ratio(rs, approx.real_radii, need_real, rad_real),
            "gen": radius_ratio(knn_g_rows, approx.gen_radii, need_gen, rad_gen),
        },
        "exact_radii_computed": {"real": int(need_real.size), "gen": int(need_gen.size)},
        "seconds": round(time.perf_counter() - t0, 3),
    }


# =========================================================================== choosing exact or approximate


def estimate_prdc_memory(n_real: int, n_gen: int, d: int, *, method: str = "exact", k: int = 5,
                         block_size: int = 4096, nprobe: int = DEFAULT_NPROBE) -> int:
    """Rough peak bytes of the PRDC stage (``method`` ``"exact"`` or ``"approx"``).

    Both feature sets in float32 (memory-mapped pages count once touched),
    plus for exact PRDC one FAISS copy of the larger set and three float64
    ``block_size``-square tiles, for approximate PRDC the cell-sorted copy of
    both sets, ``nprobe`` cell ids per point of one side and the distance
    tiles; per-point radii, neighbour ids and flags; ~300 MiB of interpreter
    and libraries.
    """
    n_real, n_gen, d = int(n_real), int(n_gen), int(d)
    feats = (n_real + n_gen) * d * 4
    per_point = (n_real + n_gen) * (4 + 8 * (k + 2) + 16)
    if method == "exact":
        extra = max(n_real, n_gen) * d * 4 + 3 * 8 * block_size * block_size + 8192 * (k + 17) * 12
    else:
        chunk = 1 << 18
        extra = feats + max(n_real, n_gen) * nprobe * 4 + chunk * nprobe * 16 + 6 * 4 * (1 << 22) + 3 * 4 * 2048 * 8192
    return int(feats + per_point + extra + 300 * 2**20)


def choose_method(
    n_real: int,
    n_gen: int,
    d: int,
    *,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    exact_max_pairs: float = DEFAULT_EXACT_MAX_PAIRS,
    k: int = 5,
) -> str:
    """``"exact"`` or ``"approx"`` PRDC for the given sizes.

    Rule: exact (:func:`collapse_audit.metrics.prdc`, equal to the prdc
    package) while

    * ``n_real * n_gen <= exact_max_pairs`` (default 2.5e9 = 50k x 50k): its
      blocked float64 scan costs ~2 N M D flops, about 3 minutes at D = 512
      on 2 cores (1M x 1M would take ~18 h);
    * ``max(n_real, n_gen)^2 <= 4 exact_max_pairs`` (100k at the default):
      its k-NN radii come from an exact FAISS self-search, N^2 D flops in
      float32 BLAS (~4x cheaper per pair than the scan), which dominates
      when one side is much larger than the other;
    * its estimated memory (:func:`estimate_prdc_memory`) fits
      ``memory_budget_bytes``;

    approximate (:func:`approx_prdc_indicators`, IVF-Flat) otherwise.
    """
    n_real, n_gen = int(n_real), int(n_gen)
    pairs = float(n_real) * float(n_gen)
    self_pairs = float(max(n_real, n_gen)) ** 2
    if (pairs <= float(exact_max_pairs) and self_pairs <= 4 * float(exact_max_pairs)
            and estimate_prdc_memory(n_real, n_gen, d, method="exact", k=k) <= memory_budget_bytes):
        return "exact"
    return "approx"


PRDC_METHODS = ("auto", "exact", "approx")


def prdc(
    real: np.ndarray,
    gen: np.ndarray,
    *,
    k: int = 5,
    method: str = "auto",
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    exact_max_pairs: float = DEFAULT_EXACT_MAX_PAIRS,
    nlist: int | None = None,
    nprobe: int | None = None,
    n_sub: int = 2000,
    seed: int = 0,
    progress: Any = None,
):
    """Precision/recall (Kynkaanniemi et al. 2019) and density/coverage (Naeem et al. 2020), one entry point.

    ``method="exact"``: :func:`collapse_audit.metrics.prdc` (blocked exact
    search, equal to the ``prdc`` package); ``"approx"``: FAISS IVF search
    (:func:`approx_prdc_indicators`) with its error measured against exact
    search on ``n_sub`` seeded samples per side (:func:`measure_approx_error`);
    ``"auto"`` (default) picks by :func:`choose_method`, the way
    scikit-learn's ``NearestNeighbors(algorithm="auto")`` does, and the result
    records which backend ran.

    Parameters
    ----------
    real : (N, D) array, N > k.  gen : (M, D) array, M > k.
    k : neighbourhood size (``nearest_k``).
    method : ``"auto"`` | ``"exact"`` | ``"approx"``.
    exact_max_pairs, memory_budget_bytes : the ``"auto"`` rule's limits.
    nlist, nprobe, n_sub, seed : the approximate backend's index and error check.

    Returns
    -------
    :class:`collapse_audit.metrics.PRDCResult` with ``method``, the per-sample
    ``indicators`` and, for ``"approx"``, the measured ``approximation``.
    """
    if method not in PRDC_METHODS:
        raise ValueError(f"method must be one of {', '.join(PRDC_METHODS)}, got {method!r}")
    n, m, d = _check_pair(real, gen, int(k))
    chosen = choose_method(n, m, d, memory_budget_bytes=memory_budget_bytes, exact_max_pairs=exact_max_pairs, k=k) \
        if method == "auto" else method
    if chosen == "exact":
        return M.prdc(real, gen, k=k, progress=progress)
    a = approx_prdc_indicators(real, gen, k=k, nlist=nlist, nprobe=nprobe, seed=seed, progress=progress)
    with (progress or ProgressReporter()).task("approximate PRDC: exact check on a subsample", total=None, unit="pt"):
        check = measure_approx_error(real, gen, a, n_sub=n_sub, seed=seed)
    return M.PRDCResult(precision=a.precision, recall=a.recall, density=a.density, coverage=a.coverage, k=int(k),
                        n_real=n, n_gen=m, method="approx", indicators=a.indicators, approximation=check)


# =========================================================================== helpers for the analyses


#: Searches run once per distinct vector when a vector has more copies than this (see :func:`distinct_rows`).
DEDUP_MAX_COPIES = 64


def _row_hash(x: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """64-bit hash of each row's float32 bit pattern (per-column odd multipliers, xor-folded)."""
    n, d = x.shape
    mult = np.random.default_rng(0x5EED).integers(1, 2**63, size=d, dtype=np.uint64) | np.uint64(1)
    h = np.empty(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for s in range(0, n, chunk):
            bits = np.ascontiguousarray(x[s : s + chunk], dtype=np.float32).view(np.uint32).astype(np.uint64)
            bits *= mult[None, :]
            h[s : s + chunk] = np.bitwise_xor.reduce(bits ^ (bits >> np.uint64(29)), axis=1)
    return h


def identical_row_codes(x: np.ndarray, *, chunk: int = 65536) -> np.ndarray:
    """Code of every row such that rows get the same code exactly when they are bit-identical.

    A 64-bit multiplicative hash of each row's float32 bit pattern (chunked,
    O(N D), no sort of the rows themselves), then every hash bucket is checked
    row by row against its first member, so a hash collision can never join
    two different rows.  Used to join exact feature duplicates (a completely
    collapsed generator writes the same image many times) without a
    neighbour search among them.
    """
    h = _row_hash(x, chunk)
    _, first_of_bucket, codes = np.unique(h, return_index=True, return_inverse=True)
    codes = codes.ravel().astype(np.int64)
    sizes = np.bincount(codes)
    shared = np.nonzero(sizes[codes] >= 2)[0]
    if shared.size:  # verify every bucket against its first row; a bucket that mixes rows is split exactly
        ref = first_of_bucket[codes[shared]]
        mixed = []
        for s in range(0, shared.size, chunk):
            rows, refs = shared[s : s + chunk], ref[s : s + chunk]
            differ = (np.asarray(x[rows], np.float32) != np.asarray(x[refs], np.float32)).any(axis=1)
            mixed.append(codes[rows[differ]])
        nxt = int(codes.max()) + 1
        for c in np.unique(np.concatenate(mixed)):  # true 64-bit collisions: essentially never
            members = np.nonzero(codes == c)[0]
            sub = np.unique(np.asarray(x[members], np.float32), axis=0, return_inverse=True)[1].ravel()
            codes[members] = nxt + sub
            nxt += int(sub.max()) + 1
    return codes


def distinct_rows(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(first row of each distinct vector, vector of each row, copies of each vector)`` for the codes of
    :func:`identical_row_codes`, when rows repeat enough to be worth searching once per vector (more than 1%
    copies, or a vector repeated more than :data:`DEDUP_MAX_COPIES` times); else None.  A collapsed generator's
    repeated output would otherwise fill one IVF cell and make every search in it quadratic."""
    _, first, inv, w = np.unique(codes, return_index=True, return_inverse=True, return_counts=True)
    n = codes.size
    if first.size == n or (n - first.size <= 0.01 * n and w.max() <= DEDUP_MAX_COPIES):
        return None
    return first.astype(np.int64), inv.ravel().astype(np.int64), w.astype(np.int64)


# =========================================================================== writing big feature files


def write_features_streaming(
    path: str | os.PathLike,
    chunks: Iterable[np.ndarray],
    n: int,
    d: int,
    *,
    paths: Sequence[str] | None = None,
    embedder_id: str = "unknown",
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write an embeddings ``.npz`` (the format of :mod:`collapse_audit.features`) from feature chunks.

    ``np.savez`` needs the whole array in memory; this writes the
    ``features.npy`` member of the (uncompressed, ZIP64) archive chunk by
    chunk, so memory stays at one chunk.  ``chunks`` must yield float32-castable
    ``(b, d)`` arrays totalling ``n`` rows.  The file is memory-mappable by
    :func:`collapse_audit.features.load_features_mmap`.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        _write_npz(tmp, chunks, int(n), int(d), paths, embedder_id, extra)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def _write_npz(tmp: Path, chunks, n: int, d: int, paths, embedder_id: str, extra) -> None:
    written = 0
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("features.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": (int(n), int(d))}
            )
            for c in chunks:
                c = np.ascontiguousarray(c, dtype=np.float32)
                if c.ndim != 2 or c.shape[1] != d:
                    raise ValueError(f"chunk of shape {c.shape} does not have {d} columns")
                written += c.shape[0]
                if written > n:
                    raise ValueError(f"chunks hold more than n={n} rows")
                f.write(c.tobytes())
        if written != n:
            raise ValueError(f"chunks held {written} rows, expected {n}")
        arrays = {"paths": np.array(list(paths) if paths is not None else [f"#{i}" for i in range(n)], dtype=str),
                  "embedder_id": np.array(embedder_id)}
        arrays.update(extra or {})
        for name, arr in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)
