"""AuthPct against dgm-eval's ``compute_authpct`` (layer6ai-labs/dgm-eval, ``dgm_eval/metrics/authpct.py``),
ported below with torch.cdist, on the same features; plus its closed forms (copies are never authentic)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from collapse_audit.metrics import authpct


def _ref_authpct(train_feat, gen_feat):
    train_feat, gen_feat = torch.from_numpy(train_feat), torch.from_numpy(gen_feat)
    with torch.no_grad():
        real_dists = torch.cdist(train_feat, train_feat)
        real_dists.fill_diagonal_(float("inf"))
        gen_dists = torch.cdist(train_feat, gen_feat)
        real_min_dists = real_dists.min(axis=0)
        gen_min_dists = gen_dists.min(dim=0)
        authen = real_min_dists.values[gen_min_dists.indices] < gen_min_dists.values
        return (100 * torch.sum(authen) / len(authen)).item()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_real,n_gen,d", [(400, 300, 16), (150, 500, 64), (50, 20, 3)])
def test_authpct_equals_dgm_eval(seed, n_real, n_gen, d):
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n_real, d))
    gen = np.vstack([rng.standard_normal((n_gen - n_gen // 5, d)) * 0.8,
                     real[rng.integers(0, n_real, n_gen // 5)] + 1e-3 * rng.standard_normal((n_gen // 5, d))])  # near-copies
    ref = _ref_authpct(real.astype(np.float32), gen.astype(np.float32))
    # float32 distances from FAISS and from cdist round differently: a near-tie may flip one sample at most
    assert abs(authpct(real, gen) - ref) <= 100.0 / n_gen + 1e-9


def test_authpct_closed_forms():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((200, 8))
    assert authpct(real, real[:50] + 1e-6) == 0.0  # copies of real samples are never authentic
    far = rng.standard_normal((100, 8)) * 0.01 + 50.0  # far from every real sample
    assert authpct(real, far) == 100.0
    with pytest.raises(ValueError):
        authpct(real[:1], far)


def test_scan_reports_authpct_of_the_primary_embedder(tmp_path, run_cli):
    import json

    from collapse_audit.features import FeatureSet, save_features

    rng = np.random.default_rng(4)
    real = rng.standard_normal((300, 8)).astype(np.float32)
    gen = np.vstack([rng.standard_normal((150, 8)), real[:50] + 1e-4]).astype(np.float32)  # a quarter are copies
    for name, x in (("real", real), ("gen", gen)):
        save_features(tmp_path / f"{name}.npz", FeatureSet(features=x, paths=[f"{i}.png" for i in range(len(x))],
                                                          embedder_id="synthetic"))
    code, so, se = run_cli("scan", tmp_path / "gen.npz", "--real", tmp_path / "real.npz", "--out", tmp_path / "o",
                           "--no-report", "--no-analysis", "--kid-subsets", 5, "--fail-on", "authpct<80")
    assert code == 1, se  # the copies pull it below 80
    m = json.loads((tmp_path / "o" / "results.json").read_text())["metrics"]
    assert m["authpct"] == pytest.approx(authpct(real, gen)) and m["authpct"] <= 75.0 + 1e-9
