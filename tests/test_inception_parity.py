"""FID Inception-v3 parity with pytorch-fid, and the two preprocessing paths.

No network: pytorch-fid's download of the published weights is replaced by
seeded random weights with the published key names, which go through a temp
file and our real loading code (torch.load(weights_only=True) ->
build_fid_inception).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from collapse_audit.models.inception import (
    FID_FEATURE_DIM,
    PREPROCESSING,
    FIDInceptionV3,
    build_fid_inception,
    fid_state_dict_keys,
    preprocess_clean,
    preprocess_pytorch_fid,
    random_fid_state_dict,
)

TOL = 1e-4
SEED = 1234


@pytest.fixture(scope="module")
def state_dict():
    return random_fid_state_dict(SEED)


@pytest.fixture(scope="module")
def ours(state_dict, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "pt_inception-random.pth"
    torch.save(state_dict, path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    return build_fid_inception(loaded)


@pytest.fixture(scope="module")
def pytorch_fid_models(state_dict):
    """pytorch-fid's fid_inception_v3() and InceptionV3([3]), their download replaced by our weights."""
    pfi = pytest.importorskip("pytorch_fid.inception")
    mp = pytest.MonkeyPatch()

    def fake_download(url, *args, **kwargs):
        assert url == pfi.FID_WEIGHTS_URL
        return {k: v.clone() for k, v in state_dict.items()}

    mp.setattr(pfi, "load_state_dict_from_url", fake_download)
    try:
        # both call inception.load_state_dict(state_dict) strictly on the
        # torchvision-based model: our key names are the published ones
        full = pfi.fid_inception_v3()
        model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    finally:
        mp.undo()
    return full.eval(), model.eval()


@pytest.fixture(scope="module")
def reference(pytorch_fid_models):
    return pytorch_fid_models[1]


def _ref_features(reference, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return reference(x)[0].squeeze(-1).squeeze(-1)


def _features(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _random_image(h: int, w: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    # smooth structure plus noise, so resizing matters
    yy, xx = np.mgrid[0:h, 0:w]
    base = 127 + 100 * np.sin(xx[..., None] / (3 + np.arange(3)) + yy[..., None] / 7.0)
    arr = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def _to_tensor(img: Image.Image) -> torch.Tensor:
    from torchvision.transforms.functional import to_tensor

    return to_tensor(img)


# ---------------------------------------------------------------- weights


def test_state_dict_keys_match_pytorch_fid_model(pytorch_fid_models, state_dict):
    full, _ = pytorch_fid_models
    ref = full.state_dict()
    assert list(ref) == fid_state_dict_keys() == list(state_dict)
    assert all(ref[k].shape == v.shape for k, v in state_dict.items())
    assert state_dict["fc.weight"].shape == (1008, 2048)


def test_random_state_dict_is_deterministic():
    a, b, c = random_fid_state_dict(7), random_fid_state_dict(7), random_fid_state_dict(8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["Conv2d_1a_3x3.conv.weight"], c["Conv2d_1a_3x3.conv.weight"])
    assert all(v.dtype in (torch.float32, torch.int64) for v in a.values())


def test_random_features_finite_and_distinct(ours):
    torch.manual_seed(0)
    x = torch.stack(
        [
            torch.zeros(3, 299, 299),
            torch.ones(3, 299, 299),
            torch.linspace(0, 1, 299).expand(3, 299, 299).clone(),
            torch.rand(3, 299, 299),
        ]
    )
    f = _features(ours, x)
    assert f.shape == (4, FID_FEATURE_DIM) and f.dtype == torch.float32
    assert torch.isfinite(f).all()
    assert (f > 0).float().mean() > 0.5  # ReLU features, mostly active
    d = torch.cdist(f, f)
    assert d[~torch.eye(4, dtype=torch.bool)].min() > 1e-2, d


# ---------------------------------------------------------------- parity


def test_parity_with_pytorch_fid_299(ours, reference):
    torch.manual_seed(1)
    x = torch.rand(3, 3, 299, 299)
    got, want = _features(ours, x), _ref_features(reference, x)
    diff = (got - want).abs().max().item()
    assert got.shape == want.shape == (3, 2048)
    assert diff <= TOL, f"max abs diff vs pytorch-fid = {diff:.3e}"


def test_parity_with_pytorch_fid_resized_tensor(ours, reference):
    torch.manual_seed(2)
    x = torch.rand(2, 3, 128, 96)
    diff = (_features(ours, x) - _ref_features(reference, x)).abs().max().item()
    assert diff <= TOL, f"max abs diff vs pytorch-fid (128x96 input) = {diff:.3e}"


def test_preprocess_pytorch_fid_matches_pytorch_fid_pipeline(ours, reference):
    img = _random_image(128, 96, seed=3)  # PIL size (96, 128): H=128, W=96
    x = preprocess_pytorch_fid(img)
    assert x.shape == (3, 299, 299) and x.dtype == torch.float32
    want = _ref_features(reference, _to_tensor(img)[None])  # pytorch-fid resizes inside
    got = _features(ours, x[None])
    diff = (got - want).abs().max().item()
    assert diff <= TOL, f"max abs diff vs pytorch-fid on a 128x96 PIL image = {diff:.3e}"


def test_channels_last_and_autocast(ours):
    torch.manual_seed(4)
    x = torch.rand(2, 3, 299, 299)
    base = _features(ours, x)
    cl_model = build_fid_inception(random_fid_state_dict(SEED)).to(memory_format=torch.channels_last)
    cl = _features(cl_model, x.contiguous(memory_format=torch.channels_last))
    assert (cl - base).abs().max().item() <= TOL
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        amp = ours(x)
    assert amp.dtype == torch.float32 and torch.isfinite(amp).all()
    rel = ((amp - base).norm() / base.norm()).item()
    assert rel < 0.1, f"bfloat16 autocast relative error {rel:.3f}"


# ---------------------------------------------------------------- loading errors


def test_wrong_key_raises_value_error(state_dict):
    bad = dict(state_dict)
    bad["Conv2d_1a_3x3.conv.weight_renamed"] = bad.pop("Conv2d_1a_3x3.conv.weight")
    with pytest.raises(ValueError) as err:
        build_fid_inception(bad)
    msg = str(err.value)
    assert "\n" not in msg
    assert "missing" in msg and "Conv2d_1a_3x3.conv.weight" in msg
    assert "unexpected" in msg and "weight_renamed" in msg


def test_many_wrong_keys_are_abbreviated(state_dict):
    bad = {"module." + k: v for k, v in state_dict.items()}  # a DataParallel-style dump
    with pytest.raises(ValueError, match=r"more\)") as err:
        build_fid_inception(bad)
    assert len(str(err.value)) < 500


def test_wrong_shape_raises_value_error(state_dict):
    bad = dict(state_dict)
    bad["fc.weight"] = torch.zeros(1000, 2048)
    with pytest.raises(ValueError, match="fc.weight"):
        build_fid_inception(bad)


def test_num_batches_tracked_optional(state_dict):
    slim = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    model = build_fid_inception(slim)
    assert isinstance(model, FIDInceptionV3) and not model.training
    assert all(not p.requires_grad for p in model.parameters())


# ---------------------------------------------------------------- clean resize


def _clean_fid_reference(img: Image.Image) -> torch.Tensor:
    """clean-fid's make_resizer("PIL", False, "bicubic", (299, 299)) + ToTensor, written out; / 255."""
    x = np.asarray(img.convert("RGB"))
    s1, s2 = 299, 299
    chans = []
    for idx in range(3):
        ch = Image.fromarray(x[:, :, idx].astype(np.float32))
        assert ch.mode == "F"
        ch = ch.resize((s1, s2), resample=Image.BICUBIC)
        chans.append(np.asarray(ch).clip(0, 255).reshape(s2, s1, 1))
    hwc = np.concatenate(chans, axis=2).astype(np.float32)
    return torch.from_numpy(hwc.transpose(2, 0, 1).copy()) / 255


def test_preprocess_clean_299_is_plain_to_tensor():
    img = _random_image(299, 299, seed=5)
    assert torch.equal(preprocess_clean(img), _to_tensor(img))


@pytest.mark.parametrize("hw", [(512, 384), (100, 150), (64, 64)])
def test_preprocess_clean_matches_clean_fid_formula(hw):
    img = _random_image(*hw, seed=6)
    got = preprocess_clean(img)
    assert got.shape == (3, 299, 299) and got.dtype == torch.float32
    assert 0.0 <= got.min() and got.max() <= 1.0
    want = _clean_fid_reference(img)
    assert (got - want).abs().max().item() <= 1e-6
    try:
        from cleanfid.resize import make_resizer
    except ImportError:
        return
    cf = make_resizer("PIL", False, "bicubic", (299, 299))(np.asarray(img))
    cf = torch.from_numpy(cf.transpose(2, 0, 1).copy()) / 255
    assert (got - cf).abs().max().item() <= 1e-6


def test_clean_resize_antialiases_where_bilinear_aliases():
    # 1-pixel checkerboard: a correct (low-pass) downscale is flat grey
    checker = ((np.indices((1024, 1024)).sum(0) % 2) * 255).astype(np.uint8)
    img = Image.fromarray(np.repeat(checker[..., None], 3, axis=2))
    clean = preprocess_clean(img)
    bilinear = preprocess_pytorch_fid(img)
    assert abs(clean.mean().item() - 0.5) < 0.02 and clean.std().item() < 0.05
    assert bilinear.std().item() > 0.1 and bilinear.std().item() > 5 * clean.std().item()


def test_preprocessing_registry_and_non_rgb_input():
    assert PREPROCESSING == {"clean": preprocess_clean, "pytorch-fid": preprocess_pytorch_fid}
    gray = Image.new("L", (30, 40), 200)
    for fn in PREPROCESSING.values():
        out = fn(gray)
        assert out.shape == (3, 299, 299)
        assert torch.allclose(out, torch.full_like(out, 200 / 255), atol=1e-5)
