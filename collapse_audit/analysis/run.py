"""The analysis stage of a scan: where did it collapse?

Runs, on the features the scan already has (no new embedding except a
TorchScript classifier's logits, which the scan computes with the others):

- per-cluster dropout (NDB) in the analysis space (CLIP by default),
- near-duplicates within the generated set and near-copies of real images,
- per-class dropout when classes are known or can be predicted,
- subgroup representation gaps for manifest or zero-shot attributes.

Each section is a JSON-ready dict (see the JSON Schema) or ``None`` when it
could not be computed, with the reason in ``notes``.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from .. import labels as L
from ..config import AnalysisConfig  # noqa: F401  (re-exported: its old home)
from ..embedders import clip_encode_text, encodes_text
from ..errors import UsageError
from ..index import normalise_rows
from ..scale import ip_index_builder
from . import classes as K
from . import clusters as C
from . import duplicates as Dup
from . import subgroups as S




def pick_space(ids: Sequence[str], requested: str | None) -> str:
    """The embedder id used for clustering, duplicates and the UMAP: requested, else CLIP, else the first."""
    if requested:
        for i in ids:
            if i == requested or i.startswith(requested):
                return i
        raise UsageError(f"--cluster-space '{requested}' is not one of the scan's embedders: {', '.join(ids)}")
    for i in ids:
        if i.startswith("clip:"):
            return i
    return ids[0]


def _clip_embedder_for(space_id: str, embedders: dict):
    e = embedders.get(space_id)
    if e is not None and encodes_text(e):
        return e
    for emb in embedders.values():
        if encodes_text(emb):
            return emb
    return None


def run_analyses(real, gen, ids: Sequence[str], cfg: AnalysisConfig, notes: list[str], embedders: dict | None = None,
                 timings: dict | None = None, progress=None) -> dict:
    """All analysis sections for two :class:`~collapse_audit.scan.Side` objects.

    ``timings``, when given, receives the wall-clock seconds of each section
    (``analysis_clusters``, ``analysis_duplicates``, ``analysis_classes``,
    ``analysis_subgroups``; ``analysis_normalise`` for the L2 normalisation).
    """
    import time

    out = {"clusters": None, "classes": None, "subgroups": None, "duplicates": None, "analysis_space": None}
    if cfg.skip:
        if cfg.skip_note:
            notes.append("analysis skipped (--no-analysis): no clusters, classes, subgroups or duplicates.")
        return out
    embedders = embedders or {}
    timings = timings if timings is not None else {}
    sid = pick_space(ids, cfg.space)
    out["analysis_space"] = sid
    rf, gf = real.features[sid], gen.features[sid]
    t0 = time.perf_counter()
    rn, gn = normalise_rows(rf), normalise_rows(gf)
    timings["analysis_normalise"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if real.n_images >= 20:
        out["clusters"] = C.cluster_dropout(rn, gn, real_paths=real.paths, gen_paths=gen.paths, k=cfg.clusters,
                                            seed=cfg.seed, alpha=cfg.alpha, embedder=sid)
    else:
        notes.append(f"cluster dropout needs at least 20 real images (have {real.n_images}); skipped.")
    timings["analysis_clusters"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    builder = None
    if real.n_images * gen.n_images > cfg.exact_max_pairs:
        builder = ip_index_builder(approx=True, seed=cfg.seed)
        notes.append(f"{real.n_images} x {gen.n_images} images: near-duplicate and near-copy search uses an approximate "
                     "FAISS IVF-Flat index (32 probed cells); exact search would take hours at this size.")
    out["duplicates"] = Dup.find_duplicates(gn, rn, gen_paths=gen.paths, real_paths=real.paths, gen_shas=gen.shas,
                                            real_shas=real.shas, threshold=cfg.dup_threshold,
                                            copy_quantile=cfg.copy_quantile, embedder=sid, index_builder=builder,
                                            seed=cfg.seed, progress=progress)
    appr = (out["duplicates"] or {}).get("approximation")
    if appr:
        m = appr["metrics"]
        notes.append("approximate duplicate search checked against exact search on "
                     f"{appr['n_sub']['gen']} generated images: "
                     + ", ".join(f"{k} error {v['error']:+.4f} [{v['error_ci'][0]:+.4f}, {v['error_ci'][1]:+.4f}]"
                                 for k, v in m.items()) + ".")
    timings["analysis_duplicates"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out["classes"] = _classes(real, gen, sid, rn, gn, cfg, notes, embedders)
    timings["analysis_classes"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out["subgroups"] = _subgroups(real, gen, sid, rn, gn, cfg, notes, embedders)
    timings["analysis_subgroups"] = time.perf_counter() - t0
    return out


def _true_labels(side, manifest) -> list[str | None] | None:
    """Known labels of a side: manifest, else folder names (with --labels folders), else labels in a features file."""
    labels = None
    if manifest is not None:
        lab, _ = manifest.lookup(side.name, side.paths)
        if any(x is not None for x in lab):
            labels = lab
    return labels


def _classes(real, gen, sid, rn, gn, cfg: AnalysisConfig, notes, embedders):
    manifest = L.read_manifest(cfg.manifest) if cfg.manifest else None
    real_true = _true_labels(real, manifest)
    gen_true = _true_labels(gen, manifest)
    source = "manifest" if (real_true or gen_true) else None
    if cfg.labels == "folders":
        if real_true is None and real.kind == "folder":
            real_true = L.folder_labels(real.paths)
            source = source or "folders"
        if gen_true is None and gen.kind == "folder":
            g = L.folder_labels(gen.paths)
            gen_true = g if any(x is not None for x in g) else None
    if real_true is None and real.labels:
        real_true, source = list(real.labels), source or "manifest"
    if gen_true is None and gen.labels:
        gen_true = list(gen.labels)
    if real_true is not None and not any(x is not None for x in real_true):
        real_true = None

    classifier = None
    real_lab = real_true
    gen_lab = gen_true if gen_true is not None and all(x is not None for x in gen_true) else None
    if cfg.classifier_id:
        if cfg.classifier_id not in real.features or cfg.classifier_id not in gen.features:
            notes.append("the --classifier runs on image folders only; classes skipped for features-file inputs.")
            return None
        names = cfg.classifier_names or []
        real_pred = L.labels_from_logits(real.features[cfg.classifier_id], names)
        gen_pred = L.labels_from_logits(gen.features[cfg.classifier_id], names)
        classifier = {"kind": "torchscript", "id": cfg.classifier_id, **_agreement(real_pred, real_true)}
        real_lab, gen_lab, source = real_pred, gen_pred, "torchscript"
        classes_list = names
    elif cfg.classes:
        clip, clip_id = _require_clip(real, sid, embedders, "--classes")
        enc = functools.partial(_encode_text, clip)
        real_pred, _ = L.zero_shot_classify(normalise_rows(real.features[clip_id]), cfg.classes, enc)
        gen_pred, _ = L.zero_shot_classify(normalise_rows(gen.features[clip_id]), cfg.classes, enc)
        classifier = {"kind": "zero-shot", "id": clip_id, **_agreement(real_pred, real_true)}
        real_lab, gen_lab, source = real_pred, gen_pred, "zero-shot"
        classes_list = list(cfg.classes)
    elif real_true is not None and gen_lab is None:
        known = np.array([x is not None for x in real_true])
        rl = [x for x in real_true if x is not None]
        gen_lab = L.knn_classify(rn[known], rl, gn, k=10)
        agree = L.knn_agreement(rn[known], rl, k=10)
        classifier = {"kind": "knn", "id": sid, "agreement": agree, "n_checked": int(known.sum()),
                      "note": f"generated images labelled by a 10-NN vote among labelled real images in {sid}; "
                              "agreement = leave-one-out accuracy on the real set"}
        classes_list = None
    elif real_true is not None and gen_lab is not None:
        classes_list = None
    else:
        return None
    labels_known = {"real": real_true is not None, "gen": gen_true is not None}
    if classifier is not None and classifier.get("agreement") is not None and classifier["agreement"] < 0.8:
        notes.append(f"the {classifier['kind']} classifier agrees with the known real labels only "
                     f"{100 * classifier['agreement']:.0f}% of the time: treat class shares with caution.")
    try:
        return K.class_dropout(list(real_lab), list(gen_lab), classes=classes_list, alpha=cfg.alpha, source=source,
                               labels_known=labels_known, classifier=classifier)
    except ValueError as e:
        notes.append(f"classes skipped: {e}")
        return None


def _require_clip(side, sid, embedders, what: str):
    """The scan's CLIP embedder and its id (for zero-shot text prompts), or a usage error."""
    clip = _clip_embedder_for(sid, embedders)
    clip_id = next((i for i in side.features if clip is not None and i == clip.id), None)
    if clip is None or clip_id is None:
        raise UsageError(f"{what} need a CLIP embedder in the scan (add -e clip)")
    return clip, clip_id


def _agreement(pred, true) -> dict:
    if true is None:
        return {"agreement": None, "n_checked": 0, "note": "no known real labels to check the classifier against"}
    pairs = [(p, t) for p, t in zip(pred, true) if t is not None]
    if not pairs:
        return {"agreement": None, "n_checked": 0, "note": "no known real labels to check the classifier against"}
    acc = float(np.mean([p == t for p, t in pairs]))
    return {"agreement": acc, "n_checked": len(pairs), "note": "accuracy of the classifier on the labelled real images"}


def _encode_text(clip, prompts):
    return clip_encode_text(clip, prompts)


def _subgroups(real, gen, sid, rn, gn, cfg: AnalysisConfig, notes, embedders):
    real_attrs: dict[str, list] = {}
    gen_attrs: dict[str, list] = {}
    sources: dict[str, str] = {}
    order: dict[str, list[str]] = {}
    if cfg.manifest:
        m = L.read_manifest(cfg.manifest)
        _, ra = m.lookup("real", real.paths)
        _, ga = m.lookup("gen", gen.paths)
        for name in ra:
            if any(v is not None for v in ra[name]) and name in ga and any(v is not None for v in ga[name]):
                real_attrs[name], gen_attrs[name], sources[name] = ra[name], ga[name], "manifest"
            elif any(v is not None for v in ra[name]):
                notes.append(f"manifest attribute '{name}' has no values for generated images; give it with a "
                             f"--subgroup prompt to estimate it, or add gen rows to the manifest.")
    if cfg.subgroups:
        clip, clip_id = _require_clip(real, sid, embedders, "--subgroup prompts")
        enc = functools.partial(_encode_text, clip)
        for spec in cfg.subgroups:
            sg = L.parse_subgroup(spec)
            real_attrs[sg.name], _ = L.zero_shot_subgroup(normalise_rows(real.features[clip_id]), sg, enc)
            gen_attrs[sg.name], _ = L.zero_shot_subgroup(normalise_rows(gen.features[clip_id]), sg, enc)
            sources[sg.name] = "zero-shot"
            order[sg.name] = list(sg.groups)
    if not real_attrs:
        return None
    for a, b in cfg.intersections:
        missing = [x for x in (a, b) if x not in real_attrs]
        if missing:
            raise UsageError(f"--intersect {a},{b}: unknown attribute {', '.join(missing)} (known: {', '.join(real_attrs)})")
    return S.subgroup_gaps(real_attrs, gen_attrs, sources=sources, real_feats=rn, gen_feats=gn, k=cfg.k,
                           alpha=cfg.alpha, intersections=list(cfg.intersections), group_order=order)
