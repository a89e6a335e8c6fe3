"""The embedder registry: Inception-v3 (FID features) and CLIP (open_clip).

An embedder is named on the command line (``inception``, ``clip``,
``clip:ViT-B-32/openai``, ``inception:pytorch-fid``) and identified in every
output by an *id* that includes its weights and its preprocessing, e.g.
``inception:pt_inception-2015-12-05-6726825d:clean`` or
``clip:ViT-B-32/openai:random-seed0``. Features with different ids are never
compared and never share cache entries.

Weights choices (``--weights``): ``pretrained`` (default: downloaded and
verified, see :mod:`collapse_audit.weights`), ``random`` (the real
architecture with seeded random weights, reported loudly everywhere) or a
local file per embedder (``--weights inception=PATH``), loaded through the
same code path as the published file with ``torch.load(weights_only=True)``.

An embedder is built cheaply (no weights loaded) so that its id is known for
cache look-ups; :meth:`Embedder.load` builds the network only when some image
actually needs embedding.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import weights as W
from .decode import DEFAULT_MAX_ASPECT_RATIO
from .errors import InputError, UsageError, WeightsError
from .resize import resize_bilinear_pytorch_fid, resize_clean

DEFAULT_CLIP = "ViT-B-32/openai"


@dataclass
class WeightsChoice:
    """How an embedder gets its weights: 'pretrained', 'random' or 'file'."""

    mode: str = "pretrained"
    path: str | None = None
    seed: int = 0


def parse_weights_options(values: Sequence[str] | None, seed: int = 0) -> dict[str, WeightsChoice]:
    """Parse ``--weights`` values: ``pretrained``, ``random``, ``NAME=PATH``, ``NAME=random``.

    Returns a mapping embedder family (``inception``, ``clip``, ``*``) -> choice.
    """
    out: dict[str, WeightsChoice] = {}
    for v in values or []:
        v = v.strip()
        if v in ("pretrained", "random"):
            out["*"] = WeightsChoice(v, None, seed)
            continue
        if "=" not in v:
            raise UsageError(f"bad --weights value '{v}': use 'pretrained', 'random' or NAME=PATH (e.g. inception=weights.pth)")
        name, _, val = v.partition("=")
        name = name.strip().split(":")[0]
        if name not in ("inception", "clip", "torchscript"):
            raise UsageError(f"bad --weights value '{v}': unknown embedder '{name}' (inception, clip)")
        if val in ("pretrained", "random"):
            out[name] = WeightsChoice(val, None, seed)
        else:
            p = Path(val).expanduser()
            if not p.is_file():
                raise UsageError(f"--weights {v}: no such file {p}")
            out[name] = WeightsChoice("file", str(p), seed)
    return out


def _choice_for(family: str, choices: dict[str, WeightsChoice] | None) -> WeightsChoice:
    choices = choices or {}
    return choices.get(family) or choices.get("*") or WeightsChoice()


@dataclass
class Embedder:
    """Base class: a named feature extractor with a stable id.

    Subclasses set ``name``, ``dim``, ``preprocess_id`` and the weights fields,
    and implement :meth:`_build` (returns a torch module mapping a float batch
    to features) and :meth:`preprocess` (PIL RGB image -> CHW float tensor;
    runs in DataLoader workers, so it must be picklable and not use the model).
    """

    name: str = ""
    dim: int = 0
    preprocess_id: str = ""
    weights: str = "pretrained"  # 'pretrained' | 'random' | 'file'
    weights_tag: str = ""
    weights_sha256: str | None = None
    seed: int | None = None
    normalize: bool = False  # L2-normalise outputs
    precision: str = field(default="fp32", init=False)  # set_precision(); part of the id when not fp32
    model_calls: int = field(default=0, init=False)
    _model: object = field(default=None, init=False, repr=False)
    _device: str = field(default="cpu", init=False, repr=False)
    _amp: bool = field(default=False, init=False, repr=False)

    @property
    def id(self) -> str:
        base = f"{self.name}:{self.weights_tag}:{self.preprocess_id}"
        return base if self.precision == "fp32" else f"{base}:{self.precision}"

    def set_precision(self, amp: bool, device: str) -> "Embedder":
        """Name the arithmetic the features will come from in the id (``amp-bf16`` / ``amp-fp16``; fp32 adds nothing).

        Mixed-precision features differ from float32 ones, so they must not share
        cache entries or be compared as if they were the same embedding.
        """
        self.precision = precision_tag(amp, device)
        return self

    @property
    def random_weights(self) -> bool:
        return self.weights == "random"

    def describe(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "dim": int(self.dim),
            "preprocess_id": self.preprocess_id,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "random_weights": self.random_weights,
            "seed": self.seed if self.random_weights else None,
            "device": self._device if self._model is not None else None,
        }

    # --- model -------------------------------------------------------------
    # Subclasses set ``self._pre`` (a picklable callable) in ``__post_init__``.
    def preprocess(self, img):
        """PIL RGB image -> CHW float tensor, this embedder's preprocessing."""
        return self._pre(img)

    @property
    def preprocess_fn(self):
        """The picklable preprocessing callable (sent to DataLoader workers / Ray tasks)."""
        return self._pre

    def device_preprocess(self):
        """``uint8 (B, 3, H, W) batch on the device -> float input batch``, the same numbers as :meth:`preprocess`
        (to float32 rounding); None when this embedder has none (its images are decoded and preprocessed by Pillow)."""
        return None

    def fc_weight(self):
        """Its classification layer's weight (float64), for the Inception Score; None for embedders without one."""
        return None

    def _build(self):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self, device: str = "cpu", amp: bool = False) -> "Embedder":
        """Build the network on ``device`` (weights fetched/verified here)."""
        import torch

        if self._model is not None and self._device == device:
            self._amp = amp
            return self
        model = self._build()
        model.eval()
        for prm in model.parameters():
            prm.requires_grad_(False)
        if device.startswith("cuda") or amp:
            # channels-last: what cuDNN and oneDNN's bf16 kernels (AMX, AVX-512 BF16) run fastest on
            model = model.to(device, memory_format=torch.channels_last)
        else:
            model = model.to(device)
        self._model, self._device, self._amp = model, device, amp
        return self

    def embed_batch(self, batch) -> np.ndarray:
        """Features (float32, B x dim) for a preprocessed batch (B x 3 x H x W)."""
        import torch

        if self._model is None:
            self.load()
        self.model_calls += 1
        x = batch.to(self._device, non_blocking=True)
        cuda = self._device.startswith("cuda")
        if (cuda or self._amp) and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), _tf32(cuda and self._amp):
            if self._amp:
                # --amp: float16 on CUDA (10 mantissa bits; the network's activations stay far from its range),
                # bfloat16 on CPU (oneDNN's AMX / AVX-512 BF16 kernels); features come back as float32
                with torch.autocast("cuda" if cuda else "cpu", dtype=AMP_DTYPE["cuda" if cuda else "cpu"]):
                    y = self._model(x)
            else:
                y = self._model(x)
            y = y.float()
            if self.normalize:
                y = torch.nn.functional.normalize(y, dim=-1)
        return y.cpu().numpy().astype(np.float32, copy=False)


#: ``--amp``'s autocast dtype per device type (names, so that importing this module needs no torch).
AMP_DTYPE_NAMES: dict = {"cuda": "float16", "cpu": "bfloat16"}


def precision_tag(amp: bool, device: str) -> str:
    """``fp32``, or ``amp-fp16`` (CUDA) / ``amp-bf16`` (CPU): the arithmetic of ``--amp`` on ``device``."""
    if not amp:
        return "fp32"
    return "amp-fp16" if str(device).startswith("cuda") else "amp-bf16"


class _AmpDtypes(dict):
    def __missing__(self, key):
        import torch

        v = getattr(torch, AMP_DTYPE_NAMES[key])
        self[key] = v
        return v


AMP_DTYPE = _AmpDtypes()


# --------------------------------------------------------------------------- Inception
INCEPTION_PREPROCESSING = ("clean", "pytorch-fid")


class _InceptionPreprocess:
    """Picklable wrapper of the Inception preprocessing function."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, img):
        from .models.inception import PREPROCESSING

        return PREPROCESSING[self.mode](img)


@dataclass
class InceptionEmbedder(Embedder):
    """FID Inception-v3 pool3 features (2048-d), Heusel et al. 2017.

    Preprocessing ``clean`` (default) resizes to 299x299 with PIL's
    anti-aliased bicubic filter per channel in float, as clean-fid does
    (Parmar et al. 2022); ``pytorch-fid`` reproduces pytorch-fid exactly
    (bilinear ``F.interpolate`` without anti-aliasing inside the network).
    """

    weights_path: str | None = None
    cache: str | None = None
    allow_download: bool = True
    progress: Callable | None = None

    def __post_init__(self):
        self._pre = _InceptionPreprocess(self.preprocess_id)

    def device_preprocess(self):
        return {"clean": resize_clean, "pytorch-fid": resize_bilinear_pytorch_fid}.get(self.preprocess_id)

    def fc_weight(self):
        """The logits layer's (1008, 2048) weight as float64, when the network is loaded in this process (else None)."""
        if self._model is None:
            return None
        return self._model.fc.weight.detach().cpu().double().numpy()

    def _build(self):
        from .models.inception import build_fid_inception

        if self.weights == "random":
            return build_fid_inception(None, seed=int(self.seed or 0))
        if self.weights == "file":
            path = self.weights_path
        else:
            path, digest = W.fetch("inception", self.cache, allow_download=self.allow_download, progress=self.progress)
            self.weights_sha256 = digest
        sd = W.load_state_dict(path)
        try:
            return build_fid_inception(sd)
        except ValueError as e:
            raise WeightsError(f"{path}: not FID Inception weights ({e})") from None


def make_inception(variant: str, choice: WeightsChoice, cache=None, allow_download=True, progress=None) -> InceptionEmbedder:
    pre = variant or "clean"
    if pre not in INCEPTION_PREPROCESSING:
        raise UsageError(f"unknown Inception preprocessing '{pre}': use inception:clean or inception:pytorch-fid")
    e = InceptionEmbedder(
        name="inception",
        dim=2048,
        preprocess_id=pre,
        weights=choice.mode,
        seed=choice.seed if choice.mode == "random" else None,
        weights_path=choice.path,
        cache=str(cache) if cache else None,
        allow_download=allow_download,
        progress=progress,
    )
    if choice.mode == "random":
        e.weights_tag = f"random-seed{choice.seed}"
    elif choice.mode == "file":
        e.weights_sha256 = W.sha256_file(choice.path)
        e.weights_tag = f"file-sha256-{e.weights_sha256[:16]}"
    else:
        s = W.spec("inception")
        e.weights_tag = Path(s.filename).stem
        p = W.expected_path("inception", cache)
        if p.exists():
            e.weights_sha256 = None  # filled (verified) at load time
    return e


# --------------------------------------------------------------------------- CLIP
def _clip_pretrained_cfg(arch: str, pretrained: str) -> dict:
    import open_clip

    try:
        return dict(open_clip.get_pretrained_cfg(arch, pretrained) or {})
    except Exception:  # pragma: no cover - unknown tag
        return {}


class _ClipPreprocess:
    """Picklable open_clip validation transform for (arch, pretrained tag), built lazily.

    Mean, std, interpolation and resize mode come from the pretrained tag's
    config (as ``open_clip.create_model_and_transforms`` does), falling back to
    the architecture's config and OpenAI's constants.
    """

    def __init__(self, arch: str, pretrained: str):
        self.arch = arch
        self.pretrained = pretrained
        self._tf = None

    def _transform(self):
        if self._tf is None:
            import open_clip
            from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

            cfg = open_clip.get_model_config(self.arch)
            if cfg is None:
                raise UsageError(f"unknown open_clip architecture '{self.arch}'")
            size = cfg.get("vision_cfg", {}).get("image_size", 224)
            pp = {**cfg.get("preprocess_cfg", {}), **_clip_pretrained_cfg(self.arch, self.pretrained)}
            resize_mode = pp.get("resize_mode") or "shortest"
            self._tf = open_clip.image_transform(
                size,
                is_train=False,
                mean=pp.get("mean") or OPENAI_DATASET_MEAN,
                std=pp.get("std") or OPENAI_DATASET_STD,
                interpolation=pp.get("interpolation") or "bicubic",
                resize_mode=resize_mode,
            )
            # "shortest" resizes the short side to `size` before the centre crop, so
            # its work grows with the aspect ratio; "longest" and "squash" are bounded
            self._short_side_resize = resize_mode == "shortest"
        return self._tf

    def __getstate__(self):
        return {"arch": self.arch, "pretrained": self.pretrained, "_tf": None}

    def __call__(self, img):
        tf = self._transform()
        if getattr(self, "_short_side_resize", False):
            _check_short_side_resize(img)
        return tf(img)


def _check_short_side_resize(img) -> None:
    """Refuse, before resizing, an image whose short-side resize would be huge.

    Resizing the short side of a 1 x 20000 image to 224 builds a 224 x 4,480,000
    image (4 GB) only to crop its centre 224 x 224. :func:`collapse_audit.decode.load_rgb`
    already refuses such files; this guards images handed to ``preprocess``
    directly (same limit, :data:`collapse_audit.decode.DEFAULT_MAX_ASPECT_RATIO`).
    Cropping the source first is not bit-identical to open_clip's resize-then-crop
    (PIL's resampling of a box differs by one level on most images), so refuse.
    """
    size = getattr(img, "size", None)  # PIL (width, height); tensors are left to open_clip
    if not isinstance(size, tuple) or len(size) != 2:
        return
    w, h = size
    long_side, short_side = max(w, h), min(w, h)
    if short_side <= 0 or long_side > DEFAULT_MAX_ASPECT_RATIO * short_side:
        ratio = f"{long_side / short_side:.2f}".rstrip("0").rstrip(".") if short_side > 0 else "inf"
        raise ValueError(
            f"extreme aspect ratio 1:{ratio} ({w} x {h} pixels, limit 1:{DEFAULT_MAX_ASPECT_RATIO:g})"
        )


def _wrap_clip(model):
    import torch

    class ClipImage(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m.encode_image(x)

    return ClipImage(model)


@dataclass
class ClipEmbedder(Embedder):
    """CLIP image embeddings (Radford et al. 2021) through open_clip, L2-normalised."""

    arch: str = "ViT-B-32"
    pretrained: str = "openai"
    weights_path: str | None = None
    cache: str | None = None
    allow_download: bool = True

    def __post_init__(self):
        self._pre = _ClipPreprocess(self.arch, self.pretrained)

    def _create(self, **kw):
        import open_clip

        import logging

        quick = bool(_clip_pretrained_cfg(self.arch, self.pretrained).get("quick_gelu", False))
        # open_clip logs "no pretrained weights" (root logger) for random/file modes: drop only its
        # own records below ERROR during this call; no logger's level changes.
        def quiet(record):
            return record.levelno >= logging.ERROR or "open_clip" not in (record.pathname or "")

        root = logging.getLogger()
        root.addFilter(quiet)
        try:
            return open_clip.create_model(self.arch, force_quick_gelu=quick, **kw)
        finally:
            root.removeFilter(quiet)

    def _build(self):
        import torch

        if self.weights == "random":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(self.seed or 0))
                model = self._create(pretrained=None)
            return _wrap_clip(model)
        if self.weights == "file":
            model = self._create(pretrained=None)
            sd = _load_any_state_dict(self.weights_path)
            try:
                model.load_state_dict(sd, strict=True)
            except RuntimeError as e:
                first = str(e).strip().splitlines()[0]
                raise WeightsError(f"{self.weights_path}: not open_clip {self.arch} weights ({first})") from None
            return _wrap_clip(model)
        # pretrained: an imported file in our cache wins, else open_clip downloads.
        local = clip_import_path(self.arch, self.pretrained, self.cache)
        if local is not None:
            self.weights_path, self.weights = str(local), "pretrained"
            self.weights_sha256 = W.sha256_file(local)
            model = self._create(pretrained=None)
            model.load_state_dict(_load_any_state_dict(str(local)), strict=True)
            return _wrap_clip(model)
        if not self.allow_download or os.environ.get("COLLAPSE_AUDIT_OFFLINE") == "1":
            raise WeightsError(clip_missing_message(self.arch, self.pretrained, self.cache, "offline"))
        oc_dir = W.cache_dir(self.cache) / "open_clip"
        pcfg = _clip_pretrained_cfg(self.arch, self.pretrained)
        if not _clip_in_open_clip_cache(pcfg, oc_dir):
            # open_clip (through huggingface_hub) would retry for about a minute without a network: fail at once.
            from urllib.parse import urlparse

            hosts = (["https://huggingface.co"] if pcfg.get("hf_hub") else []) + ([pcfg["url"]] if pcfg.get("url") else [])
            if hosts and not any(W.host_reachable(h) for h in hosts):
                raise WeightsError(clip_missing_message(self.arch, self.pretrained, self.cache,
                                                        "no network connection to " + ", ".join(sorted({urlparse(h).hostname or h for h in hosts}))))
        try:
            model = self._create(pretrained=self.pretrained, cache_dir=str(oc_dir))
        except Exception as e:  # network errors come in many types (urllib, requests, huggingface_hub)
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WeightsError(clip_missing_message(self.arch, self.pretrained, self.cache, f"download failed: {msg}")) from None
        return _wrap_clip(model)


def _clip_in_open_clip_cache(pcfg: dict, oc_dir) -> bool:
    """Whether open_clip already downloaded these weights into ``oc_dir`` (Hugging Face cache layout or a URL file)."""
    from pathlib import Path

    d = Path(oc_dir)
    if not d.is_dir():
        return False
    hub = (pcfg.get("hf_hub") or "").strip("/")
    if hub:
        repo = hub.split("/")[0] + "--" + hub.split("/")[1] if hub.count("/") >= 1 else hub
        snap = d / f"models--{repo}" / "snapshots"
        if snap.is_dir() and any(f.is_file() for f in snap.rglob("*") if f.suffix in (".bin", ".safetensors", ".pt", ".pth")):
            return True
    url = pcfg.get("url") or ""
    return bool(url) and (d / os.path.basename(url)).is_file()


@contextlib.contextmanager
def _tf32(enabled: bool):
    """TF32 matmuls/convolutions on or off for one model call, restored afterwards (no process-wide change).

    Exact fp32 unless mixed precision is asked for: TF32 convolutions would move
    Inception features beyond the 1e-4 parity tolerance.
    """
    import torch

    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def clip_encode_text(emb: "ClipEmbedder", prompts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """L2-normalised CLIP text embeddings (float32, len(prompts) x dim) with the embedder's own model.

    Builds the model if it is not loaded yet (on CPU unless ``emb.load`` chose a device).
    """
    import open_clip
    import torch

    if not isinstance(emb, ClipEmbedder):
        raise UsageError(f"zero-shot prompts need a CLIP embedder, not {emb.name}")
    if not emb.loaded:
        emb.load("cpu")
    model = emb._model.m
    tok = open_clip.get_tokenizer(emb.arch)
    outs = []
    with torch.inference_mode():
        for i in range(0, len(prompts), batch_size):
            t = tok(list(prompts[i : i + batch_size])).to(emb._device)
            y = model.encode_text(t).float()
            outs.append(torch.nn.functional.normalize(y, dim=-1).cpu().numpy())
    return np.concatenate(outs).astype(np.float32) if outs else np.zeros((0, emb.dim), np.float32)


def _load_any_state_dict(path: str) -> dict:
    if str(path).endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError:  # pragma: no cover
            raise WeightsError("reading .safetensors needs the 'safetensors' package") from None
        try:
            return load_file(path)
        except Exception as e:
            raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
    return W.load_state_dict(path)


def clip_import_path(arch: str, pretrained: str, cache=None) -> Path | None:
    d = W.weights_dir(cache) / "clip" / arch / pretrained
    if d.is_dir():
        files = sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
        if files:
            return files[0]
    return None


def clip_source(arch: str, pretrained: str) -> str:
    try:
        import open_clip

        cfg = open_clip.get_pretrained_cfg(arch, pretrained) or {}
    except Exception:  # pragma: no cover
        cfg = {}
    if cfg.get("hf_hub"):
        return f"https://huggingface.co/{cfg['hf_hub'].rstrip('/')}"
    return cfg.get("url") or f"open_clip pretrained tag '{pretrained}' for {arch}"


def clip_missing_message(arch: str, pretrained: str, cache, why: str) -> str:
    dest = W.weights_dir(cache) / "clip" / arch / pretrained
    return (
        f"CLIP {arch}/{pretrained} weights are not available ({why}). Get the open_clip state dict from "
        f"{clip_source(arch, pretrained)} (open_clip verifies its hash) and put it in {dest}/ "
        f"or run 'collapse-audit models import clip:{arch}/{pretrained} FILE', or pass --weights clip=FILE; "
        f"or run with '--weights random' for an offline baseline"
    )


def make_clip(variant: str, choice: WeightsChoice, cache=None, allow_download=True) -> ClipEmbedder:
    spec = variant or DEFAULT_CLIP
    arch, _, pretrained = spec.partition("/")
    pretrained = pretrained or "openai"
    try:
        import open_clip

        if open_clip.get_model_config(arch) is None:
            known = ", ".join(open_clip.list_models()[:8])
            raise UsageError(f"unknown open_clip architecture '{arch}' (e.g. {known}, ...)")
        if choice.mode == "pretrained" and pretrained not in open_clip.list_pretrained_tags_by_model(arch):
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
            raise UsageError(f"open_clip has no pretrained weights '{pretrained}' for {arch} (known: {tags})")
    except ImportError:  # pragma: no cover
        raise UsageError("the CLIP embedder needs open-clip-torch (pip install open-clip-torch)") from None
    e = ClipEmbedder(
        name=f"clip:{arch}/{pretrained}",
        dim=0,
        preprocess_id="openclip",
        weights=choice.mode,
        seed=choice.seed if choice.mode == "random" else None,
        arch=arch,
        pretrained=pretrained,
        weights_path=choice.path,
        cache=str(cache) if cache else None,
        allow_download=allow_download,
        normalize=True,
    )
    cfg = open_clip.get_model_config(arch)
    e.dim = int(cfg.get("embed_dim", 0))
    if choice.mode == "random":
        e.weights_tag = f"random-seed{choice.seed}"
    elif choice.mode == "file":
        e.weights_sha256 = W.sha256_file(choice.path)
        e.weights_tag = f"file-sha256-{e.weights_sha256[:16]}"
    else:
        e.weights_tag = "pretrained"
    return e


# --------------------------------------------------------------------------- TorchScript
TS_META_FILE = "collapse_audit.json"


class _TorchScriptPreprocess:
    """Resize (PIL, anti-aliased), to [0,1], optional grayscale, then (x - mean) / std."""

    def __init__(self, size: tuple[int, int], mean: Sequence[float], std: Sequence[float], channels: int, resample: str):
        self.size, self.mean, self.std, self.channels, self.resample = tuple(size), list(mean), list(std), channels, resample

    def __call__(self, img):
        import torch
        from PIL import Image

        filt = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST, "lanczos": Image.LANCZOS}[self.resample]
        h, w = self.size
        if self.channels == 1:
            img = img.convert("L")
        if img.size != (w, h):
            img = img.resize((w, h), resample=filt)
        a = np.asarray(img, dtype=np.float32) / 255.0
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        t = torch.from_numpy(np.ascontiguousarray(a))
        m = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        sd = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        return (t - m) / sd


def parse_torchscript_spec(spec: str) -> tuple[str, dict]:
    """``PATH?size=28&mean=0.5&std=0.5&channels=1&resample=bilinear`` -> (path, overrides)."""
    path, _, query = spec.partition("?")
    opts: dict = {}
    for part in filter(None, query.split("&")):
        key, _, val = part.partition("=")
        key = key.strip()
        try:
            if key == "size":
                v = [int(x) for x in val.replace("x", ",").split(",")]
                opts["input_size"] = v * 2 if len(v) == 1 else v
            elif key in ("mean", "std"):
                opts[key] = [float(x) for x in val.split(",")]
            elif key == "channels":
                opts["channels"] = int(val)
            elif key == "resample":
                opts["resample"] = val
            else:
                raise UsageError(f"unknown TorchScript option '{key}' (size, mean, std, channels, resample)")
        except ValueError:
            raise UsageError(f"bad TorchScript option '{part}' in '{spec}'") from None
    return path, opts


def read_torchscript(path: str) -> tuple[object, dict]:
    """Load a TorchScript module and its ``collapse_audit.json`` metadata (extra file)."""
    import json

    import torch

    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"{p}: no such TorchScript file")
    extra = {TS_META_FILE: ""}
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            module = torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{p}: not a TorchScript file ({msg}); export with torch.jit.script/trace and .save()") from None
    meta = {}
    if extra[TS_META_FILE]:
        try:
            meta = json.loads(extra[TS_META_FILE])
        except (ValueError, TypeError):
            raise WeightsError(f"{p}: its {TS_META_FILE} metadata is not valid JSON") from None
    return module, meta


@dataclass
class TorchScriptEmbedder(Embedder):
    """A user's own model (TorchScript) mapping a float image batch to feature vectors or logits.

    Metadata travels in the file as the extra file ``collapse_audit.json``::

        {"input_size": [H, W], "mean": [...], "std": [...], "channels": 3,
         "resample": "bicubic", "class_names": [...]}   # class_names: classifiers only

    and can be overridden on the command line (``torchscript:PATH?size=64&mean=0.5&std=0.5``).
    TorchScript files are programs: load only files you trust.
    """

    path: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        m = self.meta
        size = m.get("input_size") or [224, 224]
        channels = int(m.get("channels", 3))
        mean = m.get("mean") or [0.0] * channels
        std = m.get("std") or [1.0] * channels
        if len(mean) == 1:
            mean = mean * channels
        if len(std) == 1:
            std = std * channels
        if len(mean) != channels or len(std) != channels:
            raise UsageError(f"{self.path}: mean/std must have {channels} values (or 1)")
        self._pre = _TorchScriptPreprocess(tuple(size), mean, std, channels, m.get("resample", "bicubic"))

    def describe(self) -> dict:
        d = super().describe()
        d["path"] = self.path
        return d

    @property
    def class_names(self) -> list[str] | None:
        names = self.meta.get("class_names")
        return [str(n) for n in names] if names else None

    def _build(self):
        module, _ = read_torchscript(self.path)
        return module


def make_torchscript(spec: str, choice: WeightsChoice | None = None, normalize: bool = False) -> TorchScriptEmbedder:
    path, overrides = parse_torchscript_spec(spec)
    module, meta = read_torchscript(path)
    meta = {**meta, **overrides}
    digest = W.sha256_file(path)
    pre = "ts-{}x{}-c{}-{}".format(*(meta.get("input_size") or [224, 224]), meta.get("channels", 3), meta.get("resample", "bicubic"))
    import hashlib as _h

    pre += "-" + _h.sha256(repr((meta.get("mean"), meta.get("std"))).encode()).hexdigest()[:8]
    e = TorchScriptEmbedder(
        name=f"torchscript:{Path(path).name}", dim=int(meta.get("dim", 0)), preprocess_id=pre, weights="file",
        weights_sha256=digest, weights_tag=f"sha256-{digest[:16]}", normalize=normalize, path=str(Path(path).expanduser()),
        meta=meta,
    )
    if not e.dim:
        # probe the output size once on a blank input so the id/dim are known before embedding
        import torch

        h, w = meta.get("input_size") or [224, 224]
        with torch.inference_mode():
            y = module(torch.zeros(1, int(meta.get("channels", 3)), int(h), int(w)))
        if not hasattr(y, "shape") or y.ndim != 2:
            raise UsageError(f"{path}: the TorchScript model must return a 2-D tensor (batch x features), got {getattr(y, 'shape', type(y))}")
        e.dim = int(y.shape[1])
    return e


def make_classifier(spec: str) -> TorchScriptEmbedder:
    """A TorchScript classifier (``PATH[?size=..&mean=..&std=..]``) whose outputs are named class logits.

    Its ``collapse_audit.json`` metadata must list ``class_names``, one per output;
    :func:`collapse_audit.labels.labels_from_logits` turns its outputs into labels.
    The one place ``scan --classifier`` and ``track --classifier`` load it.
    """
    spec = str(spec).removeprefix("torchscript:")
    e = make_torchscript(spec)
    if not e.class_names:
        raise InputError(f"{spec}: a classifier needs its class names in its collapse_audit.json metadata "
                         "(\"class_names\": [...]) so that its outputs can be named")
    if len(e.class_names) != e.dim:
        raise InputError(f"{spec}: {len(e.class_names)} class names but the model returns {e.dim} outputs")
    return e


# --------------------------------------------------------------------------- registry
def parse_embedder_name(name: str) -> tuple[str, str]:
    """``'clip:ViT-B-32/openai'`` -> ``('clip', 'ViT-B-32/openai')``."""
    family, _, variant = name.strip().partition(":")
    return family.strip().lower(), variant.strip()


@dataclass(frozen=True)
class Family:
    """One embedder family: how its command-line name becomes an :class:`Embedder`."""

    name: str
    make: Callable[..., "Embedder"]  # (variant, choice, cache, allow_download, progress) -> Embedder
    usage: str  # the accepted spellings, for error messages
    encodes_text: bool = False  # zero-shot labelling (classes, subgroups) needs a text encoder
    safe_from_files: bool = True  # may a features file's metadata name it? (never for user code)


def _make_torchscript_family(variant, choice, cache, allow_download, progress):
    if not variant:
        raise UsageError("use torchscript:PATH (optionally ?size=H,W&mean=...&std=...)")
    return make_torchscript(variant)


#: family name -> :class:`Family`; the one list of embedders the tool knows.
REGISTRY: dict[str, Family] = {
    f.name: f
    for f in (
        Family("inception", lambda v, c, cache, dl, pr: make_inception(v, c, cache, dl, pr), "inception[:clean|:pytorch-fid]"),
        Family("clip", lambda v, c, cache, dl, pr: make_clip(v, c, cache, dl), "clip[:ARCH/PRETRAINED]", encodes_text=True),
        Family("torchscript", _make_torchscript_family, "torchscript:PATH", safe_from_files=False),
    )
}
FAMILIES = tuple(REGISTRY)


def family_of(name: str) -> Family | None:
    """The registry entry for an embedder name such as ``'clip:ViT-B-32/openai'`` (None when unknown)."""
    return REGISTRY.get(parse_embedder_name(name)[0])


def encodes_text(embedder: "Embedder") -> bool:
    """Whether ``embedder`` has a text tower (CLIP): what zero-shot labelling needs."""
    fam = family_of(getattr(embedder, "name", "") or "")
    return bool(fam and fam.encodes_text)


def make_embedder(
    name: str,
    weights: dict[str, WeightsChoice] | None = None,
    *,
    cache=None,
    allow_download: bool = True,
    progress=None,
) -> Embedder:
    """Build an embedder (weights not loaded yet) from its command-line name, through :data:`REGISTRY`."""
    family, variant = parse_embedder_name(name)
    fam = REGISTRY.get(family)
    if fam is None:
        spellings = ", ".join(f.usage for f in REGISTRY.values())
        raise UsageError(f"unknown embedder '{name}': use {spellings}")
    return fam.make(variant, _choice_for(family, weights), cache, allow_download, progress)
