"""The JSON Schema of results.json: it is a valid draft 2020-12 schema, documents every
property, accepts hand-built results and rejects ones missing a stable key."""
from __future__ import annotations

import copy

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
    r["clusters"] = {"k": 20, "dropped": [{"cluster": 3, "real": 40, "gen": 0, "p_value": 1e-6}], "ndb_fraction": 0.15}
    r["classes"] = {"dropped": ["cat"], "max_gap": 0.2, "per_class": [{"name": "cat", "real": 0.5, "gen": 0.0}]}
    r["subgroups"] = {"dropped": [], "max_gap": 0.05, "attributes": {"age": {}}}
    r["duplicates"] = {"within_gen": {"dup_fraction": 0.1, "pairs": []},
                       "gen_vs_real": {"memorized_fraction": 0.0, "pairs": []}}
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
