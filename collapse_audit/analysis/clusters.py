"""Per-cluster mode dropout: the NDB test of Richardson & Weiss (2018).

Reference: E. Richardson and Y. Weiss (2018), "On GANs and GMMs", NeurIPS
("Number of statistically Different Bins", NDB).  The real features are
partitioned into ``k`` bins by k-means; every real and generated sample is
assigned to its nearest centroid; in each bin the generated share is compared
with the real share by a pooled two-proportion z-test.  We correct the ``k``
p-values with Benjamini-Hochberg (1995) instead of the paper's uncorrected
per-bin test, so ``ndb`` counts bins that differ at false discovery rate
``alpha``.

A bin the generator populates far less than the real data is a mode it
under-draws; a bin with (almost) no generated samples although it is big
enough that some were expected is a *dropped* mode.  The real exemplars of a
dropped bin (nearest the centroid first) show what the model never draws.

Everything nearest-neighbour goes through FAISS (``faiss.Kmeans`` and an
``IndexFlatL2`` over the ``k`` centroids); no N x N matrix is formed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..index import as_f32, check_rows, kmeans, nearest_centroid
from .stats import benjamini_hochberg, two_proportion_ztest, wilson_interval

__all__ = ["cluster_dropout", "default_k", "fit_centroids", "assign_to_centroids", "bin_test", "BinTest", "MIN_REAL_PER_BIN", "DROP_MIN_EXPECTED", "DROP_RATIO"]

#: The default ``k`` keeps at least this many real samples per bin on average.
MIN_REAL_PER_BIN = 10
#: A bin can only be ``dropped`` when ``real_share * n_gen`` (the generated
#: count expected under H0) is at least this, so that its absence is informative.
DROP_MIN_EXPECTED = 5.0
#: ... and when ``gen_share <= DROP_RATIO * real_share`` (near zero).
DROP_RATIO = 0.1
#: Upper bound of the default ``k``.
MAX_DEFAULT_K = 100

_NITER = 25
_QUERY_BLOCK = 65536
_INIT_POINTS_PER_CENTROID = 256


def _kmeans_pp_init(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007, "k-means++: the advantages
    of careful seeding"): first centre uniform, each next one drawn with
    probability proportional to the squared distance to the nearest centre so
    far.  Runs on a seeded subsample of at most 256 * k rows; O(k n d) time,
    O(n) extra memory."""
    n = x.shape[0]
    if n > _INIT_POINTS_PER_CENTROID * k:
        x = x[np.sort(rng.choice(n, _INIT_POINTS_PER_CENTROID * k, replace=False))]
        n = x.shape[0]
    x64 = x.astype(np.float64)
    sq = np.einsum("ij,ij->i", x64, x64)
    idx = [int(rng.integers(n))]
    d2 = np.maximum(sq - 2 * x64 @ x64[idx[0]] + sq[idx[0]], 0.0)
    for _ in range(1, k):
        tot = d2.sum()
        if tot <= 0:  # fewer distinct points than k: pick any unused row
            unused = np.setdiff1d(np.arange(n), idx)
            j = int(unused[0]) if unused.size else int(rng.integers(n))
        else:
            j = int(np.searchsorted(np.cumsum(d2), rng.random() * tot, side="right"))
            j = min(j, n - 1)
        idx.append(j)
        d2 = np.minimum(d2, np.maximum(sq - 2 * x64 @ x64[j] + sq[j], 0.0))
    return np.ascontiguousarray(x[idx], dtype=np.float32)


def default_k(n_real: int) -> int:
    """Default number of NDB bins for ``n_real`` real samples.

    ``k = clip(round(sqrt(n_real / 2)), 2, 100)``, then at most
    ``n_real // 10`` so that every bin holds :data:`MIN_REAL_PER_BIN` (10) real
    samples on average (``sqrt(n/2)`` bins give ``sqrt(2n)`` per bin: 10 at
    n = 50, 63 at n = 2000, 500 at n = 125k where the cap of 100 bins starts).
    Richardson & Weiss use k = 100 on ~20k+ samples; the square-root rule is the
    usual histogram rule of thumb and keeps the per-bin z-test powered on small
    sets.  Below 20 real samples only one bin (no test) is possible: returns 1.
    """
    n = int(n_real)
    if n < 2 * MIN_REAL_PER_BIN:
        return 1
    k = int(np.clip(round(math.sqrt(n / 2.0)), 2, MAX_DEFAULT_K))
    return max(2, min(k, n // MIN_REAL_PER_BIN))


def _as_f32(x: np.ndarray, name: str) -> np.ndarray:
    return as_f32(check_rows(x, name))


def fit_centroids(real: np.ndarray, k: int, *, seed: int = 0) -> np.ndarray:
    """k-means centroids of the real features, (k, D) float32.

    ``faiss.Kmeans`` (``niter=25``, ``nredo=1``) from a seeded k-means++
    start; FAISS trains on a seeded subsample beyond 1024 rows per centroid.
    ``k == 1`` gives the mean.  Deterministic for a fixed ``seed`` on one
    machine (FAISS/BLAS may change the last bits elsewhere).
    """
    xr = _as_f32(real, "real features")
    if k == 1:
        return xr.mean(axis=0, keepdims=True).astype(np.float32)
    return kmeans(xr, int(k), seed=int(seed), niter=_NITER, init=_kmeans_pp_init(xr, int(k), np.random.default_rng(seed)),
                  max_points_per_centroid=1024)  # beyond 1024 * k real samples FAISS trains on a seeded subsample


def assign_to_centroids(centroids: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (id, squared L2 distance) of every row of ``x`` (exact FAISS search)."""
    return nearest_centroid(_as_f32(centroids, "centroids"), _as_f32(x, "features"), block=_QUERY_BLOCK)


@dataclass(frozen=True)
class BinTest:
    """Per-bin comparison of generated with real shares (see :func:`bin_test`); arrays of shape (k,)."""

    real_share: np.ndarray
    gen_share: np.ndarray
    z: np.ndarray
    p: np.ndarray
    q: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    significant: np.ndarray
    status: np.ndarray  # "ok" | "under" | "over" | "dropped"


def bin_test(real_counts, gen_counts, alpha: float = 0.05) -> BinTest:
    """The NDB rule on bin counts: z-test per bin, BH q-values, Wilson intervals, status.

    ``dropped`` when ``q < alpha``, ``real_share * n_gen >= DROP_MIN_EXPECTED``
    and ``gen_share <= DROP_RATIO * real_share``; ``under`` / ``over`` when
    significant otherwise; ``ok`` else.  The one place this rule is written
    (scan and track use it).
    """
    c_real = np.asarray(real_counts, dtype=np.int64)
    c_gen = np.asarray(gen_counts, dtype=np.int64)
    n_real, n_gen = int(c_real.sum()), int(c_gen.sum())
    if n_real <= 0 or n_gen <= 0:
        raise ValueError("bin_test needs at least one real and one generated sample")
    real_share = c_real / n_real
    gen_share = c_gen / n_gen
    z, p = two_proportion_ztest(c_gen, n_gen, c_real, n_real)
    q = benjamini_hochberg(p)
    lo, hi = wilson_interval(c_gen, n_gen, alpha)
    sig = q < alpha
    dropped = sig & (real_share * n_gen >= DROP_MIN_EXPECTED) & (gen_share <= DROP_RATIO * real_share)
    status = np.where(dropped, "dropped", np.where(sig & (gen_share < real_share), "under",
                                                  np.where(sig & (gen_share > real_share), "over", "ok")))
    return BinTest(real_share, gen_share, np.asarray(z), np.asarray(p), np.asarray(q), np.asarray(lo), np.asarray(hi), sig, status)

def _exemplars(assign: np.ndarray, dist: np.ndarray, paths: list[str], k: int, n: int) -> list[list[str]]:
    """Per bin, up to ``n`` paths nearest the centroid (ties broken by index)."""
    order = np.lexsort((np.arange(assign.size), dist, assign))  # by bin, then distance, then index
    out: list[list[str]] = [[] for _ in range(k)]
    if n <= 0:
        return out
    sorted_bins = assign[order]
    starts = np.searchsorted(sorted_bins, np.arange(k), side="left")
    for b in range(k):
        s = int(starts[b])
        take = order[s : s + n]
        out[b] = [paths[int(i)] for i in take if assign[i] == b]
    return out


def cluster_dropout(
    real: np.ndarray,
    gen: np.ndarray,
    *,
    real_paths: list[str],
    gen_paths: list[str],
    k: int | None = None,
    seed: int = 0,
    alpha: float = 0.05,
    n_exemplars: int = 6,
    embedder: str = "",
) -> dict:
    """NDB per-cluster dropout test (Richardson & Weiss 2018), with BH correction.

    1. k-means on the REAL features only (``faiss.Kmeans``, ``niter=25``,
       ``nredo=1``, k-means++ seeding from ``seed``; FAISS trains on a seeded
       subsample beyond 1024 real samples per centroid); ``k`` defaults to :func:`default_k` and an explicit
       ``k`` is reduced to ``n_real // 5`` when larger (``k_requested`` then
       records the original).
    2. Every real and generated sample goes to its nearest centroid (FAISS).
    3. Per bin ``b``: ``real_share = n_real_b / N_real``,
       ``gen_share = n_gen_b / N_gen``; pooled two-proportion z-test
       ``z = (gen_share - real_share) / sqrt(P(1-P)(1/N_gen + 1/N_real))``
       (positive z: over-represented); Benjamini-Hochberg q-values across the
       ``k`` bins; significant when ``q < alpha``.
    4. Status: ``dropped`` when significant, ``real_share * N_gen >= 5``
       (:data:`DROP_MIN_EXPECTED`: at least 5 generated samples were expected,
       so their absence is evidence) and ``gen_share <= 0.1 * real_share``
       (:data:`DROP_RATIO`); otherwise ``under`` / ``over`` when significant
       with ``gen_share`` below / above ``real_share``; else ``ok``.
       ``gen_share_ci`` is the Wilson interval at level ``alpha``.

    ``ndb`` is the number of significant bins and ``ndb_fraction = ndb / k``.
    Features are used as given (the pipeline passes L2-normalised CLIP
    features); they are cast to float32 for FAISS.  Deterministic for a
    fixed ``seed``.  Returns the ``clusters`` section of results.json.
    """
    xr = _as_f32(real, "real features")
    xg = _as_f32(gen, "generated features")
    if xr.shape[1] != xg.shape[1]:
        raise ValueError(f"real and generated features differ in dimension: {xr.shape[1]} vs {xg.shape[1]}")
    if len(real_paths) != xr.shape[0] or len(gen_paths) != xg.shape[0]:
        raise ValueError("real_paths/gen_paths must have one entry per feature row")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}")
    n_real, n_gen = xr.shape[0], xg.shape[0]

    k_requested = None
    if k is None:
        k_eff = default_k(n_real)
    else:
        if int(k) < 1:
            raise ValueError(f"k must be >= 1; got {k}")
        k_eff = min(int(k), max(1, n_real // 5))
        if k_eff != int(k):
            k_requested = int(k)

    centroids = fit_centroids(xr, k_eff, seed=seed)
    a_real, d_real = assign_to_centroids(centroids, xr)
    a_gen, d_gen = assign_to_centroids(centroids, xg)

    c_real = np.bincount(a_real, minlength=k_eff).astype(np.int64)
    c_gen = np.bincount(a_gen, minlength=k_eff).astype(np.int64)
    t = bin_test(c_real, c_gen, alpha)
    real_share, gen_share, z, p, q, lo, hi, sig = t.real_share, t.gen_share, t.z, t.p, t.q, t.lo, t.hi, t.significant

    ex_real = _exemplars(a_real, d_real, list(real_paths), k_eff, n_exemplars)
    ex_gen = _exemplars(a_gen, d_gen, list(gen_paths), k_eff, n_exemplars)

    bins, dropped, under, over = [], [], [], []
    for b in range(k_eff):
        rs, gs = float(real_share[b]), float(gen_share[b])
        status = str(t.status[b])
        {"dropped": dropped, "under": under, "over": over}.get(status, []).append(b)
        bins.append(
            {
                "id": b,
                "n_real": int(c_real[b]),
                "n_gen": int(c_gen[b]),
                "real_share": rs,
                "gen_share": gs,
                "gen_share_ci": [float(lo[b]), float(hi[b])],
                "diff": gs - rs,
                "z": float(z[b]),
                "p": float(p[b]),
                "q": float(q[b]),
                "status": status,
                "real_exemplars": ex_real[b],
                "gen_exemplars": ex_gen[b],
            }
        )
    ndb = int(sig.sum())
    out = {
        "embedder": embedder,
        "k": int(k_eff),
        "method": "faiss-kmeans",
        "seed": int(seed),
        "alpha": float(alpha),
        "n_real": int(n_real),
        "n_gen": int(n_gen),
        "ndb": ndb,
        "ndb_fraction": ndb / k_eff,
        "dropped": dropped,
        "under": under,
        "over": over,
        "bins": bins,
    }
    if k_requested is not None:
        out["k_requested"] = k_requested
    return out
