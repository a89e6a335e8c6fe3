"""CLI wiring of issue 8: --stats-out / scan --real STATS.npz, --engine ray on scan
(same metrics as local), and a clear exit 2 when Ray is not installed."""
from __future__ import annotations

import json
import sys

import pytest

from collapse_audit.schema import validate_results
from conftest import write_images


def test_stats_file_gives_the_same_fid_and_skips_the_rest(tmp_path, run_cli):
    write_images(tmp_path / "real", 12, seed=1)
    write_images(tmp_path / "gen", 10, seed=2)
    code, _, err = run_cli("embed", tmp_path / "real", "-o", tmp_path / "real.npz", "--weights", "random",
                           "--workers", "0", "--stats-out", tmp_path / "real_stats.npz")
    assert code == 0, err
    code, _, err = run_cli("scan", tmp_path / "gen", "--real", tmp_path / "real.npz", "--out", tmp_path / "full",
                           "--workers", "0", "--no-report", "--kid-subset-size", "8")
    assert code == 0, err
    code, _, err = run_cli("scan", tmp_path / "gen", "--real", tmp_path / "real_stats.npz", "--out", tmp_path / "stats",
                           "--workers", "0", "--fail-on", "fid>1e9")
    assert code == 0, err
    full = json.loads((tmp_path / "full" / "results.json").read_text())
    stats = json.loads((tmp_path / "stats" / "results.json").read_text())
    assert stats["metrics"]["fid"] == pytest.approx(full["metrics"]["fid"], rel=1e-6)
    assert all(stats["metrics"][k] is None for k in ("kid", "precision", "recall", "density", "coverage"))
    assert stats["inputs"]["real"]["kind"] == "stats" and stats["inputs"]["real"]["n_images"] == 12
    assert stats["clusters"] is None and stats["duplicates"] is None
    assert any("statistics only" in n for n in stats["notes"])
    assert validate_results(stats) == []
    assert (tmp_path / "stats" / "report.html").exists()
    # a rule on a metric the statistics cannot give fails loudly instead of passing
    code, _, err = run_cli("scan", tmp_path / "gen", "--real", tmp_path / "real_stats.npz", "--out", tmp_path / "s2",
                           "--workers", "0", "--no-report", "--fail-on", "coverage<0.5")
    assert code == 1 and "coverage" in err


def test_engine_ray_without_ray_is_a_one_line_exit_2(tmp_path, run_cli, monkeypatch):
    write_images(tmp_path / "imgs", 2)
    monkeypatch.setitem(sys.modules, "ray", None)
    code, _, err = run_cli("embed", tmp_path / "imgs", "-o", tmp_path / "f.npz", "--weights", "random", "--engine", "ray")
    assert code == 2 and "pip install 'collapse-audit[ray]'" in err and err.strip().count("\n") == 0
    code, _, err = run_cli("scan", tmp_path / "imgs", "--real", tmp_path / "imgs", "--weights", "random", "--engine", "ray",
                           "--out", tmp_path / "o")
    assert code == 2 and "Ray" in err
    code, _, err = run_cli("embed", tmp_path / "imgs", "-o", tmp_path / "f.npz", "--engine", "spark")
    assert code == 2 and "--engine" in err


@pytest.mark.slow
def test_scan_with_ray_engine_writes_the_same_metrics_as_local(tmp_path, run_cli):
    from corpus import write_corpus

    write_corpus(tmp_path / "real")
    write_images(tmp_path / "gen", 10, seed=4)
    common = ["--weights", "random", "-e", "inception", "--no-report", "--kid-subset-size", "8", "--no-cache"]
    code, _, err = run_cli("scan", tmp_path / "gen", "--real", tmp_path / "real", "--out", tmp_path / "local", *common)
    assert code == 0, err
    code, _, err = run_cli("scan", tmp_path / "gen", "--real", tmp_path / "real", "--out", tmp_path / "ray",
                           "--engine", "ray", "--workers", "1", *common)
    assert code == 0, err
    a = json.loads((tmp_path / "local" / "results.json").read_text())
    b = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert a["failures"] == b["failures"] and a["inputs"] == b["inputs"]
    for key in ("fid", "kid", "precision", "recall", "density", "coverage"):
        assert b["metrics"][key] == pytest.approx(a["metrics"][key], rel=1e-4, abs=1e-6), key
