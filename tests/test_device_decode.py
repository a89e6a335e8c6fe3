"""Decoding on the model's device (collapse_audit.device_decode), checked on CPU.

CI has no GPU, so the device path runs here on the CPU device: torchvision's
libjpeg-turbo decoder in place of nvJPEG, the resize matrices in place of
Pillow. It must give Pillow's pixels, the same features as the Pillow path to
float32 rounding, and the same failure records for the files it hands back
to Pillow (corrupt, truncated, CMYK, rotated, a PNG named .jpg).
"""
from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image

from collapse_audit.decode import load_rgb
from collapse_audit.device_decode import decode_jpegs, probe_jpeg
from collapse_audit.embedding import embed_folder, use_device_decode
from collapse_audit.errors import UsageError
from collapse_audit.pipeline import build_embedders

from conftest import write_images

BIG = 100_000_000


def _jpeg(path, arr, **kw):
    Image.fromarray(arr).save(path, format="JPEG", quality=kw.pop("quality", 90), **kw)
    return path


def _corpus(root):
    """Plain JPEGs of several sizes, greyscale and 4:4:4 ones, and every kind the device path must hand to Pillow."""
    plain = write_images(root, 6, size=(120, 90), fmt="jpg", seed=1) + write_images(root / "sub", 3, size=(64, 80), fmt="jpg", seed=2, prefix="s")
    rng = np.random.default_rng(0)
    plain.append(_jpeg(root / "grey.jpg", rng.integers(0, 256, (70, 50), dtype=np.uint8)))
    plain.append(_jpeg(root / "full_chroma.jpg", rng.integers(0, 256, (40, 60, 3), dtype=np.uint8), subsampling=0))
    write_images(root, 2, size=(50, 50), fmt="png", seed=3, prefix="p")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"x" * 300 + b"\xff\xd9")
    data = plain[0].read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    Image.new("CMYK", (40, 30), (10, 20, 30, 40)).save(root / "cmyk.jpg")
    (root / "png_named.jpg").write_bytes((root / "p0000.png").read_bytes())
    ex = Image.open(plain[1]).getexif()
    ex[0x0112] = 6  # rotated 90 degrees: Pillow's path applies it
    Image.open(plain[1]).save(root / "rotated.jpg", exif=ex.tobytes())
    return plain


def test_probe_takes_plain_jpegs_only(tmp_path):
    plain = _corpus(tmp_path)
    for p in plain:
        assert probe_jpeg(str(p), BIG) == p.read_bytes(), p
    for name in ("p0000.png", "corrupt.jpg", "truncated.jpg", "cmyk.jpg", "png_named.jpg", "rotated.jpg"):
        # corrupt.jpg has a valid magic and end marker but no header Pillow can parse
        assert probe_jpeg(str(tmp_path / name), BIG) is None, name
    assert probe_jpeg(str(plain[0]), max_pixels=100) is None  # over the pixel limit: Pillow's path says why
    assert probe_jpeg(str(tmp_path / "missing.jpg"), BIG) is None


def test_decoder_gives_pillows_pixels_and_isolates_a_bad_file(tmp_path):
    plain = _corpus(tmp_path)
    datas = [p.read_bytes() for p in plain]
    bad = (tmp_path / "corrupt.jpg").read_bytes()
    out = decode_jpegs(datas[:3] + [bad] + datas[3:], "cpu")
    assert out[3] is None  # the batch is retried one by one; only the bad file is lost
    imgs = out[:3] + out[4:]
    for p, img in zip(plain, imgs):
        ref = np.asarray(load_rgb(p))
        assert img.dtype == torch.uint8 and tuple(img.shape) == (3,) + ref.shape[:2]
        np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), ref)


@pytest.mark.parametrize("name", ["inception", "inception:pytorch-fid"])
def test_device_path_equals_the_pillow_path(tmp_path, name):
    _corpus(tmp_path)
    res = {}
    for mode in ("pil", "device"):
        embs = build_embedders([name], ["random"])
        res[mode] = (embs[0].id, embed_folder(tmp_path, embs, device="cpu", batch_size=5, workers=0, decode=mode))
    (ida, a), (idb, b) = res["pil"], res["device"]
    assert ida == idb and a.paths == b.paths
    assert len(a.paths) == 11 + 2 + 3  # plain JPEGs, PNGs, and the CMYK, rotated and PNG-named files Pillow reads
    np.testing.assert_allclose(b.features[idb], a.features[ida], rtol=0, atol=1e-5 * max(1.0, float(np.abs(a.features[ida]).max())))
    key = sorted((f["path"], f["reason"]) for f in a.failures)
    assert key == sorted((f["path"], f["reason"]) for f in b.failures)
    assert {f["path"] for f in b.failures} == {"corrupt.jpg", "truncated.jpg"}
    assert b.stats["n_device_decoded"] == 11


def test_decode_mode_rules(tmp_path):
    inc = build_embedders(["inception"], ["random"])
    assert use_device_decode("auto", "cpu", inc) is False
    assert use_device_decode("auto", "cuda", inc) is True
    assert use_device_decode("device", "cpu", inc) is True
    assert use_device_decode("pil", "cuda", inc) is False
    with pytest.raises(UsageError, match="auto, pil or device"):
        use_device_decode("nvjpeg", "cpu", inc)
    clip_like = build_embedders(["inception"], ["random"])
    clip_like[0].device_preprocess = lambda: None  # an embedder without a device preprocessing
    with pytest.raises(UsageError, match="no device preprocessing"):
        use_device_decode("device", "cpu", clip_like)
    assert use_device_decode("auto", "cuda", clip_like) is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (nvJPEG); CI has none")
def test_nvjpeg_path_close_to_the_pillow_path(tmp_path):
    write_images(tmp_path, 16, size=(256, 256), fmt="jpg", seed=4)
    out = {}
    for mode in ("pil", "device"):
        embs = build_embedders(["inception"], ["random"])
        out[mode] = embed_folder(tmp_path, embs, device="cuda", batch_size=8, workers=0, decode=mode).features[embs[0].id]
    corr = np.corrcoef(out["pil"].ravel(), out["device"].ravel())[0, 1]
    assert corr > 0.9999
