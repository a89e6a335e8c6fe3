"""The public Python API: the same numbers as the reference tools and as `collapse-audit scan`."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import collapse_audit as ca
from collapse_audit.config import AnalysisConfig, AuditConfig
from collapse_audit.errors import UsageError
from collapse_audit.features import FeatureSet, save_features


def _sets(seed=0, n=400, m=300, d=12):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5, size=(5, d))
    real = (centres[rng.integers(0, 5, n)] + rng.standard_normal((n, d))).astype(np.float32)
    gen = (centres[rng.integers(0, 3, m)] + 1.1 * rng.standard_normal((m, d))).astype(np.float32)
    return real, gen


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_array_api_equals_pytorch_fid_and_prdc(seed):
    from prdc import compute_prdc
    from pytorch_fid.fid_score import calculate_frechet_distance

    real, gen = _sets(seed)
    r64, g64 = real.astype(np.float64), gen.astype(np.float64)
    ref_fid = calculate_frechet_distance(r64.mean(0), np.cov(r64, rowvar=False), g64.mean(0), np.cov(g64, rowvar=False))
    ref = compute_prdc(real, gen, nearest_k=5)

    f = ca.fid(real=real, gen=gen)
    assert isinstance(f, ca.FIDResult) and float(f) == pytest.approx(ref_fid, rel=1e-8)
    p = ca.prdc(real=real, gen=gen, k=5)
    assert isinstance(p, ca.PRDCResult) and p.method == "exact" and p.approximation is None
    for key in ("precision", "recall", "coverage"):
        assert getattr(p, key) == pytest.approx(ref[key], abs=1e-12), key
    assert p.density == pytest.approx(ref["density"], abs=1e-9)

    res = ca.audit(gen=gen, real=real)
    m = res.metrics
    assert m["fid"] == float(f)
    for key in ("precision", "recall", "density", "coverage"):
        assert m[key] == getattr(p, key)
    assert m["kid"] == pytest.approx(ca.kid(real, gen, seed=0, subset_size=300).mean, rel=1e-12)


def test_audit_on_arrays_equals_scan_on_the_same_npz_files(tmp_path, run_cli):
    real, gen = _sets(3)
    rp = save_features(tmp_path / "real.npz", FeatureSet(features=real, paths=[f"r{i}.png" for i in range(len(real))]))
    gp = save_features(tmp_path / "gen.npz", FeatureSet(features=gen, paths=[f"g{i}.png" for i in range(len(gen))]))
    code, _, err = run_cli("scan", gp, "--real", rp, "--no-report", "--out", tmp_path / "out")
    assert code == 0, err
    cli = json.loads((tmp_path / "out" / "results.json").read_text())
    lib = ca.audit(gen=gen, real=real).to_dict()
    for key in ("fid", "kid", "kid_std", "precision", "recall", "density", "coverage"):
        assert lib["metrics"][key] == cli["metrics"][key], key
    assert lib["clusters"]["dropped"] == cli["clusters"]["dropped"]
    assert lib["duplicates"]["within_gen"]["dup_fraction"] == cli["duplicates"]["within_gen"]["dup_fraction"]
    # and from the files, through the same function
    from_files = ca.audit(gen=str(gp), real=str(rp)).to_dict()
    assert from_files["metrics"]["fid"] == cli["metrics"]["fid"]


def test_audit_prints_nothing_writes_nothing_and_keeps_the_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real, gen = _sets(4)
    cfg = AuditConfig(k=3, seed=7, analysis=AnalysisConfig(alpha=0.1))
    before = dataclasses.asdict(cfg)
    res = ca.audit(gen=gen, real=real, config=cfg)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert list(tmp_path.iterdir()) == []
    assert dataclasses.asdict(cfg) == before
    assert res.metrics["k"] == 3 and res.to_dict()["settings"]["analysis"]["alpha"] == 0.1
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.k = 9  # type: ignore[misc]
    # the analysis part follows the audit's seed and k: one value each
    assert cfg.analysis.seed == 7 and cfg.analysis.k == 3
    with pytest.raises(UsageError, match="unknown audit option"):
        ca.audit(gen=gen, real=real, kk=3)
    with pytest.raises(ValueError, match="copy_quantile"):
        AnalysisConfig(copy_quantile=2)


def test_one_default_for_the_near_copy_quantile():
    """Python and CLI users get the same near-copy threshold (it was 0.01 in the library, 0.001 in the CLI)."""
    import inspect

    from collapse_audit import cli, config
    from collapse_audit.analysis import duplicates

    assert duplicates.DEFAULT_COPY_QUANTILE == config.COPY_QUANTILE == AnalysisConfig().copy_quantile
    assert inspect.signature(duplicates.find_duplicates).parameters["copy_quantile"].default == config.COPY_QUANTILE
    assert inspect.signature(cli.scan).parameters["copy_quantile"].default.default == config.COPY_QUANTILE
    assert inspect.signature(cli.scan).parameters["exact_max_pairs"].default.default == config.EXACT_MAX_PAIRS


def test_write_and_check(tmp_path):
    real, gen = _sets(5)
    res = ca.audit(gen=gen, real=real)
    v = res.check(["coverage<0.99", "fid<0"])
    assert not v.passed and len(v.violations) == 1
    path = res.write(tmp_path / "out", report=False)
    saved = json.loads(path.read_text())
    assert saved["gate"]["passed"] is False and saved["metrics"]["fid"] == res.metrics["fid"]
    from collapse_audit.schema import validate_results

    assert validate_results(saved) == []


def test_prdc_bootstrap_on_the_approximate_path_through_audit():
    real, gen = _sets(6, n=1500, m=1500)
    res = ca.audit(gen=gen, real=real, exact_max_pairs=1e5, bootstrap=50)
    m = res.metrics
    assert m["prdc_method"] == "approx" and m["approximation"] is not None
    for key in ("precision", "recall", "density", "coverage"):
        lo, hi = m["ci"][key]
        assert lo <= m[key] <= hi


def test_embed_tensor_batch_equals_the_same_pixels_saved_as_png(tmp_path):
    torch = pytest.importorskip("torch")
    from PIL import Image

    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, size=(6, 3, 40, 52), dtype=np.uint8)
    folder = tmp_path / "png"
    folder.mkdir()
    for i, x in enumerate(batch):
        Image.fromarray(x.transpose(1, 2, 0)).save(folder / f"{i:05d}.png")
    kw = dict(embedder="inception", weights=["random"], device="cpu", batch_size=4)
    from_tensor = ca.embed(torch.from_numpy(batch), **kw)
    from_float = ca.embed(torch.from_numpy(batch).float() / 255.0, **kw)
    from_pil = ca.embed([Image.fromarray(x.transpose(1, 2, 0)) for x in batch], **kw)
    from_files = ca.embed(folder, use_cache=False, **kw)
    from_list = ca.embed(sorted(folder.iterdir()), use_cache=False, **kw)
    assert from_tensor.features.shape == (6, 2048)
    for other in (from_float, from_pil, from_files, from_list):
        np.testing.assert_array_equal(from_tensor.features, other.features)
    assert from_tensor.embedder_id == from_files.embedder_id and from_tensor.random_weights


def test_gate_failure_still_leaves_results_json(tmp_path, run_cli):
    real, gen = _sets(7)
    rp = save_features(tmp_path / "real.npz", FeatureSet(features=real, paths=[f"r{i}.png" for i in range(len(real))]))
    gp = save_features(tmp_path / "gen.npz", FeatureSet(features=gen, paths=[f"g{i}.png" for i in range(len(gen))]))
    code, _, _ = run_cli("scan", gp, "--real", rp, "--no-report", "--out", tmp_path / "o", "--fail-on", "fid>=0")
    assert code == 1
    assert json.loads((tmp_path / "o" / "results.json").read_text())["gate"]["passed"] is False


def test_public_names_are_not_shadowed_by_submodules():
    """A submodule named like an exported function would replace it on import (``collapse_audit.embed``)."""
    import pkgutil

    subs = {m.name for m in pkgutil.iter_modules(ca.__path__)}
    assert not subs & set(ca._EXPORTS), subs & set(ca._EXPORTS)
    for name in ca.__all__:
        assert getattr(ca, name) is not None
    import collapse_audit.embedding  # noqa: F401  (the cached embedding stage, imported after the API)

    assert callable(ca.embed) and ca.embed.__module__ == "collapse_audit.api"


def test_loading_and_running_a_model_leaves_global_state_alone():
    """No process-wide side effects: the root logger's level and torch's TF32 flags are unchanged."""
    import logging

    torch = pytest.importorskip("torch")
    from collapse_audit.embedders import WeightsChoice, make_clip

    root = logging.getLogger()
    before = (root.level, list(root.filters), torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    e = make_clip("ViT-S-32/openai", WeightsChoice("random", seed=0))
    e.load("cpu")
    e.embed_batch(torch.zeros(1, 3, 224, 224))
    after = (root.level, list(root.filters), torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    assert after == before
