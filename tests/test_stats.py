"""Proportion statistics against scipy's reference implementations and published values."""
import numpy as np
import pytest
from scipy import stats

from collapse_audit.analysis.stats import (
    benjamini_hochberg,
    chi_square_gof,
    newcombe_diff_interval,
    two_proportion_ztest,
    wilson_interval,
)


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (47, 1000), (1, 3)])
def test_wilson_matches_scipy(k, n):
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson_interval(k, n)
    assert float(lo) == pytest.approx(ref.low, abs=1e-12) and float(hi) == pytest.approx(ref.high, abs=1e-12)


def test_newcombe_published_example():
    # Newcombe (1998), Table II example (a): 56/70 vs 48/80, method 10: 0.0524 to 0.3339
    lo, hi = newcombe_diff_interval(56, 70, 48, 80)
    assert float(lo) == pytest.approx(0.0524, abs=1e-4) and float(hi) == pytest.approx(0.3339, abs=1e-4)


def test_two_proportion_z_squared_equals_pearson_chi2():
    k1, n1, k2, n2 = 30, 200, 55, 210
    z, p = two_proportion_ztest(k1, n1, k2, n2)
    chi2, p_ref, _, _ = stats.chi2_contingency([[k1, n1 - k1], [k2, n2 - k2]], correction=False)
    assert float(z) ** 2 == pytest.approx(chi2, rel=1e-10) and float(p) == pytest.approx(p_ref, rel=1e-10)


def test_benjamini_hochberg_matches_scipy():
    p = np.random.default_rng(0).uniform(size=40) ** 3
    np.testing.assert_allclose(benjamini_hochberg(p), stats.false_discovery_control(p, method="bh"), rtol=1e-12)


def test_chi_square_gof_matches_scipy():
    obs = np.array([30, 10, 25, 35])
    exp_p = np.array([0.25, 0.25, 0.25, 0.25])
    stat, p, dof = chi_square_gof(obs, exp_p)
    ref = stats.chisquare(obs, exp_p * obs.sum())
    assert stat == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue) and dof == 3
