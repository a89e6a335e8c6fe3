"""Watch a training run: audit checkpoints against one real set, over time.

A :class:`Tracker` holds one real reference (features, k-means clusters,
kNN radii are recomputed per checkpoint) and audits checkpoints one at a time:

    tracker = Tracker(real=R)                       # array, FeatureSet, folder or .npz
    for step in ...:
        found = tracker.update(step, features=G)    # or images=batch (uint8/float tensor, PIL list, folder)
        for alert in found["alerts"]: print(alert["message"])
    tracker.write("track-out/")                     # track.json + track.html

Every checkpoint is assigned to the *same* real clusters (fitted once on the
real set), so cluster occupancy is comparable across checkpoints.  Over the
run, :func:`collapse_audit.trackstats.analyse_run` finds the collapse onset
(false-alarm rate over the whole run <= alpha), mode hopping, never-learned
clusters, the best checkpoint and, over generations, tail loss.  The
``collapse-audit track`` command is :func:`discover_checkpoints` plus a
Tracker fed from the cache-backed embedding of each checkpoint folder.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import __version__
from . import gate as G
from .analysis.clusters import _exemplars, assign_to_centroids, bin_test, default_k, fit_centroids
from .analysis.duplicates import calibrated_dup_threshold, find_duplicates
from .api import embed_with
from .analysis.stats import z_two_sided
from .config import TRACK_SE_RESAMPLES, AuditConfig, TrackConfig
from .errors import InputError, UsageError
from .embedders import make_classifier
from .features import UNKNOWN_EMBEDDER, FeatureSet, load_features
from .labels import folder_labels, labels_from_logits
from .pipeline import build_embedders
from .index import as_f32, knn, kth_neighbour_distance, normalise_rows
from .outputs import check_output_dir, write_atomic
from .scan import compute_metrics, is_features_file
from .stats_file import is_stats_file
from .track_report import write_track_html
from .trackstats import analyse_run, class_alerts, class_summary

__all__ = ["Tracker", "CheckpointSource", "discover_checkpoints", "TRACK_SCHEMA_VERSION", "track_schema"]

TRACK_SCHEMA_VERSION = "1.0"
_METRIC_NAMES = ("fid", "kid", "precision", "recall", "density", "coverage")
_N_EXEMPLARS = 6
#: Nearest generated samples per real one examined for coverage's resampling (a ball holding more is
#: never emptied by a resample: each is kept with probability 0.63).
COVERAGE_NEIGHBOURS = 32


def track_schema() -> dict:
    """The JSON Schema of track.json (``collapse_audit/schema/track.schema.json``)."""
    return json.loads((Path(__file__).parent / "schema" / "track.schema.json").read_text())


# --------------------------------------------------------------------------- checkpoints on disk


@dataclass(frozen=True)
class CheckpointSource:
    """One checkpoint of a run on disk: a folder of images or an ``.npz`` features file."""

    name: str
    step: int
    path: Path


_NUMBER = re.compile(r"(\d+)")


def step_from_name(name: str) -> int | None:
    """The last integer in a checkpoint's name (``step_000500`` -> 500, ``epoch-3`` -> 3, ``gen2`` -> 2)."""
    stem = name[:-4] if name.lower().endswith(".npz") else name
    found = _NUMBER.findall(stem)
    return int(found[-1]) if found else None


def _is_checkpoint(p: Path) -> bool:
    if p.name.startswith("."):
        return False
    return p.is_dir() or (p.is_file() and p.suffix.lower() == ".npz")


def read_steps_csv(path: Path, base: Path | None = None) -> list[CheckpointSource]:
    """Checkpoints from a CSV with columns ``path,step`` (paths relative to the CSV's folder or ``base``)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as e:
        raise UsageError(f"--steps {path}: {e.strerror or e}") from None
    rows = list(csv.DictReader(text.splitlines()))
    if not rows or not {"path", "step"} <= set(rows[0]):
        raise UsageError(f"--steps {path}: needs a header with columns path,step")
    root = Path(base) if base is not None else Path(path).parent
    out = []
    for i, r in enumerate(rows, start=2):
        try:
            step = int(str(r["step"]).strip())
        except ValueError:
            raise UsageError(f"--steps {path}, line {i}: step {r['step']!r} is not an integer") from None
        p = Path(str(r["path"]).strip())
        p = p if p.is_absolute() else root / p
        if not _is_checkpoint(p):
            raise UsageError(f"--steps {path}, line {i}: {p} is not a folder or an .npz file")
        out.append(CheckpointSource(p.name, step, p))
    return _check_order(out, str(path))


def _check_order(cks: list[CheckpointSource], where: str) -> list[CheckpointSource]:
    cks = sorted(cks, key=lambda c: c.step)
    steps = [c.step for c in cks]
    dup = sorted({s for s in steps if steps.count(s) > 1})
    if dup:
        names = [c.name for c in cks if c.step == dup[0]]
        raise UsageError(f"{where}: checkpoints {', '.join(names)} have the same step {dup[0]}; name them apart or give --steps CSV")
    return cks


def discover_checkpoints(inputs: Sequence[Path], *, steps_csv: Path | None = None) -> list[CheckpointSource]:
    """The checkpoints of a run, ordered by step.

    ``inputs``: one run folder holding one sub-folder or ``.npz`` per checkpoint,
    or several checkpoint folders / files.  The step is the last number in the
    name unless ``steps_csv`` (``path,step``) gives it.
    """
    if steps_csv is not None:
        return read_steps_csv(steps_csv, base=inputs[0] if len(inputs) == 1 and Path(inputs[0]).is_dir() else None)
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.exists():
            raise UsageError(f"{p}: no such file or folder")
    if len(paths) == 1 and paths[0].is_dir():
        subs = sorted(c for c in paths[0].iterdir() if _is_checkpoint(c))
        if subs:
            paths = subs
        else:
            raise UsageError(f"{paths[0]}: no checkpoint sub-folders or .npz files in it (name them step_000500, epoch-3, ...)")
    out = []
    for p in paths:
        if not _is_checkpoint(p):
            raise UsageError(f"{p}: a checkpoint is a folder of images or an .npz features file")
        step = step_from_name(p.name)
        if step is None:
            raise UsageError(f"{p.name}: no number in the name to order it by; name checkpoints step_000500, epoch-3, ... or give --steps CSV")
        out.append(CheckpointSource(p.name, step, p))
    return _check_order(out, "the run")


def folder_signature(path: Path) -> tuple:
    """(files, total bytes, newest mtime) of a checkpoint: unchanged between two polls means complete."""
    if path.is_file():
        st = path.stat()
        return (1, st.st_size, st.st_mtime_ns)
    n = size = newest = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.stat(os.path.join(root, f))
            except OSError:
                continue
            n, size, newest = n + 1, size + st.st_size, max(newest, st.st_mtime_ns)
    return (n, size, newest)


# --------------------------------------------------------------------------- the tracker


def _finite(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def coverage_resampling_se(in_ball: np.ndarray, idx: np.ndarray, n_gen: int, *, n_resamples: int, seed: int) -> float:
    """Standard error of coverage over the *generated* sample, the spread that matters between checkpoints.

    ``in_ball[i, l]``: the ``l``-th nearest generated sample ``idx[i, l]`` lies in
    real sample ``i``'s kNN ball.  Each resample keeps every generated sample
    with probability ``1 - 1/e`` (the Poisson bootstrap's "drawn at least once")
    and recomputes coverage from those balls; the real set and its radii stay
    fixed, as they are across checkpoints.  In tests/test_track.py this is within
    10 % of coverage's spread over fresh generated draws, where the binomial
    ``sqrt(c(1-c)/N)`` was 30 % too small (one generated sample covers several
    neighbouring balls).
    """
    rng = np.random.default_rng(seed)
    keep_p = 1.0 - math.exp(-1.0)
    reps = np.empty(int(n_resamples))
    for b in range(int(n_resamples)):
        keep = rng.random(n_gen) < keep_p
        reps[b] = (in_ball & keep[idx]).any(axis=1).mean()
    return float(reps.std(ddof=1)) if n_resamples > 1 else float("nan")


def _se(v: float | None, n: int) -> float | None:
    """Binomial standard error of a proportion ``v`` over ``n`` samples (None when ``v`` is)."""
    if v is None or n <= 0:
        return None
    p = min(max(float(v), 0.0), 1.0)
    return math.sqrt(max(p * (1 - p), 0.25 / n) / n)  # floored so a proportion of 0 or 1 keeps some spread


class Tracker:
    """Audit checkpoints of one run against one real set; the state a training loop keeps.

    Parameters
    ----------
    real : (N, D) array, :class:`~collapse_audit.features.FeatureSet`, image folder or ``.npz`` features file.
    config : :class:`~collapse_audit.config.TrackConfig` (defaults when None).
    real_labels : optional N class labels of the real samples (else those of a FeatureSet).
    on_alert : optional callable, called with each new alert dict.

    Each :meth:`update` returns that checkpoint's record and the alerts that are
    new since the previous update.  :meth:`to_dict` is exactly track.json;
    :meth:`write` writes track.json and track.html.
    """

    def __init__(self, real, *, config: TrackConfig | None = None, real_labels: Sequence | None = None,
                 real_source: str | None = None, on_alert: Callable[[dict], Any] | None = None):
        self.config = cfg = config or TrackConfig()
        if cfg.labels not in (None, "folders"):
            raise UsageError(f"labels={cfg.labels!r}: the only label source by name is 'folders' (or give a classifier)")
        self._models: list | None = None  # [embedder, classifier?], built on first use and kept
        self._embedder_id: str | None = None  # the real features' embedder, once they are loaded
        self._classifier = make_classifier(cfg.classifier) if cfg.classifier else None
        fs, cls_labels = self._load(real, "real")
        self.real = fs
        xr = as_f32(fs.features)
        if xr.ndim != 2 or xr.shape[0] < 20:
            raise InputError(f"the real set needs at least 20 samples to track clusters, got {xr.shape[0] if xr.ndim == 2 else 0}")
        self._xr = xr
        self._real_source = real_source or (str(real) if isinstance(real, (str, os.PathLike)) else (fs.root or "array"))
        self._embedder = (fs.embedder or {}).get("id") or fs.embedder_id or cfg.embedder
        self._embedder_id = fs.embedder_id if fs.embedder_id not in (None, "", UNKNOWN_EMBEDDER, "array") else None
        k = cfg.clusters or default_k(xr.shape[0])
        k = max(1, min(int(k), xr.shape[0] // 5))
        self._r_real = kth_neighbour_distance(xr, cfg.k) if xr.shape[0] > cfg.k else None  # kNN radii, fixed
        self._space = normalise_rows(xr)  # clusters in cosine geometry, as the scan's analyses
        self._centroids = fit_centroids(self._space, k, seed=cfg.seed)
        a_real, d_real = assign_to_centroids(self._centroids, self._space)
        self._k = k
        self._c_real = np.bincount(a_real, minlength=k).astype(np.int64)
        real_paths = list(fs.paths) if fs.paths else [f"real[{i}]" for i in range(xr.shape[0])]
        self._real_exemplars = _exemplars(a_real, d_real, real_paths, k, _N_EXEMPLARS)
        # near-duplicates on the scan's scale: calibrated once on the real set (as find_duplicates does given real)
        self._dup_threshold, self._dup_method = calibrated_dup_threshold(xr, real_shas=fs.shas)
        labels, self._label_source = self._real_labels_of(fs, real_labels, cls_labels)
        if labels is not None and len(labels) != xr.shape[0]:
            raise InputError(f"real_labels: {len(labels)} labels for {xr.shape[0]} real samples")
        self._class_names = sorted({str(x) for x in labels if x is not None}) if labels else None
        self._c_real_classes = None  # real counts per class name, the fixed reference of every checkpoint
        if self._class_names:
            pos = {n: i for i, n in enumerate(self._class_names)}
            self._c_real_classes = np.bincount([pos[str(x)] for x in labels if x is not None],
                                               minlength=len(self._class_names)).astype(np.int64)
        if self._classifier is not None and self._class_names is not None:
            # shares are compared class by class: the classifier must name the same classes as the real labels
            unknown = sorted(set(self._class_names) - set(self._classifier.class_names))
            if unknown:
                raise InputError(f"{cfg.classifier}: the real labels name classes the classifier does not know: "
                                 f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
        self._classifier_agreement = None
        if cls_labels is not None and labels is not None and self._label_source["real"] != "classifier":
            pairs = [(a, b) for a, b in zip(labels, cls_labels) if a is not None]
            self._classifier_agreement = float(np.mean([str(a) == str(b) for a, b in pairs])) if pairs else None
        self._checkpoints: list[dict] = []
        self._alert_keys: set = set()
        self._run: dict | None = None
        self._on_alert = on_alert
        self.run_id = uuid.uuid4().hex
        self.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

    def _real_labels_of(self, fs: FeatureSet, given, cls_labels) -> tuple[list | None, dict]:
        """The real side's labels and where they come from: given > in the features > folders > classifier."""
        src = {"real": None, "gen": "classifier" if self._classifier is not None else self.config.labels}
        if given is not None:
            return list(given), {**src, "real": "given"}
        if fs.labels is not None:
            return list(fs.labels), {**src, "real": "features"}
        if self.config.labels == "folders":
            lab = folder_labels(fs.paths or [])
            if not any(x is not None for x in lab):
                raise InputError("labels='folders': the real images are not in class sub-folders (real/<class>/...)")
            return lab, {**src, "real": "folders"}
        if cls_labels is not None:
            return list(cls_labels), {**src, "real": "classifier"}
        return None, src

    # ------------------------------------------------------------------ inputs
    def _embed_kwargs(self) -> dict:
        c = self.config
        return dict(device=c.device, batch_size=c.batch_size, workers=c.workers, amp=c.amp, decode=c.decode, cache_dir=c.cache_dir,
                    use_cache=c.use_cache)

    def _embedders(self) -> list:
        if self._models is None:
            c = self.config
            (e,) = build_embedders([c.embedder], c.weights, seed=c.seed, cache_dir=c.cache_dir, offline=c.offline, progress=False)
            self._models = [e] + ([self._classifier] if self._classifier is not None else [])
        return self._models

    def _load(self, x, name: str) -> tuple[FeatureSet, list | None]:
        """Features of one side and, when images were embedded with a classifier, its labels."""
        if isinstance(x, FeatureSet):
            return x, None
        if isinstance(x, (str, os.PathLike)):
            p = Path(x)
            if p.is_file() and is_stats_file(p):
                raise InputError(f"{p}: a statistics file (mean, covariance) cannot be tracked: clusters and coverage need the features")
            if p.is_file() and is_features_file(p):
                return load_features(p), None
            if not p.is_dir():
                raise InputError(f"{p}: not an image folder or an .npz features file")
        elif isinstance(x, np.ndarray) and x.ndim == 2 and np.issubdtype(x.dtype, np.floating) and name == "real":
            return FeatureSet(features=x, paths=[f"{name}[{i}]" for i in range(x.shape[0])], embedder_id="array"), None
        models = self._embedders()
        want = self._embedder_id
        if want is not None and models[0].id != want:
            raise InputError(f"the real features were made by {want} but the images of this {name} checkpoint would be "
                             f"embedded by {models[0].id}: give the same --embedder/--weights, or features of the same embedder")
        fss = embed_with(x, models, **self._embed_kwargs())
        cls = labels_from_logits(fss[1].features, self._classifier.class_names) if len(fss) > 1 else None
        return fss[0], cls

    # ------------------------------------------------------------------ one checkpoint
    def update(self, step: int, *, features=None, images=None, name: str | None = None, paths: Sequence[str] | None = None,
               labels: Sequence | None = None, source: str | None = None, samples: Sequence[str] | None = None) -> dict:
        """Audit one checkpoint; returns ``{"checkpoint": record, "alerts": [new alerts], "run": run section}``.

        ``features``: (M, D) array or FeatureSet (or an ``.npz`` path) in the real set's embedding;
        ``images``: what :func:`collapse_audit.embed` takes (tensor batch, PIL images, folder).
        Steps must increase from one update to the next.
        """
        if (features is None) == (images is None):
            raise UsageError("update() takes exactly one of features= or images=")
        step = int(step)
        if self._checkpoints and step <= self._checkpoints[-1]["step"]:
            raise UsageError(f"checkpoint step {step} does not come after the last one ({self._checkpoints[-1]['step']})")
        cls_labels = None
        if features is not None and isinstance(features, np.ndarray):
            fs = FeatureSet(features=features, paths=list(paths) if paths else [f"step{step}[{i}]" for i in range(len(features))],
                            embedder_id="array")
        else:
            fs, cls_labels = self._load(features if features is not None else images, "gen")
        xg = as_f32(fs.features)
        if xg.ndim != 2 or xg.shape[1] != self._xr.shape[1]:
            raise InputError(f"checkpoint {step}: features of dimension {xg.shape[-1] if xg.ndim else 0} against real ones of {self._xr.shape[1]}")
        got = fs.embedder_id if fs.embedder_id not in (None, "", UNKNOWN_EMBEDDER, "array") else None
        if got is not None and self._embedder_id is not None and got != self._embedder_id:
            raise InputError(f"checkpoint {step}: features made by {got}, the real ones by {self._embedder_id}; "
                             "both sides must come from the same embedder")
        gen_paths = list(paths) if paths else (list(fs.paths) if fs.paths else [f"step{step}[{i}]" for i in range(xg.shape[0])])
        rec = self._checkpoint_record(len(self._checkpoints), step, name or f"step {step}", source, xg, gen_paths,
                                      self._gen_labels(fs, labels, cls_labels),
                                      samples if samples is not None else self._sample_paths(fs, gen_paths))
        self._checkpoints.append(rec)
        self._run = self._analyse()
        new = []
        for a in self._run["alerts"]:
            key = (a["kind"], a.get("checkpoint"), a["message"])
            if key not in self._alert_keys:
                self._alert_keys.add(key)
                new.append(a)
                if self._on_alert is not None:
                    self._on_alert(a)
        return {"checkpoint": rec, "alerts": new, "run": self._run}

    def _gen_labels(self, fs: FeatureSet, given, cls_labels) -> list | None:
        """A checkpoint's labels: given > in the features > the classifier's > class sub-folders."""
        if given is not None:
            return list(given)
        if fs.labels is not None:
            return list(fs.labels)
        if cls_labels is not None:
            return cls_labels
        if self.config.labels == "folders" and fs.paths:
            lab = folder_labels(fs.paths)
            return lab if any(x is not None for x in lab) else None
        return None

    def _sample_paths(self, fs: FeatureSet, gen_paths: list[str]) -> list[str]:
        if not fs.root:
            return []
        root = Path(fs.root)
        n = self.config.n_samples
        idx = np.linspace(0, len(gen_paths) - 1, num=min(n, len(gen_paths))).round().astype(int) if gen_paths else []
        return [str(root / gen_paths[i]) for i in dict.fromkeys(int(i) for i in idx)]

    def _checkpoint_record(self, index, step, name, source, xg, gen_paths, labels, samples) -> dict:
        cfg = self.config
        notes: list[str] = []
        acfg = AuditConfig(k=cfg.k, seed=cfg.seed, kid_subsets=cfg.kid_subsets, kid_subset_size=cfg.kid_subset_size,
                           bootstrap=cfg.bootstrap, exact_max_pairs=cfg.exact_max_pairs)
        m = compute_metrics(self._xr, xg, acfg, notes, name)
        metrics = {key: _finite(m.get(key)) for key in _METRIC_NAMES}
        intervals = {key: [float(a), float(b)] for key, (a, b) in (m.get("ci") or {}).items()}
        if m.get("kid") is not None and m.get("kid_std") is not None:
            intervals["kid"] = [float(m["kid"] - 2 * m["kid_std"]), float(m["kid"] + 2 * m["kid_std"])]
        n_gen = xg.shape[0]
        # precision is a mean over iid generated samples (binomial); coverage's spread comes from resampling the
        # generated set; recall's also from the generated radii, which no cheap resampling captures: not given
        se = {"precision": _se(metrics["precision"], n_gen), "recall": None, "coverage": None, "density": None}
        if self._r_real is not None and metrics["coverage"] is not None and n_gen > 1:
            d, idx = knn(self._xr, xg, min(COVERAGE_NEIGHBOURS, n_gen))
            sc = coverage_resampling_se(d < self._r_real[:, None], idx, n_gen, n_resamples=TRACK_SE_RESAMPLES, seed=cfg.seed + index)
            se["coverage"] = _finite(sc)
            if se["coverage"] is not None:
                z = z_two_sided(cfg.alpha)
                intervals["coverage"] = [max(0.0, metrics["coverage"] - z * sc), min(1.0, metrics["coverage"] + z * sc)]
        a_gen, _ = assign_to_centroids(self._centroids, normalise_rows(xg))
        c_gen = np.bincount(a_gen, minlength=self._k).astype(np.int64)
        t = bin_test(self._c_real, c_gen, cfg.alpha)
        status = [str(s) for s in t.status]
        dup = find_duplicates(xg, None, gen_paths=gen_paths, seed=cfg.seed, threshold=self._dup_threshold) \
            if n_gen >= 2 else None
        metrics["duplicate_fraction"] = _finite(dup["within_gen"]["dup_fraction"]) if dup else None
        rec = {
            "index": int(index), "name": str(name), "step": int(step), "source": source, "n_gen": int(n_gen),
            "metrics": metrics, "intervals": intervals, "se": se,
            "clusters": {"n_gen": [int(c) for c in c_gen], "gen_share": [float(x) for x in t.gen_share],
                         "gen_share_ci": [[float(a), float(b)] for a, b in zip(t.lo, t.hi)], "status": status,
                         "n_covered": int(sum(s != "dropped" for s in status)), "n_dropped": int(sum(s == "dropped" for s in status))},
            "classes": self._classes(labels),
            "samples": [str(s) for s in samples][: cfg.n_samples],
            "notes": notes,
        }
        return rec

    def _classes(self, labels) -> dict | None:
        if not self._class_names or labels is None:
            return None
        names = self._class_names
        pos = {n: i for i, n in enumerate(names)}
        cr = self._c_real_classes
        cg = np.bincount([pos[str(x)] for x in labels if x is not None and str(x) in pos], minlength=len(names))
        if cg.sum() == 0:
            return None
        t = bin_test(cr, cg, self.config.alpha)
        return {"names": names, "n_gen": [int(c) for c in cg], "real_share": [float(x) for x in t.real_share],
                "gen_share": [float(x) for x in t.gen_share],
                "gen_share_ci": [[float(a), float(b)] for a, b in zip(t.lo, t.hi)], "status": [str(s) for s in t.status]}

    # ------------------------------------------------------------------ the run
    def _analyse(self) -> dict:
        cfg = self.config
        cks = self._checkpoints

        def series(section, key):
            return np.array([np.nan if c[section].get(key) is None else c[section][key] for c in cks], dtype=np.float64)

        run = analyse_run(
            steps=[c["step"] for c in cks], names=[c["name"] for c in cks],
            metrics={k: series("metrics", k) for k in ("coverage", "recall", "precision", "fid", "density")},
            se={k: series("se", k) for k in ("coverage", "recall", "precision")},
            cluster_counts=np.array([c["clusters"]["n_gen"] for c in cks], dtype=np.int64),
            real_counts=self._c_real, alpha=cfg.alpha, order=cfg.order, min_drop=cfg.min_drop,
            oscillating_gap=cfg.oscillating_gap,
        )
        # numbers the gate reads (keys.TRACK_METRICS)
        run["onset_detected"] = int(run.get("onset") is not None)
        run["onset_persists"] = int(run.get("onset") is not None and bool(run["onset"].get("persists")))
        run["hopping"]["oscillating_flag"] = int(bool(run["hopping"].get("oscillating")))
        tl = run.get("tail_loss")
        run["tail_loss_flag"] = int(bool(tl and tl.get("rarest_first")))
        labelled = [c for c in cks if c.get("classes")]
        run["classes"] = None
        if labelled and self._class_names:
            run["classes"] = class_summary(np.array([c["classes"]["n_gen"] for c in labelled], dtype=np.int64),
                                           self._c_real_classes,
                                           self._class_names, [c["step"] for c in labelled], cfg.alpha, cfg.oscillating_gap)
            run["alerts"] = run["alerts"] + class_alerts(run["classes"])
        return run

    @property
    def checkpoints(self) -> list[dict]:
        return list(self._checkpoints)

    def to_dict(self) -> dict:
        """track.json as a dict (documented by ``collapse_audit/schema/track.schema.json``)."""
        if not self._checkpoints:
            raise UsageError("no checkpoint yet: call update() first")
        cfg = self.config
        n_real = int(self._xr.shape[0])
        return {
            "schema_version": TRACK_SCHEMA_VERSION,
            "kind": "track",
            "tool": {"name": "collapse-audit", "version": __version__},
            "run_id": self.run_id,
            "created": self.created,
            "order": cfg.order,
            "config": {"k": cfg.k, "clusters": int(self._k), "alpha": cfg.alpha, "n_boot": cfg.bootstrap, "seed": cfg.seed,
                       "embedder": str(self._embedder), "min_drop": cfg.min_drop, "oscillating_gap": cfg.oscillating_gap,
                       "dup_threshold": float(self._dup_threshold), "dup_threshold_method": self._dup_method},
            "real": {"n": n_real, "source": str(self._real_source), "embedder": str(self._embedder)},
            "labels": None if not self._class_names else {
                "real": self._label_source["real"], "gen": self._label_source["gen"] or "given", "classifier": cfg.classifier,
                "classifier_agreement": self._classifier_agreement, "names": list(self._class_names)},
            "clusters": {"k": int(self._k), "n_real": [int(c) for c in self._c_real],
                         "real_share": [float(c) / n_real for c in self._c_real], "real_exemplars": self._real_exemplars},
            "checkpoints": self._checkpoints,
            "run": self._run,
        }

    def check(self, rules) -> G.GateResult:
        """Evaluate gate rules (parsed with ``aliases=gate.TRACK_ALIASES``) against track.json."""
        return G.evaluate(rules, self.to_dict())

    def write(self, out_dir, *, html: bool = True, gate: G.GateResult | None = None) -> Path:
        """Write ``track.json`` (first) and ``track.html`` into ``out_dir``; returns the track.json path."""
        out = check_output_dir(Path(out_dir))
        d = self.to_dict()
        if gate is not None:
            d["gate"] = gate.to_dict()
        path = out / "track.json"
        write_atomic(path, json.dumps(d, indent=2, allow_nan=False, default=_json_default) + "\n")
        if html:
            write_track_html(d, out / "track.html", base_dir=out)
        return path


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return _finite(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# --------------------------------------------------------------------------- the command's loop


def track_run(checkpoints: Sequence[CheckpointSource], real, config: TrackConfig, *, on_checkpoint=None,
              tracker: Tracker | None = None) -> Tracker:
    """Feed checkpoints (in step order) to a Tracker; folders go through the cached embedding."""
    tr = tracker or Tracker(real, config=config)
    for c in checkpoints:
        t0 = time.perf_counter()
        found = tr.update(c.step, features=c.path if c.path.is_file() else None, images=c.path if c.path.is_dir() else None,
                          name=c.name, source=str(c.path))
        if on_checkpoint is not None:
            on_checkpoint(c, found, time.perf_counter() - t0)
    return tr


def follow_run(run_dir: Path, real, config: TrackConfig, *, poll_s: float = 30.0, idle_s: float = 600.0,
               on_checkpoint=None, sleep=time.sleep, clock=time.monotonic, write: Callable[[Tracker], Any] | None = None) -> Tracker:
    """Watch ``run_dir`` while training writes to it: each new checkpoint is audited once it is complete.

    A checkpoint is complete when its (file count, bytes, newest mtime) did not
    change over one poll interval.  Stops after ``idle_s`` seconds without a new
    checkpoint.  ``write`` is called after every audited checkpoint (the command
    rewrites track.json and track.html there).
    """
    tr: Tracker | None = None
    seen: dict[str, tuple] = {}
    done: set[str] = set()
    last_new = clock()
    while True:
        cks = [c for c in discover_checkpoints([run_dir]) if c.name not in done] if any(
            _is_checkpoint(p) for p in Path(run_dir).iterdir()) else []
        ready = []
        for c in cks:
            sig = folder_signature(c.path)
            if seen.get(c.name) == sig and sig[0] > 0:
                ready.append(c)
            seen[c.name] = sig
        last = tr.checkpoints[-1]["step"] if tr is not None and tr.checkpoints else None
        for c in sorted(ready, key=lambda c: c.step):
            if last is not None and c.step <= last:
                done.add(c.name)  # arrived late, out of order: cannot be placed in a run already analysed
                continue
            tr = track_run([c], real, config, on_checkpoint=on_checkpoint, tracker=tr)
            done.add(c.name)
            last = c.step
            last_new = clock()
            if write is not None:
                write(tr)
        if clock() - last_new >= idle_s:
            break
        sleep(poll_s)
    if tr is None:
        raise InputError(f"{run_dir}: no complete checkpoint appeared within {idle_s:g} s")
    return tr
