"""FD-infinity against dgm-eval's ``compute_FD_infinity`` (layer6ai-labs/dgm-eval, ``dgm_eval/metrics/fd.py``),
ported below with its scipy-sqrtm Frechet distance; the same generator seed gives both the same subsamples.
And the property it exists for: on Gaussians, FID at finite N is biased upwards by about c/N and FD-infinity
removes that bias (checked over seeded draws against the closed-form distance)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import linalg
from sklearn.linear_model import LinearRegression

from collapse_audit.metrics import fd_infinity, frechet_distance


def _ref_stats(x):
    return np.mean(x, axis=0), np.cov(x, rowvar=False)


def _ref_fd(mu1, mu2, s1, s2, eps=1e-6):
    diff = mu1 - mu2
    with warnings.catch_warnings():  # scipy deprecates sqrtm's disp argument; the reference passes it
        warnings.simplefilter("ignore", DeprecationWarning)
        covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    covmean = covmean.real
    return diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def _ref_fd_infinity(reps1, reps2, num_points=15, rng=None):
    fds = []
    fd_batches = np.linspace(min(5000, max(len(reps2) // 10, 2)), len(reps2), num_points).astype("int32")
    mu1, sigma1 = _ref_stats(reps1)
    for n in fd_batches:
        act = rng.choice(reps2, n, replace=False)
        mu2, sigma2 = _ref_stats(act)
        fds.append(_ref_fd(mu1, mu2, sigma1, sigma2))
    fds = np.array(fds).reshape(-1, 1)
    reg = LinearRegression()
    reg.fit(1 / fd_batches.reshape(-1, 1), fds)
    return reg.predict(np.array([[0]]))[0, 0], fd_batches, fds.ravel()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("n_real,n_gen,d", [(3000, 2000, 16), (800, 400, 32)])
def test_fd_infinity_equals_dgm_eval(seed, n_real, n_gen, d):
    rng = np.random.default_rng(100 + seed)
    real = rng.standard_normal((n_real, d))
    gen = rng.standard_normal((n_gen, d)) * 1.2 + 0.3
    want, sizes, fds = _ref_fd_infinity(real, gen, rng=np.random.default_rng(seed))
    got = fd_infinity(real, gen, seed=seed)
    assert got.sizes == tuple(int(s) for s in sizes)
    np.testing.assert_allclose(got.fds, fds, rtol=1e-7)
    assert got.value == pytest.approx(want, rel=1e-6)


def test_fd_infinity_removes_the_small_sample_bias():
    # gen ~ N(0, I) against the exact real distribution N(0, I): the true distance is 0; FID at N is biased up
    from collapse_audit.metrics import GaussianStats

    d, n = 8, 1000
    real_mu, real_cov = np.zeros(d), np.eye(d)
    bias, inf = [], []
    for s in range(40):
        g = np.random.default_rng(s).standard_normal((n, d))
        gs = GaussianStats.from_features(g)
        bias.append(frechet_distance(real_mu, real_cov, gs.mean, gs.cov))
        r = fd_infinity(GaussianStats.from_features(np.random.default_rng(10_000 + s).standard_normal((200_000, d))), g, seed=s)
        inf.append(r.value)
    assert np.mean(bias) > 0.01  # FID_1000 of identical distributions: clearly above 0
    assert abs(np.mean(inf)) < 0.25 * np.mean(bias)  # the extrapolation takes most of that bias away
    with pytest.raises(ValueError):
        fd_infinity(np.zeros((10, 2)), np.zeros((3, 2)))


def test_scan_fd_inf_reports_the_value_and_its_fit(tmp_path, run_cli):
    import json

    import jsonschema

    from collapse_audit.features import FeatureSet, save_features
    from collapse_audit.schema import results_schema

    rng = np.random.default_rng(3)
    real, gen = rng.standard_normal((600, 8)), rng.standard_normal((300, 8)) + 0.2
    for name, x in (("real", real), ("gen", gen)):
        save_features(tmp_path / f"{name}.npz", FeatureSet(features=x.astype(np.float32), paths=[f"{i}.png" for i in range(len(x))],
                                                          embedder_id="synthetic"))
    code, so, se = run_cli("scan", tmp_path / "gen.npz", "--real", tmp_path / "real.npz", "--fd-inf", "--out", tmp_path / "o",
                           "--no-report", "--no-analysis", "--kid-subsets", 5)
    assert code == 0, se
    d = json.loads((tmp_path / "o" / "results.json").read_text())
    jsonschema.validate(d, results_schema())
    want = fd_infinity(real.astype(np.float32), gen.astype(np.float32), seed=0)
    assert d["metrics"]["fd_infinity"] == pytest.approx(want.value, rel=1e-9)
    assert d["metrics"]["fd_infinity_fit"]["sizes"] == list(want.sizes)
    code, so, se = run_cli("scan", tmp_path / "gen.npz", "--real", tmp_path / "real.npz", "--out", tmp_path / "o2",
                           "--no-report", "--no-analysis", "--kid-subsets", 5)
    assert code == 0 and json.loads((tmp_path / "o2" / "results.json").read_text())["metrics"].get("fd_infinity") is None
