"""NDB per-cluster dropout (Richardson & Weiss 2018) on planted Gaussian mixtures.

Ground truth: real = 10 well-separated modes in D = 32, balanced; generated =
fresh draws from the same mixture with some modes removed / thinned / boosted.
Clusters are mapped to modes by the majority mode of their real members (the
full membership is read back through ``real_exemplars`` with a huge
``n_exemplars``), so every check is against the planted modes, never against
the code's own output.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as st

from collapse_audit.analysis.clusters import DROP_RATIO, cluster_dropout, default_k

D, M, N_REAL = 32, 10, 2000
ALL = 10**6  # n_exemplars that returns every member of a bin


def _mixture(rng, n, weights, centers):
    w = np.asarray(weights, float)
    w = w / w.sum()
    lab = rng.choice(len(w), size=n, p=w)
    return (centers[lab] + rng.normal(size=(n, centers.shape[1]))).astype(np.float32), lab


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(1234)
    centers = rng.normal(size=(M, D)) * 4.0  # modes ~ 32 apart, unit spread: well separated
    xr, lr = _mixture(rng, N_REAL, np.ones(M), centers)
    return rng, centers, xr, lr


def _paths(n, prefix):
    return [f"{prefix}{i}" for i in range(n)]


def _run(xr, xg, **kw):
    kw.setdefault("n_exemplars", ALL)
    return cluster_dropout(xr, xg, real_paths=_paths(len(xr), ""), gen_paths=_paths(len(xg), "g"), **kw)


def _cluster_modes(res, lr):
    """Majority planted mode of each cluster's real members, and the cluster purity."""
    modes, purity = [], []
    for b in res["bins"]:
        members = np.array([int(p) for p in b["real_exemplars"]], dtype=int)
        assert len(members) == b["n_real"]
        counts = np.bincount(lr[members], minlength=M)
        modes.append(int(counts.argmax()))
        purity.append(counts.max() / max(1, counts.sum()))
    return np.array(modes), np.array(purity)


def test_default_k():
    assert default_k(2000) == 32  # round(sqrt(1000))
    assert default_k(50) == 5
    assert default_k(19) == 1 and default_k(20) == 2
    assert default_k(10**7) == 100
    for n in [20, 37, 64, 100, 150, 333, 1000, 5000, 40000]:
        k = default_k(n)
        assert 2 <= k <= n // 5
        assert n / k >= 10  # enough real samples per bin on average for the z-test


def test_two_dropped_modes(world):
    rng, centers, xr, lr = world
    w = np.ones(M)
    w[[2, 7]] = 0
    xg, _ = _mixture(rng, 2000, w, centers)
    res = _run(xr, xg, seed=0)
    modes, purity = _cluster_modes(res, lr)
    assert res["k"] == default_k(N_REAL) == 32
    assert purity.min() == 1.0  # the modes are well separated: every bin is one mode
    expected = sorted(int(b) for b in np.nonzero(np.isin(modes, [2, 7]))[0])
    assert len(expected) >= 2
    assert sorted(res["dropped"]) == expected
    assert res["under"] == []
    # the removed mass went to the other 8 modes (each 1/8 instead of 1/10): any
    # "over" bin must belong to a kept mode, never to a dropped one
    assert all(modes[b] not in (2, 7) for b in res["over"])
    for b in res["bins"]:
        if b["id"] in expected:
            assert b["n_gen"] == 0 and b["status"] == "dropped" and b["q"] < 0.05
    assert res["ndb"] == len(res["dropped"]) + len(res["under"]) + len(res["over"])
    assert res["ndb_fraction"] == pytest.approx(res["ndb"] / res["k"])


def test_healthy_control_flags_nothing(world):
    rng, centers, xr, lr = world
    xg, _ = _mixture(rng, 2000, np.ones(M), centers)
    res = _run(xr, xg, seed=0)
    assert res["dropped"] == [] and res["under"] == []
    assert res["ndb"] <= 1 and res["ndb_fraction"] <= 1 / 32


def test_thinned_and_boosted_modes(world):
    rng, centers, xr, lr = world
    w = np.ones(M)
    w[3] = 0.2  # generator draws mode 3 at 20% of its share
    w[5] = 3.0  # and mode 5 three times too often
    xg, _ = _mixture(rng, 4000, w, centers)
    res = _run(xr, xg, seed=0)
    modes, _ = _cluster_modes(res, lr)
    assert res["dropped"] == []
    thin = [b for b in res["bins"] if modes[b["id"]] == 3]
    boost = [b for b in res["bins"] if modes[b["id"]] == 5]
    assert thin and boost
    for b in thin:
        assert b["status"] == "under", b
        assert b["gen_share"] > DROP_RATIO * b["real_share"]
        assert b["gen_share_ci"][0] <= b["gen_share"] <= b["gen_share_ci"][1]
    for b in boost:
        assert b["status"] == "over", b
        assert b["z"] > 0
    # nothing from an untouched mode is flagged "over"; "under" is allowed there
    # only because renormalisation really lowers their share (1/11.2 vs 1/10)
    assert {int(modes[b]) for b in res["over"]} == {5}
    assert {int(modes[b]) for b in res["under"]} >= {3}


def test_statistics_match_closed_form_and_bh(world):
    rng, centers, xr, lr = world
    w = np.ones(M)
    w[0] = 0.5
    xg, _ = _mixture(rng, 1500, w, centers)
    res = _run(xr, xg, seed=3, k=12)
    n_r, n_g = len(xr), len(xg)
    assert sum(b["n_real"] for b in res["bins"]) == n_r and sum(b["n_gen"] for b in res["bins"]) == n_g
    p_ref = []
    for b in res["bins"]:
        pr, pg = b["n_real"] / n_r, b["n_gen"] / n_g
        pool = (b["n_real"] + b["n_gen"]) / (n_r + n_g)
        z = (pg - pr) / np.sqrt(pool * (1 - pool) * (1 / n_r + 1 / n_g))
        assert b["z"] == pytest.approx(z, rel=1e-9, abs=1e-12)
        assert b["p"] == pytest.approx(2 * st.norm.sf(abs(z)), rel=1e-9, abs=1e-300)
        assert b["diff"] == pytest.approx(pg - pr)
        p_ref.append(b["p"])
    # Benjamini-Hochberg by the textbook step-up definition
    p_ref = np.array(p_ref)
    m = p_ref.size
    rank = np.array([(p_ref <= pj).sum() for pj in p_ref])  # step-up rank (ties share the top rank)
    q_ref = np.array([min(1.0, min(m * p_ref[j] / rank[j] for j in range(m) if p_ref[j] >= pi)) for pi in p_ref])
    q = np.array([b["q"] for b in res["bins"]])
    assert np.all(q >= p_ref - 1e-15)
    np.testing.assert_allclose(q, q_ref, rtol=1e-12)
    assert res["ndb"] == int((q < 0.05).sum())


def test_deterministic_and_exemplars(world):
    rng, centers, xr, lr = world
    xg, _ = _mixture(np.random.default_rng(5), 800, np.ones(M), centers)
    a = _run(xr, xg, seed=7, n_exemplars=4)
    b = _run(xr, xg, seed=7, n_exemplars=4)
    assert a == b
    full = _run(xr, xg, seed=7)
    for small, big in zip(a["bins"], full["bins"]):
        assert small["real_exemplars"] == big["real_exemplars"][:4]
        assert small["gen_exemplars"] == big["gen_exemplars"][: min(4, big["n_gen"])]
        assert len(small["real_exemplars"]) == min(4, big["n_real"])
        # exemplars of one bin come from one planted mode
        assert len({int(lr[int(p)]) for p in small["real_exemplars"]}) <= 1
    assert [x["id"] for x in a["bins"]] == list(range(a["k"]))
    assert a["method"] == "faiss-kmeans" and a["seed"] == 7


def test_exemplars_nearest_centroid_first():
    """Exemplars are ordered by distance to the centroid: with two tight modes and
    k = 2 the centroids are the mode means, so the order is checkable by hand."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(60, 8)) * 0.1
    b = rng.normal(size=(60, 8)) * 0.1 + 10.0
    xr = np.vstack([a, b]).astype(np.float32)
    res = cluster_dropout(xr, xr[:30], real_paths=[str(i) for i in range(120)], gen_paths=[f"g{i}" for i in range(30)],
                          k=2, n_exemplars=5)
    for bin_ in res["bins"]:
        idx = [int(p) for p in bin_["real_exemplars"]]
        members = np.arange(60) if idx[0] < 60 else np.arange(60, 120)
        c = xr[members].mean(0)
        order = members[np.argsort(((xr[members] - c) ** 2).sum(1), kind="stable")]
        assert idx == [int(i) for i in order[:5]]


def test_k_is_capped_and_validated():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    res = cluster_dropout(x, x[:50], real_paths=_paths(200, ""), gen_paths=_paths(50, "g"), k=1000, n_exemplars=0)
    assert res["k"] == 40 and res["k_requested"] == 1000
    assert all(b["real_exemplars"] == [] for b in res["bins"])
    with pytest.raises(ValueError):
        cluster_dropout(x, x[:, :3], real_paths=_paths(200, ""), gen_paths=_paths(200, "g"))
