"""The HTML report: one self-contained file a reviewer opens (stage 6, DESIGN.md).

Two steps, so that the report can be re-rendered without recomputing anything:

1. :func:`prepare_report_data` runs at the end of a scan, while the features
   and image folders are at hand. It writes ``report_data.json`` beside
   ``results.json``: a 2-D layout of the analysis embedder's features (UMAP,
   McInnes, Healy & Melville 2018, arXiv:1802.03426; PCA when there are too
   few points or UMAP fails), the side/path/cluster of every plotted point,
   and small JPEG thumbnails (data URIs) for the galleries and for hovering.
   Both the number of plotted points (``umap_cap``) and of thumbnails
   (``max_thumbs``, each at most ``thumb_size`` px) are capped, so the
   report's size is bounded whatever the scan's size.
2. :func:`render_report` turns ``results.json`` (and ``report_data.json`` when
   present) into ``report.html`` with Jinja2 (autoescaping on). Everything is
   inline (CSS, JS, the scatter plot drawn on a ``<canvas>`` by a few lines of
   vanilla JS, thumbnails as ``data:`` URIs): opening the file makes no
   network request. Data reach the page's script only through ``|tojson`` in
   a ``<script type="application/json">`` block, and file names reach the page
   only as escaped text, so a file called ``<img src=x onerror=...>.png`` is
   shown, never run.
"""
from __future__ import annotations

import base64
import io
import json
import math
import os
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from . import keys as K
from .decode import load_rgb
from .errors import InputError
from .index import normalise_rows
from .interpret import interpret
from .outputs import write_atomic

__all__ = [
    "REPORT_DATA_NAME",
    "REPORT_DATA_VERSION",
    "build_report_data",
    "prepare_report_data",
    "load_report_data",
    "render_report",
    "write_report",
    "template_dirs",
]

REPORT_DATA_NAME = "report_data.json"
REPORT_DATA_VERSION = 1
PCA_BELOW = 20  # fewer points than this: PCA instead of UMAP (UMAP's k-NN graph needs n >> n_neighbors)
MAX_FAILURES_SHOWN = 500
MAX_DUP_GROUPS_SHOWN = 12
MAX_DUP_GROUP_THUMBS = 8
MAX_PAIRS_SHOWN = 24


# --------------------------------------------------------------------------- templates
def template_dirs() -> list[Path]:
    """Folders searched for the Jinja2 templates: the repo's ``templates/``, then a packaged copy."""
    here = Path(__file__).resolve().parent
    dirs = [here.parent / "templates", here / "templates"]
    return [d for d in dirs if d.is_dir()]


def duration(seconds) -> str:
    """A wall time for people: '42.1 s', '12 min 05 s', '1 h 02 min'."""
    if seconds is None:
        return "-"
    t = float(seconds)
    if t < 59.95:
        return f"{t:.1f} s"
    if t < 3599.5:
        m, s = divmod(int(round(t)), 60)
        return f"{m} min {s:02d} s"
    h, m = divmod(int(round(t / 60)), 60)
    return f"{h} h {m:02d} min"


def template_environment():
    import jinja2

    dirs = template_dirs()
    if not dirs:
        raise InputError("the report templates are missing from this installation (templates/report.html.j2); reinstall collapse-audit")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in dirs]),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2", "htm", "xml"), default=True),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.ChainableUndefined,
    )
    env.filters["num"] = _num
    env.filters["duration"] = duration
    env.filters["pct"] = _pct
    env.filters["w"] = _width
    env.filters["pp"] = _pp
    env.filters["pp1"] = lambda v: "-" if v is None else f"{100 * v:.1f}".replace("-", "\u2212")
    env.filters["shjoin"] = lambda argv: shlex.join(str(a) for a in (argv or []))
    return env


def _num(v, digits: int = 4) -> str:
    """Format a number for a table: ``-`` when missing, ``digits`` significant figures otherwise."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}g}"


def _pct(v, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{100 * v:.{digits}f}%"


def _pp(v) -> str:
    """A difference of shares in percentage points, signed (``-12.3 pp``)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{100 * v:+.1f} pp".replace("-", "\u2212")


def _width(v, scale: float) -> str:
    """A CSS percentage for a bar of value ``v`` on a 0..``scale`` axis (clamped to 0..100)."""
    if v is None or not scale:
        return "0%"
    return f"{max(0.0, min(100.0, 100.0 * float(v) / float(scale))):.2f}%"


# --------------------------------------------------------------------------- layout
def layout_2d(x: np.ndarray, *, seed: int = 0, method: str = "auto") -> tuple[np.ndarray, str, str]:
    """2-D layout of the rows of ``x``: ``(coords in [0, 1]^2, method used, note)``.

    UMAP (McInnes et al. 2018) with ``n_neighbors=15, min_dist=0.1,
    metric="cosine", random_state=seed`` (umap-learn); PCA on the
    L2-normalised rows (cosine geometry) when ``method="pca"``, when there
    are fewer than :data:`PCA_BELOW` rows, or when UMAP fails. Coordinates
    are min-max scaled to the unit square (aspect kept) and rounded to 4
    decimals.
    """
    x = normalise_rows(x)
    n = x.shape[0]
    note = ""
    coords = None
    used = "pca"
    if method not in ("auto", "umap", "pca"):
        raise ValueError(f"layout method must be auto, umap or pca; got {method!r}")
    if method != "pca" and n >= PCA_BELOW:
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import umap

                reducer = umap.UMAP(n_neighbors=15, min_dist=0.1, metric="cosine", random_state=int(seed), n_jobs=1)
                coords = np.asarray(reducer.fit_transform(x), dtype=np.float64)
            if not np.all(np.isfinite(coords)):
                raise ValueError("non-finite coordinates")
            used = "umap"
            note = f"UMAP (umap-learn, n_neighbors=15, min_dist=0.1, metric=cosine, random_state={int(seed)})"
        except Exception as e:  # any UMAP failure: fall back to PCA, and say so
            coords = None
            note = f"UMAP failed ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); PCA shown instead. "
    elif method != "pca":
        note = f"only {n} points (UMAP needs at least {PCA_BELOW}): PCA shown instead. "
    if coords is None:
        coords = _pca2(x)
        used = "pca"
        note += "PCA (first two principal components of the L2-normalised features)"
    return _unit_square(coords), used, note


def _pca2(x: np.ndarray) -> np.ndarray:
    xc = x.astype(np.float64) - x.mean(axis=0, keepdims=True)
    if xc.shape[0] < 2:
        return np.zeros((xc.shape[0], 2))
    # SVD of the centred data (n x d); fine for a capped n.
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    out = np.zeros((xc.shape[0], 2))
    m = min(2, s.size)
    out[:, :m] = u[:, :m] * s[:m]
    # Deterministic sign: the largest |loading| of each axis is positive.
    for j in range(m):
        i = int(np.argmax(np.abs(out[:, j])))
        if out[i, j] < 0:
            out[:, j] *= -1
    return out


def _unit_square(c: np.ndarray) -> np.ndarray:
    if c.size == 0:
        return c.reshape(0, 2)
    lo = c.min(axis=0)
    span = float((c.max(axis=0) - lo).max())
    if span <= 0:
        out = np.full_like(c, 0.5)
    else:
        out = (c - lo) / span
        out += (1.0 - out.max(axis=0)) / 2.0  # centre the shorter axis
    return np.round(out, 4)


def _subsample(n_real: int, n_gen: int, cap: int, seed: int, must_real, must_gen) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the points to plot: all when ``n_real + n_gen <= cap``, else a per-side
    (stratified, proportional) seeded random subsample that always keeps ``must_*``."""
    total = n_real + n_gen
    if total <= cap:
        return np.arange(n_real), np.arange(n_gen)
    rng = np.random.default_rng(seed)
    cap_r = int(round(cap * n_real / total))
    cap_r = min(max(cap_r, min(n_real, 1)), n_real)
    cap_g = min(cap - cap_r, n_gen)
    out = []
    for n, k, must in ((n_real, cap_r, must_real), (n_gen, cap_g, must_gen)):
        must = np.array(sorted(set(int(i) for i in must if 0 <= int(i) < n)), dtype=np.int64)[:k]
        rest = np.setdiff1d(np.arange(n), must, assume_unique=True)
        extra = rng.choice(rest, size=max(0, k - must.size), replace=False) if k > must.size else np.array([], np.int64)
        out.append(np.sort(np.concatenate([must, extra]).astype(np.int64)))
    return out[0], out[1]


# --------------------------------------------------------------------------- thumbnails
def make_thumbnail(path: str | os.PathLike, size: int = 96, quality: int = 70) -> str | None:
    """A ``data:image/jpeg;base64,...`` thumbnail (longest side ``size`` px) or ``None`` if unreadable."""
    from PIL import Image

    try:
        img = load_rgb(path)
        img.thumbnail((int(size), int(size)), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(quality), optimize=True)
    except Exception:  # a file that fails (decode, I/O) is just left without a thumbnail
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _root_of(side) -> Path | None:
    root = getattr(side, "root", None)
    if not root:
        return None
    p = Path(root)
    return p if p.is_dir() else None


def path_under(root: Path, rel: str) -> Path | None:
    """``root / rel`` when ``rel`` stays inside ``root`` (relative, no ``..`` escape); else ``None``.

    The check is lexical: paths listed in a features file can name neither an
    absolute file nor one outside the folder the user gave for thumbnails.
    """
    rel = str(rel).replace("\\", "/")
    if not rel or rel.startswith("/") or os.path.isabs(rel) or (len(rel) > 1 and rel[1] == ":"):
        return None
    norm = os.path.normpath(rel)
    if norm == ".." or norm.startswith("../") or norm.startswith(".." + os.sep):
        return None
    return root / norm


# --------------------------------------------------------------------------- report data
def _space_id(results: dict, real, gen) -> str | None:
    """The embedder whose features the layout uses: the clusters' space, else CLIP, else the primary."""
    cand = []
    for sec in ("clusters", "duplicates"):
        s = results.get(sec) or {}
        if s.get("embedder"):
            cand.append(s["embedder"])
    space = ((results.get("settings") or {}).get("analysis") or {}).get("space")
    if space:
        cand.append(space)
    ids = [e.get("id") for e in results.get("embedders") or [] if e.get("id")]
    cand += [i for i in ids if str(i).startswith("clip:")]
    if results.get("primary_embedder"):
        cand.append(results["primary_embedder"])
    cand += ids + list(real.features)
    for c in cand:
        if c in real.features and c in gen.features:
            return c
    return None


def build_report_data(
    results: dict,
    real,
    gen,
    *,
    seed: int = 0,
    umap_cap: int = 5000,
    thumb_size: int = 96,
    max_thumbs: int = 600,
    layout: str = "auto",
    assignments: dict[str, np.ndarray] | None = None,
    thumb_quality: int = 70,
) -> dict:
    """Everything the report needs besides results.json, as a JSON-ready dict (see :func:`prepare_report_data`)."""
    sid = _space_id(results, real, gen)
    data: dict[str, Any] = {
        "version": REPORT_DATA_VERSION,
        "embedder": sid,
        "seed": int(seed),
        "layout": None,
        "points": None,
        "regions": [],
        "thumbs": [],
        "thumb_size": int(thumb_size),
        "max_thumbs": int(max_thumbs),
        "thumb_notes": [],
        "run_id": results.get("run_id"),
    }
    clusters = results.get("clusters") or {}
    bins = clusters.get("bins") or []
    real_index = {p: i for i, p in enumerate(real.paths)}
    gen_index = {p: i for i, p in enumerate(gen.paths)}

    # ---- thumbnails: bounded in count, by priority
    roots = {"real": _root_of(real), "gen": _root_of(gen)}
    for name, side in (("real", real), ("gen", gen)):
        if roots[name] is None:
            why = (f"given as an embeddings file (pass --{name}-images FOLDER to show its images)" if side.kind == "features"
                   else "its folder is not available")
            data["thumb_notes"].append(f"no thumbnails for the {'generated' if name == 'gen' else 'real'} side: {why}.")
    wanted: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()

    def want(side: str, path: str | None, budget: int):
        if path is None or roots[side] is None or len(wanted) >= budget:
            return
        key = (side, path)
        if key not in seen:
            seen.add(key)
            wanted.append(key)

    gallery_budget = max_thumbs if max_thumbs < 40 else int(max_thumbs * 0.6)
    for b in bins:
        if b.get("status") == "dropped":
            for p in b.get("real_exemplars") or []:
                want("real", p, gallery_budget)
    dups = results.get("duplicates") or {}
    for g in ((dups.get("within_gen") or {}).get("groups") or [])[:MAX_DUP_GROUPS_SHOWN]:
        for p in (g.get("paths") or [])[:MAX_DUP_GROUP_THUMBS]:
            want("gen", p, gallery_budget)
    for pr in ((dups.get("gen_vs_real") or {}).get("pairs") or [])[:MAX_PAIRS_SHOWN]:
        want("gen", pr.get("gen_path"), gallery_budget)
        want("real", pr.get("real_path"), gallery_budget)
    for b in bins:
        if b.get("status") in ("under", "over"):
            for p in (b.get("real_exemplars") or [])[:4]:
                want("real", p, gallery_budget)
            for p in (b.get("gen_exemplars") or [])[:4]:
                want("gen", p, gallery_budget)

    # ---- layout
    if sid is not None:
        must_r = [real_index[p] for b in bins for p in (b.get("real_exemplars") or []) if p in real_index]
        must_g = [gen_index[p] for b in bins for p in (b.get("gen_exemplars") or []) if p in gen_index]
        must_r += [real_index[p] for s, p in wanted if s == "real" and p in real_index]
        must_g += [gen_index[p] for s, p in wanted if s == "gen" and p in gen_index]
        ir, ig = _subsample(real.n_images, gen.n_images, int(umap_cap), seed, must_r, must_g)
        x = np.concatenate([real.features[sid][ir], gen.features[sid][ig]], axis=0)
        coords, used, note = layout_2d(x, seed=seed, method=layout)
        nr = ir.size
        subsampled = (ir.size + ig.size) < (real.n_images + gen.n_images)
        data["layout"] = {
            "method": used,
            "note": note,
            "embedder": sid,
            "cap": int(umap_cap),
            "subsampled": bool(subsampled),
            "n_total": {"real": int(real.n_images), "gen": int(gen.n_images)},
            "n_shown": {"real": int(ir.size), "gen": int(ig.size)},
            "sampling": ("all points" if not subsampled else
                         f"seeded random subsample per side, proportional to its size (seed {int(seed)}), "
                         f"cluster exemplars and gallery images always kept; cap {int(umap_cap)} points"),
        }
        paths = [real.paths[int(i)] for i in ir] + [gen.paths[int(i)] for i in ig]
        sides = [0] * nr + [1] * ig.size
        pts: dict[str, Any] = {
            "x": [float(v) for v in coords[:, 0]],
            "y": [float(v) for v in coords[:, 1]],
            "s": sides,
            "p": paths,
        }
        if assignments is not None and "real" in assignments and "gen" in assignments:
            ar = np.asarray(assignments["real"]).astype(np.int64)
            ag = np.asarray(assignments["gen"]).astype(np.int64)
            pts["c"] = [int(v) for v in ar[ir]] + [int(v) for v in ag[ig]]
        data["points"] = pts

        # cluster regions for dropped / under clusters: from assigned real points, else from exemplars
        pos_real = {real.paths[int(i)]: (coords[j, 0], coords[j, 1]) for j, i in enumerate(ir)}
        for b in bins:
            if b.get("status") not in ("dropped", "under"):
                continue
            if "c" in pts:
                xy = np.array([(pts["x"][j], pts["y"][j]) for j in range(nr) if pts["c"][j] == b["id"]])
            else:
                xy = np.array([pos_real[p] for p in (b.get("real_exemplars") or []) if p in pos_real])
            if xy.size == 0:
                continue
            cx, cy = np.median(xy, axis=0)
            r = float(np.quantile(np.hypot(xy[:, 0] - cx, xy[:, 1] - cy), 0.8)) if len(xy) > 1 else 0.0
            data["regions"].append({"id": int(b["id"]), "status": b["status"], "x": round(float(cx), 4),
                                    "y": round(float(cy), 4), "r": round(max(r, 0.025), 4),
                                    "from": "cluster members" if "c" in pts else "exemplars"})

        # hover thumbnails for a seeded subsample of the plotted points, up to the total cap
        rng = np.random.default_rng(seed + 1)
        order = rng.permutation(len(paths))
        for j in order:
            if len(wanted) >= max_thumbs:
                break
            want("real" if sides[j] == 0 else "gen", paths[j], max_thumbs)

    # ---- make the thumbnails
    thumbs = []
    index: dict[tuple[str, str], int] = {}
    for side, p in wanted[:max_thumbs]:
        target = path_under(roots[side], p)
        uri = None if target is None else make_thumbnail(target, size=thumb_size, quality=thumb_quality)
        if uri is None:
            continue
        index[(side, p)] = len(thumbs)
        thumbs.append({"side": side, "path": p, "src": uri})
    data["thumbs"] = thumbs
    if data["points"] is not None:
        data["points"]["t"] = [index.get(("real" if s == 0 else "gen", p), -1)
                               for s, p in zip(data["points"]["s"], data["points"]["p"])]
    return data


def prepare_report_data(
    results: dict,
    real,
    gen,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    umap_cap: int = 5000,
    thumb_size: int = 96,
    max_thumbs: int = 600,
    layout: str = "auto",
    assignments: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write ``report_data.json`` (layout, points, thumbnails) into ``out_dir``; return its path.

    Layout: UMAP (McInnes, Healy & Melville 2018) of the analysis
    embedder's features (the clusters' embedder, else CLIP, else the
    primary), real and generated fitted together, on at most ``umap_cap``
    points (a seeded per-side proportional subsample above the cap that
    always keeps cluster exemplars and gallery images); PCA below
    :data:`PCA_BELOW` points or when UMAP fails (stated in the data).
    ``assignments`` (``{"real": ids, "gen": ids}``, aligned with the sides'
    paths) adds each point's cluster id. Thumbnails (JPEG, ``thumb_size`` px,
    quality 70, at most ``max_thumbs`` in all) for, in order: dropped
    clusters' real exemplars, within-generated duplicate groups,
    generated-vs-real pairs, under/over clusters' exemplars, then a random
    subsample of plotted points (for hovering). Only sides with an image
    folder get thumbnails. Compact JSON; deterministic for a fixed seed.
    """
    data = build_report_data(results, real, gen, seed=seed, umap_cap=umap_cap, thumb_size=thumb_size,
                             max_thumbs=max_thumbs, layout=layout, assignments=assignments)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return write_atomic(out / REPORT_DATA_NAME, json.dumps(data, separators=(",", ":"), allow_nan=False), what="report data")


def load_report_data(path: str | os.PathLike) -> dict | None:
    """Read ``report_data.json`` (the file, or the folder holding it); ``None`` when absent or unreadable."""
    p = Path(path)
    if p.is_dir():
        p = p / REPORT_DATA_NAME
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------- render
def _metric_rows(results: dict) -> list[dict]:
    out = []
    primary = results.get("primary_embedder")
    emb_by_id = {e.get("id"): e for e in results.get("embedders") or []}
    by = results.get("by_embedder") or {}
    if not by and results.get("metrics"):
        by = {primary or "embedder": {"metrics": results["metrics"]}}
    for eid, block in by.items():
        m = block.get("metrics") or {}
        sentences = dict(interpret(m))
        if eid == primary and results.get("interpretation"):
            sentences.update(results["interpretation"])
        ci = m.get("ci") or {}
        rows = []
        for spec in K.HEADLINE:
            key, better = spec.leaf, K.BETTER_PHRASE[spec.better]
            v = m.get(key)
            if spec.spread and v is not None:
                val = f"{v:{spec.fmt}} ± {(m.get(spec.spread) or 0):.2g}"
            else:
                val = _num(v)
            interval = ci.get(key)
            rows.append({"key": key, "value": val, "raw": v, "ci": interval, "better": better,
                         "sentence": sentences.get(key, "not computed (see the notes)")})
        for spec in K.EXTRA_METRICS:  # shown only where computed (CMMD: CLIP; IS: Inception on images)
            v = m.get(spec.leaf)
            if v is None:
                continue
            val = f"{v:{spec.fmt}} ± {(m.get(spec.spread) or 0):.2g}" if spec.spread else _num(v)
            rows.append({"key": spec.leaf, "value": val, "raw": v, "ci": None,
                         "better": K.BETTER_PHRASE.get(spec.better, "") if spec.better else "",
                         "sentence": sentences.get(spec.leaf, spec.meaning)})
        e = emb_by_id.get(eid) or {}
        out.append({"id": eid, "primary": eid == primary, "random": bool(e.get("random_weights")),
                    "rows": rows, "ci_level": m.get("ci_level"), "ci_method": m.get("ci_method")})
    return out


def _scale(values) -> float:
    """End of a share axis: the smallest 'nice' value (quarters are round percentages) above the largest value."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    top = max(vals) if vals else 1.0
    for end in (0.02, 0.04, 0.08, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0):
        if top <= end * 0.999:
            return end
    return max(1.0, top)


def _share_scale(rows: list[dict], ci_key: str = "gen_share_ci") -> float:
    vals = []
    for r in rows:
        vals += [r.get("real_share"), r.get("gen_share")]
        ci = r.get(ci_key)
        if ci:
            vals.append(ci[1])
    return _scale(vals)


def _view_model(results: dict, data: dict | None) -> dict:
    """Everything the template shows, derived from results (and report data); no computation of features."""
    data = data or {}
    thumbs = data.get("thumbs") or []
    tindex = {(t["side"], t["path"]): i for i, t in enumerate(thumbs)}
    used: set[int] = set()

    def thumb(side: str, path: str | None):
        i = tindex.get((side, path))
        if i is None:
            return None
        used.add(i)
        return {"ti": i, "src": thumbs[i]["src"]}

    embs = results.get("embedders") or []
    random_embs = [e for e in embs if e.get("random_weights")]
    clusters = results.get("clusters")
    if clusters:
        bins = list(clusters.get("bins") or [])
        clusters = dict(clusters)
        clusters["scale"] = _share_scale(bins)
        clusters["bins_sorted"] = sorted(bins, key=lambda b: (b.get("status") != "dropped", b.get("diff") or 0.0, b.get("id")))
        clusters["dropped_bins"] = [b for b in bins if b.get("status") == "dropped"]
    classes = results.get("classes")
    if classes:
        classes = dict(classes)
        classes["scale"] = _share_scale(classes.get("classes") or [])
    subgroups = results.get("subgroups")
    if subgroups:
        subgroups = dict(subgroups)
        attrs = []
        for a in subgroups.get("attributes") or []:
            a = dict(a)
            a["scale"] = _share_scale(a.get("groups") or [])
            attrs.append(a)
        subgroups["attributes"] = attrs
    failures = results.get("failures") or []
    gate = results.get("gate") or {"passed": True, "rules": [], "violations": []}
    ins = results.get("inputs") or {}
    layout = data.get("layout")
    pts = data.get("points")
    return {
        "r": results,
        "data": data,
        "thumb": thumb,
        "used_thumbs": used,
        "gate": gate,
        "inputs": ins,
        "embedders": embs,
        "random_embs": random_embs,
        "metric_blocks": _metric_rows(results),
        "clusters": clusters,
        "classes": classes,
        "subgroups": subgroups,
        "duplicates": results.get("duplicates"),
        "dup_groups_max": MAX_DUP_GROUPS_SHOWN,
        "dup_group_thumbs": MAX_DUP_GROUP_THUMBS,
        "pairs_max": MAX_PAIRS_SHOWN,
        "failures": failures[:MAX_FAILURES_SHOWN],
        "n_failures": len(failures),
        "layout": layout,
        "has_plot": bool(pts and pts.get("x")),
        "thumb_notes": data.get("thumb_notes") or [],
        "n_thumbs": len(thumbs),
        "notes": results.get("notes") or [],
        "timings": results.get("timings") or {},
        "settings": results.get("settings") or {},
        "tool": results.get("tool") or {},
    }


def _plot_payload(data: dict, used: set[int], results: dict) -> dict:
    """The JSON the page's script draws: points, cluster regions, and hover-only thumbnails."""
    pts = data.get("points") or {}
    thumbs = data.get("thumbs") or []
    shown = set(t for t in (pts.get("t") or []) if t is not None and t >= 0)
    hover = {str(i): thumbs[i]["src"] for i in sorted(shown - used) if i < len(thumbs)}
    clusters = results.get("clusters") or {}
    return {
        "points": {k: pts.get(k) for k in ("x", "y", "s", "p", "c", "t") if pts.get(k) is not None},
        "regions": data.get("regions") or [],
        "thumbs": hover,
        "k": clusters.get("k"),
    }


def render_report(results: dict, data: dict | None, out_html: str | os.PathLike) -> Path:
    """Render ``report.html`` from results (and the report data, if any); return its path.

    Jinja2 with autoescaping, a single self-contained file: inline CSS/JS,
    the scatter plot drawn on a canvas from a ``<script type="application/json">``
    block (``|tojson``), thumbnails as data URIs. Sections (stable ids):
    ``#verdict #metrics #umap #clusters #classes #subgroups #duplicates
    #failures #repro``. Sections that were not computed say so and how to
    get them.
    """
    env = template_environment()
    vm = _view_model(results, data)
    # The template calls plot_payload() at the end of the page, after the
    # galleries have recorded which thumbnails they show inline, so the plot's
    # JSON carries only the thumbnails not already in the page.
    vm["plot_payload"] = lambda: _plot_payload(vm["data"], vm["used_thumbs"], results)
    html = env.get_template("report.html.j2").render(**vm)
    return write_html(html, out_html)


def write_html(html: str, out_html: str | os.PathLike) -> Path:
    """Write ``html`` to ``out_html`` atomically (temp file + rename); return the path."""
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(out, html, what="the HTML report")


def write_report(results: dict, real, gen, out_dir: str | os.PathLike, *, seed: int = 0,
                 html_name: str = "report.html", **kwargs) -> Path:
    """:func:`prepare_report_data` then :func:`render_report` into ``out_dir``; returns the HTML path."""
    p = prepare_report_data(results, real, gen, out_dir, seed=seed, **kwargs)
    return render_report(results, load_report_data(p), Path(out_dir) / html_name)
