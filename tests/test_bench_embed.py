"""benchmarks/bench_embed.py runs end to end on a tiny setting: its table has every row and column, its JSON
every field, and the accuracy it reports is sane (speeds are not asserted: they depend on the machine)."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_embed.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_embed", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.timeout(300)
def test_bench_embed_quick(tmp_path, capsys, monkeypatch):
    pytest.importorskip("pytorch_fid")
    pytest.importorskip("torch_fidelity")
    import torch

    bench = _load()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "caller_torch_home"))
    out = tmp_path / "bench.json"
    code = bench.main(["--quick", "--images", "4", "--size", "64", "--batch-size", "2", "--workers", "0",
                       "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert os.environ["TORCH_HOME"] == str(tmp_path / "caller_torch_home")  # restored

    lines = text.splitlines()
    assert lines[0].startswith("machine: ") and "cores" in lines[0] and "torch threads" in lines[0]
    assert any("random" in line and "not comparable" in line for line in lines)
    assert any(line.startswith("clean-fid: ") for line in lines)
    header = next(line for line in lines if line.startswith("row ") and "images/s" in line)
    for col in ("images/s", "spread (min-max)", "vs pytorch-fid", "vs torch-fidelity", "of model ceiling"):
        assert col in header
    start = lines.index(header) + 2  # header, rule, rows
    table = lines[start:start + len(bench.ROWS)]
    assert [line[:48].rstrip() for line in table] == bench.ROWS
    for line in table:  # every row measured: a positive rate and a share of the ceiling
        assert float(line[48:58]) > 0, line
        assert "%" in line, line
    assert "excluded" in text and "warm-up" in text
    assert "parity:" in text and "FID(set A, set B)" in text and "Pearson r" in text
    assert "stage breakdown" in text and "decode JPEG" in text and "resize clean" in text

    doc = json.loads(out.read_text())
    for key in ("machine", "settings", "rows", "stages_ms_per_image", "accuracy", "wall_s"):
        assert key in doc
    for key in ("cpu", "cores", "torch", "torch_threads", "device"):
        assert key in doc["machine"]
    assert doc["settings"] == {**doc["settings"], "images": 4, "size": 64, "batch_size": 2, "workers": 0,
                               "rounds": 1, "device": "cpu", "quick": True}
    assert [r["name"] for r in doc["rows"]] == bench.ROWS
    for r in doc["rows"]:
        assert r["error"] is None, r
        for key in ("median", "min", "max", "seconds", "images_per_s", "vs_pytorch_fid", "vs_torch_fidelity",
                    "share_of_ceiling", "ceiling"):
            assert key in r, (r["name"], key)
        assert r["median"] > 0 and len(r["seconds"]) == 1
    by = {r["name"]: r for r in doc["rows"]}
    assert by["pytorch-fid"]["vs_pytorch_fid"] == pytest.approx(1.0)
    assert by["model only amp"]["share_of_ceiling"] == pytest.approx(1.0)
    for key in ("decode_jpeg", "decode_png", "resize_clean", "resize_pytorch_fid", "hash_sha256", "model_fp32",
                "model_amp"):
        assert doc["stages_ms_per_image"][key] > 0
    acc = doc["accuracy"]
    assert acc["parity_max_abs_diff"] < 1e-3  # same network, same decoder, same bilinear resize
    assert acc["amp_pearson_r"] > 0.99
    for key in ("amp_max_abs_diff", "fid_ab_fp32", "fid_ab_amp", "fid_ab_rel_change_pct"):
        assert key in acc
    assert acc["cached_vs_fp32_max_abs_diff"] == 0.0

    if not torch.cuda.is_available():  # --device cuda without a GPU: one clear line, exit 2
        assert bench.main(["--quick", "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert "cuda" in err.lower() and len(err.strip().splitlines()) == 1
