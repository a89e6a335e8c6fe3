"""The configuration of an audit: every default written once, frozen during a run.

:class:`AuditConfig` is what ``collapse-audit scan`` builds from its options and
what :func:`collapse_audit.audit` takes; :class:`AnalysisConfig` is its analysis
part (clusters, classes, subgroups, duplicates). Both are frozen: a run derives
what it needs with :func:`dataclasses.replace` and never changes the caller's
object. The module constants are the defaults; the CLI's option defaults, the
library functions' keyword defaults and the README read them from here.

This module imports nothing from the package (it is the bottom of the import graph).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

__all__ = [
    "ALPHA",
    "AnalysisConfig",
    "AuditConfig",
    "BATCH_SIZE",
    "BOOTSTRAP",
    "COPY_QUANTILE",
    "DEFAULT_EMBEDDERS",
    "EXACT_MAX_PAIRS",
    "K",
    "KID_SUBSETS",
    "KID_SUBSET_SIZE",
    "SEED",
]

#: Neighbourhood size of precision/recall/density/coverage (Naeem et al. 2020 use 5).
K = 5
#: Seed for random weights, KID subsets, bootstrap, k-means, UMAP and subsamples.
SEED = 0
#: KID: number of random subsets and their size (as torch-fidelity's defaults).
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
#: Bootstrap resamples for intervals of precision/recall/density/coverage (0 = off).
BOOTSTRAP = 0
#: Above this many real x generated pairs (50k x 50k), nearest-neighbour searches
#: use an approximate FAISS IVF index and report their measured error.
EXACT_MAX_PAIRS = 2.5e9
#: Near-copy threshold: this quantile of real-to-real nearest-neighbour distances.
COPY_QUANTILE = 0.001
#: False discovery rate of the dropout tests (Benjamini-Hochberg).
ALPHA = 0.05
#: Images per model call.
BATCH_SIZE = 64
#: Embedders of a folder scan when none is named.
DEFAULT_EMBEDDERS = ("inception", "clip")


@dataclass(frozen=True)
class AnalysisConfig:
    """Options of the analysis stage (the scan's analysis flags).

    ``seed``, ``k`` and ``exact_max_pairs`` are the audit's own: an
    :class:`AuditConfig` sets them here from its fields, so they are given once.
    """

    space: str | None = None  # embedder name/id prefix for clustering and duplicates; default: CLIP, else primary
    clusters: int | None = None
    alpha: float = ALPHA
    seed: int = SEED
    k: int = K
    labels: str | None = None  # 'folders'
    manifest: str | None = None
    classes: Sequence[str] | None = None
    classifier_id: str | None = None  # TorchScript classifier embedder id (set by the run)
    classifier_names: Sequence[str] | None = None
    subgroups: Sequence[str] = field(default_factory=tuple)
    intersections: Sequence[tuple[str, str]] = field(default_factory=tuple)
    dup_threshold: float | None = None
    copy_quantile: float = COPY_QUANTILE
    skip: bool = False
    exact_max_pairs: float = EXACT_MAX_PAIRS  # above: approximate (IVF) duplicate search
    skip_note: bool = True  # say in notes that the analysis was skipped by --no-analysis

    def __post_init__(self):
        if not 0 < float(self.alpha) < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 0 < float(self.copy_quantile) < 1:
            raise ValueError(f"copy_quantile must be in (0, 1), got {self.copy_quantile}")
        if self.dup_threshold is not None and not 0 <= float(self.dup_threshold) <= 2:
            raise ValueError(f"dup_threshold is a cosine distance in [0, 2], got {self.dup_threshold}")
        if self.clusters is not None and int(self.clusters) < 2:
            raise ValueError(f"clusters must be >= 2, got {self.clusters}")


@dataclass(frozen=True)
class AuditConfig:
    """Everything an audit needs besides the two inputs (the CLI's ``scan`` options)."""

    embedders: Sequence[str] | None = None  # None: defaults, or those of a features file
    weights: Sequence[str] | None = None
    seed: int = SEED
    device: str = "auto"
    batch_size: int = BATCH_SIZE
    workers: int | None = None
    amp: bool = False
    decode: str = "auto"  # 'auto' | 'pil' | 'device': where JPEGs are decoded and resized (see embedding.embed_files)
    fd_infinity: bool = False  # also FD-infinity (15 more FIDs on generated subsamples)
    cache_dir: str | None = None
    use_cache: bool = True
    offline: bool = False
    progress: bool | None = False  # library default: no bars; the CLI passes None (bars on a terminal)
    k: int = K
    kid_subsets: int = KID_SUBSETS
    kid_subset_size: int = KID_SUBSET_SIZE
    bootstrap: int = BOOTSTRAP
    command: Sequence[str] | None = None
    classifier: str | None = None  # TorchScript classifier spec (torchscript PATH[?options])
    engine: str = "local"  # 'local' | 'ray'
    ray_address: str | None = None
    shard_dir: str | None = None
    exact_max_pairs: float = EXACT_MAX_PAIRS  # above: approximate (IVF) nearest-neighbour search
    analysis: AnalysisConfig | None = None
    real_images: str | None = None  # image folder of an .npz real side (report thumbnails only)
    gen_images: str | None = None  # image folder of an .npz generated side (report thumbnails only)
    rehash: bool | None = None  # hash every file again instead of trusting the cache's stat shortcut

    def __post_init__(self):
        import math

        if int(self.k) < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if not 0 <= int(self.seed) < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")
        if int(self.bootstrap) < 0:
            raise ValueError(f"bootstrap must be >= 0, got {self.bootstrap}")
        if int(self.kid_subsets) < 1 or int(self.kid_subset_size) < 2:
            raise ValueError("kid_subsets must be >= 1 and kid_subset_size >= 2")
        if math.isnan(float(self.exact_max_pairs)) or float(self.exact_max_pairs) <= 0:
            raise ValueError(f"exact_max_pairs must be a positive number, got {self.exact_max_pairs}")
        a = self.analysis or AnalysisConfig()
        # the analysis uses the audit's own seed, k and exact-search limit: one value each
        object.__setattr__(self, "analysis", dataclasses.replace(a, seed=int(self.seed), k=int(self.k),
                                                                 exact_max_pairs=float(self.exact_max_pairs)))

    def replace(self, **changes) -> "AuditConfig":
        """A copy with ``changes`` (the analysis part follows the new seed / k / limit)."""
        return dataclasses.replace(self, **changes)


#: Bootstrap resamples for each checkpoint's precision/recall/density/coverage intervals in ``track``.
TRACK_BOOTSTRAP = 200
#: Resamples of the generated set behind each checkpoint's coverage standard error (the onset test's).
TRACK_SE_RESAMPLES = 200
#: Smallest drop of coverage or recall (absolute) that counts as a collapse onset, however significant.
TRACK_MIN_DROP = 0.02
#: A run is ``oscillating`` when the clusters covered by some checkpoint exceed those a snapshot covers by this share.
TRACK_OSCILLATING_GAP = 0.2
#: Generated samples per checkpoint shown in the report's flipbook.
TRACK_SAMPLES = 16


@dataclass(frozen=True)
class TrackConfig:
    """Settings of ``track`` / :class:`collapse_audit.Tracker` (every default written once, here)."""

    embedder: str = "inception"
    weights: Sequence[str] | None = None
    seed: int = SEED
    k: int = K
    clusters: int | None = None  # k-means clusters on the real set; None: the scan's default_k
    alpha: float = ALPHA  # false-alarm budget of the whole run (onset), and interval level 1 - alpha
    bootstrap: int = TRACK_BOOTSTRAP
    kid_subsets: int = KID_SUBSETS
    kid_subset_size: int = KID_SUBSET_SIZE
    exact_max_pairs: float = EXACT_MAX_PAIRS
    order: str = "step"  # 'step' | 'generation'
    min_drop: float = TRACK_MIN_DROP
    oscillating_gap: float = TRACK_OSCILLATING_GAP
    n_samples: int = TRACK_SAMPLES
    labels: str | None = None  # 'folders': class = top-level sub-folder (real side; generated too unless a classifier)
    classifier: str | None = None  # TorchScript classifier PATH (class_names in its metadata) labelling images
    device: str = "auto"
    batch_size: int = BATCH_SIZE
    workers: int | None = 0
    amp: bool = False
    decode: str = "auto"  # 'auto' | 'pil' | 'device': where JPEGs are decoded and resized (see embedding.embed_files)
    cache_dir: str | None = None
    use_cache: bool = True
    offline: bool = False

    def __post_init__(self):
        if self.order not in ("step", "generation"):
            raise ValueError(f"order must be 'step' or 'generation', got {self.order!r}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
