"""The analyses of the public API on arrays: known answers, frozen result dataclasses, the results.json sections."""
from __future__ import annotations

import dataclasses
import inspect
import json
import re

import numpy as np
import pytest

import collapse_audit as ca
from collapse_audit import api, config, results
from collapse_audit.analysis import classes as A_classes
from collapse_audit.analysis import clusters as A_clusters
from collapse_audit.analysis import duplicates as A_duplicates
from collapse_audit.analysis import subgroups as A_subgroups
from collapse_audit.errors import InputError
from collapse_audit.index import normalise_rows

RESULT_TYPES = [ca.ClusterDropoutResult, ca.ClassDropoutResult, ca.SubgroupGapsResult, ca.DuplicatesResult]
WRAPPERS = [ca.cluster_dropout, ca.class_dropout, ca.subgroup_gaps, ca.find_duplicates]


def _modes(n_modes_gen=3, n_real=400, n_gen=300, d=8, seed=0):
    """Four well-separated modes in the real data; the generator draws the first ``n_modes_gen``."""
    rng = np.random.default_rng(seed)
    centres = 10.0 * np.eye(4, d)
    real = centres[np.arange(n_real) % 4] + rng.standard_normal((n_real, d))
    gen = centres[np.arange(n_gen) % n_modes_gen] + rng.standard_normal((n_gen, d))
    return real.astype(np.float32), gen.astype(np.float32)


# --------------------------------------------------------------------------- clusters
def test_a_mode_missing_from_gen_is_the_one_dropped_bin():
    real, gen = _modes()
    res = ca.cluster_dropout(real=real, gen=gen, k=4)
    assert isinstance(res, ca.ClusterDropoutResult)
    assert res.k == 4 and len(res.dropped) == 1 and res.under == ()
    (b,) = res.dropped
    # the dropped bin is mode 3: its real exemplars are real rows 3, 7, 11, ... (row i is mode i % 4)
    assert all(int(p[len("real["):-1]) % 4 == 3 for p in res.real_exemplars[b])
    assert res.gen_exemplars[b] == () and res.gen_counts[b] == 0 and res.gen_share[b] == 0.0
    assert res.real_share[b] == pytest.approx(0.25)
    assert res.status[b] == "dropped" and list(res.status).count("dropped") == 1
    assert res.ndb == 4 and res.ndb_fraction == 1.0  # the other three modes are over-represented (1/3 vs 1/4)
    assert set(res.over) == set(range(4)) - {b}
    assert res.n_real == 400 and res.n_gen == 300 and res.seed == config.SEED and res.alpha == config.ALPHA
    assert res.k_requested is None and res.method == "faiss-kmeans"


def test_cluster_result_fields_are_the_section_and_to_dict_is_the_analysis_output():
    real, gen = _modes(seed=1)
    rp, gp = [f"r/{i}.png" for i in range(len(real))], [f"g/{i}.png" for i in range(len(gen))]
    res = ca.cluster_dropout(real, gen, k=6, seed=3, alpha=0.1, real_paths=rp, gen_paths=gp, n_exemplars=2,
                             embedder="clip:x")
    direct = A_clusters.cluster_dropout(real, gen, real_paths=rp, gen_paths=gp, k=6, seed=3, alpha=0.1,
                                        n_exemplars=2, embedder="clip:x")
    assert res.to_dict() == direct
    sec = res.section
    assert (res.k, res.ndb, res.ndb_fraction, res.seed, res.alpha, res.embedder) == (
        sec["k"], sec["ndb"], sec["ndb_fraction"], 3, 0.1, "clip:x")
    assert list(res.dropped) == sec["dropped"] and list(res.under) == sec["under"] and list(res.over) == sec["over"]
    for b, row in enumerate(sec["bins"]):
        assert row["id"] == b
        assert res.real_counts[b] == row["n_real"] and res.gen_counts[b] == row["n_gen"]
        for key in ("real_share", "gen_share", "diff", "z", "p", "q"):
            assert getattr(res, key)[b] == row[key], key
        assert res.gen_share_ci[b].tolist() == row["gen_share_ci"]
        assert res.status[b] == row["status"]
        assert list(res.real_exemplars[b]) == row["real_exemplars"] and list(res.gen_exemplars[b]) == row["gen_exemplars"]
    assert res.real_share.shape == res.gen_share.shape == res.status.shape == (6,)
    assert res.gen_share_ci.shape == (6, 2) and res.real_counts.dtype == np.int64


def test_cluster_defaults_name_rows_as_audit_does_and_reproduce_its_clusters_section():
    real, gen = _modes(seed=2)
    res = ca.cluster_dropout(normalise_rows(real), normalise_rows(gen))  # the scan clusters normalised features
    assert res.real_exemplars[0][0].startswith("real[") and res.k == A_clusters.default_k(len(real))
    scan = ca.audit(gen=gen, real=real).to_dict()["clusters"]
    mine = res.to_dict()
    assert mine.pop("embedder") == "" and scan.pop("embedder")
    assert mine == scan


def test_cluster_k_above_n_over_5_is_reduced_and_recorded():
    real, gen = _modes(n_real=40, n_gen=40)
    res = ca.cluster_dropout(real, gen, k=50)
    assert res.k == 8 and res.k_requested == 50 and res.gen_share.shape == (8,)


def test_cluster_bad_inputs():
    real, gen = _modes()
    with pytest.raises(InputError, match="paths"):
        ca.cluster_dropout(real, gen, real_paths=["a", "b"])
    bad = real.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError):
        ca.cluster_dropout(bad, gen)
    with pytest.raises(ValueError, match="dimension"):
        ca.cluster_dropout(real, gen[:, :4])
    with pytest.raises(ValueError, match="alpha"):
        ca.cluster_dropout(real, gen, alpha=1.5)


# --------------------------------------------------------------------------- classes
def test_a_class_missing_from_gen_is_dropped():
    real = ["cat"] * 60 + ["dog"] * 60 + ["bird"] * 60 + [None] * 3
    gen = np.array(["cat"] * 90 + ["bird"] * 90, dtype=object)
    res = ca.class_dropout(real_labels=real, gen_labels=gen)
    assert isinstance(res, ca.ClassDropoutResult)
    assert res.dropped == ("dog",) and res.classes == ("bird", "cat", "dog")
    i = res.classes.index("dog")
    assert res.gen_counts[i] == 0 and res.real_counts[i] == 60 and res.gen_share[i] == 0.0
    assert res.expected_gen[i] == pytest.approx(60.0) and res.status[i] == "dropped"
    assert (res.n_real, res.n_gen, res.n_unlabelled_real, res.n_unlabelled_gen) == (180, 180, 3, 0)
    assert res.max_gap == pytest.approx(1 / 3) and res.max_gap_class == "dog"
    assert res.source == "manifest" and res.classifier is None
    assert res.section["labels_known"] == {"real": True, "gen": True}
    assert isinstance(res.chi2, results.ChiSquare) and res.chi2.p < 1e-6
    assert res.chi2_homogeneity.dof == 2


def test_class_result_fields_are_the_section_and_to_dict_is_the_analysis_output():
    rng = np.random.default_rng(0)
    real = rng.integers(0, 4, 300)  # numeric labels: compared as str
    gen = np.concatenate([rng.integers(0, 3, 200), [7, 7]]).astype(float)
    gen[:5] = np.nan  # unknown
    res = ca.class_dropout(real, gen, classes=["0", "9"], alpha=0.1, min_expected=3.0)
    rl = [str(v) for v in real.tolist()]
    gl = [None if v != v else str(v) for v in gen.tolist()]
    direct = A_classes.class_dropout(rl, gl, classes=["0", "9"], alpha=0.1, min_expected=3.0, source="manifest",
                                     labels_known={"real": True, "gen": True})
    assert res.to_dict() == direct
    assert res.classes[:2] == ("0", "9") and "7.0" in res.classes and res.n_unlabelled_gen == 5
    rows = direct["classes"]
    for i, row in enumerate(rows):
        assert res.classes[i] == row["name"] and res.status[i] == row["status"]
        assert res.real_counts[i] == row["n_real"] and res.gen_counts[i] == row["n_gen"]
        for key in ("real_share", "gen_share", "diff", "expected_gen", "z", "p", "q"):
            assert getattr(res, key)[i] == row[key], key
        for key in ("gen_share_ci", "diff_ci"):
            assert getattr(res, key)[i].tolist() == row[key], key
        if row["ratio"] is None:  # no real image of the class ("9", "7.0")
            assert np.isnan(res.ratio[i]) and np.isnan(res.ratio_ci[i]).all()
        else:
            assert res.ratio[i] == row["ratio"] and res.ratio_ci[i].tolist() == row["ratio_ci"]
    n = len(rows)
    assert res.gen_share.shape == (n,) and res.diff_ci.shape == (n, 2)
    assert (res.chi2.statistic, res.chi2.p, res.chi2.dof) == tuple(direct["chi2"].values())
    assert list(res.dropped) == direct["dropped"] and res.max_gap == direct["max_gap"]


def test_class_labels_known_and_source_are_recorded():
    res = ca.class_dropout(["a", "b"] * 20, ["a"] * 40, source="knn", labels_known={"real": True, "gen": False},
                           classifier={"kind": "knn", "id": "x", "agreement": 0.9})
    assert res.source == "knn" and res.section["labels_known"] == {"real": True, "gen": False}
    assert res.classifier["agreement"] == 0.9
    with pytest.raises(ValueError, match="no generated image"):
        ca.class_dropout(["a"] * 5, [None] * 5)
    with pytest.raises(InputError, match="one label per image"):
        ca.class_dropout("abc", ["a"])


# --------------------------------------------------------------------------- subgroups
def test_a_group_missing_from_gen_is_dropped_with_per_group_quality():
    real, gen = _modes(n_modes_gen=4, n_real=400, n_gen=400)
    real_age = ["young" if i % 2 else "old" for i in range(400)]
    gen_age = ["young"] * 400
    real_site = ["a" if i < 200 else "b" for i in range(400)]
    gen_site = ["a" if i < 200 else "b" for i in range(400)]
    res = ca.subgroup_gaps(real_attrs={"age": real_age, "site": real_site}, gen_attrs={"age": gen_age, "site": gen_site},
                           real_feats=real, gen_feats=gen, intersections=[("age", "site")])
    assert isinstance(res, ca.SubgroupGapsResult)
    assert "age=old" in res.dropped and res.max_gap_attribute in ("age", "age×site")
    age = res.attribute("age")
    assert isinstance(age, results.AttributeGaps) and age.groups == ("old", "young") and age.dropped == ("old",)
    i = age.groups.index("old")
    assert age.gen_counts[i] == 0 and age.status[i] == "dropped" and age.max_gap == pytest.approx(0.5)
    assert np.isnan(age.precision[i]) and np.isnan(age.coverage[i])  # no generated image of the group
    j = age.groups.index("young")
    assert 0 <= age.precision[j] <= 1 and 0 <= age.coverage[j] <= 1
    site = res.attribute("site")
    assert site.dropped == () and site.status.tolist() == ["ok", "ok"]
    inter = res.attribute("age×site")
    assert inter.parts == ("age", "site") and all("&" in g for g in inter.groups)
    assert res.k == config.K and res.alpha == config.ALPHA
    with pytest.raises(KeyError, match="colour"):
        res.attribute("colour")


def test_subgroup_result_is_the_analysis_output_and_a_skipped_attribute_has_empty_arrays():
    real_attrs = {"age": ["young", "old"] * 30, "mood": ["happy", "sad"] * 30}
    gen_attrs = {"age": ["young"] * 50 + ["old"] * 10, "mood": [None] * 60}
    res = ca.subgroup_gaps(real_attrs, gen_attrs, sources={"age": "manifest", "mood": "zero-shot"}, alpha=0.2, k=3,
                           group_order={"age": ["old", "young", "baby"]})
    direct = A_subgroups.subgroup_gaps(real_attrs, gen_attrs, sources={"age": "manifest", "mood": "zero-shot"},
                                       alpha=0.2, k=3, group_order={"age": ["old", "young", "baby"]})
    assert res.to_dict() == direct
    age, mood = res.attributes
    assert age.groups == ("old", "young", "baby") and age.source == "manifest" and not age.perceived
    for i, row in enumerate(direct["attributes"][0]["groups"]):
        for key in ("real_share", "gen_share", "diff", "z", "p", "q"):
            assert getattr(age, key)[i] == row[key], key
        assert age.status[i] == row["status"] and age.gen_share_ci[i].tolist() == row["gen_share_ci"]
    assert np.isnan(age.precision).all()  # no features given
    assert age.n_real == 60 and age.n_gen == 60 and age.chi2 is not None
    assert mood.skipped and mood.perceived and mood.groups == () and mood.max_gap is None and mood.chi2 is None
    assert mood.gen_share.shape == (0,) and mood.gen_share_ci.shape == (0, 2) and mood.status.shape == (0,)
    assert mood.n_real is None
    assert res.max_gap == age.max_gap and res.max_gap_attribute == "age"
    with pytest.raises(InputError, match="together"):
        ca.subgroup_gaps(real_attrs, gen_attrs, real_feats=np.zeros((60, 2)))
    with pytest.raises(ValueError, match="one side only"):
        ca.subgroup_gaps({"age": ["a"]}, {"sex": ["b"]})


# --------------------------------------------------------------------------- duplicates
def test_an_exact_duplicate_pair_and_a_copied_real_image_are_found():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((300, 32)).astype(np.float32)
    gen = rng.standard_normal((200, 32)).astype(np.float32)
    gen[150] = gen[20]  # the generator repeated itself
    gen[60] = real[5] * 3.0  # a copy of a real image (cosine distance 0)
    res = ca.find_duplicates(gen=gen, real=real)
    assert isinstance(res, ca.DuplicatesResult)
    assert res.n_groups == 1 and res.n_in_groups == 2 and res.dup_fraction == 2 / 200
    (g,) = res.groups
    assert isinstance(g, results.DuplicateGroup) and g.paths == ("gen[20]", "gen[150]") and g.size == 2
    assert g.max_distance < 1e-6 and not g.exact
    # calibrated threshold: the copy is the closest pair (others may fall below the 0.1% quantile by chance)
    c = res.copies[0]
    assert isinstance(c, results.NearCopy) and (c.gen_path, c.real_path) == ("gen[60]", "real[5]") and c.distance < 1e-6
    assert res.n_memorized == len(res.copies) >= 1 and res.n_exact == 0 and not c.exact
    assert res.memorized_fraction == res.n_memorized / 200 and 0 < res.p_excess < 1
    assert res.copy_quantile == config.COPY_QUANTILE and res.expected_by_chance == config.COPY_QUANTILE
    fixed = ca.find_duplicates(gen, real, copy_threshold=0.01)  # an override: exactly the copy, no base rate
    assert fixed.copies == (c,) and fixed.copy_threshold == 0.01 and fixed.expected_by_chance is None
    assert res.method == "exact" and res.approximation is None and res.n_gen == 200
    assert res.threshold == res.section["within_gen"]["threshold"]


def test_duplicates_to_dict_is_the_analysis_output_and_fields_match():
    rng = np.random.default_rng(1)
    gen = rng.standard_normal((120, 16)).astype(np.float32)
    gen[10:14] = gen[3]
    shas = [f"h{i}" for i in range(120)]
    shas[50] = shas[51] = "same"
    gp = [f"g{i}.png" for i in range(120)]
    res = ca.find_duplicates(gen, gen_paths=gp, gen_shas=shas, threshold=0.01, max_groups=5, embedder="e")
    direct = A_duplicates.find_duplicates(gen, None, gen_paths=gp, gen_shas=shas, threshold=0.01, max_groups=5,
                                          embedder="e")
    assert res.to_dict() == direct
    w = direct["within_gen"]
    assert direct["gen_vs_real"] is None and res.memorized_fraction is None and res.copies == ()
    assert (res.dup_fraction, res.n_groups, res.n_in_groups, res.exact_groups, res.threshold, res.n_saturated) == (
        w["dup_fraction"], w["n_groups"], w["n_in_groups"], w["exact_groups"], w["threshold"], w["n_saturated"])
    assert [dataclasses.asdict(g) for g in res.groups] == [{**g, "paths": tuple(g["paths"])} for g in w["groups"]]
    assert res.groups[0].size == 5 and res.groups[1].exact and res.groups[1].paths == ("g50.png", "g51.png")
    assert res.embedder == "e"


def test_duplicates_method_auto_follows_the_scan_rule():
    rng = np.random.default_rng(2)
    real = rng.standard_normal((400, 8)).astype(np.float32)
    gen = rng.standard_normal((400, 8)).astype(np.float32)
    approx = ca.find_duplicates(gen, real, exact_max_pairs=1e4, seed=1)
    assert approx.method == "approx" and approx.approximation is not None
    assert approx.section["search"].startswith("approximate")
    assert ca.find_duplicates(gen, real, method="exact", exact_max_pairs=1e4).method == "exact"
    with pytest.raises(ValueError, match="method"):
        ca.find_duplicates(gen, real, method="fast")
    with pytest.raises(InputError, match="real_paths"):
        ca.find_duplicates(gen, real_paths=["a"])


# --------------------------------------------------------------------------- all four
def _all_results():
    real, gen = _modes()
    return [
        ca.cluster_dropout(real, gen, k=4),
        ca.class_dropout(["a", "b"] * 30, ["a"] * 60),
        ca.subgroup_gaps({"x": ["p", "q"] * 30}, {"x": ["p"] * 60}, real_feats=real[:60], gen_feats=gen[:60]),
        ca.find_duplicates(gen, real),
    ]


def test_results_are_frozen_read_only_and_round_trip_through_json():
    for res in _all_results():
        name = type(res).__name__
        first = dataclasses.fields(res)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(res, first, None)
        for f in dataclasses.fields(res):
            v = getattr(res, f.name)
            if isinstance(v, np.ndarray):
                assert not v.flags.writeable, (name, f.name)
                with pytest.raises(ValueError):
                    v[...] = 0
        d = res.to_dict()
        assert d == res.section and d is not res.section
        d["mutated"] = True  # a copy: the result is unchanged
        assert "mutated" not in res.section
        back = type(res).from_section(json.loads(json.dumps(res.to_dict(), allow_nan=False)))
        assert back == res and back is not res
        for f in dataclasses.fields(res):
            a, b = getattr(res, f.name), getattr(back, f.name)
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b)
            elif f.name != "attributes":
                assert a == b, (name, f.name)
        with pytest.raises(TypeError):
            hash(res)
        assert name in repr(res)


def test_from_section_refuses_null_and_foreign_sections():
    for cls in RESULT_TYPES:
        with pytest.raises(ValueError, match="did not run"):
            cls.from_section(None)
        with pytest.raises(ValueError, match="missing"):
            cls.from_section({"something": 1})


def test_from_section_reads_the_sections_of_an_audit():
    real, gen = _modes()
    doc = ca.audit(gen=gen, real=real).to_dict()
    clusters = ca.ClusterDropoutResult.from_section(doc["clusters"])
    assert list(clusters.dropped) == doc["clusters"]["dropped"] and clusters.dropped  # k = 14: mode 3 spans bins
    assert all(int(p[len("real["):-1]) % 4 == 3 for b in clusters.dropped for p in clusters.real_exemplars[b])
    dups = ca.DuplicatesResult.from_section(doc["duplicates"])
    assert dups.dup_fraction == doc["duplicates"]["within_gen"]["dup_fraction"]


# --------------------------------------------------------------------------- the public names, defaults, docstrings
def test_public_names_point_at_the_wrappers_and_the_result_types():
    for f in WRAPPERS:
        assert f.__module__ == "collapse_audit.api" and f is getattr(api, f.__name__)
        assert f.__name__ in ca.__all__ and f.__name__ in api.__all__
    for cls in RESULT_TYPES:
        assert cls is getattr(results, cls.__name__) and cls.__name__ in ca.__all__
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
        assert "section" in {f.name for f in dataclasses.fields(cls)}


def test_wrapper_defaults_come_from_config():
    want = {"seed": config.SEED, "alpha": config.ALPHA, "k": config.K, "copy_quantile": config.COPY_QUANTILE,
            "exact_max_pairs": config.EXACT_MAX_PAIRS}
    seen = set()
    for f in WRAPPERS:
        for name, p in inspect.signature(f).parameters.items():
            if name in want and p.default is not None:
                assert p.default == want[name], (f.__name__, name)
                seen.add(name)
            if name not in ("real", "gen", "real_labels", "gen_labels", "real_attrs", "gen_attrs"):
                assert p.kind is p.KEYWORD_ONLY or (f is ca.find_duplicates and name == "real"), (f.__name__, name)
    assert seen == set(want)


_SECTION = re.compile(r"^(\s*)([A-Z][A-Za-z ]+)\n\1(-{3,})\s*$", re.M)


def _sections(doc: str) -> dict[str, list[str]]:
    """numpydoc sections of a docstring: title -> the names its entries document (``a, b : type`` lines)."""
    doc = inspect.cleandoc(doc)
    heads = list(_SECTION.finditer(doc))
    out = {}
    for m, nxt in zip(heads, heads[1:] + [None]):
        assert len(m.group(3)) == len(m.group(2)), f"underline of {m.group(2)!r} is not its length"
        body = doc[m.end(): nxt.start() if nxt else len(doc)]
        names = []
        for line in body.splitlines():
            if line and not line[0].isspace() and " : " in line:
                names += [n.strip() for n in line.split(" : ")[0].split(",")]
            elif line and not line[0].isspace() and line.strip().isidentifier():
                names.append(line.strip())
        out[m.group(2)] = names
    return out


@pytest.mark.parametrize("f", WRAPPERS, ids=lambda f: f.__name__)
def test_wrappers_have_numpydoc_docstrings_naming_every_parameter(f):
    s = _sections(f.__doc__)
    for title in ("Parameters", "Returns", "Raises", "Examples"):
        assert title in s, (f.__name__, title)
    assert set(s["Parameters"]) == set(inspect.signature(f).parameters), f.__name__
    assert s["Returns"] == [inspect.signature(f).return_annotation]
    assert re.search(r"\(\d{4}\)|\d{4}\)", f.__doc__), "a public function names the paper it implements"


@pytest.mark.parametrize("cls", RESULT_TYPES + [results.AttributeGaps, results.DuplicateGroup, results.NearCopy,
                                                results.ChiSquare], ids=lambda c: c.__name__)
def test_result_types_document_every_field(cls):
    s = _sections(cls.__doc__)
    assert "Attributes" in s
    assert set(s["Attributes"]) == {f.name for f in dataclasses.fields(cls)}, cls.__name__
    if cls in RESULT_TYPES:
        assert "References" in cls.__doc__
        fs = _sections(cls.from_section.__doc__)
        assert {"Parameters", "Returns", "Raises"} <= set(fs) and fs["Returns"] == [cls.__name__]
