"""One table of the numbers collapse-audit reports: the single place a metric's key is spelt.

Every reported number has one :class:`MetricSpec` in :data:`METRICS`: where it
lives in ``results.json`` (``path``), its gate alias (``alias``), which way is
better, a one-line meaning and how it is formatted.  The gate's aliases
(``gate.ALIASES``), ``collapse-audit compare``, the report's metric rows, the
CLI summary, the GitHub step summary and the README's alias table all read this
table (a test checks the README against it).

Renamed aliases stay accepted as ``deprecated`` names of the same spec, so an
existing CI rule keeps working:

========================  ====================
deprecated alias          canonical alias
========================  ====================
``ndb``                   ``ndb_fraction``   (``clusters.ndb`` is the *count* of bins; the alias reads the fraction)
``class_max_gap``         ``max_class_gap``
``subgroup_max_gap``      ``max_subgroup_gap``
========================  ====================

This module is the bottom of the import graph: it imports nothing from the
package.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

__all__ = [
    "BETTER",
    "BETTER_PHRASE",
    "COMPARED",
    "DEPRECATED_ALIASES",
    "HEADLINE",
    "METRICS",
    "MetricSpec",
    "by_alias",
    "by_path",
]

#: The directions a number can have: smaller is better, larger is better, closer to 1 is better.
BETTER = ("lower", "higher", "one")

#: How the report's metric rows say the direction.
BETTER_PHRASE = {"lower": "lower is better", "higher": "higher is better", "one": "about 1 is best"}


def expression(paths: tuple, reduce: str) -> str:
    """How a number read from ``paths`` with ``reduce`` reads as an expression over results.json."""
    if reduce == "len":
        return f"len({paths[0]})"
    if reduce == "sum":
        return " + ".join(paths)
    return paths[0]


@dataclass(frozen=True)
class MetricSpec:
    """One reported number.

    ``name``: how people read it (``"FID"``, ``"dropped clusters"``: compare's labels).
    ``path``: its dotted key in results.json, or several keys whose values add up (``reduce="sum"``).
    ``alias``: the canonical gate alias (``--fail-on "ALIAS OP NUMBER"``); ``deprecated``: older
    spellings of it the gate still accepts.
    ``better``: ``"lower"``, ``"higher"``, ``"one"`` (closer to 1) or None (no direction).
    ``meaning``: one line for ``--help``, the README and the gate's messages.
    ``fmt``: format spec of the value in tables.
    ``reduce``: ``"value"`` (the number at ``path``), ``"len"`` (length of the list at ``path``),
    ``"sum"`` (sum of the paths' values) or ``"approx"`` (the value; 0 when the section is absent
    because the exact method ran).
    ``headline``: one of the per-embedder headline metrics (CLI summary, report rows, step summary).
    ``spread``: a sibling key holding the number's spread (KID's ``kid_std``): shown as ``± x`` and
    widening compare's tolerance.
    ``compare_abs`` / ``compare_rel``: compare's tolerance (a change within
    ``max(abs, rel * max(|old|, |new|))`` is ``unchanged``); ``compare_abs=None``: not compared.
    """

    name: str
    path: Union[str, tuple]
    alias: Optional[str]
    better: Optional[str]
    meaning: str
    fmt: str = ".4g"
    reduce: str = "value"
    deprecated: tuple = ()
    headline: bool = False
    spread: Optional[str] = None
    compare_abs: Optional[float] = None
    compare_rel: float = 0.0

    def __post_init__(self) -> None:
        if self.better not in (None, *BETTER):
            raise ValueError(f"{self.name}: better must be one of {BETTER} or None, not {self.better!r}")
        if self.reduce not in ("value", "len", "sum", "approx"):
            raise ValueError(f"{self.name}: unknown reduce {self.reduce!r}")

    @property
    def paths(self) -> tuple:
        """The dotted keys the number is read from (one, except for sums)."""
        return (self.path,) if isinstance(self.path, str) else tuple(self.path)

    @property
    def key(self) -> str:
        """The number as an expression over results.json: ``metrics.fid``, ``len(classes.dropped)``, ``a + b``."""
        return expression(self.paths, self.reduce)

    @property
    def leaf(self) -> str:
        """The last segment of the (first) path: a headline metric's key inside any ``metrics`` block."""
        return self.paths[0].rsplit(".", 1)[-1]

    @property
    def compared(self) -> bool:
        """True when ``collapse-audit compare`` lists it."""
        return self.compare_abs is not None

    @property
    def aliases(self) -> tuple:
        """Every gate name of this number: the canonical alias first, then the deprecated ones."""
        return ((self.alias,) if self.alias else ()) + tuple(self.deprecated)


METRICS: tuple = (
    MetricSpec("FID", "metrics.fid", "fid", "lower",
               "Frechet Inception Distance of the primary embedder (lower is better)",
               headline=True, compare_abs=1e-6, compare_rel=0.01),
    MetricSpec("KID", "metrics.kid", "kid", "lower",
               "Kernel Inception Distance, mean over subsets (lower is better)",
               headline=True, spread="kid_std", compare_abs=1e-4),
    MetricSpec("precision", "metrics.precision", "precision", "higher",
               "k-NN precision: fraction of generated samples inside the real manifold",
               headline=True, compare_abs=0.005),
    MetricSpec("recall", "metrics.recall", "recall", "higher",
               "k-NN recall: fraction of real samples inside the generated manifold",
               headline=True, compare_abs=0.005),
    MetricSpec("density", "metrics.density", "density", "one",
               "density (Naeem et al. 2020); about 1 when distributions match",
               headline=True, compare_abs=0.01),
    MetricSpec("coverage", "metrics.coverage", "coverage", "higher",
               "coverage (Naeem et al. 2020): fraction of real samples with a generated neighbour",
               headline=True, compare_abs=0.005),
    MetricSpec("Vendi", "metrics.vendi", "vendi", "higher",
               "Vendi score (Friedman & Dieng 2023, cosine kernel): the effective number of distinct generated samples; "
               "compare with the real set's (metrics.vendi_real)",
               headline=True, compare_abs=1e-6, compare_rel=0.02),
    MetricSpec("Vendi of the real set", "metrics.vendi_real", "vendi_real", None,
               "the same Vendi score on the real samples: the diversity the generated set should reach"),
    MetricSpec("CMMD", "metrics.cmmd", "cmmd", "lower",
               "CMMD (Jayasumana et al. 2024): 1000 x RBF MMD^2 (sigma 10) on L2-normalised CLIP embeddings; CLIP embedders only",
               compare_abs=1e-4, compare_rel=0.01),
    MetricSpec("AuthPct", "metrics.authpct", "authpct", "higher",
               "AuthPct (Alaa et al. 2022): % of generated samples farther from their nearest real sample than that "
               "sample is from its own nearest real neighbour; low = copies of the real set",
               compare_abs=0.5),
    MetricSpec("FD-infinity", "metrics.fd_infinity", "fd_infinity", "lower",
               "FID extrapolated to infinitely many generated samples (Chong & Forsyth 2020), with --fd-inf",
               compare_abs=1e-6, compare_rel=0.01),
    MetricSpec("Inception Score", "metrics.inception_score", "inception_score", "higher",
               "Inception Score (Salimans et al. 2016) of the generated images, 10 splits, torch-fidelity's protocol; "
               "Inception embedders that embedded images in this run",
               spread="inception_score_std", compare_abs=1e-3, compare_rel=0.01),
    MetricSpec("dropped clusters", "clusters.dropped", "dropped_clusters", "lower",
               "number of real-data clusters the generator dropped",
               reduce="len", compare_abs=0.0),
    MetricSpec("NDB/k", "clusters.ndb_fraction", "ndb_fraction", "lower",
               "NDB: fraction of clusters whose generated share differs significantly from the real one",
               deprecated=("ndb",), compare_abs=0.005),
    MetricSpec("dropped classes", "classes.dropped", "dropped_classes", "lower",
               "number of real classes absent or significantly missing from the generated data",
               reduce="len", compare_abs=0.0),
    MetricSpec("largest class gap", "classes.max_gap", "max_class_gap", "lower",
               "largest absolute gap between real and generated class shares",
               deprecated=("class_max_gap",), compare_abs=0.005),
    MetricSpec("largest subgroup gap", "subgroups.max_gap", "max_subgroup_gap", "lower",
               "largest absolute gap between real and generated subgroup shares",
               deprecated=("subgroup_max_gap",), compare_abs=0.005),
    MetricSpec("dropped subgroups", "subgroups.dropped", "dropped_subgroups", "lower",
               "number of subgroups present in the real data but dropped in the generated data",
               reduce="len", compare_abs=0.0),
    MetricSpec("near-duplicate fraction", "duplicates.within_gen.dup_fraction", "dup_fraction", "lower",
               "fraction of generated images that near-duplicate another generated image",
               compare_abs=0.002),
    MetricSpec("memorized fraction", "duplicates.gen_vs_real.memorized_fraction", "memorized_fraction", "lower",
               "fraction of generated images that near-copy a real image",
               compare_abs=0.001),
    MetricSpec("unreadable files", ("inputs.gen.n_failed", "inputs.real.n_failed"), "n_failed", "lower",
               "files that could not be read, both sides together",
               reduce="sum"),
    MetricSpec("approximation error", "metrics.approximation.max_abs_error", "approx_error", "lower",
               "upper 95% bound on |approximate - exact| over precision/recall/density/coverage; 0 when PRDC was exact",
               reduce="approx"),
)

#: The numbers of track.json (``collapse-audit track``) a gate rule can name; their
#: aliases are distinct from the scan's.
TRACK_METRICS: tuple = (
    MetricSpec("collapse onset detected", "run.onset_detected", "onset_detected", "lower",
               "1 when coverage or a cluster covered earlier fell significantly below an earlier checkpoint (false-alarm rate <= alpha over the run), else 0",
               fmt="d"),
    MetricSpec("collapse onset persists", "run.onset_persists", "onset_persists", "lower",
               "1 when an onset was detected and the run did not get back (the clusters that fired covered again, "
               "coverage within min_drop of its reference) through its last checkpoint, else 0", fmt="d"),
    MetricSpec("hopping clusters", "run.hopping.clusters", "hopping_clusters", "lower",
               "real clusters that switched between covered and dropped at least twice", fmt="d", reduce="len"),
    MetricSpec("oscillating run", "run.hopping.oscillating_flag", "oscillating", "lower",
               "1 when snapshots each cover few clusters but their union covers many, else 0", fmt="d"),
    MetricSpec("never learned", "run.never_learned", "never_learned", "lower",
               "real clusters dropped at every checkpoint", fmt="d", reduce="len"),
    MetricSpec("final coverage", "run.final.coverage", "final_coverage", "higher", "coverage at the last checkpoint"),
    MetricSpec("final recall", "run.final.recall", "final_recall", "higher", "recall at the last checkpoint"),
    MetricSpec("final precision", "run.final.precision", "final_precision", "higher", "precision at the last checkpoint"),
    MetricSpec("final FID", "run.final.fid", "final_fid", "lower", "FID at the last checkpoint"),
    MetricSpec("classes dropped at the end", "run.classes.dropped_final", "final_dropped_classes", "lower",
               "classes the NDB rule drops at the last labelled checkpoint (needs --labels folders or --classifier)",
               fmt="d", reduce="len"),
    MetricSpec("classes never learned", "run.classes.never_learned", "never_learned_classes", "lower",
               "classes dropped at every labelled checkpoint (needs --labels folders or --classifier)", fmt="d", reduce="len"),
    MetricSpec("tail loss", "run.tail_loss_flag", "tail_loss", "lower",
               "1 when, over generations, the rarest real clusters were lost first (one-sided Mann-Whitney test), else 0",
               fmt="d"),
)

#: The per-embedder headline metrics (FID, KID, PRDC, Vendi), in display order.
HEADLINE: tuple = tuple(s for s in METRICS if s.headline)

#: Per-embedder numbers beyond the headline ones, shown in the report where computed.
EXTRA_METRICS: tuple = tuple(s for s in METRICS if not s.headline and s.alias in ("vendi_real", "cmmd", "fd_infinity", "inception_score", "authpct"))

#: What ``collapse-audit compare`` lists, in display order.
COMPARED: tuple = tuple(s for s in METRICS if s.compared)

#: Deprecated alias -> canonical alias.
DEPRECATED_ALIASES: dict = {old: s.alias for s in METRICS for old in s.deprecated}

_BY_ALIAS = {a.lower(): s for s in METRICS for a in s.aliases}
_BY_PATH = {}
for _s in METRICS:
    _BY_PATH.setdefault(_s.key, _s)
    for _p in _s.paths:
        _BY_PATH.setdefault(_p, _s)
del _s, _p


def by_alias(alias: str) -> Optional[MetricSpec]:
    """The spec a gate alias (canonical or deprecated, any case) names; None when it names none."""
    return _BY_ALIAS.get(str(alias).strip().lower())


def by_path(path: str) -> Optional[MetricSpec]:
    """The spec of a dotted key (``metrics.fid``, ``classes.dropped``) or expression (``len(classes.dropped)``)."""
    return _BY_PATH.get(str(path).strip())


def _check_table() -> None:
    seen: set = set()
    for s in METRICS:
        for a in s.aliases:
            if a.lower() in seen:
                raise ValueError(f"alias {a!r} is used twice in keys.METRICS")
            seen.add(a.lower())


_check_table()

