"""Statistics over a tracked training run: the ``run`` section of ``track.json``.

Pure NumPy/SciPy on per-checkpoint numbers (no FAISS, no torch): the tracker
computes, per checkpoint ``t = 0..T-1`` (in run order), the scan's metrics with
standard errors and the generated count of every real cluster; this module
turns those into

- the **onset** of collapse (:func:`detect_onset`): the first checkpoint where
  coverage fell significantly below an earlier checkpoint, or a
  cluster covered earlier is now significantly under-drawn to the point of
  being dropped, with the run's family-wise false-alarm rate held at ``alpha``
  however many checkpoints arrive (an alpha-spending Bonferroni scheme, below);
- **mode hopping** (:func:`mode_hopping`): clusters that come and go;
- **never-learned** clusters (:func:`never_learned`);
- the **best checkpoint** (:func:`best_checkpoint`);
- **tail loss** over model generations (:func:`tail_loss`): are the rarest
  clusters the ones lost first? (one-sided Mann-Whitney U test);
- **alerts**, one line each, for a human and for a gate.

A cluster is *covered* at a checkpoint when the scan's NDB rule
(:func:`collapse_audit.analysis.clusters.bin_test`, Richardson & Weiss 2018,
with Benjamini-Hochberg) does not call it ``dropped`` there
(:func:`covered_matrix`).

Onset: false-alarm control without a horizon
---------------------------------------------
The answer at checkpoint ``t`` must not change when later checkpoints arrive (a
streaming tracker and the batch command agree), so no test may depend on the
run's final length ``T``. The budget ``alpha`` is halved between metric tests
and cluster tests and spent over checkpoints as

    alpha_t = (alpha / 2) / (t (t + 1)),   t = 1, 2, ...   (sum over t >= 1: alpha / 2)

- Metric test at ``t`` for ``m`` in :data:`ONSET_METRICS` (coverage),
  ``M = 1``: reference ``s* = argmax_{s < t} v_s``; ``z = (v_s* - v_t) /
  sqrt(se_s*^2 + se_t^2)``, one-sided ``p = 1 - Phi(z)``; fires when
  ``v_s* - v_t >= min_drop`` and ``p < alpha_t / (t M)``. Choosing the best
  earlier checkpoint is one of ``t`` possible references, so the union bound
  over the ``t`` references and the ``M`` metrics bounds the false-alarm
  probability at ``t`` by ``alpha_t``.
- Cluster test at ``t``: for every cluster covered at some checkpoint before
  ``t``, the one-sided p-value of under-representation from the pooled
  two-proportion z-test (generated share at ``t`` against the real share); fires
  when ``p < alpha_t / K`` and the drop conditions of ``bin_test`` hold
  (``real_share * n_gen >= DROP_MIN_EXPECTED`` and ``gen_share <= DROP_RATIO *
  real_share``). The union bound over the ``K`` clusters bounds it by ``alpha_t``.

The onset is the first ``t`` where any test fires. By the union bound over all
tests of all checkpoints, P(any false alarm in a run of any length) <=
``sum_t 2 alpha_t = alpha`` whenever the individual tests are valid (normal
approximations with correct standard errors), whatever the dependence between
checkpoints. Bonferroni is conservative; the measured rate on healthy
simulated runs is well under ``alpha`` (see ``tests/test_trackstats.py``).

References: Bonferroni / Boole union bound; alpha spending over an open-ended
sequence of looks in the spirit of Lan & DeMets (1983), "Discrete sequential
boundaries for clinical trials", Biometrika 70:659-663; Mann & Whitney (1947),
"On a test of whether one of two random variables is stochastically larger
than the other", Ann. Math. Statist. 18:50-60.

Everything returned is JSON-ready: Python ints, floats, bools, strings, lists,
dicts and ``None`` (never NaN or infinity).
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from .analysis.clusters import DROP_MIN_EXPECTED, DROP_RATIO, bin_test
from .analysis.stats import two_proportion_ztest

__all__ = [
    "ONSET_METRICS",
    "Z_BEST",
    "analyse_run",
    "best_checkpoint",
    "class_alerts",
    "class_summary",
    "cluster_test_level",
    "covered_matrix",
    "detect_onset",
    "metric_test_level",
    "mode_hopping",
    "never_learned",
    "onset_level",
    "tail_loss",
]

#: The metrics whose fall marks an onset; ``M = len(ONSET_METRICS)`` in the union bound.
#: Coverage only: the tracker estimates its standard error by resampling the
#: generated set (within 10 % of the spread over fresh draws in
#: tests/test_track.py).  Recall's spread also comes from the generated kNN
#: radii, which that resampling keeps fixed; it underestimated recall's spread
#: by about 25 %, so recall is reported with its interval but not tested.
ONSET_METRICS: tuple[str, ...] = ("coverage",)
#: Normal quantile of the best checkpoint's precision interval (two-sided 95 %).
Z_BEST = 1.96

_ORDERS = ("step", "generation")


def _norm():
    """``scipy.stats.norm``, imported on first use (scipy.stats costs ~1 s to import)."""
    from scipy.stats import norm

    return norm


# --------------------------------------------------------------------------- small helpers
def _num(x) -> float | None:
    """A finite float, or ``None`` for NaN / infinity / missing."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _series(d: Mapping | None, key: str, T: int) -> np.ndarray:
    """``d[key]`` as a (T,) float64 array; all NaN when absent."""
    if d is None or key not in d or d[key] is None:
        return np.full(T, np.nan)
    a = np.asarray(d[key], dtype=np.float64).reshape(-1)
    if a.shape != (T,):
        raise ValueError(f"'{key}' has {a.size} values for {T} checkpoints")
    return np.where(np.isfinite(a), a, np.nan)


def _steps(steps, T: int | None = None) -> list[int]:
    s = [int(x) for x in np.asarray(steps).reshape(-1)]
    if T is not None and len(s) != T:
        raise ValueError(f"{len(s)} steps for {T} checkpoints")
    if any(b <= a for a, b in zip(s, s[1:])):
        raise ValueError("checkpoints must be in run order: steps must be strictly increasing")
    return s


def _ids(ids) -> str:
    return ", ".join(str(int(i)) for i in ids)


def _covered(covered) -> np.ndarray:
    c = np.asarray(covered, dtype=bool)
    if c.ndim != 2:
        raise ValueError(f"covered must be a (T, K) boolean matrix; got shape {c.shape}")
    return c


# --------------------------------------------------------------------------- levels
def onset_level(t: int, alpha: float = 0.05) -> float:
    """The false-alarm budget of checkpoint ``t`` for one family (metrics or clusters).

    ``alpha_t = (alpha / 2) / (t (t + 1))`` for ``t >= 1``; ``0`` for ``t = 0``
    (nothing to compare with). ``sum_{t>=1} alpha_t = alpha / 2`` (telescoping:
    ``1/(t(t+1)) = 1/t - 1/(t+1)``), so the two families together spend at most
    ``alpha`` over a run of any length.
    """
    t = int(t)
    return 0.0 if t < 1 else (float(alpha) / 2.0) / (t * (t + 1))


def metric_test_level(t: int, alpha: float = 0.05, n_metrics: int = len(ONSET_METRICS)) -> float:
    """Per-test level of one metric test at ``t``: ``alpha_t / (t M)`` (``t`` references x ``M`` metrics)."""
    t = int(t)
    return 0.0 if t < 1 else onset_level(t, alpha) / (t * int(n_metrics))


def cluster_test_level(t: int, alpha: float = 0.05, k: int = 1) -> float:
    """Per-test level of one cluster test at ``t``: ``alpha_t / K``."""
    return onset_level(t, alpha) / max(int(k), 1)


# --------------------------------------------------------------------------- clusters
def covered_matrix(cluster_counts, real_counts, alpha: float = 0.05) -> np.ndarray:
    """(T, K) bool: cluster ``b`` is covered at checkpoint ``t`` unless the NDB rule drops it.

    Per checkpoint, :func:`~collapse_audit.analysis.clusters.bin_test` (pooled
    two-proportion z-test per cluster, Benjamini-Hochberg q-values at ``alpha``,
    ``dropped`` when significant, ``real_share * n_gen >= DROP_MIN_EXPECTED`` and
    ``gen_share <= DROP_RATIO * real_share``); covered means status != "dropped".
    """
    counts = np.asarray(cluster_counts, dtype=np.int64)
    if counts.ndim != 2:
        raise ValueError(f"cluster_counts must be (T, K); got shape {counts.shape}")
    real = np.asarray(real_counts, dtype=np.int64).reshape(-1)
    if real.size != counts.shape[1]:
        raise ValueError(f"{real.size} real cluster counts for {counts.shape[1]} clusters")
    out = np.ones(counts.shape, dtype=bool)
    for t in range(counts.shape[0]):
        if counts[t].sum() <= 0:
            raise ValueError(f"checkpoint {t} has no generated samples assigned to clusters")
        out[t] = bin_test(real, counts[t], alpha).status != "dropped"
    return out


def _under_pvalues(cluster_counts: np.ndarray, real_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, K) one-sided p-values of under-representation and the (T, K) drop conditions of bin_test."""
    n_gen = cluster_counts.sum(axis=1, keepdims=True).astype(np.float64)
    n_real = float(real_counts.sum())
    real_share = real_counts / n_real
    gen_share = cluster_counts / n_gen
    z, p2 = two_proportion_ztest(cluster_counts, n_gen, real_counts[None, :], n_real)
    p_under = np.where(z < 0, p2 / 2.0, 1.0 - p2 / 2.0)  # p2 = 2 sf(|z|): p2/2 is the lower tail when z < 0
    cond = (real_share[None, :] * n_gen >= DROP_MIN_EXPECTED) & (gen_share <= DROP_RATIO * real_share[None, :])
    return p_under, cond


# --------------------------------------------------------------------------- onset
def detect_onset(*, steps, names, metrics: Mapping, se: Mapping, cluster_counts, real_counts, covered=None,
                 alpha: float = 0.05, min_drop: float = 0.02) -> dict | None:
    """The first checkpoint where collapse starts, with every reason that fired there; ``None`` if none.

    Horizon-free alpha spending with Bonferroni (see the module docstring):
    checkpoint ``t >= 1`` has budget ``alpha_t = (alpha/2) / (t(t+1))`` per family.

    - Metric (``coverage``): reference ``s* = argmax_{s<t} v_s``
      (among checkpoints with a finite value and standard error; ties: the
      earliest); ``z = (v_s* - v_t) / sqrt(se_s*^2 + se_t^2)``, ``p = 1 - Phi(z)``;
      fires when ``v_s* - v_t >= min_drop`` and ``p < alpha_t / (t M)``. A test
      whose value or standard error is missing, or whose pooled standard error
      is zero, is not run.
    - Clusters: a cluster covered at some checkpoint before ``t`` fires when its
      one-sided under-representation p-value (pooled two-proportion z-test,
      generated share at ``t`` vs real share) is below ``alpha_t / K`` and the
      drop conditions of ``bin_test`` hold at ``t``.

    The decision at ``t`` reads checkpoints ``0..t`` only, so a prefix of the run
    gives the same onset whenever the onset lies inside it. ``covered`` defaults
    to :func:`covered_matrix` at ``alpha``.
    """
    counts = np.asarray(cluster_counts, dtype=np.int64)
    real = np.asarray(real_counts, dtype=np.int64).reshape(-1)
    T, K = counts.shape
    steps = _steps(steps, T)
    names = [str(n) for n in names]
    if len(names) != T:
        raise ValueError(f"{len(names)} names for {T} checkpoints")
    cov = covered_matrix(counts, real, alpha) if covered is None else _covered(covered)
    vals = {m: _series(metrics, m, T) for m in ONSET_METRICS}
    ses = {m: _series(se, m, T) for m in ONSET_METRICS}
    p_under, cond = _under_pvalues(counts, real)
    seen = np.cumsum(cov, axis=0) > 0  # seen[t, b]: covered at some checkpoint <= t
    sf = _norm().sf
    M = len(ONSET_METRICS)
    for t in range(1, T):
        reasons: list[dict] = []
        level = metric_test_level(t, alpha, M)
        for m in ONSET_METRICS:
            v, e = vals[m], ses[m]
            if not (np.isfinite(v[t]) and np.isfinite(e[t])):
                continue
            ok = np.isfinite(v[:t]) & np.isfinite(e[:t])
            if not ok.any():
                continue
            s = int(np.flatnonzero(ok)[np.argmax(v[:t][ok])])  # first maximum among usable ones
            drop = float(v[s] - v[t])
            den = math.sqrt(float(e[s]) ** 2 + float(e[t]) ** 2)
            if drop < min_drop or not den > 0:
                continue
            z = drop / den
            p = float(sf(z))
            if p < level:
                reasons.append({"kind": "metric", "metric": m, "reference_checkpoint": s, "reference_step": steps[s],
                                "value": float(v[t]), "reference_value": float(v[s]), "drop": drop, "z": float(z),
                                "p": p, "level": level})
        c_level = cluster_test_level(t, alpha, K)
        fired = np.flatnonzero(seen[t - 1] & cond[t] & (p_under[t] < c_level))
        if fired.size:
            reasons.append({"kind": "clusters", "clusters": [int(b) for b in fired], "level": c_level})
        if reasons:
            out = {"checkpoint": t, "step": steps[t], "name": names[t], "reasons": reasons}
            out.update(_recovery(t, reasons, cov, vals, steps, min_drop))
            return out
    return None


def _recovery(t: int, reasons: list[dict], cov: np.ndarray, vals: Mapping, steps: list[int], min_drop: float) -> dict:
    """Whether the run got back from the onset at ``t`` and stayed back to its last checkpoint.

    A later checkpoint ``u`` is *back* when every cluster that fired at ``t`` is
    covered at ``u`` and every metric that fired is within ``min_drop`` of its
    reference value. ``recovered_step``: the first ``u`` from which every
    checkpoint to the end is back (None when the last one is not: the collapse
    persists). Read after the fact; the onset itself never depends on it.
    """
    T = cov.shape[0]
    back = np.ones(T, dtype=bool)
    back[: t + 1] = False
    for r in reasons:
        if r["kind"] == "clusters":
            back &= cov[:, r["clusters"]].all(axis=1)
        else:
            v = vals[r["metric"]]
            back &= np.isfinite(v) & (v >= r["reference_value"] - min_drop)
    u = None
    if back[T - 1]:
        u = T - 1
        while u - 1 > t and back[u - 1]:
            u -= 1
    return {"recovered_checkpoint": u, "recovered_step": steps[u] if u is not None else None, "persists": u is None}


def _onset_basis(alpha: float, K: int) -> str:
    return (f"Bonferroni alpha spending with no horizon: checkpoint t >= 1 spends (alpha/2)/(t(t+1)) on one-sided "
            f"z-tests of coverage (standard errors from resampling the generated set) against every earlier checkpoint (each at that over t, drop >= "
            f"min_drop) and as much on one-sided z-tests of every earlier-covered cluster now dropped (each at that "
            f"over K = {K}), so the chance of any false alarm over a run of any length is at most alpha = {alpha:g}.")


# --------------------------------------------------------------------------- hopping
def mode_hopping(covered, steps, oscillating_gap: float = 0.2) -> dict:
    """Clusters that come and go: switches of the covered/dropped status between consecutive checkpoints.

    A switch of cluster ``b`` at checkpoint ``t >= 1`` is ``covered[t, b] !=
    covered[t-1, b]``; a *hopping* cluster has at least two switches (it left and
    came back, or came and left again). ``oscillation = n_switches / (T - 1)``
    (0 for one checkpoint); ``run_oscillation`` is its mean over all clusters.
    ``mean_snapshot_covered_fraction = mean(covered)`` (clusters covered by a
    typical checkpoint), ``union_covered_fraction = mean(any(covered, 0))``
    (clusters covered by some checkpoint). The run *oscillates* when at least two
    clusters hop and the union exceeds the typical snapshot by ``oscillating_gap``:
    the model's support moves around instead of growing.
    """
    c = _covered(covered)
    T, K = c.shape
    steps = _steps(steps, T)
    denom = max(T - 1, 1)
    sw = c[1:] != c[:-1]  # (T-1, K)
    clusters = []
    osc = []
    for b in range(K):
        ts = [int(t) + 1 for t in np.flatnonzero(sw[:, b])]
        osc.append(len(ts) / denom if T > 1 else 0.0)
        if len(ts) >= 2:
            clusters.append({"id": b, "n_switches": len(ts), "switch_steps": [steps[t] for t in ts],
                             "switch_checkpoints": ts, "oscillation": len(ts) / denom,
                             "covered_fraction": float(c[:, b].mean())})
    mean_snap = float(c.mean()) if c.size else 0.0
    union = float(c.any(axis=0).mean()) if K else 0.0
    return {
        "clusters": clusters,
        "run_oscillation": float(np.mean(osc)) if osc else 0.0,
        "mean_snapshot_covered_fraction": mean_snap,
        "union_covered_fraction": union,
        "oscillating": bool(len(clusters) >= 2 and union - mean_snap >= oscillating_gap),
        "basis": (f"a cluster hops when its NDB status changes between covered and dropped at least twice over "
                  f"consecutive checkpoints; the run oscillates when at least two clusters hop and the clusters covered "
                  f"at some checkpoint exceed those covered at a typical checkpoint by {oscillating_gap:g} or more."),
    }


def never_learned(covered) -> list[int]:
    """Ids of the clusters dropped at every checkpoint (NDB rule), for ``T >= 1``; ``[]`` for an empty run."""
    c = _covered(covered)
    if c.shape[0] < 1:
        return []
    return [int(b) for b in np.flatnonzero(~c.any(axis=0))]


# --------------------------------------------------------------------------- best checkpoint
def best_checkpoint(*, steps, names, precision, coverage, precision_se=None) -> dict | None:
    """The checkpoint with the highest coverage among those whose precision is as good as the best.

    Candidates: checkpoints with ``precision_t + 1.96 se_t >= max_s precision_s``
    (their 95 % interval reaches the best precision; without a standard error,
    ``precision_t >= max``). With no finite precision at all, every checkpoint is
    a candidate. Among candidates the highest finite coverage wins; ties go to
    the earliest. ``None`` when no candidate has a finite coverage.
    """
    T = len(names)
    steps = _steps(steps, T)
    names = [str(n) for n in names]
    prec = _series({"p": precision}, "p", T)
    cov = _series({"c": coverage}, "c", T)
    se = _series({"s": precision_se}, "s", T) if precision_se is not None else np.full(T, np.nan)
    if np.isfinite(prec).any():
        best_p = float(np.nanmax(prec))
        reach = prec + np.where(np.isfinite(se), Z_BEST * se, 0.0)
        cand = np.isfinite(prec) & (reach >= best_p)
        crit = ("highest coverage among the checkpoints whose precision (plus 1.96 standard errors where known) "
                "reaches the best precision of the run; ties go to the earliest.")
    else:
        cand = np.ones(T, dtype=bool)
        crit = "highest coverage (no precision was measured); ties go to the earliest."
    cand &= np.isfinite(cov)
    if not cand.any():
        return None
    idx = np.flatnonzero(cand)
    t = int(idx[np.argmax(cov[idx])])  # argmax returns the first maximum: the earliest
    return {"checkpoint": t, "step": steps[t], "name": names[t], "criterion": crit}


# --------------------------------------------------------------------------- tail loss
def tail_loss(covered, real_share, steps, alpha: float = 0.05) -> dict:
    """Clusters lost for good over model generations, and whether the rarest go first.

    Cluster ``b`` is *lost at* ``t`` when it is covered at some checkpoint before
    ``t`` and dropped at ``t`` and at every later checkpoint. *Kept* clusters are
    covered at the first checkpoint and never lost. One-sided Mann-Whitney U test
    (Mann & Whitney 1947, ``scipy.stats.mannwhitneyu``, ``alternative="less"``)
    that the lost clusters' real shares are smaller than the kept clusters';
    ``rarest_first`` when ``p < alpha``. ``p`` is ``None`` (and ``rarest_first``
    False) with no lost or no kept cluster. ``rarity_rank`` 0 is the cluster with
    the smallest real share (ties by id).
    """
    c = _covered(covered)
    T, K = c.shape
    steps = _steps(steps, T)
    rs = np.asarray(real_share, dtype=np.float64).reshape(-1)
    if rs.size != K:
        raise ValueError(f"{rs.size} real shares for {K} clusters")
    rank = np.empty(K, dtype=np.int64)
    rank[np.argsort(rs, kind="stable")] = np.arange(K)
    lost, lost_ids = [], set()
    for b in range(K):
        col = c[:, b]
        if not col.any() or col[-1]:
            continue
        first = int(np.flatnonzero(col)[-1]) + 1  # first checkpoint of the final dropped stretch
        lost_ids.add(b)
        lost.append({"id": b, "real_share": float(rs[b]), "rarity_rank": int(rank[b]),
                     "lost_at_checkpoint": first, "lost_at_step": steps[first]})
    kept = [b for b in range(K) if T and c[0, b] and b not in lost_ids]
    p = None
    statistic = "Mann-Whitney U (one-sided: lost clusters' real shares smaller than kept clusters')"
    if lost and kept:
        from scipy.stats import mannwhitneyu

        res = mannwhitneyu(rs[sorted(lost_ids)], rs[kept], alternative="less")
        p = _num(res.pvalue)
        statistic = (f"Mann-Whitney U = {float(res.statistic):g} (one-sided: real shares of {len(lost)} lost < "
                     f"{len(kept)} kept clusters)")
    else:
        statistic += f": not computed ({len(lost)} lost, {len(kept)} kept)"
    return {
        "lost": lost,
        "rarest_first": bool(p is not None and p < alpha),
        "p": p,
        "statistic": statistic,
        "basis": (f"a cluster is lost at a generation when it was covered before and is dropped there and at every "
                  f"later generation; the rarest go first when a one-sided Mann-Whitney U test finds the lost "
                  f"clusters' real shares smaller than those of clusters kept from the first generation (p < {alpha:g})."),
    }


# --------------------------------------------------------------------------- alerts
def _alerts(onset, hopping, never, tail, steps) -> list[dict]:
    out = []
    span = f"steps {steps[0]}-{steps[-1]}" if steps else "no steps"
    if onset is not None:
        parts = []
        for r in onset["reasons"]:
            if r["kind"] == "metric":
                parts.append(f"{r['metric']} fell {r['drop']:.3f} below step {r['reference_step']} "
                             f"({r['reference_value']:.3f} -> {r['value']:.3f}, p={r['p']:.2g} < {r['level']:.2g})")
            else:
                parts.append(f"cluster(s) {_ids(r['clusters'])} covered earlier are dropped (p < {r['level']:.2g})")
        rec = onset.get("recovered_step")
        out.append({"kind": "onset", "checkpoint": onset["checkpoint"], "step": onset["step"], "severity": "error",
                    "message": f"collapse starts at step {onset['step']}: " + "; ".join(parts)
                               + (f" (recovered from step {rec} to the end of the run)" if rec is not None else "")})
    hop = hopping["clusters"]
    if hop:
        sws = sorted({s for h in hop for s in h["switch_steps"]})
        out.append({"kind": "hopping", "checkpoint": None, "step": None, "severity": "warning",
                    "message": f"{len(hop)} cluster(s) come and go (covered <-> dropped at least twice): "
                               f"{_ids(h['id'] for h in hop)}; switches between step {sws[0]} and step {sws[-1]}"})
    if hopping["oscillating"]:
        out.append({"kind": "oscillating", "checkpoint": None, "step": None, "severity": "warning",
                    "message": f"the run oscillates over {span}: a checkpoint covers "
                               f"{100 * hopping['mean_snapshot_covered_fraction']:.0f}% of the clusters on average but "
                               f"{100 * hopping['union_covered_fraction']:.0f}% are covered at some checkpoint"})
    if never:
        out.append({"kind": "never_learned", "checkpoint": None, "step": None, "severity": "warning",
                    "message": f"{len(never)} cluster(s) never learned (dropped at every checkpoint, {span}): {_ids(never)}"})
    if tail is not None and tail["rarest_first"]:
        lost = tail["lost"]
        out.append({"kind": "tail_loss", "checkpoint": None, "step": None, "severity": "error",
                    "message": f"the rarest clusters are lost first (one-sided Mann-Whitney p={tail['p']:.2g}): "
                               f"{len(lost)} cluster(s) lost for good at step(s) "
                               f"{', '.join(str(s) for s in sorted({x['lost_at_step'] for x in lost}))}"})
    return out


# --------------------------------------------------------------------------- classes
def class_summary(class_counts, real_counts, names, steps, alpha: float = 0.05, oscillating_gap: float = 0.2) -> dict:
    """Classes over the run, by the same NDB rule as clusters: which were lost, never learned, came and went.

    ``class_counts``: (T, C) generated counts per class at the T labelled
    checkpoints (in run order), ``real_counts``: (C,), ``names``: C class names,
    ``steps``: the T steps. A class is *lost* when it was covered at some
    checkpoint and is dropped at the last one (``dropped_since``: the first step
    of that final run of drops); *never learned* when dropped at every
    checkpoint; *hopping* as for clusters (:func:`mode_hopping`). Descriptive:
    these enter no onset test, so they do not spend the run's alpha.
    """
    counts = np.asarray(class_counts, dtype=np.int64)
    names = [str(n) for n in names]
    if counts.ndim != 2 or counts.shape[1] != len(names):
        raise ValueError(f"class_counts must be (T, {len(names)}); got shape {counts.shape}")
    steps = _steps(steps, counts.shape[0])
    cov = covered_matrix(counts, real_counts, alpha)
    T = cov.shape[0]
    lost = []
    for c in np.flatnonzero(~cov[-1] & cov.any(axis=0)):
        t = T - 1
        while t > 0 and not cov[t - 1, c]:
            t -= 1
        lost.append({"name": names[int(c)], "dropped_since_step": steps[t], "last_covered_step": steps[t - 1]})
    hop = mode_hopping(cov, steps, oscillating_gap)
    return {
        "names": names,
        "n_checkpoints": int(T),
        "steps": steps,
        "dropped_final": [names[int(c)] for c in np.flatnonzero(~cov[-1])],
        "n_dropped_final": int((~cov[-1]).sum()),
        "lost": lost,
        "never_learned": [names[int(c)] for c in never_learned(cov)],
        "hopping": [{"name": names[h["id"]], "n_switches": h["n_switches"], "switch_steps": h["switch_steps"]}
                    for h in hop["clusters"]],
        "basis": ("a class is dropped at a checkpoint by the NDB rule on class counts (as clusters); lost: covered at "
                  "some checkpoint and dropped at the last; never learned: dropped at every labelled checkpoint. "
                  "Descriptive: classes enter no onset test."),
    }


def class_alerts(classes: Mapping | None) -> list[dict]:
    """One warning per lost class and per never-learned class (none when the run has no classes).

    One alert per class, so that a streaming tracker prints each once (its
    message does not change while the class stays dropped).
    """
    if not classes:
        return []
    out = []
    for x in classes["lost"]:
        out.append({"kind": "class_lost", "checkpoint": None, "step": x["dropped_since_step"], "severity": "warning",
                    "message": f"class {x['name']} is dropped since step {x['dropped_since_step']} "
                               f"(covered at step {x['last_covered_step']})"})
    for n in classes["never_learned"]:
        out.append({"kind": "class_never_learned", "checkpoint": None, "step": None, "severity": "warning",
                    "message": f"class {n} is dropped at every labelled checkpoint"})
    return out


# --------------------------------------------------------------------------- the run section
def analyse_run(*, steps, names, metrics: Mapping, se: Mapping, cluster_counts, real_counts, alpha: float = 0.05,
                order: str = "step", min_drop: float = 0.02, oscillating_gap: float = 0.2) -> dict:
    """The ``run`` section of ``track.json`` from per-checkpoint numbers (checkpoints in run order).

    ``steps``: (T,) ints, strictly increasing; ``names``: T strings; ``metrics``:
    name -> (T,) floats (``coverage``, ``recall``, ``precision``, ``fid``; NaN or
    absent where missing); ``se``: name -> (T,) standard errors (``coverage``,
    ``recall``, optionally ``precision``); ``cluster_counts``: (T, K) generated
    counts per real cluster; ``real_counts``: (K,) real counts. ``order`` is
    ``"step"`` or ``"generation"`` (tail loss only for the latter).

    Sections: onset (:func:`detect_onset`), hopping (:func:`mode_hopping`),
    never-learned (:func:`never_learned`), best checkpoint
    (:func:`best_checkpoint`), final metrics, tail loss (:func:`tail_loss`) and
    alerts: onset (error), hopping clusters (one warning), oscillating
    (warning), never-learned (warning), rarest-first tail loss (error).
    """
    if not 0 < float(alpha) < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}")
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {', '.join(_ORDERS)}; got {order!r}")
    counts = np.asarray(cluster_counts, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[0] < 1:
        raise ValueError(f"cluster_counts must be (T, K) with T >= 1; got shape {counts.shape}")
    T, K = counts.shape
    real = np.asarray(real_counts, dtype=np.int64).reshape(-1)
    steps = _steps(steps, T)
    names = [str(n) for n in names]
    if len(names) != T:
        raise ValueError(f"{len(names)} names for {T} checkpoints")
    alpha = float(alpha)
    cov = covered_matrix(counts, real, alpha)
    onset = detect_onset(steps=steps, names=names, metrics=metrics, se=se, cluster_counts=counts, real_counts=real,
                         covered=cov, alpha=alpha, min_drop=min_drop)
    hopping = mode_hopping(cov, steps, oscillating_gap)
    never = never_learned(cov)
    se_prec = se.get("precision") if se is not None else None
    best = best_checkpoint(steps=steps, names=names, precision=_series(metrics, "precision", T),
                           coverage=_series(metrics, "coverage", T), precision_se=se_prec)
    final = {m: _num(_series(metrics, m, T)[-1]) for m in ("coverage", "recall", "precision", "fid")}
    final["n_covered"] = int(cov[-1].sum())
    tail = tail_loss(cov, real / max(int(real.sum()), 1), steps, alpha) if order == "generation" else None
    return {
        "n_checkpoints": int(T),
        "alpha": alpha,
        "onset": onset,
        "onset_basis": _onset_basis(alpha, K),
        "hopping": hopping,
        "never_learned": never,
        "best_checkpoint": best,
        "final": final,
        "tail_loss": tail,
        "alerts": _alerts(onset, hopping, never, tail, steps),
    }
