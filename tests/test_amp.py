"""--amp: bfloat16 autocast on CPU (float16 on CUDA), its own embedder id, its own cache entries.

Mixed-precision features are a different embedding from float32 ones: the id
carries the arithmetic (``...:amp-bf16``), so the cache never serves float32
features to an ``--amp`` run or the reverse. How far they move is measured
here on random-weight Inception (correlation, relative error); the benchmark
(``make bench-embed``) reports the same on realistic images together with FID.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from collapse_audit import embed
from collapse_audit.embedders import precision_tag

from conftest import write_images


def test_precision_tag():
    assert precision_tag(False, "cpu") == "fp32" and precision_tag(False, "cuda:0") == "fp32"
    assert precision_tag(True, "cpu") == "amp-bf16" and precision_tag(True, "cuda") == "amp-fp16"


def test_cpu_amp_is_bf16_close_to_fp32_and_cached_apart(tmp_path):
    write_images(tmp_path / "img", 6, size=(96, 80), seed=3)
    kw = dict(weights=["random"], device="cpu", batch_size=8, cache_dir=tmp_path / "cache")
    f32 = embed(tmp_path / "img", "inception", **kw)
    bf = embed(tmp_path / "img", "inception", amp=True, **kw)
    assert f32.embedder_id == "inception:random-seed0:clean"
    assert bf.embedder_id == "inception:random-seed0:clean:amp-bf16"
    assert not np.array_equal(f32.features, bf.features)  # computed, not served from the float32 entries
    corr = np.corrcoef(f32.features.ravel(), bf.features.ravel())[0, 1]
    rel = np.abs(bf.features - f32.features).max() / np.abs(f32.features).max()
    assert corr > 0.999 and rel < 0.05, (corr, rel)  # bfloat16 keeps 8 bits of mantissa
    again = embed(tmp_path / "img", "inception", **kw)  # float32 again: from the cache, bit-equal
    np.testing.assert_array_equal(again.features, f32.features)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (float16 autocast)")
def test_cuda_amp_is_fp16(tmp_path):
    write_images(tmp_path / "img", 4, size=(64, 64))
    fs = embed(tmp_path / "img", "inception", weights=["random"], device="cuda", amp=True, use_cache=False)
    assert fs.embedder_id.endswith(":amp-fp16")
