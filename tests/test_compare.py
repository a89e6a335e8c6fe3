"""`collapse-audit compare`: metrics classified by their direction (hand-made results with
known improvements and regressions), the CLI's table and HTML, and the loud warning when
the two scans used different embedders."""
from __future__ import annotations

import copy
import json

import pytest

from collapse_audit.compare import compare_results, load_results
from collapse_audit.errors import InputError

EMB = "clip:ViT-B-32/openai:openclip"


def _results(**over) -> dict:
    r = {
        "schema_version": "1.0",
        "tool": {"name": "collapse-audit", "version": "0.1.0", "command": ["collapse-audit", "scan"]},
        "created_at": "2025-01-01T00:00:00+00:00",
        "inputs": {"real": {"source": "real/", "n_images": 1000}, "gen": {"source": "gen_v1/", "n_images": 1000}},
        "embedders": [{"id": EMB, "random_weights": False}],
        "primary_embedder": EMB,
        "metrics": {"fid": 20.0, "kid": 0.010, "kid_std": 0.001, "precision": 0.80, "recall": 0.50, "density": 0.70, "coverage": 0.70,
                    "vendi": 30.0, "cmmd": 0.50},
        "clusters": {"dropped": [1, 2], "ndb_fraction": 0.10},
        "classes": {"dropped": ["cat"], "max_gap": 0.20},
        "subgroups": None,
        "duplicates": {"within_gen": {"dup_fraction": 0.01}, "gen_vs_real": {"memorized_fraction": 0.002}},
        "gate": {"passed": True},
    }
    for k, v in over.items():
        r[k] = v
    return r


def _new():
    new = _results()
    new["inputs"] = copy.deepcopy(new["inputs"])
    new["inputs"]["gen"]["source"] = "gen_v2/"
    new["metrics"] = {"fid": 15.0,          # lower: improved
                      "kid": 0.0105, "kid_std": 0.001,  # within the subsets' spread: unchanged
                      "precision": 0.801,   # within tolerance: unchanged
                      "recall": 0.40,       # higher is better: regressed
                      "density": 1.10,      # |1.10 - 1| < |0.70 - 1|: improved
                      "coverage": 0.60,     # regressed
                      "vendi": 20.0,        # higher is better: regressed
                      "cmmd": 0.30}         # lower: improved
    new["clusters"] = {"dropped": [], "ndb_fraction": 0.02}
    new["classes"] = {"dropped": ["cat", "dog"], "max_gap": 0.30}
    new["duplicates"] = {"within_gen": {"dup_fraction": 0.05}, "gen_vs_real": {"memorized_fraction": 0.002}}
    return new


def test_improved_and_regressed_are_classified_by_direction():
    c = compare_results(_results(), _new())
    v = {r["name"]: r["verdict"] for r in c["rows"]}
    assert v == {
        "fid": "improved", "kid": "unchanged", "precision": "unchanged", "recall": "regressed", "density": "improved",
        "coverage": "regressed", "vendi": "regressed", "cmmd": "improved", "authpct": "n/a", "fd_infinity": "n/a", "inception_score": "n/a",
        "dropped_clusters": "improved", "ndb_fraction": "improved", "dropped_classes": "regressed",
        "max_class_gap": "regressed", "dropped_subgroups": "n/a", "max_subgroup_gap": "n/a", "dup_fraction": "regressed",
        "memorized_fraction": "unchanged",
    }
    rows = {r["name"]: r for r in c["rows"]}
    assert rows["fid"]["delta"] == pytest.approx(-5.0) and rows["dropped_clusters"]["old"] == 2 and rows["dropped_clusters"]["new"] == 0
    assert c["comparable"] is True and c["warnings"] == []
    assert c["counts"] == {"improved": 5, "regressed": 6, "unchanged": 3, "n/a": 5}
    # symmetric: swapping old and new swaps improved and regressed
    back = {r["name"]: r["verdict"] for r in compare_results(_new(), _results())["rows"]}
    swap = {"improved": "regressed", "regressed": "improved"}
    assert back == {k: swap.get(x, x) for k, x in v.items()}


def test_different_embedders_are_flagged_not_comparable():
    other = _new()
    other["embedders"] = [{"id": "inception:clean", "random_weights": True}]
    other["primary_embedder"] = "inception:clean"
    c = compare_results(_results(), other)
    assert c["comparable"] is False
    assert c["warnings"][0].startswith("EMBEDDERS DIFFER") and "NOT comparable" in c["warnings"][0]
    assert any("random weights" in w for w in c["warnings"])


def test_load_results_errors(tmp_path):
    with pytest.raises(InputError, match="no results.json"):
        load_results(tmp_path)
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="not a collapse-audit"):
        load_results(tmp_path / "x.json")
    (tmp_path / "results.json").write_text(json.dumps(_results()))
    assert load_results(tmp_path)["metrics"]["fid"] == 20.0


def test_compare_cli_table_html_and_warning(tmp_path, run_cli):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text(json.dumps(_results()))
    (tmp_path / "new.json").write_text(json.dumps(_new()))
    html = tmp_path / "cmp.html"
    code, out, err = run_cli("compare", tmp_path / "old", tmp_path / "new.json", "-o", html)
    assert code == 0, err
    assert "improved" in out and "regressed" in out and "5 improved, 6 regressed, 3 unchanged, 5 n/a" in out
    page = html.read_text()
    assert 'data-metric="fid" data-verdict="improved"' in page and 'data-metric="coverage" data-verdict="regressed"' in page
    assert "NOT COMPARABLE" not in page

    other = _new()
    other["embedders"] = [{"id": "inception:clean"}]
    other["primary_embedder"] = "inception:clean"
    (tmp_path / "other.json").write_text(json.dumps(other))
    code, out, err = run_cli("compare", tmp_path / "old", tmp_path / "other.json", "-o", tmp_path / "c2.html")
    assert code == 0
    assert "EMBEDDERS DIFFER" in err
    assert "NOT COMPARABLE" in (tmp_path / "c2.html").read_text()

    code, _, err = run_cli("compare", tmp_path / "missing", tmp_path / "new.json")
    assert code == 2 and "no such file" in err

    import browser

    if browser.chromium():
        res = browser.inspect_page(html)
        assert res["errors"] == [] and res["requests"] == [] and res["dialogs"] == []
