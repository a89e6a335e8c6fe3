"""The public Python API: :func:`audit` and :func:`embed`, the top of the pipeline.

``collapse-audit scan`` is :func:`audit` plus :meth:`AuditResult.write` plus the
gate; Python users get the same numbers on arrays, tensors, feature files or
folders, inside a training loop or a notebook::

    >>> import numpy as np
    >>> from collapse_audit import audit
    >>> rng = np.random.default_rng(0)
    >>> centres = rng.normal(scale=8, size=(4, 16))
    >>> real = (centres[rng.integers(0, 4, 600)] + rng.standard_normal((600, 16))).astype(np.float32)
    >>> gen = (centres[rng.integers(0, 2, 400)] + rng.standard_normal((400, 16))).astype(np.float32)
    >>> res = audit(gen=gen, real=real)   # the generator produces two of the four modes
    >>> res.metrics["coverage"] < 0.6
    True

The metrics and analyses also run on their own, on arrays, each returning a frozen
dataclass: :func:`fid`, :func:`cluster_dropout`, :func:`class_dropout`,
:func:`subgroup_gaps` and :func:`find_duplicates` (result types in
:mod:`collapse_audit.results`; ``to_dict()`` is the section of ``results.json``).

Nothing here prints, exits, or writes unless asked (:meth:`AuditResult.write`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import gate as G
from . import metrics as M
from .analysis import classes as _classes
from .analysis import clusters as _clusters
from .analysis import duplicates as _duplicates
from .analysis import subgroups as _subgroups
from .config import ALPHA, COPY_QUANTILE, EXACT_MAX_PAIRS, K, SEED, AuditConfig
from .embedding import embed_files, embed_folder
from .errors import InputError, UsageError
from .features import FeatureSet
from .outputs import check_output_dir, check_output_file, remove_stale_artefacts, write_atomic
from .pipeline import build_embedders, open_cache, resource_usage
from .report import render_report, write_report
from .results import ClassDropoutResult, ClusterDropoutResult, DuplicatesResult, SubgroupGapsResult
from . import scan as _scan
from .scale import PRDC_METHODS, ip_index_builder
from .scan import Side, side_from_featureset

__all__ = ["AuditResult", "audit", "embed", "FIDResult", "fid", "cluster_dropout", "class_dropout", "subgroup_gaps",
           "find_duplicates"]


# --------------------------------------------------------------------------- audit
@dataclass
class AuditResult:
    """What :func:`audit` found: ``to_dict()`` is exactly what ``results.json`` holds.

    Attributes
    ----------
    results : the ``results.json`` document (dict; see ``collapse_audit/schema/results.schema.json``).
    real, gen : the two sides as compared (features per embedder, paths, labels).
    config : the :class:`~collapse_audit.config.AuditConfig` of the run.
    """

    results: dict
    real: Side
    gen: Side
    config: AuditConfig
    verdict: G.GateResult | None = dataclasses.field(default=None, repr=False)

    def to_dict(self) -> dict:
        """The ``results.json`` document."""
        return self.results

    @property
    def metrics(self) -> dict:
        """The primary embedder's metrics (``results["metrics"]``): fid, kid, precision, recall, density, coverage, ..."""
        return self.results["metrics"]

    @property
    def gate(self) -> dict | None:
        """``results["gate"]`` once :meth:`check` ran (``passed``, ``violations``), else None."""
        return self.results.get("gate")

    def check(self, rules: Iterable[str | G.Rule]) -> G.GateResult:
        """Evaluate gate rules (``"coverage<0.8"``: the rule FAILS when true) and record the verdict in ``results``."""
        parsed = [r if isinstance(r, G.Rule) else G.parse_rule(r) for r in rules]
        self.verdict = G.evaluate(parsed, self.results)
        self.results["gate"] = self.verdict.to_dict()
        return self.verdict

    def write(self, out_dir: str | os.PathLike = "collapse-audit-out", *, report: bool = True,
              junit: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Path:
        """Write ``results.json`` (first, so it survives anything later), then JUnit XML, the GitHub
        step summary (``GITHUB_STEP_SUMMARY`` in ``env``, default ``os.environ``) and ``report.html``.

        Files an earlier run left in ``out_dir`` (``report.html``, ``report_data.json``) are removed,
        so the folder holds one run. Returns the path of ``results.json``.
        """
        out = check_output_dir(out_dir)
        if junit:
            check_output_file(junit, what="the JUnit XML", option="--junit")
        G.check_github_summary(env)
        return _write(self, out, report=report, junit=junit, env=env)


def _write(res: AuditResult, out: Path, *, report: bool, junit, env) -> Path:
    results = res.results
    if res.verdict is None:
        res.check([])
    results["resources"] = resource_usage()
    remove_stale_artefacts(out)  # everything in the output folder belongs to this run
    path = out / "results.json"
    write_atomic(path, json.dumps(results, indent=2, allow_nan=False) + "\n", what="results.json")
    gate_result = res.verdict
    if junit:
        G.write_junit(gate_result, junit)
    G.append_github_summary(gate_result, results, env=env)
    if report:
        t0 = time.perf_counter()
        if res.real.kind == "stats":  # no real features: no map, no galleries
            render_report(results, None, out / "report.html")
        else:
            write_report(results, res.real, res.gen, out, seed=res.config.seed)
        results["timings"]["report"] = round(time.perf_counter() - t0, 3)
        results["resources"] = resource_usage()
        write_atomic(path, json.dumps(results, indent=2, allow_nan=False) + "\n", what="results.json")
    return path


def _as_side(x, name: str) -> Side | str | os.PathLike:
    """Arrays, tensors and FeatureSets become in-memory sides; paths stay paths (folder, .npz, statistics)."""
    if isinstance(x, (str, os.PathLike)):
        return x
    if isinstance(x, Side):
        return x
    if isinstance(x, FeatureSet):
        return side_from_featureset(x, name)
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor of features
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return side_from_featureset(FeatureSet(features=x, paths=[]), name)
    raise InputError(f"{name}: expected an N x D array, a FeatureSet or a path, got {type(x).__name__}")


def audit(gen, real, config: AuditConfig | None = None, **options: Any) -> AuditResult:
    """Audit generated samples against real ones: FID, KID, precision/recall/density/coverage,
    dropped clusters and classes, subgroup gaps, near-duplicates and near-copies.

    Parameters
    ----------
    gen, real : each an (N, D) array of features (NumPy or torch), a
        :class:`~collapse_audit.features.FeatureSet`, or a path: an image folder,
        an ``.npz`` features file (``collapse-audit embed``), or (``real`` only) a
        statistics file (ours, pytorch-fid's or clean-fid's ``mu``/``sigma``).
        Two arrays are assumed to come from the same embedder.
    config : :class:`~collapse_audit.config.AuditConfig` (defaults when None).
    **options : fields of ``AuditConfig`` overriding ``config`` (``k=10``, ``seed=1``, ...).

    Returns
    -------
    :class:`AuditResult`; ``to_dict()`` is the ``results.json`` document. Nothing is written.
    """
    cfg = config or AuditConfig()
    if options:
        bad = sorted(set(options) - {f.name for f in dataclasses.fields(AuditConfig)})
        if bad:
            raise UsageError(f"unknown audit option(s): {', '.join(bad)} (see collapse_audit.AuditConfig)")
        cfg = dataclasses.replace(cfg, **options)
    results, real_side, gen_side = _scan.run_scan(_as_side(gen, "gen"), _as_side(real, "real"), cfg)  # via the module: patchable
    return AuditResult(results=results, real=real_side, gen=gen_side, config=cfg)


# --------------------------------------------------------------------------- metrics with result types
@dataclass(frozen=True)
class FIDResult:
    """Frechet Inception Distance (Heusel et al. 2017) of two feature sets.

    ``fid = |mu_r - mu_g|^2 + tr(S_r) + tr(S_g) - 2 tr((S_r^1/2 S_g S_r^1/2)^1/2)``,
    computed by :func:`collapse_audit.metrics.fid` (float64 moments, pivoted-Cholesky
    factors; exact low-rank path when a side has fewer samples than dimensions).
    ``float(result)`` is the value.
    """

    fid: float
    n_real: int
    n_gen: int
    dim: int
    low_rank: bool

    def __float__(self) -> float:
        return float(self.fid)


def fid(real, gen) -> FIDResult:
    """FID of ``real`` (N, D) and ``gen`` (M, D) features (arrays or torch tensors); see :class:`FIDResult`."""
    r, g = _array(real, "real"), _array(gen, "gen")
    if r.shape[1] != g.shape[1]:
        raise ValueError(f"real has {r.shape[1]} features but gen has {g.shape[1]}")
    low = min(len(r), len(g)) - 1 < r.shape[1]
    value = M.fid_from_features(r, g) if low else M.fid(r, g)
    return FIDResult(fid=float(value), n_real=len(r), n_gen=len(g), dim=r.shape[1], low_rank=bool(low))


def _array(x, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N x D), got shape {a.shape}")
    return a


# --------------------------------------------------------------------------- analyses with result types
def _rows(x, paths, name: str) -> tuple[np.ndarray, list[str]]:
    """Checked float32 features and one path per row: ``paths`` as given, else the names :func:`audit` gives
    array rows (``"real[0]"``, ``"real[1]"``, ...)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor of features
        x = x.detach().cpu().numpy()
    given = None if paths is None else [str(p) for p in paths]
    side = side_from_featureset(FeatureSet(features=np.asarray(x), paths=given or []), name)
    if given is not None and len(given) != len(side.paths):
        raise InputError(f"{name}: {len(given)} paths for {len(side.paths)} feature rows")
    (features,) = side.features.values()
    return features, side.paths


def _given(**options) -> dict:
    """The options a caller set (None: the analysis function's own default, written once, there)."""
    return {k: v for k, v in options.items() if v is not None}


def _label(v) -> str | None:
    if v is None or (isinstance(v, float) and v != v):  # None, or a float NaN (pandas' missing value): unknown
        return None
    return str(v)


def _labels(values, name: str) -> list[str | None]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise InputError(f"{name}: expected one label per image (a list or 1-D array), got {type(values).__name__}")
    if hasattr(values, "tolist"):  # NumPy arrays, pandas Series: plain Python scalars (NaN stays a float)
        values = values.tolist()
    return [_label(v) for v in values]


def cluster_dropout(
    real,
    gen,
    *,
    k: int | None = None,
    seed: int = SEED,
    alpha: float = ALPHA,
    real_paths: Sequence[str] | None = None,
    gen_paths: Sequence[str] | None = None,
    n_exemplars: int | None = None,
    embedder: str | None = None,
) -> ClusterDropoutResult:
    """Which modes of the real data did the generator drop? The NDB test of Richardson & Weiss (2018), BH-corrected.

    k-means (FAISS, k-means++ seeding from ``seed``) on the real features
    only; every real and generated sample goes to its nearest centroid; per
    bin, the generated share is compared with the real share by a pooled
    two-proportion z-test, with Benjamini-Hochberg (1995) q-values across
    the ``k`` bins. A bin is dropped when ``q < alpha``, at least 5 generated
    samples were expected in it and its generated share is at most a tenth
    of its real share. Runs :func:`collapse_audit.analysis.clusters.cluster_dropout`.

    Parameters
    ----------
    real : array_like, shape (N, D)
        Real features (NumPy or torch). Used as given: the scan clusters
        L2-normalised features (``collapse_audit.index.normalise_rows``); pass
        those to get the numbers of :func:`audit`.
    gen : array_like, shape (M, D)
        Generated features, from the same embedder.
    k : int, optional
        Number of bins; default :func:`collapse_audit.analysis.clusters.default_k`
        (about ``sqrt(N / 2)``, at most 100). A ``k`` above ``N // 5`` is reduced
        (``k_requested`` records it).
    seed : int
        Seed of the k-means (default ``collapse_audit.config.SEED``).
    alpha : float
        False discovery rate of the per-bin tests, in (0, 1) (default ``collapse_audit.config.ALPHA``).
    real_paths, gen_paths : sequence of str, optional
        One name per row, used for the exemplars; default ``"real[i]"`` / ``"gen[i]"``
        (``i`` the row), the names :func:`audit` gives array rows.
    n_exemplars : int, optional
        Exemplar paths kept per bin (default: the analysis function's).
    embedder : str, optional
        Embedder id recorded in the section.

    Returns
    -------
    ClusterDropoutResult
        ``dropped``, ``ndb``, ``ndb_fraction``, per-bin shares and tests;
        ``to_dict()`` is the ``clusters`` section of results.json.

    Raises
    ------
    InputError
        Features that are not a non-empty 2-D array of finite numbers, or paths of the wrong length.
    ValueError
        Sides of different dimension, ``alpha`` outside (0, 1), ``k < 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from collapse_audit import cluster_dropout
    >>> rng = np.random.default_rng(0)
    >>> centres = 10 * np.eye(4, 8)
    >>> real = centres[np.arange(400) % 4] + rng.standard_normal((400, 8))
    >>> gen = centres[np.arange(300) % 3] + rng.standard_normal((300, 8))   # mode 3 never drawn
    >>> res = cluster_dropout(real=real, gen=gen, k=4)
    >>> (b,) = res.dropped                     # one bin dropped (k-means numbers bins arbitrarily)
    >>> float(res.gen_share[b]), float(res.real_share[b]), str(res.status[b])
    (0.0, 0.25, 'dropped')
    """
    xr, rp = _rows(real, real_paths, "real")
    xg, gp = _rows(gen, gen_paths, "gen")
    section = _clusters.cluster_dropout(xr, xg, real_paths=rp, gen_paths=gp, k=k, seed=int(seed), alpha=float(alpha),
                                        **_given(n_exemplars=n_exemplars, embedder=embedder))
    return ClusterDropoutResult.from_section(section)


def class_dropout(
    real_labels,
    gen_labels,
    *,
    classes: Sequence[str] | None = None,
    alpha: float = ALPHA,
    source: str = "manifest",
    labels_known: Mapping[str, bool] | None = None,
    classifier: dict | None = None,
    min_expected: float | None = None,
) -> ClassDropoutResult:
    """Which classes of the real data does the generator under-produce or drop? Shares with intervals and tests.

    Per class: Wilson (1927) interval of the generated share, Newcombe (1998,
    method 10) interval of ``gen - real``, Katz et al. (1978) log interval of
    ``gen / real``, pooled two-proportion z-test (the per-bin test of NDB,
    Richardson & Weiss 2018) with Benjamini-Hochberg (1995) q-values across
    classes; Pearson chi-square goodness of fit and homogeneity over all.
    A class is dropped when ``q < alpha``, ``real_share * n_gen >= min_expected``
    and ``gen_share <= 0.1 * real_share``. Runs
    :func:`collapse_audit.analysis.classes.class_dropout`.

    Parameters
    ----------
    real_labels, gen_labels : sequence or 1-D array, length N / M
        One label per image; ``None`` or NaN = unknown (excluded, counted as
        unlabelled). Labels are compared as ``str(label)``, so ``3`` and ``"3"``
        are one class.
    classes : sequence of str, optional
        Classes listed first and always present, even with zero counts.
    alpha : float
        False discovery rate of the tests; intervals at level ``1 - alpha``
        (default ``collapse_audit.config.ALPHA``).
    source : str
        Where the labels came from, recorded in the section: ``"manifest"`` (labels
        as recorded, the default), ``"folders"``, ``"zero-shot"``, ``"torchscript"`` or ``"knn"``.
    labels_known : mapping, optional
        ``{"real": bool, "gen": bool}``: which sides had labels before any
        classifier ran; default: a side whose labels are not all unknown.
    classifier : dict, optional
        The classifier that predicted labels (``kind``, ``id``, ``agreement``, ...), recorded as given.
    min_expected : float, optional
        A class can be dropped only when ``real_share * n_gen`` is at least this
        (default: the analysis function's, 5).

    Returns
    -------
    ClassDropoutResult
        ``dropped``, per-class shares, intervals and tests; ``to_dict()`` is the
        ``classes`` section of results.json.

    Raises
    ------
    ValueError
        When a side has no labelled image.

    Examples
    --------
    >>> from collapse_audit import class_dropout
    >>> res = class_dropout(["cat"] * 50 + ["dog"] * 50, ["cat"] * 100)
    >>> res.dropped, res.classes, res.gen_share.tolist()
    (('dog',), ('cat', 'dog'), [1.0, 0.0])
    """
    rl, gl = _labels(real_labels, "real_labels"), _labels(gen_labels, "gen_labels")
    known = dict(labels_known) if labels_known is not None else {
        "real": any(v is not None for v in rl), "gen": any(v is not None for v in gl)}
    section = _classes.class_dropout(rl, gl, classes=None if classes is None else [str(c) for c in classes],
                                     alpha=float(alpha), source=source, labels_known=known, classifier=classifier,
                                     **_given(min_expected=min_expected))
    return ClassDropoutResult.from_section(section)


def subgroup_gaps(
    real_attrs: Mapping[str, Sequence],
    gen_attrs: Mapping[str, Sequence],
    *,
    sources: str | Mapping[str, str] = "manifest",
    real_feats=None,
    gen_feats=None,
    k: int = K,
    alpha: float = ALPHA,
    intersections: Sequence[tuple[str, str]] = (),
    group_order: Mapping[str, Sequence[str]] | None = None,
    min_expected: float | None = None,
) -> SubgroupGapsResult:
    """Are demographic (or any) subgroups under-represented or dropped in the generated data, and rendered as well?

    For every attribute and every intersection of two, each group's share is
    compared as classes are (Newcombe 1998 difference interval, Katz 1978
    ratio interval, pooled two-proportion z-test, Benjamini-Hochberg q-values
    within the attribute, the dropout rule of :func:`class_dropout`); with
    features, each group's precision (Kynkaanniemi et al. 2019) and coverage
    (Naeem et al. 2020) are measured on that group's images alone. Runs
    :func:`collapse_audit.analysis.subgroups.subgroup_gaps`.

    Parameters
    ----------
    real_attrs, gen_attrs : mapping of str to sequence
        Attribute name -> one value per image (``None`` or NaN = unknown; values
        compared as ``str(value)``). Every attribute must be on both sides.
    sources : str or mapping of str to str
        ``"manifest"`` (recorded values, the default) or ``"zero-shot"``
        (perceived, estimated by a model): one for every attribute, or per attribute.
    real_feats, gen_feats : array_like, shape (N, D) / (M, D), optional
        Features in image order, for the per-group precision and coverage.
    k : int
        Nearest neighbours of the per-group precision and coverage (default ``collapse_audit.config.K``).
    alpha : float
        False discovery rate of the per-group tests (default ``collapse_audit.config.ALPHA``).
    intersections : sequence of (str, str)
        Pairs of attributes also compared jointly, as attribute ``"a×b"`` with groups ``"ga&gb"``.
    group_order : mapping of str to sequence of str, optional
        Groups listed first (and always present) per attribute.
    min_expected : float, optional
        A group can be dropped only when ``real_share * n_gen`` is at least this
        (default: the analysis function's, 5).

    Returns
    -------
    SubgroupGapsResult
        ``dropped`` (as ``"attribute=group"``), ``max_gap`` and one
        :class:`~collapse_audit.results.AttributeGaps` per attribute; ``to_dict()``
        is the ``subgroups`` section of results.json.

    Raises
    ------
    ValueError
        An attribute known on one side only, an unknown source, a bad intersection,
        or values and feature rows of different lengths.

    Examples
    --------
    >>> from collapse_audit import subgroup_gaps
    >>> res = subgroup_gaps({"age": ["young"] * 50 + ["old"] * 50}, {"age": ["young"] * 100})
    >>> res.dropped, res.attribute("age").groups
    (('age=old',), ('old', 'young'))
    """
    names = list(dict.fromkeys([*real_attrs, *gen_attrs]))
    src = {a: sources for a in names} if isinstance(sources, str) else dict(sources)
    ra = {a: _labels(v, f"real_attrs[{a!r}]") for a, v in real_attrs.items()}
    ga = {a: _labels(v, f"gen_attrs[{a!r}]") for a, v in gen_attrs.items()}
    rf = gf = None
    if real_feats is not None or gen_feats is not None:
        if real_feats is None or gen_feats is None:
            raise InputError("real_feats and gen_feats go together (give both, or neither)")
        rf, _ = _rows(real_feats, None, "real_feats")
        gf, _ = _rows(gen_feats, None, "gen_feats")
    order = None if group_order is None else {a: [str(g) for g in gs] for a, gs in group_order.items()}
    section = _subgroups.subgroup_gaps(ra, ga, sources=src, real_feats=rf, gen_feats=gf, k=int(k), alpha=float(alpha),
                                       intersections=[tuple(p) for p in intersections], group_order=order,
                                       **_given(min_expected=min_expected))
    return SubgroupGapsResult.from_section(section)


def find_duplicates(
    gen,
    real=None,
    *,
    gen_paths: Sequence[str] | None = None,
    real_paths: Sequence[str] | None = None,
    gen_shas: Sequence[str] | None = None,
    real_shas: Sequence[str] | None = None,
    threshold: float | None = None,
    copy_quantile: float = COPY_QUANTILE,
    copy_threshold: float | None = None,
    method: str = "auto",
    exact_max_pairs: float = EXACT_MAX_PAIRS,
    seed: int = SEED,
    max_groups: int | None = None,
    max_pairs: int | None = None,
    embedder: str | None = None,
) -> DuplicatesResult:
    """Which generated images repeat each other, and which copy a real image (memorization)?

    In cosine distance ``d = 1 - cos`` on L2-normalised features. Within
    generated: pairs with ``d <= threshold`` among each image's 64 nearest
    neighbours (FAISS), plus equal content hashes and bit-identical rows,
    joined into connected components (single linkage). Generated vs real,
    after Alaa et al. (2022) and Carlini et al. (2023): a generated image is a
    near-copy when it is closer to its nearest real image than all but
    ``copy_quantile`` of real images are to their nearest other real image,
    or byte-identical to one. Runs :func:`collapse_audit.analysis.duplicates.find_duplicates`.

    Parameters
    ----------
    gen : array_like, shape (M, D)
        Generated features (NumPy or torch); normalised here.
    real : array_like, shape (N, D), optional
        Real features of the same embedder; without them there is no near-copy search.
    gen_paths, real_paths : sequence of str, optional
        One name per row, used in groups and pairs; default ``"gen[i]"`` /
        ``"real[i]"`` (``i`` the row), the names :func:`audit` gives array rows.
    gen_shas, real_shas : sequence of str, optional
        Content hashes per row: equal hashes are exact duplicates / copies.
    threshold : float, optional
        Within-generated threshold in [0, 2]; default 0.05
        (:data:`collapse_audit.analysis.duplicates.DEFAULT_DUP_THRESHOLD`), lowered
        to the near-copy threshold when real features put that lower.
    copy_quantile : float
        Calibration quantile of the real nearest-neighbour distances (default
        ``collapse_audit.config.COPY_QUANTILE``).
    copy_threshold : float, optional
        Near-copy threshold given instead of calibrated.
    method : {"auto", "exact", "approx"}
        Exact FAISS flat search, or an IVF index with its error measured on a
        seeded subsample; ``"auto"`` picks approximate search above
        ``exact_max_pairs`` real x generated pairs (generated x generated
        without real features), as the scan does.
    exact_max_pairs : float
        The ``"auto"`` limit (default ``collapse_audit.config.EXACT_MAX_PAIRS``).
    seed : int
        Seed of the IVF index and of the error check (default ``collapse_audit.config.SEED``).
    max_groups, max_pairs : int, optional
        Groups and near-copy pairs listed (default: the analysis function's).
    embedder : str, optional
        Embedder id recorded in the section.

    Returns
    -------
    DuplicatesResult
        ``dup_fraction``, ``groups``, ``memorized_fraction``, ``copies``; ``to_dict()``
        is the ``duplicates`` section of results.json.

    Raises
    ------
    InputError
        Features that are not a non-empty 2-D array of finite numbers, or paths of the wrong length.
    ValueError
        Sides of different dimension, a threshold outside [0, 2], an unknown ``method``.

    Examples
    --------
    >>> import numpy as np
    >>> from collapse_audit import find_duplicates
    >>> gen = np.random.default_rng(0).standard_normal((50, 16))
    >>> gen[7] = gen[3]                                  # the generator repeated itself once
    >>> res = find_duplicates(gen)
    >>> res.n_groups, res.groups[0].paths
    (1, ('gen[3]', 'gen[7]'))
    """
    if method not in PRDC_METHODS:
        raise ValueError(f"method must be one of {', '.join(PRDC_METHODS)}, got {method!r}")
    xg, gp = _rows(gen, gen_paths, "gen")
    xr, rp = (None, None) if real is None else _rows(real, real_paths, "real")
    if real is None and real_paths is not None:
        raise InputError("real_paths given without real features")
    pairs = xg.shape[0] * (xr.shape[0] if xr is not None else xg.shape[0])
    approx = method == "approx" or (method == "auto" and pairs > float(exact_max_pairs))
    section = _duplicates.find_duplicates(
        xg, xr, gen_paths=gp, real_paths=rp, gen_shas=None if gen_shas is None else [str(s) for s in gen_shas],
        real_shas=None if real_shas is None else [str(s) for s in real_shas], threshold=threshold,
        copy_quantile=float(copy_quantile), copy_threshold=copy_threshold, seed=int(seed),
        index_builder=ip_index_builder(approx=True, seed=int(seed)) if approx else None,
        **_given(max_groups=max_groups, max_pairs=max_pairs, embedder=embedder))
    return DuplicatesResult.from_section(section)


# --------------------------------------------------------------------------- embed
def _images_to_folder(images, folder: Path) -> None:
    """Write a batch of images (PIL images, or a uint8 / float [0, 1] tensor or array, NCHW or NHWC) as PNG."""
    from PIL import Image

    if hasattr(images, "detach") and hasattr(images, "cpu"):
        images = images.detach().cpu().numpy()
    if isinstance(images, np.ndarray):
        a = images
        if a.ndim == 3:  # N x H x W grey
            a = a[:, None]
        if a.ndim != 4:
            raise InputError(f"an image batch must be N x C x H x W or N x H x W x C, got shape {a.shape}")
        if a.shape[1] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
            a = a.transpose(0, 2, 3, 1)  # NCHW -> NHWC
        elif a.shape[1] in (1, 3, 4) and a.shape[-1] in (1, 3, 4):
            a = a.transpose(0, 2, 3, 1)  # ambiguous: torch's NCHW convention
        if a.dtype != np.uint8:
            if not np.issubdtype(a.dtype, np.floating):
                raise InputError(f"image tensors must be uint8 or float in [0, 1], got {a.dtype}")
            if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
                raise InputError("float image tensors must hold values in [0, 1] (no NaN)")
            a = np.rint(a * 255.0).astype(np.uint8)  # the 8-bit pixels a saved PNG would hold
        if a.shape[-1] == 1:
            a = np.repeat(a, 3, axis=-1)
        imgs = [Image.fromarray(x[..., :3]) for x in a]
    else:
        imgs = list(images)
        if not all(isinstance(i, Image.Image) for i in imgs):
            raise InputError("a list given to embed() must hold PIL images or file paths")
    width = max(5, len(str(len(imgs))))
    for i, im in enumerate(imgs):
        im.save(folder / f"{i:0{width}d}.png")


def embed(source, embedder: str = "inception", *, weights: Sequence[str] | None = None, seed: int = 0,
          device: str = "auto", batch_size: int = 64, workers: int | None = 0, amp: bool = False,
          cache_dir=None, use_cache: bool | None = None, offline: bool = False, decode: str = "auto") -> FeatureSet:
    """Embed images with one embedder; returns a :class:`~collapse_audit.features.FeatureSet`.

    ``source``: an image folder (recursive), a list of image files, a list of
    PIL images, or a batch tensor/array (uint8, or float in [0, 1]; N x C x H x W
    or N x H x W x C), which is what a training loop holds. In-memory images are
    written losslessly as 8-bit PNG and go through exactly the folder path, so
    they get the same features as the same pixels saved as PNG. ``embedder`` and
    ``weights`` as on the command line (``"inception"``, ``"clip:ViT-B-32/openai"``,
    ``weights=["random"]``). The feature cache is used for folders and files
    (``use_cache=None``) and not for in-memory images.
    """
    embs = build_embedders([embedder], weights, seed=seed, cache_dir=cache_dir, offline=offline, progress=False)
    return embed_with(source, embs, device=device, batch_size=batch_size, workers=workers, amp=amp,
                      cache_dir=cache_dir, use_cache=use_cache, decode=decode)[0]


def embed_with(source, embs: Sequence, *, device: str = "auto", batch_size: int = 64, workers: int | None = 0,
               amp: bool = False, cache_dir=None, use_cache: bool | None = None, decode: str = "auto") -> list[FeatureSet]:
    """:func:`embed` with already built embedders: one pass over ``source``, one FeatureSet per embedder.

    For callers that embed many sources with the same models (the tracker, once
    per checkpoint), so the models are built once and the images decoded once.
    """
    kw = dict(device=device, batch_size=batch_size, workers=workers, amp=amp, decode=decode)
    with tempfile.TemporaryDirectory(prefix="collapse-audit-embed-") as tmp:
        if isinstance(source, (str, os.PathLike)):
            root, files, cached = Path(source), None, True
            if not root.is_dir():
                raise InputError(f"{root}: not a folder of images")
        elif isinstance(source, (list, tuple)) and source and all(isinstance(s, (str, os.PathLike)) for s in source):
            paths = [Path(s) for s in source]
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise InputError(f"{missing[0]}: no such file ({len(missing)} missing)")
            root, files, cached = Path("/"), [str(p.resolve()).lstrip("/") for p in paths], True
        else:
            root, files, cached = Path(tmp), None, False
            _images_to_folder(source, root)
        cache = open_cache(cache_dir, cached if use_cache is None else use_cache)
        try:
            if files is None:
                res = embed_folder(root, list(embs), cache=cache, **kw)
            else:
                res = embed_files(root, files, list(embs), cache=cache, **kw)
        finally:
            if cache is not None:
                cache.close()
    n_files = getattr(res, "n_files", len(res.paths) + len(res.failures))
    return [FeatureSet(features=res.features[e.id], paths=list(res.paths), embedder_id=e.id, preprocess_id=e.preprocess_id,
                       weights_sha256=e.weights_sha256, random_weights=e.random_weights, shas=res.shas,
                       failures=list(res.failures), embedder=e.describe(), root=str(source) if cached and files is None else None,
                       n_files=n_files) for e in embs]

