"""Nearest-neighbour questions over feature sets, without an N x N matrix.

Two kinds of helper live here:

* FAISS searches (:func:`knn`) for "which points are closest" questions
  (duplicates, copies of the training set, cluster assignment, kNN radii).
  ``faiss.IndexFlatL2`` is exact up to float32 rounding and returns *squared*
  distances; :func:`knn` returns Euclidean ones.
* Exact, blocked distance scans (:func:`kth_neighbour_distance`,
  :func:`radius_scan`, :func:`count_within_radii`) that reproduce, bit for
  bit on float32 input, the distances that ``sklearn.metrics.pairwise_distances``
  (metric ``"euclidean"``) computes, which is what the ``prdc`` package
  (Naeem et al. 2020) compares.  That matters because PRDC is a count of
  strict inequalities ``d(x, y) < r``; a distance computed along another path
  can land on the other side of a near-tie and change the count.

The sklearn formula, for float32 input, is: upcast to float64;
``s = (-2 * (x @ y.T) + ||x||^2) + ||y||^2`` with ``||.||^2`` summed by
``np.einsum("ij,ij->i")``; cast ``s`` to float32; clip at 0; zero the diagonal
of a self-distance matrix; ``sqrt`` in float32.  For float64 input the same in
float64 without the casts.  Memory is bounded by ``block`` x ``block`` float64
tiles (``block=4096`` is 128 MiB), whatever the number of points.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

__all__ = [
    "RadiusScan",
    "as_f32",
    "check_rows",
    "flat_index",
    "is_unit_rows",
    "kmeans",
    "nearest_centroid",
    "normalise_rows",
    "unit_rows",
    "count_within_radii",
    "distance_dtype",
    "knn",
    "kth_neighbour_distance",
    "radius_scan",
]

DEFAULT_BLOCK = 4096
_U32 = 2.0**-24  # unit round-off of float32
#: Smallest float64 that rounds to float32 infinity: the midpoint between
#: float32's largest finite value (2**128 - 2**104) and 2**128, which a tie
#: sends to the even neighbour, 2**128, i.e. inf.
_F32_OVERFLOW = 2.0**128 - 2.0**103
#: Most ulp steps any loop of :func:`_strict_thresholds` may take; every
#: float32 radius and 80 M random float64 ones need at most 1 (see there),
#: so reaching this is a bug, reported as such rather than looping on.
_MAX_ULP_STEPS = 16



# --------------------------------------------------------------------------- primitives
# The one set of row helpers the package uses (scale, analyses, report, labels):
# float32 coercion, validation, L2 normalisation, exact FAISS indexes, k-means.

_CHUNK = 65536


def as_f32(x: np.ndarray) -> np.ndarray:
    """C-contiguous float32 view or copy of ``x`` (what FAISS takes)."""
    return np.ascontiguousarray(x, dtype=np.float32)


def check_rows(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` as an array after checking it is non-empty 2-D and finite (checked in chunks: no full-size temporaries)."""
    x = x if isinstance(x, np.ndarray) else np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (n_samples, n_features); got shape {x.shape}")
    for s in range(0, x.shape[0], _CHUNK):
        if not np.isfinite(x[s : s + _CHUNK]).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    return x


def normalise_rows(x: np.ndarray, *, chunk: int = _CHUNK, dtype=np.float32) -> np.ndarray:
    """L2-normalised copy of the rows of ``x`` (cosine geometry), computed ``chunk`` rows at a time.

    ``x / max(||x||, 1e-12)`` with norms summed in float64; the output is
    ``dtype`` (float32 by default).  Memory is the output plus one chunk,
    where ``np.linalg.norm`` on the whole array needs float64 temporaries of
    the whole array (8 GiB at 1M x 512).  A 1-D ``x`` is one row.
    """
    a = np.asarray(x) if not hasattr(x, "shape") else x
    if np.ndim(a) == 1:
        return normalise_rows(np.asarray(a)[None, :], chunk=chunk, dtype=dtype)[0]
    n, d = np.shape(a)
    out = np.empty((n, d), dtype=dtype)
    for s in range(0, n, chunk):
        b = np.asarray(a[s : s + chunk], dtype=np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", b, b))
        b /= np.maximum(norms, 1e-12)[:, None]
        out[s : s + chunk] = b
    return out


def is_unit_rows(x: np.ndarray, tol: float = 1e-6, chunk: int = _CHUNK) -> bool:
    """True for an in-memory C-contiguous float32 array whose rows all have norm 1 within ``tol``."""
    if not isinstance(x, np.ndarray) or isinstance(x, np.memmap) or x.dtype != np.float32 or not x.flags.c_contiguous:
        return False
    for s in range(0, x.shape[0], chunk):
        b = x[s : s + chunk]
        if np.abs(np.einsum("ij,ij->i", b, b, dtype=np.float64) - 1.0).max() > tol:
            return False
    return True


def unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    """Checked, L2-normalised float32 rows; ``x`` itself when it already is such (no second copy at 1M rows)."""
    x = check_rows(x, name)
    return x if is_unit_rows(x) else normalise_rows(x)


def flat_index(x: np.ndarray, metric: str = "l2", *, chunk: int = _CHUNK):
    """Exact FAISS index (``IndexFlatL2`` or, for ``metric="ip"``, ``IndexFlatIP``) over the rows of ``x``."""
    import faiss

    if metric not in ("l2", "ip"):
        raise ValueError(f"metric must be 'l2' or 'ip', got {metric!r}")
    d = int(np.shape(x)[1])
    index = faiss.IndexFlatL2(d) if metric == "l2" else faiss.IndexFlatIP(d)
    for s in range(0, np.shape(x)[0], chunk):
        index.add(as_f32(x[s : s + chunk]))
    return index


def nearest_centroid(centroids: np.ndarray, x: np.ndarray, *, block: int = _CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row of ``x``: (ids int64, squared L2 distances float32), exact, in query blocks."""
    c = as_f32(centroids)
    if np.shape(x)[1] != c.shape[1]:
        raise ValueError(f"features have dimension {np.shape(x)[1]} but the centroids {c.shape[1]}")
    index = flat_index(c)
    n = np.shape(x)[0]
    ids = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float32)
    for s in range(0, n, block):
        d, i = index.search(as_f32(x[s : s + block]), 1)
        ids[s : s + block] = i[:, 0]
        dist[s : s + block] = d[:, 0]
    return ids, dist


def kmeans(x: np.ndarray, k: int, *, seed: int, niter: int, init: np.ndarray | None = None,
           max_points_per_centroid: int | None = None) -> np.ndarray:
    """FAISS k-means (Lloyd, ``nredo=1``, seeded) centroids (k, D) float32; the mean when ``k <= 1``.

    ``init`` gives the starting centroids (e.g. k-means++); FAISS trains on a
    seeded subsample of ``max_points_per_centroid * k`` rows when there are
    more (default: no subsampling).
    """
    import faiss

    x = as_f32(x)
    if k <= 1 or x.shape[0] <= 1:
        return x.mean(axis=0, keepdims=True).astype(np.float32)
    k = min(int(k), x.shape[0])
    mppc = max(1, -(-x.shape[0] // k)) if max_points_per_centroid is None else int(max_points_per_centroid)
    km = faiss.Kmeans(x.shape[1], k, niter=int(niter), nredo=1, seed=int(seed), verbose=False,
                      min_points_per_centroid=1,  # small sets are fine; silences FAISS warnings
                      max_points_per_centroid=mppc)
    if init is None:
        km.train(x)
    else:
        km.train(x, init_centroids=as_f32(init))
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


# --------------------------------------------------------------------------- helpers


def distance_dtype(*arrays: np.ndarray) -> np.dtype:
    """The dtype sklearn returns distances in: float32 if every input is float32, else float64."""
    return np.dtype(np.float32) if all(a.dtype == np.float32 for a in arrays) else np.dtype(np.float64)


def _as_features(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_samples, n_features); got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    x = np.ascontiguousarray(x)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    _check_magnitude(x, name, x.dtype)
    return x


def _check_magnitude(x: np.ndarray, name: str, dtype, why: str = "") -> None:
    """Refuse features whose squared distances can overflow ``dtype`` (or are not finite).

    Every squared distance between rows of sets whose row norms are at most
    ``M`` is at most ``4 M^2``, and so is each term of the expansion
    ``||a||^2 + ||b||^2 - 2 a.b`` that sklearn (float64, then cast to
    ``dtype``) and FAISS (float32) evaluate; with a margin for rounding
    (Higham's gamma for ``D`` terms in float32) ``4 M^2`` must stay below
    ``dtype``'s largest value. Checking each set against that bound covers
    the cross distances between two checked sets too (``(M_a + M_b)^2 <=
    4 max(M_a, M_b)^2``). Beyond it distances become ``inf`` (or FAISS's
    ``inf - inf = nan``) and counts and radii are meaningless, so this raises
    ``ValueError`` instead. Features of an ordinary embedder (norms ~1 to
    ~100) pass on the first, allocation-free test of the largest value.
    """
    if x.size == 0:
        return
    dtype = np.dtype(dtype)
    lo, hi = float(x.min()), float(x.max())  # no N x D temporaries
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or infinite values")
    amax = max(-lo, hi)
    d = x.shape[1] if x.ndim == 2 else 1
    gamma = (d + 4) * _U32 / (1 - (d + 4) * _U32) if (d + 4) * _U32 < 0.5 else 1.0
    limit = float(np.finfo(dtype).max) / (4.0 * (1.0 + 2.0 * gamma))  # bound on M^2
    with np.errstate(over="ignore"):
        if d * amax * amax <= limit:  # M^2 <= d * max|x|^2
            return
        m2 = 0.0
        rows = x.reshape(x.shape[0], -1)
        for s in range(0, rows.shape[0], DEFAULT_BLOCK):
            m2 = max(m2, float(_sq_norms(rows[s : s + DEFAULT_BLOCK].astype(np.float64)).max()))
    if m2 <= limit:
        return
    raise ValueError(
        f"{name} features have values up to {amax:.1e} whose squared distances can overflow"
        f" {dtype.name}; rescale the features (row norms up to {np.sqrt(m2):.1e}: squared"
        f" distances must stay below {np.finfo(dtype).max:.1e}{why})"
    )


@contextlib.contextmanager
def _faiss_threads(n_threads: int | None) -> Iterator[None]:
    """Temporarily set FAISS's OpenMP thread count (restored on exit); ``None`` leaves it alone."""
    import faiss

    if n_threads is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, int(n_threads)))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _sq_norms(x64: np.ndarray) -> np.ndarray:
    # sklearn.utils.extmath.row_norms(X, squared=True) for dense X
    return np.einsum("ij,ij->i", x64, x64)


def _to_distance(s: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """sklearn's last steps: cast the float64 squared distances, clip at 0, sqrt (in ``dtype``)."""
    d = s.astype(dtype, copy=True)
    np.maximum(d, 0, out=d)
    return np.sqrt(d, out=d)


def _strict_thresholds(radii: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float64 thresholds ``t`` with ``s < t``  <=>  ``sqrt(max(dtype(s), 0)) < r`` (computed in ``dtype``).

    Lets the blocked scans compare raw float64 squared distances ``s`` without
    casting and taking square roots of every tile, while giving exactly the
    answer of prdc's ``distance < radius`` on sklearn's distances.  Both maps
    (cast to ``dtype`` with round-to-nearest, then sqrt) are monotone, so the
    set ``{s : predicate}`` is a down-set and has such a threshold.

    Every input gives an answer in a bounded number of steps:

    * ``r <= 0`` or NaN: the predicate never holds, ``t = -inf``.
    * ``r`` so large (``+inf`` included) that no finite ``q`` in ``dtype`` has
      ``sqrt(q) >= r``: the predicate holds exactly when ``dtype(s)`` is
      finite, so ``t = inf`` for float64 and, for float32, the smallest
      float64 that rounds to float32 infinity, ``2**128 - 2**103``.  (Before
      this case was handled, float32 radii from about 1.8e19 up, whose
      squares overflow float32, made the last loop step down from float64's
      largest value one ulp at a time: for ever.)
    * otherwise: ``q``, the smallest ``dtype`` value with ``sqrt(q) >= r``, is
      found by ulp steps from ``dtype(r**2)`` (``r**2`` is exact in float64
      for float32 ``r``, rounded once for float64 ``r``).  ``sqrt`` is
      correctly rounded, so ``sqrt(q) >= r`` iff ``q`` is at least about
      ``(r - g/2)**2 ~ r**2 (1 - g/r)``, ``g`` the gap below ``r``; ``g/r``
      is at most 2 unit round-offs and the gap of ``q`` near ``r**2`` at
      least one, so ``q`` is within a few steps of ``dtype(r**2)`` (subnormal
      squares: ``sqrt`` of neighbours are far apart, one step).  Float32's
      threshold in float64 is then the midpoint between ``q`` and its
      float32 predecessor, computed exactly, which rounds to one of the two:
      at most 1 more step.  Measured: at most 1 step per loop over every
      positive float32 (exhaustively: [1, 4), which repeats exactly at every
      power of 4, and all radii whose squares are subnormal, underflow or
      overflow) and over 80 M random float64 bit patterns.

    Each loop stops after :data:`_MAX_ULP_STEPS` steps with an error, so a
    flaw in this argument surfaces as an exception, never a hang.
    """
    dtype = np.dtype(dtype)
    r = np.asarray(radii, dtype=dtype)
    t = np.full(r.shape, -np.inf, dtype=np.float64)
    pos = r > 0
    if not pos.any():
        return t
    rp = r[pos]
    zero, inf = dtype.type(0), dtype.type(np.inf)
    with np.errstate(over="ignore"):  # r**2 may overflow dtype: q = inf is handled below
        q = (rp.astype(np.float64) ** 2).astype(dtype)
    # smallest q (in dtype, +inf when no finite one will do) with sqrt(q) >= r
    q = _ulp_walk(q, lambda q: np.sqrt(np.nextafter(q, zero)) >= rp, lambda q: np.nextafter(q, zero), "q down")
    q = _ulp_walk(q, lambda q: np.sqrt(q) < rp, lambda q: np.nextafter(q, inf), "q up")
    if dtype == np.float64:
        t[pos] = q  # +inf where q is: every finite s passes, as sqrt(s) < r there
        return t
    # smallest float64 x with float32(x) >= q: start at the midpoint below q
    finite = np.isfinite(q)
    q64 = q.astype(np.float64)
    prev = np.nextafter(q, np.float32(0)).astype(np.float64)
    x = np.where(finite, (prev + q64) / 2.0, _F32_OVERFLOW)  # exact: both are float32 values
    with np.errstate(over="ignore"):  # x near _F32_OVERFLOW rounds to float32 inf, as intended
        x = _ulp_walk(x, lambda x: x.astype(np.float32) < q, lambda x: np.nextafter(x, np.inf), "x up")
        x = _ulp_walk(
            x, lambda x: np.nextafter(x, -np.inf).astype(np.float32) >= q, lambda x: np.nextafter(x, -np.inf), "x down"
        )
    t[pos] = x
    return t


def _ulp_walk(v: np.ndarray, needs_step, step, what: str) -> np.ndarray:
    """Apply ``step`` where ``needs_step`` holds until it holds nowhere, at most ``_MAX_ULP_STEPS`` times."""
    for steps in range(_MAX_ULP_STEPS + 1):
        m = needs_step(v)
        if not m.any():
            return v
        if steps == _MAX_ULP_STEPS:
            break
        v = np.where(m, step(v), v)
    raise RuntimeError(f"_strict_thresholds: '{what}' did not settle in {_MAX_ULP_STEPS} ulp steps (a bug)")


def _cross_sq_block(xb64: np.ndarray, xx: np.ndarray, yb64_neg2: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Float64 squared distances of one tile, in sklearn's order of operations.

    ``yb64_neg2`` is ``-2 * y`` (scaling by -2 is exact, so ``x @ (-2 y).T``
    equals sklearn's ``-2 * (x @ y.T)`` bit for bit).
    """
    s = xb64 @ yb64_neg2.T
    s += xx[:, None]
    s += yy[None, :]
    return s


# --------------------------------------------------------------------------- FAISS kNN


def knn(
    queries: np.ndarray,
    base: np.ndarray,
    k: int,
    *,
    exclude_self: bool = False,
    block: int = 16384,
    n_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours in Euclidean distance with FAISS (``IndexFlatL2``).

    Parameters
    ----------
    queries : (M, D) array; cast to float32 for FAISS.
    base : (N, D) array.
    k : neighbours per query (capped at the number available).
    exclude_self : ``queries`` and ``base`` are the same set (row i is point i);
        drop each query's own entry.  With exact duplicates the dropped entry
        is the query index itself when FAISS returns it, else the farthest one.
    block : queries per FAISS call (bounds the result buffers).
    n_threads : FAISS OpenMP threads for this call (``None``: FAISS's default).

    Returns
    -------
    dist : (M, k) float32 Euclidean distances ``sqrt(max(||q - b||^2, 0))``,
        ascending (FAISS returns squared L2; this takes the root).
    idx : (M, k) int64 indices into ``base``.
    """
    import faiss

    q = as_f32(queries)
    b = as_f32(base)
    if q.ndim != 2 or b.ndim != 2 or q.shape[1] != b.shape[1]:
        raise ValueError(f"queries {q.shape} and base {b.shape} must be 2-D with the same number of columns")
    if exclude_self and q.shape[0] != b.shape[0]:
        raise ValueError("exclude_self needs queries and base to be the same set")
    _check_magnitude(q, "query", np.float32, "; FAISS searches in float32")
    _check_magnitude(b, "base", np.float32, "; FAISS searches in float32")
    k_eff = min(int(k), b.shape[0] - (1 if exclude_self else 0))
    if k_eff < 1:
        raise ValueError(f"k={k} leaves no neighbours for a base of {b.shape[0]} points")
    k_search = k_eff + (1 if exclude_self else 0)
    dist = np.empty((q.shape[0], k_eff), dtype=np.float32)
    idx = np.empty((q.shape[0], k_eff), dtype=np.int64)
    with _faiss_threads(n_threads):
        index = faiss.IndexFlatL2(b.shape[1])
        index.add(b)
        for s in range(0, q.shape[0], block):
            e = min(s + block, q.shape[0])
            d2, ii = index.search(q[s:e], k_search)
            if exclude_self:
                own = ii == np.arange(s, e)[:, None]
                # drop the own entry if present, else the last column
                drop = np.where(own.any(axis=1), own.argmax(axis=1), k_search - 1)
                keep = np.ones_like(own)
                keep[np.arange(e - s), drop] = False
                d2 = d2[keep].reshape(e - s, k_eff)
                ii = ii[keep].reshape(e - s, k_eff)
            np.maximum(d2, 0, out=d2)
            dist[s:e] = np.sqrt(d2)
            idx[s:e] = ii
    return dist, idx


# --------------------------------------------------------------------------- kNN radii


def kth_neighbour_distance(
    x: np.ndarray,
    k: int,
    *,
    block: int = 256,
    margin: int = 16,
    n_threads: int | None = None,
) -> np.ndarray:
    """Distance from each point to its k-th nearest neighbour in the same set, self excluded.

    The kNN radius of Kynkaanniemi et al. (2019) and Naeem et al. (2020),
    exactly as ``prdc.compute_nearest_neighbour_distances``: the (k+1)-th
    smallest entry of the point's row of the self-inclusive distance matrix,
    whose diagonal is exactly 0 (``np.partition(dist, k)[:, k]``).  Exact
    duplicates count as neighbours at distance ~0.

    FAISS proposes ``k + 1 + margin`` candidates per point; their distances
    are recomputed on sklearn's path (see module docstring), so the radius
    equals prdc's bit for bit on float32 input.  A row is accepted only when
    a worst-case float32 error bound proves that no point outside FAISS's
    candidates can be closer than the radius; other rows (rare) fall back to
    an exact blocked scan over the whole set.

    Parameters
    ----------
    x : (N, D) float32 or float64 features, N > k.
    k : neighbour rank (k >= 1).
    block : rows per candidate-recompute step.
    margin : extra FAISS candidates per point.

    Returns
    -------
    (N,) radii in the distance dtype (float32 for float32 input, else float64).
    """
    x = _as_features(x, "x")
    if x.dtype != np.float32:  # FAISS proposes the candidates in float32 whatever the input
        _check_magnitude(x, "x", np.float32, "; FAISS searches in float32")
    n, d = x.shape
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n <= k:
        raise ValueError(f"need more than k={k} points to find the k-th neighbour, got {n}")
    dtype = distance_dtype(x)
    norms = np.empty(n, dtype=np.float64)
    for s in range(0, n, DEFAULT_BLOCK):
        norms[s : s + DEFAULT_BLOCK] = _sq_norms(x[s : s + DEFAULT_BLOCK].astype(np.float64))
    radii = np.empty(n, dtype=dtype)
    n_cand = min(n, k + 1 + int(margin))
    complete = n_cand == n  # every point is a candidate: nothing to verify
    # worst-case error of FAISS's float32 ||x||^2 + ||y||^2 - 2 x.y (Higham's gamma_n)
    gamma = (d + 4) * _U32 / (1 - (d + 4) * _U32)
    tol_scale = 2.0 * gamma * 1.01
    max_norm = float(norms.max())
    failed: list[np.ndarray] = []


    x32 = as_f32(x)
    with _faiss_threads(n_threads):
        index = flat_index(x32)
        faiss_block = max(block, 8192)
        for fs in range(0, n, faiss_block):
            fe = min(fs + faiss_block, n)
            f2, cand = index.search(x32[fs:fe], n_cand)
            for s in range(fs, fe, block):
                e = min(s + block, fe)
                c = cand[s - fs : e - fs]
                rows = np.arange(s, e)
                uniq, inv = np.unique(c, return_inverse=True)
                inv = inv.reshape(c.shape)
                xb = x[s:e].astype(np.float64)
                g = xb @ (-2.0 * x[uniq].astype(np.float64)).T
                sq = np.take_along_axis(g, inv, axis=1)
                sq += norms[s:e, None]
                sq += norms[c]
                own = c == rows[:, None]
                dist = _to_distance(sq, dtype)
                dist[own] = np.inf  # the self entry is added below as an exact 0
                dist = np.concatenate([np.zeros((e - s, 1), dtype=dtype), dist], axis=1)
                # with the explicit self 0 first, index k of the sorted row is prdc's radius
                r = np.partition(dist, k, axis=1)[:, k]
                radii[s:e] = r
                if not complete:
                    # squared radius before the cast, upper bound: compare via sq of that column
                    r64 = r.astype(np.float64)
                    last = f2[s - fs : e - fs, -1].astype(np.float64)
                    tol = tol_scale * (norms[s:e] + max_norm)
                    # points outside the candidates have FAISS value >= last, hence true
                    # squared distance >= last - tol; need that >= r^2 (with slack for the cast)
                    ok = (last - tol) >= (r64 * r64) * (1 + 4 * _U32) + 1e-30
                    if not ok.all():
                        failed.append(rows[~ok])
    if failed:
        rows = np.concatenate(failed)
        radii[rows] = _exact_kth_rows(x, norms, rows, k, dtype)
    return radii


def _exact_kth_rows(x: np.ndarray, norms: np.ndarray, rows: np.ndarray, k: int, dtype: np.dtype) -> np.ndarray:
    """Exact prdc radius for selected rows by a blocked scan over the whole set."""
    n = x.shape[0]
    out = np.empty(rows.shape[0], dtype=dtype)
    for s in range(0, rows.shape[0], DEFAULT_BLOCK // 4):
        r = rows[s : s + DEFAULT_BLOCK // 4]
        xb = x[r].astype(np.float64)
        best = np.full((r.shape[0], 0), np.inf, dtype=dtype)
        for cs in range(0, n, DEFAULT_BLOCK):
            ce = min(cs + DEFAULT_BLOCK, n)
            sq = _cross_sq_block(xb, norms[r], -2.0 * x[cs:ce].astype(np.float64), norms[cs:ce])
            dist = _to_distance(sq, dtype)
            self_in = (r >= cs) & (r < ce)
            dist[np.nonzero(self_in)[0], r[self_in] - cs] = 0  # sklearn zeroes the diagonal
            both = np.concatenate([best, dist], axis=1)
            kk = min(k + 1, both.shape[1])
            best = np.partition(both, kk - 1, axis=1)[:, :kk]
        out[s : s + r.shape[0]] = np.sort(best, axis=1)[:, k]
    return out


# --------------------------------------------------------------------------- radius scans


@dataclass(frozen=True)
class RadiusScan:
    """Result of :func:`radius_scan` over base points x (N) and query points y (M).

    Attributes
    ----------
    y_counts : (M,) int64 or None. ``#{i : d(x_i, y_j) < x_radii[i]}``: how many
        base balls contain query j (precision / density of Kynkaanniemi 2019 /
        Naeem 2020 with x = real, y = generated).
    x_counts : (N,) int64 or None. ``#{j : d(x_i, y_j) < y_radii[j]}``: how many
        query balls contain base point i (recall, with y = generated).
    x_nearest : (N,) distance from each base point to its nearest query point,
        in the distance dtype (coverage).
    """

    y_counts: np.ndarray | None
    x_counts: np.ndarray | None
    x_nearest: np.ndarray


def radius_scan(
    x: np.ndarray,
    y: np.ndarray,
    *,
    x_radii: np.ndarray | None = None,
    y_radii: np.ndarray | None = None,
    block: int = DEFAULT_BLOCK,
    progress: Callable[[int], None] | None = None,
) -> RadiusScan:
    """One blocked pass over all pairs (x_i, y_j) answering the radius questions of PRDC.

    Distances are sklearn's ``pairwise_distances(x, y)`` (see module
    docstring), tested against each ball with a strict ``<`` as in prdc
    (Naeem et al. 2020, eqs. for precision, recall, density, coverage).  Only
    ``block`` x ``block`` float64 tiles are held in memory; no N x M matrix.

    Parameters
    ----------
    x : (N, D) base points (the real set in PRDC).
    y : (M, D) query points (the generated set).
    x_radii : (N,) ball radius around each base point, or None.
    y_radii : (M,) ball radius around each query point, or None.
    block : tile edge length.
    progress : called with 1 after each tile (for a progress bar).

    Returns
    -------
    :class:`RadiusScan`.
    """
    x = _as_features(x, "x")
    y = _as_features(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x has {x.shape[1]} features but y has {y.shape[1]}")
    dtype = distance_dtype(x, y)
    if dtype == np.float64:  # sklearn promotes both inputs to float64 unless both are float32
        x = x.astype(np.float64, copy=False)
        y = y.astype(np.float64, copy=False)
    n, m = x.shape[0], y.shape[0]
    block = max(1, int(block))
    tx = None if x_radii is None else _strict_thresholds(np.asarray(x_radii), dtype)
    ty = None if y_radii is None else _strict_thresholds(np.asarray(y_radii), dtype)
    if tx is not None and tx.shape != (n,):
        raise ValueError(f"x_radii must have shape ({n},), got {tx.shape}")
    if ty is not None and ty.shape != (m,):
        raise ValueError(f"y_radii must have shape ({m},), got {ty.shape}")
    y_counts = None if tx is None else np.zeros(m, dtype=np.int64)
    x_counts = None if ty is None else np.zeros(n, dtype=np.int64)
    x_min = np.full(n, np.inf, dtype=np.float64)

    y_norms = np.empty(m, dtype=np.float64)
    for s in range(0, m, block):
        y_norms[s : s + block] = _sq_norms(y[s : s + block].astype(np.float64))
    for xs in range(0, n, block):
        xe = min(xs + block, n)
        xb = x[xs:xe].astype(np.float64)
        xx = _sq_norms(xb)
        for ys in range(0, m, block):
            ye = min(ys + block, m)
            sq = _cross_sq_block(xb, xx, -2.0 * y[ys:ye].astype(np.float64), y_norms[ys:ye])
            if tx is not None:
                y_counts[ys:ye] += np.count_nonzero(sq < tx[xs:xe, None], axis=0)
            if ty is not None:
                x_counts[xs:xe] += np.count_nonzero(sq < ty[None, ys:ye], axis=1)
            np.minimum(x_min[xs:xe], sq.min(axis=1), out=x_min[xs:xe])
            if progress is not None:
                progress(1)
    # cast and sqrt commute with min (both monotone), so this is min_j of sklearn's distances
    return RadiusScan(y_counts=y_counts, x_counts=x_counts, x_nearest=_to_distance(x_min, dtype))


def count_within_radii(
    queries: np.ndarray,
    base: np.ndarray,
    base_radii: np.ndarray,
    *,
    block: int = DEFAULT_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """For each query q: how many base points b_j have ``||q - b_j|| < r_j``, and whether any does.

    The k-NN manifold membership test of Kynkaanniemi et al. (2019): a query
    lies on the base manifold when it falls inside at least one base point's
    kNN ball.  Strict ``<`` and sklearn's distance path, as in prdc.  Blocked
    (``block`` x ``block`` tiles), never an M x N matrix.

    Parameters
    ----------
    queries : (M, D). base : (N, D). base_radii : (N,).

    Returns
    -------
    counts : (M,) int64.  inside : (M,) bool, ``counts > 0``.
    """
    scan = radius_scan(base, queries, x_radii=base_radii, block=block)
    return scan.y_counts, scan.y_counts > 0
