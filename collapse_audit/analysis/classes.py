"""Per-class dropout: which classes of the real data the generator under-produces or drops.

For every class the generated share is compared with the real share:

- Wilson score interval of the generated share (Wilson 1927);
- Newcombe hybrid score interval of the difference gen - real (Newcombe 1998, method 10);
- Katz log interval of the ratio gen / real (Katz et al. 1978);
- pooled two-proportion z-test, Benjamini-Hochberg q-values across classes
  (the per-bin test of NDB, Richardson & Weiss 2018);
- Pearson chi-square goodness of fit of the generated counts against the
  real proportions (``chi2``; it treats the real proportions as known, so
  with a real sample no larger than the generated one it is anti-conservative:
  the statistic roughly doubles under H0 for equal sizes), and the Pearson
  test of homogeneity of the 2 x C table (``chi2_homogeneity``), which
  accounts for the sampling noise of both sides.

Status of a class (``alpha`` = FDR level):

- ``dropped``: the real data supports the class (expected generated count
  ``real_share * n_gen >= min_expected``), its generated share is zero or
  negligible (``gen_share <= NEGLIGIBLE_RATIO * real_share``, i.e. at most a
  tenth of the real share) and ``q < alpha``;
- ``under`` / ``over``: significantly lower / higher (``q < alpha``);
- ``ok`` otherwise.

A class seen only in the generated data (no real support) is listed with
status ``over`` and ``note`` "not present in the real data".
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from .stats import (
    benjamini_hochberg,
    chi_square_gof,
    newcombe_diff_interval,
    ratio_interval,
    two_proportion_ztest,
    wilson_interval,
)

#: A generated share at most this fraction of the real share counts as "negligible" (dropped).
NEGLIGIBLE_RATIO = 0.1
GEN_ONLY_NOTE = "not present in the real data"


def _f(x) -> float:
    return float(x)


def _homogeneity(kr: np.ndarray, kg: np.ndarray) -> tuple[float, float, int]:
    """Pearson chi-square test of homogeneity on the 2 x C table (real, gen) x category (no continuity correction)."""
    from scipy.stats import chi2_contingency

    keep = (kr + kg) > 0
    if keep.sum() < 2:
        return 0.0, 1.0, 0
    res = chi2_contingency(np.stack([kr[keep], kg[keep]]), correction=False)
    return float(res.statistic), float(res.pvalue), int(res.dof)


def compare_categories(
    real_labels: Sequence[str | None],
    gen_labels: Sequence[str | None],
    *,
    categories: Sequence[str] | None = None,
    alpha: float = 0.05,
    min_expected: float = 5.0,
    negligible_ratio: float = NEGLIGIBLE_RATIO,
) -> dict:
    """Per-category share comparison of two labelled samples (the shared core of classes and subgroups).

    Labels ``None`` are unknown and excluded. Category order: ``categories``
    first (as given), then other real categories, then generated-only ones
    (each sorted by name). Returns ``{"rows": [...], "n_labelled": {real,
    gen}, "n_unlabelled": {real, gen}, "chi2": {...}, "dropped", "under",
    "over", "max_gap", "max_gap_name"}``; see the module docstring for the
    statistics and the status rule. Raises ``ValueError`` when either side
    has no labelled sample.
    """
    rc = Counter(lab for lab in real_labels if lab is not None)
    gc = Counter(lab for lab in gen_labels if lab is not None)
    n_real, n_gen = sum(rc.values()), sum(gc.values())
    if n_real == 0 or n_gen == 0:
        side = "real" if n_real == 0 else "generated"
        raise ValueError(f"no {side} image has a known label")
    order = list(dict.fromkeys(categories or []))
    seen = set(order)
    order += sorted(c for c in rc if c not in seen)
    seen = set(order)
    order += sorted(c for c in gc if c not in seen)

    kr = np.array([rc.get(c, 0) for c in order], dtype=np.float64)
    kg = np.array([gc.get(c, 0) for c in order], dtype=np.float64)
    ps_r, ps_g = kr / n_real, kg / n_gen
    glo, ghi = wilson_interval(kg, n_gen, alpha)
    dlo, dhi = newcombe_diff_interval(kg, n_gen, kr, n_real, alpha)
    rlo, rhi = ratio_interval(kg, n_gen, kr, n_real, alpha)
    z, p = two_proportion_ztest(kg, n_gen, kr, n_real)
    q = benjamini_hochberg(p)
    stat, chi_p, dof = chi_square_gof(kg, ps_r)
    h_stat, h_p, h_dof = _homogeneity(kr, kg)

    rows, dropped, under, over = [], [], [], []
    for i, c in enumerate(order):
        sig = bool(q[i] < alpha)
        row = {
            "name": c,
            "n_real": int(kr[i]),
            "n_gen": int(kg[i]),
            "real_share": _f(ps_r[i]),
            "gen_share": _f(ps_g[i]),
            "gen_share_ci": [_f(glo[i]), _f(ghi[i])],
            "diff": _f(ps_g[i] - ps_r[i]),
            "diff_ci": [_f(dlo[i]), _f(dhi[i])],
            "ratio": _f(ps_g[i] / ps_r[i]) if kr[i] > 0 else None,
            "ratio_ci": [_f(rlo[i]), _f(rhi[i])] if kr[i] > 0 else None,
            "expected_gen": _f(ps_r[i] * n_gen),
            "z": _f(z[i]),
            "p": _f(p[i]),
            "q": _f(q[i]),
        }
        if kr[i] == 0 and kg[i] > 0:
            status = "over"
            row["note"] = GEN_ONLY_NOTE
        elif (
            sig
            and ps_r[i] * n_gen >= min_expected
            and ps_g[i] <= negligible_ratio * ps_r[i]
        ):
            status = "dropped"
        elif sig:
            status = "under" if ps_g[i] < ps_r[i] else "over"
        else:
            status = "ok"
        row["status"] = status
        {"dropped": dropped, "under": under, "over": over}.get(status, []).append(c)
        rows.append(row)
    gaps = np.abs(ps_g - ps_r)
    j = int(np.argmax(gaps)) if gaps.size else None
    return {
        "rows": rows,
        "n_labelled": {"real": int(n_real), "gen": int(n_gen)},
        "n_unlabelled": {
            "real": int(sum(1 for lab in real_labels if lab is None)),
            "gen": int(sum(1 for lab in gen_labels if lab is None)),
        },
        "chi2": {"statistic": _f(stat), "p": _f(chi_p), "dof": int(dof)},
        "chi2_homogeneity": {"statistic": _f(h_stat), "p": _f(h_p), "dof": int(h_dof)},
        "dropped": dropped,
        "under": under,
        "over": over,
        "max_gap": _f(gaps[j]) if j is not None else 0.0,
        "max_gap_name": order[j] if j is not None else None,
    }


def class_dropout(
    real_labels: Sequence[str | None],
    gen_labels: Sequence[str | None],
    *,
    classes: Sequence[str] | None = None,
    alpha: float = 0.05,
    source: str,
    labels_known: dict,
    classifier: dict | None = None,
    min_expected: float = 5.0,
) -> dict:
    """The ``classes`` section of results.json: per-class shares, intervals, tests and dropout status.

    Statistics: Wilson (1927) interval of the generated share, Newcombe
    (1998, method 10) interval of gen - real, Katz (1978) log interval of
    gen / real, pooled two-proportion z-test with Benjamini-Hochberg (1995)
    q-values across classes, Pearson chi-square goodness of fit of the
    generated counts against the real proportions (classes absent from the
    real data cannot be tested by it and are left out of it). Status rule:
    see the module docstring (``dropped`` needs ``real_share * n_gen >=
    min_expected``, ``gen_share <= 0.1 * real_share`` and ``q < alpha``).

    Parameters
    ----------
    real_labels, gen_labels : one label per image; ``None`` = unknown (excluded, counted in ``n_unlabelled``).
    classes : optional class list (e.g. zero-shot classes); listed first and
        always present, even with zero counts.
    source : "manifest" | "folders" | "zero-shot" | "torchscript" | "knn".
    labels_known : ``{"real": bool, "gen": bool}`` — which sides had labels
        before any classifier ran.
    classifier : ``None`` or ``{"kind", "id", "agreement", "n_checked", "note"}``.
    """
    t = compare_categories(real_labels, gen_labels, categories=classes, alpha=alpha, min_expected=min_expected)
    return {
        "source": source,
        "labels_known": {"real": bool(labels_known.get("real")), "gen": bool(labels_known.get("gen"))},
        "classifier": classifier,
        "alpha": float(alpha),
        "min_expected": float(min_expected),
        "negligible_ratio": NEGLIGIBLE_RATIO,
        "n_labelled": t["n_labelled"],
        "n_unlabelled": t["n_unlabelled"],
        "classes": t["rows"],
        "chi2": t["chi2"],
        "chi2_homogeneity": t["chi2_homogeneity"],
        "dropped": t["dropped"],
        "under": t["under"],
        "over": t["over"],
        "max_gap": t["max_gap"],
        "max_gap_class": t["max_gap_name"],
    }
