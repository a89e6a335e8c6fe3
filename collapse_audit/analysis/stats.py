"""Small, well-known statistical tests for proportions, used by the dropout analyses.

All functions are vectorised over numpy arrays and return plain arrays/floats.
References:

- Wilson score interval: E. B. Wilson (1927), "Probable inference, the law of
  succession, and statistical inference", JASA 22:209-212.
- Newcombe hybrid score interval for a difference of proportions (method 10):
  R. G. Newcombe (1998), "Interval estimation for the difference between
  independent proportions", Statistics in Medicine 17:873-890.
- Two-proportion z-test (pooled), as used by the NDB test of Richardson &
  Weiss (2018), "On GANs and GMMs", NeurIPS.
- Benjamini & Hochberg (1995), "Controlling the false discovery rate",
  JRSS-B 57:289-300.
- Katz et al. (1978) log interval for a ratio of proportions.
"""
from __future__ import annotations

import numpy as np


def _st():
    """``scipy.stats``, imported on first use (~1 s): importing the package and its scan stays cheap."""
    from scipy import stats

    return stats


def z_two_sided(alpha: float) -> float:
    """The standard normal quantile ``z_{1 - alpha/2}`` (1.96 at alpha = 0.05)."""
    return float(_st().norm.ppf(1 - alpha / 2))


_z = z_two_sided


def wilson_interval(k, n, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion k/n.

    ``center = (p + z^2/2n) / (1 + z^2/n)``,
    ``half = z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n)``. Defined for k = 0 and
    k = n (unlike the Wald interval); n = 0 gives [0, 1].
    """
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    z = _z(alpha)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(n > 0, k / np.where(n > 0, n, 1), 0.0)
        denom = 1 + z * z / np.where(n > 0, n, 1)
        center = (p + z * z / (2 * np.where(n > 0, n, 1))) / denom
        half = z * np.sqrt(p * (1 - p) / np.where(n > 0, n, 1) + z * z / (4 * np.where(n > 0, n, 1) ** 2)) / denom
    lo = np.where(n > 0, np.clip(center - half, 0, 1), 0.0)
    hi = np.where(n > 0, np.clip(center + half, 0, 1), 1.0)
    return lo, hi


def newcombe_diff_interval(k1, n1, k2, n2, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Newcombe's hybrid score interval for p1 - p2 (method 10), from two Wilson intervals.

    ``lo = d - sqrt((p1-l1)^2 + (u2-p2)^2)``, ``hi = d + sqrt((u1-p1)^2 + (p2-l2)^2)``.
    """
    k1, n1, k2, n2 = (np.asarray(a, dtype=np.float64) for a in (k1, n1, k2, n2))
    p1 = np.divide(k1, n1, out=np.zeros_like(k1), where=n1 > 0)
    p2 = np.divide(k2, n2, out=np.zeros_like(k2), where=n2 > 0)
    l1, u1 = wilson_interval(k1, n1, alpha)
    l2, u2 = wilson_interval(k2, n2, alpha)
    d = p1 - p2
    lo = d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return np.clip(lo, -1, 1), np.clip(hi, -1, 1)


def ratio_interval(k1, n1, k2, n2, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Katz log interval for the ratio (k1/n1)/(k2/n2), with a 0.5 continuity correction when a count is 0."""
    k1, n1, k2, n2 = (np.asarray(a, dtype=np.float64) for a in (k1, n1, k2, n2))
    zero = (k1 == 0) | (k2 == 0)
    a = np.where(zero, k1 + 0.5, k1)
    b = np.where(zero, k2 + 0.5, k2)
    na = np.where(zero, n1 + 0.5, n1)
    nb = np.where(zero, n2 + 0.5, n2)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_r = np.log((a / na) / (b / nb))
        se = np.sqrt(1 / a - 1 / na + 1 / b - 1 / nb)
    z = _z(alpha)
    return np.exp(log_r - z * se), np.exp(log_r + z * se)


def two_proportion_ztest(k1, n1, k2, n2) -> tuple[np.ndarray, np.ndarray]:
    """Pooled two-proportion z-test of H0: p1 = p2; returns (z, two-sided p-value).

    ``z = (p1 - p2) / sqrt(P (1-P) (1/n1 + 1/n2))`` with ``P = (k1+k2)/(n1+n2)``;
    p = 1 where both proportions are 0 or 1 (no evidence either way).
    """
    k1, n1, k2, n2 = (np.asarray(a, dtype=np.float64) for a in (k1, n1, k2, n2))
    p1 = k1 / n1
    p2 = k2 / n2
    pool = (k1 + k2) / (n1 + n2)
    se = np.sqrt(pool * (1 - pool) * (1 / n1 + 1 / n2))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (p1 - p2) / np.where(se > 0, se, 1), 0.0)
    p = 2 * _st().norm.sf(np.abs(z))
    return z, np.where(se > 0, p, 1.0)


def benjamini_hochberg(pvalues) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), same order as the input.

    ``q_(i) = min_{j >= i} p_(j) m / j`` over the sorted p-values, capped at 1.
    Rejecting q <= alpha controls the false discovery rate at alpha.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(q)
    out[order] = np.minimum(q, 1.0)
    return out


def chi_square_gof(observed, expected_proportions) -> tuple[float, float, int]:
    """Pearson chi-square goodness of fit of counts against expected proportions.

    Categories with zero expected proportion are dropped (they cannot be tested);
    returns (statistic, p-value, degrees of freedom). With fewer than two
    testable categories the statistic is 0 and p = 1.
    """
    obs = np.asarray(observed, dtype=np.float64)
    exp_p = np.asarray(expected_proportions, dtype=np.float64)
    keep = exp_p > 0
    obs, exp_p = obs[keep], exp_p[keep] / exp_p[keep].sum()
    if obs.size < 2 or obs.sum() == 0:
        return 0.0, 1.0, 0
    exp = exp_p * obs.sum()
    stat = float(((obs - exp) ** 2 / exp).sum())
    dof = int(obs.size - 1)
    return stat, float(_st().chi2.sf(stat, dof)), dof
