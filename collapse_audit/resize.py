"""Image resizing as matrix products: PIL's antialiased filters, exactly, on any device.

PIL resamples separably: every output column is a weighted sum of a window of
input columns (then the same for rows), with weights from the filter stretched
by the scale factor when shrinking (that stretch is the antialiasing).
:func:`pil_weights` computes those weights exactly as Pillow's
``precompute_coeffs`` does (``libImaging/Resample.c``: window bounds, the
``+ 0.5`` pixel-centre offsets, normalisation to sum 1), as a dense
``(out, in)`` matrix. Resizing a batch is then two matrix products,
``W_h @ X @ W_w^T`` (horizontal first, as PIL), which run batched on a GPU
and reproduce ``Image.resize`` of a float (mode ``F``) image to float32
rounding: clean-fid's "clean" resize without one PIL call per channel and image.

:func:`resize_clean` is that resize for the FID Inception (:mod:`collapse_audit.models.inception`,
``preprocess_clean``); :func:`resize_bilinear_pytorch_fid` the pytorch-fid one
(bilinear ``F.interpolate`` without antialiasing), batched.

The matrices are cached per ``(in, out, filter)``; they are small (299 x 512
floats for a 512-px side).
"""
from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["FILTERS", "pil_weights", "resize_matrices", "resize_batch", "resize_clean", "resize_bilinear_pytorch_fid"]


def _bicubic(x: float) -> float:
    a = -0.5  # Pillow's bicubic (Keys, a = -0.5)
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return 0.0


def _bilinear(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _box(x: float) -> float:
    return 1.0 if -0.5 < x <= 0.5 else 0.0


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x *= math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    return _sinc(x) * _sinc(x / 3.0) if -3.0 <= x < 3.0 else 0.0


#: name -> (filter function, support), as in Pillow's Resample.c.
FILTERS: dict = {"bicubic": (_bicubic, 2.0), "bilinear": (_bilinear, 1.0), "box": (_box, 0.5), "lanczos": (_lanczos, 3.0)}


@functools.lru_cache(maxsize=64)
def _weights_cached(n_in: int, n_out: int, name: str) -> np.ndarray:
    filt, base_support = FILTERS[name]
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = base_support * filterscale
    ss = 1.0 / filterscale
    w = np.zeros((n_out, n_in), dtype=np.float64)
    for xx in range(n_out):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)  # C's (int) truncates toward zero, then the clamp
        xmax = min(int(center + support + 0.5), n_in)
        k = np.array([filt((x - center + 0.5) * ss) for x in range(xmin, xmax)], dtype=np.float64)
        total = k.sum()
        if total != 0.0:
            k /= total
        w[xx, xmin:xmax] = k
    w.setflags(write=False)
    return w


def pil_weights(n_in: int, n_out: int, filter: str = "bicubic") -> np.ndarray:
    """``(n_out, n_in)`` float64 matrix of Pillow's resampling weights along one axis (rows sum to 1)."""
    if filter not in FILTERS:
        raise ValueError(f"unknown filter {filter!r}: one of {', '.join(FILTERS)}")
    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes must be positive, got {n_in} -> {n_out}")
    return _weights_cached(int(n_in), int(n_out), filter)


def resize_matrices(in_hw: tuple[int, int], out_hw: tuple[int, int], filter: str = "bicubic", *, device=None, dtype=None):
    """``(W_h, W_w)`` as torch tensors on ``device``: ``Y = W_h @ X @ W_w.T`` resizes (..., H, W) to (..., h, w)."""
    import torch

    dtype = dtype or torch.float32
    wh = torch.from_numpy(np.array(pil_weights(in_hw[0], out_hw[0], filter))).to(device=device, dtype=dtype)
    ww = torch.from_numpy(np.array(pil_weights(in_hw[1], out_hw[1], filter))).to(device=device, dtype=dtype)
    return wh, ww


def resize_batch(x, out_hw: tuple[int, int], filter: str = "bicubic"):
    """Resize a float batch ``(..., H, W)`` to ``(..., h, w)`` like PIL's ``Image.resize`` on mode-F images.

    Horizontal pass first, then vertical (PIL's order); the products run in
    ``x``'s dtype (float32 for PIL parity) on ``x``'s device. A size that does
    not change is returned as is (PIL copies it).
    """
    import torch

    h, w = int(x.shape[-2]), int(x.shape[-1])
    if (h, w) == tuple(out_hw):
        return x
    wh, ww = resize_matrices((h, w), out_hw, filter, device=x.device, dtype=x.dtype)
    y = torch.matmul(x, ww.T) if w != out_hw[1] else x
    return torch.matmul(wh, y) if h != out_hw[0] else y


def resize_clean(x_uint8, size: int = 299):
    """clean-fid's resize of a uint8 batch ``(B, 3, H, W)`` (any device): float32 ``(B, 3, size, size)`` in [0, 1].

    Equal to :func:`collapse_audit.models.inception.preprocess_clean` image by
    image (PIL bicubic with antialiasing on each channel as a float image,
    clipped to [0, 255], divided by 255), to float32 rounding.
    """
    import torch

    x = x_uint8.to(torch.float32)
    y = resize_batch(x, (size, size), "bicubic")
    return y.clamp_(0.0, 255.0).div_(255.0) if y is not x else y.div(255.0)


def resize_bilinear_pytorch_fid(x_uint8, size: int = 299):
    """pytorch-fid's resize of a uint8 batch ``(B, 3, H, W)``: ``/255`` then bilinear ``F.interpolate`` (no antialiasing)."""
    import torch
    import torch.nn.functional as F

    x = x_uint8.to(torch.float32).div(255.0)
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
