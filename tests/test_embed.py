"""End-to-end `collapse-audit embed`: parity with pytorch-fid through the CLI,
bad files recorded not fatal, the content-addressed cache, offline weights."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from collapse_audit import weights as W
from collapse_audit.embedding import embed_folder
from collapse_audit.features import load_features
from collapse_audit.models.inception import random_fid_state_dict
from collapse_audit.pipeline import build_embedders, open_cache
from conftest import write_images

SEED = 7


@pytest.fixture(scope="module")
def random_sd():
    return random_fid_state_dict(SEED)


@pytest.fixture(scope="module")
def weights_file(random_sd, tmp_path_factory):
    p = tmp_path_factory.mktemp("w") / "pt_inception-random.pth"
    torch.save(random_sd, p)
    return p


@pytest.fixture(scope="module")
def pytorch_fid_model(random_sd):
    pfi = pytest.importorskip("pytorch_fid.inception")
    mp = pytest.MonkeyPatch()
    mp.setattr(pfi, "load_state_dict_from_url", lambda url, *a, **k: {k2: v.clone() for k2, v in random_sd.items()})
    try:
        model = pfi.InceptionV3([3])
    finally:
        mp.undo()
    return model.eval()


def _pytorch_fid_features(model, files):
    from torchvision.transforms.functional import to_tensor

    out = []
    with torch.no_grad():
        for f in files:
            x = to_tensor(Image.open(f).convert("RGB")).unsqueeze(0)
            out.append(model(x)[0].squeeze(-1).squeeze(-1).numpy())
    return np.concatenate(out)


@pytest.mark.parametrize("variant", ["pytorch-fid", "clean"])
def test_embed_cli_matches_pytorch_fid_on_299_pngs(tmp_path, run_cli, weights_file, pytorch_fid_model, variant):
    files = write_images(tmp_path / "imgs", 6, size=(299, 299), seed=3)
    out = tmp_path / "f.npz"
    code, stdout, stderr = run_cli(
        "embed", tmp_path / "imgs", "-o", out, "--embedder", f"inception:{variant}",
        "--weights", f"inception={weights_file}", "--device", "cpu", "--batch-size", "4", "--workers", "0",
    )
    assert code == 0, stderr
    fs = load_features(out)
    assert fs.paths == [f.name for f in files]
    assert fs.features.shape == (6, 2048) and fs.features.dtype == np.float32
    ref = _pytorch_fid_features(pytorch_fid_model, files)
    diff = float(np.abs(fs.features - ref).max())
    assert diff <= 1e-4, f"max abs diff {diff}"
    assert fs.weights_sha256 == W.sha256_file(weights_file)
    assert fs.embedder_id.startswith("inception:file-sha256-") and fs.embedder_id.endswith(variant)
    assert not fs.random_weights


def test_pytorch_fid_mode_matches_on_other_sizes(tmp_path, run_cli, weights_file, pytorch_fid_model):
    files = write_images(tmp_path / "imgs", 3, size=(97, 131), seed=4)
    out = tmp_path / "f.npz"
    code, _, stderr = run_cli("embed", tmp_path / "imgs", "-o", out, "-e", "inception:pytorch-fid",
                              "--weights", f"inception={weights_file}", "--workers", "0")
    assert code == 0, stderr
    ref = _pytorch_fid_features(pytorch_fid_model, files)
    assert float(np.abs(load_features(out).features - ref).max()) <= 1e-4


def test_bad_files_are_recorded_and_good_ones_embedded(tmp_path, run_cli):
    from corpus import write_corpus

    corpus = write_corpus(tmp_path / "mixed")
    out = tmp_path / "f.npz"
    code, stdout, stderr = run_cli("embed", tmp_path / "mixed", "-o", out, "--weights", "random", "--workers", "2", "--batch-size", "8")
    assert code == 0, stderr
    fs = load_features(out)
    assert sorted(fs.paths) == sorted(corpus.good)
    failed = {f["path"]: f["reason"] for f in fs.failures}
    assert set(failed) == set(corpus.bad)
    for path, keyword in corpus.bad.items():
        assert keyword in failed[path].lower(), (path, failed[path])
    for ignored in corpus.ignored:
        assert ignored not in fs.paths and ignored not in failed
    assert np.isfinite(fs.features).all()
    assert fs.random_weights and "random" in fs.embedder_id
    assert "RANDOM weights" in stderr


def test_cache_second_run_does_no_model_work_and_changed_file_reembeds_only_itself(tmp_path, cache_root):
    write_images(tmp_path / "imgs", 10, seed=5)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"")

    def run():
        embs = build_embedders(["inception", "clip:ViT-S-32/openai"], ["random"])
        with open_cache() as cache:
            res = embed_folder(tmp_path / "imgs", embs, device="cpu", batch_size=4, workers=0, cache=cache)
        return res, embs

    first, e1 = run()
    assert first.stats["n_computed"] == 10 and first.stats["n_failed"] == 1
    assert all(e.model_calls > 0 for e in e1)
    second, e2 = run()
    assert [e.model_calls for e in e2] == [0, 0]
    assert not any(e.loaded for e in e2), "a fully cached run must not even build the models"
    assert second.stats["n_from_cache"] == 10 and second.stats["n_computed"] == 0
    assert second.paths == first.paths and second.failures == first.failures
    for k in first.features:
        np.testing.assert_array_equal(second.features[k], first.features[k])

    # change one file: exactly that one is decoded and embedded again
    write_images(tmp_path / "other", 1, seed=99)
    shutil.copy(tmp_path / "other" / "img0000.png", tmp_path / "imgs" / "img0003.png")
    third, e3 = run()
    assert third.stats["n_computed"] == 1 and third.stats["n_from_cache"] == 9
    assert [e.model_calls for e in e3] == [1, 1]
    changed = third.paths.index("img0003.png")
    for k in first.features:
        same = np.delete(np.arange(10), changed)
        np.testing.assert_array_equal(third.features[k][same], first.features[k][same])
        assert not np.allclose(third.features[k][changed], first.features[k][changed])


def test_cache_counts_model_calls_not_time_via_cli(tmp_path, run_cli):
    write_images(tmp_path / "imgs", 5, seed=1)
    code, out1, _ = run_cli("embed", tmp_path / "imgs", "-o", tmp_path / "a.npz", "--weights", "random", "--workers", "0")
    code2, out2, _ = run_cli("embed", tmp_path / "imgs", "-o", tmp_path / "b.npz", "--weights", "random", "--workers", "0")
    assert code == code2 == 0
    assert "0 from cache, 5 computed" in out1
    assert "5 from cache, 0 computed" in out2
    np.testing.assert_array_equal(load_features(tmp_path / "a.npz").features, load_features(tmp_path / "b.npz").features)


def test_clip_random_embeddings_are_normalised_and_file_weights_reload(tmp_path, run_cli):
    import open_clip

    write_images(tmp_path / "imgs", 4, seed=2)
    code, _, err = run_cli("embed", tmp_path / "imgs", "-o", tmp_path / "r.npz", "-e", "clip:ViT-S-32/openai",
                           "--weights", "random", "--seed", "3", "--workers", "0")
    assert code == 0, err
    r = load_features(tmp_path / "r.npz")
    np.testing.assert_allclose(np.linalg.norm(r.features, axis=1), 1.0, atol=1e-5)
    # the same random model saved as a state dict and loaded through --weights clip=FILE
    torch.manual_seed(3)
    model = open_clip.create_model("ViT-S-32", pretrained=None, force_quick_gelu=True)
    torch.save(model.state_dict(), tmp_path / "clip.pt")
    code, _, err = run_cli("embed", tmp_path / "imgs", "-o", tmp_path / "f.npz", "-e", "clip:ViT-S-32/openai",
                           "--weights", f"clip={tmp_path / 'clip.pt'}", "--workers", "0")
    assert code == 0, err
    f = load_features(tmp_path / "f.npz")
    assert f.embedder_id != r.embedder_id
    np.testing.assert_allclose(f.features, r.features, atol=1e-5)


def test_offline_without_weights_exits_2_with_url_hash_and_path(tmp_path, run_cli, cache_root):
    write_images(tmp_path / "imgs", 2)
    code, out, err = run_cli("embed", tmp_path / "imgs", "-o", tmp_path / "f.npz", "--offline")
    assert code == 2
    msg = " ".join(err.split())
    assert "Traceback" not in err
    assert W.REGISTRY["inception"].url in msg
    assert "6726825d" in msg
    assert str(cache_root / "weights" / "pt_inception-2015-12-05-6726825d.pth") in msg
    assert err.strip().count("\n") == 0, "one line"

    code, out, err = run_cli("embed", tmp_path / "imgs", "-o", tmp_path / "f.npz", "-e", "clip", "--offline")
    assert code == 2 and "Traceback" not in err
    assert "ViT-B-32" in err and "clip" in err and "--weights random" in err


def test_import_verifies_hash_and_pretrained_loads_from_cache(tmp_path, run_cli, weights_file, monkeypatch, cache_root):
    # A wrong file is refused: its SHA-256 does not start with the published prefix.
    code, _, err = run_cli("models", "import", "inception", weights_file)
    assert code == 2 and "does not match" in err
    # Pretend the registry published our random file, then import and use it as 'pretrained'.
    digest = W.sha256_file(weights_file)
    spec = W.REGISTRY["inception"]
    monkeypatch.setitem(W.REGISTRY, "inception", W.WeightsSpec(spec.name, spec.filename, spec.url, digest[:8], spec.description, sha256=digest))
    code, out, err = run_cli("models", "import", "inception", weights_file)
    assert code == 0, err
    code, out, _ = run_cli("models", "path", "inception")
    assert Path(out.strip()).is_file()
    write_images(tmp_path / "imgs", 2, size=(299, 299))
    code, _, err = run_cli("embed", tmp_path / "imgs", "-o", tmp_path / "p.npz", "--offline", "--workers", "0")
    assert code == 0, err
    fs = load_features(tmp_path / "p.npz")
    assert fs.weights_sha256 == digest and not fs.random_weights
    code, out, _ = run_cli("models", "list")
    assert code == 0 and "inception" in out


def test_empty_folder_and_missing_folder_exit_2(tmp_path, run_cli):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli("embed", tmp_path / "empty", "-o", tmp_path / "f.npz", "--weights", "random")
    assert code == 2 and "no image files" in err and "Traceback" not in err
    code, _, err = run_cli("embed", tmp_path / "nope", "-o", tmp_path / "f.npz", "--weights", "random")
    assert code == 2 and "Traceback" not in err


def test_corrupt_weights_file_is_a_one_line_error(tmp_path, run_cli):
    write_images(tmp_path / "imgs", 2)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    code, _, err = run_cli("embed", tmp_path / "imgs", "-o", tmp_path / "f.npz", "--weights", f"inception={bad}", "--workers", "0")
    assert code == 2 and "not a loadable PyTorch state dict" in err and "Traceback" not in err
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    code, _, err = run_cli("embed", tmp_path / "imgs", "-o", tmp_path / "f.npz", "--weights", f"inception={wrong}", "--workers", "0")
    assert code == 2 and "not FID Inception weights" in err
