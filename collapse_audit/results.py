"""Result types of the analyses: the ``clusters``, ``classes``, ``subgroups`` and ``duplicates``
sections of ``results.json`` as frozen dataclasses with typed fields.

The analysis functions (:mod:`collapse_audit.analysis`) return the sections as
JSON-ready dicts, which is what the scan writes. The public wrappers
(:func:`collapse_audit.cluster_dropout`, :func:`~collapse_audit.class_dropout`,
:func:`~collapse_audit.subgroup_gaps`, :func:`~collapse_audit.find_duplicates`)
return these types instead: the numbers a user reads as fields (per-bin and
per-category values as NumPy arrays, id and name lists as tuples), the whole
section kept in ``section``, and ``to_dict()`` giving the section back.
``from_section`` reads a section of a saved ``results.json``::

    import json
    from collapse_audit import ClusterDropoutResult
    doc = json.load(open("audit/results.json"))
    clusters = ClusterDropoutResult.from_section(doc["clusters"])
    clusters.dropped, clusters.gen_share[list(clusters.dropped)]

Every array field is read-only; two results are equal when their sections are.

This module imports nothing from the package (it sits at the bottom of the
import graph, so any stage may return these types).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "AttributeGaps",
    "ChiSquare",
    "ClassDropoutResult",
    "ClusterDropoutResult",
    "DuplicateGroup",
    "DuplicatesResult",
    "NearCopy",
    "SubgroupGapsResult",
]


# --------------------------------------------------------------------------- helpers
def _ro(a: np.ndarray) -> np.ndarray:
    a = np.array(a)  # a copy: the section's lists stay the only source
    a.flags.writeable = False
    return a


def _num(v) -> float:
    return math.nan if v is None else float(v)


def _column(rows: Sequence[Mapping], key: str) -> np.ndarray:
    """Per-row float ``key`` as a read-only (n,) array; missing or null entries are NaN."""
    return _ro(np.array([_num(r.get(key)) for r in rows], dtype=np.float64).reshape(len(rows)))


def _counts(rows: Sequence[Mapping], key: str) -> np.ndarray:
    return _ro(np.array([int(r[key]) for r in rows], dtype=np.int64).reshape(len(rows)))


def _intervals(rows: Sequence[Mapping], key: str) -> np.ndarray:
    """Per-row ``[lo, hi]`` as a read-only (n, 2) array; a missing or null interval is a row of NaN."""
    out = np.full((len(rows), 2), np.nan, dtype=np.float64)
    for i, r in enumerate(rows):
        ci = r.get(key)
        if ci is not None:
            out[i] = [_num(ci[0]), _num(ci[1])]
    return _ro(out)


def _statuses(rows: Sequence[Mapping]) -> np.ndarray:
    return _ro(np.array([str(r["status"]) for r in rows], dtype="<U7").reshape(len(rows)))


def _require(d, keys: Sequence[str], what: str) -> None:
    if not isinstance(d, Mapping):
        got = "null (the analysis did not run; see the notes of results.json)" if d is None else type(d).__name__
        raise ValueError(f"not a {what} section of results.json: got {got}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise ValueError(f"not a {what} section of results.json: missing {', '.join(missing)}")


def _opt_int(v) -> int | None:
    return None if v is None else int(v)


def _opt_float(v) -> float | None:
    return None if v is None else float(v)


class _Section:
    """What every result type shares: ``to_dict()`` and equality by section."""

    section: dict

    def to_dict(self) -> dict:
        """The results.json section (a deep copy: editing it leaves this result alone)."""
        return copy.deepcopy(self.section)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.section == other.section

    __hash__ = None  # type: ignore[assignment]  (holds a dict: unhashable, like the section)


# --------------------------------------------------------------------------- clusters
@dataclass(frozen=True, eq=False)
class ClusterDropoutResult(_Section):
    """Per-cluster mode dropout: the NDB test of Richardson & Weiss (2018), with Benjamini-Hochberg correction.

    The real features are split into ``k`` bins by k-means; every real and
    generated sample goes to its nearest centroid; per bin ``b`` the
    generated share is compared with the real share by a pooled
    two-proportion z-test, ``z = (gen_share - real_share) /
    sqrt(P (1 - P) (1/N_gen + 1/N_real))``, and the ``k`` p-values are
    corrected by Benjamini & Hochberg (1995) (the paper tests each bin
    uncorrected). A bin is *dropped* when ``q < alpha``, at least 5
    generated samples were expected there (``real_share * n_gen >= 5``) and
    ``gen_share <= 0.1 * real_share``; *under* / *over* when significant
    otherwise; *ok* else. See :func:`collapse_audit.analysis.clusters.cluster_dropout`.

    Per-bin arrays are indexed by cluster id: entry ``b`` is bin ``b``
    (``0 .. k-1``), the ids used in ``dropped``, ``under`` and ``over``.

    Attributes
    ----------
    k : int
        Number of bins (k-means clusters of the real features) used.
    ndb : int
        NDB: number of bins whose generated share differs significantly (``q < alpha``).
    ndb_fraction : float
        ``ndb / k``, in [0, 1] (gate alias ``ndb``).
    dropped : tuple of int
        Ids of dropped bins: modes of the real data the generator (almost) never draws.
    under, over : tuple of int
        Ids of bins significantly under- / over-represented (and not dropped).
    status : ndarray of str, shape (k,)
        ``"dropped"``, ``"under"``, ``"over"`` or ``"ok"`` per bin.
    real_counts, gen_counts : ndarray of int64, shape (k,)
        Real / generated samples nearest to each centroid.
    real_share, gen_share : ndarray of float64, shape (k,)
        ``real_counts / n_real`` and ``gen_counts / n_gen``.
    gen_share_ci : ndarray of float64, shape (k, 2)
        Wilson (1927) score interval of ``gen_share`` at level ``1 - alpha`` (lower, upper).
    diff : ndarray of float64, shape (k,)
        ``gen_share - real_share`` (negative: under-represented).
    z, p, q : ndarray of float64, shape (k,)
        z statistic (positive: over-represented), two-sided p-value, BH q-value.
    real_exemplars, gen_exemplars : tuple of tuple of str, length k
        Per bin, paths of up to ``n_exemplars`` samples nearest the centroid first
        (what the bin looks like; a dropped bin has no generated exemplar).
    n_real, n_gen : int
        Real samples clustered, generated samples assigned.
    alpha : float
        False discovery rate of the per-bin tests.
    seed : int
        Seed of the k-means.
    method : str
        Clustering method (``"faiss-kmeans"``).
    embedder : str
        Embedder id of the feature space (empty when not given).
    k_requested : int or None
        The ``k`` asked for when it was reduced to at most ``n_real // 5``; None otherwise.
    section : dict
        The ``clusters`` section of results.json, as the analysis returned it.

    References
    ----------
    E. Richardson and Y. Weiss (2018), "On GANs and GMMs", NeurIPS.
    Y. Benjamini and Y. Hochberg (1995), "Controlling the false discovery rate", JRSS-B 57:289-300.
    E. B. Wilson (1927), "Probable inference, the law of succession, and statistical inference", JASA 22:209-212.
    """

    k: int
    ndb: int
    ndb_fraction: float
    dropped: tuple[int, ...]
    under: tuple[int, ...]
    over: tuple[int, ...]
    status: np.ndarray = field(repr=False)
    real_counts: np.ndarray = field(repr=False)
    gen_counts: np.ndarray = field(repr=False)
    real_share: np.ndarray = field(repr=False)
    gen_share: np.ndarray = field(repr=False)
    gen_share_ci: np.ndarray = field(repr=False)
    diff: np.ndarray = field(repr=False)
    z: np.ndarray = field(repr=False)
    p: np.ndarray = field(repr=False)
    q: np.ndarray = field(repr=False)
    real_exemplars: tuple[tuple[str, ...], ...] = field(repr=False)
    gen_exemplars: tuple[tuple[str, ...], ...] = field(repr=False)
    n_real: int
    n_gen: int
    alpha: float
    seed: int
    method: str
    embedder: str
    k_requested: int | None
    section: dict = field(repr=False)

    @classmethod
    def from_section(cls, d: Mapping[str, Any]) -> "ClusterDropoutResult":
        """Read the ``clusters`` section of results.json.

        Parameters
        ----------
        d : dict
            The section (``results["clusters"]``), as :func:`~collapse_audit.analysis.clusters.cluster_dropout`
            returns it or ``json.load`` reads it. It is kept as ``section`` (not copied).

        Returns
        -------
        ClusterDropoutResult

        Raises
        ------
        ValueError
            When ``d`` is null or lacks a required key (``dropped``, ``ndb_fraction``, ``k``, ``bins``).
        """
        _require(d, ("dropped", "ndb_fraction", "k", "bins"), "clusters")
        bins = sorted(d["bins"], key=lambda b: int(b["id"]))
        k = int(d["k"])
        if len(bins) != k or [int(b["id"]) for b in bins] != list(range(k)):
            raise ValueError(f"not a clusters section of results.json: {len(bins)} bins for k = {k}")
        real_counts, gen_counts = _counts(bins, "n_real"), _counts(bins, "n_gen")
        ndb = d.get("ndb")
        return cls(
            k=k,
            ndb=int(ndb) if ndb is not None else int(round(float(d["ndb_fraction"]) * k)),
            ndb_fraction=float(d["ndb_fraction"]),
            dropped=tuple(int(b) for b in d["dropped"]),
            under=tuple(int(b) for b in d.get("under", ())),
            over=tuple(int(b) for b in d.get("over", ())),
            status=_statuses(bins),
            real_counts=real_counts,
            gen_counts=gen_counts,
            real_share=_column(bins, "real_share"),
            gen_share=_column(bins, "gen_share"),
            gen_share_ci=_intervals(bins, "gen_share_ci"),
            diff=_column(bins, "diff"),
            z=_column(bins, "z"),
            p=_column(bins, "p"),
            q=_column(bins, "q"),
            real_exemplars=tuple(tuple(str(x) for x in b.get("real_exemplars", ())) for b in bins),
            gen_exemplars=tuple(tuple(str(x) for x in b.get("gen_exemplars", ())) for b in bins),
            n_real=int(d.get("n_real", real_counts.sum())),
            n_gen=int(d.get("n_gen", gen_counts.sum())),
            alpha=_num(d.get("alpha")),
            seed=int(d.get("seed", 0)),
            method=str(d.get("method", "")),
            embedder=str(d.get("embedder", "")),
            k_requested=_opt_int(d.get("k_requested")),
            section=d,  # type: ignore[arg-type]
        )


# --------------------------------------------------------------------------- classes and subgroups
@dataclass(frozen=True)
class ChiSquare:
    """A Pearson chi-square test (Pearson 1900): ``statistic``, p-value ``p``, degrees of freedom ``dof``.

    Attributes
    ----------
    statistic : float
        The chi-square statistic.
    p : float
        Its p-value.
    dof : int
        Degrees of freedom (0 when there was nothing to test).
    """

    statistic: float
    p: float
    dof: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "ChiSquare | None":
        """``{"statistic", "p", "dof"}`` as a :class:`ChiSquare`; None for None."""
        if d is None:
            return None
        return cls(statistic=float(d["statistic"]), p=float(d["p"]), dof=int(d["dof"]))


def _share_table(rows: Sequence[Mapping]) -> dict:
    """The per-category arrays that class rows and group rows share (see ``category_row`` in the schema)."""
    return dict(
        status=_statuses(rows),
        real_counts=_counts(rows, "n_real"),
        gen_counts=_counts(rows, "n_gen"),
        real_share=_column(rows, "real_share"),
        gen_share=_column(rows, "gen_share"),
        gen_share_ci=_intervals(rows, "gen_share_ci"),
        diff=_column(rows, "diff"),
        diff_ci=_intervals(rows, "diff_ci"),
        ratio=_column(rows, "ratio"),
        ratio_ci=_intervals(rows, "ratio_ci"),
        z=_column(rows, "z"),
        p=_column(rows, "p"),
        q=_column(rows, "q"),
    )


@dataclass(frozen=True, eq=False)
class ClassDropoutResult(_Section):
    """Per-class dropout: generated vs real class shares, with intervals, tests and a status per class.

    Per class: the Wilson (1927) score interval of the generated share, the
    Newcombe (1998, method 10) hybrid score interval of ``gen - real``, the
    Katz et al. (1978) log interval of ``gen / real``, and the pooled
    two-proportion z-test (the per-bin test of NDB, Richardson & Weiss 2018)
    with Benjamini-Hochberg (1995) q-values across classes. Over all classes:
    Pearson chi-square goodness of fit of the generated counts against the
    real proportions, and the Pearson test of homogeneity of the 2 x C table.
    A class is *dropped* when ``q < alpha``, ``real_share * n_gen >=
    min_expected`` and ``gen_share <= negligible_ratio * real_share``;
    *under* / *over* when significant otherwise (a class seen only in the
    generated data is *over*); *ok* else. See
    :func:`collapse_audit.analysis.classes.class_dropout`.

    Per-class arrays follow ``classes``: given classes first, then the other
    real classes by name, then generated-only ones.

    Attributes
    ----------
    classes : tuple of str, length C
        Class names, in row order.
    status : ndarray of str, shape (C,)
        ``"dropped"``, ``"under"``, ``"over"`` or ``"ok"`` per class.
    dropped, under, over : tuple of str
        Names of the classes with that status.
    real_counts, gen_counts : ndarray of int64, shape (C,)
        Labelled real / generated images of each class.
    real_share, gen_share : ndarray of float64, shape (C,)
        Shares among the labelled images of each side.
    gen_share_ci : ndarray of float64, shape (C, 2)
        Wilson interval of ``gen_share`` at level ``1 - alpha``.
    diff : ndarray of float64, shape (C,)
        ``gen_share - real_share``.
    diff_ci : ndarray of float64, shape (C, 2)
        Newcombe interval of ``diff``.
    ratio : ndarray of float64, shape (C,)
        ``gen_share / real_share``; NaN for a class with no real image.
    ratio_ci : ndarray of float64, shape (C, 2)
        Katz log interval of ``ratio``; NaN rows for a class with no real image.
    expected_gen : ndarray of float64, shape (C,)
        ``real_share * n_gen``: the generated count expected under equal shares.
    z, p, q : ndarray of float64, shape (C,)
        z statistic (positive: over-represented), two-sided p-value, BH q-value.
    max_gap : float
        Largest ``|gen_share - real_share|`` (gate alias ``max_class_gap``).
    max_gap_class : str or None
        The class with that gap; None when there are no classes.
    chi2 : ChiSquare
        Goodness of fit of the generated counts against the real proportions
        (treats them as known: anti-conservative when the real sample is not larger).
    chi2_homogeneity : ChiSquare or None
        Test of homogeneity of the 2 x C table (accounts for both sides' sampling noise).
    n_real, n_gen : int
        Labelled real / generated images.
    n_unlabelled_real, n_unlabelled_gen : int
        Images without a label (excluded), per side.
    alpha : float
        False discovery rate of the tests; intervals are at level ``1 - alpha``.
    min_expected : float
        A class can be dropped only when ``real_share * n_gen`` is at least this.
    negligible_ratio : float
        A class can be dropped only when ``gen_share <= negligible_ratio * real_share``.
    source : str
        Where the labels came from (``"manifest"``, ``"folders"``, ``"zero-shot"``, ``"torchscript"``, ``"knn"``).
    classifier : dict or None
        The classifier that predicted labels (``kind``, ``id``, ``agreement``, ...); None when every label was known.
    section : dict
        The ``classes`` section of results.json, as the analysis returned it.

    References
    ----------
    E. B. Wilson (1927), JASA 22:209-212. R. G. Newcombe (1998), "Interval estimation for the
    difference between independent proportions", Statistics in Medicine 17:873-890.
    D. Katz, J. Baptista, S. P. Azen and M. C. Pike (1978), "Obtaining confidence intervals for the
    risk ratio in cohort studies", Biometrics 34:469-474. E. Richardson and Y. Weiss (2018), "On GANs
    and GMMs", NeurIPS. Y. Benjamini and Y. Hochberg (1995), JRSS-B 57:289-300.
    """

    classes: tuple[str, ...]
    status: np.ndarray = field(repr=False)
    dropped: tuple[str, ...]
    under: tuple[str, ...]
    over: tuple[str, ...]
    real_counts: np.ndarray = field(repr=False)
    gen_counts: np.ndarray = field(repr=False)
    real_share: np.ndarray = field(repr=False)
    gen_share: np.ndarray = field(repr=False)
    gen_share_ci: np.ndarray = field(repr=False)
    diff: np.ndarray = field(repr=False)
    diff_ci: np.ndarray = field(repr=False)
    ratio: np.ndarray = field(repr=False)
    ratio_ci: np.ndarray = field(repr=False)
    expected_gen: np.ndarray = field(repr=False)
    z: np.ndarray = field(repr=False)
    p: np.ndarray = field(repr=False)
    q: np.ndarray = field(repr=False)
    max_gap: float
    max_gap_class: str | None
    chi2: ChiSquare
    chi2_homogeneity: ChiSquare | None
    n_real: int
    n_gen: int
    n_unlabelled_real: int
    n_unlabelled_gen: int
    alpha: float
    min_expected: float
    negligible_ratio: float
    source: str
    classifier: dict | None = field(repr=False)
    section: dict = field(repr=False)

    @classmethod
    def from_section(cls, d: Mapping[str, Any]) -> "ClassDropoutResult":
        """Read the ``classes`` section of results.json.

        Parameters
        ----------
        d : dict
            The section (``results["classes"]``), as :func:`~collapse_audit.analysis.classes.class_dropout`
            returns it or ``json.load`` reads it. It is kept as ``section`` (not copied).

        Returns
        -------
        ClassDropoutResult

        Raises
        ------
        ValueError
            When ``d`` is null or lacks a required key (``dropped``, ``max_gap``, ``classes``, ``source``).
        """
        _require(d, ("dropped", "max_gap", "classes", "source"), "classes")
        rows = list(d["classes"])
        counts = _share_table(rows)
        n_lab = d.get("n_labelled") or {}
        n_unl = d.get("n_unlabelled") or {}
        chi2 = ChiSquare.from_dict(d.get("chi2"))
        return cls(
            classes=tuple(str(r["name"]) for r in rows),
            dropped=tuple(str(c) for c in d["dropped"]),
            under=tuple(str(c) for c in d.get("under", ())),
            over=tuple(str(c) for c in d.get("over", ())),
            expected_gen=_column(rows, "expected_gen"),
            max_gap=float(d["max_gap"]),
            max_gap_class=d.get("max_gap_class"),
            chi2=chi2,  # type: ignore[arg-type]
            chi2_homogeneity=ChiSquare.from_dict(d.get("chi2_homogeneity")),
            n_real=int(n_lab.get("real", counts["real_counts"].sum())),
            n_gen=int(n_lab.get("gen", counts["gen_counts"].sum())),
            n_unlabelled_real=int(n_unl.get("real", 0)),
            n_unlabelled_gen=int(n_unl.get("gen", 0)),
            alpha=_num(d.get("alpha")),
            min_expected=_num(d.get("min_expected")),
            negligible_ratio=_num(d.get("negligible_ratio")),
            source=str(d["source"]),
            classifier=d.get("classifier"),
            section=d,  # type: ignore[arg-type]
            **counts,
        )


@dataclass(frozen=True, eq=False)
class AttributeGaps(_Section):
    """One attribute of :class:`SubgroupGapsResult` (or the intersection ``"A×B"`` of two) and its groups.

    Group shares are compared as classes are (see :class:`ClassDropoutResult`:
    Wilson, Newcombe and Katz intervals, pooled two-proportion z-test,
    Benjamini-Hochberg q-values within the attribute, the same status rule);
    per group, ``precision`` (Kynkaanniemi et al. 2019) and ``coverage``
    (Naeem et al. 2020) of the group's generated images against the group's
    real images alone. Per-group arrays follow ``groups``.

    Attributes
    ----------
    name : str
        Attribute name (``"A×B"`` for an intersection, whose groups read ``"a&b"``).
    source : str
        ``"manifest"`` (recorded) or ``"zero-shot"`` (estimated by CLIP prompts).
    perceived : bool
        True when the attribute is estimated by a model, not a recorded ground truth.
    note : str
        How to read the attribute.
    parts : tuple of str
        The attribute(s) this one is made of (two for an intersection).
    skipped : str or None
        Why the attribute could not be compared (then ``groups`` is empty); None when it was.
    groups : tuple of str, length G
        Group names, in row order.
    status : ndarray of str, shape (G,)
        ``"dropped"``, ``"under"``, ``"over"`` or ``"ok"`` per group.
    dropped, under, over : tuple of str
        Names of the groups with that status.
    real_counts, gen_counts : ndarray of int64, shape (G,)
        Real / generated images of each group.
    real_share, gen_share, diff, ratio, z, p, q : ndarray of float64, shape (G,)
        As for classes (``ratio`` is NaN for a group with no real image).
    gen_share_ci, diff_ci, ratio_ci : ndarray of float64, shape (G, 2)
        Wilson, Newcombe and Katz intervals at level ``1 - alpha``.
    precision, coverage : ndarray of float64, shape (G,)
        The group's precision and coverage; NaN when no features were given or
        either side has ``k`` or fewer images of the group.
    max_gap : float or None
        Largest ``|gen_share - real_share|`` over the groups; None when skipped.
    max_gap_group : str or None
        The group with that gap; None when skipped.
    chi2 : ChiSquare or None
        Goodness of fit of the generated counts against the real proportions; None when skipped.
    n_real, n_gen : int or None
        Images with a known value, per side; None when skipped.
    section : dict
        The attribute's entry of ``subgroups.attributes``.
    """

    name: str
    source: str
    perceived: bool
    note: str = field(repr=False)
    parts: tuple[str, ...]
    skipped: str | None
    groups: tuple[str, ...]
    status: np.ndarray = field(repr=False)
    dropped: tuple[str, ...]
    under: tuple[str, ...]
    over: tuple[str, ...]
    real_counts: np.ndarray = field(repr=False)
    gen_counts: np.ndarray = field(repr=False)
    real_share: np.ndarray = field(repr=False)
    gen_share: np.ndarray = field(repr=False)
    gen_share_ci: np.ndarray = field(repr=False)
    diff: np.ndarray = field(repr=False)
    diff_ci: np.ndarray = field(repr=False)
    ratio: np.ndarray = field(repr=False)
    ratio_ci: np.ndarray = field(repr=False)
    z: np.ndarray = field(repr=False)
    p: np.ndarray = field(repr=False)
    q: np.ndarray = field(repr=False)
    precision: np.ndarray = field(repr=False)
    coverage: np.ndarray = field(repr=False)
    max_gap: float | None
    max_gap_group: str | None
    chi2: ChiSquare | None = field(repr=False)
    n_real: int | None
    n_gen: int | None
    section: dict = field(repr=False)

    @classmethod
    def from_section(cls, d: Mapping[str, Any]) -> "AttributeGaps":
        """Read one entry of ``subgroups.attributes``.

        Parameters
        ----------
        d : dict
            The attribute's entry; kept as ``section`` (not copied).

        Returns
        -------
        AttributeGaps

        Raises
        ------
        ValueError
            When ``d`` lacks a required key (``name``, ``source``, ``perceived``, ``groups``, ``max_gap``, ``dropped``).
        """
        _require(d, ("name", "source", "perceived", "groups", "max_gap", "dropped"), "subgroups attribute")
        rows = list(d["groups"])
        n_lab = d.get("n_labelled")
        return cls(
            name=str(d["name"]),
            source=str(d["source"]),
            perceived=bool(d["perceived"]),
            note=str(d.get("note", "")),
            parts=tuple(str(x) for x in d.get("parts", (d["name"],))),
            skipped=d.get("skipped"),
            groups=tuple(str(r["name"]) for r in rows),
            dropped=tuple(str(g) for g in d["dropped"]),
            under=tuple(str(g) for g in d.get("under", ())),
            over=tuple(str(g) for g in d.get("over", ())),
            precision=_column(rows, "precision"),
            coverage=_column(rows, "coverage"),
            max_gap=_opt_float(d["max_gap"]),
            max_gap_group=d.get("max_gap_group"),
            chi2=ChiSquare.from_dict(d.get("chi2")),
            n_real=_opt_int(n_lab.get("real")) if n_lab else None,
            n_gen=_opt_int(n_lab.get("gen")) if n_lab else None,
            section=d,  # type: ignore[arg-type]
            **_share_table(rows),
        )


@dataclass(frozen=True, eq=False)
class SubgroupGapsResult(_Section):
    """Subgroup representation gaps: are groups of an attribute under-represented or dropped in the generated data?

    For every attribute (a manifest column, or perceived by CLIP zero-shot
    prompts) and every requested intersection of two, each group's share is
    compared as classes are (Newcombe 1998 difference interval, Katz 1978
    ratio interval, pooled two-proportion z-test, Benjamini-Hochberg q-values
    within the attribute, the ``dropped`` / ``under`` / ``over`` rule of
    :class:`ClassDropoutResult`), and its quality is measured on the group
    alone: precision (Kynkaanniemi et al. 2019) and coverage (Naeem et al.
    2020) of the group's generated images against its real images. See
    :func:`collapse_audit.analysis.subgroups.subgroup_gaps`.

    Attributes
    ----------
    attributes : tuple of AttributeGaps
        Every attribute, then every intersection (see :meth:`attribute`).
    max_gap : float or None
        Largest per-attribute ``max_gap`` (gate alias ``max_subgroup_gap``); None when every attribute was skipped.
    max_gap_attribute : str or None
        The attribute with that gap.
    dropped : tuple of str
        Dropped groups over all attributes and intersections, as ``"attribute=group"``.
    alpha : float
        False discovery rate of the per-group tests (within each attribute).
    k : int
        Nearest neighbours of the per-group precision and coverage.
    section : dict
        The ``subgroups`` section of results.json, as the analysis returned it.

    References
    ----------
    R. G. Newcombe (1998), Statistics in Medicine 17:873-890. D. Katz et al. (1978), Biometrics
    34:469-474. Y. Benjamini and Y. Hochberg (1995), JRSS-B 57:289-300. T. Kynkaanniemi, T. Karras,
    S. Laine, J. Lehtinen and T. Aila (2019), "Improved precision and recall metric for assessing
    generative models", NeurIPS. M. F. Naeem, S. J. Oh, Y. Uh, Y. Choi and J. Yoo (2020), "Reliable
    fidelity and diversity metrics for generative models", ICML.
    """

    attributes: tuple[AttributeGaps, ...]
    max_gap: float | None
    max_gap_attribute: str | None
    dropped: tuple[str, ...]
    alpha: float
    k: int
    section: dict = field(repr=False)

    def attribute(self, name: str) -> AttributeGaps:
        """The attribute (or intersection ``"A×B"``) called ``name``; KeyError when there is none."""
        for a in self.attributes:
            if a.name == name:
                return a
        raise KeyError(f"no attribute {name!r} (have: {', '.join(a.name for a in self.attributes) or 'none'})")

    @classmethod
    def from_section(cls, d: Mapping[str, Any]) -> "SubgroupGapsResult":
        """Read the ``subgroups`` section of results.json.

        Parameters
        ----------
        d : dict
            The section (``results["subgroups"]``), as :func:`~collapse_audit.analysis.subgroups.subgroup_gaps`
            returns it or ``json.load`` reads it. It is kept as ``section`` (not copied).

        Returns
        -------
        SubgroupGapsResult

        Raises
        ------
        ValueError
            When ``d`` is null or lacks a required key (``attributes``, ``max_gap``, ``dropped``).
        """
        _require(d, ("attributes", "max_gap", "dropped"), "subgroups")
        return cls(
            attributes=tuple(AttributeGaps.from_section(a) for a in d["attributes"]),
            max_gap=_opt_float(d["max_gap"]),
            max_gap_attribute=d.get("max_gap_attribute"),
            dropped=tuple(str(x) for x in d["dropped"]),
            alpha=_num(d.get("alpha")),
            k=int(d.get("k", 0)),
            section=d,  # type: ignore[arg-type]
        )


# --------------------------------------------------------------------------- duplicates
@dataclass(frozen=True)
class DuplicateGroup:
    """Generated images that near-duplicate each other (a connected component of the pairs within the threshold).

    Attributes
    ----------
    size : int
        Images in the group (>= 2).
    paths : tuple of str
        Paths of the members, lowest index first (at most 24).
    max_distance : float
        Largest cosine distance of a linking pair (<= the threshold).
    diameter : float or None
        Largest cosine distance between any two members; None for groups of more than 2048 images.
    exact : bool
        True when every member has the same content hash (byte-identical files).
    n_distinct_files : int or None
        Distinct content hashes among the members; None when hashes are unknown.
    """

    size: int
    paths: tuple[str, ...]
    max_distance: float
    diameter: float | None
    exact: bool
    n_distinct_files: int | None


@dataclass(frozen=True)
class NearCopy:
    """A generated image that near-copies a real one.

    Attributes
    ----------
    gen_path, real_path : str
        The generated image and its nearest real image.
    distance : float
        Their cosine distance (0 for an exact copy).
    exact : bool
        True when the two files have the same content hash.
    """

    gen_path: str
    real_path: str
    distance: float
    exact: bool


@dataclass(frozen=True, eq=False)
class DuplicatesResult(_Section):
    """Near-duplicates within the generated set, and near-copies of real images (memorization).

    Distances are cosine distances ``d = 1 - cos(a, b)`` in [0, 2] on
    L2-normalised features. *Within generated*: pairs with ``d <= threshold``
    among each image's 64 nearest neighbours (FAISS kNN search), plus equal
    content hashes and bit-identical rows, joined into connected components
    (single linkage); ``dup_fraction`` is the share of generated images in a
    group of two or more. *Generated vs real* (when real features are given),
    after the authenticity test of Alaa et al. (2022) and the near-copy search
    of Carlini et al. (2023): the threshold is the ``copy_quantile`` quantile
    of the real images' distances to their nearest *other* real image; a
    generated image closer than that to its nearest real image (or
    byte-identical to one) is a near-copy. A generator that samples the real
    distribution without copying has about ``copy_quantile`` of its outputs
    below the threshold by chance (``expected_by_chance``; ``p_excess`` is
    the one-sided binomial tail). See
    :func:`collapse_audit.analysis.duplicates.find_duplicates`.

    Attributes
    ----------
    dup_fraction : float
        Fraction of generated images with at least one near-duplicate (gate alias ``dup_fraction``).
    n_groups, n_in_groups, exact_groups : int
        Near-duplicate groups, generated images in a group, groups of byte-identical files.
    groups : tuple of DuplicateGroup
        The groups, largest first (at most ``max_groups``).
    threshold : float
        Within-generated threshold (cosine distance) that was used.
    threshold_method : str
        How it was chosen: the fixed default, given, or calibrated on the real set.
    n_gen : int
        Generated images searched.
    n_saturated : int
        Searched images with more than 64 near-duplicates (only their 64 nearest are edges).
    memorized_fraction : float or None
        Fraction of generated images that near-copy a real one; None without real features.
    n_memorized, n_exact : int or None
        Near-copies, and generated files byte-identical to a real file; None without real features.
    copy_threshold : float or None
        Near-copy threshold (calibrated, or the override); None without real features or calibration.
    copy_quantile : float or None
        The calibration quantile; None without real features.
    expected_by_chance : float or None
        Fraction expected below the threshold by chance; None for an override threshold.
    p_excess : float or None
        One-sided binomial ``P(X >= n_memorized)``, ``X ~ Bin(n_gen, expected_by_chance)``.
    copies : tuple of NearCopy
        Near-copies, closest first (at most ``max_pairs``); empty without real features.
    method : str
        ``"exact"`` (FAISS flat index) or ``"approx"`` (FAISS IVF index).
    approximation : dict or None
        With ``method="approx"``, the error measured against exact search on a seeded subsample.
    embedder : str
        Embedder id of the feature space (empty when not given).
    section : dict
        The ``duplicates`` section of results.json, as the analysis returned it.

    References
    ----------
    A. M. Alaa, B. van Breugel, E. Saveliev and M. van der Schaar (2022), "How Faithful is your
    Synthetic Data? Sample-level Metrics for Evaluating and Auditing Generative Models", ICML.
    N. Carlini, J. Hayes, M. Nasr, M. Jagielski, V. Sehwag, F. Tramer, B. Balle, D. Ippolito and
    E. Wallace (2023), "Extracting Training Data from Diffusion Models", USENIX Security.
    """

    dup_fraction: float
    n_groups: int
    n_in_groups: int
    exact_groups: int
    groups: tuple[DuplicateGroup, ...] = field(repr=False)
    threshold: float
    threshold_method: str = field(repr=False)
    n_gen: int
    n_saturated: int
    memorized_fraction: float | None
    n_memorized: int | None
    n_exact: int | None
    copy_threshold: float | None
    copy_quantile: float | None
    expected_by_chance: float | None
    p_excess: float | None
    copies: tuple[NearCopy, ...] = field(repr=False)
    method: str
    approximation: dict | None = field(repr=False)
    embedder: str
    section: dict = field(repr=False)

    @classmethod
    def from_section(cls, d: Mapping[str, Any]) -> "DuplicatesResult":
        """Read the ``duplicates`` section of results.json.

        Parameters
        ----------
        d : dict
            The section (``results["duplicates"]``), as :func:`~collapse_audit.analysis.duplicates.find_duplicates`
            returns it or ``json.load`` reads it. It is kept as ``section`` (not copied).

        Returns
        -------
        DuplicatesResult

        Raises
        ------
        ValueError
            When ``d`` is null or lacks a required key (``within_gen``, ``gen_vs_real``).
        """
        _require(d, ("within_gen", "gen_vs_real"), "duplicates")
        w = d["within_gen"]
        _require(w, ("dup_fraction",), "duplicates.within_gen")
        c = d["gen_vs_real"] or {}
        groups = tuple(
            DuplicateGroup(size=int(g["size"]), paths=tuple(str(p) for p in g["paths"]), max_distance=float(g["max_distance"]),
                           diameter=_opt_float(g.get("diameter")), exact=bool(g["exact"]),
                           n_distinct_files=_opt_int(g.get("n_distinct_files")))
            for g in w.get("groups", ())
        )
        copies = tuple(
            NearCopy(gen_path=str(x["gen_path"]), real_path=str(x["real_path"]), distance=float(x["distance"]),
                     exact=bool(x["exact"]))
            for x in c.get("pairs", ())
        )
        calib = c.get("calibration") or {}
        return cls(
            dup_fraction=float(w["dup_fraction"]),
            n_groups=int(w.get("n_groups", len(groups))),
            n_in_groups=int(w.get("n_in_groups", sum(g.size for g in groups))),
            exact_groups=int(w.get("exact_groups", sum(g.exact for g in groups))),
            groups=groups,
            threshold=_num(w.get("threshold")),
            threshold_method=str(w.get("threshold_method", "")),
            n_gen=int(w.get("n", 0)),
            n_saturated=int(w.get("n_saturated", 0)),
            memorized_fraction=_opt_float(c.get("memorized_fraction")),
            n_memorized=_opt_int(c.get("n_memorized")),
            n_exact=_opt_int(c.get("n_exact")),
            copy_threshold=_opt_float(c.get("threshold")),
            copy_quantile=_opt_float(calib.get("quantile")),
            expected_by_chance=_opt_float(c.get("expected_by_chance")),
            p_excess=_opt_float(c.get("p_excess")),
            copies=copies,
            method="approx" if str(d.get("search", "")).startswith("approx") else "exact",
            approximation=d.get("approximation"),
            embedder=str(d.get("embedder", "")),
            section=d,  # type: ignore[arg-type]
        )
