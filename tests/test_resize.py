"""collapse_audit.resize: Pillow's resampling as matrix products, checked against Pillow itself.

The reference is ``PIL.Image.resize`` on float (mode ``F``) images, the call
clean-fid's "clean" resize makes; the matrices must reproduce it to float32
rounding for up- and down-scaling, odd sizes and extreme aspect ratios, for
every filter, and ``resize_clean`` on a uint8 batch must equal
``preprocess_clean`` image by image.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from collapse_audit.models.inception import preprocess_clean, preprocess_pytorch_fid
from collapse_audit.resize import pil_weights, resize_batch, resize_bilinear_pytorch_fid, resize_clean

PIL_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "box": Image.BOX, "lanczos": Image.LANCZOS}
SIZES = [(512, 512), (64, 48), (300, 299), (1000, 37), (17, 400), (299, 299), (3, 3)]


@pytest.mark.parametrize("filt", sorted(PIL_FILTERS))
@pytest.mark.parametrize("hw", SIZES)
def test_matrices_equal_pillow_on_float_images(filt, hw):
    rng = np.random.default_rng(hash((filt, hw)) % 2**32)
    a = (rng.random(hw) * 255).astype(np.float32)
    for out in [(299, 299), (31, 77), (1, 5)]:
        ref = np.asarray(Image.fromarray(a).resize((out[1], out[0]), resample=PIL_FILTERS[filt]), dtype=np.float32)
        got = resize_batch(torch.from_numpy(a)[None], out, filt)[0].numpy()
        # float32 rounding of sums of up to a few hundred terms of size <= 255
        np.testing.assert_allclose(got, ref, rtol=0, atol=2e-3)


def test_weights_are_a_partition_of_unity_and_banded():
    w = pil_weights(512, 299, "bicubic")
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    nz = [np.flatnonzero(r) for r in w]
    assert max(x[-1] - x[0] + 1 for x in nz) <= 2 * int(np.ceil(2 * 512 / 299)) + 1  # Pillow's window size
    assert np.array_equal(pil_weights(299, 299, "bicubic"), np.eye(299))  # same size: identity
    with pytest.raises(ValueError):
        pil_weights(10, 5, "gaussian")


def test_resize_clean_equals_preprocess_clean_image_by_image():
    rng = np.random.default_rng(0)
    for hw in [(512, 384), (100, 100), (299, 299)]:
        x = rng.integers(0, 256, size=(3, 3) + hw, dtype=np.uint8)
        ref = torch.stack([preprocess_clean(np.ascontiguousarray(xi.transpose(1, 2, 0))) for xi in x])
        got = resize_clean(torch.from_numpy(x))
        assert got.shape == (3, 3, 299, 299) and got.dtype == torch.float32
        assert (got - ref).abs().max().item() <= 1e-5


def test_resize_bilinear_equals_the_pytorch_fid_preprocessing():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(2, 3, 200, 150), dtype=np.uint8)
    ref = torch.stack([preprocess_pytorch_fid(np.ascontiguousarray(xi.transpose(1, 2, 0))) for xi in x])
    assert (resize_bilinear_pytorch_fid(torch.from_numpy(x)) - ref).abs().max().item() <= 1e-6
