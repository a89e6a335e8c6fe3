"""FID accuracy against the exact Frechet distance of the same float64 inputs (issue 12, item 14).

The exact value is computed with mpmath at 50 digits from the very same float64
means and covariances (every float64 is exact in mpmath), so the error
measured is the implementation's alone, not the inputs' rounding:

    d = |mu1 - mu2|^2 + Tr S1 + Tr S2 - 2 Tr (S1^1/2 S2 S1^1/2)^1/2,

with ``Tr (S1^1/2 S2 S1^1/2)^1/2 = sum sqrt(eig(F1^T S2 F1))`` for any exact
factor ``S1 = F1 F1^T`` (mpmath Cholesky, or an integer / feature factor).

Covariances have prescribed spectra (log-spaced eigenvalues over a ratio of
1e4, 1e8, 1e12) in seeded random orthogonal bases, the two bases close to each
other and the two spectra aligned, as real and generated features of one
embedder are; "far" pairs differ in mean and spectrum (FID ~ 40, ~9 % of
the trace), "near" pairs hardly at all (FID ~ 5e-4, ~1e-6 of the trace).

Measured on these inputs (D = 32; relative error to the exact value):

    ratio  pair   collapse_audit   pytorch-fid 0.3.0   (old eigh-of-L^T S2 L code)
    1e4    far    <= 8e-16         2e-13 .. 7e-13      ~1e-14
    1e4    near   <= 1.3e-13       1e-8 .. 2e-8        ~1e-9
    1e8    far    <= 4e-16         2e-9 .. 7e-9        7e-7 .. 1.1e-6
    1e8    near   <= 4e-14         2e-4 .. 3e-4        5e-2
    1e12   far    <= 6e-16         6e-8 .. 9e-8        3e-7 .. 5e-7
    1e12   near   <= 5e-14         5e-3 .. 7e-3        4e-2

Asserted: relative error <= 1e-12 (far) / 1e-10 (near) at every ratio, and
never above pytorch-fid's error on the same input (+ 1e-14 of the trace).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

mp = pytest.importorskip("mpmath")
pytest.importorskip("scipy")

from collapse_audit.metrics import GaussianStats, fid, fid_from_features, frechet_distance  # noqa: E402

DPS = 50
D = 32


# --------------------------------------------------------------------------- exact reference


def _mp(a: np.ndarray):
    return mp.matrix(np.asarray(a, dtype=np.float64).tolist())


def _exact_from_factor_t(mu1, f1t, mu2, s2) -> float:
    """Exact d for ``S1 = F1t^T F1t`` (mpmath r x D), ``S2`` (mpmath D x D), at DPS digits."""
    with mp.workdps(DPS):
        m = f1t * s2 * f1t.T
        m = (m + m.T) / 2
        ev = mp.eigsy(m, eigvals_only=True)
        tr_sqrt = mp.fsum(mp.sqrt(max(e, 0)) for e in ev)  # exact PSD: any negative is ~1e-50
        tr1 = mp.fsum(f1t[i, j] ** 2 for i in range(f1t.rows) for j in range(f1t.cols))
        tr2 = mp.fsum(s2[i, i] for i in range(s2.rows))
        dm = mp.fsum((mp.mpf(float(a)) - mp.mpf(float(b))) ** 2 for a, b in zip(mu1, mu2))
        return dm + tr1 + tr2 - 2 * tr_sqrt


def _exact(mu1, s1, mu2, s2) -> float:
    """Exact d of positive definite float64 covariances (mpmath Cholesky of S1)."""
    with mp.workdps(DPS):
        low = mp.cholesky(_mp(s1))
        return _exact_from_factor_t(mu1, low.T, mu2, _mp(s2))


def _pytorch_fid(mu1, s1, mu2, s2) -> float:
    from pytorch_fid.fid_score import calculate_frechet_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            v = calculate_frechet_distance(mu1, s1, mu2, s2)
        except ValueError:  # "Imaginary component": no value
            return float("nan")
    return float(np.real(v))


def _err(value: float, exact) -> float:
    """Absolute error against the mpmath value (inf for a missing / non-finite value)."""
    if not np.isfinite(value):
        return float("inf")
    with mp.workdps(DPS):
        return float(abs(mp.mpf(float(value)) - exact))


# --------------------------------------------------------------------------- inputs


def _rotation(rng, d, angle):
    """exp(K) for a random antisymmetric K of size ~angle (an orthogonal matrix near I)."""
    import scipy.linalg as sla

    k = rng.standard_normal((d, d)) * angle / np.sqrt(d)
    return sla.expm(k - k.T)


def _sym(s):
    return (s + s.T) / 2  # exactly symmetric, so every implementation sees the same matrix


def _pair(seed, ratio, kind, d=D, scale=100.0):
    """Two Gaussians whose covariances have eigenvalues log-spaced over ``ratio`` (largest ``scale``)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    a = np.logspace(0.0, -np.log10(ratio), d) * scale
    far = kind == "far"
    b = a * np.exp(rng.uniform(-0.5, 0.5, d) if far else rng.uniform(-1e-3, 1e-3, d))
    q2 = q @ _rotation(rng, d, 0.1 if far else 1e-3)
    mu1 = rng.standard_normal(d)
    mu2 = mu1 + (1.0 if far else 1e-3) * rng.standard_normal(d)
    return mu1, _sym((q * a) @ q.T), mu2, _sym((q2 * b) @ q2.T)


# --------------------------------------------------------------------------- ill-conditioned, full rank

TOL = {"far": 1e-12, "near": 1e-10}


@pytest.mark.parametrize("kind", ["far", "near"])
@pytest.mark.parametrize("ratio", [1e4, 1e8, 1e12])
@pytest.mark.parametrize("seed", [0, 1])
def test_ill_conditioned_matches_exact_and_beats_pytorch_fid(seed, ratio, kind):
    mu1, s1, mu2, s2 = _pair(seed, ratio, kind)
    exact = _exact(mu1, s1, mu2, s2)
    ours = frechet_distance(mu1, s1, mu2, s2)
    ref = _pytorch_fid(mu1, s1, mu2, s2)
    err, err_ref = _err(ours, exact), _err(ref, exact)
    scale = float(np.trace(s1) + np.trace(s2))
    assert err <= TOL[kind] * float(exact), (ratio, kind, err / float(exact), err_ref / float(exact))
    assert err <= err_ref + 1e-14 * scale, (ratio, kind, err, err_ref)
    # argument order does not matter beyond rounding
    assert abs(frechet_distance(mu2, s2, mu1, s1) - ours) <= TOL[kind] * float(exact)


def test_ill_conditioned_d48():
    """One larger case (D = 48, ratio 1e8): same accuracy."""
    mu1, s1, mu2, s2 = _pair(7, 1e8, "far", d=48)
    exact = _exact(mu1, s1, mu2, s2)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert _err(ours, exact) <= 1e-12 * float(exact)
    assert _err(ours, exact) <= _err(_pytorch_fid(mu1, s1, mu2, s2), exact) + 1e-14 * float(np.trace(s1) + np.trace(s2))


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("ratio", [1e4, 1e8, 1e12])
def test_identical_distributions_give_zero(ratio):
    mu, s, _, _ = _pair(3, ratio, "far")
    v = frechet_distance(mu, s, mu, s)
    assert 0.0 <= v <= 1e-13 * float(np.trace(s))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 24)) * np.logspace(0, -3, 24)
    assert 0.0 <= fid(x, x) <= 1e-13 * float(np.sum(np.var(x, axis=0)))
    assert 0.0 <= fid_from_features(x[:20], x[:20]) <= 1e-13 * float(np.sum(np.var(x, axis=0)))


@pytest.mark.parametrize("ratio", [1e4, 1e8, 1e12])
def test_diagonal_closed_form(ratio):
    """Diagonal (commuting) covariances: d = |dmu|^2 + sum (sqrt a_i - sqrt b_i)^2, a sum of positive terms."""
    rng = np.random.default_rng(5)
    d = 64
    a = np.logspace(0, -np.log10(ratio), d) * 50.0
    b = a * np.exp(rng.uniform(-0.2, 0.2, d))
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-13)
    # means equal, spectra nearly equal: only the tiny covariance term is left
    b = a * (1 + 1e-6 * rng.uniform(-1, 1, d))
    expected = float(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert frechet_distance(mu1, np.diag(a), mu1, np.diag(b)) == pytest.approx(expected, rel=1e-9)


# --------------------------------------------------------------------------- singular covariances


@pytest.mark.parametrize("rank", [4, 16, D - 1])
def test_singular_covariance_matches_exact(rank):
    """S1 = A^T A with a small-integer A (rank r < D): exactly PSD and singular in float64."""
    rng = np.random.default_rng(10 + rank)
    a = rng.integers(-3, 4, (rank, D)).astype(np.float64)
    s1 = a.T @ a  # integers: exact
    _, _, mu2, s2 = _pair(rank, 1e8, "far")
    mu1 = rng.standard_normal(D)
    exact = _exact_from_factor_t(mu1, _mp(a), mu2, _mp(s2))
    ours = frechet_distance(mu1, s1, mu2, s2)
    err, err_ref = _err(ours, exact), _err(_pytorch_fid(mu1, s1, mu2, s2), exact)
    assert err <= 1e-12 * float(exact), err / float(exact)
    assert err <= err_ref + 1e-14 * float(np.trace(s1) + np.trace(s2))
    # symmetric in the arguments (S2 full rank, S1 singular, or the other way round)
    assert abs(frechet_distance(mu2, s2, mu1, s1) - ours) <= 1e-12 * float(exact)


def test_both_singular_and_zero_covariance():
    rng = np.random.default_rng(20)
    a = rng.integers(-3, 4, (5, D)).astype(np.float64)
    b = rng.integers(-3, 4, (9, D)).astype(np.float64)
    s1, s2 = a.T @ a, b.T @ b
    mu1, mu2 = rng.standard_normal(D), rng.standard_normal(D)
    exact = _exact_from_factor_t(mu1, _mp(a), mu2, _mp(s2))
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert _err(ours, exact) <= 1e-12 * float(exact)
    assert _err(ours, exact) <= _err(_pytorch_fid(mu1, s1, mu2, s2), exact) + 1e-14 * float(np.trace(s1) + np.trace(s2))
    # a zero covariance (all features constant): d = |dmu|^2 + Tr S2
    z = np.zeros((D, D))
    assert frechet_distance(mu1, z, mu2, s2) == pytest.approx(float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s2)), rel=1e-14)
    assert frechet_distance(mu1, z, mu1, z) == 0.0


# --------------------------------------------------------------------------- N < D: fid_from_features


def _exact_features(x, y) -> float:
    """Exact d of the Gaussians of two feature sets (mean, ddof=1 covariance), from the features themselves."""
    with mp.workdps(DPS):
        def centred(z):
            zm = _mp(z)
            n = zm.rows
            mean = [mp.fsum(zm[i, j] for i in range(n)) / n for j in range(zm.cols)]
            c = mp.matrix(n, zm.cols)
            for i in range(n):
                for j in range(zm.cols):
                    c[i, j] = zm[i, j] - mean[j]
            return c / mp.sqrt(n - 1), mean

        cx, mx = centred(x)  # S1 = cx^T cx, rank n - 1 exactly
        cy, my = centred(y)
        g = cx * cy.T  # n x m; F1^T S2 F1 = g g^T
        m = g * g.T
        ev = mp.eigsy((m + m.T) / 2, eigvals_only=True)
        tr_sqrt = mp.fsum(mp.sqrt(max(e, 0)) for e in ev)
        tr1 = mp.fsum(cx[i, j] ** 2 for i in range(cx.rows) for j in range(cx.cols))
        tr2 = mp.fsum(cy[i, j] ** 2 for i in range(cy.rows) for j in range(cy.cols))
        dm = mp.fsum((p - q) ** 2 for p, q in zip(mx, my))
        return dm + tr1 + tr2 - 2 * tr_sqrt


@pytest.mark.parametrize("n,m", [(12, 20), (12, 80)])
def test_n_less_than_d_matches_exact(n, m):
    """Fewer samples than dimensions (rank-deficient covariances): the factor path is exact to rounding.

    (12, 20): both sets have N - 1 < D, both centred feature matrices are the factors;
    (12, 80): the larger set is full rank, its covariance is factored.
    """
    rng = np.random.default_rng(30 + m)
    scales = np.logspace(0, -3, D)
    x = rng.standard_normal((n, D)) * scales
    y = rng.standard_normal((m, D)) * scales * 1.2 + 0.1
    exact = _exact_features(x, y)
    ours = fid_from_features(x, y)
    assert _err(ours, exact) <= 1e-12 * float(exact), _err(ours, exact) / float(exact)
    assert fid_from_features(y, x) == pytest.approx(ours, rel=1e-12)  # order of the sets does not matter
    # through float64 covariances (rank deficient only up to rounding: ~sqrt(eps) relative in the worst case)
    mu1, s1, mu2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    dense = frechet_distance(mu1, s1, mu2, s2)
    assert _err(dense, exact) <= 1e-6 * float(exact)
    assert fid(x, y) == pytest.approx(dense, rel=1e-6)
    assert _err(ours, exact) <= _err(_pytorch_fid(mu1, s1, mu2, s2), exact) + 1e-14 * float(np.trace(s1) + np.trace(s2))


def test_n_less_than_d_single_sample_and_gaussian_stats():
    rng = np.random.default_rng(40)
    x, y = rng.standard_normal((1, D)), rng.standard_normal((10, D))
    # one real sample: zero covariance, d = |dmu|^2 + Tr S2
    sy = GaussianStats.from_features(y)
    expected = float((x[0] - sy.mean) @ (x[0] - sy.mean) + np.trace(sy.cov))
    assert fid_from_features(x, y) == pytest.approx(expected, rel=1e-13)
    with pytest.raises(ValueError):
        fid_from_features(x, x)  # no covariance from one sample on either side
