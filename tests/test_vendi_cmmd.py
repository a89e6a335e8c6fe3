"""Vendi score and CMMD against their reference implementations and closed forms.

References, ported line for line into this file as oracles (the packages are
not dependencies):

- Vendi: ``vendi_score/vendi.py`` of vertaix/Vendi-Score (Friedman & Dieng
  2023): ``score_K`` on the N x N cosine kernel and ``score_dual`` on the
  D x D one, with its ``entropy_q``;
- CMMD: ``cmmd/distance.py`` of google-research (Jayasumana et al. 2024), the
  JAX ``mmd`` (sigma 10, scale 1000, diagonals included), in NumPy.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from collapse_audit.metrics import cmmd, vendi_score


# --------------------------------------------------------------------------- reference oracles (ported)
def _ref_entropy_q(p, q=1):
    p_ = p[p > 0]
    if q == 1:
        return -(p_ * np.log(p_)).sum()
    if q == "inf":
        return -np.log(np.max(p))
    return np.log((p_ ** q).sum()) / (1 - q)


def _ref_normalize(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _ref_score_K(K, q=1):
    w = scipy.linalg.eigvalsh(K / K.shape[0])
    return np.exp(_ref_entropy_q(w, q=q))


def _ref_score_dual(X, q=1):
    X = _ref_normalize(X)
    w = scipy.linalg.eigvalsh(X.T @ X / X.shape[0])
    return np.exp(_ref_entropy_q(w, q=q))


def _ref_cmmd(x, y, sigma=10, scale=1000):
    x_sq = np.diag(x @ x.T)
    y_sq = np.diag(y @ y.T)
    gamma = 1 / (2 * sigma**2)
    k_xx = np.mean(np.exp(-gamma * (-2 * x @ x.T + x_sq[:, None] + x_sq[None, :])))
    k_xy = np.mean(np.exp(-gamma * (-2 * x @ y.T + x_sq[:, None] + y_sq[None, :])))
    k_yy = np.mean(np.exp(-gamma * (-2 * y @ y.T + y_sq[:, None] + y_sq[None, :])))
    return scale * (k_xx + k_yy - 2 * k_xy)


# --------------------------------------------------------------------------- Vendi
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n,d", [(300, 16), (40, 128), (5, 64)])  # N > D, N < D, N << D
@pytest.mark.parametrize("q", [1, 0.5, 2, "inf"])
def test_vendi_equals_the_reference(seed, n, d, q):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * rng.uniform(0.01, 100, size=(n, 1))  # very different row scales
    want_dual = _ref_score_dual(x, q)
    want_k = _ref_score_K(_ref_normalize(x) @ _ref_normalize(x).T, q)
    got = vendi_score(x.astype(np.float32), q, block=64)
    assert got == pytest.approx(want_dual, rel=1e-5)
    assert got == pytest.approx(want_k, rel=1e-5)


def test_vendi_closed_forms():
    rng = np.random.default_rng(0)
    v = rng.standard_normal(32)
    assert vendi_score(np.tile(v, (50, 1))) == pytest.approx(1.0, abs=1e-9)  # identical samples
    assert vendi_score(np.eye(20, 32)) == pytest.approx(20.0, rel=1e-9)  # mutually orthogonal
    two = np.vstack([np.tile(np.eye(32)[0], (30, 1)), np.tile(np.eye(32)[1], (30, 1))])
    assert vendi_score(two) == pytest.approx(2.0, rel=1e-9)  # two modes, equal weights
    dup = np.vstack([rng.standard_normal((40, 8)), ] * 3)  # duplicated rows change nothing (weights scale)
    assert vendi_score(dup) == pytest.approx(vendi_score(dup[:40]), rel=1e-9)
    with pytest.raises(ValueError):
        vendi_score(np.zeros((0, 4)))
    with pytest.raises(ValueError):
        vendi_score(v[None], q=-1)


# --------------------------------------------------------------------------- CMMD
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("m,n,d", [(200, 150, 32), (30, 300, 768), (7, 7, 4)])
def test_cmmd_equals_the_reference(seed, m, n, d):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, d))
    y = rng.standard_normal((n, d)) * 2.0 + 0.3
    want = _ref_cmmd(_ref_normalize(x), _ref_normalize(y))  # the reference embeds then L2-normalises
    assert cmmd(x, y, block=37) == pytest.approx(want, rel=1e-9, abs=1e-12)
    want_raw = _ref_cmmd(x, y)
    assert cmmd(x, y, normalize=False, block=37) == pytest.approx(want_raw, rel=1e-9, abs=1e-12)


def test_cmmd_unbiased_and_closed_forms():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((60, 16))
    assert cmmd(x, x) == pytest.approx(0.0, abs=1e-12)  # the V-statistic of a set with itself
    # unbiased: drop the diagonals; by hand on a small case
    y = rng.standard_normal((40, 16)) + 1.0
    xn, yn = x / np.linalg.norm(x, axis=1, keepdims=True), y / np.linalg.norm(y, axis=1, keepdims=True)

    def k(a, b):
        return np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / 200.0)

    kxx, kyy, kxy = k(xn, xn), k(yn, yn), k(xn, yn)
    want = 1000 * ((kxx.sum() - 60) / (60 * 59) + (kyy.sum() - 40) / (40 * 39) - 2 * kxy.mean())
    assert cmmd(x, y, unbiased=True, block=16) == pytest.approx(want, rel=1e-9)
    # the unbiased estimate of a distribution against itself is centred on 0 (over many draws)
    vals = [cmmd(rng.standard_normal((50, 8)), rng.standard_normal((50, 8)), unbiased=True) for _ in range(200)]
    assert abs(np.mean(vals)) < 3 * np.std(vals) / np.sqrt(len(vals))
