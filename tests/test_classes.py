"""Per-class dropout on planted ground truth; statistics against scipy and interval coverage."""
import json

import numpy as np
import pytest
from scipy import stats

from collapse_audit.analysis.classes import GEN_ONLY_NOTE, class_dropout

CLASSES = [f"c{i}" for i in range(10)]


def _labels(counts: dict) -> list:
    out = []
    for c, n in counts.items():
        out += [c] * int(n)
    return out


def _run(real, gen, **kw):
    kw.setdefault("source", "folders")
    kw.setdefault("labels_known", {"real": True, "gen": True})
    return class_dropout(real, gen, **kw)


@pytest.fixture(scope="module")
def planted():
    real = _labels({c: 200 for c in CLASSES})
    # c0 and c1 removed; c2 thinned to a quarter of its real share (0.1 -> 0.025); the rest share what is left
    gen_counts = {"c0": 0, "c1": 0, "c2": 50, **{c: 279 for c in CLASSES[3:]}}
    gen = _labels(gen_counts)
    rng = np.random.default_rng(0)
    return rng.permutation(real).tolist(), rng.permutation(gen).tolist(), gen_counts


def test_planted_dropout(planted):
    real, gen, gen_counts = planted
    res = _run(real, gen)
    assert res["dropped"] == ["c0", "c1"]
    assert res["under"] == ["c2"]
    by = {r["name"]: r for r in res["classes"]}
    assert by["c2"]["status"] == "under" and by["c2"]["gen_share"] == pytest.approx(50 / 2003)
    # the other classes really are over-represented (0.139 vs 0.1, z ~ 3.8)
    assert sorted(res["over"]) == CLASSES[3:]
    assert [r["name"] for r in res["classes"]] == CLASSES
    n_gen = sum(gen_counts.values())
    for c in CLASSES:
        r = by[c]
        assert r["n_real"] == 200 and r["n_gen"] == gen_counts[c]
        assert r["real_share"] == pytest.approx(0.1) and r["gen_share"] == pytest.approx(gen_counts[c] / n_gen)
        assert r["diff"] == pytest.approx(r["gen_share"] - r["real_share"])
        assert r["diff_ci"][0] <= r["diff"] <= r["diff_ci"][1]
        assert r["gen_share_ci"][0] <= r["gen_share"] <= r["gen_share_ci"][1]
        assert r["ratio"] == pytest.approx(r["gen_share"] / 0.1)
    assert by["c0"]["gen_share_ci"][0] == 0.0 and by["c0"]["diff_ci"][1] < 0
    assert res["max_gap"] == pytest.approx(0.1) and res["max_gap_class"] in ("c0", "c1")
    assert res["n_unlabelled"] == {"real": 0, "gen": 0}
    json.dumps(res, allow_nan=False)


def test_chi2_matches_scipy(planted):
    real, gen, gen_counts = planted
    res = _run(real, gen)
    obs = np.array([gen_counts[c] for c in CLASSES], float)
    ref = stats.chisquare(obs, f_exp=np.full(10, 0.1) * obs.sum())
    assert res["chi2"]["statistic"] == pytest.approx(ref.statistic, rel=1e-10)
    assert res["chi2"]["p"] == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-300)
    assert res["chi2"]["dof"] == 9
    # homogeneity of the 2 x 10 table, closed form: sum (O - E)^2 / E with E = row total * column total / n
    table = np.stack([np.full(10, 200.0), obs])
    e = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    assert res["chi2_homogeneity"]["statistic"] == pytest.approx(((table - e) ** 2 / e).sum(), rel=1e-10)
    assert res["chi2_homogeneity"]["dof"] == 9 and res["chi2_homogeneity"]["p"] < 1e-10


def test_p_values_match_scipy_contingency(planted):
    real, gen, gen_counts = planted
    res = _run(real, gen)
    n_gen = sum(gen_counts.values())
    for r in res["classes"]:
        table = [[r["n_gen"], n_gen - r["n_gen"]], [r["n_real"], 2000 - r["n_real"]]]
        _, p_ref, _, _ = stats.chi2_contingency(table, correction=False)
        assert r["p"] == pytest.approx(p_ref, rel=1e-8, abs=1e-300)
    q_ref = stats.false_discovery_control([r["p"] for r in res["classes"]], method="bh")
    np.testing.assert_allclose([r["q"] for r in res["classes"]], q_ref, rtol=1e-10)


def test_balanced_control_flags_nothing():
    rng = np.random.default_rng(1)
    real = rng.choice(CLASSES, size=2000).tolist()
    gen = rng.choice(CLASSES, size=2000).tolist()
    res = _run(real, gen)
    assert res["dropped"] == [] and res["under"] == [] and res["over"] == []
    assert all(r["status"] == "ok" for r in res["classes"])
    assert all(r["diff_ci"][0] <= 0 <= r["diff_ci"][1] for r in res["classes"])
    # the goodness of fit treats the real shares as exact; the homogeneity test is the calibrated one
    assert res["chi2_homogeneity"]["p"] > 0.05


def test_intervals_cover_true_share():
    """Over repeated draws from known proportions the 95% intervals contain the truth about 95% of the time."""
    rng = np.random.default_rng(2)
    p_real = np.array([0.5, 0.3, 0.2])
    p_gen = np.array([0.6, 0.3, 0.1])
    names = ["a", "b", "c"]
    hits_share = np.zeros(3)
    hits_diff = np.zeros(3)
    reps = 300
    for _ in range(reps):
        real = rng.choice(names, size=300, p=p_real).tolist()
        gen = rng.choice(names, size=300, p=p_gen).tolist()
        res = _run(real, gen)
        for i, r in enumerate(res["classes"]):
            hits_share[i] += r["gen_share_ci"][0] <= p_gen[i] <= r["gen_share_ci"][1]
            hits_diff[i] += r["diff_ci"][0] <= p_gen[i] - p_real[i] <= r["diff_ci"][1]
    cover_s, cover_d = hits_share / reps, hits_diff / reps
    assert np.all(cover_s > 0.91) and np.all(cover_s < 0.99), cover_s
    assert np.all(cover_d > 0.91) and np.all(cover_d < 0.995), cover_d


def test_unlabelled_gen_only_and_declared_classes():
    real = ["a"] * 100 + ["b"] * 100 + [None] * 7
    gen = ["a"] * 90 + ["b"] * 90 + ["z"] * 20 + [None] * 3
    res = _run(real, gen, classes=["b", "a", "never"], source="zero-shot",
               labels_known={"real": False, "gen": False},
               classifier={"kind": "zero-shot", "id": "clip", "agreement": None, "n_checked": 0, "note": ""})
    assert res["n_unlabelled"] == {"real": 7, "gen": 3}
    assert [r["name"] for r in res["classes"]] == ["b", "a", "never", "z"]
    by = {r["name"]: r for r in res["classes"]}
    assert by["z"]["status"] == "over" and by["z"]["note"] == GEN_ONLY_NOTE and by["z"]["ratio"] is None
    assert by["never"]["status"] == "ok" and by["never"]["n_real"] == 0 and by["never"]["p"] == 1.0
    assert by["a"]["real_share"] == pytest.approx(0.5) and by["a"]["gen_share"] == pytest.approx(0.45)
    # chi-square tests the classes the real data has (z cannot be tested against a zero proportion)
    ref = stats.chisquare([90, 90], f_exp=[90, 90])
    assert res["chi2"]["dof"] == 1 and res["chi2"]["statistic"] == pytest.approx(ref.statistic)
    assert res["classifier"]["kind"] == "zero-shot" and res["source"] == "zero-shot"
    json.dumps(res, allow_nan=False)


def test_min_expected_guards_dropped(planted):
    real, gen, _ = planted
    res = _run(real, gen, min_expected=1e6)
    assert res["dropped"] == [] and set(res["under"]) == {"c0", "c1", "c2"}


def test_negligible_but_nonzero_is_dropped():
    real = ["a"] * 500 + ["b"] * 500
    gen = ["a"] * 995 + ["b"] * 5  # b at 1% of the sample vs 50% real: <= a tenth of the real share
    res = _run(real, gen)
    assert res["dropped"] == ["b"] and res["over"] == ["a"]


def test_no_labels_is_an_error():
    with pytest.raises(ValueError):
        _run([None, None], ["a"])
