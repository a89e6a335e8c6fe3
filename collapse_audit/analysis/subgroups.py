"""Subgroup representation gaps: are groups of an attribute (from a manifest, or perceived
by CLIP zero-shot) under-represented or dropped in the generated data, and are they
generated as well as the others?

Shares are compared exactly as classes are (:func:`collapse_audit.analysis.classes.compare_categories`:
Newcombe 1998 interval of the difference, Katz 1978 ratio interval, pooled
two-proportion z-test, Benjamini-Hochberg q-values within the attribute,
same ``dropped`` / ``under`` / ``over`` rule). Per group, quality is measured
on the group alone: precision (Kynkaanniemi et al. 2019) and coverage (Naeem
et al. 2020) of the generated images of that group against the real images
of that group, so a model that renders a group badly is visible even when
its share is right.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..metrics import prdc
from .classes import compare_categories

PERCEIVED_NOTE = "perceived, estimated by a model (zero-shot CLIP); not a ground-truth attribute"
MANIFEST_NOTE = "from the manifest, as recorded"
SOURCES = ("manifest", "zero-shot")


def _cross(a: Sequence[str | None], b: Sequence[str | None]) -> list[str | None]:
    return [None if x is None or y is None else f"{x}&{y}" for x, y in zip(a, b)]


def _group_quality(real_feats, gen_feats, real_lab, gen_lab, group: str, k: int) -> tuple[float | None, float | None]:
    mr = np.array([lab == group for lab in real_lab], dtype=bool)
    mg = np.array([lab == group for lab in gen_lab], dtype=bool)
    if mr.sum() <= k or mg.sum() <= k:
        return None, None
    r = prdc(real_feats[mr], gen_feats[mg], k=k)
    return float(r.precision), float(r.coverage)


def subgroup_gaps(
    real_attrs: dict[str, list[str | None]],
    gen_attrs: dict[str, list[str | None]],
    *,
    sources: dict[str, str],
    real_feats: np.ndarray | None = None,
    gen_feats: np.ndarray | None = None,
    k: int = 5,
    alpha: float = 0.05,
    intersections: Sequence[tuple[str, str]] = (),
    min_expected: float = 5.0,
    group_order: dict[str, list[str]] | None = None,
) -> dict:
    """The ``subgroups`` section of results.json.

    For every attribute (and every intersection ``(a, b)``, reported as an
    attribute named ``"a×b"`` with groups ``"ga&gb"``) and every group:
    shares, Newcombe (1998) difference interval, Katz (1978) ratio interval,
    z-test p, Benjamini-Hochberg q within the attribute, status (as for
    classes), and the group's precision (Kynkaanniemi et al. 2019) and
    coverage (Naeem et al. 2020) from :func:`collapse_audit.metrics.prdc`
    on that group's real vs generated features, when features are given and
    both sides have more than ``k`` images of the group (else ``null``).

    Parameters
    ----------
    real_attrs, gen_attrs : attribute -> one value per image (``None`` = unknown);
        every attribute must be on both sides.
    sources : attribute -> "manifest" | "zero-shot". Zero-shot attributes are
        ``perceived: true`` with a note saying so; an intersection is
        perceived when either part is.
    real_feats, gen_feats : (N, D) / (M, D) features in image order, for the
        per-group quality (optional).
    group_order : optional attribute -> group names, listed first and always
        present (e.g. the prompts' groups of a zero-shot attribute).

    Returns
    -------
    ``{"attributes": [...], "max_gap", "max_gap_attribute", "dropped": ["attr=group", ...], "alpha", "k"}``;
    overall ``max_gap`` and ``dropped`` include the intersections.
    """
    missing = [a for a in real_attrs if a not in gen_attrs] + [a for a in gen_attrs if a not in real_attrs]
    if missing:
        raise ValueError(f"attributes known on one side only: {', '.join(sorted(set(missing)))}")
    for a in real_attrs:
        if sources.get(a) not in SOURCES:
            raise ValueError(f"attribute {a!r}: source must be one of {SOURCES}, not {sources.get(a)!r}")
    for a, b in intersections:
        if a not in real_attrs or b not in real_attrs or a == b:
            raise ValueError(f"intersection ({a!r}, {b!r}) needs two different known attributes")
    with_quality = real_feats is not None and gen_feats is not None
    if with_quality:
        real_feats, gen_feats = np.asarray(real_feats), np.asarray(gen_feats)
    order = dict(group_order or {})

    todo: list[tuple[str, list, list, list[str], list[str] | None]] = []
    for a in real_attrs:
        todo.append((a, list(real_attrs[a]), list(gen_attrs[a]), [a], order.get(a)))
    for a, b in intersections:
        combos = None
        if a in order and b in order:
            combos = [f"{x}&{y}" for x in order[a] for y in order[b]]
        todo.append(
            (f"{a}×{b}", _cross(real_attrs[a], real_attrs[b]), _cross(gen_attrs[a], gen_attrs[b]), [a, b], combos)
        )

    attributes, dropped_all = [], []
    best_gap, best_attr = None, None
    for name, rl, gl, parts, cats in todo:
        if with_quality and (len(rl) != real_feats.shape[0] or len(gl) != gen_feats.shape[0]):
            raise ValueError(f"attribute {name!r}: {len(rl)}/{len(gl)} values but {real_feats.shape[0]}/{gen_feats.shape[0]} feature rows")
        perceived_parts = [p for p in parts if sources[p] == "zero-shot"]
        perceived = bool(perceived_parts)
        if not perceived:
            note = MANIFEST_NOTE
        elif len(parts) == 1:
            note = PERCEIVED_NOTE
        else:
            note = f"{', '.join(perceived_parts)} {PERCEIVED_NOTE}"
        head = {"name": name, "source": "zero-shot" if perceived else "manifest", "perceived": perceived, "note": note, "parts": parts}
        try:
            t = compare_categories(rl, gl, categories=cats, alpha=alpha, min_expected=min_expected)
        except ValueError as e:  # one side has no known value: nothing to compare
            attributes.append({**head, "skipped": str(e), "groups": [], "max_gap": None, "max_gap_group": None, "dropped": [], "under": [], "over": []})
            continue
        groups = []
        for row in t["rows"]:
            g = {k_: v for k_, v in row.items() if k_ not in ("expected_gen",)}
            g["precision"], g["coverage"] = (
                _group_quality(real_feats, gen_feats, rl, gl, row["name"], k) if with_quality else (None, None)
            )
            groups.append(g)
        attributes.append(
            {
                **head,
                "n_labelled": t["n_labelled"],
                "n_unlabelled": t["n_unlabelled"],
                "chi2": t["chi2"],
                "groups": groups,
                "max_gap": t["max_gap"],
                "max_gap_group": t["max_gap_name"],
                "dropped": t["dropped"],
                "under": t["under"],
                "over": t["over"],
            }
        )
        dropped_all += [f"{name}={g}" for g in t["dropped"]]
        if best_gap is None or t["max_gap"] > best_gap:
            best_gap, best_attr = t["max_gap"], name
    return {
        "attributes": attributes,
        "max_gap": best_gap,
        "max_gap_attribute": best_attr,
        "dropped": dropped_all,
        "alpha": float(alpha),
        "k": int(k),
    }
