"""The HTML page of a tracked training run: ``track.html`` from ``track.json``.

One self-contained file, like the scan's report (:mod:`collapse_audit.report`,
whose Jinja2 environment, number filters, thumbnail maker and path check it
reuses): inline CSS, a few lines of inline vanilla JS (the flipbook only),
charts as inline SVG computed here, images as ``data:`` URIs. Opening it makes
no network request; a Content-Security-Policy in the page forbids any.

What it shows (section ids are stable):

- ``#summary``: the run (checkpoints, real set, embedder, order), the alerts,
  the onset of collapse with its reasons, the best checkpoint, never-learned
  and hopping clusters, tail loss (generational runs), and the statistical
  basis sentences of ``run`` (how false alarms are controlled, what counts as
  hopping, how the best checkpoint is chosen).
- ``#timelines``: one small chart per metric (coverage, recall, precision,
  density, FID, KID, duplicate fraction) against the step, with the
  ``1 - alpha`` interval band where ``intervals`` has it, the onset and the
  best checkpoint marked.
- ``#heatmap``: clusters x checkpoints, one cell per pair coloured by
  ``log2(gen_share / real_share)`` on a diverging scale, dropped cells black
  and hatched; rows ordered hopping clusters first, then by the first
  checkpoint that dropped them, then never-dropped, then never-learned, so
  clusters that come and go stand out. Hovering a row label shows the
  cluster's real exemplars.
- ``#flipbook``: the sample grid of every checkpoint, one at a time.
- ``#classes``: class shares per checkpoint, when the run has classes.

Every string of ``track.json`` is untrusted: it reaches the page only as
autoescaped text or attribute values (no ``|safe`` on data, no data in the
script), so a checkpoint called ``<script>alert(1)</script>`` is shown, never
run. Image paths are read only when ``base_dir`` is given: a relative path
must stay inside ``base_dir`` (:func:`collapse_audit.report.path_under`); an
absolute one (the schema allows them for samples) is read as given.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from . import keys as KEYS
from .outputs import write_atomic
from .report import make_thumbnail, path_under, template_environment

__all__ = ["TIMELINE_METRICS", "render_track_html", "write_track_html"]

#: The metric charts, in display order: (key in checkpoint["metrics"], gate alias naming its spec in keys).
TIMELINE_METRICS: tuple = (
    ("coverage", "coverage"), ("recall", "recall"), ("precision", "precision"), ("density", "density"),
    ("fid", "fid"), ("kid", "kid"), ("duplicate_fraction", "dup_fraction"),
)

# chart geometry (SVG user units)
_W, _H = 340, 150
_PL, _PR, _PT, _PB = 46, 10, 16, 26

# diverging colour scale of the heatmap (PuOr: orange = fewer generated than real, purple = more)
_LOW, _MID, _HIGH = (179, 88, 6), (247, 247, 247), (84, 39, 136)
_LOG2_SPAN = 3.0  # log2 ratio clamped to +-3 (1/8 .. 8)
_STATUSES = ("ok", "under", "over", "dropped")


# --------------------------------------------------------------------------- small helpers
def _finite(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _as_list(v) -> list:
    return list(v) if isinstance(v, (list, tuple)) else []


def _at(seq, i, default=None):
    seq = _as_list(seq)
    return seq[i] if 0 <= i < len(seq) else default


def _status(v) -> str:
    """A status as a CSS class: one of the NDB rule's four, else ``unknown`` (track.json is untrusted)."""
    return v if isinstance(v, str) and v in _STATUSES else "unknown"


def _numbers_only(fmt):
    """A number filter that shows anything but a real number (missing, a string, a list) as ``-``."""
    def wrapped(v, *args):
        return fmt(v if isinstance(v, (int, float)) else None, *args)
    return wrapped


def _mix(a, b, u: float) -> str:
    return "#%02x%02x%02x" % tuple(int(round(x + (y - x) * u)) for x, y in zip(a, b))


def ratio_colour(ratio: float | None) -> str:
    """Fill of a heatmap cell: diverging on ``log2(ratio)`` clamped to +-3 (PuOr; grey when undefined)."""
    if ratio is None:
        return "#d0d4d8"
    if ratio <= 0:
        u = -1.0
    else:
        u = max(-1.0, min(1.0, math.log2(ratio) / _LOG2_SPAN))
    return _mix(_MID, _LOW, -u) if u < 0 else _mix(_MID, _HIGH, u)


class _Thumbs:
    """Data-URI thumbnails of image paths, each file read once; ``None`` when not readable or not allowed."""

    def __init__(self, base_dir: Path | None, size: int, extra_roots: list[Path]):
        self.base = Path(base_dir) if base_dir is not None else None
        self.size = int(size)
        self.roots = [r for r in ([self.base] if self.base else []) + extra_roots if r is not None and r.is_dir()]
        self.cache: dict[str, str | None] = {}

    def _locate(self, p: str) -> Path | None:
        if self.base is None:
            return None
        if os.path.isabs(p):
            q = Path(p)
            return q if q.is_file() else None
        for root in self.roots:
            q = path_under(root, p)
            if q is not None and q.is_file():
                return q
        return None

    def __call__(self, p) -> str | None:
        key = str(p)
        if key not in self.cache:
            target = self._locate(key) if key else None
            self.cache[key] = None if target is None else make_thumbnail(target, size=self.size)
        return self.cache[key]


# --------------------------------------------------------------------------- charts
def _nice_ticks(lo: float, hi: float) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    step = 10 ** math.floor(math.log10(span / 3))
    for m in (1, 2, 5, 10):
        if span / (m * step) <= 4:
            step *= m
            break
    first = math.ceil(lo / step) * step
    out, v = [], first
    while v <= hi + 1e-12 * max(1.0, abs(hi)):
        out.append(round(v, 12))
        v += step
    return out


def _chart(key: str, alias: str, xs: list[float], steps: list, cps: list[dict], onset_t, best_t) -> dict:
    """Geometry of one metric's timeline (inline SVG): line segments, interval band, markers, ticks."""
    spec = KEYS.by_alias(alias)
    vals = [_finite((cp.get("metrics") or {}).get(key)) for cp in cps]
    bands = []
    for cp in cps:
        iv = (cp.get("intervals") or {}).get(key)
        lo, hi = (_finite(iv[0]), _finite(iv[1])) if isinstance(iv, (list, tuple)) and len(iv) == 2 else (None, None)
        bands.append((lo, hi) if lo is not None and hi is not None else None)
    ys = [v for v in vals if v is not None] + [x for b in bands if b for x in b]
    out: dict[str, Any] = {"key": key, "label": spec.name if spec and key != "duplicate_fraction" else key.replace("_", " "),
                           "better": KEYS.BETTER_PHRASE.get(spec.better, "") if spec and spec.better else "",
                           "w": _W, "h": _H, "empty": not ys, "values": vals}
    if not ys:
        return out
    lo, hi = min(ys), max(ys)
    if hi - lo < 1e-12:
        pad = abs(hi) * 0.1 or 0.5
        lo, hi = lo - pad, hi + pad
    else:
        pad = (hi - lo) * 0.08
        lo, hi = lo - pad, hi + pad
    x0, x1, y0, y1 = _PL, _W - _PR, _H - _PB, _PT

    def X(i: int) -> float:
        return round(x0 + xs[i] * (x1 - x0), 2)

    def Y(v: float) -> float:
        return round(y0 + (v - lo) / (hi - lo) * (y1 - y0), 2)

    segs, cur = [], []
    for i, v in enumerate(vals):
        if v is None:
            if cur:
                segs.append(cur)
            cur = []
        else:
            cur.append(f"{X(i)},{Y(v)}")
    if cur:
        segs.append(cur)
    band_polys, run = [], []
    for i, b in enumerate(bands + [None]):
        if b is not None:
            run.append(i)
            continue
        if run:
            top = [f"{X(j)},{Y(bands[j][1])}" for j in run]
            bot = [f"{X(j)},{Y(bands[j][0])}" for j in reversed(run)]
            if len(run) == 1:  # a lone interval: a short vertical bar
                j = run[0]
                top = [f"{X(j) - 2},{Y(bands[j][1])}", f"{X(j) + 2},{Y(bands[j][1])}"]
                bot = [f"{X(j) + 2},{Y(bands[j][0])}", f"{X(j) - 2},{Y(bands[j][0])}"]
            band_polys.append(" ".join(top + bot))
        run = []
    points = [{"x": X(i), "y": Y(v), "v": v, "step": steps[i], "name": cps[i].get("name"),
               "band": bands[i], "t": i} for i, v in enumerate(vals) if v is not None]
    out.update({
        "segments": [" ".join(s) for s in segs],
        "bands": band_polys,
        "points": points,
        "yticks": [{"y": Y(v), "v": v} for v in _nice_ticks(lo, hi)],
        "xticks": _xticks(xs, steps, X),
        "x0": x0, "x1": x1, "y0": y0, "y1": y1,
        "onset_x": X(onset_t) if onset_t is not None else None,
        "best_x": X(best_t) if best_t is not None else None,
    })
    return out


def _xticks(xs: list[float], steps: list, X) -> list[dict]:
    n = len(xs)
    if n == 0:
        return []
    want = sorted({0, n - 1} | ({(n - 1) // 2} if n > 4 else set()))
    return [{"x": X(i), "label": steps[i], "anchor": "end" if i == n - 1 and n > 1 else ("start" if i == 0 and n > 1 else "middle")}
            for i in want]


def _x_positions(steps: list) -> list[float]:
    """Checkpoint x positions in [0, 1]: proportional to the step when every step is a number, else evenly spaced."""
    n = len(steps)
    nums = [_finite(s) for s in steps]
    if n <= 1:
        return [0.5] * n
    if all(v is not None for v in nums) and max(nums) > min(nums):
        a, b = min(nums), max(nums)
        return [(v - a) / (b - a) for v in nums]
    return [i / (n - 1) for i in range(n)]


# --------------------------------------------------------------------------- heatmap
def _heatmap(track: dict, cps: list[dict], run: dict, thumbs: _Thumbs) -> dict:
    cl = track.get("clusters") or {}
    K = int(_finite(cl.get("k")) or len(_as_list(cl.get("real_share"))))
    real_share = _as_list(cl.get("real_share"))
    n_real = _as_list(cl.get("n_real"))
    exemplars = _as_list(cl.get("real_exemplars"))
    hopping = run.get("hopping") if isinstance(run.get("hopping"), dict) else {}
    hop = {int(h["id"]): h for h in _as_list(hopping.get("clusters")) if isinstance(h, dict) and _finite(h.get("id")) is not None}
    never = {int(b) for b in _as_list(run.get("never_learned")) if _finite(b) is not None}
    statuses = [_as_list((cp.get("clusters") or {}).get("status")) for cp in cps]
    rows = []
    for b in range(K):
        rs = _finite(_at(real_share, b))
        first_drop = next((t for t, st in enumerate(statuses) if _at(st, b) == "dropped"), None)
        cells = []
        for t, cp in enumerate(cps):
            c = cp.get("clusters") or {}
            gs = _finite(_at(c.get("gen_share"), b))
            st = _status(_at(c.get("status"), b))
            ng = _at(c.get("n_gen"), b)
            ratio = gs / rs if gs is not None and rs else None
            dropped = st == "dropped"
            cells.append({"t": t, "status": st, "dropped": dropped, "gen": gs, "n_gen": ng, "ratio": ratio,
                          "fill": "#111111" if dropped else ratio_colour(ratio)})
        ex = []
        for p in _as_list(_at(exemplars, b))[:6]:
            ex.append({"path": str(p), "src": thumbs(p)})
        kind = "hopping" if b in hop else ("never" if b in never else ("dropped" if first_drop is not None else "steady"))
        rows.append({"id": b, "real_share": rs, "n_real": _at(n_real, b), "cells": cells, "exemplars": ex, "kind": kind,
                     "hop": hop.get(b), "first_drop": first_drop,
                     "n_dropped": sum(1 for st in statuses if _at(st, b) == "dropped")})
    rank = {"hopping": 0, "dropped": 1, "steady": 2, "never": 3}
    big = len(cps) + 1
    rows.sort(key=lambda r: (rank[r["kind"]], r["first_drop"] if r["first_drop"] is not None else big, r["id"]))
    legend = [{"label": lab, "fill": ratio_colour(v)} for lab, v in
              (("\u2264 1/8", 0.125), ("1/4", 0.25), ("1/2", 0.5), ("1", 1.0), ("2", 2.0), ("4", 4.0), ("\u2265 8", 8.0))]
    return {"k": K, "rows": rows, "legend": legend}


# --------------------------------------------------------------------------- classes
def _classes(cps: list[dict]) -> dict | None:
    have = [cp for cp in cps if isinstance(cp.get("classes"), dict)]
    if not have:
        return None
    names: list[str] = []
    for cp in have:
        for n in _as_list(cp["classes"].get("names")):
            if str(n) not in names:
                names.append(str(n))
    rows = []
    for n in names:
        real = None
        cells = []
        for cp in cps:
            c = cp.get("classes") if isinstance(cp.get("classes"), dict) else None
            idx = [str(x) for x in _as_list(c.get("names"))].index(n) if c and n in [str(x) for x in _as_list(c.get("names"))] else None
            if idx is None:
                cells.append(None)
                continue
            real = real if real is not None else _finite(_at(c.get("real_share"), idx))
            ci = _at(c.get("gen_share_ci"), idx)
            cells.append({"gen": _finite(_at(c.get("gen_share"), idx)), "status": _status(_at(c.get("status"), idx)),
                          "ci": ci if isinstance(ci, (list, tuple)) and len(ci) == 2 else None})
        rows.append({"name": n, "real": real, "cells": cells})
    return {"rows": rows, "summary": None}


def _class_run(run: dict, labels) -> dict | None:
    """The run's class findings (``run.classes``) as display strings; None when absent or malformed."""
    c = run.get("classes")
    if not isinstance(c, dict):
        return None
    lost = [x for x in _as_list(c.get("lost")) if isinstance(x, dict)]
    lab = labels if isinstance(labels, dict) else {}
    agree = _finite(lab.get("classifier_agreement"))
    return {"dropped_final": [str(x) for x in _as_list(c.get("dropped_final"))],
            "lost": [{"name": str(x.get("name")), "since": x.get("dropped_since_step")} for x in lost],
            "never_learned": [str(x) for x in _as_list(c.get("never_learned"))],
            "hopping": [str(x.get("name")) for x in _as_list(c.get("hopping")) if isinstance(x, dict)],
            "basis": str(c.get("basis") or ""),
            "source": f"real: {lab.get('real')}, generated: {lab.get('gen')}" if lab else "",
            "agreement": agree}


# --------------------------------------------------------------------------- view model
def _view_model(track: dict, base_dir: Path | None, thumb_px: int) -> dict:
    cps = [cp for cp in _as_list(track.get("checkpoints")) if isinstance(cp, dict)]
    run = track.get("run") if isinstance(track.get("run"), dict) else {}
    real = track.get("real") if isinstance(track.get("real"), dict) else {}
    config = track.get("config") if isinstance(track.get("config"), dict) else {}
    extra = []
    if base_dir is not None and real.get("source"):
        src = Path(str(real["source"]))
        extra.append(src if src.is_absolute() else Path(base_dir) / src)
    thumbs = _Thumbs(base_dir, thumb_px, extra)
    steps = [cp.get("step") for cp in cps]
    xs = _x_positions(steps)
    onset = dict(run["onset"]) if isinstance(run.get("onset"), dict) else None
    if onset is not None:
        onset["reasons"] = [dict(r, clusters=_as_list(r.get("clusters"))) for r in _as_list(onset.get("reasons")) if isinstance(r, dict)]
    best = run.get("best_checkpoint") if isinstance(run.get("best_checkpoint"), dict) else None

    def t_of(d):
        t = _finite((d or {}).get("checkpoint"))
        return int(t) if t is not None and 0 <= int(t) < len(cps) else None

    onset_t, best_t = t_of(onset), t_of(best)
    charts = [_chart(k, a, xs, steps, cps, onset_t, best_t) for k, a in TIMELINE_METRICS]
    frames = []
    for t, cp in enumerate(cps):
        imgs = [{"path": str(p), "src": thumbs(p)} for p in _as_list(cp.get("samples"))[:16]]
        frames.append({"t": t, "name": cp.get("name"), "step": cp.get("step"), "images": imgs,
                       "n_covered": (cp.get("clusters") or {}).get("n_covered"),
                       "coverage": (cp.get("metrics") or {}).get("coverage"),
                       "onset": t == onset_t, "best": t == best_t})
    hopping = run.get("hopping") if isinstance(run.get("hopping"), dict) else {}
    basis = [(label, text) for label, text in (
        ("onset", run.get("onset_basis")),
        ("hopping", hopping.get("basis")),
        ("best checkpoint", (best or {}).get("criterion")),
        ("tail loss", (run.get("tail_loss") or {}).get("basis") if isinstance(run.get("tail_loss"), dict) else None),
    ) if text]
    alerts = [a for a in _as_list(run.get("alerts")) if isinstance(a, dict)]
    alerts.sort(key=lambda a: a.get("severity") != "error")
    return {
        "t": track,
        "tool": track.get("tool") or {},
        "run": run,
        "real": real,
        "config": config,
        "cps": cps,
        "steps": steps,
        "n_checkpoints": len(cps),
        "alerts": alerts,
        "onset": onset,
        "onset_t": onset_t,
        "best": best,
        "best_t": best_t,
        "hopping": hopping,
        "hop_clusters": [h for h in _as_list(hopping.get("clusters")) if isinstance(h, dict)],
        "never_learned": _as_list(run.get("never_learned")),
        "tail_loss": run.get("tail_loss") if isinstance(run.get("tail_loss"), dict) else None,
        "final": run.get("final") if isinstance(run.get("final"), dict) else {},
        "basis": basis,
        "charts": charts,
        "heat": _heatmap(track, cps, run, thumbs),
        "frames": frames,
        "classes": _classes(cps),
        "class_run": _class_run(run, track.get("labels")),
        "alpha": _finite(run.get("alpha", config.get("alpha"))),
        "gate": track.get("gate") if isinstance(track.get("gate"), dict) else None,
        "has_images": base_dir is not None,
    }


# --------------------------------------------------------------------------- render / write
def render_track_html(track: dict, *, base_dir: Path | None = None, thumb_px: int = 64) -> str:
    """The self-contained ``track.html`` of a track.json dict, as a string.

    ``base_dir``: the folder the image paths of ``track.json`` are relative to
    (the tracker's output folder); sample grids and cluster exemplars are
    embedded as JPEG data URIs (longest side ``thumb_px``) when their files
    exist there, and listed by name otherwise. ``None``: no file is read.
    Heatmap colours are ``log2(gen_share / real_share)`` clamped to
    ``[-3, 3]`` on the diverging PuOr scale; the cluster status in every cell
    is the scan's NDB rule (Richardson & Weiss 2018) as recorded in track.json.
    """
    env = template_environment()
    for name in ("num", "pct"):  # numbers of track.json may be missing or of the wrong type: shown as '-'
        env.filters[name] = _numbers_only(env.filters[name])
    vm = _view_model(track, Path(base_dir) if base_dir is not None else None, thumb_px)
    return env.get_template("track.html.j2").render(**vm)


def write_track_html(track: dict, path: Path, *, base_dir: Path | None = None) -> Path:
    """Render :func:`render_track_html` and write it to ``path`` atomically (temp file + rename); return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    html = render_track_html(track, base_dir=base_dir)
    return write_atomic(out, html, what="the track report")
