"""Metrics stage: FID, KID, PRDC against the reference implementations.

References (installed offline as dev extras): pytorch-fid 0.3.0
(``calculate_frechet_distance``), torch-fidelity 0.4.0
(``kid_features_to_metric``), prdc 0.2 (``compute_prdc``).  Tolerances:
FID 1e-6 relative (well-conditioned), KID 1e-6 relative, PRDC 1e-9 on
precision/recall/coverage and 1e-6 on density (in practice the counts agree
exactly).  Block sizes smaller than the sets keep the tiled paths exercised.
"""
from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

from collapse_audit import index
from collapse_audit.metrics import (
    BootstrapResult,
    GaussianStats,
    KIDResult,
    PRDCResult,
    bootstrap_ci,
    fid,
    frechet_distance,
    kid,
    polynomial_mmd2_unbiased,
    prdc,
    prdc_bootstrap,
)


def _random_cov(rng, d, cond=10.0):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    w = np.exp(rng.uniform(0, np.log(cond), d))
    return (q * w) @ q.T


def _gaussian(rng, n, d, shift=0.0, scale=1.0, dtype=np.float32):
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    return (rng.standard_normal((n, d)) @ (np.eye(d) * scale + 0.3 * a) + shift).astype(dtype)


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


# --------------------------------------------------------------------------- FID


def _pytorch_fid(mu1, s1, mu2, s2):
    from pytorch_fid.fid_score import calculate_frechet_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(np.real(calculate_frechet_distance(mu1, s1, mu2, s2)))


@pytest.mark.parametrize("seed,d", [(0, 16), (1, 64), (2, 128)])
def test_frechet_distance_matches_pytorch_fid(seed, d):
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d) * 0.5
    s1, s2 = _random_cov(rng, d), _random_cov(rng, d, cond=30)
    ours = frechet_distance(mu1, s1, mu2, s2)
    ref = _pytorch_fid(mu1, s1, mu2, s2)
    assert _rel(ours, ref) < 1e-6


def test_fid_from_features_matches_pytorch_fid_on_np_cov():
    rng = np.random.default_rng(3)
    x, y = _gaussian(rng, 2000, 64), _gaussian(rng, 1500, 64, shift=0.2, scale=1.1)
    ref = _pytorch_fid(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert _rel(fid(x, y), ref) < 1e-6
    assert fid(GaussianStats.from_features(x), GaussianStats.from_features(y)) == pytest.approx(fid(x, y), rel=1e-12)


def test_frechet_distance_closed_form_commuting_covariances():
    # S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T commute: Tr (S1 S2)^1/2 = sum sqrt(a b)
    rng = np.random.default_rng(4)
    d = 48
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    a, b = rng.uniform(0.1, 5, d), rng.uniform(0.1, 5, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    assert frechet_distance(mu1, (q * a) @ q.T, mu2, (q * b) @ q.T) == pytest.approx(expected, rel=1e-9)
    # diagonal covariances, scalar check
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    # identical distributions: exactly 0 after clipping rounding, symmetric
    s = _random_cov(rng, d)
    assert frechet_distance(mu1, s, mu1, s) == pytest.approx(0.0, abs=1e-9)
    s2 = _random_cov(rng, d)
    assert frechet_distance(mu1, s, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s), rel=1e-9)


def test_frechet_distance_singular_covariance_n_less_than_d():
    rng = np.random.default_rng(5)
    d = 128
    x, y = _gaussian(rng, 60, d), _gaussian(rng, 90, d, shift=0.1)
    mu1, s1, mu2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert isinstance(ours, float) and np.isfinite(ours) and ours >= 0
    # pytorch-fid goes through sqrtm of a singular product; compare where it yields a finite real value
    try:
        ref = _pytorch_fid(mu1, s1, mu2, s2)
    except ValueError:  # "Imaginary component": nothing to compare
        return
    if np.isfinite(ref):
        assert _rel(ours, ref) < 1e-4
    # rank-deficient on both sides (constant features): still finite and >= 0
    x[:, :10] = 1.0
    y[:, :10] = 2.0
    v = fid(x, y)
    assert np.isfinite(v) and v >= 0


def test_frechet_distance_rejects_bad_shapes():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3) * np.nan, np.zeros(3), np.eye(3))


# --------------------------------------------------------------------------- GaussianStats


def test_gaussian_stats_merge_uneven_shards_equals_single_pass():
    rng = np.random.default_rng(6)
    x = _gaussian(rng, 3001, 40, shift=3.0, dtype=np.float64)
    single = GaussianStats.from_features(x, chunk=512)
    cuts = [0, 1, 8, 508, 1742, 1745, 3001]
    shards = [GaussianStats().update(x[a:b], chunk=97) for a, b in zip(cuts[:-1], cuts[1:])]
    merged = GaussianStats()
    for sh in reversed(shards):  # any order
        merged.merge(sh)
    merged.merge(GaussianStats())  # empty shard is a no-op
    assert merged.n == single.n == 3001
    scale = np.abs(single.cov).max()
    assert np.abs(merged.mean - single.mean).max() <= 1e-12 * np.abs(single.mean).max()
    assert np.abs(merged.cov - single.cov).max() <= 1e-12 * scale
    assert np.allclose(single.mean, x.mean(0), rtol=0, atol=1e-12 * np.abs(x).max())
    assert np.abs(single.cov - np.cov(x, rowvar=False)).max() <= 1e-12 * scale


def test_gaussian_stats_large_offset_and_npz_roundtrip(tmp_path):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1000, 8)) + 1e6  # naive sum-of-outer-products loses ~all digits here
    st = GaussianStats().update(x[:333]).merge(GaussianStats().update(x[333:]))
    assert np.abs(st.cov - np.cov(x, rowvar=False)).max() < 1e-6
    st.to_npz(tmp_path / "s.npz")
    back = GaussianStats.from_npz(tmp_path / "s.npz")
    assert back.n == st.n and np.array_equal(back.mean, st.mean) and np.array_equal(back.cov, st.cov)
    with pytest.raises(ValueError):
        GaussianStats().update(x[:1]).cov
    with pytest.raises(ValueError):
        GaussianStats().update(x).update(np.zeros((2, 3)))


# --------------------------------------------------------------------------- KID


def _torch_fidelity_kid(real, gen, **kw):
    import torch
    from torch_fidelity.metric_kid import kid_features_to_metric

    out = kid_features_to_metric(torch.from_numpy(real), torch.from_numpy(gen), verbose=False, **kw)
    return out["kernel_inception_distance_mean"], out["kernel_inception_distance_std"]


@pytest.mark.parametrize("seed,n_real,n_gen,d,subsets,size", [(0, 600, 700, 32, 20, 300), (1, 1200, 900, 128, 10, 500)])
def test_kid_matches_torch_fidelity(seed, n_real, n_gen, d, subsets, size):
    rng = np.random.default_rng(seed)
    real = _gaussian(rng, n_real, d, dtype=np.float64)
    gen = _gaussian(rng, n_gen, d, shift=0.05, scale=1.05, dtype=np.float64)
    ours = kid(real, gen, n_subsets=subsets, subset_size=size, seed=seed + 10, block=128)
    ref_mean, ref_std = _torch_fidelity_kid(real, gen, kid_subsets=subsets, kid_subset_size=size, rng_seed=seed + 10)
    assert isinstance(ours, KIDResult) and ours.subset_size == size and ours.n_subsets == subsets
    assert _rel(ours.mean, ref_mean) < 1e-6
    assert _rel(ours.std, ref_std) < 1e-6


def test_kid_caps_subset_size_and_float32_input():
    rng = np.random.default_rng(2)
    real, gen = _gaussian(rng, 150, 16), _gaussian(rng, 120, 16, shift=0.3)
    ours = kid(real, gen, n_subsets=5, subset_size=1000, seed=1)
    assert ours.subset_size == 120
    ref_mean, ref_std = _torch_fidelity_kid(
        real.astype(np.float64), gen.astype(np.float64), kid_subsets=5, kid_subset_size=120, rng_seed=1
    )
    assert _rel(ours.mean, ref_mean) < 1e-6 and _rel(ours.std, ref_std) < 1e-6


def test_polynomial_mmd_blocked_equals_dense():
    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((257, 24)), rng.standard_normal((257, 24)) + 0.2
    kxx = (x @ x.T / 24 + 1) ** 3
    kyy = (y @ y.T / 24 + 1) ** 3
    kxy = (x @ y.T / 24 + 1) ** 3
    m = 257
    dense = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.sum() / m**2
    assert polynomial_mmd2_unbiased(x, y, block=50) == pytest.approx(dense, rel=1e-10)
    assert polynomial_mmd2_unbiased(x, x, block=64) == pytest.approx(
        (2 * (kxx.sum() - np.trace(kxx))) / (m * (m - 1)) - 2 * kxx.sum() / m**2, rel=1e-10
    )


# --------------------------------------------------------------------------- PRDC


def _reference_prdc(real, gen, k):
    from prdc import compute_prdc

    return compute_prdc(real_features=real, fake_features=gen, nearest_k=k)


def _prdc_case(seed, n_real, n_gen, d, dup, dtype=np.float32):
    rng = np.random.default_rng(seed)
    real = _gaussian(rng, n_real, d, dtype=dtype)
    gen = _gaussian(rng, n_gen, d, shift=0.15, scale=1.15, dtype=dtype)
    if dup:
        real[:20] = real[20:40]  # pairs of duplicates inside the real set
        real[60:68] = real[59]  # nine copies of one point: its radius is a duplicate distance
        gen[: n_gen // 10] = real[100 : 100 + n_gen // 10]  # generated copies of real points
        gen[n_gen // 10 : n_gen // 10 + 10] = gen[n_gen // 10 + 10]  # a collapsed mode: 11 copies
    return real, gen


PRDC_CASES = [
    # seed, n_real, n_gen, d, k, duplicates
    (0, 1000, 800, 32, 5, False),
    (1, 1200, 1500, 64, 3, False),
    (2, 900, 700, 16, 5, True),
    (3, 1000, 1000, 64, 3, True),
    (4, 150, 120, 256, 5, False),  # N < D
    (5, 200, 180, 256, 3, True),  # N < D with duplicates
]


@pytest.mark.parametrize("seed,n_real,n_gen,d,k,dup", PRDC_CASES)
def test_prdc_matches_reference(seed, n_real, n_gen, d, k, dup):
    real, gen = _prdc_case(seed, n_real, n_gen, d, dup)
    ours = prdc(real, gen, k=k, block_size=256)
    ref = _reference_prdc(real, gen, k)
    assert isinstance(ours, PRDCResult) and (ours.k, ours.n_real, ours.n_gen) == (k, n_real, n_gen)
    for name in ("precision", "recall", "coverage"):
        assert abs(getattr(ours, name) - float(ref[name])) <= 1e-9, name
    assert abs(ours.density - float(ref["density"])) <= 1e-6


def test_prdc_matches_reference_float64_input():
    real, gen = _prdc_case(9, 600, 500, 24, True, dtype=np.float64)
    ours = prdc(real, gen, k=4, block_size=100)
    ref = _reference_prdc(real, gen, 4)
    for name in ("precision", "recall", "density", "coverage"):
        assert getattr(ours, name) == pytest.approx(float(ref[name]), abs=1e-12), name


def test_prdc_block_size_does_not_change_result():
    real, gen = _prdc_case(10, 700, 650, 32, True)
    results = {prdc(real, gen, k=5, block_size=b) for b in (37, 256, 4096)}
    assert len(results) == 1


def test_prdc_identical_sets_is_perfect():
    rng = np.random.default_rng(11)
    x = _gaussian(rng, 500, 32)
    r = prdc(x, x.copy(), k=5, block_size=128)
    assert (r.precision, r.recall, r.coverage) == (1.0, 1.0, 1.0)
    assert r.density > 0.5


def test_prdc_collapsed_generator_has_low_recall_and_coverage():
    rng = np.random.default_rng(12)
    real = _gaussian(rng, 800, 16)
    gen = np.repeat(real[:4], 200, axis=0) + rng.normal(0, 1e-3, (800, 16)).astype(np.float32)
    r = prdc(real, gen, k=5)
    assert r.precision > 0.9 and r.coverage < 0.05 and r.recall < 0.05


def test_prdc_rejects_bad_input():
    x = np.zeros((10, 4), np.float32)
    with pytest.raises(ValueError):
        prdc(x, np.zeros((10, 5), np.float32))
    with pytest.raises(ValueError):
        prdc(x, x, k=10)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        prdc(bad, x, k=3)


def test_prdc_memory_is_blocked():
    """No N x M array: traced peak stays far below one N x M bool matrix (FAISS's C++ buffers are not traced)."""
    rng = np.random.default_rng(13)
    n = m = 5000
    real, gen = _gaussian(rng, n, 8), _gaussian(rng, m, 8, shift=0.1)
    tracemalloc.start()
    try:
        prdc(real, gen, k=5, block_size=256)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < n * m  # bytes of one N x M bool matrix (an N x M float64 is 8x that)


def test_prdc_bootstrap_intervals_are_deterministic_and_bracket_spread():
    rng = np.random.default_rng(14)
    real, gen = _gaussian(rng, 300, 16), _gaussian(rng, 300, 16, shift=0.2)
    a = prdc_bootstrap(real, gen, k=5, n_boot=8, seed=3)
    b = prdc_bootstrap(real, gen, k=5, n_boot=8, seed=3)
    assert isinstance(a, BootstrapResult) and a == b
    assert set(a.estimate) == {"precision", "recall", "density", "coverage"}
    for name in a.estimate:
        assert a.low[name] <= a.high[name]
    assert a.estimate["precision"] == prdc(real, gen, k=5).precision
    c = bootstrap_ci(lambda r, g: fid(r, g), real, gen, n_boot=5, seed=0)
    assert set(c.estimate) == {"value"} and c.low["value"] <= c.high["value"]


# --------------------------------------------------------------------------- index helpers


def _sklearn_distances(x, y=None):
    from prdc.prdc import compute_pairwise_distance

    return compute_pairwise_distance(x, y)


@pytest.mark.parametrize("k,margin", [(1, 16), (3, 0), (5, 2), (5, 16)])
def test_kth_neighbour_distance_matches_prdc_radii(k, margin, monkeypatch):
    real, _ = _prdc_case(15, 800, 10 * 11, 48, True)
    full = _sklearn_distances(real)
    expected = np.partition(full, k, axis=1)[:, k]
    calls = []
    original = index._exact_kth_rows
    monkeypatch.setattr(index, "_exact_kth_rows", lambda *a: calls.append(len(a[2])) or original(*a))
    got = index.kth_neighbour_distance(real, k, margin=margin, block=64)
    assert got.dtype == np.float32
    assert np.array_equal(got, expected)
    if margin == 0:
        assert calls, "margin=0 must exercise the exact fallback"


def test_knn_matches_brute_force():
    rng = np.random.default_rng(16)
    x, q = _gaussian(rng, 700, 24), _gaussian(rng, 90, 24)
    full = _sklearn_distances(q, x)
    dist, idx = index.knn(q, x, 7, block=32)
    assert np.array_equal(idx, np.argsort(full, axis=1, kind="stable")[:, :7])
    assert np.allclose(dist, np.sort(full, axis=1)[:, :7], rtol=1e-4, atol=1e-4)
    d_self, i_self = index.knn(x, x, 3, exclude_self=True)
    assert not (i_self == np.arange(700)[:, None]).any()
    selfd = _sklearn_distances(x)
    np.fill_diagonal(selfd, np.inf)
    assert np.allclose(d_self, np.sort(selfd, axis=1)[:, :3], rtol=1e-4, atol=1e-4)


def test_count_within_radii_matches_dense():
    real, gen = _prdc_case(17, 400, 300, 16, True)
    radii = index.kth_neighbour_distance(real, 3)
    counts, inside = index.count_within_radii(gen, real, radii, block=64)
    dense = _sklearn_distances(real, gen) < radii[:, None]
    assert np.array_equal(counts, dense.sum(axis=0)) and np.array_equal(inside, dense.any(axis=0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_strict_thresholds_reproduce_sqrt_comparison(dtype):
    rng = np.random.default_rng(18)
    r = (np.abs(rng.standard_normal(500)) * 40).astype(dtype)
    r[:3] = 0
    t = index._strict_thresholds(r, dtype)
    r2 = r.astype(np.float64) ** 2
    s = np.concatenate(
        [r2[:, None] * (1 + np.linspace(-1e-6, 1e-6, 101))[None, :], np.nextafter(t, -np.inf)[:, None], t[:, None]],
        axis=1,
    )
    with np.errstate(invalid="ignore"):
        direct = np.sqrt(np.maximum(s.astype(dtype), 0)) < r[:, None]
    assert np.array_equal(direct, s < t[:, None])


def test_indicator_bootstrap_matches_the_binomial_closed_form_and_brackets_the_estimate():
    # precision, recall and coverage are means of Bernoulli indicators given the k-NN balls, so the
    # bootstrap interval must approach p +/- 1.96 sqrt(p (1 - p) / n)
    rng = np.random.default_rng(21)
    real, gen = _gaussian(rng, 800, 8), _gaussian(rng, 600, 8, shift=0.4)
    res = prdc_bootstrap(real, gen, k=5, n_boot=4000, seed=1)
    full = prdc(real, gen, k=5)
    for name, n in (("precision", 600), ("recall", 800), ("coverage", 800)):
        p = getattr(full, name)
        assert res.estimate[name] == pytest.approx(p)
        half = 1.96 * np.sqrt(p * (1 - p) / n)
        assert res.low[name] == pytest.approx(p - half, abs=0.01)
        assert res.high[name] == pytest.approx(p + half, abs=0.01)
        assert res.low[name] <= p <= res.high[name]
    assert res.low["density"] <= full.density <= res.high["density"]
