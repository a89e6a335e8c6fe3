"""``collapse-audit compare OLD NEW``: what improved and what regressed between two scans.

Typical use: two releases of a synthetic dataset, or two checkpoints of a
generator, scanned against the same real data. Each metric is classified by
its direction (FID/KID lower is better; precision, recall, coverage higher;
density closer to 1; dropped clusters/classes/subgroups, near-duplicate and
memorized fractions lower) with a small tolerance, so noise-level changes
read as ``unchanged``. Numbers are only comparable when both scans used the
same embedders (same weights, same preprocessing): when they did not, the
comparison says so loudly.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from . import keys as K
from .errors import InputError
from .report import template_environment, write_html

__all__ = ["METRICS", "load_results", "compare_results", "render_compare"]

def _getter(path: str, reduce: str = "value") -> tuple:
    return tuple(path.split(".")) + (("#len",) if reduce == "len" else ())


# (name, getter path, direction, tolerance, label): the compared numbers of the one table (keys.METRICS).
# direction: "lower" | "higher" | "one" (closer to 1 is better); tolerance "std": getter of the spread
METRICS = [
    (s.alias, _getter(s.path, s.reduce), s.better,
     {"rel": s.compare_rel, "abs": s.compare_abs,
      **({"std": _getter(s.path.rsplit(".", 1)[0] + "." + s.spread)} if s.spread else {})},
     s.name)
    for s in K.COMPARED
]


def load_results(path: str | os.PathLike) -> dict:
    """Read a results.json (or the output folder holding one); :class:`InputError` otherwise."""
    p = Path(path)
    if p.is_dir():
        if not (p / "results.json").is_file():
            raise InputError(f"{p}: no results.json in this folder (give the scan's --out folder or its results.json)")
        p = p / "results.json"
    if not p.is_file():
        raise InputError(f"{p}: no such file (give a results.json or the scan's output folder)")
    try:
        res = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: cannot be read ({e})") from None
    except ValueError as e:
        raise InputError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(res, dict) or "metrics" not in res or "schema_version" not in res:
        raise InputError(f"{p}: not a collapse-audit results.json (no schema_version/metrics)")
    return res


def _get(results: dict, path: tuple) -> float | None:
    cur = results
    for key in path:
        if key == "#len":
            return float(len(cur)) if isinstance(cur, list) else None
        if not isinstance(cur, dict) or cur.get(key) is None:
            return None
        cur = cur[key]
    if isinstance(cur, bool) or not isinstance(cur, (int, float)):
        return None
    v = float(cur)
    return v if math.isfinite(v) else None


def _verdict(old: float | None, new: float | None, direction: str, tol: dict, old_std=None, new_std=None) -> str:
    if old is None or new is None:
        return "n/a"
    t = max(tol.get("abs", 0.0), tol.get("rel", 0.0) * max(abs(old), abs(new)))
    if tol.get("std") and (old_std or new_std):
        t = max(t, math.hypot(old_std or 0.0, new_std or 0.0))
    if direction == "one":
        a, b = abs(old - 1.0), abs(new - 1.0)
        change = a - b  # > 0: new closer to 1
    elif direction == "lower":
        change = old - new
    else:
        change = new - old
    if abs(new - old) <= t or abs(change) <= t:
        return "unchanged"
    return "improved" if change > 0 else "regressed"


def _embedders(res: dict) -> list[str]:
    return [e.get("id") for e in res.get("embedders") or [] if e.get("id")] or [res.get("primary_embedder")]


def compare_results(old: dict, new: dict) -> dict:
    """Per metric: old, new, delta (new - old) and improved/regressed/unchanged; plus comparability warnings.

    Directions: FID, KID (Heusel et al. 2017; Binkowski et al. 2018) lower is
    better; precision, recall (Kynkaanniemi et al. 2019) and coverage (Naeem
    et al. 2020) higher; density (Naeem et al. 2020) closer to 1; counts of
    dropped clusters (NDB, Richardson & Weiss 2018), classes and subgroups,
    the largest share gaps, and the near-duplicate / memorized fractions
    lower. A change within the metric's tolerance (or, for KID, within the
    two runs' combined subset standard deviation) is ``unchanged``.
    Metrics missing on either side are ``n/a``.
    """
    rows = []
    for name, path, direction, tol, label in METRICS:
        o, n = _get(old, path), _get(new, path)
        os_ = _get(old, tol["std"]) if tol.get("std") else None
        ns_ = _get(new, tol["std"]) if tol.get("std") else None
        rows.append({
            "name": name,
            "label": label,
            "better": {"lower": "lower", "higher": "higher", "one": "closer to 1"}[direction],
            "old": o,
            "new": n,
            "delta": None if o is None or n is None else n - o,
            "verdict": _verdict(o, n, direction, tol, os_, ns_),
        })
    warnings = []
    eo, en = _embedders(old), _embedders(new)
    same_primary = old.get("primary_embedder") == new.get("primary_embedder")
    if not same_primary or eo != en:
        warnings.append(
            "EMBEDDERS DIFFER: old used " + ", ".join(map(str, eo)) + "; new used " + ", ".join(map(str, en))
            + ". Feature-based numbers (FID, KID, precision, recall, density, coverage, clusters, duplicates) "
              "are NOT comparable between these scans."
        )
    for label, key in (("real", "real"), ("generated", "gen")):
        so = ((old.get("inputs") or {}).get(key) or {})
        sn = ((new.get("inputs") or {}).get(key) or {})
        if key == "real" and so.get("source") and sn.get("source") and so.get("source") != sn.get("source"):
            warnings.append(f"the real data differ (old: {so.get('source')}, new: {sn.get('source')}): "
                            "comparisons are only meaningful against the same real set.")
        if so.get("n_images") and sn.get("n_images") and so["n_images"] != sn["n_images"]:
            warnings.append(f"{label} sample sizes differ ({so['n_images']} vs {sn['n_images']}): FID and KID are biased "
                            "by sample size; compare them at equal N.")
    if any(e.get("random_weights") for r in (old, new) for e in r.get("embedders") or []):
        warnings.append("random weights in at least one scan: numbers are comparable only with the same seed.")
    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("improved", "regressed", "unchanged", "n/a")}
    return {
        "comparable": not warnings or not warnings[0].startswith("EMBEDDERS DIFFER"),
        "warnings": warnings,
        "rows": rows,
        "counts": counts,
        "old": _summary(old),
        "new": _summary(new),
    }


def _summary(res: dict) -> dict:
    ins = res.get("inputs") or {}
    gate = res.get("gate") or {}
    return {
        "created_at": res.get("created_at"),
        "gen": (ins.get("gen") or {}).get("source"),
        "real": (ins.get("real") or {}).get("source"),
        "n_gen": (ins.get("gen") or {}).get("n_images"),
        "n_real": (ins.get("real") or {}).get("n_images"),
        "primary_embedder": res.get("primary_embedder"),
        "embedders": _embedders(res),
        "gate_passed": gate.get("passed"),
        "version": (res.get("tool") or {}).get("version"),
    }


def render_compare(cmp: dict, out_html: str | os.PathLike) -> Path:
    """Write the comparison as one self-contained HTML file (same style as the report); return its path."""
    return write_html(template_environment().get_template("compare.html.j2").render(c=cmp), out_html)
