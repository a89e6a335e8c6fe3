"""`collapse-audit scan`: end-to-end on feature files (checked against the
reference implementations) and on image folders with random weights; the
gate's exit codes, JUnit and GitHub summary; input errors."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from collapse_audit.features import FeatureSet, save_features
from collapse_audit.schema import validate_results
from conftest import write_images


def _npz(path, feats, embedder_id="test-embedder", **kw):
    return save_features(path, FeatureSet(features=feats.astype(np.float32), paths=[f"x{i}.png" for i in range(len(feats))],
                                          embedder_id=embedder_id, **kw))


@pytest.fixture
def feature_files(tmp_path):
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 16))
    gen = rng.normal(loc=0.3, scale=0.8, size=(300, 16))
    return _npz(tmp_path / "real.npz", real), _npz(tmp_path / "gen.npz", gen), real.astype(np.float32), gen.astype(np.float32)


def test_scan_on_feature_files_matches_reference_implementations(tmp_path, run_cli, feature_files):
    from prdc import compute_prdc
    from pytorch_fid.fid_score import calculate_frechet_distance

    rp, gp, real, gen = feature_files
    code, out, err = run_cli("scan", gp, "--real", rp, "--no-report", "--out", tmp_path / "out", "--kid-subset-size", "100")
    assert code == 0, err
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert validate_results(res) == []
    m = res["metrics"]
    r64, g64 = real.astype(np.float64), gen.astype(np.float64)
    ref_fid = calculate_frechet_distance(r64.mean(0), np.cov(r64, rowvar=False), g64.mean(0), np.cov(g64, rowvar=False))
    assert m["fid"] == pytest.approx(ref_fid, rel=1e-6)
    ref = compute_prdc(real, gen, nearest_k=5)
    for key in ("precision", "recall", "coverage"):
        assert m[key] == pytest.approx(ref[key], abs=1e-9), key
    assert m["density"] == pytest.approx(ref["density"], abs=1e-6)
    assert 0 < m["precision"] < 1 and 0 < m["recall"] < 1
    assert m["kid"] > 0 and m["kid_std"] > 0
    assert res["inputs"]["real"]["n_images"] == 400 and res["inputs"]["gen"]["n_images"] == 300
    assert res["primary_embedder"] == "test-embedder"
    assert res["by_embedder"]["test-embedder"]["metrics"]["fid"] == m["fid"]
    assert res["gate"]["passed"] is True
    assert "recall" in out and "missing modes" in out or "manifold" in out


def test_gate_rule_that_holds_fails_and_unknown(tmp_path, run_cli, feature_files):
    rp, gp, *_ = feature_files
    out = tmp_path / "o"
    code, _, err = run_cli("scan", gp, "--real", rp, "--no-report", "--out", out, "--fail-on", "coverage<0.01", "--junit", tmp_path / "ok.xml")
    assert code == 0, err
    code, stdout, err = run_cli("scan", gp, "--real", rp, "--no-report", "--out", out, "--fail-on", "precision<0.99",
                                "--fail-on", "fid>1e9", "--junit", tmp_path / "j.xml")
    assert code == 1
    res = json.loads((out / "results.json").read_text())
    assert res["gate"]["passed"] is False
    assert [v["rule"] for v in res["gate"]["violations"]] == ["precision<0.99"]
    assert "precision" in err and "GATE FAILED" in err
    root = ET.parse(tmp_path / "j.xml").getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    assert len(suite.findall("testcase")) == 2

    (out / "results.json").unlink()
    code, _, err = run_cli("scan", gp, "--real", rp, "--no-report", "--out", out, "--fail-on", "nonsense_metric<3")
    assert code == 2 and "unknown metric" in err and "Traceback" not in err
    assert not (out / "results.json").exists(), "a bad rule must fail before any work"
    code, _, err = run_cli("scan", gp, "--real", rp, "--no-report", "--out", out, "--fail-on", "metrics.no_such_key>3")
    assert code == 2 and "Traceback" not in err


def test_policy_file_and_github_summary(tmp_path, run_cli, feature_files, monkeypatch):
    rp, gp, *_ = feature_files
    pol = tmp_path / "gate.toml"
    pol.write_text('fail_on = ["recall<0.0001", "by_embedder[\\"test-embedder\\"].metrics.fid > 1e6"]\n')
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code, _, err = run_cli("scan", gp, "--real", rp, "--no-report", "--out", tmp_path / "o", "--policy", pol)
    assert code == 0, err
    text = summary.read_text()
    assert "recall" in text and "passed" in text.lower()


def test_bootstrap_intervals_bracket_the_estimate(tmp_path, run_cli, feature_files):
    rp, gp, *_ = feature_files
    code, out, err = run_cli("scan", gp, "--real", rp, "--no-report", "--out", tmp_path / "o", "--bootstrap", "20")
    assert code == 0, err
    m = json.loads((tmp_path / "o" / "results.json").read_text())["metrics"]
    for key in ("precision", "recall", "coverage"):
        lo, hi = m["ci"][key]
        assert lo <= hi and lo <= m[key] + 0.05 and hi >= m[key] - 0.05 and hi - lo > 0


def test_different_embedders_are_refused(tmp_path, run_cli):
    rng = np.random.default_rng(1)
    a = _npz(tmp_path / "a.npz", rng.normal(size=(20, 8)), embedder_id="inception:random-seed0:clean")
    b = _npz(tmp_path / "b.npz", rng.normal(size=(20, 8)), embedder_id="clip:ViT-B-32/openai:pretrained:openclip")
    code, _, err = run_cli("scan", a, "--real", b, "--no-report", "--out", tmp_path / "o")
    assert code == 2 and "embedded differently" in err and "Traceback" not in err


def test_user_made_npz_with_only_features(tmp_path, run_cli):
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "r.npz", features=rng.normal(size=(50, 4)))
    np.savez(tmp_path / "g.npz", features=rng.normal(size=(60, 4)))
    code, _, err = run_cli("scan", tmp_path / "g.npz", "--real", tmp_path / "r.npz", "--out", tmp_path / "o")
    assert code == 0, err
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["inputs"]["gen"]["n_images"] == 60 and any("unknown" in n for n in res["notes"])


def test_scan_folders_end_to_end_with_random_weights_and_bad_files(tmp_path, run_cli):
    write_images(tmp_path / "real", 12, seed=1)
    write_images(tmp_path / "gen", 10, seed=2)
    (tmp_path / "gen" / "broken.jpg").write_bytes(b"this is not a jpeg")
    (tmp_path / "real" / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    code, stdout, err = run_cli("scan", tmp_path / "gen", "--real", tmp_path / "real", "--out", out, "--weights", "random",
                                "-e", "inception", "-e", "clip:ViT-S-32/openai", "--workers", "0", "--kid-subset-size", "8")
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    assert validate_results(res) == []
    assert res["inputs"]["gen"]["n_images"] == 10 and res["inputs"]["real"]["n_images"] == 12
    assert {(f["path"], f["side"]) for f in res["failures"]} == {("broken.jpg", "gen"), ("empty.png", "real")}
    assert len(res["by_embedder"]) == 2 and res["primary_embedder"].startswith("inception:random-seed0")
    assert all(e["random_weights"] for e in res["embedders"])
    assert any(n.startswith("RANDOM WEIGHTS") for n in res["notes"])
    html = (out / "report.html").read_text()
    assert "broken.jpg" in html and "RANDOM WEIGHTS" in html and (out / "report_data.json").exists()
    for block in res["by_embedder"].values():
        assert block["metrics"]["fid"] is not None and block["metrics"]["fid"] >= 0
    # features file on one side, folder on the other: the folder is embedded to match
    code, _, err = run_cli("embed", tmp_path / "real", "-o", tmp_path / "real.npz", "--weights", "random", "--workers", "0")
    assert code == 0, err
    code, _, err = run_cli("scan", tmp_path / "gen", "--real", tmp_path / "real.npz", "--out", tmp_path / "o2", "--workers", "0",
                           "--kid-subset-size", "8")
    assert code == 0, err
    res2 = json.loads((tmp_path / "o2" / "results.json").read_text())
    assert res2["primary_embedder"] == res["primary_embedder"]
    assert res2["metrics"]["fid"] == pytest.approx(res["metrics"]["fid"], rel=1e-6)


def test_empty_and_missing_inputs_exit_2_with_one_line(tmp_path, run_cli):
    (tmp_path / "empty").mkdir()
    write_images(tmp_path / "real", 3)
    code, _, err = run_cli("scan", tmp_path / "empty", "--real", tmp_path / "real", "--weights", "random", "--out", tmp_path / "o")
    assert code == 2 and "no image files" in err and "Traceback" not in err and err.strip().count("\n") == 0
    code, _, err = run_cli("scan", tmp_path / "missing", "--real", tmp_path / "real", "--out", tmp_path / "o")
    assert code == 2 and "no such file or folder" in err
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    code, _, err = run_cli("scan", tmp_path / "bad.npz", "--real", tmp_path / "real", "--out", tmp_path / "o")
    assert code == 2 and "not a readable .npz" in err


def test_results_record_stage_timings_and_peak_memory(tmp_path, run_cli, feature_files):
    """Per-stage wall times (analysis sections inside the analysis stage) and this process's peak RSS."""
    import resource
    import time

    rp, gp, _, _ = feature_files
    t0 = time.perf_counter()
    code, _, err = run_cli("scan", gp, "--real", rp, "--no-report", "--out", tmp_path / "out", "--kid-subset-size", "100")
    wall = time.perf_counter() - t0
    assert code == 0, err
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert validate_results(res) == []
    t = res["timings"]
    parts = [t[k] for k in ("analysis_normalise", "analysis_clusters", "analysis_duplicates", "analysis_classes",
                            "analysis_subgroups")]
    assert all(v >= 0 for v in parts) and t["analysis_clusters"] > 0 and t["analysis_duplicates"] > 0
    # each value is rounded to the millisecond: a sum of n rounded values may exceed the rounded whole by n/2 ms
    assert sum(parts) <= t["analysis"] + (len(parts) + 1) * 5e-4
    assert t["embed"] + t["metrics"] + t["analysis"] <= t["total"] + 2e-3 and t["total"] <= wall + 1e-3
    peak = res["resources"]["peak_rss_bytes"]
    # the scan ran in this process: its peak is at most what the process has peaked at by now, and
    # at least the Python interpreter with numpy and faiss loaded
    assert 50 * 2**20 < peak <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert res["resources"]["cpu_count"] >= 1
