"""Inception Score against torch-fidelity 0.4 (``metric_isc.isc_features_to_metric``) on the same logits,
and the logits path (pool features @ fc weight^T) against torch-fidelity's ``logits_unbiased`` on the same images."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from collapse_audit.metrics import inception_logits, inception_score

tf_isc = pytest.importorskip("torch_fidelity.metric_isc")


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n,c,splits", [(500, 1008, 10), (103, 17, 10), (50, 1008, 1), (64, 8, 4)])
def test_is_equals_torch_fidelity(seed, n, c, splits):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((n, c)) * rng.uniform(0.1, 8)).astype(np.float32)
    ref = tf_isc.isc_features_to_metric(torch.from_numpy(logits), splits=splits, shuffle=True, rng_seed=2020 + seed)
    got = inception_score(logits, splits=splits, seed=2020 + seed)
    assert got.mean == pytest.approx(ref["inception_score_mean"], rel=1e-6)
    assert got.std == pytest.approx(ref["inception_score_std"], rel=1e-6, abs=1e-9)


def test_is_closed_forms():
    # every sample sure of a different class, classes used equally: IS = number of classes
    onehot = np.eye(10)[np.arange(1000) % 10] * 60.0
    assert inception_score(onehot, splits=1).mean == pytest.approx(10.0, rel=1e-9)
    # every sample the same distribution: IS = 1 (no diversity)
    same = np.tile(np.random.default_rng(0).standard_normal(20), (300, 1))
    r = inception_score(same, splits=3)
    assert r.mean == pytest.approx(1.0, abs=1e-12) and r.std == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        inception_score(onehot[:5], splits=10)


def test_logits_from_pool_features_equal_torch_fidelitys(tmp_path):
    fe_mod = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    from collapse_audit.models.inception import build_fid_inception, random_fid_state_dict

    sd = random_fid_state_dict(7)
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    ours = build_fid_inception(torch.load(path, weights_only=True)).eval()
    ref = fe_mod.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                             feature_extractor_weights_path=str(path)).eval()
    x = torch.randint(0, 256, (3, 3, 299, 299), dtype=torch.uint8)
    with torch.no_grad():
        pool_ref, logits_ref = ref(x)
        pool = ours(x.float() / 255.0)
    # torch-fidelity scales uint8 input as (x - 128) / 128, pytorch-fid (and this tool) as 2 x / 255 - 1, so the
    # pool features differ slightly; the logits are the same function of whichever pool features
    np.testing.assert_allclose(pool.numpy(), pool_ref.numpy(), atol=0.05)
    got = inception_logits(pool_ref.numpy(), sd["fc.weight"].numpy())
    np.testing.assert_allclose(got, logits_ref.numpy(), rtol=1e-5, atol=1e-5)
    with_bias = inception_logits(pool_ref.numpy(), sd["fc.weight"].numpy(), sd["fc.bias"].numpy())
    np.testing.assert_allclose(with_bias - got, np.broadcast_to(sd["fc.bias"].numpy(), got.shape), atol=1e-9)


def test_scan_reports_the_inception_score_of_its_generated_images(tmp_path, run_cli):
    import json

    from collapse_audit import embed
    from collapse_audit.models.inception import random_fid_state_dict

    from conftest import write_images

    write_images(tmp_path / "real", 12, size=(40, 40), seed=1)
    write_images(tmp_path / "gen", 20, size=(40, 40), seed=2)
    code, so, se = run_cli("scan", tmp_path / "gen", "--real", tmp_path / "real", "--embedder", "inception",
                           "--weights", "random", "--out", tmp_path / "out", "--no-report", "--no-analysis",
                           "--kid-subsets", 5, "--workers", 0, "--device", "cpu")
    assert code == 0, se
    m = json.loads((tmp_path / "out" / "results.json").read_text())["metrics"]
    feats = embed(tmp_path / "gen", "inception", weights=["random"], device="cpu", use_cache=False).features
    logits = feats.astype(np.float64) @ random_fid_state_dict(0)["fc.weight"].double().numpy().T
    ref = tf_isc.isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=True, rng_seed=2020)
    assert m["inception_score"] == pytest.approx(ref["inception_score_mean"], rel=1e-5)
    assert m["inception_score_std"] == pytest.approx(ref["inception_score_std"], rel=1e-4, abs=1e-7)
