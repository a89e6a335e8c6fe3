"""The FID Inception-v3 network and the image preprocessing that feeds it.

Network
-------
:class:`FIDInceptionV3` is Inception-v3 (Szegedy et al. 2016, "Rethinking the
Inception Architecture for Computer Vision") as frozen in TensorFlow's
2015-12-05 graph, the network whose 2048-d pool3 features define the Frechet
Inception Distance (Heusel et al. 2017, "GANs Trained by a Two Time-Scale
Update Rule Converge to a Local Nash Equilibrium"). It follows the PyTorch port
of pytorch-fid (``pytorch_fid.inception.fid_inception_v3``): the torchvision
Inception3 topology with the FID-specific blocks (average pools that exclude
padding, a max pool in the last block, 1008 logits, BatchNorm eps=0.001).
Module and parameter names equal the keys of the published weights file
``pt_inception-2015-12-05-6726825d.pth``, so that file loads directly, and
``FIDInceptionV3()(x)`` equals pytorch-fid's ``InceptionV3([3])(x)[0]``
squeezed to (B, 2048) on the same input tensor.

The architecture is written out here (pure torch); neither pytorch-fid nor
torchvision.models is imported at run time.

Preprocessing
-------------
FID depends on how images are resized to 299x299 (Parmar et al. 2022, "On
Aliased Resizing and Surprising Subtleties in GAN Evaluation"). Two choices
are offered, by id in :data:`PREPROCESSING`:

``"clean"`` (the default)
    clean-fid's "clean" resize: each channel is resized as a float32 image with
    PIL's bicubic filter, which low-pass filters (anti-aliases) when it
    downsamples, then clipped to [0, 255]. Bilinear interpolation without a
    filter (what pytorch-fid does inside the model) aliases when downscaling
    large images, so FID then reacts to resize artifacts rather than to the
    images; the clean resize is the one Parmar et al. recommend. Note: only the
    resize matches clean-fid; the network and its input scaling (2x-1) are
    pytorch-fid's, so absolute numbers are close to, not equal to, clean-fid's.

``"pytorch-fid"``
    pytorch-fid's own path, reproduced exactly: the uint8 image is converted to
    float in [0, 1] at its native size (``to_tensor``) and bilinearly
    interpolated to 299x299 (``align_corners=False``). Use it to reproduce
    numbers computed with pytorch-fid.

Both return float32 tensors (3, 299, 299) in [0, 1], ready to batch.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "FIDInceptionV3",
    "FID_INPUT_SIZE",
    "FID_FEATURE_DIM",
    "fid_state_dict_keys",
    "random_fid_state_dict",
    "build_fid_inception",
    "preprocess_clean",
    "preprocess_pytorch_fid",
    "PREPROCESSING",
]

FID_INPUT_SIZE = 299
FID_FEATURE_DIM = 2048
_NUM_LOGITS = 1008  # the TF 2015-12-05 graph has 1008 classes (1000 + unused)


# --------------------------------------------------------------------------
# Architecture (Szegedy et al. 2016; pytorch-fid's port of the TF FID graph)
# --------------------------------------------------------------------------


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps=0.001) -> ReLU, torchvision naming (``conv``, ``bn``)."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg_pool_3x3_excl_pad(x: torch.Tensor) -> torch.Tensor:
    # The TF graph's average pools do not count the zero padding.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """Inception block A (35x35 grid) of the FID graph (pytorch-fid ``FIDInceptionA``)."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_3x3_excl_pad(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction 35x35 -> 17x17 (torchvision ``InceptionB``, unchanged in the FID graph)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        b3d = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b3d, bp], 1)


class FIDInceptionC(nn.Module):
    """Inception block C (17x17 grid, factorized 7x7) of the FID graph (pytorch-fid ``FIDInceptionC``)."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7d = self.branch7x7dbl_1(x)
        b7d = self.branch7x7dbl_2(b7d)
        b7d = self.branch7x7dbl_3(b7d)
        b7d = self.branch7x7dbl_4(b7d)
        b7d = self.branch7x7dbl_5(b7d)
        bp = self.branch_pool(_avg_pool_3x3_excl_pad(x))
        return torch.cat([b1, b7, b7d, bp], 1)


class InceptionD(nn.Module):
    """Grid reduction 17x17 -> 8x8 (torchvision ``InceptionD``, unchanged in the FID graph)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        b7 = self.branch7x7x3_2(b7)
        b7 = self.branch7x7x3_3(b7)
        b7 = self.branch7x7x3_4(b7)
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class FIDInceptionE(nn.Module):
    """Inception block E (8x8 grid, expanded filter bank) of the FID graph.

    ``pool="avg"`` is pytorch-fid's ``FIDInceptionE_1`` (Mixed_7b: average pool
    excluding padding); ``pool="max"`` is ``FIDInceptionE_2`` (Mixed_7c: the TF
    graph uses a max pool here, a known quirk of the 2015-12-05 graph).
    """

    def __init__(self, in_channels: int, pool: str) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', not {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        b3d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3d = torch.cat([self.branch3x3dbl_3a(b3d), self.branch3x3dbl_3b(b3d)], 1)
        if self.pool == "avg":
            bp = _avg_pool_3x3_excl_pad(x)
        else:
            bp = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        bp = self.branch_pool(bp)
        return torch.cat([b1, b3, b3d, bp], 1)

    def extra_repr(self) -> str:
        return f"pool={self.pool!r}"


class FIDInceptionV3(nn.Module):
    """Inception-v3 (Szegedy et al. 2016) as the TF 2015-12-05 FID graph, ported by pytorch-fid.

    ``forward(x)`` maps float (B, 3, H, W) images in [0, 1] to the (B, 2048)
    pool3 features used by FID (Heusel et al. 2017). If ``resize_input`` and
    (H, W) != (299, 299) the batch is first resized with bilinear interpolation
    (``align_corners=False``), exactly as pytorch-fid's ``InceptionV3``; the
    input is then scaled to [-1, 1] by ``2x - 1``. The result equals
    ``pytorch_fid.inception.InceptionV3([3])(x)[0].squeeze(-1).squeeze(-1)``.

    The logits layer ``fc`` (1008 outputs) is kept only so that the published
    weights file loads by its own keys; :meth:`forward` does not use it.
    Works with ``torch.channels_last`` and under ``torch.autocast``; features
    computed in reduced precision are returned as float32.
    """

    def __init__(self, resize_input: bool = True) -> None:
        super().__init__()
        self.resize_input = resize_input
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, pool="avg")
        self.Mixed_7c = FIDInceptionE(2048, pool="max")
        self.fc = nn.Linear(2048, _NUM_LOGITS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        if self.resize_input and tuple(x.shape[-2:]) != (FID_INPUT_SIZE, FID_INPUT_SIZE):
            x = F.interpolate(x, size=(FID_INPUT_SIZE, FID_INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1  # [0, 1] -> [-1, 1]
        # pytorch-fid block 0
        x = self.Conv2d_1a_3x3(x)
        x = self.Conv2d_2a_3x3(x)
        x = self.Conv2d_2b_3x3(x)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        # block 1
        x = self.Conv2d_3b_1x1(x)
        x = self.Conv2d_4a_3x3(x)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        # block 2
        x = self.Mixed_5b(x)
        x = self.Mixed_5c(x)
        x = self.Mixed_5d(x)
        x = self.Mixed_6a(x)
        x = self.Mixed_6b(x)
        x = self.Mixed_6c(x)
        x = self.Mixed_6d(x)
        x = self.Mixed_6e(x)
        # block 3
        x = self.Mixed_7a(x)
        x = self.Mixed_7b(x)
        x = self.Mixed_7c(x)
        x = F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x


# --------------------------------------------------------------------------
# Weights: published key names, seeded random weights, strict loading
# --------------------------------------------------------------------------

_OPTIONAL_SUFFIX = ".num_batches_tracked"  # BatchNorm counter; unused in eval


def _skeleton() -> FIDInceptionV3:
    """The network on the meta device: names and shapes, no memory, no init cost."""
    with torch.device("meta"):
        return FIDInceptionV3()


def fid_state_dict_keys() -> list[str]:
    """The key names of the published FID Inception weights (pytorch-fid's port), in module order.

    These are torchvision ``Inception3(num_classes=1008, aux_logits=False)``
    state-dict keys with Mixed_5b..Mixed_7c replaced by the FID blocks, e.g.
    ``Conv2d_1a_3x3.conv.weight``, ``Mixed_7c.branch_pool.bn.running_var``,
    ``fc.bias``. BatchNorm ``num_batches_tracked`` counters are included (a
    plain ``state_dict()`` has them); :func:`build_fid_inception` accepts a
    file with or without them.
    """
    return list(_skeleton().state_dict().keys())


def random_fid_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random weights for the FID Inception-v3, with the published file's key names.

    The "random network" baseline (``--weights random``) and the test fixture.
    Filled deterministically from ``torch.Generator().manual_seed(seed)`` in key
    order: conv weights ~ N(0, 2/fan_in) (He et al. 2015 "Kaiming" init, which
    keeps the activation scale through ReLU layers), BatchNorm weight ~ U(0.8, 1.2),
    bias ~ N(0, 0.05^2), running_mean ~ N(0, 0.05^2), running_var ~ U(0.8, 1.2),
    fc weight ~ N(0, 1/2048), fc bias 0. Features stay finite and differ between
    images. CPU float32 tensors; the same seed gives the same tensors on every
    machine.
    """
    gen = torch.Generator().manual_seed(int(seed))
    out: dict[str, torch.Tensor] = {}
    for name, ref in _skeleton().state_dict().items():
        shape = tuple(ref.shape)
        if name.endswith(_OPTIONAL_SUFFIX):
            out[name] = torch.zeros((), dtype=torch.long)
        elif name == "fc.weight":
            out[name] = torch.randn(shape, generator=gen) / math.sqrt(shape[1])
        elif name == "fc.bias":
            out[name] = torch.zeros(shape)
        elif name.endswith("conv.weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            out[name] = torch.randn(shape, generator=gen) * math.sqrt(2.0 / fan_in)
        elif name.endswith("bn.weight") or name.endswith("bn.running_var"):
            out[name] = 0.8 + 0.4 * torch.rand(shape, generator=gen)
        elif name.endswith("bn.bias") or name.endswith("bn.running_mean"):
            out[name] = 0.05 * torch.randn(shape, generator=gen)
        else:  # pragma: no cover - every key of the architecture is handled above
            raise AssertionError(f"no random init rule for {name}")
        out[name] = out[name].contiguous()
    return out


def _describe(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return f"{shown}{more}"


def build_fid_inception(
    state_dict: Mapping[str, torch.Tensor] | None = None,
    *,
    seed: int = 0,
    resize_input: bool = True,
) -> FIDInceptionV3:
    """Build the FID Inception-v3 (pytorch-fid port of the TF 2015-12-05 graph) in eval mode.

    ``state_dict`` is the published ``pt_inception-2015-12-05-6726825d.pth``
    (as returned by ``torch.load``) or any dict with the same keys; ``None``
    loads :func:`random_fid_state_dict` (``seed``). Keys are checked strictly:
    a missing or unexpected key (``num_batches_tracked`` counters excepted, they
    are optional) or a wrong shape raises :class:`ValueError` with a one-line
    message naming the first few offending keys. Returns a CPU float32 model
    with ``requires_grad`` off.
    """
    if state_dict is None:
        state_dict = random_fid_state_dict(seed)
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"FID Inception weights: expected a state dict (mapping), got {type(state_dict).__name__}")
    model = _skeleton()
    expected = model.state_dict()
    given = {str(k): v for k, v in state_dict.items()}
    missing = [k for k in expected if k not in given and not k.endswith(_OPTIONAL_SUFFIX)]
    unexpected = [k for k in given if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_describe(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_describe(unexpected)}")
        raise ValueError(
            "FID Inception weights do not match pt_inception-2015-12-05 key names: " + "; ".join(parts)
        )
    bad_shape = [
        f"{k} {tuple(given[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and tuple(getattr(given[k], "shape", ())) != tuple(v.shape)
    ]
    if bad_shape:
        raise ValueError(f"FID Inception weights have {len(bad_shape)} wrongly shaped tensor(s): {_describe(bad_shape)}")
    full = {}
    for k, v in expected.items():
        if k in given:
            t = given[k]
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"FID Inception weights: {k} is not a tensor ({type(t).__name__})")
            full[k] = t
        else:
            full[k] = torch.zeros((), dtype=torch.long)
    model = model.to_empty(device="cpu")
    model.load_state_dict(full, strict=True)
    model.requires_grad_(False)
    return model.eval()


# --------------------------------------------------------------------------
# Preprocessing: PIL RGB image -> float32 (3, 299, 299) in [0, 1]
# --------------------------------------------------------------------------


def _as_rgb_uint8(img: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(img, Image.Image):
        if img.mode != "RGB":
            img = img.convert("RGB")
        arr = np.array(img)  # a writable copy (torch.from_numpy warns on read-only arrays)
    else:
        arr = np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3) uint8, got {arr.dtype} {arr.shape}")
    return arr


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    """torchvision ``to_tensor`` on uint8 HWC: float32 CHW divided by 255."""
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous().to(torch.float32).div(255)


def preprocess_clean(img: Image.Image | np.ndarray) -> torch.Tensor:
    """clean-fid's "clean" resize (Parmar et al. 2022) to 299x299: float32 (3, 299, 299) in [0, 1].

    Each channel, as a float32 PIL image (mode ``F``), is resized with PIL's
    anti-aliased bicubic filter, clipped to [0, 255] and divided by 255 — the
    same numbers as ``cleanfid.resize.make_resizer("PIL", False, "bicubic",
    (299, 299))`` / 255. A 299x299 image is not resized (PIL would return it
    unchanged). ``img``: PIL RGB image (other modes are converted to RGB, as
    clean-fid does) or a uint8 (H, W, 3) array.
    """
    arr = _as_rgb_uint8(img)
    h, w = arr.shape[:2]
    if (h, w) == (FID_INPUT_SIZE, FID_INPUT_SIZE):
        return _to_tensor(arr)
    size = (FID_INPUT_SIZE, FID_INPUT_SIZE)
    channels = []
    for c in range(3):
        ch = Image.fromarray(np.ascontiguousarray(arr[:, :, c], dtype=np.float32))  # mode "F"
        ch = ch.resize(size, resample=Image.BICUBIC)
        channels.append(np.asarray(ch, dtype=np.float32).clip(0, 255))
    out = np.stack(channels, axis=0) / np.float32(255)
    return torch.from_numpy(out.astype(np.float32, copy=False))


def preprocess_pytorch_fid(img: Image.Image | np.ndarray) -> torch.Tensor:
    """pytorch-fid's preprocessing, reproduced exactly: float32 (3, 299, 299) in [0, 1].

    ``to_tensor`` at native size (uint8 -> float / 255), then the bilinear
    ``F.interpolate(size=(299, 299), align_corners=False)`` that pytorch-fid's
    ``InceptionV3`` applies inside the model, done here per image so images of
    different sizes can be batched; the features equal pytorch-fid's on that
    image alone. ``img``: PIL RGB image (other modes are converted to RGB, as
    pytorch-fid does) or a uint8 (H, W, 3) array.
    """
    x = _to_tensor(_as_rgb_uint8(img))
    if tuple(x.shape[-2:]) != (FID_INPUT_SIZE, FID_INPUT_SIZE):
        x = F.interpolate(x[None], size=(FID_INPUT_SIZE, FID_INPUT_SIZE), mode="bilinear", align_corners=False)[0]
    return x


PREPROCESSING: dict[str, Callable[[Image.Image | np.ndarray], torch.Tensor]] = {
    "clean": preprocess_clean,
    "pytorch-fid": preprocess_pytorch_fid,
}
"""Preprocessing by id (stored with embeddings). ``"clean"`` is the default; see the module docstring."""
