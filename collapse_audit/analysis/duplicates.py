"""Near-duplicates within the generated set, and near-copies of real images.

Two questions, both in cosine distance ``d = 1 - cos(a, b)`` (features are
L2-normalised here, so ``d`` lies in [0, 2]):

* **Within generated** - which generated images repeat each other?  Pairs at
  distance ``<= threshold`` are found with a blocked FAISS kNN search (each
  image's 64 nearest; all of its near-duplicates unless it has more than 64,
  see ``_near_pairs_graph``) and grouped by connected components of that
  sparse pair graph (single linkage,
  ``scipy.sparse.csgraph.connected_components``).  Files with the same content
  hash and bit-identical feature rows are joined without a search.
* **Generated vs real** - which generated images copy a real one
  (memorization)?  The threshold is calibrated on the real set itself, in the
  spirit of the authenticity test of Alaa et al. (2022), "How Faithful is your
  Synthetic Data?  Sample-level Metrics for Evaluating and Auditing Generative
  Models" (ICML), and of the near-copy search of Carlini et al. (2023),
  "Extracting Training Data from Diffusion Models" (USENIX Security): a
  generated image is a near-copy when it is closer to its nearest real image
  than all but ``copy_quantile`` of real images are to their nearest *other*
  real image.

No N x N matrix is ever formed: FAISS searches run over query blocks and the
pair graph is sparse and compressed to a spanning forest between blocks.
"""
from __future__ import annotations

import numpy as np

from ..config import COPY_QUANTILE
from ..progress import ProgressReporter
# Row primitives shared with the approximate PRDC live below the analyses, in scale (re-exported here).
from ..scale import DEDUP_MAX_COPIES  # noqa: F401  (re-exported: its old home)
from ..index import as_f32, flat_index, unit_rows
from ..scale import _binary_report, distinct_rows, identical_row_codes

__all__ = ["find_duplicates", "calibrated_dup_threshold", "measure_search_error", "identical_row_codes", "distinct_rows", "DEFAULT_DUP_THRESHOLD", "DEFAULT_COPY_QUANTILE"]

#: Default within-generated threshold: cosine distance 0.05 (cosine similarity
#: >= 0.95).  For L2-normalised CLIP image features that is "the same picture"
#: (re-encodes, resizes, tiny edits, a generator repeating itself); distinct
#: images of one subject are typically 0.1-0.3 apart.  When real features are
#: given, the threshold is lowered to the near-copy threshold (a low quantile of
#: real nearest-neighbour distances) if that is smaller, so that spaces where
#: real images sit closer together than 0.05 do not call everything a duplicate.
DEFAULT_DUP_THRESHOLD = 0.05
#: Default calibration quantile of the real nearest-neighbour distances.
DEFAULT_COPY_QUANTILE = COPY_QUANTILE  # one default for Python and CLI users (was 0.01 here, 0.001 in the CLI)
#: Real nearest-neighbour distances at or below this are exact duplicates
#: inside the real set and are left out of the calibration.
_ZERO = 1e-6
_MAX_RESULTS_PER_BLOCK = 1 << 22  # kNN-search block: at most ~4M (query, neighbour) pairs
#: Neighbours per generated image kept as near-duplicate edges (see _near_pairs_graph).
_DUP_NEIGHBOURS = 64
_KNN_BLOCK = 16384
_PATHS_PER_GROUP = 24
_DIAMETER_MAX = 2048


_normalise = unit_rows  # checked, L2-normalised float32 rows (collapse_audit.index)


_QUIET = ProgressReporter()  # no bars (library default)


def _ip_index(x: np.ndarray):
    return flat_index(x, "ip")


def _components(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes for the sparse edge list."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(src.size, dtype=np.float32), (src, dst)), shape=(n, n)).tocsr()
    _, labels = connected_components(g, directed=False)
    return labels


def _forest(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Star edges (smallest member -> every other member) spanning each component."""
    n = labels.size
    first = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))
    rep = first[labels]
    keep = rep != np.arange(n)
    return rep[keep], np.nonzero(keep)[0]


def _near_pairs_graph(x: np.ndarray, threshold: float, extra_src, extra_dst, build=_ip_index, progress=_QUIET, reps=None):
    """Component labels, per-node max incident edge distance and the number of saturated nodes.

    Edges: each row to those of its ``_DUP_NEIGHBOURS`` nearest neighbours
    (FAISS kNN search, blocked) that lie at distance ``<= threshold``, plus the
    given extra edges (equal content hashes, bit-identical rows).  A row with
    fewer than ``_DUP_NEIGHBOURS`` rows within the threshold gets all of them,
    so the graph equals the full threshold graph unless rows are *saturated*
    (more than ``_DUP_NEIGHBOURS`` near-duplicates each).  That is the
    collapsed case, where a range search would return N^2 pairs (10^12 at a
    million images); capped edges keep memory at O(N k) and can only split a
    group where two dense clumps touch through saturated rows alone.

    ``reps``: search only these rows (one per distinct vector, when the extra
    edges already join every copy to its representative): a generator that
    repeats one output 10^5 times then costs one search, not 10^5 searches
    that each scan the same crowded IVF cell.
    """
    n = x.shape[0]
    xs = x if reps is None else x[reps]
    with progress.task("near-duplicates: index", None):
        index = build(xs)
    ns = xs.shape[0]
    kk = int(min(ns, _DUP_NEIGHBOURS + 1))  # + the row itself
    block = int(max(1, min(ns, _MAX_RESULTS_PER_BLOCK // max(kk, 1))))
    node_max = np.full(n, -1.0, dtype=np.float64)
    src_parts, dst_parts = [np.asarray(extra_src, np.int64)], [np.asarray(extra_dst, np.int64)]
    if src_parts[0].size:
        node_max[src_parts[0]] = np.maximum(node_max[src_parts[0]], 0.0)
        node_max[dst_parts[0]] = np.maximum(node_max[dst_parts[0]], 0.0)
    n_edges = src_parts[0].size
    n_saturated = 0
    with progress.task("near-duplicates: search", ns) as advance:
        for s in range(0, ns, block):
            xb = as_f32(xs[s : s + block])
            sims, ids = index.search(xb, kk)
            b = ids.shape[0]
            q = np.broadcast_to(np.arange(s, s + b, dtype=np.int64)[:, None], ids.shape)
            j = ids.astype(np.int64)
            if reps is not None:  # search positions -> rows
                q = reps[q]
                j = np.where(j >= 0, reps[np.maximum(j, 0)], -1)
            d = np.clip(1.0 - sims.astype(np.float64), 0.0, 2.0)
            near = (j >= 0) & (d <= threshold)
            if kk < ns:
                n_saturated += int(near[:, -1].sum())
            keep = near & (j != q)
            q, j, d = q[keep], j[keep], d[keep]
            if q.size:
                np.maximum.at(node_max, q, d)
                np.maximum.at(node_max, j, d)
                src_parts.append(q)
                dst_parts.append(j)
                n_edges += q.size
            if n_edges > 4 * n:  # compress to a spanning forest: memory O(n + block)
                f_src, f_dst = _forest(_components(n, np.concatenate(src_parts), np.concatenate(dst_parts)))
                src_parts, dst_parts, n_edges = [f_src], [f_dst], f_src.size
            advance(b)
    labels = _components(n, np.concatenate(src_parts), np.concatenate(dst_parts))
    return labels, node_max, n_saturated


def _diameter(x: np.ndarray) -> float:
    """Largest pairwise cosine distance among the (normalised) rows, in 512-row tiles."""
    best = 0.0
    for s in range(0, x.shape[0], 512):
        sims = x[s : s + 512].astype(np.float64) @ x.astype(np.float64).T
        best = max(best, float(np.clip(1.0 - sims.min(), 0.0, 2.0)))
    return best


def _within_gen(xg, gen_paths, gen_shas, threshold, max_groups, build=_ip_index, rows: dict | None = None,
                progress=_QUIET, row_codes=None, reps=None) -> dict:
    n = xg.shape[0]
    # exact duplicates need no search: bit-identical feature rows, and equal content hashes
    src, dst = _forest(identical_row_codes(xg) if row_codes is None else row_codes)
    if gen_shas is not None:
        sha_codes = np.unique(np.asarray(gen_shas, dtype=object).astype(str), return_inverse=True)[1].ravel()
        s2, d2 = _forest(sha_codes)
        src, dst = np.concatenate([src, s2]), np.concatenate([dst, d2])
    labels, node_max, n_saturated = _near_pairs_graph(xg, threshold, src, dst, build, progress, reps)
    sizes = np.bincount(labels)
    in_group = sizes[labels] >= 2
    if rows is not None:
        rows["in_group"] = in_group
    comp_ids = np.nonzero(sizes >= 2)[0]
    members: dict[int, list[int]] = {int(c): [] for c in comp_ids}
    for i in np.nonzero(in_group)[0]:
        members[int(labels[i])].append(int(i))
    groups = []
    for c, idx in members.items():
        shas = {str(gen_shas[i]) for i in idx} if gen_shas is not None else None
        groups.append((len(idx), idx[0], idx, shas))
    groups.sort(key=lambda g: (-g[0], g[1]))
    exact_groups = sum(1 for g in groups if g[3] is not None and len(g[3]) == 1)
    out_groups = []
    for size, _, idx, shas in groups[:max_groups]:
        ia = np.asarray(idx)
        out_groups.append(
            {
                "size": int(size),
                "paths": [gen_paths[i] for i in idx[:_PATHS_PER_GROUP]],
                "max_distance": float(max(node_max[ia].max(), 0.0)),
                "diameter": _diameter(xg[ia]) if size <= _DIAMETER_MAX else None,
                "exact": bool(shas is not None and len(shas) == 1),
                "n_distinct_files": len(shas) if shas is not None else None,
            }
        )
    n_in = int(in_group.sum())
    return {
        "metric": "cosine",
        "threshold": float(threshold),
        "n": int(n),
        "n_groups": int(len(groups)),
        "n_in_groups": n_in,
        "dup_fraction": n_in / n,
        "exact_groups": int(exact_groups),
        "groups": out_groups,
        "neighbours_per_image": int(_DUP_NEIGHBOURS),
        "n_saturated": int(n_saturated),
    }


def _real_nn_distances(xr: np.ndarray, real_shas, index, progress=_QUIET) -> tuple[np.ndarray, int, np.ndarray]:
    """Distance of every real row to its nearest *other* real row (FAISS kNN, k = 2).

    Rows whose nearest other row is an exact duplicate (distance <= 1e-6 or the
    same content hash) are left out; returns (distances kept, number left out,
    the distance of every row).
    """
    n = xr.shape[0]
    kk = min(2, n)
    nn_d = np.empty(n, dtype=np.float64)
    nn_i = np.empty(n, dtype=np.int64)
    with progress.task("near-copies: real nearest neighbours", n) as advance:
        for s in range(0, n, _KNN_BLOCK):
            sims, ids = index.search(xr[s : s + _KNN_BLOCK], kk)
            rows = np.arange(s, s + ids.shape[0])
            # the self match is usually first; with ties (a duplicate) it may be second
            col = np.where(ids[:, 0] == rows, 1, 0)
            nn_i[rows] = ids[np.arange(ids.shape[0]), col]
            nn_d[rows] = np.clip(1.0 - sims[np.arange(ids.shape[0]), col].astype(np.float64), 0.0, 2.0)
            advance(ids.shape[0])
    dup = nn_d <= _ZERO
    if real_shas is not None:
        shas = np.asarray(real_shas, dtype=object).astype(str)
        dup |= shas == shas[nn_i]
    return nn_d[~dup], int(dup.sum()), nn_d


def _gen_vs_real(xg, xr, gen_paths, real_paths, gen_shas, real_shas, copy_quantile, copy_threshold, max_pairs, build=_ip_index,
                 rows: dict | None = None, progress=_QUIET, distinct=None) -> dict:
    n_gen, n_real = xg.shape[0], xr.shape[0]
    calib: dict = {
        "method": "quantile of real nearest-other-real cosine distances (exact real duplicates excluded)",
        "quantile": float(copy_quantile),
        "real_nn_distance_quantile": None,
        "n_real": int(n_real),
        "n_real_used": 0,
        "n_real_duplicates_excluded": 0,
    }
    with progress.task("near-copies: index", None):
        index = build(xr)  # one index over the real rows serves the calibration and the gen -> real search
    if n_real >= 2:
        d_nn, n_excl, real_nn_all = _real_nn_distances(xr, real_shas, index, progress)
        if rows is not None:
            rows["real_nn_d"] = real_nn_all
        calib["n_real_used"] = int(d_nn.size)
        calib["n_real_duplicates_excluded"] = n_excl
        if d_nn.size:
            calib["real_nn_distance_quantile"] = float(np.quantile(d_nn, copy_quantile))
            calib["real_nn_distance_median"] = float(np.median(d_nn))
    if copy_threshold is not None:
        thr = float(copy_threshold)
        calib["override"] = True
    else:
        thr = calib["real_nn_distance_quantile"]

    # nearest real neighbour of every generated sample
    # (one search per distinct generated vector when many outputs are bit-identical)
    xq = xg if distinct is None else xg[distinct[0]]
    nq = xq.shape[0]
    nn_d = np.empty(nq, dtype=np.float64)
    nn_i = np.empty(nq, dtype=np.int64)
    with progress.task("near-copies: nearest real image", nq) as advance:
        for s in range(0, nq, _KNN_BLOCK):
            sims, ids = index.search(xq[s : s + _KNN_BLOCK], 1)
            nn_i[s : s + ids.shape[0]] = ids[:, 0]
            nn_d[s : s + ids.shape[0]] = np.clip(1.0 - sims[:, 0].astype(np.float64), 0.0, 2.0)
            advance(ids.shape[0])
    if distinct is not None:
        nn_d, nn_i = nn_d[distinct[1]], nn_i[distinct[1]]
    exact = np.zeros(n_gen, dtype=bool)
    if gen_shas is not None and real_shas is not None:
        first: dict[str, int] = {}
        for i, h in enumerate(real_shas):
            first.setdefault(str(h), i)
        for g, h in enumerate(gen_shas):
            r = first.get(str(h))
            if r is not None:
                exact[g] = True
                nn_i[g] = r
                nn_d[g] = 0.0
    flagged = exact.copy()
    if thr is not None:
        flagged |= nn_d < thr
    if rows is not None:
        rows.update(flagged=flagged, exact=exact, gen_nn_d=nn_d, copy_threshold=thr)
    idx = np.nonzero(flagged)[0]
    idx = idx[np.lexsort((idx, nn_d[idx]))][:max_pairs]
    pairs = [
        {"gen_path": gen_paths[g], "real_path": real_paths[nn_i[g]], "distance": float(nn_d[g]), "exact": bool(exact[g])}
        for g in idx
    ]
    n_mem = int(flagged.sum())
    # base rate: a generator that samples the real distribution without copying
    # has about copy_quantile of its outputs below d_copy by chance
    base = float(copy_quantile) if copy_threshold is None and thr is not None else None
    p_excess = None
    if base is not None:
        from scipy.stats import binom

        p_excess = float(binom.sf(n_mem - 1, n_gen, base)) if n_mem > 0 else 1.0
    return {
        "metric": "cosine",
        "threshold": thr,
        "calibration": calib,
        "n": int(n_gen),
        "n_memorized": n_mem,
        "n_exact": int(exact.sum()),
        "memorized_fraction": n_mem / n_gen,
        "expected_by_chance": base,
        "p_excess": p_excess,
        "pairs": pairs,
    }


def _calibrated(q: float | None) -> tuple[float, str]:
    """The within-generated threshold from the real set's nearest-neighbour quantile ``q``: min(default, q)."""
    if q is not None and q < DEFAULT_DUP_THRESHOLD:
        return float(q), "calibrated"
    return DEFAULT_DUP_THRESHOLD, "default"


def calibrated_dup_threshold(real: np.ndarray, *, copy_quantile: float = DEFAULT_COPY_QUANTILE, real_shas=None) -> tuple[float, str]:
    """The near-duplicate threshold :func:`find_duplicates` uses when given ``real``, from the real set alone.

    ``min(DEFAULT_DUP_THRESHOLD, the copy_quantile quantile of real nearest-other-real cosine distances)``
    (exact real duplicates excluded) and its method (``"calibrated"`` or ``"default"``): for a caller
    that searches many generated sets against one real set (the tracker) and calibrates once.
    """
    xr = _normalise(real, "real features")
    if xr.shape[0] < 2:
        return DEFAULT_DUP_THRESHOLD, "default"
    d_nn, _, _ = _real_nn_distances(xr, real_shas, _ip_index(xr))
    return _calibrated(float(np.quantile(d_nn, copy_quantile)) if d_nn.size else None)


def find_duplicates(
    gen: np.ndarray,
    real: np.ndarray | None,
    *,
    gen_paths,
    real_paths=None,
    gen_shas=None,
    real_shas=None,
    threshold: float | None = None,
    copy_quantile: float = DEFAULT_COPY_QUANTILE,
    copy_threshold: float | None = None,
    max_groups: int = 50,
    max_pairs: int = 100,
    embedder: str = "",
    index_builder=None,
    check_n_sub: int = 2000,
    seed: int = 0,
    progress=None,
) -> dict:
    """Near-duplicate groups among generated images and near-copies of real ones.

    ``index_builder`` (``x -> FAISS index`` for inner-product search on
    L2-normalised rows) replaces the exact ``IndexFlatIP``, e.g. with the
    IVF index of :func:`collapse_audit.scale.ip_index_builder` at a million
    samples, where exact search would take hours.

    Features are L2-normalised here; distances are cosine distances
    ``d = 1 - cos`` in [0, 2].

    Within generated (``within_gen``): pairs with ``d <= threshold``
    (default :data:`DEFAULT_DUP_THRESHOLD` = 0.05) among each image's 64
    nearest neighbours (blocked FAISS kNN search), plus pairs with equal
    ``gen_shas`` (byte-identical files) or bit-identical feature rows, joined
    into connected components (single linkage).  This is the full threshold
    graph unless an image has more than 64 near-duplicates
    (``n_saturated`` counts those; a collapsed generator): then only its 64
    nearest are edges, which keeps memory at O(N) where the full graph has
    N^2 edges, and can only split a group where two dense clumps touch through
    saturated images alone.  ``dup_fraction`` is the share
    of generated images in a group of size >= 2.  Groups are listed largest
    first (at most ``max_groups``; at most 24 paths each, lowest index first)
    with ``max_distance`` = the largest linking edge in the group (<= threshold),
    ``diameter`` = the largest pairwise distance (groups of <= 2048 images,
    else null) and ``exact`` = every member has the same content hash.

    Generated vs real (``gen_vs_real``, when ``real`` is given), after Alaa et
    al. (2022) and Carlini et al. (2023): the threshold is calibrated on the
    real set, ``d_copy = quantile_q({min_{r' != r} d(r, r') : r in real})``
    with ``q = copy_quantile`` (default 0.1%, :data:`collapse_audit.config.COPY_QUANTILE`; numpy's linear interpolation), the
    nearest *other* real image found by FAISS kNN with k = 2; real images whose
    nearest other is an exact duplicate (``d <= 1e-6`` or equal hash) are left
    out, so duplicates inside the training set do not drive ``d_copy`` to 0.
    A generated image is a near-copy when ``d(g, NN_real(g)) < d_copy``
    (strict), or when its hash equals a real one (``distance 0``,
    ``exact: true``).  For a generator that samples the real distribution
    without copying, ``d(g, NN_real(g))`` is distributed like the real
    nearest-neighbour distances, so about ``copy_quantile`` of its outputs are
    flagged by chance: read ``memorized_fraction`` against that base rate
    (``expected_by_chance`` = ``copy_quantile``; ``p_excess`` = one-sided
    binomial tail ``P(X >= n_memorized)``, ``X ~ Bin(n_gen, copy_quantile)``:
    small when there are more near-copies than chance explains).
    ``copy_threshold`` overrides the calibrated value.  Pairs are listed
    closest first (at most ``max_pairs``).

    With an approximate ``index_builder``, the answers are checked against
    exact search on ``check_n_sub`` seeded random generated and real rows
    (:func:`measure_search_error`, the ``approximation`` key).  ``progress``:
    a :class:`~collapse_audit.progress.ProgressReporter` for the searches.

    Returns the ``duplicates`` section of results.json.
    """
    xg = _normalise(gen, "generated features")
    if len(gen_paths) != xg.shape[0]:
        raise ValueError("gen_paths must have one entry per generated feature row")
    if gen_shas is not None and len(gen_shas) != xg.shape[0]:
        raise ValueError("gen_shas must have one entry per generated feature row")
    thr = DEFAULT_DUP_THRESHOLD if threshold is None else float(threshold)
    thr_method = "default" if threshold is None else "given"
    if not 0 <= thr <= 2:
        raise ValueError(f"threshold is a cosine distance in [0, 2]; got {threshold}")
    if not 0 <= copy_quantile <= 1:
        raise ValueError(f"copy_quantile must be in [0, 1]; got {copy_quantile}")
    gen_paths = [str(p) for p in gen_paths]
    progress = progress or _QUIET

    build = index_builder or _ip_index
    # bit-identical generated rows (a collapsed generator repeating itself) are searched once
    codes = identical_row_codes(xg)
    distinct = distinct_rows(codes)
    rows: dict = {}
    xr = None
    out = {"embedder": embedder, "within_gen": None, "gen_vs_real": None,
           "search": "exact (FAISS IndexFlatIP)" if index_builder is None else "approximate (FAISS IVF-Flat, inner product)"}
    if real is not None:
        xr = _normalise(real, "real features")
        if xr.shape[1] != xg.shape[1]:
            raise ValueError(f"real and generated features differ in dimension: {xr.shape[1]} vs {xg.shape[1]}")
        if real_paths is None or len(real_paths) != xr.shape[0]:
            raise ValueError("real_paths must have one entry per real feature row")
        if real_shas is not None and len(real_shas) != xr.shape[0]:
            raise ValueError("real_shas must have one entry per real feature row")
        out["gen_vs_real"] = _gen_vs_real(
            xg, xr, gen_paths, [str(p) for p in real_paths], gen_shas, real_shas,
            float(copy_quantile), copy_threshold, int(max_pairs), build, rows, progress, distinct,
        )
        # Near-duplicates are judged on the same scale as near-copies: two generated
        # images closer than (almost) any two real images are to each other. In a
        # space where real neighbours sit far closer than 0.05 (a domain embedder),
        # a fixed 0.05 would call everything a duplicate.
        q = out["gen_vs_real"]["calibration"].get("real_nn_distance_quantile")
        if threshold is None:
            thr, thr_method = _calibrated(q)
    out["within_gen"] = _within_gen(xg, gen_paths, gen_shas, thr, int(max_groups), build, rows, progress, codes,
                                    None if distinct is None else distinct[0])
    out["within_gen"]["threshold_method"] = {
        "default": f"fixed default cosine distance {DEFAULT_DUP_THRESHOLD}",
        "given": "given by the user (--dup-threshold)",
        "calibrated": f"min({DEFAULT_DUP_THRESHOLD}, the {copy_quantile:g} quantile of real nearest-neighbour distances)",
    }[thr_method]
    if index_builder is not None and check_n_sub:
        with progress.task("duplicates: exact check on a subsample", None):
            out["approximation"] = measure_search_error(xg, xr, rows, dup_threshold=thr, n_sub=int(check_n_sub), seed=seed)
    return out


def _exact_nearest(q: np.ndarray, x: np.ndarray, self_rows: np.ndarray | None, block: int = 65536) -> np.ndarray:
    """Exact cosine distance from each (normalised) query to its nearest row of ``x`` (``self_rows``: the
    query's own row in ``x``, never its own neighbour), by blocked float32 GEMM: no index, no N x N matrix."""
    best = np.full(q.shape[0], -np.inf, dtype=np.float64)
    qf = as_f32(q)
    for s in range(0, x.shape[0], block):
        sims = qf @ as_f32(x[s : s + block]).T
        if self_rows is not None:
            own = np.nonzero((self_rows >= s) & (self_rows < s + sims.shape[1]))[0]
            sims[own, self_rows[own] - s] = -np.inf
        np.maximum(best, sims.max(axis=1), out=best)
    return np.clip(1.0 - best, 0.0, 2.0)


def measure_search_error(xg: np.ndarray, xr: np.ndarray | None, rows: dict, *, dup_threshold: float,
                         n_sub: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Error of the approximate (IVF) duplicate analyses against exact search on a seeded random subsample.

    Each answer is a mean of per-image indicators (``dup_fraction`` over
    generated images: has a near-duplicate; ``memorized_fraction``: is a
    near-copy), so the mean of ``approx - exact`` over a uniform random
    subsample estimates the error of the full-set fraction (as
    :func:`collapse_audit.scale.measure_approx_error` does for PRDC).  Exact
    answers come from a blocked GEMM of the subsample against the whole other
    set (~``2 n_sub N D`` flops per question).  An inverted file can only miss
    neighbours, so approximate distances are never smaller than exact ones and
    both errors are <= 0 (missed duplicates or copies), up to float32
    rounding at the threshold.  Also reported: the share of subsampled
    images whose nearest neighbour the index found (``nn_recall``: approximate
    distance within 1e-5 of the exact one) for gen -> real and real -> real
    (the near-copy calibration), and the calibration quantile recomputed from
    the exact real distances of the subsample next to the approximate ones.

    ``error_ci``: Bonferroni combination of Wilson (1927) intervals of the two
    discordant proportions at level ``1 - alpha``; ``max_abs_error`` is the
    largest |end| over the checked fractions.
    """
    import time

    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 0xD0])
    n_gen = xg.shape[0]
    gs = np.sort(rng.choice(n_gen, min(int(n_sub), n_gen), replace=False))
    qg = np.asarray(xg[gs], dtype=np.float32)
    metrics: dict = {}
    nn_recall: dict = {}
    ex_gg = _exact_nearest(qg, xg, gs)
    ex_in = ex_gg <= dup_threshold
    if "in_group" in rows:
        # exactly: a generated image is in a group when another lies within the threshold (identical files too: d = 0)
        metrics["dup_fraction"] = _binary_report(rows["in_group"][gs].astype(np.float64), ex_in.astype(np.float64), alpha)
    calibration = None
    if xr is not None and "gen_nn_d" in rows:
        ex_gr = _exact_nearest(qg, xr, None)
        nn_recall["gen_to_real"] = float(np.mean(rows["gen_nn_d"][gs] <= ex_gr + 1e-5))
        thr = rows.get("copy_threshold")
        if thr is not None:
            ex_flag = rows["exact"][gs] | (ex_gr < thr)
            metrics["memorized_fraction"] = _binary_report(rows["flagged"][gs].astype(np.float64),
                                                           ex_flag.astype(np.float64), alpha)
        if "real_nn_d" in rows:
            n_real = xr.shape[0]
            rs = np.sort(rng.choice(n_real, min(int(n_sub), n_real), replace=False))
            ex_rr = _exact_nearest(np.asarray(xr[rs], dtype=np.float32), xr, rs)
            ap_rr = rows["real_nn_d"][rs]
            nn_recall["real_to_real"] = float(np.mean(ap_rr <= ex_rr + 1e-5))
            calibration = {"n": int(rs.size), "median_exact": float(np.median(ex_rr)),
                           "median_approx": float(np.median(ap_rr)),
                           "max_overestimate": float(np.max(ap_rr - ex_rr))}
    out = {
        "check": "exact blocked search (float32 GEMM) on a seeded random subsample of the generated (and real) images",
        "n_sub": {"gen": int(gs.size), "real": int(calibration["n"]) if calibration else 0},
        "seed": int(seed),
        "confidence": 1 - float(alpha),
        "metrics": metrics,
        "max_abs_error": float(max((max(abs(v["error_ci"][0]), abs(v["error_ci"][1])) for v in metrics.values()),
                                   default=0.0)),
        "nn_recall": nn_recall,
        "real_nn_distance": calibration,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return out
