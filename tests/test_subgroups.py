"""Subgroup gaps on planted ground truth: skewed shares, a balanced control, per-group quality, intersections."""
import json

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from collapse_audit.analysis.subgroups import PERCEIVED_NOTE, subgroup_gaps


def _attr(res, name):
    return next(a for a in res["attributes"] if a["name"] == name)


def _group(attr, name):
    return next(g for g in attr["groups"] if g["name"] == name)


def _shuffled(counts: dict, seed: int) -> list:
    out = []
    for g, n in counts.items():
        out += [g] * n
    return np.random.default_rng(seed).permutation(out).tolist()


def test_skewed_shares_flagged_and_balanced_control_not():
    rng = np.random.default_rng(0)
    real = _shuffled({"A": 250, "B": 250}, 1)
    skew = _shuffled({"A": 450, "B": 50}, 2)  # 90/10
    fresh = rng.choice(["A", "B"], size=500).tolist()  # a fresh 50/50 sample
    res = subgroup_gaps({"g": real, "h": real}, {"g": skew, "h": fresh}, sources={"g": "manifest", "h": "manifest"})
    g, h = _attr(res, "g"), _attr(res, "h")
    a, b = _group(g, "A"), _group(g, "B")
    assert a["status"] == "over" and b["status"] == "under"
    assert b["diff"] == pytest.approx(0.1 - 0.5) and b["diff_ci"][1] < 0 and a["diff_ci"][0] > 0
    assert b["ratio"] == pytest.approx(0.2) and b["ratio_ci"][0] < 0.2 < b["ratio_ci"][1] < 1
    assert g["max_gap"] == pytest.approx(0.4) and g["dropped"] == []
    assert all(x["status"] == "ok" for x in h["groups"])
    assert all(x["diff_ci"][0] <= 0 <= x["diff_ci"][1] for x in h["groups"])
    assert h["max_gap"] < 0.1
    assert res["max_gap"] == pytest.approx(0.4) and res["max_gap_attribute"] == "g" and res["dropped"] == []
    assert g["perceived"] is False and a["precision"] is None and a["coverage"] is None
    json.dumps(res, allow_nan=False)


def test_dropped_group_reported_as_attr_eq_group():
    real = _shuffled({"x": 200, "y": 200, "z": 200}, 3)
    gen = _shuffled({"x": 300, "y": 300}, 4)
    res = subgroup_gaps({"age": real}, {"age": gen}, sources={"age": "manifest"})
    assert res["dropped"] == ["age=z"] and _attr(res, "age")["dropped"] == ["z"]


def _coverage_precision_bruteforce(real, gen, k):
    """Kynkaanniemi 2019 precision, Naeem 2020 coverage, directly from the full distance matrices (small n)."""
    rr = cdist(real, real)
    radii = np.sort(rr, axis=1)[:, k]  # column 0 is the point itself
    rg = cdist(real, gen)
    precision = float((rg < radii[:, None]).any(axis=0).mean())
    coverage = float((rg.min(axis=1) < radii).mean())
    return precision, coverage


def test_per_group_quality_shows_off_manifold_group():
    rng = np.random.default_rng(5)
    d, n = 8, 120
    shift_b = np.zeros(d)
    shift_b[0] = 8.0
    off = np.zeros(d)
    off[1] = 8.0
    real_a = rng.normal(size=(n, d))
    real_b = rng.normal(size=(n, d)) + shift_b
    gen_a = rng.normal(size=(n, d))
    gen_b = rng.normal(size=(n, d)) + shift_b + off  # right share, wrong place
    real_feats = np.concatenate([real_a, real_b]).astype(np.float32)
    gen_feats = np.concatenate([gen_a, gen_b]).astype(np.float32)
    labels = ["A"] * n + ["B"] * n
    res = subgroup_gaps({"grp": labels}, {"grp": labels}, sources={"grp": "manifest"},
                        real_feats=real_feats, gen_feats=gen_feats, k=5)
    attr = _attr(res, "grp")
    a, b = _group(attr, "A"), _group(attr, "B")
    assert a["status"] == b["status"] == "ok" and attr["max_gap"] == 0.0
    assert a["coverage"] > 0.8 and a["precision"] > 0.8
    assert b["coverage"] < 0.1 and b["precision"] < 0.1
    for grp, lo, hi in (("A", 0, n), ("B", n, 2 * n)):
        p_ref, c_ref = _coverage_precision_bruteforce(real_feats[lo:hi], gen_feats[lo:hi], 5)
        assert _group(attr, grp)["precision"] == pytest.approx(p_ref) and _group(attr, grp)["coverage"] == pytest.approx(c_ref)


def test_quality_null_for_small_groups():
    rng = np.random.default_rng(6)
    real = ["A"] * 50 + ["B"] * 4
    gen = ["A"] * 50 + ["B"] * 4
    res = subgroup_gaps({"g": real}, {"g": gen}, sources={"g": "manifest"},
                        real_feats=rng.normal(size=(54, 4)), gen_feats=rng.normal(size=(54, 4)), k=5)
    attr = _attr(res, "g")
    assert _group(attr, "A")["coverage"] is not None and _group(attr, "B")["coverage"] is None


def test_zero_shot_attributes_are_perceived():
    real = _shuffled({"man": 100, "woman": 100}, 7)
    gen = _shuffled({"man": 100, "woman": 100}, 8)
    res = subgroup_gaps({"perceived_gender": real, "site": real}, {"perceived_gender": gen, "site": gen},
                        sources={"perceived_gender": "zero-shot", "site": "manifest"},
                        intersections=[("perceived_gender", "site")],
                        group_order={"perceived_gender": ["woman", "man", "nonbinary"]})
    pg = _attr(res, "perceived_gender")
    assert pg["perceived"] is True and pg["source"] == "zero-shot" and pg["note"] == PERCEIVED_NOTE
    assert [g["name"] for g in pg["groups"]] == ["woman", "man", "nonbinary"]
    assert _attr(res, "site")["perceived"] is False
    inter = _attr(res, "perceived_gender×site")
    assert inter["perceived"] is True and "perceived" in inter["note"]
    with pytest.raises(ValueError):
        subgroup_gaps({"a": real}, {"a": gen}, sources={})


def test_intersections_find_a_dropped_combination():
    # real: every (gender, age) combination 150 times; gen: no old women, the other three 200 each
    real_g, real_a, gen_g, gen_a = [], [], [], []
    for g in ("m", "w"):
        for a in ("young", "old"):
            real_g += [g] * 150
            real_a += [a] * 150
            n = 0 if (g, a) == ("w", "old") else 200
            gen_g += [g] * n
            gen_a += [a] * n
    real_g.append(None)
    real_a.append("old")  # an image with unknown gender: unknown in the intersection too
    res = subgroup_gaps({"gender": real_g, "age": real_a}, {"gender": gen_g, "age": gen_a},
                        sources={"gender": "manifest", "age": "manifest"}, intersections=[("gender", "age")])
    inter = _attr(res, "gender×age")
    assert inter["dropped"] == ["w&old"] and res["dropped"] == ["gender×age=w&old"]
    assert inter["n_unlabelled"]["real"] == 1 and inter["n_labelled"]["real"] == 600
    assert _group(inter, "w&old")["real_share"] == pytest.approx(0.25)
    assert _group(_attr(res, "gender"), "w")["status"] == "under"
    assert _group(_attr(res, "age"), "old")["status"] == "under"
    assert res["max_gap"] == pytest.approx(0.25) and res["max_gap_attribute"] == "gender×age"
    json.dumps(res, allow_nan=False)


def test_attribute_without_values_on_one_side_is_skipped():
    res = subgroup_gaps({"a": ["x", "y"], "b": ["p", "q"]}, {"a": [None, None], "b": ["p", "q"]},
                        sources={"a": "manifest", "b": "manifest"})
    assert "skipped" in _attr(res, "a") and _attr(res, "a")["max_gap"] is None
    assert res["max_gap"] == 0.0
