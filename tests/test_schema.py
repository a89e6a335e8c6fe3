"""The JSON Schema of results.json: it is a valid draft 2020-12 schema, documents every
property, accepts hand-built results and a real scan with every analysis section filled
(every key that scan emits is documented), and rejects broken ones."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

jsonschema = pytest.importorskip("jsonschema")

from collapse_audit.gate import evaluate, parse_rule  # noqa: E402
from collapse_audit.schema import results_schema, validate_results  # noqa: E402

CLIP = "clip:ViT-B-32/openai"


def _metrics(**kw):
    m = {"fid": 12.5, "kid": 0.004, "kid_std": 0.001, "precision": 0.7, "recall": 0.6,
         "density": 0.95, "coverage": 0.85, "k": 5}
    m.update(kw)
    return m


def _embedder(id_, dim, **kw):
    e = {"id": id_, "name": id_, "dim": dim, "preprocess_id": "resize-299-bilinear", "weights": "pretrained",
         "weights_sha256": "6726825d" + "0" * 56, "random_weights": False, "seed": None, "device": "cpu"}
    e.update(kw)
    return e


def _bin(id_, n_real, n_gen, status):
    rs, gs = n_real / 500, n_gen / 10
    return {"id": id_, "n_real": n_real, "n_gen": n_gen, "real_share": rs, "gen_share": gs, "gen_share_ci": [0.0, 1.0],
            "diff": gs - rs, "z": 0.0, "p": 0.5, "q": 0.5, "status": status, "real_exemplars": ["r.png"], "gen_exemplars": []}


def _category(name, n_real, n_gen, status):
    rs, gs = n_real / 500, n_gen / 10
    return {"name": name, "n_real": n_real, "n_gen": n_gen, "real_share": rs, "gen_share": gs, "gen_share_ci": [0.0, 1.0],
            "diff": gs - rs, "diff_ci": [-1.0, 1.0], "ratio": gs / rs, "ratio_ci": [0.0, 3.0], "z": 0.0, "p": 0.5,
            "q": 0.5, "status": status}


def minimal_results() -> dict:
    """A scan of two folders with no optional analyses and no rules."""
    side = {"source": "real/", "kind": "folder", "n_images": 10, "n_failed": 0, "n_files": 10}
    return {
        "schema_version": "1.0",
        "tool": {"name": "collapse-audit", "version": "0.1.0", "command": ["collapse-audit", "scan", "gen", "--real", "real"],
                 "python": "3.11.7", "torch": "2.4.0"},
        "created_at": "2024-05-01T12:00:00+00:00",
        "inputs": {"real": side, "gen": dict(side, source="gen/")},
        "failures": [],
        "embedders": [_embedder("inception-v3", 2048, weights="random", weights_sha256=None, random_weights=True, seed=0)],
        "primary_embedder": "inception-v3",
        "metrics": _metrics(fid=None, kid=None, kid_std=None),
        "by_embedder": {"inception-v3": {"metrics": _metrics(fid=None, kid=None, kid_std=None), "n_real": 10, "n_gen": 10}},
        "clusters": None,
        "classes": None,
        "subgroups": None,
        "duplicates": None,
        "gate": {"passed": True, "rules": [], "violations": []},
        "timings": {},
        "notes": [],
        "settings": {},
    }


def full_results() -> dict:
    """Every optional section filled, two embedders, failures, CIs, a failed gate, unknown extra keys."""
    r = minimal_results()
    r["inputs"]["gen"].update(n_failed=2, n_files=12)
    r["inputs"]["real"] = {"source": "real.npz", "kind": "features", "n_images": 500, "n_failed": 0, "n_files": 500}
    r["failures"] = [{"path": "gen/a.png", "side": "gen", "reason": "truncated file"},
                     {"path": "gen/b.jpg", "side": "gen", "reason": "zero bytes"}]
    r["embedders"] = [_embedder("inception-v3", 2048, device="cuda:0"),
                      _embedder(CLIP, 512, weights="file", preprocess_id="clip-224", device=None)]
    ci = {"precision": [0.6, 0.8], "recall": [0.5, 0.7], "coverage": [0.8, 0.9]}
    r["metrics"] = _metrics(ci=ci)
    r["by_embedder"] = {
        "inception-v3": {"metrics": _metrics(ci=ci), "n_real": 500, "n_gen": 10},
        CLIP: {"metrics": _metrics(recall=0.42), "n_real": 500, "n_gen": 10},
    }
    r["interpretation"] = {"coverage": "85% of real samples have a generated sample in their k-NN ball."}
    r["analysis_space"] = CLIP
    r["clusters"] = {
        "embedder": CLIP, "k": 2, "method": "faiss-kmeans", "seed": 0, "alpha": 0.05, "n_real": 500, "n_gen": 10,
        "ndb": 1, "ndb_fraction": 0.5, "dropped": [1], "under": [], "over": [],
        "bins": [_bin(0, 250, 10, "ok"), _bin(1, 250, 0, "dropped")],
    }
    r["classes"] = {
        "source": "manifest", "labels_known": {"real": True, "gen": False},
        "classifier": {"kind": "knn", "id": CLIP, "agreement": 0.97, "n_checked": 500, "note": "leave-one-out"},
        "classes": [_category("cat", 250, 0, "dropped"), _category("dog", 250, 10, "over")],
        "chi2": {"statistic": 10.0, "p": 0.0016, "dof": 1}, "dropped": ["cat"], "under": [], "over": ["dog"],
        "max_gap": 0.5, "max_gap_class": "cat",
    }
    r["subgroups"] = {
        "attributes": [{"name": "age", "source": "zero-shot", "perceived": True, "note": "perceived, estimated by a model",
                        "parts": ["age"],
                        "groups": [dict(_category("young", 250, 5, "ok"), precision=None, coverage=None),
                                   dict(_category("old", 250, 5, "ok"), precision=0.8, coverage=0.7)],
                        "max_gap": 0.0, "max_gap_group": "young", "dropped": []}],
        "max_gap": 0.0, "max_gap_attribute": "age", "dropped": [],
    }
    r["duplicates"] = {
        "embedder": CLIP,
        "within_gen": {"metric": "cosine", "threshold": 0.05, "n": 10, "n_groups": 1, "n_in_groups": 2, "dup_fraction": 0.2,
                       "exact_groups": 0, "groups": [{"size": 2, "paths": ["g1.png", "g2.png"], "max_distance": 0.01,
                                                      "diameter": 0.01, "exact": False, "n_distinct_files": 2}]},
        "gen_vs_real": {"metric": "cosine", "threshold": 0.02,
                        "calibration": {"method": "quantile", "quantile": 0.001, "real_nn_distance_quantile": 0.02},
                        "n": 10, "n_memorized": 0, "memorized_fraction": 0.0, "expected_by_chance": 0.001,
                        "p_excess": 1.0, "pairs": []},
    }
    r["gate"] = evaluate([parse_rule("coverage<0.9"), parse_rule("dropped_classes>0"), parse_rule("fid>100"),
                          parse_rule(f'by_embedder["{CLIP}"].metrics.recall<0.5')], r).to_dict()
    assert r["gate"]["passed"] is False and len(r["gate"]["violations"]) == 3
    r["timings"] = {"discover": 0.01, "decode": 1.5, "embed": 3.2}
    r["notes"] = ["random weights: numbers are not comparable with published FIDs"]
    r["settings"] = {"seed": 0, "k": 5, "kid_subsets": 100, "kid_subset_size": 1000, "bootstrap": 200}
    r["report"] = "report.html"  # a later feature's key: allowed at the top level
    return r


def test_schema_is_valid_draft_2020_12():
    schema = results_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_every_property_has_a_description():
    missing = []

    def walk(node, where):
        if isinstance(node, dict):
            for name, sub in (node.get("properties") or {}).items():
                if not (isinstance(sub, dict) and sub.get("description")):
                    missing.append(f"{where}.{name}")
            for key, sub in node.items():
                walk(sub, f"{where}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{where}[{i}]")

    walk(results_schema(), "#")
    assert not missing


def test_stable_keys_are_required():
    s = results_schema()
    assert {"schema_version", "inputs", "failures", "metrics", "clusters", "classes", "duplicates", "gate"} <= set(s["required"])
    assert {"fid", "kid", "precision", "recall", "density", "coverage"} <= set(s["$defs"]["metrics"]["required"])
    assert {"passed", "violations"} <= set(s["properties"]["gate"]["required"])
    assert s.get("additionalProperties", True) is not False


@pytest.mark.parametrize("build", [minimal_results, full_results])
def test_samples_validate(build):
    results = build()
    jsonschema.Draft202012Validator(results_schema()).validate(results)
    assert validate_results(results) == []


def _del(path):
    def f(r):
        node = r
        for p in path[:-1]:
            node = node[p]
        del node[path[-1]]
    return f


def _set(path, value):
    def f(r):
        node = r
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value
    return f


@pytest.mark.parametrize("mutate,fragment", [
    (_del(["metrics", "coverage"]), "'coverage' is a required property"),
    (_del(["gate", "passed"]), "'passed' is a required property"),
    (_del(["failures"]), "'failures' is a required property"),
    (_del(["inputs", "gen", "n_images"]), "'n_images' is a required property"),
    (_del(["classes"]), "'classes' is a required property"),
    (_del(["clusters", "dropped"]), "clusters"),
    (_del(["classes", "dropped"]), "classes"),
    (_del(["by_embedder", CLIP, "metrics", "fid"]), "'fid' is a required property"),
    (_set(["metrics", "fid"], "12.5"), "is not of type"),
    (_set(["metrics", "coverage"], True), "is not of type"),
    (_set(["metrics", "k"], 5.5), "is not of type"),
    (_set(["inputs", "real", "n_images"], -1), "less than the minimum"),
    (_set(["inputs", "real", "kind"], "zip"), "is not one of"),
    (_set(["failures"], [{"path": "x.png", "side": "both", "reason": "?"}]), "is not one of"),
    (_set(["failures"], [{"path": "x.png", "side": "gen"}]), "'reason' is a required property"),
    (_set(["gate", "passed"], "yes"), "is not of type"),
    (_set(["gate", "violations", 0, "passed"], True), "False was expected"),
    (_set(["gate", "rules", 0, "op"], "=="), "is not one of"),
    (_set(["classes", "dropped"], [1]), "is not of type"),
    (_set(["embedders", 0, "random_weights"], "no"), "is not of type"),
    (_set(["schema_version"], 1), "is not of type"),
    (_set(["timings", "embed"], "3s"), "is not of type"),
    (_set(["metrics", "ci", "precision"], [0.1]), "too short"),
])
def test_broken_results_fail(mutate, fragment):
    results = full_results()
    mutate(results)
    errors = validate_results(results)
    assert errors, "expected a validation error"
    assert any(fragment in e for e in errors), errors
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(results_schema()).validate(results)


def test_error_messages_name_the_location():
    r = minimal_results()
    del r["metrics"]["coverage"]
    (err,) = validate_results(r)
    assert err.startswith("$['metrics']:")


def test_results_schema_returns_fresh_copy():
    a = results_schema()
    a["title"] = "changed"
    assert results_schema()["title"] != "changed"
    assert copy.deepcopy(results_schema()) == results_schema()


# --------------------------------------------------------------------------- a real scan with every section

D_PLANT, N_MODES, N_SIDE = 16, 6, 300
NEAR_DUPS = [(0, 150), (1, 151)]  # generated pairs (a, b): b re-encodes a
EXACT_DUP = (2, 152)  # byte-identical generated files
NEAR_COPY = (100, 60)  # generated 100 re-encodes real 60
EXACT_COPY = (101, 61)  # generated 101 is the file of real 61


@pytest.fixture(scope="module")
def real_scan(tmp_path_factory):
    """`collapse-audit scan` run in-process on planted feature files that fill every analysis section:
    mode 0 of six missing from the generated side (dropped cluster and class), real labels only (k-NN
    classifier), manifest attributes on both sides (skewed 'tone', 'age' with a tiny group, their
    intersection), planted near-duplicates and copies, bootstrap intervals and gate rules."""
    from collapse_audit.cli import main
    from collapse_audit.features import FeatureSet, save_features

    tmp = tmp_path_factory.mktemp("schema_scan")
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(N_MODES, D_PLANT))
    centers *= 6 / np.linalg.norm(centers, axis=1, keepdims=True)

    def draw(counts):
        idx = np.repeat(np.arange(N_MODES), counts)
        return (centers[idx] + rng.normal(scale=0.5, size=(idx.size, D_PLANT))).astype(np.float32), [f"mode{m}" for m in idx]

    real, real_labels = draw([N_SIDE // N_MODES] * N_MODES)
    gen, _ = draw([0] + [N_SIDE // (N_MODES - 1)] * (N_MODES - 1))
    real_shas, gen_shas = [f"r{i}" for i in range(N_SIDE)], [f"g{i}" for i in range(N_SIDE)]
    for a, b in NEAR_DUPS:
        gen[b] = gen[a] + rng.normal(scale=1e-4, size=D_PLANT)
    gen[EXACT_DUP[1]], gen_shas[EXACT_DUP[1]] = gen[EXACT_DUP[0]], gen_shas[EXACT_DUP[0]]
    gen[NEAR_COPY[0]] = real[NEAR_COPY[1]] + rng.normal(scale=1e-4, size=D_PLANT)
    gen[EXACT_COPY[0]], gen_shas[EXACT_COPY[0]] = real[EXACT_COPY[1]], real_shas[EXACT_COPY[1]]
    rp = save_features(tmp / "real.npz", FeatureSet(features=real, paths=[f"r{i}.png" for i in range(N_SIDE)],
                                                    embedder_id="planted", labels=real_labels, shas=real_shas))
    gp = save_features(tmp / "gen.npz", FeatureSet(features=gen, paths=[f"g{i}.png" for i in range(N_SIDE)],
                                                   embedder_id="planted", shas=gen_shas))

    def age(i):
        return "old" if i < 3 else ("adult" if i % 3 else "child")

    rows = ["path,side,tone,age"]
    rows += [f"r{i}.png,real,{'light' if i % 2 else 'dark'},{age(i)}" for i in range(N_SIDE)]
    rows += [f"g{i}.png,gen,{'light' if i % 5 else 'dark'},{age(i)}" for i in range(N_SIDE)]
    (tmp / "manifest.csv").write_text("\n".join(rows) + "\n")

    out = tmp / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLLAPSE_AUDIT_CACHE", str(tmp / "cache"))
        code = main([str(a) for a in (
            "scan", gp, "--real", rp, "--out", out, "--kid-subsets", "10", "--kid-subset-size", "100",
            "--no-report", "--bootstrap", "50", "--manifest", tmp / "manifest.csv", "--intersect", "tone,age", "--dup-threshold", "0.001",
            "--fail-on", "dropped_classes>0", "--fail-on", "ndb>0.9", "--fail-on", "dup_fraction>0.5",
            "--fail-on", "memorized_fraction>0.5", "--fail-on", "max_subgroup_gap>0.9", "--fail-on", "dropped_subgroups>5",
        )])
    return code, json.loads((out / "results.json").read_text())


def test_real_scan_with_every_section_validates(real_scan):
    code, res = real_scan
    assert validate_results(res) == []
    jsonschema.Draft202012Validator(results_schema()).validate(res)
    # every section is really filled, with the planted structure (so the schema was exercised on real content)
    assert code == 1 and res["gate"]["passed"] is False
    assert [v["name"] for v in res["gate"]["violations"]] == ["dropped_classes"]
    assert set(res["metrics"]["ci"]) == {"precision", "recall", "density", "coverage"} and res["metrics"]["ci_level"] == 0.95
    assert res["analysis_space"] == "planted" and res["settings"]["analysis"]["manifest"]
    assert set(res["interpretation"]) >= {"fid", "kid", "precision", "recall", "density", "coverage"}
    cl = res["clusters"]
    assert cl["dropped"] and {b["status"] for b in cl["bins"]} >= {"dropped", "ok"}
    assert all(b["gen_exemplars"] == [] for b in cl["bins"] if b["status"] == "dropped")
    k = res["classes"]
    assert k["classifier"]["kind"] == "knn" and k["labels_known"] == {"real": True, "gen": False}
    assert k["dropped"] == ["mode0"]
    sg = res["subgroups"]
    assert [a["name"] for a in sg["attributes"]] == ["tone", "age", "tone×age"]
    assert sg["attributes"][2]["parts"] == ["tone", "age"]
    tone = {g["name"]: g for g in sg["attributes"][0]["groups"]}
    assert tone["dark"]["status"] == "under" and tone["light"]["status"] == "over"
    old = next(g for g in sg["attributes"][1]["groups"] if g["name"] == "old")
    assert old["precision"] is None and old["coverage"] is None  # 3 images per side <= k
    d = res["duplicates"]
    groups = {frozenset(g["paths"]): g for g in d["within_gen"]["groups"]}
    planted = {frozenset({f"g{a}.png", f"g{b}.png"}) for a, b in NEAR_DUPS + [EXACT_DUP]}
    assert set(groups) == planted
    assert groups[frozenset({f"g{EXACT_DUP[0]}.png", f"g{EXACT_DUP[1]}.png"})]["exact"] is True
    pairs = {(p["gen_path"], p["real_path"]): p["exact"] for p in d["gen_vs_real"]["pairs"]}
    assert pairs[(f"g{NEAR_COPY[0]}.png", f"r{NEAR_COPY[1]}.png")] is False
    assert pairs[(f"g{EXACT_COPY[0]}.png", f"r{EXACT_COPY[1]}.png")] is True


def _undocumented(instance, node, root, where, out):
    """Keys of ``instance`` that no ``properties`` of the matching schema node lists (maps excepted)."""
    def resolve(n):
        while isinstance(n, dict) and "$ref" in n:
            target = root
            for part in n["$ref"].lstrip("#/").split("/"):
                target = target[part]
            n = {**target, **{k: v for k, v in n.items() if k != "$ref"}}
        return n

    node = resolve(node)
    if not isinstance(node, dict):
        return
    parts = [node] + [resolve(sub) for sub in node.get("allOf", [])]
    if isinstance(instance, dict):
        props = {}
        for p in parts:
            props.update(p.get("properties") or {})
        extra = next((p["additionalProperties"] for p in parts if isinstance(p.get("additionalProperties"), dict)), None)
        for key, value in instance.items():
            if key in props:
                _undocumented(value, props[key], root, f"{where}.{key}", out)
            elif extra is not None:
                _undocumented(value, extra, root, f"{where}[{key!r}]", out)
            else:
                out.append(f"{where}.{key}")
    elif isinstance(instance, list):
        prefix = node.get("prefixItems") or []
        for i, value in enumerate(instance):
            sub = prefix[i] if i < len(prefix) else node.get("items")
            if sub is not None:
                _undocumented(value, sub, root, f"{where}[{i}]", out)


def test_every_key_of_a_real_scan_is_documented(real_scan):
    _, res = real_scan
    schema = results_schema()
    missing: list[str] = []
    _undocumented(res, schema, schema, "$", missing)
    assert missing == []


def test_every_number_of_a_real_scan_passes_the_gate_precheck(real_scan):
    """What the gate refuses before the work (gate.check_rules_static) never includes a number a scan writes."""
    from collapse_audit.gate import available_keys, check_rules_static

    _, res = real_scan
    keys = available_keys(res)
    assert len(keys) > 100 and 'by_embedder.planted.metrics.fid' in keys
    refused = []
    for key in keys:
        rule = parse_rule(f"{key} > 0")
        try:
            check_rules_static([rule], has_labels=True, has_subgroups=True)
        except Exception as e:  # noqa: BLE001 - collect them all
            # a null here may be a string elsewhere (weights_sha256, settings.analysis.labels): refusing
            # a key the schema types as not a number is right; refusing a number is not
            if not (evaluate([rule], res).rules[0].value is None and "not a number" in str(e)):
                refused.append(f"{key}: {e}")
    assert refused == []


def test_gate_alias_keys_are_required():
    p = results_schema()["properties"]
    assert {"dropped", "ndb_fraction", "k", "bins"} <= set(p["clusters"]["required"])
    assert {"dropped", "max_gap", "classes", "source"} <= set(p["classes"]["required"])
    assert {"attributes", "max_gap", "dropped"} <= set(p["subgroups"]["required"])
    assert "dup_fraction" in p["duplicates"]["properties"]["within_gen"]["required"]
    assert "memorized_fraction" in p["duplicates"]["properties"]["gen_vs_real"]["required"]
    for section in ("clusters", "classes", "subgroups", "duplicates"):
        assert p[section]["additionalProperties"] is True
        assert "null" in p[section]["type"]


@pytest.mark.parametrize("mutate,where,fragment", [
    (_set(["clusters", "bins", 0, "status"], "gone"), "$['clusters']['bins'][0]['status']", "is not one of"),
    (_del(["clusters", "ndb_fraction"]), "$['clusters']", "'ndb_fraction' is a required property"),
    (_del(["clusters", "bins"]), "$['clusters']", "'bins' is a required property"),
    (_set(["clusters", "dropped"], ["2"]), "$['clusters']['dropped'][0]", "is not of type 'integer'"),
    (_set(["clusters", "bins", 0, "gen_share_ci"], [0.1]), "$['clusters']['bins'][0]['gen_share_ci']", "too short"),
    (_del(["classes", "dropped"]), "$['classes']", "'dropped' is a required property"),
    (_del(["classes", "source"]), "$['classes']", "'source' is a required property"),
    (_set(["classes", "source"], "oracle"), "$['classes']['source']", "is not one of"),
    (_set(["classes", "max_gap"], None), "$['classes']['max_gap']", "is not of type 'number'"),
    (_set(["classes", "classes", 0, "gen_share"], 1.5), "$['classes']['classes'][0]['gen_share']", "greater than the maximum"),
    (_set(["classes", "classes", 0, "status"], "missing"), "$['classes']['classes'][0]['status']", "is not one of"),
    (_set(["classes", "classifier", "kind"], "svm"), "$['classes']['classifier']['kind']", "is not one of"),
    (_del(["subgroups", "max_gap"]), "$['subgroups']", "'max_gap' is a required property"),
    (_set(["subgroups", "attributes", 0, "source"], "guess"), "$['subgroups']['attributes'][0]['source']", "is not one of"),
    (_set(["subgroups", "attributes", 0, "groups", 0, "status"], "gone"),
     "$['subgroups']['attributes'][0]['groups'][0]['status']", "is not one of"),
    (_del(["subgroups", "attributes", 0, "groups", 0, "precision"]),
     "$['subgroups']['attributes'][0]['groups'][0]", "'precision' is a required property"),
    (_set(["duplicates", "within_gen", "dup_fraction"], "0.1"), "$['duplicates']['within_gen']['dup_fraction']",
     "is not of type 'number'"),
    (_del(["duplicates", "gen_vs_real", "memorized_fraction"]), "$['duplicates']['gen_vs_real']",
     "'memorized_fraction' is a required property"),
    (_set(["duplicates", "within_gen", "groups", 0, "size"], 1), "$['duplicates']['within_gen']['groups'][0]['size']",
     "less than the minimum"),
    (_set(["duplicates", "gen_vs_real", "pairs", 0, "exact"], "yes"), "$['duplicates']['gen_vs_real']['pairs'][0]['exact']",
     "is not of type 'boolean'"),
    (_set(["interpretation", "fid"], 3), "$['interpretation']['fid']", "is not of type 'string'"),
    (_set(["analysis_space"], 5), "$['analysis_space']", "is not of type"),
    (_set(["metrics", "ci_level"], 95), "$['metrics']['ci_level']", "maximum"),
    (_set(["settings", "analysis", "alpha"], "0.05"), "$['settings']['analysis']['alpha']", "is not of type 'number'"),
])
def test_broken_real_scan_fails(real_scan, mutate, where, fragment):
    res = copy.deepcopy(real_scan[1])
    mutate(res)
    errors = validate_results(res)
    assert any(e.startswith(where + ":") and fragment in e for e in errors), errors
