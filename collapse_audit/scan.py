"""``collapse-audit scan``: load or embed both sides, compute the metrics per embedder,
assemble ``results.json`` and evaluate the gate.

Each side is an image folder (embedded here, through the cache) or an
embeddings file (``.npz`` from ``collapse-audit embed`` or a user's own). Every
metric is computed for every embedder both sides share; ``metrics`` repeats
the primary (first) embedder's values. Features of different embedders are
never compared: a scan with no embedder in common is an input error.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import platform
import sys
import uuid
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from . import __version__
from . import metrics as M
from . import pipeline as _pipeline  # build_embedders/open_cache looked up at call time (tests replace them)
from . import progress as _progress  # default_reporter looked up at call time (tests replace it)
from .analysis.run import run_analyses
from .config import DEFAULT_EMBEDDERS, AuditConfig
from .embedders import REGISTRY, Embedder, encodes_text, make_classifier
from .embedding import embed_folder
from .engine_ray import select_engine
from .errors import InputError
from .index import as_f32
from .features import UNKNOWN_EMBEDDER, check_feature_values, load_features
from .interpret import interpret  # lives below the scan (the report reads it too); importable from here as before
from .scale import prdc as prdc_auto
from .stats_file import NEEDS_FEATURES, is_stats_file, read_stats_file

SCHEMA_VERSION = "1.0"
METRIC_KEYS = ("fid", "kid", "kid_std", "precision", "recall", "density", "coverage")


@dataclass
class Side:
    """One side of the comparison, as feature arrays per embedder id."""

    name: str  # 'real' | 'gen'
    source: str
    kind: str  # 'folder' | 'features'
    features: dict[str, np.ndarray]
    paths: list[str]
    shas: list[str] | None = None
    labels: list[str] | None = None
    failures: list[dict] = field(default_factory=list)
    n_files: int = 0
    embedders: dict[str, dict] = field(default_factory=dict)  # id -> description
    root: str | None = None
    stats: dict = field(default_factory=dict)  # embedder id -> GaussianStats, for statistics-only inputs
    notes: list[str] = field(default_factory=list)  # what loading this side worked around
    count_known: bool = True  # False for a pytorch-fid / clean-fid statistics file (no sample count)

    @property
    def n_images(self) -> int:
        if self.kind == "stats":
            return int(next(iter(self.stats.values())).n) if self.count_known else 0
        return len(self.paths)

    def describe(self) -> dict:
        return {
            "source": self.source,
            "kind": self.kind,
            "n_images": self.n_images,
            "n_failed": len(self.failures),
            "n_files": int(self.n_files),
            "embedders": list(self.features) or list(self.stats),
        }


# The configuration lives in config.py (every default once); ScanConfig is its old name here.
ScanConfig = AuditConfig


def is_features_file(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.suffix.lower() == ".npz" and not p.is_dir()


def side_from_features(path, name: str) -> Side:
    fs = load_features(path, mmap=True)  # features memory-mapped: a 1M x 512 side costs no heap until read
    desc = fs.embedder or {"id": fs.embedder_id}
    desc.setdefault("id", fs.embedder_id)
    return Side(
        name=name, source=str(path), kind="features", features={fs.embedder_id: fs.features}, paths=fs.paths,
        shas=fs.shas, labels=fs.labels, failures=list(fs.failures), n_files=fs.n_files or (len(fs.paths) + len(fs.failures)),
        embedders={fs.embedder_id: desc}, root=None,  # thumbnails only from a root named on the command line
        notes=list(fs.warnings),
    )


def side_from_featureset(fs, name: str, source: str | None = None) -> Side:
    """A :class:`Side` from an in-memory :class:`~collapse_audit.features.FeatureSet` (the Python API)."""
    x = np.asarray(fs.features)
    if x.ndim != 2 or x.shape[0] == 0:
        raise InputError(f"{name} features must be a non-empty 2-D array (N x D), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise InputError(f"{name} features must be real numbers, got dtype {x.dtype}")
    check_feature_values(x, name)
    x = as_f32(x)
    paths = list(fs.paths) if fs.paths else [f"{name}[{i}]" for i in range(x.shape[0])]
    if len(paths) != x.shape[0]:
        raise InputError(f"{name}: {len(paths)} paths for {x.shape[0]} feature rows")
    if fs.labels is not None and len(fs.labels) != x.shape[0]:
        raise InputError(f"{name}: {len(fs.labels)} labels for {x.shape[0]} feature rows")
    desc = dict(fs.embedder or {"id": fs.embedder_id})
    desc.setdefault("id", fs.embedder_id)
    return Side(name=name, source=source or f"<{name} array {x.shape[0]} x {x.shape[1]}>", kind="features",
                features={fs.embedder_id: x}, paths=paths, shas=fs.shas, labels=list(fs.labels) if fs.labels is not None else None,
                failures=list(fs.failures), n_files=fs.n_files or x.shape[0], embedders={fs.embedder_id: desc}, root=fs.root)


def side_from_stats(path, name: str) -> Side:
    sf = read_stats_file(path)
    desc = dict(sf.meta.get("embedder") or {"id": sf.embedder_id})
    desc.setdefault("id", sf.embedder_id)
    if not sf.embedder_known:
        desc["source"] = sf.source
    return Side(name=name, source=str(path), kind="stats", features={}, paths=[], n_files=int(sf.meta.get("n_files") or sf.n or 0),
                embedders={sf.embedder_id: desc}, stats={sf.embedder_id: sf.stats}, root=None,
                count_known=sf.n is not None, notes=list(sf.notes))


def side_from_folder(path, name: str, embs: Sequence[Embedder], cfg: ScanConfig, cache, reporter, engine=None) -> Side:
    res = embed_folder(path, embs, engine=engine, device=cfg.device, batch_size=cfg.batch_size, workers=cfg.workers,
                       cache=cache, progress=reporter, amp=cfg.amp, decode=cfg.decode)
    if not res.paths:
        first = res.failures[0]
        raise InputError(f"{path} ({name}): none of the {res.n_files} image files could be read (e.g. {first['path']}: {first['reason']})")
    return Side(
        name=name, source=str(path), kind="folder", features=res.features, paths=res.paths, shas=res.shas,
        failures=res.failures, n_files=res.n_files, embedders={e.id: e.describe() for e in embs}, root=str(path),
    )


def embedder_names_for(fs_desc: dict, source: str = "the features file") -> tuple[str, str | None]:
    """Rebuild the command-line name and weights value of an embedder described in a features file.

    A features file is data (exchanged between teams, published with
    datasets): it may name a built-in embedder (Inception, CLIP by open_clip
    name) but never code to run. A TorchScript model named in its metadata is
    refused with what to pass instead (``--embedder torchscript:PATH``, which
    the user then names on the command line and so trusts).
    """
    name = str(fs_desc.get("name", "") or "")
    family = name.partition(":")[0].strip().lower()
    # only built-in architectures with built-in (or seeded random) weights (Family.safe_from_files)
    fam = REGISTRY.get(family)
    if family and family != UNKNOWN_EMBEDDER and not (fam and fam.safe_from_files):
        where = f" ({fs_desc['path']})" if fs_desc.get("path") else ""
        raise InputError(
            f"{source} was embedded with a {family} model{where}; a features file cannot choose code to run, so the "
            f"folder on the other side is not embedded with it: pass --embedder {family}:PATH naming the model you trust "
            "(or give both sides as .npz files)"
        )
    if name == "inception" and fs_desc.get("preprocess_id"):
        name = f"inception:{fs_desc['preprocess_id']}"
    w = fs_desc.get("weights")
    weights = "random" if w == "random" else None
    return name, weights


def pair_embedders(real: Side, gen: Side, exclude: Sequence[str] = ()) -> list[str]:
    """Embedder ids both sides have, in the generated side's order; refuse mismatches."""
    have_real = set(real.features) | set(real.stats)
    common = [e for e in gen.features if e in have_real and e not in exclude]
    if not common:
        raise InputError(
            "the two sides were embedded differently and cannot be compared: "
            f"real has {', '.join(list(real.features) or list(real.stats))}; generated has {', '.join(gen.features)} "
            "(embed both with the same --embedder and --weights)"
        )
    for e in common:
        dr = real.features[e].shape[1] if e in real.features else real.stats[e].dim
        dg = gen.features[e].shape[1]
        if dr != dg:
            raise InputError(f"feature dimensions differ for {e}: real {dr}, generated {dg}")
    return common


def compute_metrics(real: np.ndarray, gen: np.ndarray, cfg: ScanConfig, notes: list[str], label: str, progress=None) -> dict:
    """FID, KID, precision/recall, density/coverage (and bootstrap CIs) for one embedder.

    ``progress``: a :class:`~collapse_audit.progress.ProgressReporter` for the long PRDC searches (or None)."""
    out: dict = {key: None for key in METRIC_KEYS}
    out["k"] = cfg.k
    nr, ng = len(real), len(gen)
    if min(nr, ng) - 1 < real.shape[1]:
        out["fid"] = _finite(M.fid_from_features(real, gen))  # exact low-rank path for N < D
    else:
        out["fid"] = _finite(M.fid(real, gen))  # chunked float64 accumulation: memory O(D^2), not O(N D)
    if min(nr, ng) < real.shape[1]:
        notes.append(f"{label}: fewer samples ({min(nr, ng)}) than feature dimensions ({real.shape[1]}): "
                     "the covariances are singular and FID is biased upwards; compare FIDs only at equal N.")
    k_res = M.kid(real, gen, n_subsets=cfg.kid_subsets, subset_size=cfg.kid_subset_size, seed=cfg.seed)
    out["kid"], out["kid_std"] = _finite(k_res.mean), _finite(k_res.std)
    out["kid_subset_size"] = int(k_res.subset_size)
    if min(nr, ng) <= cfg.k:
        notes.append(f"{label}: precision/recall/density/coverage need more than k={cfg.k} samples per side; skipped.")
    else:
        pr = prdc_auto(real, gen, k=cfg.k, seed=cfg.seed, exact_max_pairs=cfg.exact_max_pairs, progress=progress)
        out.update(precision=_finite(pr.precision), recall=_finite(pr.recall), density=_finite(pr.density),
                   coverage=_finite(pr.coverage), prdc_method=pr.method)
        if pr.approximation is not None:
            out["approximation"] = pr.approximation
            notes.append(f"{label}: {nr} x {ng} samples: precision/recall/density/coverage computed with an approximate "
                         "FAISS IVF search; the error measured against exact search on a subsample is in metrics.approximation.")
        if cfg.bootstrap:  # either backend: resample the per-sample terms, no second search
            b = M.indicator_bootstrap(pr.indicators, n_boot=cfg.bootstrap, seed=cfg.seed)
            out["ci"] = {name: [b.low[name], b.high[name]] for name in ("precision", "recall", "density", "coverage")}
            out["ci_level"] = 1 - b.alpha
            out["ci_method"] = (f"percentile bootstrap of the per-sample terms, {b.n_boot} resamples "
                                f"(k-NN balls estimated once from the full sets, {pr.method} search)")
    out["vendi"], out["vendi_real"] = _finite(M.vendi_score(gen)), _finite(M.vendi_score(real))
    if nr >= 2 and nr * ng <= cfg.exact_max_pairs:
        out["authpct"] = _finite(M.authpct(real, gen))
    elif nr >= 2:
        notes.append(f"{label}: AuthPct needs exact nearest-neighbour searches; skipped above --exact-max-pairs.")
    if cfg.fd_infinity:
        if ng < 20:
            notes.append(f"{label}: FD-infinity needs at least 20 generated samples; skipped.")
        else:
            r = M.fd_infinity(real, gen, seed=cfg.seed)
            out["fd_infinity"] = _finite(r.value)
            out["fd_infinity_fit"] = {"sizes": list(r.sizes), "fds": [_finite(f) for f in r.fds], "slope": _finite(r.slope),
                                      "method": "FID of generated subsamples against the full real statistics at 15 "
                                                "sizes, least-squares line in 1/N, intercept (Chong & Forsyth 2020)"}
    if str(label).startswith("clip"):
        out["cmmd"] = _cmmd(real, gen, cfg.seed, notes, label)
    return out


def _add_inception_score(m: dict, gen: np.ndarray | None, emb, notes: list[str], label: str) -> None:
    """IS of the generated side from the FID Inception's logits (pool features @ fc weight^T, torch-fidelity's
    ``logits_unbiased``), when this run holds that network (it embedded images with it)."""
    if gen is None or not str(label).startswith("inception"):
        return
    w = emb.fc_weight() if emb is not None else None
    if w is None:
        notes.append(f"{label}: the Inception Score needs the network's logits layer; not computed for features files.")
        return
    if len(gen) < M.IS_SPLITS:
        return
    r = M.inception_score(M.inception_logits(gen, w), splits=M.IS_SPLITS)
    m["inception_score"], m["inception_score_std"] = _finite(r.mean), _finite(r.std)


#: Above this many samples per side CMMD runs on a seeded subsample (its cost is quadratic in N).
CMMD_MAX_SAMPLES = 20_000


def _cmmd(real: np.ndarray, gen: np.ndarray, seed: int, notes: list[str], label: str) -> float | None:
    """CMMD on a CLIP embedder's features (a seeded subsample of at most CMMD_MAX_SAMPLES per side)."""
    rng = np.random.default_rng(seed)
    sub = []
    for x in (real, gen):
        if len(x) > CMMD_MAX_SAMPLES:
            x = x[np.sort(rng.choice(len(x), CMMD_MAX_SAMPLES, replace=False))]
        sub.append(x)
    if len(sub[0]) < len(real) or len(sub[1]) < len(gen):
        notes.append(f"{label}: CMMD computed on seeded subsamples of {CMMD_MAX_SAMPLES} per side (its cost is quadratic).")
    if "ViT-L-14-336" not in str(label):
        notes.append(f"{label}: CMMD is defined on CLIP ViT-L/14@336 embeddings (Jayasumana et al. 2024); on this CLIP "
                     "model it is the same RBF MMD, not comparable with published CMMD values.")
    return _finite(M.cmmd(sub[0], sub[1]))


def stats_only_metrics(real_stats, gen: np.ndarray, cfg: ScanConfig) -> dict:
    """FID against precomputed real statistics; every other metric needs the real features (None)."""
    out: dict = {key: None for key in METRIC_KEYS}
    out["k"] = cfg.k
    g = M.GaussianStats.from_features(gen)
    out["fid"] = _finite(M.frechet_distance(real_stats.mean, real_stats.cov, g.mean, g.cov))
    out["vendi"] = _finite(M.vendi_score(gen))  # needs only the generated features
    return out


def _finite(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _versions() -> dict:
    try:
        import torch

        tv = torch.__version__
    except Exception:  # pragma: no cover
        tv = None
    return {"python": platform.python_version(), "torch": tv}


def build_results(real: Side, gen: Side, ids: list[str], per: dict[str, dict], cfg: ScanConfig,
                  notes: list[str], timings: dict) -> dict:
    emb_desc = []
    for e in ids:
        d = dict(gen.embedders.get(e) or real.embedders.get(e) or {"id": e})
        d.setdefault("id", e)
        d.setdefault("name", e.split(":")[0])
        d["dim"] = int(gen.features[e].shape[1])
        d.setdefault("preprocess_id", "")
        d.setdefault("weights", "random" if d.get("random_weights") else ("file" if d.get("weights_sha256") else "pretrained"))
        d.setdefault("weights_sha256", None)
        d.setdefault("random_weights", d.get("weights") == "random")
        d.setdefault("seed", None)
        d.setdefault("device", None)
        emb_desc.append(d)
    if any(d["random_weights"] for d in emb_desc):
        notes.insert(0, "RANDOM WEIGHTS: at least one embedder uses seeded random weights; its numbers are a baseline, "
                        "comparable only with the same seed and never with published FIDs.")
    failures = [{"path": f["path"], "side": s.name, "reason": f["reason"]} for s in (real, gen) for f in s.failures]
    primary = ids[0]
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "collapse-audit", "version": __version__, "command": list(cfg.command or sys.argv), **_versions()},
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run_id": uuid.uuid4().hex,
        "inputs": {"real": real.describe(), "gen": gen.describe()},
        "failures": failures,
        "embedders": emb_desc,
        "primary_embedder": primary,
        "metrics": dict(per[primary]),
        "by_embedder": {e: {"metrics": per[e], "n_real": real.n_images, "n_gen": gen.n_images} for e in ids},
        "interpretation": interpret(per[primary]),
        "clusters": None,
        "classes": None,
        "subgroups": None,
        "duplicates": None,
        "gate": {"passed": True, "rules": [], "violations": []},
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "notes": notes,
        "settings": {"seed": cfg.seed, "k": cfg.k, "kid_subsets": cfg.kid_subsets, "kid_subset_size": cfg.kid_subset_size,
                     "bootstrap": cfg.bootstrap, "device": cfg.device, "batch_size": cfg.batch_size},
    }


def run_scan(gen_path, real_path, cfg: ScanConfig) -> tuple[dict, Side, Side]:
    """Run the scan (no gate): returns ``(results, real side, gen side)``."""
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    notes: list[str] = []
    reporter = _progress.default_reporter(cfg.progress)
    for p, what in ((gen_path, "generated"), (real_path, "real")):
        if not isinstance(p, Side) and not Path(p).exists():
            raise InputError(f"{p}: no such file or folder ({what} images: a folder or an .npz embeddings file)")

    if not isinstance(cfg, AuditConfig):
        raise TypeError(f"cfg must be an AuditConfig, got {type(cfg).__name__}")
    acfg = cfg.analysis  # frozen; this run's changes are made with dataclasses.replace
    classifier = None
    if cfg.classifier:
        classifier = make_classifier(cfg.classifier)
        acfg = dataclasses.replace(acfg, classifier_id=classifier.id, classifier_names=list(classifier.class_names))
    embedder_objs: dict = {}
    sides: dict[str, Side] = {}
    t0 = time.perf_counter()
    for name, p in (("real", real_path), ("gen", gen_path)):
        if isinstance(p, Side):  # arrays / FeatureSets from the Python API
            sides[name] = dataclasses.replace(p, name=name)
            continue
        if is_features_file(p):
            if is_stats_file(p):
                if name == "gen":
                    raise InputError(f"{p}: a statistics file can only be the --real side (the generated side needs features)")
                sides[name] = side_from_stats(p, name)
            else:
                sides[name] = side_from_features(p, name)
                images = cfg.real_images if name == "real" else cfg.gen_images
                if images:
                    if not Path(images).is_dir():
                        raise InputError(f"--{name}-images {images}: no such folder")
                    sides[name].root = str(images)
    folder_sides = [(n, p) for n, p in (("real", real_path), ("gen", gen_path)) if n not in sides]
    if folder_sides:
        names = list(cfg.embedders or [])
        weights = list(cfg.weights or [])
        if not names:
            if sides:  # match the embedder of the features file on the other side
                other = next(iter(sides.values()))
                for desc in other.embedders.values():
                    n, w = embedder_names_for(desc, other.source)
                    if not n or n == UNKNOWN_EMBEDDER:
                        raise InputError(f"{other.source}: the embedder of these features is unknown, so the folder on the "
                                         "other side cannot be embedded to match; give both sides as .npz files")
                    names.append(n)
                    if w and not weights:
                        weights = [w]
                    seed = desc.get("seed")
                    if seed is not None and cfg.seed != seed and w == "random":
                        # random weights must match the features file's seed; the caller's config is not changed
                        cfg = cfg.replace(seed=int(seed))
                        acfg = dataclasses.replace(acfg, seed=int(seed))
            else:
                names = list(DEFAULT_EMBEDDERS)
        embs = _pipeline.build_embedders(names, weights, seed=cfg.seed, cache_dir=cfg.cache_dir, offline=cfg.offline, progress=cfg.progress)
        if classifier is not None:
            embs.append(classifier)
        engine_fn = select_engine(cfg.engine, ray_address=cfg.ray_address, shard_dir=cfg.shard_dir)
        cache = _pipeline.open_cache(cfg.cache_dir, cfg.use_cache, rehash=cfg.rehash)
        try:
            for name, p in folder_sides:
                if not Path(p).is_dir():
                    raise InputError(f"{p}: not a folder of images or an .npz embeddings file")
                sides[name] = side_from_folder(p, name, embs, cfg, cache, reporter, engine_fn)
            embedder_objs = {e.id: e for e in embs}
        finally:
            if cache is not None:
                cache.close()
    timings["embed"] = time.perf_counter() - t0
    real, gen = sides["real"], sides["gen"]
    if real.kind == "stats" and list(real.stats) == [UNKNOWN_EMBEDDER] and UNKNOWN_EMBEDDER not in gen.features:
        # a pytorch-fid / clean-fid statistics file names no embedder: use the generated side's, by dimension
        dim = real.stats[UNKNOWN_EMBEDDER].dim
        match = [e for e, f in gen.features.items() if f.shape[1] == dim and e != acfg.classifier_id]
        if not match:
            raise InputError(f"{real.source}: statistics of dimension {dim} match none of the generated side's embedders "
                             f"({', '.join(f'{e} ({f.shape[1]}-d)' for e, f in gen.features.items())})")
        real.stats = {match[0]: real.stats[UNKNOWN_EMBEDDER]}
        real.embedders = {match[0]: real.embedders[UNKNOWN_EMBEDDER]}
        notes.append(f"{real.source} names no embedder; its statistics were compared in {match[0]}'s space: the FID is "
                     "meaningful only if they were computed with the same network and preprocessing.")
    for s in (real, gen):
        notes.extend(s.notes)
        if s.n_images < 2 and s.count_known:
            raise InputError(f"{s.source}: {s.n_images} usable image(s) on the {s.name} side; a scan needs at least 2 per side")

    ids = pair_embedders(real, gen, exclude=[acfg.classifier_id] if acfg.classifier_id else [])
    if UNKNOWN_EMBEDDER in ids:
        notes.append("the embedder of the features files is unknown (user-made .npz): both sides are assumed to come from the same one.")
    t0 = time.perf_counter()
    if real.kind == "stats":
        per = {e: stats_only_metrics(real.stats[e], gen.features[e], cfg) for e in ids}
        notes.append(f"--real {real.source} holds statistics only (mean, covariance, count): FID computed; "
                     f"{', '.join(NEEDS_FEATURES)} need the real features and were skipped.")
        acfg = dataclasses.replace(acfg, skip=True, skip_note=False)
    else:
        per = {e: compute_metrics(real.features[e], gen.features[e], cfg, notes, e, progress=reporter) for e in ids}
    for e in ids:
        _add_inception_score(per[e], gen.features.get(e), embedder_objs.get(e), notes, e)
    timings["metrics"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if (acfg.classes or acfg.subgroups) and not any(encodes_text(e) for e in embedder_objs.values()):
        embedder_objs.update(_embedders_from_descriptions(real, cfg))
    sections = run_analyses(real, gen, ids, acfg, notes, embedder_objs, timings=timings, progress=reporter)
    timings["analysis"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all
    results = build_results(real, gen, ids, per, cfg, notes, timings)
    results.update(sections)
    results["settings"]["analysis"] = {
        "space": sections.get("analysis_space"), "clusters": acfg.clusters, "alpha": acfg.alpha,
        "labels": acfg.labels, "manifest": acfg.manifest, "classes": acfg.classes, "classifier": cfg.classifier,
        "subgroups": acfg.subgroups, "dup_threshold": acfg.dup_threshold, "copy_quantile": acfg.copy_quantile,
    }
    return results, real, gen


def _embedders_from_descriptions(side: Side, cfg: ScanConfig) -> dict:
    """Rebuild (unloaded) CLIP embedders described in a features file, for zero-shot text prompts."""
    out = {}
    for eid, desc in side.embedders.items():
        if not eid.startswith("clip:"):
            continue
        name, w = embedder_names_for(desc, side.source)
        e = _pipeline.build_embedders([name], [w] if w else cfg.weights, seed=desc.get("seed") or cfg.seed,
                            cache_dir=cfg.cache_dir, offline=cfg.offline)[0]
        if e.id == eid:
            out[eid] = e
    return out
